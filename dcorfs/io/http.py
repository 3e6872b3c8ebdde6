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


def proxy_for(url: str, explicit: str | None = None) -> str | None:
    """The proxy a request to ``url`` goes through, as requests and curl choose it:
    none where ``NO_PROXY`` (or ``no_proxy``) names the host; else ``explicit``
    (``--proxy``) if given; else ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` (upper or
    lower case) for the URL's scheme."""
    if requests.utils.should_bypass_proxies(url, no_proxy=None):
        return None
    if explicit:
        return explicit
    found = requests.utils.get_environ_proxies(url, no_proxy=None)
    scheme = urllib.parse.urlsplit(url).scheme
    return found.get(scheme) or found.get("all")


class _Session(requests.Session):
    """requests' session without what ``trust_env`` would bring besides proxies: no
    netrc credentials, no CA bundle from the environment.  Proxies follow
    ``proxy_for``.  Through a proxy, an https request is a CONNECT tunnel, so the
    token (a header of the request) reaches DCOR's host only; the proxy is never
    given a header of its own."""

    proxy: str | None = None

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[override]
        # chosen once per host: reading the environment costs ~0.1 ms, every request
        host = urllib.parse.urlsplit(url)[:2]
        chosen = self._chosen.get(host, False)
        if chosen is False:
            chosen = self._chosen[host] = proxy_for(url, self.proxy)
        proxies = dict(proxies or {})
        if chosen:
            proxies.setdefault(urllib.parse.urlsplit(url).scheme, chosen)
        return super().merge_environment_settings(url, proxies, stream, verify, cert)


def new_session(adapter: requests.adapters.HTTPAdapter,
                proxy: str | None = None) -> requests.Session:
    """A session for one thread (requests does not promise that sessions are
    thread-safe) over a shared, thread-safe urllib3 pool; ``proxy``: ``--proxy``."""
    session = _Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.trust_env = False  # no netrc credentials; proxies come from proxy_for
    session.proxy = proxy
    session._chosen = {}  # (scheme, host) -> its proxy, or None
    return session


def proxy_shown(url: str | None) -> str | None:
    """A proxy URL for the status and logs: without credentials (``user:pass@``)."""
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def check_proxy_url(url: str) -> str:
    """A proxy URL as ``--proxy`` takes it (``http://host:port``), or ValueError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not a proxy URL like http://proxy.lab:3128")
    return url.rstrip("/")


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
