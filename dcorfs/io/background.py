"""One bounded pool of threads for the fetches nobody waits for yet.

A probe's head, the group tables and object headers a listing will need, runs of
chunks ahead of a reader, the bulk fetch of a dataset: each only moves bytes from
the network into the block cache.  Their blocks are claimed before the task is
queued, so a reader that needs one waits for that task instead of fetching it
again.  These tasks never wait for another task, only for the network; readers and
decode tasks (which run in a pool of their own) wait for them.  So a queued task
can never be stuck behind a task that waits for it: "a pool task never waits on a
queued pool task" holds by construction, however many tasks hundreds of headers
make.  The pool size bounds the threads and the requests in flight.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..tuning import TUNING

log = logging.getLogger(__name__)



def prestart(executor: concurrent.futures.ThreadPoolExecutor, count: int,
             init: Callable[[], None] | None = None) -> None:
    """Start ``count`` of an executor's worker threads now, not on first use: a thread
    costs about a millisecond to start, and a read right after mounting (or a remount
    reading from the disk cache, where nothing else takes that long) would pay it many
    times over.  ``init`` runs once in each (a thread's own SQLite connection to the
    disk cache, say: about 2 ms, which a cold read would otherwise pay per thread).
    Each start task waits until all have started, so none is reused."""
    together = threading.Barrier(count, timeout=5.0)

    def started() -> None:
        if init is not None:
            try:
                init()
            except Exception:  # noqa: BLE001 - a head start only; first use will retry
                log.debug("thread start-up task failed", exc_info=True)
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait()

    for _ in range(count):
        executor.submit(started)


class BackgroundFetches:
    """``submit`` a network-only task; ``counts`` for the mount's status."""

    def __init__(self, workers: int = TUNING.background_workers) -> None:
        self.workers = workers
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                           thread_name_prefix="net")
        self._lock = threading.Lock()
        self.queued = 0
        self.done = 0

    def submit(self, func: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Run ``func(*args)``; it must wait for nothing but the network."""
        with self._lock:
            self.queued += 1
        future = self._pool.submit(func, *args)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: concurrent.futures.Future) -> None:
        with self._lock:
            self.queued -= 1
            self.done += 1

    def prestart(self, init: Callable[[], None] | None = None) -> None:
        prestart(self._pool, self.workers, init)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"pending": self.queued, "done": self.done}

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
