"""HTTP plumbing shared by the DCOR API client and the range fetcher.

One connection pool per client, shared by all threads; sessions per thread; the
backoff between attempts; URLs made fit for logs; and the rule that the token never
crosses a network in the clear.
"""
from __future__ import annotations

import errno
import ipaddress
import random
import urllib.parse

import requests
import requests.adapters


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


def retry_after(resp: requests.Response, cap: float = 30.0) -> float:
    """Seconds from a Retry-After header (delta form), capped; 0 when absent."""
    try:
        return max(0.0, min(cap, float(resp.headers.get("Retry-After", ""))))
    except ValueError:
        return 0.0


def backoff_delay(attempt: int, base: float, server_asked: float = 0.0) -> float:
    """Seconds to wait before attempt number ``attempt`` (1 for the first retry):
    what the server asked for (Retry-After), else exponential with full jitter
    around ``base * 2**(attempt-1)``, so that many clients do not retry in step."""
    if server_asked > 0:
        return server_asked
    return base * (2 ** (attempt - 1)) * (0.5 + random.random())


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine (localhost, 127.0.0.0/8, ::1)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_plain_http(url: str, allow: bool) -> None:
    """Refuse plain http to another machine: the API token would cross the network
    unencrypted.  Loopback is fine (``dcorfs serve``), and so is ``allow``."""
    if url.startswith("http://") and not (allow or is_loopback(url)):
        raise OSError(errno.EPERM, f"refusing plain http to {url}: the API token would "
                                   "cross the network unencrypted; use https, or "
                                   "--allow-insecure-http if you must")
