"""Members of an old-style HDF5 group found by name, many names at once.

h5py finds a member by walking its group's B-tree from the root, one node at a time,
each node (and, to compare names, pieces of the group's local heap) a small read of
its own.  For one name that is a few round trips.  A loop over a measurement's
contours asks for "0", "1", "2", ...: in name order "1", "10", "100", "1000", "10000"
come before "2", so those names lie all over the index, each under a leaf and a
symbol node of its own, and each costs its own round trips, one name after another.

Here the names asked together are found together, one wave (``waves.fetch_wave``)
per level of the tree:

1. once: the local heap's header and the B-tree's root (next to the group's own
   header, so usually in the block cache already), then the heap's data, which holds
   every name (3 MB for 220,000 members);
2. each level of the B-tree: the children whose key range holds an asked name, all
   at once;
3. the symbol nodes those leaves point to, whose entries give each name's object
   header address.

Every B-tree node parsed is kept (a 220,000-member group has about 3,100, of a few
hundred bytes each), so later names descend without requests down to the leaves they
need.  Symbol nodes are not kept: all their entries, asked or not, go to the caller
(``learned``), which keeps what it wants.  A node not where its parent says it is
is EIO; a group without a symbol table (a new-style group) is ENOTSUP, for the
caller to ask h5py.  Names compare as bytes, as HDF5's ``strcmp`` does.
"""
from __future__ import annotations

import bisect
import dataclasses
import errno
import threading
from collections.abc import Callable, Sequence

from . import symbol_table as st
from .waves import KiB, Counts, Fetch, Request, Submit, WaveConfig, coalesce, fetch_wave

#: read ``[start, stop)`` through the block cache (a few structures by the group header)
Read = Callable[[int, int], bytes]
#: every (name, object header address) of each symbol node read
Learned = Callable[[list[tuple[str, int]]], None]
#: an object header address HDF5 leaves undefined (a soft link's entry)
UNDEFINED = 2 ** 64 - 1


@dataclasses.dataclass(frozen=True)
class GroupIndexConfig:
    #: how each level is fetched.  Index nodes are a few hundred bytes and scattered
    #: through the file: at 24 requests in flight a request costs the link about as
    #: much time as 40 KB, so nodes further apart than 32 KiB get requests of their own
    waves: WaveConfig = WaveConfig(gap=32 * KiB)


