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
import functools
import json
import logging
import threading
import time
import urllib.parse
from typing import Any

import h5py

from ..hdf5.layout import Layout
from ..hdf5.readahead import COLUMN, DEFAULT, ReadaheadConfig
from ..ids import is_resource_id
from ..io import deadline
from ..tuning import TUNING
from ..views.nodes import CheckedDir, Dir, File, Node
from ..views.tables import table_array
from ..views.tiff import TiffView
from ..views.tsv import TsvView
from ..views.view import BytesView, LazyBytesView, NpyView, View
from .basin import Basin, remote_basins
from .contour_addresses import ContourAddresses
from .contour_folder import ContourFolder
from .contour_sizes import ContourSizes
from .feature_views import dataset_view, layout_view, mapped_view, passthrough
from .presigned import local_expiry
from .preview import Preview
from .resource_answers import ResourceAnswers
from .shared import Shared
from .upstream import Via

log = logging.getLogger(__name__)

BOOL_FEATURES = {"mask"}  # stored as uint8 0/255, presented as bool (dclab's H5MaskEvent)
#: dclab's non-scalar features (``definitions/feat_const.py: FEATURES_NON_SCALAR``);
#: every other feature dclab defines is one number per event.  Those of them that
#: are an image per event are shown as TIFF stacks too (the view checks the shape).
IMAGE_FEATURES = {"image", "image_bg", "mask", "qpi_pha", "qpi_amp", "qpi_oah", "qpi_oah_bg"}
GROUP_FEATURES = {"contour", "trace"}
NOT_SCALAR = GROUP_FEATURES | IMAGE_FEATURES


