"""One DCOR resource as a tree of files: basins -> HDF5 datasets -> views.

The rule for features is dclab's: a feature exists when a basin declares it, and it
comes from the first basin (server order: condensed, then original) that declares
it.  A basin that declares a feature it does not hold itself (DCOR's intra-dataset
basins advertise ``image`` in the condensed basin) falls through to the next one.
HDF5 metadata (shapes, dtypes) is read with h5py over ``RemoteFile``; only the
bytes of what is read cross the network.
"""
from __future__ import annotations

import concurrent.futures
import errno
import json
import logging
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, Union

import h5py
import hdf5plugin  # noqa: F401  (registers the Zstandard filter with HDF5)
import numpy as np

from . import deadline
from .block_cache import BlockCache
from .chunks import ChunkDecodeError, ChunkedRows, ContiguousRows, DecodedCache, DecoderCache
from .dcor_api import DcorApi
from .hdf5_hints import group_table_addresses, object_header_hints
from .http_fetch import RangeFetcher
from .remote_object import RemoteFile, RemoteObject
from .views import BytesView, LazyBytesView, NpyView, RemoteBytesView, View

log = logging.getLogger(__name__)

BOOL_FEATURES = {"mask"}  # stored as uint8 0/255, presented as bool (dclab's H5MaskEvent)


class Dir:
    """A directory whose entries are computed on first use."""

    def __init__(self, produce: Callable[[], dict[str, "Node"]]) -> None:
        self._produce = produce
        self._entries: dict[str, Node] | None = None
        self._lock = threading.Lock()

    @property
    def entries(self) -> dict[str, "Node"]:
        with self._lock:
            if self._entries is None:
                self._entries = self._produce()
            return self._entries


class File:
    """A file whose view (and so its size) is made on first use."""

    def __init__(self, make_view: Callable[[], View]) -> None:
        self._make_view = make_view
        self._view: View | None = None
        self._lock = threading.Lock()

    @property
    def view(self) -> View:
        with self._lock:
            if self._view is None:
                self._view = self._make_view()
            return self._view


Node = Union[Dir, File]


class _LazyEntries(dict):
    """``contour/``: thousands of names, each File made only when looked up."""

    def __init__(self, names: list[str], make: Callable[[str], Node]) -> None:
        super().__init__()
        self._names = names
        self._index = set(names)
        self._make = make

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def get(self, name, default=None):  # type: ignore[override]
        if name not in self._index:
            return default
        if not super().__contains__(name):
            super().__setitem__(name, self._make(name))
        return super().__getitem__(name)

    def keys(self):  # type: ignore[override]
        return list(self._names)


