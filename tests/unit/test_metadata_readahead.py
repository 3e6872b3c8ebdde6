"""The metadata readahead policy on its own: misses in, byte ranges out."""
from __future__ import annotations

from dcorfs.hdf5.metadata_readahead import MetadataReadahead, MetadataReadaheadConfig


def test_opening_a_feature_fetches_only_what_it_reads():
    policy = MetadataReadahead()
    # a file's open: head, tail, a group table, a header and a chunk index, far apart
    for start in (0, 900_000_000, 450_000, 120_000_000, 121_500_000):
        assert policy.on_miss(start, start + 512) == (start, start + 512)


def test_clustered_misses_widen_the_window_up_to_its_most():
    cfg = MetadataReadaheadConfig()
    policy = MetadataReadahead(cfg)
    fetched = [policy.on_miss(start, start + 300) for start in range(10_000, 10_000 + 40 * 4000, 4000)]
    widths = [stop - start for start, stop in fetched]
    assert widths[:cfg.clustered_before] == [300] * cfg.clustered_before
    assert widths[cfg.clustered_before] == cfg.first_window
    assert max(widths) == cfg.max_window and widths == sorted(widths)


def test_a_far_miss_resets_the_window():
    cfg = MetadataReadaheadConfig()
    policy = MetadataReadahead(cfg)
    for start in range(0, 10 * 4000, 4000):
        policy.on_miss(start, start + 100)
    assert policy.on_miss(10**9, 10**9 + 100) == (10**9, 10**9 + 100)
    assert policy.on_miss(10**9 + 4000, 10**9 + 4100) == (10**9 + 4000, 10**9 + 4100)
