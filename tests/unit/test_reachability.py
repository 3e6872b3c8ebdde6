"""Offline detection: a host that cannot be connected to fails the next requests at once,
a probe brings it back, and ``--offline`` sends nothing at all."""
from __future__ import annotations

import errno
import socket
import time

import pytest

from dcorfs.dcor.api import DcorApi
from dcorfs.io.range_fetch import RangeFetcher
from dcorfs.io.reachability import Reachability, Unreachable


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there now


@pytest.mark.expect_warnings("DCF301", "DCN901", maybe=("DCA201",))
def test_a_host_that_refuses_fails_at_once_after_the_first_failure():
    url = closed_port_url()
    reach = Reachability(retry_every=60)
    fetcher = RangeFetcher(timeout=2, reach=reach)
    started = time.monotonic()
    with pytest.raises(OSError) as first:
        fetcher.fetch(f"{url}/bucket/object", 0, 10)
    assert first.value.errno == errno.EIO
    assert time.monotonic() - started < 3  # two refused connects, not four and a timeout
    assert reach.status()["state"] == "offline"
    sent = fetcher.requests
    api = DcorApi(url, reach=reach)  # one host: the API is down as well
    started = time.monotonic()
    for call in (lambda: fetcher.fetch(f"{url}/bucket/other", 0, 10),
                 lambda: api.call("status_show")):
        with pytest.raises(Unreachable):
            call()
    assert time.monotonic() - started < 0.1
    assert fetcher.requests == sent and api.requests == 0
    assert reach.status()["refused_at_once"] == 3  # the first fetch's third attempt too


def test_forced_offline_sends_nothing(in_thread_server):
    reach = Reachability(forced=True)
    api = DcorApi(in_thread_server.url, reach=reach)
    with pytest.raises(Unreachable) as info:
        api.call("status_show")
    assert info.value.errno == errno.EIO and "--offline" in info.value.strerror
    assert api.requests == 0 and reach.status() == {
        "state": "offline", "forced": True, "unreachable_since": {}, "refused_at_once": 1}


@pytest.mark.expect_warnings("DCN901")
def test_a_probe_brings_a_host_back(in_thread_server):
    reach = Reachability(retry_every=0.3)
    api = DcorApi(in_thread_server.url, reach=reach)
    for _ in range(2):  # as two refused connects would
        reach.failed(in_thread_server.url)
    with pytest.raises(Unreachable):
        api.call("status_show")
    time.sleep(0.35)
    assert api.call("status_show")["ckan_version"]  # the probe went out and was answered
    assert reach.status()["state"] == "online" and api.requests == 1
