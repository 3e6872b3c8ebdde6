"""``MOUNT/<rid>/contour/``: one ``.npy`` per event, named by the event's number.

The names come from the event count, as dclab does: counting the links of
``events/contour`` (HDF5 visits every node of the group's index, which dclab's writer
scatters through the file) would read a large measurement's whole index over the
network.  With the count from DCOR's metadata, listing reads nothing: the group is
found in HDF5 on the first lookup of a name.  Each lookup finds its one name in the
index, unless ``ContourSizes`` knows its size (a listing's lookups read all in bulk):
HDF5 is then opened only when the file is read.  dclab writes the contours of
consecutive events after one another (between image chunks), so a walk through them
streams ahead of its headers (``CONTOUR_WALK``).
"""
from __future__ import annotations

import errno
import threading
from collections.abc import Callable

import h5py

from ..io.sequential import SequentialReadahead, StreamConfig
from ..views.nodes import File, LazyEntries, Node, NumberedNames
from ..views.view import View
from .basin import Basin
from .contour_sizes import MISSING, ContourSizes
from .feature_views import header_view, small_view

#: contour headers looked up one after another: how far to fetch ahead of them
CONTOUR_WALK = StreamConfig(first_window=1 << 20, max_window=8 << 20, piece=1 << 20,
                            slack=4 << 20)


class _Located:
    """The contour group of a resource, found once: its basin, its sizes, its walk."""

    def __init__(self, basin: Basin, group: h5py.Group, sizes: ContourSizes) -> None:
        self.basin = basin
        self.group = group
        self.sizes = sizes
        self.walk = SequentialReadahead(basin.obj, CONTOUR_WALK)


class ContourFolder:
    def __init__(self, rid: str, group: Callable[[], tuple[Basin, h5py.Group]],
                 count: int | None, event_count: Callable[[Basin, h5py.Group], int],
                 sizes: Callable[[Basin, h5py.Group, int], ContourSizes]) -> None:
        """``group()``: where the contours are (opens HDF5); ``count``: the event count
        DCOR's metadata gives, or None (then ``event_count(basin, group)`` decides);
        ``sizes(basin, group, events)``: the sizes of the contours."""
        self.rid = rid
        self._group = group
        self._count = count
        self._event_count = event_count
        self._sizes = sizes
        self._found: _Located | None = None
        self._lock = threading.Lock()

    def entries(self) -> LazyEntries:
        names = NumberedNames(self._count if self._count is not None
                              else len(self._located().sizes.sizes))
        self._names = names
        return LazyEntries(names, self._make, self._peek)

    def _located(self) -> _Located:
        """The group, its sizes and its walk, found once (a failure is not kept)."""
        with self._lock:
            if self._found is None:
                basin, group = self._group()
                events = (self._count if self._count is not None
                          else self._event_count(basin, group))
                self._found = _Located(basin, group, self._sizes(basin, group, events))
            return self._found

    def _opened(self, at: _Located, key: str) -> h5py.Dataset:
        try:
            dataset = at.group.get(key)  # one lookup in the index
        except Exception as exc:  # h5py reports our OSErrors as generic ones
            raise at.basin.error_from(exc) from None
        if dataset is None:
            raise OSError(errno.ENOENT, f"{self.rid}: contour {key} is missing")
        return dataset

    def _contour(self, key: str) -> View | None:
        """The view of contour ``key``, or None when the group lacks it: one lookup in
        the group's index (h5py), then the dataset's own bytes, parsed."""
        at = self._located()
        try:
            info = at.group.id.links.get_info(key.encode()) if key in at.group else None
        except Exception as exc:  # h5py reports our OSErrors as generic ones
            raise at.basin.error_from(exc) from None
        if info is None:
            return None
        if info.type != h5py.h5l.TYPE_HARD:
            return small_view(at.basin, self._opened(at, key))
        at.walk.before_read(info.u, info.u + 1)
        return header_view(at.basin, info.u, lambda: self._opened(at, key))

    def _view(self, made: View | None, number: int, size: int) -> View:
        self._located().sizes.opened()  # only opening makes a view once the size is known
        if made is None:
            made = self._contour(str(number))
            if made is None:
                raise OSError(errno.ENOENT, f"{self.rid}: contour {number} is missing")
        if made.size != size:  # the bulk read's parse and h5py disagree
            raise OSError(errno.EIO, f"{self.rid}: contour {number} is {made.size} "
                                     f"bytes, listed as {size}")
        return made

    def _sized(self, number: int, size: int) -> Node | None:
        if size < 0:
            return None
        return File(lambda: self._view(None, number, size), size=size)

    def _peek(self, name: str) -> Node | None:
        number = self._names.number(name)
        found = self._found
        if number is None or found is None:  # a listing does not open the group
            return None
        return self._sized(number, found.sizes.peek(number))

    def _make(self, name: str) -> Node | None:
        number = self._names.number(name)
        sizes = self._located().sizes
        size = sizes[number]
        if size == MISSING or size >= 0:
            return self._sized(number, size)
        made = self._contour(str(number))
        if made is None:  # a truncated write: fewer contours than events
            sizes.known(number, MISSING)
            return None
        sizes.known(number, made.size)
        return File(lambda: self._view(made, number, made.size), size=made.size)
