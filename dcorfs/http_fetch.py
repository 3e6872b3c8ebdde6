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
import random
import re
import threading
import time
from collections.abc import Callable

import requests
import requests.adapters
import urllib3.exceptions

from . import deadline

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
STREAM_PIECE = 128 * 1024  # bytes handed to a sink at a time

Sink = Callable[[bytes], None]


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

    def __init__(self, data: bytes, start: int, total: int, etag: str) -> None:
        self.data = data
        self.start = start
        self.total = total
        self.etag = etag


# connections to the object store opened at mount, and the most a bulk fetch uses at
# once: enough to fill a long fat link, few enough to leave room for readers
STORE_CONNECTIONS = 4


def shared_adapter(pool_size: int = 32) -> requests.adapters.HTTPAdapter:
    """One connection pool for all threads: a connection one thread opened is reused
    by the next, so a cold read pays the TCP (and TLS) handshake once per host and
    request in flight, not once per worker thread."""
    return requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=pool_size,
                                         max_retries=0)


def new_session(adapter: requests.adapters.HTTPAdapter) -> requests.Session:
    """A session for one thread (requests does not promise that sessions are
    thread-safe) over a shared, thread-safe urllib3 pool."""
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.trust_env = False  # no netrc credentials, no proxies from the environment
    return session


def redact(url: str) -> str:
    """The URL without its query string (presigned signatures stay out of logs)."""
    return url.split("?", 1)[0]


class RangeFetcher:
    """GETs byte ranges with a timeout, bounded retries and full response checks."""

    def __init__(self, timeout: float = 30.0, retries: int = 3, backoff: float = 0.25) -> None:
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._local = threading.local()
        self._adapter = shared_adapter()
        self.requests = 0
        self.bytes = 0

    @property
    def session(self) -> requests.Session:
        # requests' Session is not documented thread-safe; one per thread, pooled inside
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = new_session(self._adapter)
        return session

    def fetch(self, url: str, start: int, stop: int, sink: Sink | None = None) -> RangeResult:
        """Exactly the bytes ``[start, stop)`` of ``url``, or an OSError with an errno.

        ``start < 0`` asks for the last ``-start`` bytes (``stop`` is ignored), for
        reading a file's tail before its size is known.  With ``sink``, the body is
        handed over in order, piece by piece as it arrives, instead of returned in
        ``data``: the first blocks of a long run are usable before its last ones
        have crossed the link.  A retry after a broken body then asks only for the
        bytes not yet handed over.
        """
        if start >= 0 and stop <= start:
            raise OSError(errno.EINVAL, f"empty range {start}-{stop}")
        if sink is not None and start < 0:
            raise ValueError("a tail read cannot be streamed")
        counted = None if sink is None else CountingSink(sink)
        last_error: OSError | None = None
        wait_next = 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                delay = wait_next or self.backoff * (2 ** (attempt - 1)) * (0.5 + random.random())
                time.sleep(min(delay, deadline.remaining(delay)))
            resume = start + (0 if counted is None else counted.delivered)
            try:
                if counted is None:
                    return self._fetch_once(url, start, stop, None)
                result = self._fetch_once(url, resume, stop, counted)
                result.start = start
                return result
            except _Retryable as exc:
                last_error = OSError(errno.EIO, str(exc))
                wait_next = exc.retry_after
                log.warning("DCF301 range %d-%d of %s failed (%s), attempt %d/%d",
                            resume, stop, redact(url), exc, attempt + 1, self.retries + 1)
        assert last_error is not None
        raise last_error

    def _fetch_once(self, url: str, start: int, stop: int, sink: Sink | None) -> RangeResult:
        suffix = start < 0
        headers = {"Range": f"bytes={start}" if suffix else f"bytes={start}-{stop - 1}"}
        self.requests += 1
        log.debug("GET %s %s", redact(url), headers["Range"])
        left = deadline.remaining(self.timeout)
        try:
            resp = self.session.get(url, headers=headers, timeout=(min(10.0, left), left),
                                    stream=True, allow_redirects=False)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Retryable(f"{type(exc).__name__}") from None
        with resp:
            status = resp.status_code
            if status in (401, 403):
                raise OSError(errno.EACCES, f"object store answered {status} for {redact(url)}")
            if status == 404:
                raise OSError(errno.ENOENT, f"object store has no {redact(url)}")
            if status == 416:
                raise OSError(errno.EINVAL, f"range {start}-{stop} outside {redact(url)}")
            if status != 206:
                raise _Retryable(f"status {status} instead of 206",
                                 retry_after(resp) if status in (429, 503) else 0.0)
            match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            total = int(match.group(3)) if match and match.group(3) != "*" else -1
            if suffix:
                if total < 0:
                    raise _Retryable("suffix range answered without the total size")
                start, stop = max(0, total + start), total
            # the store clamps a range that runs past the end (the first probe does)
            expected_stop = min(stop, total) if total >= 0 else stop
            if (not match or int(match.group(1)) != start
                    or int(match.group(2)) != expected_stop - 1):
                raise _Retryable(f"Content-Range {resp.headers.get('Content-Range')!r} "
                                 f"does not match {start}-{stop - 1}")
            etag = resp.headers.get("ETag", "").strip('"')
            if sink is not None:
                self._stream_body(resp, expected_stop - start, sink)
                return RangeResult(b"", start, total, etag)
            try:
                data = resp.raw.read(expected_stop - start + 1, decode_content=True)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise _Retryable(f"body read failed: {type(exc).__name__}") from None
            if len(data) != expected_stop - start:
                raise _Retryable(f"body has {len(data)} bytes, expected {expected_stop - start}")
            self.bytes += len(data)
            return RangeResult(data, start, total, etag)

    def _stream_body(self, resp: requests.Response, length: int, sink: Sink) -> None:
        got = 0
        while got < length:
            try:
                # read1: what has arrived, without waiting for a whole piece (a break
                # then loses nothing that was already received)
                piece = resp.raw.read1(min(STREAM_PIECE, length - got), decode_content=True)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise _Retryable(f"body read failed after {got} of {length} bytes: "
                                 f"{type(exc).__name__}") from None
            if not piece:
                raise _Retryable(f"body ended after {got} of {length} bytes")
            self.bytes += len(piece)
            got += len(piece)
            sink(piece)


class _Retryable(Exception):
    """A transient failure: worth another attempt (after ``retry_after`` s if given)."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after(resp: requests.Response, cap: float = 30.0) -> float:
    """Seconds from a Retry-After header (delta form), capped; 0 when absent."""
    try:
        return max(0.0, min(cap, float(resp.headers.get("Retry-After", ""))))
    except ValueError:
        return 0.0