class Basin:
    """A remote basin of a resource: its object and, opened on demand, its HDF5 file."""

    def __init__(self, spec: dict, obj: RemoteObject, pool: concurrent.futures.Executor,
                 decoded: DecodedCache, decoders: DecoderCache) -> None:
        self.pool = pool
        self.decoded = decoded
        self.decoders = decoders
        self.name = spec.get("name", "")
        self.declared: list[str] | None = spec.get("features")
        self.obj = obj
        self._h5: h5py.File | None = None
        self._rfile: RemoteFile | None = None
        self._open_lock = threading.Lock()
        self.unavailable: OSError | None = None

    @property
    def h5(self) -> h5py.File | None:
        """The opened HDF5 file, or None when the artifact does not exist (404)."""
        if self._h5 is not None or self.unavailable is not None:
            return self._h5
        with self._open_lock:  # a listing's prefetch and a reader may both get here
            if self._h5 is not None or self.unavailable is not None:
                return self._h5
            try:
                self._rfile = RemoteFile(self.obj)
                self._prefetch_group_tables()
                self._h5 = h5py.File(self._rfile, "r", locking=False,
                                     rdcc_nbytes=4 * 1024 ** 2, rdcc_nslots=1009)
            except OSError as exc:
                err = self.error_from(exc)
                if err.errno != errno.ENOENT:
                    raise err from None
                self.unavailable = err
                log.info("DCR403 basin %s is not available: %s", self.name, err.strerror)
        return self._h5

    def _prefetch_group_tables(self) -> None:
        """Start fetching the group tables the probe names, while h5py opens the file."""
        hints: set[int] = set()
        for data in self.obj.probed:
            hints |= group_table_addresses(data, self.obj.size)
        for address in sorted(hints):
            self.obj.prefetch(address, address + 1)

    def _prefetch_dataset_structures(self, group: h5py.Group, name: str,
                                     index: bool) -> None:
        """Start fetching, in one wave, what opening and reading the dataset will need
        next: its header's continuation block and (``index``) the level below its
        chunk index's root.  h5py would read them one after the other, a round trip
        each."""
        info = group.id.links.get_info(name.encode())
        if info.type != h5py.h5l.TYPE_HARD:
            return
        # h5py is about to read the header: wait for it here (it may still be on its way
        # with the probe's head), then look at what it names
        self.obj.read(info.u, info.u + 512)
        hints = object_header_hints(self.obj.peek, info.u, self.obj.size, index)
        log.debug("dataset %s: prefetching %s", name, sorted(hints.items()))
        for start, length in sorted(hints.items()):
            self.obj.prefetch(start, start + length)

    def prefetch_headers(self) -> None:
        """Fetch every feature's object header in one parallel wave.

        dclab writes each dataset's header next to its data, spread over the file; h5py
        would read them one by one, a round trip each.  Link info gives their
        addresses without reading them.  Worth it before ``ls -l``, not for one file.
        """
        h5 = self.h5
        if h5 is None:
            return
        events = h5.get("events")
        if events is None:
            return
        addresses = set()
        for name in events.keys():
            info = events.id.links.get_info(name.encode())
            if info.type == h5py.h5l.TYPE_HARD:
                addresses.add(info.u)
        # headers in blocks still on their way with the probe's head are waited for by
        # the listing's stats; only the others are fetched, each run in a thread of
        # its own, so none waits behind the head in the pool
        for address in sorted(addresses):
            if 0 <= address < self.obj.size:
                self.obj.prefetch(address, address + 1024)

    def error_from(self, exc: BaseException) -> OSError:
        """The errno-carrying error behind an h5py failure."""
        if self._rfile is not None and self._rfile.last_error is not None:
            err, self._rfile.last_error = self._rfile.last_error, None
            return err
        if isinstance(exc, OSError) and exc.errno:
            return exc
        return OSError(errno.EIO, f"cannot read HDF5 data of basin {self.name}: {exc}")

    @property
    def features(self) -> list[str]:
        if self.declared is not None:
            return list(self.declared)
        h5 = self.h5  # DCOR leaves out "features" when it could not read the artifact
        return sorted(h5["events"].keys()) if h5 is not None and "events" in h5 else []

    def locate(self, feature: str, prefetch_index: bool = True) -> Any:
        """The h5py object holding ``feature`` here, a (dataset, basinmap) pair, or None.
        ``prefetch_index``: the dataset's chunks are likely to be read (not only its
        shape, for a listing)."""
        h5 = self.h5
        if h5 is None:
            return None
        events = h5.get("events")
        if events is not None and feature in events:
            self._prefetch_dataset_structures(events, feature, prefetch_index)
            return events[feature]
        for spec in _internal_basins(h5):
            if feature in (spec.get("features") or []) and spec.get("format") == "h5dataset":
                group = h5.get(spec["paths"][0]) if spec.get("paths") else None
                if group is None or feature not in group:
                    continue
                mapping = spec.get("mapping", "same")
                if mapping == "same":
                    return group[feature]
                if events is not None and mapping in events:
                    return (group[feature], events[mapping])
        return None

    def fast_reader(self, dataset: h5py.Dataset):
        """A rows(r0, r1) function that keeps the network outside h5py's lock, or None."""
        try:
            if ChunkedRows.suitable(dataset):
                return ChunkedRows(self.obj, dataset, self.pool, self.decoded,
                                   self.decoders).rows
            if ContiguousRows.suitable(dataset):
                return ContiguousRows(self.obj, dataset).rows
        except Exception as exc:  # h5py reports our OSErrors as generic ones
            raise self.error_from(exc) from None
        return None  # compact or unusual layouts: h5py reads them

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()


def _internal_basins(h5: h5py.File) -> list[dict]:
    specs = []
    for name in h5.get("basins", {}):
        try:
            lines = h5["basins"][name][:]
            spec = json.loads("".join(x.decode() if isinstance(x, bytes) else str(x)
                                      for x in lines))
        except (ValueError, KeyError, OSError):
            continue
        if spec.get("type") == "internal":
            specs.append(spec)
    return specs


