"""Range answers are served only when they are exactly the bytes asked for."""
from __future__ import annotations

import errno

import pytest
from fakes import ScriptedFetcher

from dcorfs.io.range_fetch import Retryable, check_content_range, status_error


def test_an_exact_answer_is_accepted():
    assert check_content_range("bytes 100-199/1000", 100, 200) == (100, 200, 1000)
    assert check_content_range("bytes 100-199/*", 100, 200) == (100, 200, -1)


def test_a_range_past_the_end_is_clamped_by_the_store():
    assert check_content_range("bytes 900-999/1000", 900, 2000) == (900, 1000, 1000)


def test_a_tail_read_learns_where_it_starts():
    assert check_content_range("bytes 936-999/1000", -64, 0) == (936, 1000, 1000)
    assert check_content_range("bytes 0-99/100", -64 * 1024, 0) == (0, 100, 100)
    with pytest.raises(Retryable):
        check_content_range("bytes 936-999/*", -64, 0)  # cannot be placed


@pytest.mark.parametrize("header", ["", "bytes 101-200/1000", "bytes 100-198/1000",
                                    "bytes 100-200/1000", "bytes=100-199/1000",
                                    "bytes 100-199", "items 100-199/1000"])
def test_anything_else_is_retried_never_served(header):
    with pytest.raises(Retryable):
        check_content_range(header, 100, 200)


@pytest.mark.parametrize("status, code", [(401, errno.EACCES), (403, errno.EACCES),
                                          (404, errno.ENOENT), (416, errno.EINVAL)])
def test_final_statuses_carry_an_errno(status, code):
    error = status_error(status, "http://store/bucket/key?Signature=secret", 0, 10)
    assert isinstance(error, OSError) and error.errno == code
    assert "secret" not in str(error)  # presigned signatures stay out of messages


@pytest.mark.parametrize("status", [200, 500, 502, 503, 429])
def test_other_statuses_are_retried(status):
    error = status_error(status, "http://store/k", 0, 10, server_asked=2.0)
    assert isinstance(error, Retryable)
    assert error.retry_after == (2.0 if status in (429, 503) else 0.0)


DATA = bytes(range(256)) * 4


@pytest.mark.expect_warnings("DCF301")
def test_the_fetcher_retries_until_the_answer_is_exact():
    fetcher = ScriptedFetcher([
        (200, None, DATA),  # the whole object: the store ignored the range
        (206, "bytes 11-20/1024", DATA[11:21]),  # other bytes
        (206, "bytes 10-19/1024", DATA[10:15]),  # short body
        (206, "bytes 10-19/1024", DATA[10:20]),
    ])
    result = fetcher.fetch("http://store/k", 10, 20)
    assert result.data == DATA[10:20] and result.total == 1024
    assert fetcher.fake.ranges == ["bytes=10-19"] * 4


@pytest.mark.expect_warnings("DCF301")
def test_the_fetcher_gives_up_with_eio_after_its_retries():
    fetcher = ScriptedFetcher([(503, None, b"")] * 3, retries=2)
    with pytest.raises(OSError) as info:
        fetcher.fetch("http://store/k", 0, 10)
    assert info.value.errno == errno.EIO and fetcher.fake.answers == []


@pytest.mark.expect_warnings("DCF301")
def test_a_broken_stream_resumes_where_it_broke():
    fetcher = ScriptedFetcher([(206, "bytes 0-99/1024", DATA[:40]),
                               (206, "bytes 40-99/1024", DATA[40:100])])
    pieces: list[bytes] = []
    fetcher.fetch("http://store/k", 0, 100, pieces.append)
    assert b"".join(pieces) == DATA[:100]
    assert fetcher.fake.ranges == ["bytes=0-99", "bytes=40-99"]


def test_a_403_is_not_retried():
    fetcher = ScriptedFetcher([(403, None, b"")])
    with pytest.raises(OSError) as info:
        fetcher.fetch("http://store/k", 0, 10)
    assert info.value.errno == errno.EACCES
