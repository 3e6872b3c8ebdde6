"""Which hosts answer: offline use without waiting for timeouts.

A request that cannot even connect (refused, no route, no name, a connect timeout)
says the host is down, not that one answer was bad.  After ``TUNING.down_after`` such
failures in a row, a host is *down* for ``TUNING.retry_every`` seconds: every request to it
fails at once with EIO, so what is not cached fails in well under a second instead
of after retries and timeouts, while cached data keeps being served.  When that time
is up, the next request goes out as a probe: an answer of any kind brings the host
back, a failure keeps it down for another ``TUNING.retry_every``.  Failures after a
connection was made (a reset, a short body, a 5xx) are the retry loops' business and
say nothing here.

``forced`` (``--offline``) keeps every host down: the mount never touches the network.
"""
from __future__ import annotations

import errno
import logging
import threading
import time
import urllib.parse

import requests
import urllib3.exceptions

from ..tuning import TUNING

log = logging.getLogger(__name__)



class Unreachable(OSError):
    """EIO without trying: the host is known to be down, or the mount is offline.
    Retry loops give up on it at once."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


def cannot_connect(exc: BaseException) -> bool:
    """Whether a ``requests`` or ``urllib3`` exception means no connection could be
    made (through a proxy: to the proxy, or through it)."""
    if isinstance(exc, (requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError)):
        return True
    if isinstance(exc, urllib3.exceptions.ProxyError):
        return isinstance(exc.original_error, urllib3.exceptions.ConnectTimeoutError)
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # NewConnectionError (refused, no route) and NameResolutionError are ConnectTimeoutErrors
    return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


class Reachability:
    def __init__(self, forced: bool = False, down_after: int = TUNING.down_after,
                 retry_every: float = TUNING.retry_every) -> None:
        self.forced = forced
        self.down_after = down_after
        self.retry_every = retry_every
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._down_since: dict[str, float] = {}  # wall clock, for the status
        self._next_probe: dict[str, float] = {}  # monotonic
        self.refused = 0  # requests failed at once because their host was down

    @staticmethod
    def host(url: str) -> str:
        return urllib.parse.urlsplit(url).netloc

    def check(self, url: str) -> None:
        """Raise EIO at once if ``url``'s host is down (or the mount is offline);
        when a down host is due for a probe, let this one request through."""
        if self.forced:
            self.refused += 1
            raise Unreachable("offline (--offline): not cached on this machine")
        host = self.host(url)
        with self._lock:
            due = self._next_probe.get(host)
            if due is None:
                return
            now = time.monotonic()
            if now >= due:
                self._next_probe[host] = now + self.retry_every  # one probe at a time
                return
            self.refused += 1
        raise Unreachable(f"{host} is unreachable (offline since "
                                 f"{time.strftime('%H:%M:%S', time.localtime(self._down_since[host]))}); "
                                 "not cached on this machine")

    def failed(self, url: str) -> None:
        """A request to ``url`` could not connect."""
        host = self.host(url)
        with self._lock:
            self._failures[host] = self._failures.get(host, 0) + 1
            if self._failures[host] < self.down_after:
                return
            self._next_probe[host] = time.monotonic() + self.retry_every
            if host in self._down_since:
                return
            self._down_since[host] = time.time()
        log.warning("DCN901 %s is unreachable: offline; cached data is served, the rest "
                    "fails at once (next try in %.0f s)", host, self.retry_every)

    def answered(self, url: str) -> None:
        """``url``'s host answered (with any status): it is up."""
        host = self.host(url)
        with self._lock:
            self._failures.pop(host, None)
            self._next_probe.pop(host, None)
            since = self._down_since.pop(host, None)
        if since is not None:
            log.info("DCN902 %s answers again after %.0f s offline", host,
                        time.time() - since)

    def is_down(self, url: str) -> bool:
        with self._lock:
            return self.forced or self.host(url) in self._down_since

    def status(self) -> dict:
        with self._lock:
            down = {host: round(since, 1) for host, since in self._down_since.items()}
        return {"state": "offline" if self.forced or down else "online",
                "forced": self.forced, "unreachable_since": down,
                "refused_at_once": self.refused}
