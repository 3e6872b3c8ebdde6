"""Scattered structures of a remote HDF5 file fetched in waves.

A walk through an HDF5 index learns at each step the addresses of the next step's
structures (B-tree nodes, symbol nodes, object headers), and those lie all over the
file.  A *wave* fetches one step's structures together: their spans are sorted, spans
at most ``WaveConfig.gap`` apart share a request (``coalesce``), and the requests run
at most ``parallel`` and ``in_flight`` bytes at a time, in the order of their
priority; each range is handed to the caller as it arrives, and what the caller
learns from it may add requests to the wave.  ``group_shapes`` (every member of a
group) and ``group_index`` (some members, by name) walk with it.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import heapq
from collections.abc import Callable, Iterable

KiB, MiB = 1024, 1024 ** 2

#: fetch ``[start, stop)`` of the file, uncached
Fetch = Callable[[int, int], bytes]
#: run a fetch on a thread that waits only for the network
Submit = Callable[..., concurrent.futures.Future]


@dataclasses.dataclass(frozen=True)
class WaveConfig:
    #: wanted structures at most this far apart are fetched in one request.  Within
    #: a run of dclab's contours they are a few KiB apart, and runs are MBs apart
    #: (image chunks between them); a round trip at 20 ms and 50 MB/s is worth 1 MB.
    gap: int = 256 * KiB
    #: a request's bytes at most (longer runs are split)
    max_request: int = 2 * MiB
    #: requests in flight at most: small ones (index nodes, stray headers) are
    #: latency-bound, and the mount keeps 24 connections to the store open
    parallel: int = 24
    #: bytes in flight at most, which bounds what is held at once: 16 MB fills a
    #: link of 20 ms x 50 MB/s (1 MB in flight) many times over
    in_flight: int = 16 * MiB


@dataclasses.dataclass
class Counts:
    """What a walk cost, for the log and the mount's status."""
    waves: int = 0
    requests: int = 0
    bytes: int = 0


def coalesce(spans: list[tuple[int, int]], gap: int, most: int) -> list[tuple[int, int]]:
    """Requests covering ``spans`` (sorted by start): spans at most ``gap`` apart
    share one, and none is longer than ``most`` unless one span alone is."""
    requests: list[list[int]] = []
    for start, stop in spans:
        if requests and start - requests[-1][1] <= gap and stop - requests[-1][0] <= most:
            requests[-1][1] = max(requests[-1][1], stop)
        else:
            requests.append([start, stop])
    return [(a, b) for a, b in requests]


#: a request of a wave: (priority, start, stop); lower priorities are sent first
Request = tuple[int, int, int]


def fetch_wave(requests: Iterable[Request], fetch: Fetch, submit: Submit, config: WaveConfig,
               counts: Counts, arrived: Callable[[int, bytes], Iterable[Request] | None]
               ) -> None:
    """Fetch ``requests``, lowest priority first, ``config.parallel`` and
    ``config.in_flight`` bytes at a time, handing each to ``arrived(start, data)`` on
    this thread as it comes; what ``arrived`` returns joins the wave (a walk that
    descends as nodes arrive, without waiting for the rest of their level).  The first
    failure is raised once the requests in flight have ended."""
    queue = list(requests)
    heapq.heapify(queue)
    running: dict[concurrent.futures.Future, tuple[int, int]] = {}
    counts.waves += 1
    failure: BaseException | None = None
    while True:
        while failure is None and queue and len(running) < config.parallel and (
                not running or sum(b - a for a, b in running.values())
                + queue[0][2] - queue[0][1] <= config.in_flight):
            _, start, stop = heapq.heappop(queue)
            running[submit(fetch, start, stop)] = (start, stop)
            counts.requests += 1
        if not running:
            if failure is not None:
                raise failure
            return
        done, _ = concurrent.futures.wait(running,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
            start = running.pop(future)[0]
            try:
                data = future.result()
                counts.bytes += len(data)
                if failure is None:
                    for request in arrived(start, data) or ():
                        heapq.heappush(queue, request)
            except Exception as exc:  # kept until the others end: none is left running
                failure = failure or exc
