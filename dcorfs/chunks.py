"""Rows of an HDF5 dataset without h5py's lock on the network path.

h5py holds one global lock, also while it calls our file object, so latency inside
it serialises every reader.  Here h5py is used only for metadata (the chunk index)
and for decoding: raw chunk bytes are fetched in parallel by a thread pool through
the block cache, then decoded: dclab's Zstandard + fletcher32 by the same C code
outside the GIL (``native_filters``), anything else by writing the chunk into a
one-chunk dataset in an in-memory HDF5 file with the same filter pipeline and
reading it back (HDF5 runs its own filters: Zstandard via hdf5plugin, deflate,
shuffle, szip).  fletcher32 is verified either way, so a corrupted chunk fails
instead of being served.

A reader that moves forward is given a growing readahead window of chunks
fetched in the background.  Random access fetches the aligned group of chunks
around the one it touches, at least ``MIN_FETCH_BYTES``: a request much smaller
than the link's bandwidth-delay product costs a round trip for little data, and
readers that pick many rows at random come back for the neighbours.  Once random
reads have touched a quarter of a dataset's groups, the rest of the dataset is
fetched in bulk (if it fits a quarter of the cache): a reader that samples that
widely wants most of it, and a few long requests move it at the link's speed
instead of a round trip per group.  Chunks wanted at once that lie back to back
in the file (dclab writes them so) are fetched in one request.
"""
from __future__ import annotations

import concurrent.futures
import errno
import itertools
import logging
import threading
from collections import OrderedDict

import h5py
import numpy as np

from . import deadline, native_filters
from .http_fetch import STORE_CONNECTIONS

log = logging.getLogger(__name__)

_memfile_ids = itertools.count()
SMALL_DATASET = 8 * 1024 ** 2  # compressed bytes
# what the kernel reads at once after a read at offset 0 (seen: 1.15 MiB)
KERNEL_FIRST_READAHEAD = 1152 * 1024
# sequential bytes before our readahead starts: more than the kernel's own readahead
# reads around a page fault or after a small read at offset 0 (seen: 1.1 MiB)
STREAK_BYTES = 2 * 1024 ** 2
# chunks stored back to back are fetched in one request up to this many bytes: fewer
# requests, and one stream's latency, without holding a reader back for a long run
MAX_RUN_BYTES = 4 * 1024 ** 2
# a random read fetches at least this much around its chunk (when the neighbours lie
# back to back with it): a link of 20 ms and 50 MB/s moves 1 MB per round trip, so
# a lone 0.6 MB chunk pays mostly latency; a wasted neighbour costs at most as much
# as one round trip more
MIN_FETCH_BYTES = 1024 ** 2
# random reads that touched this share of a dataset's groups start fetching the rest
# (at least SWEEP_MIN_GROUPS groups; only a dataset within SWEEP_CACHE_SHARE of the
# cache, so that it does not evict itself)
SWEEP_SHARE = 0.25
SWEEP_MIN_GROUPS = 4
SWEEP_CACHE_SHARE = 0.25

# how a read relates to the reads before it (``ChunkedRows._plan_readahead``)
FIRST, AHEAD, NEAR, JUMP = "first", "ahead", "near", "jump"


class ChunkDecodeError(OSError):
    """The in-memory pipeline could not decode a chunk (corrupt, or a filter like szip
    whose parameters depend on the original dataset); the caller may try h5py."""


class _DecoderClosed(Exception):
    pass


class ChunkDecoder:
    """Runs a dataset's filter pipeline on raw chunk bytes, in memory."""

    def __init__(self, dataset: h5py.Dataset) -> None:
        self._closed = False
        self.chunk_shape = tuple(dataset.chunks)
        self.dtype = dataset.dtype
        self._file = h5py.File(f"dcorfs-decoder-{next(_memfile_ids)}", "w", driver="core",
                               backing_store=False)
        space = h5py.h5s.create_simple(self.chunk_shape)
        self._dsid = h5py.h5d.create(self._file.id, b"chunk", dataset.id.get_type(), space,
                                     dcpl=dataset.id.get_create_plist())
        self._lock = threading.Lock()

    def decode(self, raw: bytes, filter_mask: int) -> np.ndarray:
        out = np.empty(self.chunk_shape, dtype=self.dtype)
        with self._lock:
            if self._closed:
                raise _DecoderClosed()
            self._dsid.write_direct_chunk((0,) * len(self.chunk_shape), raw, filter_mask)
            self._dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._file.close()


