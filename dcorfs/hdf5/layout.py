"""Where a dataset's rows sit in the file and how they are stored, without h5py.

Reading a feature needs its type, shape, storage (contiguous at an offset, or chunks
with a filter pipeline) and chunk index.  h5py finds them by opening the file and
walking its metadata: on a remount that serves everything from the disk cache, that
walk costs more than reading the data itself.  A ``Layout`` holds exactly this, can
be kept (JSON, in the disk cache beside DCOR's answers) and rebuilt without opening
the file.  Only layouts that can be read without h5py at all are worth keeping:
contiguous plain data, or chunks that ``native_filters`` decodes.
"""
from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import h5py
import numpy as np

#: a chunk's (file offset, stored size, filter mask), by chunk number
ChunkEntries = dict[int, tuple[int, int, int]]


@dataclass
class Layout:
    """A dataset's type, shape and storage; ``chunk_entries`` once read."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    chunks: tuple[int, ...] | None = None
    filters: tuple[int, ...] = ()
    offset: int | None = None  # contiguous data: where it starts
    chunk_entries: ChunkEntries | None = field(default=None, repr=False)

    @classmethod
    def of(cls, dataset: h5py.Dataset) -> "Layout":
        """The layout h5py knows (the chunk index is read later, by ``ChunkIndex``)."""
        chunks = tuple(int(c) for c in dataset.chunks) if dataset.chunks else None
        filters: tuple[int, ...] = ()
        offset = None
        if chunks is not None:
            dcpl = dataset.id.get_create_plist()
            filters = tuple(int(dcpl.get_filter(i)[0]) for i in range(dcpl.get_nfilters()))
        else:
            offset = dataset.id.get_offset()
        return cls(name=dataset.name, dtype=dataset.dtype,
                   shape=tuple(int(s) for s in dataset.shape), chunks=chunks,
                   filters=filters, offset=offset)

    @property
    def rows_whole(self) -> bool:
        """Chunks hold whole rows (dclab writes them so): a chunk is a run of rows."""
        return (self.chunks is not None and len(self.shape) >= 1
                and self.chunks[1:] == self.shape[1:])

    @property
    def plain(self) -> bool:
        """Contiguous plain numbers: rows are byte ranges of the file."""
        return (self.chunks is None and self.offset is not None and len(self.shape) >= 1
                and self.dtype.kind not in "OV")

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype.str, "shape": list(self.shape),
                "chunks": None if self.chunks is None else list(self.chunks),
                "filters": list(self.filters), "offset": self.offset,
                "entries": None if self.chunk_entries is None else
                [[c, *e] for c, e in sorted(self.chunk_entries.items())]}

    @classmethod
    def from_json(cls, value: dict) -> "Layout":
        """The kept form back; ``ValueError`` for anything malformed."""
        try:
            entries = value.get("entries")
            return cls(name=str(value["name"]), dtype=np.dtype(value["dtype"]),
                       shape=tuple(int(s) for s in value["shape"]),
                       chunks=None if value["chunks"] is None else
                       tuple(int(c) for c in value["chunks"]),
                       filters=tuple(int(f) for f in value["filters"]),
                       offset=None if value["offset"] is None else int(value["offset"]),
                       chunk_entries=None if entries is None else
                       {int(c): (int(o), int(s), int(m)) for c, o, s, m in entries})
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a kept layout: {exc}") from None


class ChunkIndex:
    """A dataset's chunks: number -> (file offset, stored size, filter mask).

    Read on first use (listing a folder needs shapes, not chunk indexes) by ``load``,
    unless the layout came with it; ``loaded`` is told once it has been read.
    """

    def __init__(self, layout: Layout, load: Callable[[], ChunkEntries] | None = None,
                 loaded: Callable[[Layout], None] | None = None) -> None:
        assert layout.chunks is not None
        self.layout = layout
        self.rows_per_chunk = layout.chunks[0]
        nrows = layout.shape[0]
        self.nchunks = -(-nrows // self.rows_per_chunk) if nrows else 0
        self._load = load
        self._loaded = loaded
        self._lock = threading.Lock()

    @property
    def entries(self) -> ChunkEntries:
        with self._lock:
            if self.layout.chunk_entries is None:
                if self._load is None:
                    raise OSError(errno.EIO, f"{self.layout.name}: no chunk index")
                self.layout.chunk_entries = self._load()
                if self._loaded is not None:
                    self._loaded(self.layout)
            return self.layout.chunk_entries

    @property
    def stored_bytes(self) -> int:
        return sum(entry[1] for entry in self.entries.values())

    def placement(self) -> dict[int, tuple[int, int]]:
        """chunk -> (file offset, stored size), for request planning."""
        return {chunk: entry[:2] for chunk, entry in self.entries.items()}


def read_chunk_index(dataset: h5py.Dataset) -> ChunkEntries:
    """Every chunk of ``dataset`` that was written, from its index (through h5py)."""
    entries: ChunkEntries = {}
    rpc = dataset.chunks[0]
    dataset.id.chunk_iter(lambda info: entries.__setitem__(
        info.chunk_offset[0] // rpc, (info.byte_offset, info.size, info.filter_mask)))
    return entries
