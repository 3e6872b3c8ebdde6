"""The DCOR (CKAN) action API: the only place that sends the API token.

Answers are CKAN envelopes; failures map to errnos once, here:
404 -> ENOENT, 401/403 -> EACCES, anything else (5xx, HTML where JSON was expected,
``success: false`` without a known status) -> EIO.  Transport failures are retried a
bounded number of times with backoff; HTTP error answers are not retried, except 5xx.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import math
import threading
import time
from typing import Any

import requests

from ..ids import is_resource_id  # noqa: F401 - the dcor layer's name for it
from ..io import deadline
from ..io.http import (
    backoff_delay,
    check_plain_http,
    new_session,
    redact,
    retry_after,
    shared_adapter,
)
from ..io.reachability import Reachability, Unreachable, cannot_connect
from ..tuning import TUNING

log = logging.getLogger(__name__)


class DcorApi:
    def __init__(self, host_url: str, token: str = "", timeout: float = 30.0,
                 retries: int = 3, allow_http: bool = False,
                 reach: Reachability | None = None, proxy: str | None = None) -> None:
        self.base = host_url.rstrip("/")
        self.proxy = proxy  # --proxy; else the environment's (io.http.proxy_for)
        check_plain_http(self.base, allow_http)
        self._token = token
        self.timeout = timeout
        self.retries = retries
        self._local = threading.local()
        # as many connections as listing pages go out at once (16 pool workers)
        self._adapter = shared_adapter(pool_size=16)
        self.reach = reach or Reachability()
        self.requests = 0
        self.maintenance_since: float | None = None  # DCOR answered 503 since then
        self._state_lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = new_session(self._adapter, self.proxy)
            if self._token:
                session.headers["Authorization"] = self._token
        return session

    def call(self, action: str, **params: Any) -> Any:
        """GET one action; returns ``result`` or raises OSError with a fitting errno.

        Transport failures and 5xx are retried ``retries`` times; a 503 is DCOR in
        maintenance (DCOR-Aid reads it so too) and is waited out, as long as the
        operation's deadline allows (``TUNING.maintenance_wait`` without one), at the pace
        ``Retry-After`` asks for."""
        url = f"{self.base}/api/3/action/{action}"
        wait_next = 0.0
        attempt = 0
        waiting_since: float | None = None
        while True:
            if attempt:
                delay = backoff_delay(attempt, 0.25, wait_next)
                time.sleep(min(delay, deadline.remaining(delay)))
                wait_next = 0.0
            try:
                resp = self._get(url, params=params)
            except Unreachable:
                raise
            except OSError as exc:
                attempt += 1
                log.warning("DCA201 %s: %s (attempt %d/%d)", action, exc.strerror,
                            attempt, self.retries + 1)
                if attempt > self.retries:
                    raise
                continue
            if resp.status_code == 503:
                waiting_since = waiting_since or time.monotonic()
                self._maintenance(action, retry_after(resp), waiting_since)
                continue
            if resp.status_code >= 500 or resp.status_code == 429:
                attempt += 1
                log.warning("DCA202 %s answered %d (attempt %d/%d)", action, resp.status_code,
                            attempt, self.retries + 1)
                if attempt > self.retries:
                    raise OSError(errno.EIO, f"DCOR answered {resp.status_code} to {action}")
                wait_next = retry_after(resp)
                continue
            self._answered()
            try:
                body = resp.json()
            except ValueError:
                body = None
            return ckan_result(action, resp.status_code, body,
                               resp.headers.get("Content-Type", "no content type"))

    def _maintenance(self, action: str, asked: float, since: float) -> None:
        """DCOR answered 503: say so once, then wait before asking again, within the
        operation's deadline (EIO when it would pass)."""
        with self._state_lock:
            first = self.maintenance_since is None
            if first:
                self.maintenance_since = time.monotonic()
        if first:
            log.warning("DCA203 DCOR answers 503 (maintenance, or overloaded): requests "
                        "wait for it, as long as each operation's deadline allows")
        left = deadline.remaining(math.inf)
        if left == math.inf:  # no operation waits: bounded by the time waited so far
            left = TUNING.maintenance_wait - (time.monotonic() - since)
        delay = asked if asked > 0 else TUNING.maintenance_poll
        if left <= min(delay, TUNING.maintenance_poll) / 2:
            raise OSError(errno.EIO, f"DCOR is in maintenance (503 to {action})")
        time.sleep(min(delay, max(0.05, left - 0.5)))

    def _answered(self) -> None:
        if self.maintenance_since is None:
            return
        with self._state_lock:
            since, self.maintenance_since = self.maintenance_since, None
        if since is not None:
            log.info("DCA204 DCOR answers again after %.0f s of maintenance",
                     time.monotonic() - since)

    def _get(self, url: str, **kwargs: Any) -> requests.Response:
        """One GET to DCOR's host with the token, within the operation's deadline;
        a transport failure is EIO."""
        self.reach.check(url)
        self.requests += 1
        left = deadline.remaining(self.timeout)
        try:
            resp = self.session.get(url, allow_redirects=False,
                                    timeout=(min(10.0, left), left), **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            if cannot_connect(exc):
                self.reach.failed(url)
            raise OSError(errno.EIO, f"DCOR at {self.base} unreachable "
                                     f"({type(exc).__name__})") from None
        self.reach.answered(url)
        return resp

    def resolve_download(self, url: str) -> str:
        """Where a download route (``/dataset/<id>/resource/<rid>/download/<name>``)
        redirects: a presigned object URL.  The token is sent, so only to DCOR's host."""
        if not url.startswith(self.base + "/"):
            raise OSError(errno.EIO, f"download route {redact(url)} is not on {self.base}")
        with self._get(url, stream=True) as resp:
            location = resp.headers.get("Location", "")
            if resp.status_code in (301, 302, 303, 307, 308) and location:
                return location
            if resp.status_code == 404:
                raise OSError(errno.ENOENT, f"no download at {redact(url)}")
            if resp.status_code in (401, 403):
                raise OSError(errno.EACCES, f"download of {redact(url)} refused")
            raise OSError(errno.EIO, f"download route answered {resp.status_code}")

    def token_id(self, salt: str) -> str | None:
        """A salted, slow hash of the token (None without one): what the disk cache
        records to serve private answers offline only to the token they were given to."""
        if not self._token:
            return None
        digest = hashlib.pbkdf2_hmac("sha256", self._token.encode(), salt.encode(), 100_000)
        return digest.hex()[:32]

    def dcserv(self, rid: str, query: str) -> Any:
        return self.call("dcserv", id=rid, query=query, version="2")


def ckan_result(action: str, status: int, body: Any, content_type: str) -> Any:
    """The ``result`` of a CKAN envelope, or the OSError its failure means.

    ``body`` is the decoded JSON, or None when the answer was not JSON (an HTML
    maintenance page, a proxy's error page)."""
    message = kind = ""
    if isinstance(body, dict):
        if body.get("success") is True and status == 200:
            return body.get("result")
        err = body.get("error")
        message = str(err.get("message", "")) if isinstance(err, dict) else ""
        kind = str(err.get("__type", "")) if isinstance(err, dict) else ""
    if status in (400, 409) and kind in ("Search Error", "Search Query Error"):
        # a query Solr cannot parse (409), or a parameter CKAN refuses (400):
        # ckan/views/api.py; the caller's question is wrong, not DCOR
        raise OSError(errno.EINVAL, f"{action}: {message}")
    if status == 404:
        raise OSError(errno.ENOENT, f"{action}: not found")
    if status in (401, 403):
        raise OSError(errno.EACCES, f"{action}: access denied ({message or status})")
    if body is None:
        raise OSError(errno.EIO, f"{action}: answer is not JSON (status {status}, {content_type})")
    raise OSError(errno.EIO, f"{action}: status {status} {message}".strip())
