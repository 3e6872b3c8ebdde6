"""The on-disk structures of an old-style HDF5 group, parsed from bytes.

HDF5 files written with the library's default format (h5py's ``libver="earliest"``,
and so every file dclab's ``RTDCWriter`` makes) keep a group's members in a *symbol
table*: a version 1 B-tree whose leaves point to symbol nodes (``SNOD``), each
holding up to 2K entries of (name offset in the group's local heap, object header
address).  A dataset's shape and type sit in the first messages of its version 1
object header.  Reading these ourselves lets ``group_shapes`` fetch the index and the
headers of a 220,000-member group in a few hundred large requests, where the HDF5
library walks them one small read at a time.

Only what that needs is parsed (HDF5 file format specification, version 2, sections
III.A.1 B-trees v1, III.B group symbol table nodes, III.D local heaps, IV.A.1.a
version 1 object headers, IV.A.2.b dataspace and IV.A.2.d datatype messages), for
files with 8-byte offsets and lengths.  Anything else parses as ``None``: callers
then fall back to h5py, which reads every format.
"""
from __future__ import annotations

import re
import struct
from collections.abc import Iterator

import numpy as np

#: B-tree v1 node types
GROUP_NODES = 0
#: object header message types
DATASPACE, DATATYPE, SYMBOL_TABLE = 0x0001, 0x0003, 0x0011

#: a B-tree v1 node's start, for every node type: signature, type, level, entries used,
#: left and right siblings
TREE_HEADER = struct.Struct("<4sBBHQQ")
_SNOD = struct.Struct("<4sBBH")  # signature, version, reserved, symbols
_ENTRY = struct.Struct("<QQ")  # name offset in the local heap, object header address
ENTRY_SIZE = 40  # plus cache type, reserved and scratch pad
_HEAP = struct.Struct("<4sB3xQQQ")  # signature, version, data size, free list, data address
_PREFIX = struct.Struct("<BBHII")  # version, reserved, messages, references, header size
_MESSAGE = struct.Struct("<HHB3x")  # type, size, flags
PREFIX_SIZE = 16  # the 12-byte prefix, padded so messages start 8-byte aligned

#: where a v1 object header may start whose first message is a dataspace: version 1,
#: reserved 0, a message count, one reference, a size, padding, then message type 1
#: (what h5py writes for every dataset).  Only a hint for ``header_candidates``: a
#: header is believed only at an address the group's index names.
_LIKELY_DATASET = re.compile(rb"\x01\x00[\x01-\xff]\x00\x01\x00\x00\x00.[\x00-\xff]\x00\x00"
                             rb"\x00\x00\x00\x00\x01\x00", re.DOTALL)


def tree_node(buf: bytes, pos: int) -> tuple[int, int, list[int]] | None:
    """A version 1 B-tree node of a group index at ``buf[pos:]``: (level, entries,
    child addresses), or None when those bytes are not one (or not all there)."""
    if pos + TREE_HEADER.size > len(buf):
        return None
    signature, kind, level, used, _, _ = TREE_HEADER.unpack_from(buf, pos)
    if signature != b"TREE" or kind != GROUP_NODES:
        return None
    keys_and_children = pos + TREE_HEADER.size
    if keys_and_children + 16 * used + 8 > len(buf):
        return None
    children = [int.from_bytes(buf[at:at + 8], "little")
                for at in range(keys_and_children + 8, keys_and_children + 16 * used, 16)]
    return level, used, children


def tree_node_keys(buf: bytes, pos: int) -> tuple[int, list[int], list[int]] | None:
    """``tree_node`` with its keys: (level, the ``entries + 1`` keys, children).  A
    group node's key is a name's offset in the local heap; child ``i`` holds the
    names after key ``i`` up to and including key ``i + 1``."""
    node = tree_node(buf, pos)
    if node is None:
        return None
    level, used, children = node
    first = pos + TREE_HEADER.size
    keys = [int.from_bytes(buf[at:at + 8], "little")
            for at in range(first, first + 16 * used + 1, 16)]
    return level, keys, children


def tree_node_entries(buf: bytes, pos: int) -> int | None:
    """The entries a group B-tree node at ``buf[pos:]`` says it has, from its first
    bytes alone (to read the rest of a node longer than was read), or None."""
    if pos + TREE_HEADER.size > len(buf):
        return None
    signature, kind, _, used, _, _ = TREE_HEADER.unpack_from(buf, pos)
    return used if signature == b"TREE" and kind == GROUP_NODES else None


def tree_node_size(entries: int) -> int:
    """Bytes to read for a group B-tree node of ``entries`` children."""
    return TREE_HEADER.size + 16 * entries + 8


def symbol_node(buf: bytes, pos: int) -> list[tuple[int, int]] | None:
    """The entries of a symbol node at ``buf[pos:]``: (name offset, object header
    address) each, or None when those bytes are not one (or not all there)."""
    if pos + _SNOD.size > len(buf):
        return None
    signature, version, _, count = _SNOD.unpack_from(buf, pos)
    if signature != b"SNOD" or version != 1:
        return None
    first = pos + 8
    if first + count * ENTRY_SIZE > len(buf):
        return None
    return [_ENTRY.unpack_from(buf, first + i * ENTRY_SIZE) for i in range(count)]


def symbol_node_size(entries: int) -> int:
    """Bytes a symbol node of at most ``entries`` entries takes."""
    return 8 + entries * ENTRY_SIZE


#: HDF5's defaults for a group's B-tree (2K children per node) and symbol nodes (2K
#: entries), used when the superblock does not say (version 2 and later)
DEFAULT_K = (16, 4)


