"""Decoding chunks outside h5py's read path, and the small caches that go with it.

Raw chunk bytes are decoded by ``native_filters`` where it can (dclab's Zstandard +
fletcher32, outside the GIL), else by writing the chunk into a one-chunk dataset in
an in-memory HDF5 file with the same filter pipeline and reading it back: HDF5 runs
its own filters (Zstandard via hdf5plugin, deflate, shuffle, szip).  fletcher32 is
verified either way, so a corrupted chunk fails instead of being served.
"""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict

import h5py
import numpy as np

_memfile_ids = itertools.count()


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