class Resource:
    """Everything under ``MOUNT/<rid>/``."""

    def __init__(self, rid: str, api: DcorApi, cache: BlockCache, fetcher: RangeFetcher,
                 pool: concurrent.futures.Executor, decoded: DecodedCache,
                 decoders: DecoderCache) -> None:
        self.rid = rid
        self.pool = pool
        self.decoded = decoded
        self.decoders = decoders
        self.api = api
        self.cache = cache
        self.fetcher = fetcher
        self.basins: list[Basin] = []
        self._refresh_lock = threading.Lock()
        self._last_refresh = 0.0
        self._metadata: concurrent.futures.Future | None = None
        self._listing_prepared = False
        self._listing_started = False
        self.root = Dir(self._root_entries)

    # -- basins --------------------------------------------------------------------
    def load(self) -> None:
        """Fetch the basin list: proves the id exists and is readable with our token.

        The metadata (for ``metadata.json``) is asked for at the same time, so a
        listing does not wait for one more round trip later.
        """
        self._metadata = self.pool.submit(deadline.bind(self.api.dcserv), self.rid, "metadata")
        specs = self.api.dcserv(self.rid, "basins")
        if not isinstance(specs, list):
            raise OSError(errno.EIO, f"dcserv basins for {self.rid} is not a list")
        for spec in specs:
            if not isinstance(spec, dict) or spec.get("format") not in ("http", "s3"):
                continue
            urls = spec.get("urls") or []
            if not urls:
                continue
            key = spec.get("key") or spec.get("name") or urls[0].split("?")[0]
            obj = RemoteObject(key=key, url=urls[0], expires_at=_local_expiry(spec),
                               cache=self.cache, fetcher=self.fetcher,
                               refresh=self.refresh_basins if spec.get("perishable") else None)
            self.basins.append(Basin(spec, obj, self.pool, self.decoded, self.decoders))
        if not self.basins:
            raise OSError(errno.EIO, f"DCOR lists no readable basin for {self.rid}")

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
                    basin.obj.set_url(spec["urls"][0], _local_expiry(spec))
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
        entries["metadata.json"] = File(lambda: LazyBytesView(self._metadata_json))
        entries["logs"] = Dir(self._log_entries)
        entries["tables"] = Dir(self._table_entries)
        for basin in self.basins:
            if basin.name.startswith("condensed") and basin.declared is not None:
                entries["condensed.rtdc"] = File(lambda o=basin.obj: _passthrough(o))
            elif basin.name.startswith("resource"):
                entries["data.rtdc"] = File(lambda o=basin.obj: _passthrough(o))
        return entries

    def _feature_view(self, feature: str) -> View:
        basin, obj = self.source(feature)
        as_bool = feature in BOOL_FEATURES
        if isinstance(obj, tuple):
            return _mapped_view(basin, obj[0], obj[1], as_bool)
        if isinstance(obj, h5py.Dataset):
            return _dataset_view(basin, obj, as_bool)
        raise OSError(errno.ENOENT, f"{self.rid}: {feature} is not an array")

    def _group(self, feature: str) -> tuple[Basin, h5py.Group]:
        basin, obj = self.source(feature)
        if not isinstance(obj, h5py.Group):
            raise OSError(errno.EIO, f"{self.rid}: {feature} is not an HDF5 group")
        return basin, obj

    def _trace_entries(self) -> dict[str, Node]:
        basin, group = self._group("trace")
        return {f"{name}.npy": File(lambda n=name: _dataset_view(basin, group[n], False))
                for name in sorted(group.keys())}

    def _contour_entries(self) -> dict[str, Node]:
        basin, group = self._group("contour")
        count = len(group)
        width = len(str(max(count - 1, 0)))
        names = [f"{i:0{width}d}.npy" for i in range(count)]

        def make(name: str) -> Node:
            key = str(int(name[:-4]))
            return File(lambda: _dataset_view(basin, group[key], False))

        return _LazyEntries(names, make)

    def _metadata_json(self) -> bytes:
        try:
            if self._metadata is None:
                raise OSError(errno.EIO, "metadata was not requested")
            meta = self._metadata.result(timeout=deadline.remaining(3600.0))
        except (OSError, concurrent.futures.TimeoutError):  # errors are not kept: ask again
            meta = self.api.dcserv(self.rid, "metadata")
        return (json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

    def _log_entries(self) -> dict[str, Node]:
        logs = self.api.dcserv(self.rid, "logs") or {}
        entries: dict[str, Node] = {}
        for name, lines in logs.items():
            text = "".join(f"{line}\n" for line in lines)
            entries[_safe_name(name) + ".txt"] = File(lambda t=text: BytesView(t.encode("utf-8")))
        return entries

    def _table_entries(self) -> dict[str, Node]:
        tables = self.api.dcserv(self.rid, "tables") or {}
        entries: dict[str, Node] = {}
        for name, content in tables.items():
            array = table_array(content)
            entries[_safe_name(name) + ".npy"] = File(
                lambda a=array: NpyView(a.dtype, a.shape, lambda r0, r1, a=a: a[r0:r1]))
        return entries

    def close(self) -> None:
        for basin in self.basins:
            basin.close()


def table_array(content: list) -> np.ndarray:
    """dcserv's ``[column names | None, rows]`` as dclab builds it, singleton axes dropped.

    HDF5 stores rec-array tables as (M, 1) compound datasets; the trailing unit axes
    carry no information, so the file is a plain (M,) structured array.
    """
    names, rows = content
    data = np.asarray(rows)
    if data.dtype.char == "O":
        data = np.asarray(rows, dtype=float)  # None (NaN on the server) becomes NaN
    if names is None:
        return np.ascontiguousarray(data, dtype=float)
    dtype = np.dtype({"names": list(names), "formats": [np.float64] * len(names)})
    data = np.ascontiguousarray(data, dtype=np.float64).reshape(-1, len(names))
    out = np.empty(len(data), dtype=dtype)
    for i, name in enumerate(names):
        out[name] = data[:, i]
    return out


def _passthrough(obj: RemoteObject) -> RemoteBytesView:
    obj.probe()
    return RemoteBytesView(obj)


def _safe_name(name: str) -> str:
    return name.replace("/", "_").replace("\0", "_") or "_"


def _local_expiry(spec: dict) -> float | None:
    """Local time to refresh a perishable URL: before the server's expiry, skew-free."""
    if not spec.get("perishable"):
        return None
    try:
        lifetime = float(spec["time_expiration"]) - float(spec["time_request"])
    except (KeyError, TypeError, ValueError):
        return time.time() + 60.0
    return time.time() + lifetime - min(30.0, 0.2 * lifetime)


def _read_rows(basin: Basin, dataset: h5py.Dataset, r0: int, r1: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dataset[r0:r1]
    except Exception as exc:  # h5py turns our OSErrors into generic ones
        raise basin.error_from(exc) from None


def _dataset_view(basin: Basin, dataset: h5py.Dataset, as_bool: bool) -> NpyView:
    dtype = np.dtype(bool) if as_bool else dataset.dtype
    if dtype.kind == "O" or dataset.shape is None:
        raise OSError(errno.EIO, f"dataset {dataset.name} has no fixed-size type")
    fast = [basin.fast_reader(dataset)]

    def rows(r0: int, r1: int) -> np.ndarray:
        reader = fast[0]
        if reader is None:
            data = _read_rows(basin, dataset, r0, r1)
        else:
            try:
                data = reader(r0, r1)
            except ChunkDecodeError as exc:
                # h5py decodes with the original dataset's own pipeline; if that fails
                # too (a corrupt chunk: fletcher32), the read fails with EIO
                data = _read_rows(basin, dataset, r0, r1)
                fast[0] = None
                log.info("DCC602 %s: %s; h5py decodes this dataset instead",
                         dataset.name, exc.strerror)
        return data.astype(bool) if as_bool else data

    return NpyView(dtype, dataset.shape, rows)


def _mapped_view(basin: Basin, dataset: h5py.Dataset, basinmap: h5py.Dataset,
                 as_bool: bool) -> NpyView:
    """feature[i] = dataset[basinmap[i]]: an internal basin with a basinmap."""
    dtype = np.dtype(bool) if as_bool else dataset.dtype
    shape = (basinmap.shape[0],) + dataset.shape[1:]

    def rows(r0: int, r1: int) -> np.ndarray:
        index = np.asarray(_read_rows(basin, basinmap, r0, r1), dtype=np.int64)
        unique, inverse = np.unique(index, return_inverse=True)
        try:
            data = dataset[unique][inverse] if len(unique) else np.empty((0,) + dataset.shape[1:], dataset.dtype)
        except Exception as exc:
            raise basin.error_from(exc) from None
        return data.astype(bool) if as_bool else data

    return NpyView(dtype, shape, rows)
