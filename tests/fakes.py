"""Fakes for unit tests of the network layer: a fetcher whose GETs answer from a script."""
from __future__ import annotations

from dcorfs.io.range_fetch import RangeFetcher


class FakeResponse:
    """An answer as urllib3 gives it, its body not read yet."""

    def __init__(self, status: int, headers: dict, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self._body = body

    def read(self, n: int) -> bytes:
        piece, self._body = self._body[:n], self._body[n:]
        return piece

    read1 = read

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class FakeSession:
    """Answers from a script: one (status, Content-Range, body) per request."""

    def __init__(self, answers: list) -> None:
        self.answers = list(answers)
        self.ranges: list[str] = []
        self.urls: list[str] = []

    def get(self, url, headers, **kwargs):
        self.ranges.append(headers["Range"])
        self.urls.append(url)
        if isinstance(self.answers[0], Exception):
            raise self.answers.pop(0)
        status, content_range, body = self.answers.pop(0)
        return FakeResponse(status, {"Content-Range": content_range} if content_range else {},
                            body)


class ScriptedFetcher(RangeFetcher):
    def __init__(self, answers: list, retries: int = 3, **kwargs) -> None:
        super().__init__(timeout=5, retries=retries, backoff=0.001, **kwargs)
        self.fake = FakeSession(answers)

    def _get(self, url, headers, timeout):  # type: ignore[override]
        return self.fake.get(url, headers, timeout=timeout)
