"""Verified HTTP range reads from the object store.

Ranges are half-open ``[start, stop)`` everywhere in dcorfs and become the inclusive
HTTP form only here, at the wire.  A response is accepted only when it is a 206 whose
Content-Range names exactly the bytes asked for and whose body has that length: a
200 with the whole file, a short body or a mislabelled range is retried, never
served.  No credentials are ever attached here: the object store must not see the
DCOR token.
"""
from __future__ import annotations

import errno
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable

import requests
import urllib3
import urllib3.exceptions

from ..tuning import TUNING
from . import deadline
from .http import backoff_delay, proxy_for, redact, retry_after, shared_adapter
from .reachability import Reachability, cannot_connect
from .store_mirror import StoreMirror

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

Sink = Callable[[bytes], None]
Check = Callable[[int, "str | None"], None]


class CountingSink:
    """A sink that counts what it handed on: a retry, or a retry after a refreshed URL,
    then asks only for the bytes not yet delivered."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.delivered = 0

    def __call__(self, piece: bytes) -> None:
        self.sink(piece)
        self.delivered += len(piece)


class RangeResult:
    __slots__ = ("data", "start", "total", "etag")

    def __init__(self, data: bytes, start: int, total: int, etag: str | None = None) -> None:
        self.data = data
        self.start = start  # the first byte's offset (a tail read learns it from the answer)
        self.total = total  # the object's size, -1 if the store did not say
        self.etag = etag  # the object's version as the store names it, if it does




class RangeFetcher:
    """GETs byte ranges with a timeout, bounded retries and full response checks."""

    def __init__(self, timeout: float = 30.0, retries: int = 3, backoff: float = 0.25,
                 reach: Reachability | None = None, mirror: StoreMirror | None = None,
                 proxy: str | None = None) -> None:
        self.timeout = timeout
        self.proxy = proxy  # --proxy; else the environment's (io.http.proxy_for)
        self.reach = reach or Reachability()
        self.mirror = mirror  # a site cache for public reads (``store_mirror``)
        self.retries = retries
        self.backoff = backoff
        self._adapter = shared_adapter()
        self._lock = threading.Lock()
        self._routes: dict[str, tuple[urllib3.HTTPConnectionPool, str]] = {}  # by URL
        self.requests = 0
        self.bytes = 0
        self.last_used = time.monotonic()  # when the last request went out

    def _get(self, url: str, headers: dict[str, str],
             timeout: tuple[float, float]) -> urllib3.BaseHTTPResponse:
        """One GET, its body not read yet, through the shared pool: what requests'
        adapter does for a session (the proxy ``proxy_for`` chooses, TLS verification
        with requests' CA bundle, the pool), worked out once per URL instead of once per
        request.  requests' own work per request cost 0.5 ms of the 1 ms of CPU a
        range request took, and a walk of a contour index makes thousands."""
        with self._lock:
            route = self._routes.get(url)
            if route is None:
                if len(self._routes) >= 64:  # presigned URLs change: keep a few
                    self._routes.clear()
                prepared = requests.Request("GET", url).prepare()
                chosen = proxy_for(url, self.proxy)
                proxies = {urllib.parse.urlsplit(url).scheme: chosen} if chosen else {}
                pool = self._adapter.get_connection_with_tls_context(prepared, True, proxies)
                self._adapter.cert_verify(pool, url, True, None)
                route = self._routes[url] = (pool, self._adapter.request_url(prepared, proxies))
        pool, target = route
        return pool.urlopen("GET", target, headers=headers, redirect=False,
                            assert_same_host=False, preload_content=False,
                            decode_content=False, retries=False,
                            timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]))

    def fetch(self, url: str, start: int, stop: int, sink: Sink | None = None,
              check: Check | None = None) -> RangeResult:
        """Exactly the bytes ``[start, stop)`` of ``url``, or an OSError with an errno.

        ``start < 0`` asks for the last ``-start`` bytes (``stop`` is ignored), for
        reading a file's tail before its size is known.  With ``sink``, the body is
        handed over in order, piece by piece as it arrives, instead of returned in
        ``data``: the first blocks of a long run are usable before its last ones
        have crossed the link.  A retry after a broken body then asks only for the
        bytes not yet handed over.  ``check(total, etag)`` sees each answer's object
        size and ETag before its body is taken, and may refuse it by raising.
        """
        if start >= 0 and stop <= start:
            raise OSError(errno.EINVAL, f"empty range {start}-{stop}")
        if sink is not None and start < 0:
            raise ValueError("a tail read cannot be streamed")
        counted = None if sink is None else CountingSink(sink)
        mirrored = self.mirror.route(url, start) if self.mirror and not self.reach.forced else None
        if mirrored is not None:
            result = self._from_mirror(mirrored, start, stop, counted, check)
            if result is not None:
                return result
        last_error: OSError | None = None
        wait_next = 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                delay = backoff_delay(attempt, self.backoff, wait_next)
                time.sleep(min(delay, deadline.remaining(delay)))
            resume = start + (0 if counted is None else counted.delivered)
            try:
                if counted is None:
                    return self._fetch_once(url, start, stop, None, check)
                result = self._fetch_once(url, resume, stop, counted, check)
                result.start = start
                return result
            except Retryable as exc:
                last_error = OSError(errno.EIO, str(exc))
                wait_next = exc.retry_after
                log.warning("DCF301 range %d-%d of %s failed (%s), attempt %d/%d",
                            resume, stop, redact(url), exc, attempt + 1, self.retries + 1)
        assert last_error is not None
        raise last_error

    def answers(self, url: str, connect_timeout: float = 3.0) -> bool:
        """Whether ``url`` serves a range now: one GET of its first byte, no retry (as
        dclab's ``http_utils.is_url_available`` asks a basin's URL before using it).  A
        URL named inside a file may point anywhere; one that does not answer is left
        alone, and its host does not count toward the mount going offline."""
        try:
            self._fetch_once(url, 0, 1, None, None, connect_timeout, reach=False)
        except (OSError, Retryable) as exc:
            log.info("DCF302 %s does not answer (%s)", redact(url), exc)
            return False
        return True

    def mirrors(self, url: str) -> bool:
        """Whether reads of ``url`` may go through the site mirror."""
        return self.mirror is not None and self.mirror.shareable(url)

    def _from_mirror(self, url: str, start: int, stop: int, counted: CountingSink | None,
                     check: Check | None) -> RangeResult | None:
        """One attempt at the mirror; None when the origin must serve the read (what a
        stream delivered before a failure, ``counted.delivered``, is not asked again)."""
        assert self.mirror is not None
        try:
            result = self._fetch_once(url, start, stop, counted, check,
                                      connect_timeout=TUNING.mirror_connect_timeout, reach=False)
        except Retryable as exc:
            self.mirror.failed(str(exc))
            return None
        except OSError as exc:
            if exc.errno == errno.ESTALE:  # the object changed: the version check said so
                raise
            if exc.errno == errno.EIO:
                self.mirror.failed(exc.strerror or str(exc))
            else:  # a 4xx: the origin has the last word on what exists and who may read it
                log.debug("mirror answered %s for %s; asking the object store", exc, url)
                self.mirror.answered(0)
            return None
        self.mirror.answered(len(result.data) if counted is None else counted.delivered)
        return result

    def _fetch_once(self, url: str, start: int, stop: int, sink: Sink | None,
                    check: Check | None = None, connect_timeout: float = 10.0,
                    reach: bool = True) -> RangeResult:
        """One GET.  ``reach=False`` leaves the host out of ``Reachability``: a site
        mirror has a back-off of its own, and its failing does not make the mount offline."""
        suffix = start < 0
        headers = {"Range": f"bytes={start}" if suffix else f"bytes={start}-{stop - 1}"}
        if reach:
            self.reach.check(url)  # Unreachable (not Retryable) when the store is down
        self.requests += 1
        self.last_used = time.monotonic()
        log.debug("GET %s %s", redact(url), headers["Range"])
        left = deadline.remaining(self.timeout)
        try:
            resp = self._get(url, headers, (min(connect_timeout, left), left))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if reach and cannot_connect(exc):
                self.reach.failed(url)
            raise Retryable(f"{type(exc).__name__}") from None
        if reach:
            self.reach.answered(url)
        done = False
        try:
            if resp.status != 206:
                raise status_error(resp.status, url, start, stop, retry_after(resp))
            start, expected_stop, total = check_content_range(
                resp.headers.get("Content-Range", ""), start, stop)
            etag = resp.headers.get("ETag") or None
            if check is not None:
                check(total, etag)
            if sink is not None:
                self._stream_body(resp, expected_stop - start, sink)
                done = True
                return RangeResult(b"", start, total, etag)
            try:
                data = resp.read(expected_stop - start + 1)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise Retryable(f"body read failed: {type(exc).__name__}") from None
            if len(data) != expected_stop - start:
                raise Retryable(f"body has {len(data)} bytes, expected {expected_stop - start}")
            self.bytes += len(data)
            done = True
            return RangeResult(data, start, total, etag)
        finally:
            if not done:  # a body not read to its end: the connection cannot be reused
                resp.close()
            resp.release_conn()

    def _stream_body(self, resp: urllib3.BaseHTTPResponse, length: int, sink: Sink) -> None:
        got = 0
        while got < length:
            try:
                # read1: what has arrived, without waiting for a whole piece (a break
                # then loses nothing that was already received)
                piece = resp.read1(min(TUNING.stream_piece, length - got))
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise Retryable(f"body read failed after {got} of {length} bytes: "
                                 f"{type(exc).__name__}") from None
            if not piece:
                raise Retryable(f"body ended after {got} of {length} bytes")
            self.bytes += len(piece)
            got += len(piece)
            sink(piece)


class Retryable(Exception):
    """A transient failure: worth another attempt (after ``retry_after`` s if given)."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def status_error(status: int, url: str, start: int, stop: int,
                 server_asked: float = 0.0) -> Exception:
    """What a status other than 206 means for a range request: an OSError with the
    errno a reader gets (not worth retrying), or ``Retryable``."""
    if status in (401, 403):
        return OSError(errno.EACCES, f"object store answered {status} for {redact(url)}")
    if status == 404:
        return OSError(errno.ENOENT, f"object store has no {redact(url)}")
    if status == 416:
        return OSError(errno.EINVAL, f"range {start}-{stop} outside {redact(url)}")
    # a 200 is the whole object (the store ignored the range): never served
    return Retryable(f"status {status} instead of 206",
                     server_asked if status in (429, 503) else 0.0)


def check_content_range(header: str, start: int, stop: int) -> tuple[int, int, int]:
    """``(start, stop, total)`` of the bytes a 206 answer holds, checked against the
    half-open range ``[start, stop)`` asked for; ``Retryable`` when it is not exactly
    that range.  ``start < 0`` asked for the last ``-start`` bytes: the answer must
    then say the total, which places them.  The store clamps a range that runs past
    the end of the object (the first probe does), so ``stop`` may come back smaller.
    """
    match = _CONTENT_RANGE.fullmatch(header.strip())
    total = int(match.group(3)) if match and match.group(3) != "*" else -1
    if start < 0:
        if total < 0:
            raise Retryable("suffix range answered without the total size")
        start, stop = max(0, total + start), total
    expected_stop = min(stop, total) if total >= 0 else stop
    if (not match or int(match.group(1)) != start
            or int(match.group(2)) != expected_stop - 1):
        raise Retryable(f"Content-Range {header!r} does not match {start}-{stop - 1}")
    return start, expected_stop, total
