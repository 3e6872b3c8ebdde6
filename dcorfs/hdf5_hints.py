"""Guess where an HDF5 file's group tables live, from bytes already fetched.

To look up ``events/deform`` HDF5 reads the group's B-tree node, then its local
heap (the names), then a symbol-table node: one round trip each.  The B-tree node
and the heap header usually sit in the first or last few hundred KiB of a file
(``RemoteObject.probe`` reads both), and they name the other two.  Fetching those
in one parallel wave turns two dependent round trips into one.  Only a hint: what
is parsed here decides what to prefetch, never what is served.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator

_UNDEFINED = 0xFFFFFFFFFFFFFFFF


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


def find_all(data: bytes, signature: bytes) -> Iterator[int]:
    """Offsets of ``signature`` in ``data``: ``bytes.find`` is memchr-fast, a regex
    alternation over a MiB of compressed data is not."""
    at = data.find(signature)
    while at >= 0:
        yield at
        at = data.find(signature, at + 1)