class Resource:
    """Everything under ``MOUNT/<rid>/``."""

    def __init__(self, rid: str, shared: Shared, chain: tuple[str, ...] = ()) -> None:
        """``chain``: the resources whose basins led here (a cycle is refused)."""
        self.rid = rid
        self.chain = chain
        self.shared = shared
        self.api = shared.api
        self.pool = shared.pool
        self.basins: list[Basin] = []
        self._refresh_lock = threading.Lock()
        self._last_refresh = 0.0
        self.answers = ResourceAnswers(rid, shared)
        self._listing_prepared = False
        self._listing_started = False
        self._upstreams: dict[tuple[str, str], Resource | None] = {}
        self._upstream_lock = threading.Lock()
        self._unresolved: set[str] = set()  # features logged as unresolvable
        self._preview_made: Preview | bool | None = None  # False: none
        self._sources: dict[str, tuple[Basin, Any] | Via] = {}  # what source() found
        self.root = CheckedDir(self._root_entries)

    # -- basins --------------------------------------------------------------------
    def load(self) -> None:
        """Ask DCOR for the basins (``ResourceAnswers``) and open them: proves the id
        exists and is readable with the mount's token."""
        specs = self.answers.basins()
        mirror = self.shared.fetcher.mirror
        for spec in specs:
            if not isinstance(spec, dict) or spec.get("format") not in ("http", "s3"):
                continue
            urls = spec.get("urls") or []
            if not urls:
                continue
            if mirror is not None:
                # the store's origin, from the first answer any lookup sees: no read of
                # a young mount goes around the site cache (the warm-up may not have
                # learned it yet)
                mirror.learn_origin(urls[0])
            key = spec.get("key") or spec.get("name") or urls[0].split("?")[0]
            basin = self._basin(spec, key)
            self.basins.append(basin)
            if str(spec.get("name", "")).startswith("resource") and self.shared.disk is not None:
                self.shared.disk.watch_complete(basin.obj.key, self.answers.check_original)
        if not self.basins:
            raise OSError(errno.EIO, f"DCOR lists no readable basin for {self.rid}")

    def _basin(self, spec: dict, key: str, url: str | None = None) -> Basin:
        obj = self.shared.remote_object(
            key, url or spec["urls"][0], expires_at=local_expiry(spec),
            refresh=self.refresh_basins if spec.get("perishable") else None)
        return Basin(spec, obj, self.shared, self._contradicted)

    def _contradicted(self, basin: Basin) -> None:
        """A basin DCOR declared features for turned out not to exist on the store."""
        if basin.declared is not None:
            self.answers.contradicted(basin.name)

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
        preview = self._preview()
        if preview is not None:
            preview.probed()  # listed too: asked beside the basins
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

    def _innate(self, feature: str) -> bool:
        """Whether the original declares ``feature`` (dclab's ``features_innate``: its
        own datasets and groups, and the features of its internal basins)."""
        return any(feature in (b.declared or ()) for b in self.basins
                   if b.name.startswith("resource"))

    def _held_for_sure(self, feature: str) -> bool:
        """Whether ``feature`` needs no check before it is listed: a group (contour,
        trace) the original declares is one of its own groups (internal basins hold
        datasets only), so listing ``contour/`` opens no HDF5 file.  Every other
        feature is listed once its source is found: an internal basin of a format
        dcorfs does not read (``h5datasetchop``) declares features too."""
        return feature in GROUP_FEATURES and self._innate(feature)

    def source(self, feature: str) -> tuple[Basin, Any] | Via:
        """Where ``feature`` is: (basin, h5 object) in the first declaring basin that
        holds it, else a ``Via`` a basin inside one of those files (another resource,
        for dcnum data whose images are in the raw file's resource).

        Only the basins asked are opened, so reading a scalar feature never touches
        the original file when the condensed one holds it; basins inside files are
        followed only when no basin DCOR lists holds the feature itself.
        """
        known = self._sources.get(feature)
        if known is not None:  # found before (a listing's check, then the file's view)
            return known
        declaring = [b for b in self.basins if feature in b.features]
        if feature in NOT_SCALAR:
            # DCOR's condensed basin declares the original's images and contours (its
            # intra-dataset basin) but never holds them: the later basins are opened
            # meanwhile, so falling through to the original costs no round trips more
            for basin in declaring[1:]:
                basin.open_soon()
        for basin in declaring:
            try:
                # a listing stats every file, reading none: no chunk indexes for it
                found = basin.locate(feature, prefetch_index=not self._listing_started)
            except OSError as exc:
                raise basin.error_from(exc) from None
            if found is not None:
                self._sources[feature] = (basin, found)
                return basin, found
            if basin.h5 is not None:  # opened, and the feature is not in it
                basin.keep_layout(feature, None)
        for basin in declaring:
            via = self._via(basin, feature)
            if via is not None:
                self._sources[feature] = via
                return via
        if feature not in self._unresolved:
            self._unresolved.add(feature)
            log.info("DCR405 %s: feature %r is declared but no basin holds it in a form "
                     "dcorfs can read; it is not listed", self.rid, feature)
        raise OSError(errno.ENOENT, f"{self.rid}: no readable source for feature {feature!r}")

    def resolvable(self, feature: str) -> bool:
        """Whether ``feature``'s source can be found (ENOENT: no; other errors raise)."""
        if self._kept_source(feature) is not None:
            return True
        try:
            self.source(feature)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return False
        return True

    # -- basins inside basin files -----------------------------------------------------
    def _via(self, basin: Basin, feature: str) -> Via | None:
        """The first basin inside ``basin``'s file that declares ``feature`` and holds it."""
        h5 = basin.h5
        if h5 is None:
            return None
        for spec in remote_basins(h5):
            declared = spec.get("features")
            if declared is not None and feature not in declared:
                continue
            upstream = self._upstream(basin, spec)
            if upstream is None or not upstream.resolvable(feature):
                continue
            mapping = spec.get("mapping", "same")
            if mapping == "same":
                return Via(upstream, None)
            events = h5.get("events")
            if events is None or mapping not in events:
                log.info("DCR421 %s: basin %r maps by %r, which %s lacks", self.rid,
                         spec.get("name"), mapping, basin.name)
                continue
            return Via(upstream, self._basinmap(basin, events[mapping]))
        return None

    def _basinmap(self, basin: Basin, dataset: h5py.Dataset) -> Any:
        """A basin map, read whole on first use and kept (one integer per event)."""
        view = dataset_view(basin, dataset, False)
        return functools.cache(lambda: view.rows(0, view.nrows).astype("int64"))

    def _upstream(self, basin: Basin, spec: dict) -> Resource | None:
        """The resource a basin inside ``basin``'s file names, opened once (None when it
        cannot be followed: a cycle, too deep, not found, or not readable)."""
        url = str(spec["urls"][0])
        key = (basin.name, f"{spec.get('format')}:{url}")
        with self._upstream_lock:
            if key in self._upstreams:
                return self._upstreams[key]
            made = self._open_upstream(spec, url)
            self._upstreams[key] = made
            return made

    def _open_upstream(self, spec: dict, url: str) -> Resource | None:
        chain = self.chain + (self.rid,)
        if len(chain) > TUNING.max_basin_depth:
            log.info("DCR422 %s: basin %r is deeper than %d basins; not followed",
                     self.rid, spec.get("name"), TUNING.max_basin_depth)
            return None
        if spec.get("format") == "dcor":
            rid = dcor_resource_id(url)
            if rid is None or rid in chain:
                if rid is not None and rid != self.rid:
                    log.info("DCR422 %s: basin %r leads back to %s; not followed", self.rid,
                             spec.get("name"), rid)
                return None
            upstream = Resource(rid, self.shared, chain)
            try:
                upstream.load()
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.EACCES):
                    raise
                log.info("DCR423 %s: basin %r names resource %s, which DCOR does not give "
                         "us (%s)", self.rid, spec.get("name"), rid, exc.strerror)
                return None
            log.info("DCR424 %s: basin %r followed to resource %s", self.rid,
                     spec.get("name"), rid)
            return upstream
        # http or s3: an object URL, read unsigned (the store answers if it is public);
        # the basins DCOR lists already hold the resource's own original
        bare = url.split("?", 1)[0]
        if any(b.obj.url.split("?", 1)[0] == bare for b in self.basins):
            return None
        if not self.shared.fetcher.answers(url):
            log.info("DCR423 %s: basin %r does not answer; not followed", self.rid,
                     spec.get("name"))
            return None
        upstream = Resource(f"{self.rid}/{spec.get('name', 'basin')}", self.shared, chain)
        upstream.basins = [upstream._basin({**spec, "perishable": False}, f"url:{bare}", url)]
        upstream.answers.given({})
        return upstream

    def feature_view(self, feature: str) -> View:
        """``feature`` as an .npy view (for a resource that refers to this one)."""
        return self._feature_view(feature)

    # -- tree ------------------------------------------------------------------------
    def _root_entries(self) -> dict[str, tuple[Node, Any]]:
        """Every name the folder may hold, with the check that decides whether it does
        (None: it does).  A feature is there once its source is found
        (``resolvable``), so a listed file always opens."""
        entries: dict[str, tuple[Node, Any]] = {}
        features = self.declared_features()

        def check(feature: str) -> Any:
            return None if self._held_for_sure(feature) else (lambda: self.resolvable(feature))
        for feat in sorted(features):
            if feat == "trace":
                entries["trace"] = (Dir(self._trace_entries), check(feat))
            elif feat == "contour":
                entries["contour"] = (Dir(self._contour_entries), check(feat))
            else:
                entries[f"{feat}.npy"] = (File(lambda f=feat: self._feature_view(f)),
                                          check(feat))
        entries["features.tsv"] = (File(self._tsv_view), None)
        for feat in features:
            if feat in IMAGE_FEATURES:
                entries[f"{feat}.tif"] = (File(lambda f=feat: self._tiff_view(f)), check(feat))
        entries["metadata.json"] = (File(lambda: LazyBytesView(self._metadata_json)), None)
        entries["logs"] = (Dir(self._log_entries), None)
        entries["tables"] = (Dir(self._table_entries), None)
        for basin in self.basins:
            if basin.name.startswith("condensed") and basin.declared is not None:
                entries["condensed.rtdc"] = (File(lambda o=basin.obj: passthrough(o)),
                                             lambda b=basin: _exists(b))
            elif basin.name.startswith("resource"):
                entries["data.rtdc"] = (File(lambda o=basin.obj: passthrough(o)), None)
        preview = self._preview()
        if preview is not None:
            entries["preview.jpg"] = preview.entry()
        return entries

    def _feature_view(self, feature: str, config: ReadaheadConfig = DEFAULT) -> View:
        """``feature`` as an .npy view; ``config``: the readahead policy of its reads."""
        as_bool = feature in BOOL_FEATURES
        kept = self._kept_view(feature, as_bool, config)
        if kept is not None:
            return kept
        where = self.source(feature)
        if isinstance(where, Via):
            return where.view(feature)
        basin, obj = where
        if isinstance(obj, tuple):
            return mapped_view(basin, obj[0], obj[1], as_bool)
        if isinstance(obj, h5py.Dataset):
            return dataset_view(basin, obj, as_bool,
                                keep=lambda layout: basin.keep_layout(feature, layout),
                                config=config)
        raise OSError(errno.ENOENT, f"{self.rid}: {feature} is not an array")

    def _tsv_view(self) -> TsvView:
        """Every scalar feature as text: dclab's non-scalar features are left out, and
        any other feature that is not one number per event (its shape)."""
        wanted = sorted(f for f in self.declared_features() if f not in NOT_SCALAR)
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
            if not self.resolvable(feature):
                continue
            view = self._feature_view(feature, COLUMN)
            if isinstance(view, NpyView) and len(view.shape) == 1:
                columns.append((feature, view))
        return TsvView(columns)

    def _tiff_view(self, feature: str) -> TiffView:
        view = self._feature_view(feature)
        if not isinstance(view, NpyView):
            raise OSError(errno.EIO, f"{self.rid}: {feature} is not an array")
        pixel = self.answers.metadata().get("imaging", {}).get("pixel size")
        pixel = float(pixel) if isinstance(pixel, (int, float)) and pixel > 0 else None
        return TiffView(view, mask=feature in BOOL_FEATURES, pixel_size_um=pixel)

    # -- preview -----------------------------------------------------------------------
    def _preview(self) -> Preview | None:
        """DCOR's preview of this resource (``Preview``), made once; None where DCOR
        makes none (no original on the store, or a resource behind another's basin)."""
        with self._refresh_lock:
            if self._preview_made is None:
                original = next((b for b in self.basins if b.name.startswith("resource")),
                                None)
                self._preview_made = (False if original is None or self.chain
                                      or "/resource/" not in original.obj.url
                                      else Preview(self.rid, original, self.shared))
            return self._preview_made or None

    def _kept_source(self, feature: str) -> tuple[Basin, Layout] | None:
        """(basin, layout) of ``feature`` from the layouts kept in the disk cache, or
        None.  ``source``'s rule, answered by what was kept, without opening any HDF5
        file: each declaring basin, in order, is known not to hold it, or known to (its
        layout), or not known (then h5py decides)."""
        for basin in self.basins:
            if basin.declared is None:
                return None
            if feature not in basin.declared:
                continue
            known, layout = basin.kept_layout(feature)
            if not known:
                return None
            if layout is not None:
                return basin, layout
        return None

    def _kept_view(self, feature: str, as_bool: bool,
                   config: ReadaheadConfig = DEFAULT) -> View | None:
        """The feature from a layout kept in the disk cache (``_kept_source``), or None."""
        kept = self._kept_source(feature)
        if kept is None:
            return None
        basin, layout = kept
        self.shared.counts.add("kept_layouts_used")
        return layout_view(basin, layout, lambda: self._dataset(basin, feature), as_bool,
                           config=config)

    def _dataset(self, basin: Basin, feature: str) -> h5py.Dataset:
        """``feature``'s h5py dataset in ``basin``, for what only h5py can read."""
        found = basin.locate(feature)
        if not isinstance(found, h5py.Dataset):
            raise OSError(errno.EIO, f"{self.rid}: {feature} is not a dataset of {basin.name}")
        return found

    def _group(self, feature: str) -> tuple[Basin, h5py.Group]:
        where = self.source(feature)
        if isinstance(where, Via):
            raise OSError(errno.EIO, f"{self.rid}: {feature} is in another basin")
        basin, obj = where
        if not isinstance(obj, h5py.Group):
            raise OSError(errno.EIO, f"{self.rid}: {feature} is not an HDF5 group")
        return basin, obj

    def _trace_entries(self) -> dict[str, Node]:
        if not self._innate("trace"):
            where = self.source("trace")
            if isinstance(where, Via):
                return where.folder("trace")
        basin, group = self._group("trace")
        return {f"{name}.npy": File(lambda n=name: dataset_view(basin, group[n], False))
                for name in sorted(group.keys())}

    def _contour_entries(self) -> dict[str, Node]:
        """``contour/``: its own folder (``ContourFolder``), or another resource's
        where the contours are there (dcnum data)."""
        if not self._innate("contour"):
            where = self.source("contour")
            if isinstance(where, Via):
                return where.folder("contour")
        return ContourFolder(
            self.rid, lambda: self._group("contour"), self._declared_event_count(),
            self._event_count,
            lambda basin, group, events, addresses: ContourSizes(
                self.rid, basin, group, events, self.pool, addresses),
            lambda basin, group, events: ContourAddresses(
                self.rid, basin, group, events, self.pool)).entries()

    def _declared_event_count(self) -> int | None:
        """The measurement's event count as DCOR's metadata gives it (always, on
        DCOR), or None."""
        count = self.answers.metadata().get("experiment", {}).get("event count")
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

    def _metadata_json(self) -> bytes:
        meta = self.answers.metadata()
        return (json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

    def _log_entries(self) -> dict[str, Node]:
        logs = self.answers.answer("logs") or {}
        entries: dict[str, Node] = {}
        for name, lines in logs.items():
            text = "".join(f"{line}\n" for line in lines)
            entries[_safe_name(name) + ".txt"] = File(lambda t=text: BytesView(t.encode("utf-8")))
        return entries

    def _table_entries(self) -> dict[str, Node]:
        tables = self.answers.answer("tables") or {}
        entries: dict[str, Node] = {}
        for name, content in tables.items():
            array = table_array(content)
            entries[_safe_name(name) + ".npy"] = File(
                lambda a=array: NpyView(a.dtype, a.shape, lambda r0, r1, a=a: a[r0:r1]))
        return entries

    def close(self) -> None:
        for basin in self.basins:
            basin.close()
        with self._upstream_lock:
            upstreams, self._upstreams = list(self._upstreams.values()), {}
        for upstream in upstreams:
            if upstream is not None:
                upstream.close()


def dcor_resource_id(url: str) -> str | None:
    """The resource id of a ``dcor`` basin's URL (``<site>/api/3/action/dcserv?id=<rid>``),
    or None.  The site is not checked: the mount asks its own DCOR host, with its own
    token, which is what dclab does with a URL of the host it has a token for."""
    query = urllib.parse.urlsplit(url).query
    rid = urllib.parse.parse_qs(query).get("id", [""])[0].strip()
    return rid if is_resource_id(rid) else None


def _exists(basin: Basin) -> bool:
    """Whether a basin's object is on the store (its first read; False when missing)."""
    if basin.unavailable is not None:
        return False
    try:
        basin.obj.probe()
    except OSError as exc:
        if not basin.missing(exc):
            raise
        return False
    return True


def _safe_name(name: str) -> str:
    return name.replace("/", "_").replace("\0", "_") or "_"