class GroupIndex:
    """The index of one group (see the module doc); safe to use from many threads
    (two that need one node at once may both fetch it)."""

    def __init__(self, read: Read, fetch: Fetch, submit: Submit, group_header: bytes,
                 ks: tuple[int, int], config: GroupIndexConfig = GroupIndexConfig()) -> None:
        """``group_header``: the bytes of the group's object header, from its start;
        ``ks``: the file's (internal K, leaf K) (``symbol_table.group_ks``)."""
        table = st.symbol_table(group_header, 0)
        if table is None:
            raise OSError(errno.ENOTSUP, "the group has no symbol table (a new-style group)")
        self._root, self._heap_at = table
        self.read, self.fetch, self.submit, self.config = read, fetch, submit, config
        self._tree_bytes = st.tree_node_size(2 * ks[0])
        self._snod_bytes = st.symbol_node_size(2 * ks[1])
        self.counts = Counts()
        self._heap: bytes | None = None
        self._heap_lock = threading.Lock()
        self._nodes: dict[int, tuple[int, list[bytes], list[int]]] = {}
        self._lock = threading.Lock()

    def find(self, names: Sequence[str], learned: Learned) -> dict[str, int | None]:
        """The object header address of each of ``names``; None for a name the group
        lacks.  Every entry of every symbol node read goes to ``learned``.  ``names``
        come in the order they are wanted: the structures of the first are fetched
        first, and each node's children are asked for as soon as it arrives."""
        heap = self._names()
        if self._root not in self._nodes:  # next to the group's header: cached
            self._parse_tree(self._root, self.read(self._root, self._root + self._tree_bytes), 0)
        rank: dict[bytes, int] = {}
        for i, name in enumerate(names):
            rank.setdefault(name.encode(), i)
        found: dict[str, int | None] = {}
        walk = _Walk(rank, found)
        requests = self._descend(self._root, sorted(rank), walk)

        def arrived(start: int, data: bytes) -> list[Request]:
            more: list[Request] = []
            for address in walk.covers.pop(start, ()):
                kind, asked = walk.wanted.pop(address)
                if kind == "tree":
                    self._parse_tree(address, data, address - start)
                    more += self._descend(address, asked, walk)
                else:
                    self._symbol_node(address, data, address - start, asked, heap, walk,
                                      learned)
            return more

        fetch_wave(requests, self.fetch, self.submit, self.config.waves, self.counts, arrived)
        return found

    def _descend(self, address: int, names: list[bytes], walk: "_Walk") -> list[Request]:
        """Route ``names`` (sorted) down from the node at ``address`` through the nodes
        known; the requests for the first unknown nodes and the symbol nodes on their
        way."""
        node = self._nodes.get(address)
        if node is None:
            raise OSError(errno.EIO, f"HDF5 group index: no B-tree node at {address}")
        level, keys, children = node
        below: dict[int, list[bytes]] = {}
        for name in names:
            # child i holds the names after key i up to key i + 1 (H5G__node_cmp3)
            i = bisect.bisect_left(keys, name, 1) - 1
            if name <= keys[0] or i >= len(children):
                walk.found[name.decode()] = None
            else:
                below.setdefault(children[i], []).append(name)
        if level == 0:
            return walk.ask("snod", below, self._snod_bytes, self.config.waves)
        requests: list[Request] = []
        unknown = {}
        for child, asked in below.items():
            if child in self._nodes:
                requests += self._descend(child, asked, walk)
            else:
                unknown[child] = asked
        return requests + walk.ask("tree", unknown, self._tree_bytes, self.config.waves)

    # -- the heap --------------------------------------------------------------------
    def _names(self) -> bytes:
        """The local heap's data: every member's name (fetched once)."""
        with self._heap_lock:
            if self._heap is None:
                found = st.local_heap(self.read(self._heap_at, self._heap_at + 32), 0)
                if found is None:
                    raise OSError(errno.EIO, f"HDF5 group index: no local heap at "
                                             f"{self._heap_at}")
                start, size = found
                pieces: dict[int, bytes] = {}
                step = self.config.waves.max_request
                requests = [(0, a, min(a + step, start + size))
                            for a in range(start, start + size, step)]
                fetch_wave(requests, self.fetch, self.submit, self.config.waves, self.counts,
                           pieces.__setitem__)
                heap = b"".join(pieces[a] for _, a, _ in requests)
                if len(heap) != size:
                    raise OSError(errno.EIO, f"HDF5 group index: the local heap at {start} "
                                             f"gave {len(heap)} of {size} bytes")
                self._heap = heap
            return self._heap

    @staticmethod
    def _name(heap: bytes, offset: int) -> bytes:
        end = heap.find(b"\0", offset)
        if offset >= len(heap) or end < 0:
            raise OSError(errno.EIO, f"HDF5 group index: no name at heap offset {offset}")
        return heap[offset:end]

    # -- B-tree nodes and symbol nodes ---------------------------------------------
    def _parse_tree(self, address: int, data: bytes, pos: int) -> None:
        """Keep the B-tree node at ``data[pos:]`` (read again whole if it is longer
        than the bytes read); nothing kept when it is not one."""
        node = st.tree_node_keys(data, pos)
        if node is None:
            used = st.tree_node_entries(data, pos)
            if used is None:
                return  # not a node: EIO where it is needed
            node = st.tree_node_keys(self.fetch(address, address + st.tree_node_size(used)), 0)
            if node is None:
                return
        level, keys, children = node
        heap = self._names()
        parsed = (level, [self._name(heap, key) for key in keys], children)
        with self._lock:
            self._nodes[address] = parsed

    def _symbol_node(self, address: int, data: bytes, pos: int, asked: list[bytes],
                     heap: bytes, walk: "_Walk", learned: Learned) -> None:
        entries = st.symbol_node(data, pos)
        if entries is None:
            raise OSError(errno.EIO, f"HDF5 group index: no symbol node at {address}")
        named = {self._name(heap, offset): header for offset, header in entries}
        learned([(name.decode("utf-8", "replace"), header) for name, header in named.items()])
        for name in asked:
            walk.found[name.decode()] = named.get(name)


class _Walk:
    """One ``find``: the names' ranks, what was found, and the structures on their way
    (by address, and by the start of the request that brings them)."""

    def __init__(self, rank: dict[bytes, int], found: dict[str, int | None]) -> None:
        self.rank = rank
        self.found = found
        self.wanted: dict[int, tuple[str, list[bytes]]] = {}
        self.covers: dict[int, list[int]] = {}

    def ask(self, kind: str, structures: dict[int, list[bytes]], size: int,
            config: WaveConfig) -> list[Request]:
        """Requests for ``structures`` (address: names that need it), coalesced, each
        as urgent as the most wanted name it serves."""
        starts = sorted(structures)
        requests: list[Request] = []
        for start, stop in coalesce([(a, a + size) for a in starts], config.gap,
                                    config.max_request):
            inside = starts[bisect.bisect_left(starts, start):bisect.bisect_left(starts, stop)]
            self.covers[start] = inside
            for address in inside:
                self.wanted[address] = (kind, structures[address])
            requests.append((min(self.rank[n] for a in inside for n in structures[a]),
                             start, stop))
        return requests
