"""Where each contour of a measurement is: the address of its HDF5 object header.

Opening ``contour/<n>.npy`` needs contour n's object header; its shape, chunk and
bytes follow from there (``feature_views.header_view``).  The address comes from,
in turn:

1. what is known.  Addresses are kept per number (8 bytes per event), from every
   symbol node read (a lookup learns its neighbours in the index too), from the bulk
   read of ``ls -l`` (``ContourSizes``), and from the disk cache, where they are kept
   after each lookahead and each bulk read, so a remount knows them;
2. a claim of the lookahead on its way: waited for;
3. the group's index (``hdf5.group_index``), for that one name.

A reader's opens drive the lookahead (``io.name_lookahead``): the names it claims are
found in one ``GroupIndex.find`` on the pool, in the reader's order.  As each is
found it is handed to a reader waiting for it, and its bytes (header, chunk index,
chunk: ``TUNING.contour_span`` from its header) are fetched into the block cache,
coalesced with those found with it (dclab writes the contours of consecutive events
next to each other).  A loop over contours then finds each one's address known and
its bytes in memory or on their way.
"""
from __future__ import annotations

import concurrent.futures
import errno
import logging
import threading
import time

import h5py
import numpy as np

from ..hdf5 import symbol_table as st
from ..hdf5.group_index import UNDEFINED, GroupIndex
from ..hdf5.waves import coalesce
from ..io import deadline
from ..io.name_lookahead import NameLookahead, NameLookaheadConfig
from ..tuning import TUNING
from .basin import Basin

log = logging.getLogger(__name__)

#: an address in the array: not known yet, no such contour, or not a hard link (h5py
#: reads those)
UNKNOWN, MISSING, ELSEWHERE = -1, -2, -3
#: the disk cache's note holding a basin's contour addresses
NOTE = "addresses:contour"


def group_address(basin: Basin, group: h5py.Group) -> int:
    """Where ``group``'s object header is, from its link in its parent (HDF5's
    ``H5Oget_info`` would also total the group's index, walking all of it)."""
    parent_path, _, name = group.name.rpartition("/")
    parent = basin.h5[parent_path or "/"]  # h5py's ``.parent`` needs a named file
    info = parent.id.links.get_info(name.encode())
    if info.type != h5py.h5l.TYPE_HARD:
        raise OSError(errno.ENOTSUP, f"{group.name} is not a hard link")
    return info.u


