"""One DCOR resource as a tree of files: basins -> HDF5 datasets -> views.

The rule for features is dclab's: a feature exists when a basin declares it, and it
comes from the first basin (server order: condensed, then original) that declares
it.  A basin that declares a feature it does not hold itself (DCOR's intra-dataset
basins advertise ``image`` in the condensed basin) falls through to the next one.
HDF5 metadata (shapes, dtypes) is read with h5py over ``RemoteFile``; only the
bytes of what is read cross the network.  A feature read before has its layout kept
in the disk cache: a remount reads it without opening the HDF5 file.
"""
from __future__ import annotations

import concurrent.futures
import errno
import json
import logging
import threading
import time
from typing import Any

import h5py

from ..hdf5.readahead import COLUMN, DEFAULT, ReadaheadConfig
from ..io import deadline
from ..io.remote_object import RemoteObject
from ..io.sequential import SequentialReadahead, StreamConfig
from .basin import Basin
from .contour_sizes import MISSING, ContourSizes
from .feature_views import (dataset_view, header_view, layout_view, mapped_view, passthrough,
                            small_view)
from .nodes import Dir, File, LazyEntries, Node, NumberedNames
from .presigned import local_expiry
from .shared import Shared
from .tables import table_array
from .tiff_view import TiffView
from .tsv_view import TsvView
from .views import BytesView, LazyBytesView, NpyView, View

log = logging.getLogger(__name__)

BOOL_FEATURES = {"mask"}
#: image features shown as TIFF stacks too (besides every ``qpi_*`` feature)
IMAGE_FEATURES = {"image", "image_bg", "mask"}
#: features that are not one number per event, left out of features.tsv by name
NOT_SCALAR = {"contour", "trace"} | IMAGE_FEATURES
#: contour headers looked up one after another: how far to fetch ahead of them
CONTOUR_WALK = StreamConfig(first_window=1 << 20, max_window=8 << 20, piece=1 << 20,
                            slack=4 << 20)  # stored as uint8 0/255, presented as bool (dclab's H5MaskEvent)


