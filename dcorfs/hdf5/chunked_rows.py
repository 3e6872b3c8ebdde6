"""Rows of an HDF5 dataset without h5py's lock on the network path.

h5py holds one global lock, also while it calls our file object, so latency inside
it serialises every reader.  Here h5py is used at most for metadata (the chunk
index, unless a kept ``Layout`` brings it) and for filters ``native_filters`` leaves
to HDF5; raw chunk bytes are fetched in parallel through the block cache and decoded by
``decoding``.  Which chunks a read fetches besides its own, and in which requests,
is ``readahead``'s policy; this module keeps the state it needs and carries out its
plans.
"""
from __future__ import annotations

import concurrent.futures
import errno
import logging
import threading
from collections.abc import Callable

import h5py
import numpy as np

from ..io import deadline
from ..io.derived_store import DerivedStore
from ..io.disk_cache import derived_key
from ..io.remote_object import RemoteObject
from ..io.single_flight import SingleFlight
from ..tuning import TUNING
from . import native_filters, readahead
from .decoding import ChunkDecodeError, DecodedCache, DecoderCache
from .layout import ChunkIndex, Layout

log = logging.getLogger(__name__)



class ChunkedRows:
    """``rows(r0, r1)`` for a chunked dataset whose chunks hold whole rows."""

    def __init__(self, obj: RemoteObject, index: ChunkIndex,
                 pool: concurrent.futures.Executor, decoded: DecodedCache,
                 decoders: DecoderCache, dataset: Callable[[], h5py.Dataset],
                 config: readahead.ReadaheadConfig = readahead.DEFAULT,
                 derived: DerivedStore | None = None) -> None:
        """``derived``: where decoded chunks are kept on disk (None: nowhere)."""
        layout = index.layout
        self.obj = obj
        self.key = (obj.key, layout.name)
        self.shape = layout.shape
        self.dtype = layout.dtype
        self.pool = pool  # decode tasks; they may wait for background fetches
        self.decoded = decoded
        self.decoders = decoders
        self.derived = derived
        self.dataset = dataset  # opened only for chunks native_filters leaves to HDF5
        self.config = config
        self.index = index
        self.rows_per_chunk = self.index.rows_per_chunk
        self.nchunks = self.index.nchunks
        self._geometry: readahead.Geometry | None = None
        self._state = readahead.ReadState()
        self._jumped_groups: set[int] = set()
        self._swept = False
        self._lock = threading.Lock()
        self._flights = SingleFlight()
        self._native = native_filters.decoder_for(layout)

    @property
    def geometry(self) -> readahead.Geometry:
        if self._geometry is None:
            row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
            self._geometry = readahead.Geometry(
                nrows=self.shape[0], rows_per_chunk=self.rows_per_chunk,
                row_bytes=max(1, row_bytes), nchunks=self.nchunks,
                stored_bytes=self.index.stored_bytes)
        return self._geometry

    @property
    def group(self) -> int:
        geo = self.geometry
        return readahead.group_size(geo.stored_bytes, len(self.index.entries), self.config)

    # -- fetching and decoding ------------------------------------------------------
    def _chunk(self, chunk: int) -> np.ndarray:
        """The decoded chunk; concurrent callers for one chunk share one decode."""
        key = self.key + (chunk,)

        def produce() -> np.ndarray:
            array = self._decode(chunk)
            self.decoded.put(key, array)
            return array

        return self._flights.do(chunk, lambda: self.decoded.get(key), produce)

    def _decode(self, chunk: int) -> np.ndarray:
        entry = self.index.entries.get(chunk)
        chunk_shape = (self.rows_per_chunk,) + self.shape[1:]
        if entry is None:  # never written: the fill value
            return np.zeros(chunk_shape, dtype=self.dtype)
        offset, size, mask = entry
        nbytes = int(np.prod(chunk_shape, dtype=np.int64)) * self.dtype.itemsize
        keep = (self.derived is not None and self.derived.enabled
                and nbytes <= TUNING.keep_decoded_ratio * size)
        decoded_key = self._decoded_key() if keep else ""
        if keep:
            kept = self.derived.get(decoded_key, chunk, nbytes)  # type: ignore[union-attr]
            if kept is not None:
                return np.frombuffer(kept, dtype=self.dtype).reshape(chunk_shape)
        raw = self.obj.read(offset, offset + size)
        try:
            array = self._native(raw, mask) if self._native is not None else None
            if array is None:
                array = self.decoders.decode(self.key, self.dataset(), raw, mask)
        except (OSError, ValueError, RuntimeError) as exc:  # the raw bytes were fetched above
            raise ChunkDecodeError(errno.EIO, f"chunk {chunk} of {self.key[1]} did not "
                                              f"decode: {exc}") from None
        if keep:
            self.derived.keep(decoded_key, chunk,  # type: ignore[union-attr]
                              np.ascontiguousarray(array).tobytes())
        return array

    def _decoded_key(self) -> str:
        """Where this dataset's decoded chunks are kept on disk: named by the object's
        version, so that another version never finds them."""
        size, etag = self.obj.version()
        return derived_key(self.obj.key, f"decoded/{size}/{etag}/{self.key[1]}")

    def _decode_ahead(self, chunks: list[int]) -> None:
        """Decode ahead in the pool, so readers find chunks ready."""
        for chunk in chunks:
            if chunk in self.index.entries:
                self.pool.submit(self._quiet_chunk, chunk)

    def _quiet_chunk(self, chunk: int) -> None:
        try:
            self._chunk(chunk)
        except OSError as exc:  # readahead is a guess; the real read will report errors
            log.debug("readahead of chunk %d of %s failed: %s", chunk, self.key, exc)

    def _runs(self, chunks) -> list[tuple[int, int, int]]:
        """Requests for those of ``chunks`` not decoded yet (``back_to_back_runs``)."""
        pending = [c for c in chunks if self.decoded.get(self.key + (c,)) is None]
        return readahead.back_to_back_runs(self.index.placement(), pending,
                                           self.config.max_run_bytes)

    def _fetch_runs(self, chunks: list[int]) -> None:
        """Start fetching each run of two or more back-to-back chunks in one request.
        The run's blocks are claimed before this returns, so the readers and decoders
        of those chunks wait for it.  Single chunks are left to their readers."""
        for start, stop, count in self._runs(chunks):
            if count > 1:
                self.obj.prefetch(start, stop)

    def _note_jump(self, chunk: int) -> bool:
        """Record a random read's group; True once (and only once) the rest of the
        dataset should be fetched in bulk."""
        group = self.group
        groups = -(-self.nchunks // group)
        with self._lock:
            self._jumped_groups.add(chunk // group)
            if self._swept or not readahead.sweep_due(
                    len(self._jumped_groups), groups, self.geometry.stored_bytes,
                    self.obj.cache.max_bytes, self.config):
                return False
            self._swept = True
            return True

    def _sweep(self) -> None:
        ranges = [(start, stop) for start, stop, _ in self._runs(self.index.entries)]
        log.info("DCC610 random reads jumped into %d of %d chunk groups of %s: fetching "
                 "the rest in bulk (at most %.1f MB)", len(self._jumped_groups),
                 -(-self.nchunks // self.group), self.key[1],
                 sum(stop - start for start, stop in ranges) / 1e6)
        self.obj.prefetch_in_turn(ranges, self.config.sweep_streams)

    # -- rows ---------------------------------------------------------------------
    def rows(self, r0: int, r1: int) -> np.ndarray:
        r1 = min(r1, self.shape[0])
        if r1 <= r0:
            return np.empty((0,) + self.shape[1:], dtype=self.dtype)
        rpc = self.rows_per_chunk
        first, last = r0 // rpc, (r1 - 1) // rpc
        needed = list(range(first, last + 1))
        geometry = self.geometry  # reads the chunk index before the lock is taken
        with self._lock:
            plan = readahead.plan_read(self._state, geometry, r0, r1, self.config)
            self._state = plan.state
        if plan.relation == readahead.FIRST:
            self._fetch_runs(needed + plan.ahead)
        elif plan.relation == readahead.AHEAD:
            self._fetch_runs(needed)
            self._fetch_runs(plan.ahead)
        else:
            self._fetch_runs(readahead.with_groups(needed, self.group, self.nchunks))
            if plan.relation == readahead.JUMP and self._note_jump(first):
                self._sweep()
        self._decode_ahead(plan.ahead)
        if len(needed) == 1:
            arrays = [self._chunk(first)]
        else:
            futures = [self.pool.submit(deadline.bind(self._chunk), c) for c in needed]
            arrays = [f.result(timeout=deadline.remaining(3600.0)) for f in futures]
        parts = []
        for chunk, array in zip(needed, arrays):
            lo = max(r0 - chunk * rpc, 0)
            hi = min(r1 - chunk * rpc, rpc)
            parts.append(array[lo:hi])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class ContiguousRows:
    """Uncompressed contiguous data: rows are plain byte ranges of the remote file."""

    def __init__(self, obj: RemoteObject, layout: Layout) -> None:
        assert layout.offset is not None
        self.obj = obj
        self.offset = layout.offset
        self.shape = layout.shape
        self.dtype = layout.dtype
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def rows(self, r0: int, r1: int) -> np.ndarray:
        r1 = min(r1, self.shape[0])
        if r1 <= r0:
            return np.empty((0,) + self.shape[1:], dtype=self.dtype)
        start = self.offset + r0 * self.row_bytes
        data = self.obj.read(start, start + (r1 - r0) * self.row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape((r1 - r0,) + self.shape[1:])
