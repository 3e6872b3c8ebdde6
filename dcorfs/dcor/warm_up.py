"""Connections opened before they are needed: at mount, and when a mount wakes from idling.

A new connection costs a round trip for TCP, on DCOR one or two more for TLS.  The
first lookup sends two API queries at once, the first read of a file three or more
store requests at once, so two API connections and ``TUNING.store_connections`` store
connections are opened at mount.  The object store's host is learned from any public
resource (DCOR keeps all its objects on one store): its ``s3_url``, or on an older
DCOR the URL of an RT-DC resource's basin.  Servers close keep-alive connections that
sat idle (S3 after about 20 s, nginx after 75 s); after ``reopen_after`` seconds
without a request, opening a resource reopens the store connections as soon as its
API queries are on the way, so the reads after it find them open.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import logging
import threading
import time
from collections.abc import Callable

from ..io.background import BackgroundFetches, prestart
from ..io.http import redact
from ..io.range_fetch import RangeFetcher
from ..io.store_mirror import StoreMirror
from ..tuning import TUNING
from .api import DcorApi, is_resource_id

log = logging.getLogger(__name__)


class WarmUp:
    """The mount's warm-up and its reopening of idle store connections."""

    def __init__(self, api: DcorApi, fetcher: RangeFetcher, pool: concurrent.futures.Executor,
                 pool_workers: int, background: BackgroundFetches,
                 mirror: StoreMirror | None, offline: bool,
                 connect_disk: Callable[[], None] | None, reopen_after: float = 5.0) -> None:
        """``pool_workers``: the pool's size, all of whose threads are started at once;
        ``connect_disk``: opens a thread's disk-cache connection (run on each)."""
        self.api = api
        self.fetcher = fetcher
        self.pool = pool
        self.pool_workers = pool_workers
        self.background = background
        self.mirror = mirror
        self.offline = offline
        self.connect_disk = connect_disk
        self.reopen_after = reopen_after
        self.store_url: str | None = None  # any object of the store, for reopening
        self._state: dict = {"state": "not started", "store": None}
        self._lock = threading.Lock()

    def status(self) -> dict:
        with self._lock:
            return dict(self._state)

    def start(self) -> None:
        """Start the warm-up in the background; the outcome is in the status and the
        log (DCF105, DCF104 if it failed); the first lookup reports errors itself."""
        prestart(self.pool, self.pool_workers, self.connect_disk)
        self.background.prestart(self.connect_disk)
        if self.offline:
            with self._lock:
                self._state = {"state": "offline", "store": None}
            return
        with self._lock:
            self._state = {"state": "running", "store": None}
        started = time.monotonic()
        # both pings go out together, so that each opens a connection of its own (the
        # first lookup sends two queries at once); a barrier, not luck, sees to it
        together = threading.Barrier(2, timeout=5.0)
        pings = [self.pool.submit(self._ping, together) for _ in range(2)]
        # it waits for pool tasks, so it must not hold a pool worker itself
        threading.Thread(target=self._warm_up_store, args=(pings, started), daemon=True,
                         name="warm-up").start()

    def _ping(self, together: threading.Barrier) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait()
        self.api.call("status_show")

    def _warm_up_store(self, pings: list[concurrent.futures.Future], started: float) -> None:
        state, store = "failed", None
        try:
            for ping in pings:
                ping.result()
            url = self.any_store_url()
            if url is not None:
                self.store_url = url
                if self.mirror is not None:
                    self.mirror.learn_origin(url)
                store = redact(url).split("/", 3)[2]
                for future in self._open_store_connections(url):
                    try:
                        future.result()
                    except OSError as exc:  # an answer all the same: the connection is open
                        if exc.errno not in (errno.ENOENT, errno.EACCES, errno.EINVAL):
                            raise
            state = "done"
        except OSError as exc:
            log.warning("DCF104 warm-up at mount time failed (%s): %s", self.api.base,
                        exc.strerror or exc)
        finally:  # whatever happened, the status must not say "running" forever
            seconds = time.monotonic() - started
            with self._lock:
                self._state = {"state": state, "store": store, "seconds": round(seconds, 3)}
        log.info("DCF105 warm-up %s in %.3f s (object store: %s)", state, seconds,
                 store or "none found")

    def any_store_url(self) -> str | None:
        """A URL on the object store: the ``s3_url`` of a resource of the newest public
        dataset, else (an older DCOR) the URL of an RT-DC resource's existing basin."""
        found = self.api.call("package_search", rows=1)
        packages = found.get("results") if isinstance(found, dict) else None
        for package in packages if isinstance(packages, list) else []:
            resources = package.get("resources", []) if isinstance(package, dict) else []
            for res in resources if isinstance(resources, list) else []:
                if isinstance(res, dict) and isinstance(res.get("s3_url"), str) \
                        and res["s3_url"].startswith(("http://", "https://")):
                    return res["s3_url"]
            for res in resources if isinstance(resources, list) else []:
                rid = res.get("id", "") if isinstance(res, dict) else ""
                if not is_resource_id(rid) or not str(res.get("name", "")).endswith(".rtdc"):
                    continue
                urls: list[tuple[bool, str]] = []
                specs = self.api.dcserv(rid, "basins")
                for spec in specs if isinstance(specs, list) else []:
                    spec_urls = spec.get("urls") if isinstance(spec, dict) else None
                    if isinstance(spec_urls, list) and spec_urls and isinstance(spec_urls[0], str):
                        urls.append((bool(spec.get("features")), spec_urls[0]))
                if urls:
                    return max(urls, key=lambda pair: pair[0])[1]
        return None

    def due(self) -> bool:
        """Whether the store connections were not used for ``reopen_after`` seconds, so
        that the server has likely closed them."""
        return (self.store_url is not None
                and time.monotonic() - self.fetcher.last_used >= self.reopen_after)

    def reopen(self) -> None:
        """Open ``TUNING.store_connections`` store connections in the background if
        ``due``: their handshakes then overlap the API query instead of delaying the
        first reads (one request of one byte each)."""
        url = self.store_url
        if url is None or not self.due():
            return
        idle = time.monotonic() - self.fetcher.last_used
        self.fetcher.last_used = time.monotonic()
        log.info("DCF106 reopening %d store connections after %.0f s without a request",
                 TUNING.store_connections, idle)
        for future in self._open_store_connections(url):
            future.add_done_callback(lambda f: f.exception() and log.debug(
                "reopening a store connection: %s", f.exception()))

    def _open_store_connections(self, url: str) -> list[concurrent.futures.Future]:
        """``TUNING.store_connections`` requests of one byte at once, each opening a connection
        of its own, on threads of their own: the background pool stays free for the
        reads that may start meanwhile."""
        opener = concurrent.futures.ThreadPoolExecutor(TUNING.store_connections,
                                                       thread_name_prefix="connect")
        futures = [opener.submit(self.fetcher.fetch, url, 0, 1)
                   for _ in range(TUNING.store_connections)]
        opener.shutdown(wait=False)
        return futures