class Resource:
    """Everything under ``MOUNT/<rid>/``."""

    def __init__(self, rid: str, shared: Shared) -> None:
        self.rid = rid
        self.shared = shared
        self.api = shared.api
        self.pool = shared.pool
        self.basins: list[Basin] = []
        self._refresh_lock = threading.Lock()
        self._last_refresh = 0.0
        self._metadata: concurrent.futures.Future | None = None
        self._listing_prepared = False
        self._listing_started = False
        self.public = False  # no basin is perishable: DCOR's answers may be kept on disk
        self.root = Dir(self._root_entries)

    # -- basins --------------------------------------------------------------------
    def load(self) -> None:
        """Fetch the basin list: proves the id exists and is readable with our token.

        The metadata (for ``metadata.json``) is asked for at the same time, so a
        listing does not wait for one more round trip later.  A public resource whose
        answers the disk cache holds is opened from them without asking DCOR:
        published data never changes (they are asked again in the background once
        older than ``answers_ttl``).  A private one always asks DCOR, which checks the
        token; only when DCOR cannot be reached is it opened from the answers kept for
        this same token.
        """
        stored = self._disk_answer(self._public_key("basins"))
        if stored is not None and _all_public(stored[0]):
            specs = stored[0]
            self.public = True
            self._metadata = self.pool.submit(deadline.bind(self._answer), "metadata")
            if time.time() - stored[1] > self.shared.answers_ttl:
                self.pool.submit(self._revalidate)
            log.info("DCR406 %s opened from the disk cache's answers", self.rid)
        else:
            try:
                specs = self._ask_basins()
            except OSError as exc:
                private = self._disk_answer(self._private_key("basins"))
                if exc.errno != errno.EIO or private is None:
                    raise
                specs = private[0]
                self._metadata = self.pool.submit(deadline.bind(self._answer), "metadata")
                log.info("DCR408 %s: DCOR cannot be reached (%s); opened from the answers "
                         "kept for this token", self.rid, exc.strerror)
        for spec in specs:
            if not isinstance(spec, dict) or spec.get("format") not in ("http", "s3"):
                continue
            urls = spec.get("urls") or []
            if not urls:
                continue
            key = spec.get("key") or spec.get("name") or urls[0].split("?")[0]
            obj = RemoteObject(key=key, url=urls[0], expires_at=local_expiry(spec),
                               cache=self.shared.cache, fetcher=self.shared.fetcher,
                               background=self.shared.background,
                               refresh=self.refresh_basins if spec.get("perishable") else None)
            self.basins.append(Basin(spec, obj, self.shared))
            if str(spec.get("name", "")).startswith("resource") and self.shared.disk is not None:
                self.shared.disk.watch_complete(key, self._check_original)
        if not self.basins:
            raise OSError(errno.EIO, f"DCOR lists no readable basin for {self.rid}")

    def _ask_basins(self) -> list:
        """``dcserv`` basins and (in parallel) metadata, kept on disk once answered."""
        if self.shared.reopen is not None:
            self.shared.reopen()
        self._metadata = self.pool.submit(deadline.bind(self.api.dcserv), self.rid,
                                          "metadata")
        specs = self.api.dcserv(self.rid, "basins")
        if not isinstance(specs, list):
            raise OSError(errno.EIO, f"dcserv basins for {self.rid} is not a list")
        self.public = _all_public(specs)
        self._keep("basins", specs)
        self._metadata.add_done_callback(
            lambda f: None if f.exception() else self._keep("metadata", f.result()))
        return specs

    def _revalidate(self) -> None:
        """Ask DCOR again about a public resource opened from stored answers: a changed
        answer replaces the stored one (the next open uses it); a resource that is
        gone or no longer public loses its stored answers."""
        try:
            specs = self.api.dcserv(self.rid, "basins")
            meta = self.api.dcserv(self.rid, "metadata")
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EACCES):
                self._forget_public_answers(f"gone from DCOR or not public ({exc.strerror})")
            return
        if not _all_public(specs):
            self._forget_public_answers("no longer public")
            return
        stored = self._disk_answer(self._public_key("basins"))
        if stored is None or stored[0] != specs:
            log.info("DCR407 %s: DCOR's basins changed; the next open uses them", self.rid)
        self._keep("basins", specs)
        self._keep("metadata", meta)

    def _forget_public_answers(self, why: str) -> None:
        if self.shared.disk is not None:
            for query in ("basins", "metadata", "logs", "tables"):
                self.shared.disk.forget_answer(self._public_key(query))
        log.info("DCR407 %s is %s; its stored answers are dropped", self.rid, why)

    def _check_original(self, key: str) -> None:
        """Every block of the original is on disk: check it against DCOR's sha256 (in
        the pool: the disk's writer thread calls this)."""
        def check() -> None:
            try:
                sha = self.api.call("resource_show", id=self.rid).get("sha256")
            except (OSError, AttributeError) as exc:
                log.info("DCR410 %s: no sha256 to check the cached original against (%s)",
                         self.rid, exc)
                return
            if isinstance(sha, str) and len(sha) == 64 and self.shared.disk is not None:
                self.shared.disk.verify(key, sha)
        try:
            self.pool.submit(check)
        except RuntimeError:  # unmounting: the pool is shut down; the next mount checks
            log.debug("%s: unmounting, the sha256 check waits for the next mount", key)

    # -- DCOR's answers, kept on disk ----------------------------------------------------
    def _public_key(self, query: str) -> str:
        return f"dcserv:{self.rid}:{query}"

    def _private_key(self, query: str) -> str | None:
        token_id = self.shared.token_id
        return None if token_id is None else f"private:{token_id}:dcserv:{self.rid}:{query}"

    def _disk_answer(self, key: str | None) -> tuple[Any, float] | None:
        disk = self.shared.disk
        return None if disk is None or key is None else disk.answer_stored(key)

    def _keep(self, query: str, value: Any) -> None:
        """Store an answer: a public resource's for everyone, a private one's under the
        token's hash, its presigned URLs cut to their unsigned form."""
        disk = self.shared.disk
        if disk is None:
            return
        if self.public:
            disk.keep_answer(self._public_key(query), value)
            return
        key = self._private_key(query)
        if key is not None:
            disk.keep_answer(key, _unsigned(value) if query == "basins" else value)

    def _answer(self, query: str) -> Any:
        """``dcserv`` for ``query``: from the disk cache for a public resource asked
        before; else from DCOR, and from the disk when DCOR cannot be reached."""
        if self.public:
            stored = self._disk_answer(self._public_key(query))
            if stored is not None:
                return stored[0]
        try:
            value = self.api.dcserv(self.rid, query)
        except OSError as exc:
            key = self._public_key(query) if self.public else self._private_key(query)
            stored = self._disk_answer(key)
            if exc.errno != errno.EIO or stored is None:
                raise
            return stored[0]
        self._keep(query, value)
        return value

    def refresh_basins(self) -> None:
        """Fetch fresh presigned URLs; concurrent callers share one refresh."""
        started = time.time()
        with self._refresh_lock:
            if self._last_refresh >= started:
                return  # another thread refreshed while we waited
            specs = self.api.dcserv(self.rid, "basins")
            by_name = {s.get("name"): s for s in specs if isinstance(s, dict)}
            for basin in self.basins:
                spec = by_name.get(basin.name)
                if spec and spec.get("urls"):
                    basin.obj.set_url(spec["urls"][0], local_expiry(spec))
            self._last_refresh = time.time()
            log.info("DCR404 refreshed presigned URLs of %s", self.rid)

    def prepare_listing(self) -> None:
        """Before a folder listing is stat'ed entry by entry: open every basin and fetch
        all headers in parallel, a few round trips instead of one per entry.  Once it
        has worked, later listings find everything cached and skip it."""
        self._listing_started = True
        if self._listing_prepared:
            return
        futures = [self.pool.submit(deadline.bind(basin.prefetch_headers))
                   for basin in self.basins]
        failed = False
        for future in futures:
            try:
                future.result(timeout=deadline.remaining(3600.0))
            except (OSError, concurrent.futures.TimeoutError) as exc:  # the stat of the entry will report it
                failed = True
                log.debug("prefetch for listing %s failed: %s", self.rid, exc)
        self._listing_prepared = not failed

    def declared_features(self) -> list[str]:
        """Every feature some basin declares, in first-declared order."""
        wanted: list[str] = []
        for basin in self.basins:
            for feat in basin.features:
                if feat not in wanted:
                    wanted.append(feat)
        return wanted

    def _first_declaring(self, feature: str) -> Basin | None:
        """The basin ``source`` asks first for ``feature``."""
        return next((b for b in self.basins if feature in b.features), None)

    def source(self, feature: str) -> tuple[Basin, Any]:
        """(basin, h5 object) for a feature: the first declaring basin that holds it.

        Only the basins asked are opened, so reading a scalar feature never touches
        the original file when the condensed one holds it.
        """
        for basin in self.basins:
            if feature not in basin.features:
                continue
            try:
                # a listing stats every file, reading none: no chunk indexes for it
                found = basin.locate(feature, prefetch_index=not self._listing_started)
            except OSError as exc:
                raise basin.error_from(exc) from None
            if found is not None:
                return basin, found
            if basin.h5 is not None:  # opened, and the feature is not in it
                basin.keep_layout(feature, None)
        log.warning("DCR405 %s: feature %r is declared but no basin holds it in a form "
                    "dcorfs can read", self.rid, feature)
        raise OSError(errno.ENOENT, f"{self.rid}: no readable source for feature {feature!r}")

    # -- tree ------------------------------------------------------------------------
    def _root_entries(self) -> dict[str, Node]:
        entries: dict[str, Node] = {}
        for feat in sorted(self.declared_features()):
            if feat == "trace":
                entries["trace"] = Dir(self._trace_entries)
            elif feat == "contour":
                entries["contour"] = Dir(self._contour_entries)
            else:
                entries[f"{feat}.npy"] = File(lambda f=feat: self._feature_view(f))
        entries["features.tsv"] = File(self._tsv_view)
        for feat in self.declared_features():
            if feat in IMAGE_FEATURES or feat.startswith("qpi_"):
                entries[f"{feat}.tif"] = File(lambda f=feat: self._tiff_view(f))
        entries["metadata.json"] = File(lambda: LazyBytesView(self._metadata_json))
        entries["logs"] = Dir(self._log_entries)
        entries["tables"] = Dir(self._table_entries)
        for basin in self.basins:
            if basin.name.startswith("condensed") and basin.declared is not None:
                entries["condensed.rtdc"] = File(lambda o=basin.obj: passthrough(o))
            elif basin.name.startswith("resource"):
                entries["data.rtdc"] = File(lambda o=basin.obj: passthrough(o))
        return entries

    def _feature_view(self, feature: str, config: ReadaheadConfig = DEFAULT) -> View:
        """``feature`` as an .npy view; ``config``: the readahead policy of its reads."""
        as_bool = feature in BOOL_FEATURES
        kept = self._kept_view(feature, as_bool, config)
        if kept is not None:
            return kept
        basin, obj = self.source(feature)
        if isinstance(obj, tuple):
            return mapped_view(basin, obj[0], obj[1], as_bool)
        if isinstance(obj, h5py.Dataset):
            return dataset_view(basin, obj, as_bool,
                                keep=lambda layout: basin.keep_layout(feature, layout),
                                config=config)
        raise OSError(errno.ENOENT, f"{self.rid}: {feature} is not an array")

    def _tsv_view(self) -> TsvView:
        """Every scalar feature as text: the features known not to be scalar are left
        out by name, any other by its shape."""
        wanted = sorted(f for f in self.declared_features()
                        if f not in NOT_SCALAR and not f.startswith("qpi_"))
        # the headers in one wave, not one by one; only of the basins ``source`` asks
        # first (the original is not opened when the condensed file has every column)
        first = {self._first_declaring(f) for f in wanted}
        serving = [b for b in self.basins if b in first]
        for future in [self.pool.submit(deadline.bind(b.prefetch_headers))
                       for b in serving]:
            try:
                future.result(timeout=deadline.remaining(3600.0))
            except OSError as exc:  # the feature's own open reports it
                log.debug("header prefetch for features.tsv of %s failed: %s", self.rid, exc)
        columns = []
        for feature in wanted:
            view = self._feature_view(feature, COLUMN)
            if isinstance(view, NpyView):
                columns.append((feature, view))
        return TsvView(columns)

    def _tiff_view(self, feature: str) -> TiffView:
        view = self._feature_view(feature)
        if not isinstance(view, NpyView):
            raise OSError(errno.EIO, f"{self.rid}: {feature} is not an array")
        pixel = self._metadata_dict().get("imaging", {}).get("pixel size")
        pixel = float(pixel) if isinstance(pixel, (int, float)) and pixel > 0 else None
        return TiffView(view, mask=feature in BOOL_FEATURES, pixel_size_um=pixel)

    def _kept_view(self, feature: str, as_bool: bool,
                   config: ReadaheadConfig = DEFAULT) -> View | None:
        """The feature from a layout kept in the disk cache, without opening any HDF5
        file, or None.  ``source``'s rule, answered by what was kept: each declaring
        basin, in order, is known not to hold it, or known to (its layout), or not
        known (then h5py decides)."""
        for basin in self.basins:
            if basin.declared is None:
                return None
            if feature not in basin.declared:
                continue
            known, layout = basin.kept_layout(feature)
            if not known:
                return None
            if layout is not None:
                self.shared.counts.add("kept_layouts_used")
                return layout_view(basin, layout, lambda b=basin: self._dataset(b, feature),
                                   as_bool, config=config)
        return None

    def _dataset(self, basin: Basin, feature: str) -> h5py.Dataset:
        """``feature``'s h5py dataset in ``basin``, for what only h5py can read."""
        found = basin.locate(feature)
        if not isinstance(found, h5py.Dataset):
            raise OSError(errno.EIO, f"{self.rid}: {feature} is not a dataset of {basin.name}")
        return found

    def _group(self, feature: str) -> tuple[Basin, h5py.Group]:
        basin, obj = self.source(feature)
        if not isinstance(obj, h5py.Group):
            raise OSError(errno.EIO, f"{self.rid}: {feature} is not an HDF5 group")
        return basin, obj

    def _trace_entries(self) -> dict[str, Node]:
        basin, group = self._group("trace")
        return {f"{name}.npy": File(lambda n=name: dataset_view(basin, group[n], False))
                for name in sorted(group.keys())}

    def _contour_entries(self) -> dict[str, Node]:
        """One name per event, from the event count, as dclab does: counting the links
        of ``events/contour`` (HDF5 visits every node of the group's index, which
        dclab's writer scatters through the file) would read a large measurement's
        whole index over the network.  With the count from DCOR's metadata, listing
        reads nothing: the group is found in HDF5 on the first lookup of a name.
        Each lookup finds its one name in the index, unless ``ContourSizes`` knows
        its size (a listing's lookups read all in bulk): HDF5 is then opened only
        when the file is read."""
        count = self._declared_event_count()
        lock = threading.Lock()
        found: list[tuple[Basin, h5py.Group, ContourSizes, SequentialReadahead]] = []

        def located() -> tuple[Basin, h5py.Group, ContourSizes, SequentialReadahead]:
            """The group, its sizes and its walk, found once (a failure is not kept)."""
            with lock:
                if not found:
                    basin, group = self._group("contour")
                    events = count if count is not None else self._event_count(basin, group)
                    found.append((basin, group,
                                  ContourSizes(self.rid, basin, group, events, self.pool),
                                  SequentialReadahead(basin.obj, CONTOUR_WALK)))
                return found[0]

        names = NumberedNames(count if count is not None else len(located()[2].sizes))

        def opened(basin: Basin, group: h5py.Group, key: str) -> h5py.Dataset:
            try:
                dataset = group.get(key)  # one lookup in the index
            except Exception as exc:  # h5py reports our OSErrors as generic ones
                raise basin.error_from(exc) from None
            if dataset is None:
                raise OSError(errno.ENOENT, f"{self.rid}: contour {key} is missing")
            return dataset

        def contour(key: str) -> View | None:
            """The view of contour ``key``, or None when the group lacks it: one lookup
            in the group's index (h5py), then the dataset's own bytes, parsed."""
            basin, group, _, walk = located()
            try:
                info = group.id.links.get_info(key.encode()) if key in group else None
            except Exception as exc:  # h5py reports our OSErrors as generic ones
                raise basin.error_from(exc) from None
            if info is None:
                return None
            if info.type != h5py.h5l.TYPE_HARD:
                return small_view(basin, opened(basin, group, key))
            # dclab writes the contours of consecutive events after one another (between
            # image chunks): a walk through them streams ahead of its headers
            walk.before_read(info.u, info.u + 1)
            return header_view(basin, info.u, lambda: opened(basin, group, key))

        def view(made: View | None, number: int, size: int) -> View:
            sizes = located()[2]
            sizes.opened()  # only opening makes a view once the size is known
            if made is None:
                made = contour(str(number))
                if made is None:
                    raise OSError(errno.ENOENT, f"{self.rid}: contour {number} is missing")
            if made.size != size:  # the bulk read's parse and h5py disagree
                raise OSError(errno.EIO, f"{self.rid}: contour {number} is {made.size} "
                                         f"bytes, listed as {size}")
            return made

        def sized(number: int, size: int) -> Node | None:
            if size < 0:
                return None
            return File(lambda: view(None, number, size), size=size)

        def peek(name: str) -> Node | None:
            number = names.number(name)
            if number is None or not found:  # a listing does not open the group
                return None
            return sized(number, found[0][2].peek(number))

        def make(name: str) -> Node | None:
            number = names.number(name)
            sizes = located()[2]
            size = sizes[number]
            if size == MISSING or size >= 0:
                return sized(number, size)
            made = contour(str(number))
            if made is None:  # a truncated write: fewer contours than events
                sizes.known(number, MISSING)
                return None
            sizes.known(number, made.size)
            return File(lambda: view(made, number, made.size), size=made.size)

        return LazyEntries(names, make, peek)

    def _declared_event_count(self) -> int | None:
        """The measurement's event count as DCOR's metadata gives it (always, on
        DCOR), or None."""
        count = self._metadata_dict().get("experiment", {}).get("event count")
        return count if isinstance(count, int) and count >= 0 else None

    def _event_count(self, basin: Basin, contours: h5py.Group) -> int:
        """The event count where DCOR's metadata does not give it: the length of a
        feature of the basin (one object header), else the contours counted."""
        h5 = basin.h5
        events = h5.get("events") if h5 is not None else None
        for feature in ("mask", "image", "deform", "area_um"):
            if events is not None and feature in events and isinstance(events[feature],
                                                                       h5py.Dataset):
                return int(events[feature].shape[0])
        return len(contours)

    def _metadata_dict(self) -> dict:
        try:
            if self._metadata is None:
                raise OSError(errno.EIO, "metadata was not requested")
            meta = self._metadata.result(timeout=deadline.remaining(3600.0))
        except (OSError, concurrent.futures.TimeoutError):  # errors are not kept: ask again
            meta = self._answer("metadata")
        return meta if isinstance(meta, dict) else {}

    def _metadata_json(self) -> bytes:
        meta = self._metadata_dict()
        return (json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

    def _log_entries(self) -> dict[str, Node]:
        logs = self._answer("logs") or {}
        entries: dict[str, Node] = {}
        for name, lines in logs.items():
            text = "".join(f"{line}\n" for line in lines)
            entries[_safe_name(name) + ".txt"] = File(lambda t=text: BytesView(t.encode("utf-8")))
        return entries

    def _table_entries(self) -> dict[str, Node]:
        tables = self._answer("tables") or {}
        entries: dict[str, Node] = {}
        for name, content in tables.items():
            array = table_array(content)
            entries[_safe_name(name) + ".npy"] = File(
                lambda a=array: NpyView(a.dtype, a.shape, lambda r0, r1, a=a: a[r0:r1]))
        return entries

    def close(self) -> None:
        for basin in self.basins:
            basin.close()


def _all_public(specs: Any) -> bool:
    """Whether a basin list is a public resource's: a list with no perishable basin."""
    return isinstance(specs, list) and bool(specs) and not any(
        isinstance(s, dict) and s.get("perishable") for s in specs)


def _unsigned(specs: Any) -> Any:
    """Basins with presigned URLs cut before their query: no signature goes to disk."""
    if not isinstance(specs, list):
        return specs
    return [{**s, "urls": [u.split("?", 1)[0] for u in s.get("urls") or []
                           if isinstance(u, str)]} if isinstance(s, dict) else s
            for s in specs]


def _safe_name(name: str) -> str:
    return name.replace("/", "_").replace("\0", "_") or "_"
