"""A small dataset (a contour) read from its bytes, without the HDF5 library.

A walk through 1,000 contours spent most of its time in h5py, not on the network:
opening each dataset (about 0.1 ms) and reading it through HDF5's selection and filter
machinery (about 0.25 ms), all under Python's global lock, against 0.007 ms for the
lookup of its name.  A contour is one chunk, so reading it needs only three small
structures, each parsed here from bytes the block cache holds:

1. its version 1 object header: dataspace and datatype (``symbol_table``), the data
   layout message (version 3: compact, contiguous, or chunked with a version 1
   B-tree) and the filter pipeline message;
2. for chunked data, the B-tree's root, a leaf with the dataset's one chunk: its
   address, stored size and filter mask;
3. the chunk, decoded by ``native_filters`` (dclab's Zstandard + fletcher32, checksum
   verified first) or taken as it is when there are no filters.

Anything else (a continuation block or a shared message in the header, a newer
message version, more than one chunk, another filter) parses as None, and the caller
reads the dataset through h5py, which reads every format (HDF5 file format
specification, version 2, sections IV.A.2.i data layout and IV.A.2.l filter pipeline
messages, III.A.1 B-trees v1).
"""
from __future__ import annotations

import dataclasses
import errno
import struct
from collections.abc import Callable

import numpy as np

from ..tuning import TUNING
from .layout import Layout
from .native_filters import decoder_for
from .symbol_table import (
    DATASPACE,
    DATATYPE,
    TREE_HEADER,
    dataspace,
    datatype,
    header_size,
    messages,
)

#: object header message types read here, and those that make a header unreadable here
LAYOUT, FILTERS, CONTINUATION = 0x0008, 0x000B, 0x0010
#: B-tree v1 node type of a chunked dataset's index
CHUNK_NODES = 1

_CHUNK_KEY = struct.Struct("<II")  # chunk size in bytes, filter mask (then offsets)

Read = Callable[[int, int], bytes]


@dataclasses.dataclass(frozen=True)
class SmallDataset:
    """What reading a dataset whole needs, from its object header."""

    shape: tuple[int, ...]
    dtype: np.dtype
    compact: bytes | None = None  # the data itself, for compact storage
    address: int | None = None  # contiguous data, or the chunk index's root node
    chunks: tuple[int, ...] | None = None  # chunk dimensions, for chunked storage
    filters: tuple[int, ...] = ()

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def read_header(read: Read, address: int) -> SmallDataset | None:
    """The dataset whose version 1 object header is at ``address``, or None when it
    is not one this module reads."""
    buf = read(address, address + TUNING.header_read)
    size = header_size(buf, 0)
    if size is not None and TUNING.header_read < size <= 1 << 20:
        buf = read(address, address + size)
    return parse_header(buf)


def parse_header(buf: bytes) -> SmallDataset | None:
    """``read_header`` on the header's bytes (from their start)."""
    found = messages(buf, 0)
    if found is None:
        return None
    shape = dtype = layout = None
    filters: tuple[int, ...] = ()
    for kind, start, length in found:
        if kind == CONTINUATION or buf[start - 4] & 0x02:  # elsewhere, or shared
            return None
        if kind == DATASPACE:
            shape = dataspace(buf, start, length)
        elif kind == DATATYPE:
            dtype = datatype(buf, start, length)
        elif kind == LAYOUT:
            layout = _layout(buf, start, length)
            if layout is None:
                return None
        elif kind == FILTERS:
            parsed = _filters(buf, start, length)
            if parsed is None:
                return None
            filters = parsed
    if shape is None or dtype is None or layout is None:
        return None
    compact, address, chunks = layout
    if chunks is not None and (len(chunks) != len(shape) + 1 or chunks[-1] != dtype.itemsize
                               or any(c < s for c, s in zip(chunks, shape))):
        return None  # more than one chunk, or an element size that is not the type's
    if chunks is None and filters:
        return None
    return SmallDataset(shape=tuple(int(s) for s in shape), dtype=dtype, compact=compact,
                        address=address, chunks=None if chunks is None else chunks[:-1],
                        filters=filters)


