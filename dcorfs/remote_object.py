"""One remote file (a basin's condensed or original artifact), read through the block cache.

The object's identity for caching is the basin ``key``; its URL may be presigned and
expire.  Before a URL's local expiry, or when the store answers 403, the object asks
its owner for fresh basins once and retries: the refresh is invisible to readers.
``RemoteFile`` adapts an object to the file interface h5py needs.
"""
from __future__ import annotations

import errno
import io
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .block_cache import BlockCache
from .http_fetch import CountingSink, RangeFetcher, RangeResult, Sink, redact

log = logging.getLogger(__name__)
T = TypeVar("T")

# The first read of a file.  The head holds the superblock and the root group; in
# files written event by event (dclab's RTDCWriter) also the /events group tables
# and the first object headers, often all of them within the first MiB.  Copied and
# condensed files keep some group tables at the very end.  A MiB costs ~20 ms at
# 50 MB/s, a round trip 20-100 ms: a head that saves one dependent round trip pays.
# The head streams in one request; opening waits only for its first PROBE_FIRST bytes
# and the tail.  The rest arrives behind them, and readers that need it wait for it.
PROBE_HEAD = 1024 * 1024
PROBE_FIRST = 256 * 1024
PROBE_TAIL = 64 * 1024


class RemoteObject:
    def __init__(self, key: str, url: str, expires_at: float | None, cache: BlockCache,
                 fetcher: RangeFetcher, refresh: Callable[[], None] | None = None) -> None:
        self.key = key
        self.url = url
        self.expires_at = expires_at  # local monotonic-free wall time, None = never
        self.cache = cache
        self.fetcher = fetcher
        self.refresh = refresh
        self.size = -1
        self.etag = ""
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self.probed: list[bytes] = []  # head (and tail) of the file, for metadata hints
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
        if self.expires_at is not None and time.time() >= self.expires_at and self.refresh:
            log.info("DCR401 presigned URL for %s is about to expire, refreshing", self.key)
            self.refresh()
        streamed = None if sink is None else CountingSink(sink)
        try:
            result = self.fetcher.fetch(self.url, start, stop, streamed)
        except OSError as exc:
            if exc.errno != errno.EACCES or self.refresh is None:
                raise
            log.info("DCR402 %s answered 403, refreshing its presigned URL", redact(self.url))
            self.refresh()
            resume = start + (0 if streamed is None else streamed.delivered)
            result = self.fetcher.fetch(self.url, resume, stop, streamed)
        if result.total >= 0:
            if self.size >= 0 and result.total != self.size:
                raise OSError(errno.EIO, f"{self.key} changed size from {self.size} to "
                                         f"{result.total}; refusing mixed data")
            self.size = result.total
        self.etag = result.etag or self.etag
        return result

    def probe(self) -> None:
        """Learn the size with a first read (HEAD does not work on presigned URLs).

        The head (``PROBE_HEAD``) streams in one request while the tail is read
        beside it; opening waits for the tail and the head's first ``PROBE_FIRST``
        bytes only.  One round trip, and the rest of the head arrives behind them
        instead of competing with them for the link.
        """
        with self._probe_lock:
            if self._probed:
                return
            head = _in_background(self._fill_quietly, self.cache.claim(self.key, 0, PROBE_HEAD))
            try:
                tail: RangeResult | None = self._fetch_result(-PROBE_TAIL, 0)
            except OSError as exc:  # the head's read reports errors; the tail is a bonus
                log.debug("tail probe of %s failed: %s", self.key, exc)
                tail = None
            if tail is None or self.size < 0:
                head()  # the size comes from the head's answer then
                if self.size < 0:
                    self._fetch(0, 1)  # raises the error the head's read met
            first = self.cache.read(self.key, 0, PROBE_FIRST, self.size, self._fetch)
            self.probed = [first]
            bs = self.cache.block_size
            if tail is not None and tail.start > PROBE_HEAD:
                whole = -(-tail.start // bs)  # whole blocks only
                self.cache.store(self.key, whole, tail.data[whole * bs - tail.start:])
            if tail is not None and tail.start > len(first):
                self.probed.append(tail.data)
            self._probed = True

    def _fill_quietly(self, runs: list[tuple[int, int]]) -> None:
        try:
            self.cache.fill(self.key, runs, self._fetch_into)
        except OSError as exc:  # past the end of a small file (416), or a failure that
            log.debug("background fetch from %s failed: %s", self.key, exc)  # readers retry

    def prefetch(self, start: int, stop: int) -> None:
        """Fetch the missing blocks of ``[start, stop)``, one request per run, in a
        thread of its own.  They are claimed before this returns, so readers wait for
        that request; the fetch itself never waits for anything but the network, so
        it cannot be stuck behind the pool tasks that wait for it."""
        self.probe()
        runs = self.cache.claim(self.key, start, min(stop, self.size))
        if runs:
            _in_background(self._fill_quietly, runs)

    def prefetch_in_turn(self, ranges: list[tuple[int, int]], streams: int) -> None:
        """Fetch the missing blocks of each range, ``streams`` requests at a time, in
        order, in threads of their own.  A range is claimed only when its turn comes:
        a reader that needs one before then fetches it itself, and the turn then
        finds it cached instead of making the reader wait behind the rest."""
        self.probe()
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
            _in_background(work)

    def peek(self, start: int, stop: int) -> bytes | None:
        """Bytes already in the cache, or None (``BlockCache.peek``)."""
        return self.cache.peek(self.key, start, min(stop, self.size))

    def read(self, start: int, stop: int) -> bytes:
        self.probe()
        return self.cache.read(self.key, start, stop, self.size, self._fetch)


def _in_background(func: Callable[..., T], *args: Any) -> Callable[[], T]:
    """Start ``func(*args)`` in a thread; the returned function waits for it and
    returns its result or raises its exception."""
    box: list = []

    def run() -> None:
        try:
            box.append((True, func(*args)))
        except Exception as exc:  # noqa: BLE001 - raised again in the waiting thread
            box.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result() -> T:
        thread.join()
        ok, value = box[0]
        if not ok:
            raise value
        return value
    return result


class RemoteFile(io.RawIOBase):
    """A seekable, read-only file object over a RemoteObject, for ``h5py.File``.

    h5py swallows the errno of exceptions raised here, so the last one is kept in
    ``last_error`` for the caller to re-raise with its errno intact.
    """

    def __init__(self, obj: RemoteObject) -> None:
        super().__init__()
        obj.probe()
        self.obj = obj
        self.pos = 0
        self.last_error: OSError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self.pos = offset
        elif whence == io.SEEK_CUR:
            self.pos += offset
        elif whence == io.SEEK_END:
            self.pos = self.obj.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:  # type: ignore[override]
        size = len(buffer)
        try:
            data = self.obj.read(self.pos, self.pos + size)
        except OSError as exc:
            self.last_error = exc
            raise
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)