class DecoderCache:
    """A few decoders, shared by all datasets, least recently used closed first.

    Each decoder is an in-memory HDF5 file holding the last chunk it decoded; one per
    dataset ever read would grow without bound over a long batch of resources.
    """

    def __init__(self, max_decoders: int = 16) -> None:
        self.max_decoders = max_decoders
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def decode(self, key, dataset: h5py.Dataset, raw: bytes, filter_mask: int) -> np.ndarray:
        while True:
            evicted = []
            with self._lock:
                decoder = self._items.get(key)
                if decoder is None:
                    decoder = self._items[key] = ChunkDecoder(dataset)
                    while len(self._items) > self.max_decoders:
                        evicted.append(self._items.popitem(last=False)[1])
                else:
                    self._items.move_to_end(key)
            for old in evicted:
                old.close()
            try:
                return decoder.decode(raw, filter_mask)
            except _DecoderClosed:  # evicted between lookup and use: make a new one
                continue

    def close(self) -> None:
        with self._lock:
            items, self._items = list(self._items.values()), OrderedDict()
        for decoder in items:
            decoder.close()


class DecodedCache:
    """A small LRU of decoded chunks, bounded in bytes, shared by all datasets.

    The kernel asks for 128 KiB at a time; without this, a 1 MiB chunk would be
    decoded eight times during one sequential pass.
    """

    def __init__(self, max_bytes: int = 64 * 1024 ** 2) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value: np.ndarray) -> None:
        with self._lock:
            if key in self._items or value.nbytes > self.max_bytes:
                return
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes


