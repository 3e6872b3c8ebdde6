"""The tree a mount is made of: folders, files and links made on first use.

A listing of ``MOUNT/<rid>/`` must not open every HDF5 dataset, and ``stat`` of a
file must not read its data: entries and views are computed when first asked for,
once, under a lock (the kernel asks from many threads).  A folder answers two
questions: what it lists (``entries``) and what one name is (``get``); the browse
folders answer the second without the first, so a lookup never costs a listing.
Every node may carry a modification time (``mtime``, epoch seconds).
"""
from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Union

import cachetools

from ..tuning import TUNING
from .view import View

log = logging.getLogger(__name__)


class Dir:
    """A directory whose entries are computed on first use."""

    def __init__(self, produce: Callable[[], dict[str, "Node"]],
                 mtime: float | None = None) -> None:
        self._produce = produce
        self._entries: dict[str, Node] | None = None
        self._lock = threading.Lock()
        self.mtime = mtime

    @property
    def entries(self) -> dict[str, "Node"]:
        with self._lock:
            if self._entries is None:
                self._entries = self._produce()
            return self._entries

    def get(self, name: str) -> "Node | None":
        return self.entries.get(name)


class CheckedDir(Dir):
    """A folder some of whose entries exist only when a check says so: an entry
    whose source must first be found (a listed file must always open).

    ``produce`` gives every candidate with its check (None: no check needed).  A
    lookup runs only its own name's check; a listing runs every check.  A check's
    answer is kept; a check that raises (the network, offline) is asked again next
    time: a lookup fails with its error, a listing leaves the name out for now.
    """

    def __init__(self, produce: Callable[[], dict[str, tuple["Node", Callable[[], bool] | None]]],
                 mtime: float | None = None) -> None:
        super().__init__(produce, mtime)  # type: ignore[arg-type]
        self._checked: dict[str, bool] = {}

    def _all(self) -> dict[str, tuple["Node", Callable[[], bool] | None]]:
        return super().entries  # type: ignore[return-value]  (made once, by Dir)

    def _passes(self, name: str, check: Callable[[], bool] | None) -> bool:
        if check is None:
            return True
        with self._lock:
            known = self._checked.get(name)
        if known is None:
            known = bool(check())
            with self._lock:
                self._checked[name] = known
        return known

    @property
    def entries(self) -> dict[str, "Node"]:
        listed = {}
        for name, (node, check) in self._all().items():
            try:
                if self._passes(name, check):
                    listed[name] = node
            except OSError as exc:  # not known now; a lookup of the name says why
                log.info("DCR426 %s left out of a listing: %s", name, exc.strerror or exc)
        return listed

    def get(self, name: str) -> "Node | None":
        found = self._all().get(name)
        if found is None or not self._passes(name, found[1]):
            return None
        return found[0]


class BrowseDir(Dir):
    """A folder whose listing and lookups are separate questions to a remote service
    (each answer kept by the caller for a while): ``list_entries()`` for ``ls``, ``lookup(name)`` for a
    path walked through it."""

    def __init__(self, list_entries: Callable[[], dict[str, "Node"]],
                 lookup: Callable[[str], "Node | None"], mtime: float | None = None) -> None:
        super().__init__(list_entries, mtime)
        self._lookup = lookup

    @property
    def entries(self) -> dict[str, "Node"]:
        return self._produce()

    def get(self, name: str) -> "Node | None":
        return self._lookup(name)


class Link:
    """A symbolic link; ``target`` is relative to the folder holding it."""

    def __init__(self, target: str, mtime: float | None = None) -> None:
        self.target = target
        self.mtime = mtime


class File:
    """A file whose view (and so its size, unless given) is made on first use."""

    def __init__(self, make_view: Callable[[], View], mtime: float | None = None,
                 size: int | None = None) -> None:
        self._make_view = make_view
        self._view: View | None = None
        self._lock = threading.Lock()
        self.mtime = mtime
        self._size = size

    @property
    def size(self) -> int:
        """The size given, or the view's (made for it)."""
        return self._size if self._size is not None else self.view.size

    @property
    def size_known(self) -> bool:
        """Whether ``size`` answers without making the view (which may read)."""
        return self._size is not None or self._view is not None

    @property
    def view(self) -> View:
        with self._lock:
            if self._view is None:
                self._view = self._make_view()
            return self._view


Node = Union[Dir, File, Link]


class NumberedNames(Sequence):
    """``0000.npy`` ... ``N-1.npy``, zero-padded to one width, without a list of them:
    a folder of 220,000 contours costs no memory until a name is asked for."""

    def __init__(self, count: int, suffix: str = ".npy") -> None:
        self.count = count
        self.suffix = suffix
        self.width = len(str(max(count - 1, 0)))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):  # a page of a listing: thousands of names
            width, suffix = self.width, self.suffix
            return [f"{i:0{width}d}{suffix}" for i in range(*index.indices(self.count))]
        if not -self.count <= index < self.count:
            raise IndexError(index)
        return f"{index % self.count:0{self.width}d}{self.suffix}"

    def __contains__(self, name: object) -> bool:
        return self.number(name) is not None

    def number(self, name: object) -> int | None:
        """The number ``name`` stands for, or None when it is not one of the names."""
        if not isinstance(name, str) or not name.endswith(self.suffix):
            return None
        stem = name[:-len(self.suffix)]
        if len(stem) != self.width or not stem.isdigit() or not stem.isascii():
            return None
        number = int(stem)
        return number if number < self.count else None


class LazyEntries(dict):
    """A folder of many names (``contour/``, ``datasets/``), each node made only when
    looked up, and only the most recently looked up ones kept.

    ``names`` is any ordered collection with a fast ``in``: a dict's keys, or
    ``NumberedNames``.  The kernel keeps what it looked up for its entry timeout, so
    a node dropped here is made again only when asked for after that.
    """

    def __init__(self, names: Collection[str], make: Callable[[str], Node | None],
                 peek: Callable[[str], Node | None] | None = None) -> None:
        super().__init__()
        self._names = names
        self._make = make
        self._peek = peek
        self._made: cachetools.LRUCache = cachetools.LRUCache(
            maxsize=TUNING.lazy_entries_kept)
        self._lock = threading.Lock()

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def get(self, name, default=None):  # type: ignore[override]
        if name not in self._names:
            return default
        with self._lock:
            node = self._made.get(name)
        if node is None:
            node = self._make(name)
            if node is None:
                return default
            with self._lock:
                node = self._made.setdefault(name, node)
        return node

    def peek(self, name: str) -> Node | None:
        """The node of ``name`` if it is known, or can be made, without a request of
        its own (for a listing that hands out sizes with names); else None."""
        if self._peek is not None:
            return self._peek(name)  # None for a name not in the folder
        with self._lock:
            return self._made.get(name)

    def keys(self):  # type: ignore[override]
        return list(self._names)

    def names_from(self, start: int, count: int) -> list[str]:
        """``count`` names from position ``start``: one page of a streamed listing."""
        if isinstance(self._names, Sequence):
            return list(self._names[start:start + count])
        return list(itertools.islice(self._names, start, start + count))
