"""Answers of a remote service, kept: one store for listings, a resource's answers and
"not found".

An answer is kept for ``ttl`` seconds.  Older, it is served at once while it is asked
for again in the background (stale-while-revalidate); when that fails, the answer
stays as it was (log ``DCB701``), and when the service refuses (ENOENT, EACCES), it is
dropped.  "Not found" (ENOENT) is remembered for ``negative_ttl`` seconds; other
errors never are, as the next try may succeed (CVMFS's rule).  Concurrent asks for one
key share one request.  With ``disk``, answers are kept there too (under the key that
``disk_key`` makes, which names the site and the token's scope), so a remount, or a
mount that cannot reach the service, has them; their age carries over.

The clocks and the way a background revalidation is started are injected, so that
tests step time and run revalidations where they can see them instead of sleeping.
"""
from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from .disk_cache import DiskCache

log = logging.getLogger(__name__)

Key = tuple[Hashable, ...]


def in_thread(task: Callable[[], None]) -> None:
    """Run ``task`` in a daemon thread of its own (the default for revalidations: they
    must not take a worker a reader waits for)."""
    threading.Thread(target=task, daemon=True, name="revalidate").start()


class AnswerStore:
    """Answers by key (a tuple), kept in memory (``memory``) and on ``disk``."""

    def __init__(self, ttl: float, negative_ttl: float = 30.0, *,
                 disk: DiskCache | None = None,
                 disk_key: Callable[[Key], str] | None = None, memory: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 run: Callable[[Callable[[], None]], None] = in_thread) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.disk = disk if disk_key is not None else None
        self._disk_key = disk_key
        self._memory = memory
        self._clock = clock
        self._wall = wall
        self._run = run
        self._values: dict[Key, tuple[float, Any]] = {}  # key -> (when fetched, answer)
        self._missing: dict[Key, float] = {}  # key -> until when
        self._locks: dict[Key, threading.Lock] = {}
        self._refreshing: set[Key] = set()
        self._lock = threading.Lock()

    # -- the usual way: kept, else asked ------------------------------------------------
    def get(self, key: Key, fetch: Callable[[], Any]) -> Any:
        """The answer for ``key``: kept (revalidated in the background once older than
        ``ttl``), else ``fetch()``'s, kept.  ENOENT is remembered; see the module."""
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # concurrent asks for one key share one request
            if self.missing(key):
                raise OSError(errno.ENOENT, f"{key[-1]} not found (remembered)")
            kept = self._kept(key)
            if kept is not None:
                if self._clock() - kept[0] >= self.ttl:
                    self._revalidate(key, fetch, kept[0])
                return kept[1]
            try:
                value = fetch()
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    self.remember_missing(key)
                raise
            self.keep(key, value)
            return value

    def ask(self, key: Key, fetch: Callable[[], Any]) -> Any:
        """``fetch()``'s answer, kept; the kept one only when the service cannot be
        reached (EIO): for what the service must check each time (a token)."""
        try:
            value = fetch()
        except OSError as exc:
            kept = self.kept(key)
            if exc.errno != errno.EIO or kept is None:
                raise
            return kept[0]
        self.keep(key, value)
        return value

    # -- parts ------------------------------------------------------------------------
    def kept(self, key: Key) -> tuple[Any, float] | None:
        """(answer, its age in seconds) as kept in memory or on disk, however old."""
        kept = self._kept(key)
        return None if kept is None else (kept[1], self._clock() - kept[0])

    def peek(self, key: Key) -> Any:
        """The answer kept in memory for ``key``, however old, or None."""
        with self._lock:
            kept = self._values.get(key)
        return None if kept is None else kept[1]

    def keep(self, key: Key, value: Any) -> None:
        if self._memory:
            with self._lock:
                self._values[key] = (self._clock(), value)
        if self.disk is not None and self._disk_key is not None:
            self.disk.keep_answer(self._disk_key(key), value)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._values.pop(key, None)
        if self.disk is not None and self._disk_key is not None:
            self.disk.forget_answer(self._disk_key(key))

    def missing(self, key: Key) -> bool:
        """Whether ``key`` was found missing less than ``negative_ttl`` ago."""
        with self._lock:
            until = self._missing.get(key)
            if until is not None and until <= self._clock():
                del self._missing[key]
                until = None
        return until is not None

    def remember_missing(self, key: Key) -> None:
        with self._lock:
            self._missing[key] = self._clock() + self.negative_ttl

    def _kept(self, key: Key) -> tuple[float, Any] | None:
        """(when fetched, on this store's clock; answer) from memory, else from disk."""
        with self._lock:
            kept = self._values.get(key)
        if kept is not None or self.disk is None or self._disk_key is None:
            return kept
        stored = self.disk.answer_stored(self._disk_key(key))
        if stored is None:
            return None
        kept = (self._clock() - max(0.0, self._wall() - stored[1]), stored[0])
        if self._memory:
            with self._lock:
                kept = self._values.setdefault(key, kept)
        return kept

    def _revalidate(self, key: Key, fetch: Callable[[], Any], fetched_at: float) -> None:
        """Ask again, in the background (one revalidation per key at a time)."""
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)

        def run() -> None:
            try:
                value = fetch()
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EACCES):  # an answer: it is gone
                    self.forget(key)
                    if exc.errno == errno.ENOENT:
                        self.remember_missing(key)
                else:
                    log.warning("DCB701 %s: DCOR failed (%s); serving the answer of %.0f s "
                                "ago", "/".join(map(str, key)), exc.strerror or exc,
                                self._clock() - fetched_at)
            else:
                self.keep(key, value)
            finally:
                with self._lock:
                    self._refreshing.discard(key)

        self._run(run)
