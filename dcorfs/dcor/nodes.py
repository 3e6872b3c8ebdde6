"""The tree a mount is made of: folders, files and links made on first use.

A listing of ``MOUNT/<rid>/`` must not open every HDF5 dataset, and ``stat`` of a
file must not read its data: entries and views are computed when first asked for,
once, under a lock (the kernel asks from many threads).  A folder answers two
questions: what it lists (``entries``) and what one name is (``get``); the browse
folders answer the second without the first, so a lookup never costs a listing.
Every node may carry the modification time DCOR gives it (``mtime``, epoch seconds).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Union

from .views import View


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


class BrowseDir(Dir):
    """A folder whose listing and lookups are separate questions to DCOR (each kept
    by the browser for a while): ``list_entries()`` for ``ls``, ``lookup(name)`` for a
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
    """A file whose view (and so its size) is made on first use."""

    def __init__(self, make_view: Callable[[], View], mtime: float | None = None) -> None:
        self._make_view = make_view
        self._view: View | None = None
        self._lock = threading.Lock()
        self.mtime = mtime

    @property
    def view(self) -> View:
        with self._lock:
            if self._view is None:
                self._view = self._make_view()
            return self._view


Node = Union[Dir, File, Link]


class LazyEntries(dict):
    """``contour/``: thousands of names, each File made only when looked up."""

    def __init__(self, names: list[str], make: Callable[[str], Node]) -> None:
        super().__init__()
        self._names = names
        self._index = set(names)
        self._make = make

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def get(self, name, default=None):  # type: ignore[override]
        if name not in self._index:
            return default
        if not super().__contains__(name):
            super().__setitem__(name, self._make(name))
        return super().__getitem__(name)

    def keys(self):  # type: ignore[override]
        return list(self._names)