def group_ks(head: bytes) -> tuple[int, int]:
    """(internal K, leaf K) of the file's old-style groups, from a version 0 or 1
    superblock at the start of ``head`` (files with a user block are not read
    here): a node holds up to 2K children, a symbol node up to 2K entries."""
    if len(head) >= 20 and head[:8] == b"\x89HDF\r\n\x1a\n" and head[8] in (0, 1):
        leaf, internal = struct.unpack_from("<HH", head, 16)
        if leaf and internal:
            return internal, leaf
    return DEFAULT_K


def local_heap(buf: bytes, pos: int) -> tuple[int, int] | None:
    """A local heap's header at ``buf[pos:]``: (data address, data size), or None."""
    if pos + _HEAP.size > len(buf):
        return None
    signature, version, size, _, address = _HEAP.unpack_from(buf, pos)
    if signature != b"HEAP" or version != 0:
        return None
    return address, size


def heap_name(data: bytes, offset: int) -> str | None:
    """The null-terminated name at ``offset`` of a local heap's data."""
    end = data.find(b"\0", offset)
    if offset >= len(data) or end < 0:
        return None
    return data[offset:end].decode("utf-8", "replace")


def messages(buf: bytes, pos: int) -> Iterator[tuple[int, int, int]] | None:
    """The (type, start, size) of each message in the first block of a version 1
    object header at ``buf[pos:]``, or None when the bytes are not one (or not all
    there).  Messages in continuation blocks are not followed."""
    if pos + PREFIX_SIZE > len(buf):
        return None
    version, reserved, count, _, size = _PREFIX.unpack_from(buf, pos)
    end = pos + PREFIX_SIZE + size
    if version != 1 or reserved != 0 or end > len(buf):
        return None

    def walk() -> Iterator[tuple[int, int, int]]:
        at = pos + PREFIX_SIZE
        for _ in range(count):
            if at + _MESSAGE.size > end:
                return
            kind, length, _ = _MESSAGE.unpack_from(buf, at)
            start = at + _MESSAGE.size
            if start + length > end:
                return
            yield kind, start, length
            at = start + length
    return walk()


def header_size(buf: bytes, pos: int) -> int | None:
    """The bytes of a version 1 object header's first block at ``buf[pos:]``, its
    prefix included, or None when there are not enough bytes to tell."""
    if pos + PREFIX_SIZE > len(buf):
        return None
    return PREFIX_SIZE + _PREFIX.unpack_from(buf, pos)[4]


def symbol_table(buf: bytes, pos: int) -> tuple[int, int] | None:
    """A group's (B-tree address, local heap address) from its object header."""
    found = messages(buf, pos)
    for kind, start, length in found or ():
        if kind == SYMBOL_TABLE and length >= 16:
            return _ENTRY.unpack_from(buf, start)
    return None


def dataspace(buf: bytes, start: int, length: int) -> tuple[int, ...] | None:
    """The current dimensions of a simple (or scalar) dataspace message."""
    if length < 8:
        return None
    version, rank = buf[start], buf[start + 1]
    if version == 1:
        dims = start + 8
    elif version == 2:
        if buf[start + 3] == 2:  # a null dataspace: no elements, no shape
            return None
        dims = start + 4
    else:
        return None
    if dims + 8 * rank > start + length:
        return None
    return struct.unpack_from(f"<{rank}Q", buf, dims)


def datatype(buf: bytes, start: int, length: int) -> np.dtype | None:
    """The NumPy type h5py gives a dataset of this datatype message, for integers and
    IEEE floats; None for anything else (compound, strings, odd bit layouts)."""
    if length < 12:
        return None
    kind, bits = buf[start] & 0x0F, int.from_bytes(buf[start + 1:start + 4], "little")
    size = int.from_bytes(buf[start + 4:start + 8], "little")
    offset, precision = struct.unpack_from("<HH", buf, start + 8)
    if offset != 0 or precision != 8 * size:
        return None
    order = ">" if bits & 0x01 else "<"
    if kind == 0 and size in (1, 2, 4, 8):
        return np.dtype(f"{order}{'i' if bits & 0x08 else 'u'}{size}")
    if kind == 1 and size in (4, 8) and not bits & 0x40:  # not VAX order
        return np.dtype(f"{order}f{size}")
    return None


def dataset_header(buf: bytes, pos: int) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) from a dataset's version 1 object header at ``buf[pos:]``, when
    both messages are in its first block and of a kind ``datatype`` reads."""
    shape: tuple[int, ...] | None = None
    dtype: np.dtype | None = None
    for kind, start, length in messages(buf, pos) or ():
        if kind == DATASPACE:
            shape = dataspace(buf, start, length)
        elif kind == DATATYPE:
            dtype = datatype(buf, start, length)
    if shape is None or dtype is None:
        return None
    return shape, dtype


def node_candidates(buf: bytes) -> Iterator[tuple[int, str]]:
    """Where in ``buf`` a group B-tree node (``"TREE"``) or a symbol node
    (``"SNOD"``) may start: parse them there, believe them only at addresses the
    index names."""
    for signature, kind in ((b"TREE\x00", "tree"), (b"SNOD\x01", "snod")):
        at = buf.find(signature)
        while at >= 0:
            yield at, kind
            at = buf.find(signature, at + 1)


def header_candidates(buf: bytes) -> Iterator[int]:
    """Where in ``buf`` a dataset's object header may start (``_LIKELY_DATASET``)."""
    for match in _LIKELY_DATASET.finditer(buf):
        yield match.start()
