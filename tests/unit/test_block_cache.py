"""The block cache on its own, with fake fetch functions (fsspec's test_caches is the model)."""
from __future__ import annotations

import errno
import threading
import time

import pytest

from dcorfs.io.block_cache import BlockCache


def test_block_cache_coalesces_and_never_fetches_twice():
    data = bytes(range(256)) * 4096  # 1 MiB
    calls: list[tuple[int, int]] = []
    lock = threading.Lock()

    def fetch(start: int, stop: int) -> bytes:
        with lock:
            calls.append((start, stop))
        time.sleep(0.01)
        return data[start:stop]

    cache = BlockCache(max_bytes=4 << 20, block_size=64 * 1024)
    assert cache.read("k", 100, 200_000, len(data), fetch) == data[100:200_000]
    assert calls == [(0, 4 * 65536)]  # four blocks, one request
    threads = [threading.Thread(target=lambda o=o: cache.read("k", o, o + 300_000, len(data), fetch))
               for o in (250_000, 260_000, 270_000, 280_000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fetched = [b for s, e in calls for b in range(s // 65536, -(-e // 65536))]
    assert len(fetched) == len(set(fetched))  # no block twice, even under concurrency
    assert cache.read("k", len(data) - 10, len(data) + 100, len(data), fetch) == data[-10:]


def test_claimed_blocks_are_waited_for_and_served_as_they_arrive():
    data = bytes(range(256)) * 4096
    bs = 64 * 1024
    streamed: list[tuple[int, int]] = []
    fetched: list[tuple[int, int]] = []
    first_read_done = threading.Event()
    served_before_the_end: list[bool] = []

    def fetch(start: int, stop: int) -> bytes:
        fetched.append((start, stop))
        return data[start:stop]

    def fetch_into(start: int, stop: int, sink) -> None:
        streamed.append((start, stop))
        for at in range(start, stop, bs // 2):  # a slow stream, half a block at a time
            if at == stop - bs // 2:
                served_before_the_end.append(first_read_done.wait(5))
            sink(data[at:at + bs // 2])
            time.sleep(0.01)

    cache = BlockCache(max_bytes=4 << 20, block_size=bs)
    runs = cache.claim("k", bs, 4 * bs)  # as the probe claims a file's head
    filler = threading.Thread(target=cache.fill, args=("k", runs, fetch_into))
    filler.start()
    assert cache.read("k", 70_000, 100_000, len(data), fetch) == data[70_000:100_000]
    first_read_done.set()
    filler.join()
    assert cache.read("k", 70_000, 4 * bs, len(data), fetch) == data[70_000:4 * bs]
    assert streamed == [(bs, 4 * bs)] and fetched == []
    assert served_before_the_end == [True]  # the first block was not held back for the last

    def broken(start: int, stop: int, sink) -> None:
        sink(data[start:start + bs])
        raise OSError(errno.EIO, "store unreachable")

    runs = cache.claim("k2", 0, 3 * bs)
    with pytest.raises(OSError):
        cache.fill("k2", runs, broken)
    # the block that arrived is kept, the claims of the others were released
    assert cache.read("k2", 0, 3 * bs, len(data), fetch) == data[:3 * bs]
    assert fetched == [(bs, 3 * bs)]


def test_block_cache_is_bounded():
    cache = BlockCache(max_bytes=256 * 1024, block_size=64 * 1024)
    blob = b"x" * (1 << 20)
    cache.read("k", 0, len(blob), len(blob), lambda s, e: blob[s:e])
    assert cache.current_bytes <= 256 * 1024
