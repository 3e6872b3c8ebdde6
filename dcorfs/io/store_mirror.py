"""A site cache in front of DCOR's object store: public reads go through it.

A lab whose machines read the same data puts one HTTP caching proxy in front of the
object store (nginx ``proxy_cache`` with the slice module: ``examples/nginx-dcor-cache.conf``),
so that each byte crosses the institute's uplink once instead of once per machine.
CVMFS does the same with site Squids.  The rules, in the order ``route`` applies them:

* Only **unsigned** URLs on the **object store's origin** go to the mirror, at the same
  path.  A presigned URL (a private resource) carries a query string and always goes to
  the origin: a shared cache must never hold a private byte.  A URL on any other host
  (a basin elsewhere) is not the mirror's business either.
* A **suffix range** (``bytes=-N``, a file's tail before its size is known) goes to the
  origin: nginx's slice module answers one by fetching the whole object.
  ``RemoteObject.probe`` asks a mirrored object for its tail by an explicit range.
* A mirror that **failed** (no connection, a timeout, a 5xx, an answer that fails the
  checks) is not asked for ``retry_after`` seconds: reads go to the origin, and the log
  says so once (DCP201).  Then the next read tries it again (DCP202 once it answers).
  A 4xx from the mirror sends that one read to the origin, which has the last word.

The mirror's answers are checked exactly as the origin's (``RangeFetcher``): status 206,
Content-Range, length, the object's version, and fletcher32 in the decoder.
"""
from __future__ import annotations

import logging
import threading
import time
import urllib.parse

from ..tuning import TUNING

log = logging.getLogger(__name__)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, with the scheme's default port made
    explicit: DCOR's basins name the store as ``host:443``, its ``s3_url`` as ``host``."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[parts.scheme]


def check_mirror_url(url: str) -> str:
    """The mirror's base URL without a trailing slash; ValueError when it is not
    ``http(s)://host[:port][/prefix]``."""
    parts = urllib.parse.urlsplit(url.strip())
    if origin_of(url.strip()) is None or parts.query or parts.fragment or parts.username:
        raise ValueError(f"a mirror is an http(s) URL like http://cache.lab:8080, not {url!r}")
    return url.strip().rstrip("/")


class StoreMirror:
    """Where a public range read goes, and what the mirror has done so far."""

    def __init__(self, base: str, origin: str | None = None,
                 retry_after: float = TUNING.mirror_retry_after) -> None:
        self.base = check_mirror_url(base)
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._origin = origin_of(origin) if origin else None
        self._origin_url = origin
        self._down_until = 0.0  # monotonic; 0 while the mirror is in use
        self._failed_reason = ""
        self.requests = 0
        self.bytes = 0
        self.failures = 0  # reads the mirror failed, which the origin then served
        self.private_reads = 0  # presigned reads, sent to the origin as they must be

    def learn_origin(self, url: str) -> None:
        """The object store's origin, from any of its URLs (``s3_url`` of a public
        resource), unless it was given."""
        with self._lock:
            if self._origin is None and origin_of(url) is not None:
                self._origin = origin_of(url)
                self._origin_url = "{}://{}:{}".format(*self._origin)
                log.info("DCP200 public reads from %s go through the mirror %s",
                         self._origin_url, self.base)

    def shareable(self, url: str) -> bool:
        """Whether ``url`` is a public object on the store the mirror fronts."""
        parts = urllib.parse.urlsplit(url)
        with self._lock:
            origin = self._origin
        return not (origin is None or parts.query or parts.username or origin_of(url) != origin)

    def route(self, url: str, start: int) -> str | None:
        """The mirror's URL for this read, or None when it goes to the origin."""
        if not self.shareable(url):
            if urllib.parse.urlsplit(url).query:
                with self._lock:
                    self.private_reads += 1
            return None
        if start < 0:
            return None
        with self._lock:
            if self._down_until:
                if time.monotonic() < self._down_until:
                    return None
                self._down_until = 0.0  # this read tries it again
        return self.base + urllib.parse.urlsplit(url).path

    def answered(self, delivered: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += delivered
            back = bool(self._failed_reason)
            self._failed_reason = ""
        if back:
            log.warning("DCP202 the mirror %s answers again; public reads go through it",
                        self.base)

    def failed(self, reason: str) -> None:
        """The mirror did not serve a read: reads go to the origin for ``retry_after``
        seconds.  Logged once per outage, not once per read."""
        with self._lock:
            self.requests += 1
            self.failures += 1
            first = not self._failed_reason
            self._failed_reason = reason or "failed"
            self._down_until = time.monotonic() + self.retry_after
        if first:
            log.warning("DCP201 the mirror %s failed (%s); reading from the object store, "
                        "trying the mirror again in %.0f s", self.base, reason, self.retry_after)

    def status(self) -> dict:
        with self._lock:
            down = max(0.0, self._down_until - time.monotonic()) if self._down_until else 0.0
            return {"url": self.base, "origin": self._origin_url,
                    "state": ("origin not known yet" if self._origin is None
                              else f"failed ({self._failed_reason}), retried in {down:.0f} s"
                              if down else "in use"),
                    "requests": self.requests, "bytes": self.bytes, "failures": self.failures,
                    "private_reads": "never through the mirror: sent to the object store",
                    "private_reads_direct": self.private_reads}