class ContourAddresses:
    """The addresses of the ``count`` contours of ``group`` (see the module doc)."""

    def __init__(self, rid: str, basin: Basin, group: h5py.Group, count: int,
                 pool: concurrent.futures.Executor,
                 config: NameLookaheadConfig = NameLookaheadConfig()) -> None:
        """ENOTSUP for a group without a symbol table (then ask h5py)."""
        self.rid = rid
        self.basin = basin
        self.pool = pool
        obj = basin.obj
        at = group_address(basin, group)
        self.index = GroupIndex(obj.read, self._fetch, basin.shared.background.submit,
                                obj.read(at, min(at + TUNING.contour_group_header_bytes,
                                                 obj.size)),
                                st.group_ks(obj.read(0, min(64, obj.size))))
        self.addresses = np.full(count, UNKNOWN, dtype=np.int64)
        self.lookahead = NameLookahead(count, config)
        self._claims: dict[int, concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self._learned = threading.Condition(self._lock)
        self._kept_at = 0.0  # when the addresses were last kept on disk
        self._unkept = 0  # addresses learned since
        kept = None if basin.shared.disk is None else basin.shared.disk.kept_array(
            obj.key, NOTE, count)
        if kept is not None:
            self.addresses[:] = kept

    def learned(self, entries: list[tuple[str, int]]) -> None:
        """Addresses read from the index, of contours asked for or not.  Those the
        lookahead claimed are handed to their readers at once, and their bytes
        fetched."""
        count = len(self.addresses)
        claimed: list[int] = []
        with self._learned:
            for name, address in entries:
                if name.isdigit() and str(int(name)) == name and int(name) < count:
                    number = int(name)
                    self.addresses[number] = ELSEWHERE if address == UNDEFINED else address
                    self._unkept += 1
                    if number in self._claims and address != UNDEFINED:
                        claimed.append(address)
            if claimed:
                self._learned.notify_all()
        self._fetch_spans(claimed)

    def _fetch_spans(self, addresses: list[int]) -> None:
        """Fetch the bytes of the contours at ``addresses`` into the block cache."""
        spans = sorted((a, a + TUNING.contour_span) for a in addresses)
        for start, stop in coalesce(spans, TUNING.contour_span_gap,
                                    TUNING.contour_span_request):
            self.basin.obj.prefetch(start, stop)

    def address(self, number: int) -> int:
        """Contour ``number``'s object header address, ``MISSING`` or ``ELSEWHERE``."""
        address = int(self.addresses[number])
        if address != UNKNOWN:
            return address
        with self._learned:  # the lookahead finding it: half the time left for it
            until = time.monotonic() + deadline.remaining(3600.0) / 2
            while (self.addresses[number] == UNKNOWN and number in self._claims
                   and time.monotonic() < until):
                self._learned.wait(min(1.0, until - time.monotonic()))
            address = int(self.addresses[number])
        if address != UNKNOWN:
            return address
        self._find([number])
        self._keep(urgent=False)
        return int(self.addresses[number])

    def _fetch(self, start: int, stop: int) -> bytes:
        """The index's bytes: straight from the store, counted for the status."""
        self.basin.shared.counts.add("contour_index_requests")
        return self.basin.obj.fetch_direct(start, stop)

    def _find(self, numbers: list[int]) -> None:
        found = self.index.find([str(n) for n in numbers], self.learned)
        for number in numbers:
            if found.get(str(number)) is None:
                self.addresses[number] = MISSING

    def opened(self, number: int) -> None:
        """Contour ``number`` was opened: look ahead of the reader if it is in a run."""
        self._look_ahead(self.lookahead.opened(number))

    def _look_ahead(self, claim: list[int]) -> None:
        if not claim:
            return
        self.basin.shared.counts.add("contours_looked_ahead", len(claim))
        token = object()  # this claim's, in ``_claims`` before its work can learn
        with self._learned:
            for n in claim:
                self._claims[n] = token
        try:
            future = self.pool.submit(self._ahead, claim)
        except RuntimeError:  # the mount is closing
            future = concurrent.futures.Future()
            future.cancel()
        future.add_done_callback(lambda _: self._settled(claim, token, future))

    def _settled(self, claim: list[int], token: object,
                 future: concurrent.futures.Future) -> None:
        with self._learned:
            for n in claim:
                if self._claims.get(n) is token:
                    del self._claims[n]
            self._learned.notify_all()
        if future.cancelled() or isinstance(future.exception(), RuntimeError):
            return  # the mount is closing: its pools take no more work
        if future.exception() is not None:
            log.info("DCR417 %s: looking %d contours ahead failed (%s); each is looked "
                     "up when opened", self.rid, len(claim), future.exception())
        else:
            self._look_ahead(self.lookahead.found())

    def _ahead(self, claim: list[int]) -> None:
        """Find the claimed contours in the index, then fetch their bytes (see the
        module doc)."""
        started = time.monotonic()
        unknown = {n for n in claim if self.addresses[n] == UNKNOWN}
        if unknown:
            self._find([n for n in claim if n in unknown])
        log.debug("%s: contours %d to %d looked ahead, %d found in the index in %.2f s",
                  self.rid, claim[0], claim[-1], len(unknown), time.monotonic() - started)
        self._fetch_spans([int(a) for n, a in zip(claim, self.addresses[claim])
                           if a >= 0 and n not in unknown])  # the others: as found
        self._keep(urgent=bool(unknown))

    def _keep(self, urgent: bool) -> None:
        """Keep the addresses on disk: after a lookahead found some (``urgent``),
        else at most every ``TUNING.contour_keep_every`` seconds."""
        disk, obj = self.basin.shared.disk, self.basin.obj
        now = time.monotonic()
        if disk is None or obj.size < 0 or not self._unkept or (
                not urgent and now < self._kept_at + TUNING.contour_keep_every):
            return
        self._kept_at, self._unkept = now, 0
        disk.keep_array(obj.key, (obj.size, obj.etag), NOTE, self.addresses)

    def kept_after_bulk(self) -> None:
        """The bulk read learned every address: keep them now."""
        self._keep(urgent=True)
