"""``MOUNT/<rid>/contour/``: one ``.npy`` per event, named by the event's number.

The names come from the event count, as dclab does: counting the links of
``events/contour`` (HDF5 visits every node of the group's index, which dclab's writer
scatters through the file) would read a large measurement's whole index over the
network.  With the count from DCOR's metadata, listing reads nothing: the group is
found in HDF5 on the first lookup of a name.  A lookup needs the contour's size:
``ContourSizes`` knows it after a listing's bulk read, else the contour's object
header tells, found by ``ContourAddresses`` (which looks ahead of a reader's loop);
HDF5 is opened only for what those cannot read (a new-style group, a soft link).
"""
from __future__ import annotations

import errno
import threading
from collections.abc import Callable

import h5py

from ..views.nodes import File, LazyEntries, Node, NumberedNames
from ..views.view import View
from .basin import Basin
from .contour_addresses import ELSEWHERE, ContourAddresses
from .contour_addresses import MISSING as NO_ADDRESS
from .contour_sizes import MISSING, ContourSizes
from .feature_views import header_view, small_view


class _Located:
    """The contour group of a resource, found once: its basin, its sizes and the
    addresses of its contours (None where h5py must find them)."""

    def __init__(self, basin: Basin, group: h5py.Group, sizes: ContourSizes,
                 addresses: ContourAddresses | None) -> None:
        self.basin = basin
        self.group = group
        self.sizes = sizes
        self.addresses = addresses


#: makes the sizes of the contours: (basin, group, events, addresses)
SizesFactory = Callable[[Basin, h5py.Group, int, "ContourAddresses | None"], ContourSizes]
#: makes the addresses of the contours: (basin, group, events); ENOTSUP when it cannot
AddressesFactory = Callable[[Basin, h5py.Group, int], ContourAddresses]


class ContourFolder:
    def __init__(self, rid: str, group: Callable[[], tuple[Basin, h5py.Group]],
                 count: int | None, event_count: Callable[[Basin, h5py.Group], int],
                 sizes: SizesFactory, addresses: AddressesFactory) -> None:
        """``group()``: where the contours are (opens HDF5); ``count``: the event count
        DCOR's metadata gives, or None (then ``event_count(basin, group)`` decides);
        ``sizes`` and ``addresses``: what is known of the contours."""
        self.rid = rid
        self._group = group
        self._count = count
        self._event_count = event_count
        self._sizes = sizes
        self._addresses = addresses
        self._found: _Located | None = None
        self._lock = threading.Lock()

    def entries(self) -> LazyEntries:
        names = NumberedNames(self._count if self._count is not None
                              else len(self._located().sizes.sizes))
        self._names = names
        return LazyEntries(names, self._make, self._peek)

    def _located(self) -> _Located:
        """The group, its sizes and addresses, found once (a failure is not kept)."""
        with self._lock:
            if self._found is None:
                basin, group = self._group()
                events = (self._count if self._count is not None
                          else self._event_count(basin, group))
                try:
                    addresses: ContourAddresses | None = self._addresses(basin, group, events)
                except OSError as exc:
                    if exc.errno != errno.ENOTSUP:
                        raise
                    addresses = None  # h5py finds each
                self._found = _Located(basin, group,
                                       self._sizes(basin, group, events, addresses),
                                       addresses)
            return self._found

    def _opened(self, at: _Located, key: str) -> h5py.Dataset:
        try:
            dataset = at.group.get(key)  # one lookup in the index
        except Exception as exc:  # h5py reports our OSErrors as generic ones
            raise at.basin.error_from(exc) from None
        if dataset is None:
            raise OSError(errno.ENOENT, f"{self.rid}: contour {key} is missing")
        return dataset

    def _contour(self, number: int) -> View | None:
        """The view of contour ``number``, or None when the group lacks it: its object
        header found (``ContourAddresses``, or h5py), then parsed with its bytes."""
        at = self._located()
        key = str(number)
        if at.addresses is not None:
            address = at.addresses.address(number)
            if address == NO_ADDRESS:
                return None
            if address != ELSEWHERE:
                return header_view(at.basin, address, lambda: self._opened(at, key))
        else:
            try:
                info = at.group.id.links.get_info(key.encode()) if key in at.group else None
            except Exception as exc:  # h5py reports our OSErrors as generic ones
                raise at.basin.error_from(exc) from None
            if info is None:
                return None
            if info.type == h5py.h5l.TYPE_HARD:
                return header_view(at.basin, info.u, lambda: self._opened(at, key))
        return small_view(at.basin, self._opened(at, key))

    def _view(self, made: View | None, number: int, size: int) -> View:
        at = self._located()
        at.sizes.opened()  # only opening makes a view once the size is known
        if at.addresses is not None:
            at.addresses.opened(number)
        if made is None:
            made = self._contour(number)
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
        made = self._contour(number)
        if made is None:  # a truncated write: fewer contours than events
            sizes.known(number, MISSING)
            return None
        sizes.known(number, made.size)
        return File(lambda: self._view(made, number, made.size), size=made.size)
