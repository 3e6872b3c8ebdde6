"""One remote file (a basin's condensed or original artifact), read through the block cache.

The object's identity for caching is the basin ``key``; its URL may be presigned and
expire.  Before a URL's local expiry, or when the store answers 403, the object asks
its owner for fresh basins once and retries: the refresh is invisible to readers.
Fetches nobody waits for yet run in the shared ``BackgroundFetches`` pool.
"""
from __future__ import annotations

import concurrent.futures
import errno
import logging
import threading
import time
from collections.abc import Callable

from ..tuning import TUNING
from .background import BackgroundFetches
from .block_cache import BlockCache
from .http import redact
from .range_fetch import CountingSink, RangeFetcher, RangeResult, Sink

log = logging.getLogger(__name__)



class RemoteObject:
    def __init__(self, key: str, url: str, expires_at: float | None, cache: BlockCache,
                 fetcher: RangeFetcher, background: BackgroundFetches,
                 refresh: Callable[[], None] | None = None, probe_tail: bool = True) -> None:
        """``probe_tail``: the first read also asks for the last 64 KiB (an HDF5 file's
        metadata sits there too; a picture needs no such read)."""
        self.key = key
        self.probe_tail = probe_tail
        self.url = url
        self.expires_at = expires_at  # local wall-clock time, None = never
        self.cache = cache
        self.fetcher = fetcher
        self.background = background
        self.refresh = refresh
        self.size = -1
        self.etag: str | None = None  # the version whose bytes are cached
        self.stale = False  # it changed on the store: its cached bytes were dropped
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self.probed: list[bytes] = []  # head (and tail) of the file, for metadata hints
        # the fetch of the rest of the head, when the probe went to the network: done
        # once its bytes are all in (or it failed; its waiters then fetch for themselves)
        self.head_fetch: concurrent.futures.Future | None = None
        self._probed = False

    def set_url(self, url: str, expires_at: float | None) -> None:
        with self._lock:
            self.url = url
            self.expires_at = expires_at

    def _fetch(self, start: int, stop: int) -> bytes:
        return self._fetch_result(start, stop).data

    def _fetch_into(self, start: int, stop: int, sink: Sink) -> None:
        self._fetch_result(start, stop, sink)

    def _fetch_result(self, start: int, stop: int, sink: Sink | None = None) -> RangeResult:
        if self.stale:
            raise OSError(errno.ESTALE, f"{self.key} changed on the store; open it again")
        if self.expires_at is not None and time.time() >= self.expires_at and self.refresh:
            log.info("DCR401 presigned URL for %s is about to expire, refreshing", self.key)
            self.refresh()
        streamed = None if sink is None else CountingSink(sink)
        try:
            return self.fetcher.fetch(self.url, start, stop, streamed, self._check_version)
        except OSError as exc:
            if exc.errno != errno.EACCES or self.refresh is None:
                raise
            log.info("DCR402 %s answered 403, refreshing its presigned URL", redact(self.url))
            self.refresh()
            resume = start + (0 if streamed is None else streamed.delivered)
            return self.fetcher.fetch(self.url, resume, stop, streamed, self._check_version)

    def _check_version(self, total: int, etag: str | None) -> None:
        """Each answer must be of the version whose bytes are cached, checked before its
        body is taken: a different size or ETag means the object changed on the store.
        Its cached bytes are then dropped and this handle refuses to read on (ESTALE):
        mixing versions would hand out wrong bytes.  The resource is opened afresh on
        the next lookup.  The first answer names the version, and it is remembered."""
        with self._lock:
            changed = ((total >= 0 and self.size >= 0 and total != self.size)
                       or (etag is not None and self.etag is not None and etag != self.etag))
            first_change = changed and not self.stale
            if changed:
                self.stale = True
            learned = not changed and (self.size < 0 <= total or (self.etag is None and etag))
            if learned:
                self.size = total if total >= 0 else self.size
                self.etag = self.etag or etag
        if first_change:
            log.warning("DCR409 %s changed on the store (size %d -> %d, ETag %s -> %s); "
                        "its cached bytes are dropped", self.key, self.size, total,
                        self.etag, etag)
            self.cache.forget(self.key)
        if changed:
            raise OSError(errno.ESTALE, f"{self.key} changed on the store; open it again")
        if learned and self.size >= 0:
            self.cache.remember_object(self.key, self.size, self.etag)

    def probe(self) -> None:
        """Learn the size with a first read (HEAD does not work on presigned URLs).

        The head (``TUNING.probe_head``) streams in one request while the tail is read
        beside it; opening waits for the tail and the head's first ``TUNING.probe_first``
        bytes only.  One round trip, and the rest of the head arrives behind them
        instead of competing with them for the link.
        """
        with self._probe_lock:
            if self._probed:
                return
            known = (self.size, self.etag) if self.size >= 0 else self.cache.known_object(self.key)
            if known is not None:  # fetched before: the disk cache knows its size
                self.size, self.etag = known
                self._probe_known()
                return
            head = self.head_fetch = self.background.submit(
                self._fill_quietly, self.cache.claim(self.key, 0, TUNING.probe_head))
            try:
                tail: RangeResult | None = self._probe_tail(head) if self.probe_tail else None
            except OSError as exc:  # the head's read reports errors; the tail is a bonus
                log.debug("tail probe of %s failed: %s", self.key, exc)
                tail = None
            if tail is None or self.size < 0:
                head.result()  # the size comes from the head's answer then
                if self.size < 0:
                    self._fetch(0, 1)  # raises the error the head's read met
            first = self.cache.read(self.key, 0, TUNING.probe_first, self.size, self._fetch)
            self.probed = [first]
            bs = self.cache.block_size
            if tail is not None and tail.start > TUNING.probe_head:
                whole = -(-tail.start // bs)  # whole blocks only
                self.cache.store(self.key, whole, tail.data[whole * bs - tail.start:])
            if tail is not None and tail.start > len(first):
                self.probed.append(tail.data)
            self._probed = True

    def _probe_tail(self, head: concurrent.futures.Future) -> RangeResult | None:
        """The file's tail, asked beside the head as a suffix range.  Through a site
        mirror it is asked once the head's answer gave the size, by an explicit range:
        nginx's slice module would fetch the whole object for a suffix range."""
        if not self.fetcher.mirrors(self.url):
            return self._fetch_result(-TUNING.probe_tail, 0)
        head.result()
        if self.size <= TUNING.probe_head:
            return None  # the head holds it all, or failed (and says so below)
        return self._fetch_result(self.size - TUNING.probe_tail, self.size)

    def _sized(self) -> None:
        """Know the size before a read: from the disk cache if it has the object (no
        head read: a reader that knows where its bytes are needs no metadata hints),
        else by probing."""
        if self.size >= 0:
            return
        with self._probe_lock:
            if self.size < 0:
                known = self.cache.known_object(self.key)
                if known is not None:
                    self.size, self.etag = known
                    return
        self.probe()

    def version(self) -> tuple[int, str | None]:
        """(size, ETag) of the version read (learned first, if need be)."""
        self._sized()
        return self.size, self.etag

    def _probe_known(self) -> None:
        """The probe of an object whose size the disk cache knows: head and tail through
        the cache, from disk where they are there; the head's blocks that are not on
        disk are fetched in the background as usual (those on disk are read when asked
        for: a remount should not read a MiB from disk that it may not need)."""
        head = self.cache.claim_missing(self.key, 0, min(TUNING.probe_head, self.size))
        if head:
            self.background.submit(self._fill_quietly, head)
        first = self.cache.read(self.key, 0, TUNING.probe_first, self.size, self._fetch)
        self.probed = [first]
        bs = self.cache.block_size  # whole blocks: the first probe stored only those
        tail_start = max(0, -(-(self.size - TUNING.probe_tail) // bs) * bs)
        if tail_start > len(first) and tail_start < self.size:
            self.probed.append(self.cache.read(self.key, tail_start, self.size, self.size,
                                               self._fetch))
        self._probed = True

    def _fill_quietly(self, runs: list[tuple[int, int]]) -> None:
        try:
            self.cache.fill(self.key, runs, self._fetch_into)
        except OSError as exc:  # past the end of a small file (416), or a failure that
            log.debug("background fetch from %s failed: %s", self.key, exc)  # readers retry

    def prefetch(self, start: int, stop: int) -> None:
        """Fetch the missing blocks of ``[start, stop)`` in the background, one request
        per run.  They are claimed before this returns, so readers wait for that
        request instead of making their own.  Blocks on disk are left to their
        readers: each reads its own from disk, in parallel, instead of all waiting
        for one thread to read the whole range."""
        self._sized()
        runs = self.cache.claim_missing(self.key, start, min(stop, self.size))
        if runs:
            self.background.submit(self._fill_quietly, runs)

    def prefetch_in_turn(self, ranges: list[tuple[int, int]], streams: int) -> None:
        """Fetch the missing blocks of each range, ``streams`` requests at a time, in
        order, in the background.  A range is claimed only when its turn comes:
        a reader that needs one before then fetches it itself, and the turn then
        finds it cached instead of making the reader wait behind the rest."""
        self._sized()
        queue = iter(list(ranges))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    turn = next(queue, None)
                if turn is None:
                    return
                runs = self.cache.claim(self.key, turn[0], min(turn[1], self.size))
                if runs:
                    self._fill_quietly(runs)

        for _ in range(streams):
            self.background.submit(work)

    def fetch_direct(self, start: int, stop: int) -> bytes:
        """``[start, stop)`` straight from the store, not kept: for a bulk read that
        parses its bytes and drops them (hundreds of MB of scattered object headers
        would push everything else out of the block cache)."""
        self._sized()
        return self._fetch(start, min(stop, self.size))

    def peek(self, start: int, stop: int) -> bytes | None:
        """Bytes already in the cache, or None (``BlockCache.peek``)."""
        return self.cache.peek(self.key, start, min(stop, self.size))

    def read(self, start: int, stop: int) -> bytes:
        self._sized()
        return self.cache.read(self.key, start, stop, self.size, self._fetch)