def _layout(buf: bytes, start: int, length: int
            ) -> tuple[bytes | None, int | None, tuple[int, ...] | None] | None:
    """(compact data, address, chunk dimensions) of a version 3 layout message."""
    if length < 2 or buf[start] != 3:
        return None
    kind, at, end = buf[start + 1], start + 2, start + length
    if kind == 0 and at + 2 <= end:  # compact
        size = int.from_bytes(buf[at:at + 2], "little")
        return (bytes(buf[at + 2:at + 2 + size]), None, None) if at + 2 + size <= end else None
    if kind == 1 and at + 16 <= end:  # contiguous: address, size
        return None, int.from_bytes(buf[at:at + 8], "little"), None
    if kind == 2 and at + 9 <= end:  # chunked: rank + 1, B-tree address, dimensions
        rank = buf[at]
        if at + 9 + 4 * rank > end:
            return None
        dims = struct.unpack_from(f"<{rank}I", buf, at + 9)
        return None, int.from_bytes(buf[at + 1:at + 9], "little"), tuple(dims)
    return None


def _filters(buf: bytes, start: int, length: int) -> tuple[int, ...] | None:
    """The filter ids of a version 1 or 2 filter pipeline message."""
    end = start + length
    if length < 2:
        return None
    version, count = buf[start], buf[start + 1]
    at = start + (8 if version == 1 else 2)
    if version not in (1, 2):
        return None
    ids = []
    for _ in range(count):
        if at + 2 > end:
            return None
        ident = int.from_bytes(buf[at:at + 2], "little")
        at += 2
        name_length = 0
        if version == 1 or ident >= 256:
            name_length = int.from_bytes(buf[at:at + 2], "little")
            at += 2
        if at + 4 > end:
            return None
        values = int.from_bytes(buf[at + 2:at + 4], "little")
        at += 4
        if version == 1:
            name_length = -(-name_length // 8) * 8  # padded to a multiple of eight
        at += name_length + 4 * values
        if version == 1 and values % 2:
            at += 4
        if at > end:
            return None
        ids.append(ident)
    return tuple(ids)


def read_data(read: Read, found: SmallDataset) -> np.ndarray | None:
    """The dataset's values, or None when they are not stored in a way read here
    (the caller asks h5py).  Raises EIO for a chunk whose checksum or size is wrong."""
    if found.compact is not None:
        return _plain(found.compact, found)
    if found.address is None or found.address == 2 ** 64 - 1:
        return None  # no storage allocated: HDF5 gives the fill value
    if found.chunks is None:
        return _plain(read(found.address, found.address + found.nbytes), found)
    rank = len(found.chunks) + 1
    key = _CHUNK_KEY.size + 8 * rank
    node = read(found.address, found.address + TREE_HEADER.size + 2 * key + 8)
    if len(node) < TREE_HEADER.size + 2 * key + 8:
        return None
    signature, kind, level, used, _, _ = TREE_HEADER.unpack_from(node, 0)
    if signature != b"TREE" or kind != CHUNK_NODES or level != 0 or used != 1:
        return None
    size, mask = _CHUNK_KEY.unpack_from(node, TREE_HEADER.size)
    offsets = struct.unpack_from(f"<{rank}Q", node, TREE_HEADER.size + _CHUNK_KEY.size)
    if any(offsets):
        return None
    chunk = int.from_bytes(node[TREE_HEADER.size + key:TREE_HEADER.size + key + 8], "little")
    raw = read(chunk, chunk + size)
    if len(raw) != size:
        raise OSError(errno.EIO, f"chunk at {chunk}: {len(raw)} of {size} bytes")
    full = dataclasses.replace(found, shape=found.chunks)
    if not found.filters:
        data = _plain(raw, full)
    else:
        decode = decoder_for(Layout(name="", dtype=found.dtype, shape=found.shape,
                                    chunks=found.chunks, filters=found.filters))
        data = None if decode is None else decode(raw, mask)
    if data is None:
        return None
    return data[tuple(slice(0, s) for s in found.shape)]


def _plain(raw: bytes, found: SmallDataset) -> np.ndarray:
    if len(raw) < found.nbytes:
        raise OSError(errno.EIO, f"{len(raw)} bytes where the dataset needs {found.nbytes}")
    return np.frombuffer(raw, found.dtype, int(np.prod(found.shape, dtype=np.int64))
                         ).reshape(found.shape)
