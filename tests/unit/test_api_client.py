"""The DCOR API client: CKAN envelopes to results or errnos, retries as the server asks."""
from __future__ import annotations

import errno
import time

import pytest

from dcorfs.dcor.api import DcorApi, ckan_result, is_resource_id
from dcorfs.io.http import backoff_delay, check_plain_http
from dcorfs.server.faults import Faults


def test_success_gives_the_result():
    assert ckan_result("x", 200, {"success": True, "result": [1]}, "application/json") == [1]


@pytest.mark.parametrize("status, body, code", [
    (404, {"success": False, "error": {"message": "Not found"}}, errno.ENOENT),
    (403, {"success": False, "error": {"message": "Access denied"}}, errno.EACCES),
    (401, None, errno.EACCES),
    (409, {"success": False, "error": {"message": "Invalid query"}}, errno.EIO),
    (200, {"success": False}, errno.EIO),  # a 200 that says it failed
    (200, None, errno.EIO),  # an HTML maintenance page
    (500, {"success": False, "error": {"message": "Internal Server Error"}}, errno.EIO),
])
def test_failures_map_to_one_errno_each(status, body, code):
    with pytest.raises(OSError) as info:
        ckan_result("dcserv", status, body, "text/html")
    assert info.value.errno == code


def test_resource_ids_and_plain_http():
    assert is_resource_id("fb719fb2-bd9f-817a-7d70-f4002af916f0")
    for name in ("FB719FB2-BD9F-817A-7D70-F4002AF916F0", "fb719fb2", ".Trash", "x" * 36):
        assert not is_resource_id(name)
    check_plain_http("http://127.0.0.1:8000", allow=False)
    check_plain_http("https://dcor.mpl.mpg.de", allow=False)
    check_plain_http("http://dcor.example.org", allow=True)
    with pytest.raises(OSError) as info:
        check_plain_http("http://dcor.example.org", allow=False)
    assert info.value.errno == errno.EPERM


def test_backoff_grows_and_follows_retry_after():
    assert backoff_delay(1, 0.25, server_asked=3.0) == 3.0
    for attempt in (1, 2, 3):
        assert 0.5 * 0.25 * 2 ** (attempt - 1) <= backoff_delay(attempt, 0.25) \
            <= 1.5 * 0.25 * 2 ** (attempt - 1)


def test_against_the_server(in_thread_server):
    api = DcorApi(in_thread_server.url)
    rid = in_thread_server.ids["beads/calibration_beads.rtdc"]
    assert api.dcserv(rid, "size") == 47
    private = in_thread_server.ids["private/calibration_beads.rtdc"]
    with pytest.raises(OSError) as info:
        api.dcserv(private, "size")
    assert info.value.errno == errno.EACCES
    assert DcorApi(in_thread_server.url, token=in_thread_server.TOKEN).dcserv(private,
                                                                            "size") == 47
    with pytest.raises(OSError) as info:
        api.dcserv("0123abcd-0000-4000-8000-000000000000", "size")
    assert info.value.errno == errno.ENOENT


@pytest.mark.expect_warnings("DCA202")
def test_5xx_is_retried_after_what_retry_after_says(in_thread_server):
    """Every answer a 502 with Retry-After: 0.3 s; 3 retries wait 0.9 s, not the
    0.25 + 0.5 + 1 s (x 0.5..1.5) of the client's own backoff, and the server saw
    all four attempts."""
    api = DcorApi(in_thread_server.url, retries=3)
    rid = in_thread_server.ids["beads/calibration_beads.rtdc"]
    in_thread_server.faults.set(Faults(error_rate=1.0, retry_after=0.3))
    before = in_thread_server.stats.snapshot().get("fault_error", 0)
    started = time.monotonic()
    try:
        with pytest.raises(OSError) as info:
            api.dcserv(rid, "size")
    finally:
        in_thread_server.faults.set(Faults())
    took = time.monotonic() - started
    assert info.value.errno == errno.EIO
    assert in_thread_server.stats.snapshot()["fault_error"] - before == 4
    assert 0.9 <= took < 0.9 + 0.5, took
    # without Retry-After the client's own backoff applies: at least 0.125 + 0.25 + 0.5
    in_thread_server.faults.set(Faults(error_rate=1.0))
    started = time.monotonic()
    try:
        with pytest.raises(OSError):
            api.dcserv(rid, "size")
    finally:
        in_thread_server.faults.set(Faults())
    assert time.monotonic() - started >= 0.875


@pytest.mark.expect_warnings("DCA203")
def test_maintenance_is_waited_out_within_the_deadline(in_thread_server):
    """503 is DCOR in maintenance: waited out at Retry-After's pace while the
    operation's deadline allows, then EIO; said once, and again when it ends."""
    from dcorfs.io import deadline

    api = DcorApi(in_thread_server.url, retries=3)
    rid = in_thread_server.ids["beads/calibration_beads.rtdc"]
    in_thread_server.faults.set(Faults(maintenance_s=1.0, retry_after=0.2))
    try:
        with deadline.deadline(10.0):
            assert api.dcserv(rid, "size") == 47
        assert api.maintenance_since is None  # it answered again
        in_thread_server.faults.set(Faults(maintenance_s=30.0, retry_after=0.2))
        started = time.monotonic()
        with pytest.raises(OSError) as info, deadline.deadline(1.0):
            api.dcserv(rid, "size")
        assert info.value.errno == errno.EIO
        assert time.monotonic() - started < 1.5
    finally:
        in_thread_server.faults.set(Faults())
