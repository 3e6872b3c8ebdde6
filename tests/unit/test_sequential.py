"""The sequential readahead policy on its own: a fake object records what is fetched."""
from __future__ import annotations

import random

from dcorfs.io.sequential import MiB, SequentialReadahead, StreamConfig

READ = 128 * 1024  # what the kernel hands a FUSE file system at a time


class Recorder:
    def __init__(self, size: int) -> None:
        self.size = size
        self.fetched: list[tuple[int, int]] = []

    def prefetch(self, start: int, stop: int) -> None:
        self.fetched.append((start, stop))


def test_a_front_to_back_reader_is_fetched_ahead_in_whole_pieces():
    obj = Recorder(200 * MiB + 12345)
    stream = SequentialReadahead(obj)
    cfg = stream.config
    for offset in range(0, obj.size, READ):
        stream.before_read(offset, min(offset + READ, obj.size))
        # what the reader needs next is always claimed already, up to the window
        ahead = max((stop for _, stop in obj.fetched), default=0)
        if offset > READ:
            assert ahead >= min(offset + READ + cfg.first_window - cfg.piece, obj.size)
            assert ahead <= offset + READ + cfg.max_window
    pieces = sorted(obj.fetched)
    assert all(stop - start <= cfg.piece for start, stop in pieces)
    assert pieces[0][0] == 2 * READ  # nothing before the streak began
    assert pieces[-1][1] == obj.size
    for (_, stop), (start, _) in zip(pieces, pieces[1:]):
        assert start == stop  # no byte twice, no gap
    assert len(pieces) <= obj.size // cfg.piece + 2  # a request per piece, not per read


def test_random_reads_never_fetch_ahead():
    obj = Recorder(1 << 34)
    stream = SequentialReadahead(obj)
    rng = random.Random(3)
    for _ in range(1000):
        offset = rng.randrange(0, obj.size - READ)
        stream.before_read(offset, offset + READ)
    assert obj.fetched == [] or len(obj.fetched) <= 2  # a rare pair of near reads at most


def test_parallel_reads_out_of_order_stay_sequential():
    obj = Recorder(64 * MiB)
    stream = SequentialReadahead(obj, StreamConfig())
    for base in range(0, 32 * MiB, 4 * READ):
        for offset in (base + READ, base, base + 3 * READ, base + 2 * READ):
            stream.before_read(offset, offset + READ)
    assert max(stop for _, stop in obj.fetched) == 64 * MiB
