"""A basin of a resource: one remote HDF5 artifact (condensed or original), opened on demand.

h5py reads the file's metadata through ``RemoteFile``; while it opens the file and
each dataset, the basin fetches ahead what h5py will ask for next (group tables,
object headers, chunk indexes), named by ``hdf5.hints``, so that dependent round
trips become one parallel wave.  Feature data is then read by ``ChunkedRows`` or
``ContiguousRows``, outside h5py's lock.
"""
from __future__ import annotations

import bisect
import errno
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the Zstandard filter with HDF5)

from ..hdf5 import native_filters, readahead
from ..hdf5.chunked_rows import ChunkedRows, ContiguousRows
from ..hdf5.hints import group_table_addresses, object_header_hints
from ..hdf5.layout import ChunkEntries, ChunkIndex, Layout, read_chunk_index
from ..hdf5.remote_file import RemoteFile
from ..io.remote_object import RemoteObject
from ..tuning import TUNING
from .shared import Shared

log = logging.getLogger(__name__)


class Basin:
    """A remote basin of a resource: its object and, opened on demand, its HDF5 file."""

    def __init__(self, spec: dict, obj: RemoteObject, shared: Shared,
                 on_missing: Callable[["Basin"], None] | None = None) -> None:
        """``on_missing`` is told when the object turns out not to exist."""
        self.shared = shared
        self._on_missing = on_missing
        self.name = spec.get("name", "")
        self.declared: list[str] | None = spec.get("features")
        # a presigned URL: a 403 is DCOR's store refusing an old signature, not a
        # missing object (an unsigned URL of a missing key answers 403 too)
        self.perishable = bool(spec.get("perishable"))
        self.obj = obj
        self._h5: h5py.File | None = None
        self._rfile: RemoteFile | None = None
        self._open_lock = threading.Lock()
        self.unavailable: OSError | None = None
        self._headers: dict[str, list[int]] = {}  # group name -> its members' headers

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
                self.shared.counts.add("files_opened")
            except OSError as exc:
                err = self.error_from(exc)
                if not self.missing(err):
                    raise err from None
                self.unavailable = err
                log.info("DCR403 basin %s is not available: %s", self.name, err.strerror)
        if self._h5 is None and self._on_missing is not None:
            self._on_missing, tell = None, self._on_missing
            tell(self)
        return self._h5

    def open_soon(self) -> None:
        """Open the HDF5 file in the background (``h5``): a failure is met again, and
        reported, by whoever opens it next."""
        if self._h5 is None and self.unavailable is None:
            try:
                self.shared.pool.submit(self._open_quietly)
            except RuntimeError:  # the mount is closing
                pass

    def _open_quietly(self) -> None:
        try:
            self.h5
        except OSError as exc:
            log.debug("opening basin %s ahead failed: %s", self.name, exc)

    def missing(self, err: OSError) -> bool:
        """Whether an error opening this basin means its object does not exist: a 404,
        or a 403 to an unsigned request.  DCOR's store lets anonymous clients read only
        objects tagged public and list nothing, so a key that does not exist (a
        condensed file not made yet) answers 403 there (dcor_shared s3.py
        ``require_bucket``), and dclab takes the basin for unavailable."""
        return err.errno == errno.ENOENT or (err.errno == errno.EACCES and not self.perishable)

    def _prefetch_group_tables(self) -> None:
        """Start fetching the group tables the probe names, while h5py opens the file;
        those named in the rest of the head once it has streamed in."""
        hints: set[int] = set()
        for data in self.obj.probed:
            hints |= group_table_addresses(data, self.obj.size)
        for address in sorted(hints):
            self.obj.prefetch(address, address + 1)
        head = self.obj.head_fetch
        if head is not None and self.obj.probed:
            start = len(self.obj.probed[0])
            head.add_done_callback(lambda _: self._prefetch_named_in(start, hints))

    def _prefetch_named_in(self, start: int, known: set[int]) -> None:
        """Fetch the group tables named in the head past ``start`` (run once it is in;
        nothing if it failed or is gone from memory: h5py then reads what it needs)."""
        data = self.obj.peek(start, TUNING.probe_head)
        if not data:
            return
        try:
            for address in sorted(group_table_addresses(data, self.obj.size) - known):
                self.obj.prefetch(address, address + 1)
        except OSError as exc:  # the reader that needs them meets it again
            log.debug("group tables of %s not prefetched: %s", self.name, exc)

    def _prefetch_dataset_structures(self, group: h5py.Group, name: str,
                                     index: bool) -> None:
        """Start fetching, in one wave, what opening and reading the dataset will need
        next: its header (with ``index``, the bytes before it back to the header of the
        group's member before it in the file, when they are few: a writer that writes
        each dataset whole puts its index and chunks there), its header's continuation
        block and (``index``) its chunk index's root and the level below it.  h5py
        would read them one after the other, a round trip each."""
        info = group.id.links.get_info(name.encode())
        if info.type != h5py.h5l.TYPE_HARD:
            return
        if index:  # its chunks will be read, not only its shape (a listing)
            before = self._header_before(group, info.u)
            if info.u - before <= readahead.DEFAULT.small_dataset_bytes:
                # the header first, in a request of its own: asked together, the two
                # share the link, so the header arrives after a round trip and h5py
                # locates the chunks while they still stream in behind it
                self.obj.prefetch(info.u, info.u + 512)
                self.obj.prefetch(before, info.u)
        # h5py is about to read the header: wait for it here (it may still be on its way
        # with the probe's head), then look at what it names
        self.obj.read(info.u, info.u + 512)
        hints = object_header_hints(self.obj.peek, info.u, self.obj.size, index,
                                    readahead.DEFAULT.small_dataset_bytes)
        log.debug("dataset %s: prefetching %s", name, sorted(hints.items()))
        for start, length in sorted(hints.items()):
            self.obj.prefetch(start, start + length)

    def _header_before(self, group: h5py.Group, address: int) -> int:
        """The object header of ``group``'s member that comes last in the file before
        ``address`` (``address`` when none does)."""
        headers = self._headers.get(group.name)
        if headers is None:
            found = (group.id.links.get_info(n.encode()) for n in group)
            headers = self._headers[group.name] = sorted(
                i.u for i in found if i.type == h5py.h5l.TYPE_HARD)
        at = bisect.bisect_left(headers, address)
        return headers[at - 1] if at > 0 else address

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
        # the listing's stats; only the others are fetched, in the background pool,
        # where none waits behind the head
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
        for spec in internal_basins(h5):
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

    def fast_reader(self, layout: Layout, dataset: Callable[[], h5py.Dataset],
                    keep: Callable[[Layout], None] | None = None,
                    config: readahead.ReadaheadConfig = readahead.DEFAULT):
        """A rows(r0, r1) function that keeps the network outside h5py's lock, or None
        (compact or unusual layouts: h5py reads them).  ``dataset`` opens the h5py
        dataset where HDF5 must decode; ``keep`` is given the layout, chunk index
        included, once it is complete, if it can be read without h5py; ``config`` is the
        readahead policy's."""
        if layout.rows_whole:
            native = native_filters.decoder_for(layout) is not None
            index = ChunkIndex(layout, load=lambda: self._chunk_index(dataset),
                               loaded=keep if native else None)
            return ChunkedRows(self.obj, index, self.shared.pool, self.shared.decoded,
                               self.shared.decoders, dataset, config,
                               self.shared.derived).rows
        if layout.plain:
            if keep is not None:
                keep(layout)
            return ContiguousRows(self.obj, layout).rows
        return None

    def _chunk_index(self, dataset: Callable[[], h5py.Dataset]) -> ChunkEntries:
        try:
            return read_chunk_index(dataset())
        except Exception as exc:  # h5py reports our OSErrors as generic ones
            raise self.error_from(exc) from None

    # -- layouts kept on disk, so that a remount needs no h5py ------------------------
    def kept_layout(self, feature: str) -> tuple[bool, Layout | None]:
        """(known, layout): whether the disk cache knows where ``feature`` sits in this
        basin, and its layout (None: this basin does not hold it)."""
        disk = self.shared.disk
        value = None if disk is None else disk.note(self.obj.key, f"layout:{feature}")
        if not isinstance(value, dict):
            return False, None
        if value.get("absent"):
            return True, None
        try:
            return True, Layout.from_json(value)
        except ValueError as exc:
            log.info("DCR412 kept layout of %s in %s unusable: %s", feature, self.name, exc)
            return False, None

    def keep_layout(self, feature: str, layout: Layout | None) -> None:
        """Remember ``feature``'s layout here, or (None) that this basin does not hold it."""
        disk = self.shared.disk
        if disk is not None and self.obj.size >= 0:
            disk.keep_note(self.obj.key, (self.obj.size, self.obj.etag), f"layout:{feature}",
                           {"absent": True} if layout is None else layout.to_json())

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()


def stored_basins(h5: h5py.File) -> list[dict]:
    """Every basin definition in a file's ``basins`` group, in the group's order (a
    definition that does not parse is left out, as dclab leaves it out)."""
    specs = []
    for name in h5.get("basins", {}):
        try:
            lines = h5["basins"][name][:]
            spec = json.loads("".join(x.decode() if isinstance(x, bytes) else str(x)
                                      for x in lines))
        except (ValueError, KeyError, OSError):
            continue
        if isinstance(spec, dict):
            specs.append(spec)
    return specs


def internal_basins(h5: h5py.File) -> list[dict]:
    return [spec for spec in stored_basins(h5) if spec.get("type") == "internal"]


def remote_basins(h5: h5py.File) -> list[dict]:
    """The basins of a file that point elsewhere and that a remote reader may follow:
    ``remote`` ones of format ``dcor``, ``http`` or ``s3`` (``file`` basins name paths
    on the uploader's disk: dclab refuses them for remote data too)."""
    return [spec for spec in stored_basins(h5) if spec.get("type") == "remote"
            and spec.get("format") in ("dcor", "http", "s3") and spec.get("urls")]