class ChunkedRows:
    """``rows(r0, r1)`` for a chunked dataset whose chunks hold whole rows."""

    MAX_WINDOW = 16

    def __init__(self, obj, dataset: h5py.Dataset, pool: concurrent.futures.Executor,
                 decoded: DecodedCache, decoders: DecoderCache) -> None:
        self.obj = obj  # the RemoteObject holding the file
        self.key = (obj.key, dataset.name)
        self.shape = dataset.shape
        self.dtype = dataset.dtype
        self.rows_per_chunk = dataset.chunks[0]
        self.pool = pool
        self.decoded = decoded
        self.decoders = decoders
        self.dataset = dataset
        self._index: dict[int, tuple[int, int, int]] | None = None
        self.nchunks = -(-self.shape[0] // self.rows_per_chunk) if self.shape[0] else 0
        self._next_row = -1
        row_bytes = max(1, int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize)
        self._sequential_slack = max(1, STREAK_BYTES // row_bytes)
        self._streak_rows = max(1, STREAK_BYTES // row_bytes)
        self._first_readahead_rows = max(1, KERNEL_FIRST_READAHEAD // row_bytes)
        self._window = 0
        self._ahead_until = 0
        self._streak_start = 0
        self._lock = threading.Lock()
        self._decoding: dict[int, threading.Event] = {}
        self._native = native_filters.decoder_for(dataset)
        self._total = 0
        self._group = 1  # chunks per aligned group fetched by a random read
        self._jumped_groups: set[int] = set()  # groups random reads jumped into
        self._swept = False

    @property
    def index(self) -> dict[int, tuple[int, int, int]]:
        """chunk number -> (file offset, stored size, filter mask), read on first use
        (listing a folder needs shapes, not chunk indexes)."""
        with self._lock:
            if self._index is None:
                index: dict[int, tuple[int, int, int]] = {}
                rpc = self.rows_per_chunk
                self.dataset.id.chunk_iter(lambda info: index.__setitem__(
                    info.chunk_offset[0] // rpc, (info.byte_offset, info.size, info.filter_mask)))
                self._index = index
                self._total = sum(entry[1] for entry in index.values())
                if self._total:
                    self._group = max(1, -(-MIN_FETCH_BYTES * len(index) // self._total))
            return self._index

    @staticmethod
    def suitable(dataset: h5py.Dataset) -> bool:
        chunks = dataset.chunks
        return (chunks is not None and len(dataset.shape) >= 1
                and tuple(chunks[1:]) == tuple(dataset.shape[1:])
                and hasattr(dataset.id, "chunk_iter"))

    # -- fetching -----------------------------------------------------------------
    def _raw(self, chunk: int) -> tuple[bytes, int] | None:
        entry = self.index.get(chunk)
        if entry is None:
            return None  # never written: the fill value
        offset, size, mask = entry
        return self.obj.read(offset, offset + size), mask

    def _chunk(self, chunk: int) -> np.ndarray:
        """The decoded chunk; concurrent callers for one chunk share one decode."""
        key = self.key + (chunk,)
        cached = self.decoded.get(key)
        if cached is not None:
            return cached
        with self._lock:
            event = self._decoding.get(chunk)
            owner = event is None
            if owner:
                event = self._decoding[chunk] = threading.Event()
        if not owner:
            deadline.wait(event)
            cached = self.decoded.get(key)
            if cached is not None:
                return cached
        try:
            array = self._decode(chunk)
            self.decoded.put(key, array)
            return array
        finally:
            if owner:
                with self._lock:
                    self._decoding.pop(chunk, None)
                event.set()

    def _decode(self, chunk: int) -> np.ndarray:
        raw = self._raw(chunk)
        if raw is None:
            return np.zeros((self.rows_per_chunk,) + self.shape[1:], dtype=self.dtype)
        try:
            if self._native is not None:
                array = self._native(*raw)
                if array is not None:
                    return array
            return self.decoders.decode(self.key, self.dataset, *raw)
        except (OSError, ValueError, RuntimeError) as exc:  # raw bytes are fetched above
            raise ChunkDecodeError(errno.EIO, f"chunk {chunk} of {self.key[1]} did not "
                                              f"decode: {exc}") from None

    def _prefetch(self, chunks: list[int]) -> None:
        """Fetch and decode ahead in the pool, so readers find chunks ready."""
        for chunk in chunks:
            if chunk in self.index:
                self.pool.submit(self._quiet_chunk, chunk)

    def _fetch_runs(self, chunks: list[int]) -> None:
        """Start fetching each run of back-to-back chunks in one request.

        The run's bytes are claimed in the block cache before this returns, so the
        readers and decoders of those chunks wait for that request instead of making
        their own.  Single chunks are left to their readers.
        """
        for start, stop, count in self._runs(chunks):
            if count > 1:
                self.obj.prefetch(start, stop)

    def _runs(self, chunks) -> list[tuple[int, int, int]]:
        """(start, stop, chunks) of each run of back-to-back chunks among ``chunks``
        not yet decoded, each run at most ``MAX_RUN_BYTES`` long."""
        index = self.index
        wanted = sorted(c for c in set(chunks) if c in index
                        and self.decoded.get(self.key + (c,)) is None)
        runs: list[tuple[int, int, int]] = []
        for chunk in wanted:
            offset, size, _ = index[chunk]
            if runs and runs[-1][1] == offset and offset + size - runs[-1][0] <= MAX_RUN_BYTES:
                runs[-1] = (runs[-1][0], offset + size, runs[-1][2] + 1)
            else:
                runs.append((offset, offset + size, 1))
        return runs

    def _with_group(self, chunks: list[int]) -> list[int]:
        """``chunks`` and the rest of each one's aligned group."""
        group = self._group
        found: set[int] = set()
        for chunk in chunks:
            base = chunk - chunk % group
            found.update(range(base, min(base + group, self.nchunks)))
        return sorted(found)

    def _note_jump(self, chunk: int) -> bool:
        """Record a random read's group; True once (and only once) the dataset
        should be fetched whole."""
        groups = -(-self.nchunks // self._group)
        with self._lock:
            self._jumped_groups.add(chunk // self._group)
            if self._swept or len(self._jumped_groups) < max(SWEEP_MIN_GROUPS,
                                                              SWEEP_SHARE * groups):
                return False
            if self._total > SWEEP_CACHE_SHARE * self.obj.cache.max_bytes:
                return False
            self._swept = True
            return True

    def _sweep(self) -> None:
        """Fetch every chunk not yet decoded, in runs of back-to-back chunks."""
        ranges = [(start, stop) for start, stop, _ in self._runs(self.index)]
        log.info("DCC610 random reads jumped into %d of %d chunk groups of %s: fetching "
                 "the rest in bulk (at most %.1f MB)", len(self._jumped_groups),
                 -(-self.nchunks // self._group), self.key[1],
                 sum(stop - start for start, stop in ranges) / 1e6)
        self.obj.prefetch_in_turn(ranges, STORE_CONNECTIONS)

    def _quiet_chunk(self, chunk: int) -> None:
        try:
            self._chunk(chunk)
        except OSError as exc:  # readahead is a guess; the real read will report errors
            log.debug("readahead of chunk %d of %s failed: %s", chunk, self.key, exc)

    def _plan_readahead(self, r0: int, r1: int, last_chunk: int) -> tuple[list[int], str]:
        """Chunks to fetch ahead: a window that doubles while reads stay sequential;
        and how the read relates to those before: ``FIRST`` (its chunks ahead are
        needed now, fetched with its own), ``AHEAD`` (sequential, the window is
        fetched in the background), ``NEAR`` (sequential, no window yet) or
        ``JUMP`` (random).

        A run of reads counts as sequential only once it has covered ``STREAK_BYTES``:
        the kernel turns one page fault of a memory-mapped reader into several
        consecutive reads, which must not start fetching chunks nobody asked for.
        A small dataset (a scalar feature, a few MB) is fetched whole, in parallel, on
        its first read: it will almost always be read whole (np.load).
        """
        self.index  # noqa: B018 - reads the chunk index, and with it the total size
        with self._lock:
            if self._next_row == -1 and self._total <= SMALL_DATASET:
                self._next_row = r1
                self._ahead_until = self.nchunks
                return [c for c in range(self.nchunks) if c != last_chunk], FIRST
            if self._next_row == -1 and r0 == 0:
                # after a read at the start the kernel reads about a MiB ahead, at once
                # (np.load, or numpy reading the header before it maps the file): its
                # chunks are needed now, in the same round trip
                self._next_row = r1
                upto = min(self.nchunks, -(-self._first_readahead_rows // self.rows_per_chunk))
                return [c for c in range(upto) if c != last_chunk], FIRST
            # the kernel's parallel readahead may deliver reads slightly out of order
            # a run is the span [streak start, next row); the kernel reads its window
            # in parallel, so reads may land anywhere in it or a little beyond
            sequential = (self._next_row >= 0
                          and self._streak_start - self._sequential_slack <= r0
                          <= self._next_row + self._sequential_slack)
            self._next_row = max(r1, self._next_row) if sequential else r1
            if not sequential:
                self._window = 0
                self._ahead_until = 0
                self._streak_start = r0
                return [], JUMP
            if r1 - self._streak_start < self._streak_rows:
                return [], NEAR
            self._window = min(max(4, self._window * 2), self.MAX_WINDOW)
            start = max(last_chunk + 1, self._ahead_until)
            stop = min(self.nchunks, last_chunk + 1 + self._window)
            self._ahead_until = max(self._ahead_until, stop)
            return list(range(start, stop)), AHEAD

    # -- rows ---------------------------------------------------------------------
    def rows(self, r0: int, r1: int) -> np.ndarray:
        r1 = min(r1, self.shape[0])
        if r1 <= r0:
            return np.empty((0,) + self.shape[1:], dtype=self.dtype)
        rpc = self.rows_per_chunk
        first, last = r0 // rpc, (r1 - 1) // rpc
        needed = list(range(first, last + 1))
        ahead, relation = self._plan_readahead(r0, r1, last)
        if relation == FIRST:
            self._fetch_runs(needed + ahead)
        elif relation == AHEAD:
            self._fetch_runs(needed)
            self._fetch_runs(ahead)
        else:
            self._fetch_runs(self._with_group(needed))
            if relation == JUMP and self._note_jump(first):
                self._sweep()
        self._prefetch(ahead)
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

    def __init__(self, obj, dataset: h5py.Dataset) -> None:
        self.obj = obj
        self.offset = dataset.id.get_offset()
        self.shape = dataset.shape
        self.dtype = dataset.dtype
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    @staticmethod
    def suitable(dataset: h5py.Dataset) -> bool:
        return (dataset.chunks is None and dataset.id.get_offset() is not None
                and dataset.dtype.kind not in "OV" and len(dataset.shape) >= 1)

    def rows(self, r0: int, r1: int) -> np.ndarray:
        r1 = min(r1, self.shape[0])
        if r1 <= r0:
            return np.empty((0,) + self.shape[1:], dtype=self.dtype)
        start = self.offset + r0 * self.row_bytes
        data = self.obj.read(start, start + (r1 - r0) * self.row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape((r1 - r0,) + self.shape[1:])
