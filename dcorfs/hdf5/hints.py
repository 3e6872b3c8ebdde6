"""Guess where an HDF5 file's next structures live, from bytes already fetched.

To look up ``events/deform`` HDF5 reads the group's B-tree node, then its local
heap (the names), then a symbol-table node: one round trip each.  The B-tree node
and the heap header usually sit in the first or last few hundred KiB of a file
(``RemoteObject.probe`` reads both), and they name the other two.  Fetching those
in one parallel wave turns two dependent round trips into one.

Opening a dataset then reads its object header and the header's continuation
block; reading its chunks first reads the chunk index below the index's root.
The header names both the continuation and the root, so when the header and the
root are in hand, the continuation and the index's next level can be fetched in
one wave too.  A dataset written whole (every feature of a condensed file, any
dataset h5py writes at once) has its chunks right after its index's root: for a
small dataset, the bytes after the root, as many as the dataset has before
compression, are fetched with the root, so its chunks come in the same round trip
instead of one after it.  Only hints: what is parsed here decides what to prefetch,
never what is served.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator

from .symbol_table import dataspace

_UNDEFINED = 0xFFFFFFFFFFFFFFFF
# bytes [start, stop) of the file if already in hand, else None
Peek = Callable[[int, int], "bytes | None"]
_DATASPACE, _DATATYPE, _CONTINUATION, _LAYOUT = 0x01, 0x03, 0x10, 0x08
_MAX_BTREE_ENTRIES = 64  # HDF5's default: 2 x K, K = 32 for chunk indexes


def group_table_addresses(data: bytes, file_size: int, max_children: int = 64) -> set[int]:
    """Addresses of symbol-table nodes and heap data named by version-1 group B-tree
    nodes and local heaps found in ``data`` (8-byte offsets and lengths assumed)."""
    found: set[int] = set()
    for at in find_all(data, b"HEAP"):
        # version 0, 3 reserved, data size, free-list offset, data segment address
        if at + 32 > len(data) or data[at + 4] != 0:
            continue
        address = struct.unpack_from("<Q", data, at + 24)[0]
        if 0 < address < file_size:
            found.add(address)
    for at in find_all(data, b"TREE"):
        # node type 0 (group), level, entries, two siblings, then key/child pairs
        if at + 24 > len(data) or data[at + 4] != 0:
            continue
        entries = struct.unpack_from("<H", data, at + 6)[0]
        if not 0 < entries <= max_children:
            continue
        for i in range(entries):
            offset = at + 24 + 8 + 16 * i
            if offset + 8 > len(data):
                break
            child = struct.unpack_from("<Q", data, offset)[0]
            if 0 < child < file_size and child != _UNDEFINED:
                found.add(child)
    return found


def object_header_hints(peek: Peek, address: int, file_size: int, index: bool = True,
                        between: int = 0) -> dict[int, int]:
    """Ranges (start -> length) that reading the dataset whose version-1 object header
    is at ``address`` will need next: the header's continuation blocks, and (``index``)
    its chunk index's root and the nodes one level below it (a version-1 B-tree).  For
    a dataset of at most ``between`` bytes before compression whose root follows its
    header, the root with that many bytes after it: its chunks, if it was written whole
    (see the module doc; a root before the header comes with the header's
    surroundings, ``Basin._header_before``)."""
    found: dict[int, int] = {}
    shape: tuple[int, ...] | None = None
    itemsize = 0
    prefix = peek(address, address + 16)
    if prefix is None or len(prefix) < 16 or prefix[0] != 1:
        return found
    areas = [(address + 16, struct.unpack_from("<I", prefix, 8)[0])]
    layout: tuple[int, int] | None = None
    while areas and len(found) < 16:
        start, length = areas.pop()
        data = peek(start, start + length) if 0 < start < file_size else None
        at = 0
        while data is not None and at + 8 <= len(data):
            kind, size = struct.unpack_from("<HH", data, at)
            body = data[at + 8:at + 8 + size]
            if kind == _CONTINUATION and len(body) >= 16:
                block, block_length = struct.unpack_from("<QQ", body)
                if 0 < block < file_size and block not in found:
                    found[block] = block_length
                    areas.append((block, block_length))
            elif kind == _LAYOUT and len(body) >= 11 and body[0] == 3 and body[1] == 2:
                layout = body[2], struct.unpack_from("<Q", body, 3)[0]  # chunked, v3
            elif kind == _DATASPACE:
                shape = dataspace(data, at + 8, len(body))
            elif kind == _DATATYPE and len(body) >= 8:
                itemsize = int.from_bytes(body[4:8], "little")
            at += 8 + size
    if index and layout is not None:
        dimensions, root = layout
        raw = math.prod(shape) * itemsize if shape is not None else 0
        if address < root < file_size and 0 < raw <= between:
            found[root] = _btree_node_bytes(dimensions) + raw  # and its chunks, likely
        elif 0 < root < file_size and peek(root, root + 24) is None:
            # the index's root: h5py reads it right after the header, a round trip of
            # its own unless it is on its way by then
            found.setdefault(root, _btree_node_bytes(dimensions))
        found.update(_chunk_index_children(peek, *layout, file_size))
    return found


def _btree_node_bytes(dimensions: int) -> int:
    """The size of a chunk index node (version-1 B-tree) of a dataset whose layout
    message names ``dimensions`` (its rank plus one)."""
    key = 8 + 8 * dimensions  # chunk size, filter mask, an offset per dimension
    return 24 + _MAX_BTREE_ENTRIES * (key + 8) + key


def _chunk_index_children(peek: Peek, dimensions: int, root: int, file_size: int
                          ) -> dict[int, int]:
    """The nodes below a chunk index's root, if the root is in hand and has a level
    below it (a root of level 0 lists the chunks themselves)."""
    key = 8 + 8 * dimensions  # chunk size, filter mask, an offset per dimension
    node = _btree_node_bytes(dimensions)
    head = peek(root, root + 24) if 0 < root < file_size else None
    if head is None or len(head) < 24 or head[:5] != b"TREE\x01" or head[5] == 0:
        return {}
    entries = min(struct.unpack_from("<H", head, 6)[0], _MAX_BTREE_ENTRIES)
    data = peek(root, root + 24 + entries * (key + 8))
    if data is None:
        return {}
    children = (struct.unpack_from("<Q", data, 24 + i * (key + 8) + key)[0]
                for i in range(entries))
    return {child: node for child in children if 0 < child < file_size}


def find_all(data: bytes, signature: bytes) -> Iterator[int]:
    """Offsets of ``signature`` in ``data``: ``bytes.find`` is memchr-fast, a regex
    alternation over a MiB of compressed data is not."""
    at = data.find(signature)
    while at >= 0:
        yield at
        at = data.find(signature, at + 1)
