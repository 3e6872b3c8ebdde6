"""Which reads go to a site mirror, and what happens when it fails (``store_mirror``)."""
from __future__ import annotations

import errno
import time

import pytest
import requests
from fakes import ScriptedFetcher

from dcorfs.io.store_mirror import StoreMirror, check_mirror_url, origin_of

STORE = "https://objectstore.example.org"
PUBLIC = f"{STORE}/circle-1/resource/abc/def/0123"
DATA = bytes(range(256)) * 4


def test_the_store_is_the_same_with_or_without_its_default_port():
    assert origin_of(f"{STORE}:443/b/k") == origin_of(f"{STORE}/x") == (
        "https", "objectstore.example.org", 443)
    assert origin_of("http://h/x") == ("http", "h", 80)
    assert origin_of("ftp://h/x") is None and origin_of("not a url") is None


@pytest.mark.parametrize("url", ["cache:8080", "ftp://cache", "http://cache/?a=1",
                                 "http://user@cache", "http://"])
def test_a_mirror_url_must_be_plain_http(url):
    with pytest.raises(ValueError):
        check_mirror_url(url)


def test_only_unsigned_reads_of_the_store_go_to_the_mirror():
    mirror = StoreMirror("http://cache:8080/", origin=STORE)
    assert mirror.route(PUBLIC, 0) == "http://cache:8080/circle-1/resource/abc/def/0123"
    assert mirror.route(f"{STORE}:443/circle-1/condensed/abc/def/0123", 0).endswith("/condensed/abc/def/0123")
    assert mirror.route(PUBLIC + "?Expires=1&Signature=s", 0) is None  # presigned: private
    assert mirror.route("https://elsewhere.org/circle-1/resource/x", 0) is None  # another host
    assert mirror.route("http://objectstore.example.org/circle-1/x", 0) is None  # another port
    assert mirror.route(PUBLIC, -65536) is None  # a suffix range would fetch it all
    assert mirror.status()["private_reads_direct"] == 1


def test_nothing_goes_to_the_mirror_before_the_store_is_known():
    mirror = StoreMirror("http://cache:8080")
    assert mirror.route(PUBLIC, 0) is None and mirror.status()["origin"] is None
    mirror.learn_origin(PUBLIC)
    mirror.learn_origin("https://other.org/x")  # the first one stays
    assert mirror.route(PUBLIC, 0) is not None
    assert mirror.status()["origin"] == "https://objectstore.example.org:443"


@pytest.mark.expect_warnings("DCP201", "DCP202")
def test_a_failed_mirror_is_left_alone_then_tried_again(caplog):
    mirror = StoreMirror("http://cache:8080", origin=STORE, retry_after=0.2)
    mirror.failed("connection refused")
    mirror.failed("connection refused")
    assert mirror.route(PUBLIC, 0) is None
    assert mirror.status()["state"].startswith("failed (connection refused)")
    assert [r.message[:6] for r in caplog.records] == ["DCP201"]  # once per outage
    time.sleep(0.25)
    assert mirror.route(PUBLIC, 0) is not None
    mirror.answered(10)
    assert mirror.status()["state"] == "in use"
    assert [r.message[:6] for r in caplog.records] == ["DCP201", "DCP202"]


def fetcher_with_mirror(answers: list) -> ScriptedFetcher:
    return ScriptedFetcher(answers, mirror=StoreMirror("http://cache:8080", origin=STORE))


@pytest.mark.expect_warnings("DCP201")
def test_a_read_is_served_by_the_mirror_checked_like_the_origin():
    fetcher = fetcher_with_mirror([(206, "bytes 11-20/1024", DATA[11:21]),  # wrong bytes
                                   (206, "bytes 10-19/1024", DATA[10:20])])
    assert fetcher.fetch(PUBLIC, 10, 20).data == DATA[10:20]
    # the mirror's wrong answer was refused; the origin served the read
    assert fetcher.fake.urls == ["http://cache:8080/circle-1/resource/abc/def/0123", PUBLIC]
    assert fetcher.mirror.status()["failures"] == 1


@pytest.mark.expect_warnings("DCP201")
def test_a_mirror_that_cannot_be_reached_sends_reads_to_the_origin():
    refused = requests.ConnectionError("refused")
    fetcher = fetcher_with_mirror([refused, (206, "bytes 0-9/1024", DATA[:10]),
                                   (206, "bytes 10-19/1024", DATA[10:20])])
    assert fetcher.fetch(PUBLIC, 0, 10).data == DATA[:10]
    assert fetcher.fetch(PUBLIC, 10, 20).data == DATA[10:20]  # backing off: the origin
    assert fetcher.fake.urls[1:] == [PUBLIC, PUBLIC]


@pytest.mark.expect_warnings("DCP201")
def test_a_stream_broken_at_the_mirror_resumes_at_the_origin():
    fetcher = fetcher_with_mirror([(206, "bytes 0-99/1024", DATA[:40]),
                                   (206, "bytes 40-99/1024", DATA[40:100])])
    pieces: list[bytes] = []
    fetcher.fetch(PUBLIC, 0, 100, pieces.append)
    assert b"".join(pieces) == DATA[:100]
    assert fetcher.fake.ranges == ["bytes=0-99", "bytes=40-99"]
    assert fetcher.fake.urls[1] == PUBLIC


def test_a_404_from_the_mirror_is_asked_of_the_origin_without_backing_off():
    fetcher = fetcher_with_mirror([(404, None, b""), (206, "bytes 0-9/1024", DATA[:10]),
                                   (206, "bytes 0-9/1024", DATA[:10])])
    fetcher.fetch(PUBLIC, 0, 10)
    fetcher.fetch(PUBLIC, 0, 10)
    assert fetcher.fake.urls[1] == PUBLIC and fetcher.fake.urls[2].startswith("http://cache")
    assert fetcher.mirror.status()["failures"] == 0


def test_an_object_that_changed_is_not_hidden_by_the_fallback():
    def changed(total, etag):
        raise OSError(errno.ESTALE, "changed")
    fetcher = fetcher_with_mirror([(206, "bytes 0-9/2048", DATA[:10])])
    with pytest.raises(OSError) as info:
        fetcher.fetch(PUBLIC, 0, 10, check=changed)
    assert info.value.errno == errno.ESTALE


def test_private_reads_never_touch_the_mirror():
    fetcher = fetcher_with_mirror([(206, "bytes 0-9/1024", DATA[:10])])
    signed = PUBLIC + "?Expires=1&Signature=s"
    fetcher.fetch(signed, 0, 10)
    assert fetcher.fake.urls == [signed]
