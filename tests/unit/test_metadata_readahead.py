"""The metadata readahead policy on its own: misses in, byte ranges out."""
from __future__ import annotations

from dcorfs.hdf5.metadata_readahead import MetadataReadahead, MetadataReadaheadConfig


def test_opening_a_feature_fetches_only_what_it_reads():
    policy = MetadataReadahead()
    # a file's open: head, tail, a group table, a header and a chunk index, far apart
    for start in (0, 900_000_000, 450_000, 120_000_000, 121_500_000):
        assert policy.on_miss(start, start + 512) == (start, start + 512)
        assert policy.on_hit(start + 100) is None


def test_clustered_misses_widen_the_window_up_to_its_most():
    cfg = MetadataReadaheadConfig()
    policy = MetadataReadahead(cfg)
    fetched = [policy.on_miss(start, start + 300) for start in range(10_000, 10_000 + 40 * 4000, 4000)]
    widths = [stop - start for start, stop in fetched]
    assert widths[:cfg.clustered_before] == [300] * cfg.clustered_before
    assert widths[cfg.clustered_before] == cfg.first_window
    assert max(widths) == cfg.max_window and widths == sorted(widths)


def test_a_far_miss_starts_its_own_stream_and_leaves_the_walk_alone():
    cfg = MetadataReadaheadConfig()
    policy = MetadataReadahead(cfg)
    for start in range(0, 10 * 4000, 4000):
        policy.on_miss(start, start + 100)
    # an index node elsewhere: fetched alone, twice
    assert policy.on_miss(10**9, 10**9 + 100) == (10**9, 10**9 + 100)
    assert policy.on_miss(10**9 + 4000, 10**9 + 4100) == (10**9 + 4000, 10**9 + 4100)
    # the walk goes on where it was, with its window
    start, stop = policy.on_miss(40_000 + 4000 * 200, 40_000 + 4000 * 200 + 100)
    assert stop - start > cfg.first_window


def test_a_walk_through_its_window_fetches_the_next_one_ahead_once():
    cfg = MetadataReadaheadConfig(first_window=64 * 1024, max_window=64 * 1024)
    policy = MetadataReadahead(cfg)
    for start in range(0, 4 * 1000, 1000):
        policy.on_miss(start, start + 100)
    # the last miss fetched [3000, 3000 + 64 KiB): reads in its first half fetch nothing
    assert policy.on_hit(3000 + 10_000) is None
    ahead = policy.on_hit(3000 + 40_000)
    assert ahead == (3000 + 65536, 3000 + 2 * 65536)
    assert policy.on_hit(3000 + 41_000) is None  # once
    # reads far ahead, in the second half of the fetch ahead, fetch the next
    assert policy.on_hit(ahead[0] + 40_000) == (ahead[1], ahead[1] + 65536)
    # a miss just past everything fetched continues the stream with its window
    start, stop = policy.on_miss(ahead[1] + 65536 + 500, ahead[1] + 65536 + 600)
    assert stop - start == cfg.max_window
