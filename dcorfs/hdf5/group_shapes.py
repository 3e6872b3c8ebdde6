"""The shape and type of every dataset in a large HDF5 group, read in bulk.

``ls -l`` of a measurement's ``contour/`` needs the shape of 220,000 datasets.  Through
h5py each costs a walk down the group's index and a read of its object header, one
small read after another; dclab's writer scatters both through the file, between the
image chunks, so that is hundreds of thousands of round trips.  Here the same
structures (``symbol_table``) are read in *waves*, each wave one set of requests in
flight together:

1. the root of the group's B-tree and its local heap's header;
2. each further level of the B-tree, and the heap's data (the names);
3. the symbol nodes the leaves point to; then the object headers they point to.

Each wave is fetched as ``waves.fetch_wave`` fetches: coalesced, a bounded number of
requests and bytes at a time.  Every fetched range is
also *scanned* for the structures a later wave will want: symbol nodes and B-tree
nodes by their signatures, dataset headers by the bytes h5py writes at their start
(``header_candidates``).  dclab's writer puts an event's header next to those of the
events before it, and index nodes between them, so a wave that fetches the leaves'
surroundings finds most symbol nodes and headers on the way, and the later waves
fetch only what it missed.  A scanned structure is believed only at an address the
index itself names, so the scan can make the walk faster but never wrong.

The fetched bytes are parsed and dropped as they arrive (nothing enters the block
cache); what is kept is a few bytes per member.  Members whose header this module
cannot parse come back without a shape, for the caller to ask h5py.
"""
from __future__ import annotations

import array
import bisect
import dataclasses
import errno
import logging
import time
from collections.abc import Callable

import numpy as np

from . import symbol_table as st
from .waves import Counts, Fetch, Submit, WaveConfig, coalesce, fetch_wave

log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class GroupShapesConfig:
    #: how the waves fetch (``waves.WaveConfig``)
    waves: WaveConfig = WaveConfig()
    #: bytes read for a B-tree node and a symbol node whose entry count is unknown:
    #: room for 256 entries (HDF5 defaults are 32 and 8); a longer one is read again
    tree_bytes: int = st.tree_node_size(256)
    snod_bytes: int = st.symbol_node_size(256)
    #: bytes read for an object header whose size is unknown; a longer one is read again
    header_bytes: int = 1024


class _Index:
    """What the walk has parsed, what of it the group's index vouches for, and the
    members ready to hand out.  Structures are parsed wherever the scan finds them;
    a B-tree node counts once its address is a child of a node that counts (the
    root counts), a symbol node once a counting leaf names it, and a member once a
    counting symbol node names it and its header is parsed.  Kept compact: a
    220,000-member group would take tens of MB as Python tuples."""

    def __init__(self, root: int) -> None:
        self.trees: dict[int, tuple[int, list[int]]] = {}  # address -> (level, children)
        self.snods: dict[int, tuple[int, int]] = {}  # address -> (first entry, count)
        self.names = array.array("Q")  # entries' name offsets in the heap
        self.headers = array.array("Q")  # entries' object header addresses
        self.shapes: dict[int, int] = {}  # parsed, unclaimed header -> index into kinds
        self.kinds: list[tuple[tuple[int, ...], np.dtype]] = []
        self._kind_of: dict[tuple, int] = {}
        self.trees_counted: set[int] = set()
        self.snods_counted: set[int] = set()
        self._expanded: set[int] = set()
        self._taken: set[int] = set()
        self.pending: dict[int, list[int]] = {}  # header -> counted entries waiting for it
        self.ready: list[tuple[int, int]] = []  # (entry, kind) to hand out
        self._count_tree(root)

    # -- what counts -------------------------------------------------------------------
    def _count_tree(self, address: int) -> None:
        stack = [address]
        while stack:
            address = stack.pop()
            self.trees_counted.add(address)
            node = self.trees.get(address)
            if node is None or address in self._expanded:
                continue
            self._expanded.add(address)
            level, children = node
            if level:
                stack.extend(children)
            else:
                for child in children:
                    self._count_snod(child)

    def _count_snod(self, address: int) -> None:
        self.snods_counted.add(address)
        span = self.snods.get(address)
        if span is None or address in self._taken:
            return
        self._taken.add(address)
        first, count = span
        for entry in range(first, first + count):
            header = self.headers[entry]
            kind = self.shapes.pop(header, None)
            if kind is None:
                self.pending.setdefault(header, []).append(entry)
            else:
                self.ready.append((entry, kind))

    # -- what was parsed ---------------------------------------------------------------
    def tree(self, data: bytes, pos: int, address: int) -> None:
        if address in self.trees:
            return
        node = st.tree_node(data, pos)
        if node is not None:
            self.trees[address] = (node[0], node[2])
            if address in self.trees_counted:
                self._count_tree(address)

    def snod(self, data: bytes, pos: int, address: int) -> None:
        if address in self.snods:
            return
        entries = st.symbol_node(data, pos)
        if entries is None:
            return
        self.snods[address] = (len(self.names), len(entries))
        for name, header in entries:
            self.names.append(name)
            self.headers.append(header)
        if address in self.snods_counted:
            self._count_snod(address)

    def header(self, data: bytes, pos: int, address: int) -> None:
        if address in self.shapes:
            return
        parsed = st.dataset_header(data, pos)
        if parsed is None:
            return
        key = (parsed[0], parsed[1].str)
        kind = self._kind_of.get(key)
        if kind is None:
            kind = self._kind_of[key] = len(self.kinds)
            self.kinds.append(parsed)
        waiting = self.pending.pop(address, None)
        if waiting is None:
            self.shapes[address] = kind
        else:
            self.ready.extend((entry, kind) for entry in waiting)

    def scan(self, start: int, data: bytes) -> None:
        for pos, kind in st.node_candidates(data):
            (self.tree if kind == "tree" else self.snod)(data, pos, start + pos)
        for pos in st.header_candidates(data):
            self.header(data, pos, start + pos)

    def needed(self) -> dict[str, set[int]]:
        """What counts but was not parsed yet."""
        return {"tree": self.trees_counted - self.trees.keys(),
                "snod": self.snods_counted - self.snods.keys(),
                "header": set(self.pending)}


