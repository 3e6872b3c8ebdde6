"""The size of every file in a measurement's ``contour/``, known without opening each.

A contour file's size needs its dataset's shape.  One lookup (``np.load`` of one
contour, a loop over some) asks h5py for that one dataset.  ``ls -l``, ``du``, ``find
-size`` or a file manager ask for every entry and open none: after ``TUNING.contour_bulk_after`` such
lookups in a row, the shapes of all contours are read at once, in bulk
(``hdf5.group_shapes``: a few hundred large requests, none into the block cache), and
the lookups that come meanwhile wait for it instead of each making its own requests.
The sizes are kept in one array (8 bytes per event) and in the disk cache, so a
second ``ls -l`` (or one after a remount) asks the network nothing.
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

import h5py
import numpy as np

from ..hdf5.group_shapes import GroupShapes
from ..io import deadline
from ..tuning import TUNING
from ..views.npy_format import npy_size
from .basin import Basin
from .contour_addresses import ContourAddresses, group_address

log = logging.getLogger(__name__)

#: a contour's size in the array: not known yet, or no such contour
UNKNOWN, MISSING = -1, -2
#: the disk cache's note holding the sizes of a basin's contours
NOTE = "sizes:contour"


class ContourSizes:
    """Sizes of the ``count`` contour files of ``group`` in ``basin`` (see the module doc)."""

    def __init__(self, rid: str, basin: Basin, group: h5py.Group, count: int,
                 pool: concurrent.futures.Executor,
                 addresses: ContourAddresses | None = None) -> None:
        """``addresses``: where the bulk read hands the object header addresses it
        reads (None: a group ``hdf5.group_index`` cannot read, nor so the bulk read)."""
        self.rid = rid
        self.basin = basin
        self.group = group
        self.pool = pool
        self.addresses = addresses
        self.sizes = np.full(count, UNKNOWN, dtype=np.int64)
        self._changed = threading.Condition()  # sizes learned, or the bulk read ended
        self._unopened = 0  # lookups of unknown sizes since a contour was last opened
        self._bulk: concurrent.futures.Future | None = None
        self._failed_at = -TUNING.contour_bulk_retry_after  # when the last bulk read failed
        self._missing_said = False
        self._from_disk()

    def __getitem__(self, number: int) -> int:
        """The size of contour ``number``: a size, ``MISSING``, or ``UNKNOWN`` (ask
        h5py).  While a bulk read runs, waits for it to reach this one; starts one
        when the lookups look like a listing's."""
        size = int(self.sizes[number])
        if size != UNKNOWN:
            return size
        with self._changed:
            self._unopened += 1
            if (self._bulk is None and self._unopened >= TUNING.contour_bulk_after
                    and time.monotonic() >= self._failed_at + TUNING.contour_bulk_retry_after):
                self._bulk = self.pool.submit(self._read_in_bulk)
                self._bulk.add_done_callback(self._ended)
        return self.peek(number)

    def peek(self, number: int) -> int:
        """The size of contour ``number`` if known, waiting for a bulk read that is
        running (for half the operation's time at most: the other half is for asking
        h5py); never starts one."""
        size = int(self.sizes[number])
        if size != UNKNOWN or self._bulk is None:
            return size
        with self._changed:
            until = time.monotonic() + deadline.remaining(3600.0) / 2
            while (self._bulk is not None and not self._bulk.done()
                   and self.sizes[number] == UNKNOWN and time.monotonic() < until):
                self._changed.wait(min(1.0, until - time.monotonic()))
        return int(self.sizes[number])

    def _ended(self, _: concurrent.futures.Future) -> None:
        with self._changed:
            self._changed.notify_all()

    def known(self, number: int, size: int) -> None:
        """The size of a contour learned by opening it, or ``MISSING``."""
        self.sizes[number] = size
        if size == MISSING:
            self._say_missing(number)

    def opened(self) -> None:
        """A contour was opened: the lookups are a reader's, not a listing's."""
        self._unopened = 0

    def _say_missing(self, number: int) -> None:
        if not self._missing_said:
            self._missing_said = True
            log.warning("DCR411 %s: contour %d is missing (the measurement has fewer "
                        "contours than events); such names are ENOENT", self.rid, number)

    def _read_in_bulk(self) -> None:
        """Read every contour's shape at once.  On failure, lookups ask h5py, and a
        listing tries the bulk read again after ``TUNING.contour_bulk_retry_after``."""
        started = time.monotonic()
        count = len(self.sizes)
        log.info("DCR413 %s: reading the sizes of %d contours in bulk", self.rid, count)
        reader = GroupShapes(self._fetch, self.basin.shared.background.submit)
        try:
            found = self._apply(reader)
        except Exception as exc:  # h5py reports our OSErrors as generic ones
            error = exc if isinstance(exc, OSError) else self.basin.error_from(exc)
            log.warning("DCR414 %s: bulk read of contour sizes failed (%s); each is "
                        "looked up on its own", self.rid, error)
            with self._changed:
                self._bulk = None
                self._failed_at = time.monotonic()
                self._changed.notify_all()
            raise error from None
        finally:
            counts = self.basin.shared.counts
            counts.add("bulk_index_requests", reader.counts.requests)
            counts.add("bulk_index_bytes", reader.counts.bytes)
        counts.add("bulk_indexes_read")
        log.info("DCR415 %s: sizes of %d of %d contours in %.1f s, %d requests in %d waves, "
                 "%.1f MB", self.rid, found, count, time.monotonic() - started,
                 reader.counts.requests, reader.counts.waves, reader.counts.bytes / 1e6)
        self._to_disk()
        if self.addresses is not None:
            self.addresses.kept_after_bulk()

    def _fetch(self, start: int, stop: int) -> bytes:
        return self.basin.obj.fetch_direct(start, stop)

    def _apply(self, reader: GroupShapes) -> int:
        """Sizes from a bulk read, as it finds them; numbers the index lacks are
        ``MISSING`` once it is done."""
        obj = self.basin.obj
        address = group_address(self.basin, self.group)
        header = obj.read(address, min(address + TUNING.contour_group_header_bytes, obj.size))
        sized: dict[tuple[str, tuple[int, ...]], int] = {}
        listed = np.zeros(len(self.sizes), dtype=bool)
        found = 0

        def take(batch: list[tuple[str, tuple[int, ...] | None, np.dtype | None, int]]) -> None:
            nonlocal found
            if self.addresses is not None:
                self.addresses.learned([(name, address) for name, _, _, address in batch])
            for name, shape, dtype, _ in batch:
                number = int(name) if name.isdigit() else -1
                if not 0 <= number < len(self.sizes) or str(number) != name:
                    continue
                listed[number] = True
                if shape is None or dtype is None:
                    continue  # asked of h5py when looked up
                key = (dtype.str, shape)
                size = sized.get(key)
                if size is None:
                    size = sized[key] = npy_size(dtype, shape)
                self.sizes[number] = size
                found += 1
            with self._changed:
                self._changed.notify_all()

        reader.read(header, take)
        if not listed.all():
            self.sizes[~listed] = MISSING
            self._say_missing(int(np.argmin(listed)))
        with self._changed:
            self._changed.notify_all()
        return found

    # -- kept on disk ------------------------------------------------------------------
    def _to_disk(self) -> None:
        disk, obj = self.basin.shared.disk, self.basin.obj
        if disk is None or obj.size < 0 or (self.sizes == UNKNOWN).any():
            return
        disk.keep_array(obj.key, (obj.size, obj.etag), NOTE, self.sizes)

    def _from_disk(self) -> None:
        disk, obj = self.basin.shared.disk, self.basin.obj
        kept = None if disk is None else disk.kept_array(obj.key, NOTE, len(self.sizes))
        if kept is not None:
            self.sizes[:] = kept