#: members handed out: (name, shape, dtype, object header address), shape and dtype
#: None when not parsed
Emit = Callable[[list[tuple[str, "tuple[int, ...] | None", "np.dtype | None", int]]], None]


class GroupShapes:
    """One bulk read of a group's members (see the module doc)."""

    def __init__(self, fetch: Fetch, submit: Submit,
                 config: GroupShapesConfig = GroupShapesConfig()) -> None:
        self.fetch = fetch
        self.submit = submit
        self.config = config
        self.counts = Counts()
        self._heap: tuple[int, int] | bytes | None = None  # data's (address, size), then data

    def read(self, group_header: bytes, emit: Emit) -> None:
        """Hand each member of the group whose object header is ``group_header`` (its
        bytes from the start) to ``emit``, in batches, as soon as its shape is known
        (roughly in file order); members whose header does not parse come last,
        without a shape.  ENOTSUP for a group without a symbol table (a new-style
        group: ask h5py), EIO for an index node that does not parse where the index
        says it is."""
        table = st.symbol_table(group_header, 0)
        if table is None:
            raise OSError(errno.ENOTSUP, "the group has no symbol table (a new-style group)")
        root, heap_at = table
        index = _Index(root)
        tried: set[tuple[str, int]] = set()  # fetched for itself once: not again
        while True:
            need = index.needed()
            need["heap"] = {heap_at} if self._heap is None else set()
            ask = [(kind, address) for kind, addresses in need.items()
                   for address in addresses if (kind, address) not in tried]
            lost = [(kind, address) for kind, addresses in need.items() if kind != "header"
                    for address in addresses if (kind, address) in tried]
            if lost:
                raise OSError(errno.EIO, "HDF5 group index: no %s at %d" % lost[0])
            if not ask and not isinstance(self._heap, tuple):
                break
            tried.update(ask)
            self._wave(ask, index, emit)
        unparsed = [(entry, -1) for entries in index.pending.values() for entry in entries]
        self._hand_out(index, unparsed, emit)

    def _hand_out(self, index: _Index, ready: list[tuple[int, int]], emit: Emit) -> None:
        if not ready or not isinstance(self._heap, bytes):
            return  # the names are not known yet: handed out once they are
        batch = []
        for entry, kind in ready:
            name = st.heap_name(self._heap, index.names[entry])
            if name is None:
                raise OSError(errno.EIO, f"HDF5 group index: no name at heap offset "
                                         f"{index.names[entry]}")
            batch.append((name,) + (index.kinds[kind] if kind >= 0 else (None, None))
                         + (index.headers[entry],))
        ready.clear()
        emit(batch)

    def _wave(self, ask: list[tuple[str, int]], index: _Index, emit: Emit) -> None:
        """Fetch what ``ask`` names (``waves.fetch_wave``), parsing and scanning each
        range as it arrives."""
        cfg = self.config
        sizes = {"tree": cfg.tree_bytes, "snod": cfg.snod_bytes, "header": cfg.header_bytes,
                 "heap": 32}
        ask = sorted(ask, key=lambda item: item[1])
        starts = [address for _, address in ask]
        requests = coalesce([(a, a + sizes[kind]) for kind, a in ask], cfg.waves.gap,
                            cfg.waves.max_request)
        if isinstance(self._heap, tuple):  # the names: one request of its own
            heap_at, heap_size = self._heap
            requests.append((heap_at, heap_at + heap_size))
        started, before = time.monotonic(), self.counts.bytes

        def arrived(start: int, data: bytes) -> None:
            if isinstance(self._heap, tuple) and start == self._heap[0]:
                self._heap = data
            else:
                index.scan(start, data)
                first = bisect.bisect_left(starts, start)
                last = bisect.bisect_left(starts, start + len(data))
                for kind, address in ask[first:last]:
                    self._parse(kind, data, address - start, address, index)
            self._hand_out(index, index.ready, emit)

        fetch_wave([(i, a, b) for i, (a, b) in enumerate(requests)], self.fetch,
                   self.submit, cfg.waves, self.counts, arrived)
        log.debug("group index wave %d: %d structures, %d requests, %.1f MB in %.2f s",
                  self.counts.waves, len(ask), len(requests),
                  (self.counts.bytes - before) / 1e6, time.monotonic() - started)

    def _parse(self, kind: str, data: bytes, pos: int, address: int, index: _Index) -> None:
        """A wanted structure where the index says it is (the scan finds most)."""
        if kind == "heap":
            self._heap = st.local_heap(data, pos)
            if self._heap is None:
                raise OSError(errno.EIO, f"HDF5 group index: no local heap at {address}")
        elif kind == "header":
            index.header(data, pos, address)
        elif kind == "tree":
            index.tree(data, pos, address)
        elif kind == "snod":
            index.snod(data, pos, address)
