"""The readahead policy as pure functions: made-up datasets, no network, no lock."""
from __future__ import annotations

import random

import pytest

from dcorfs.hdf5 import readahead
from dcorfs.hdf5.readahead import (AHEAD, FIRST, JUMP, NEAR, Geometry, ReadaheadConfig,
                                   ReadState, back_to_back_runs, group_size, plan_read,
                                   sweep_due, with_groups)

MiB = 1024 ** 2
# 5,000 images of 80x250 in chunks of 52 images (1 MiB), compressed to 0.2 MiB each
IMAGES = Geometry(nrows=5000, rows_per_chunk=52, row_bytes=20_000, nchunks=97,
                  stored_bytes=97 * 200_000)
# one scalar feature of 300,000 float64 events in chunks of 131,072 rows
SCALAR = Geometry(nrows=300_000, rows_per_chunk=131_072, row_bytes=8, nchunks=3,
                  stored_bytes=2_000_000)


def test_a_small_dataset_is_fetched_whole_on_its_first_read():
    plan = plan_read(ReadState(), SCALAR, 0, 100)
    assert plan.relation == FIRST and plan.ahead == [1, 2]
    assert plan.state.ahead_until == SCALAR.nchunks


def test_a_first_read_at_row_0_brings_what_the_kernel_will_read_next():
    config = ReadaheadConfig()
    plan = plan_read(ReadState(), IMAGES, 0, 7, config)
    rows = config.kernel_first_readahead_bytes // IMAGES.row_bytes  # 58 images
    assert plan.relation == FIRST
    assert plan.ahead == list(range(1, -(-rows // IMAGES.rows_per_chunk)))


def test_sequential_reads_open_a_window_that_doubles_up_to_the_limit():
    config = ReadaheadConfig(first_window=4, max_window=16)
    state = plan_read(ReadState(), IMAGES, 0, 7, config).state
    relations, windows = [], []
    row = 7
    step = 128 * 1024 // IMAGES.row_bytes  # the kernel reads 128 KiB at a time
    while row < IMAGES.nrows - step:
        plan = plan_read(state, IMAGES, row, row + step, config)
        state, row = plan.state, row + step
        relations.append(plan.relation)
        windows.append(state.window)
    streak = config.streak_bytes // IMAGES.row_bytes
    first_ahead = relations.index(AHEAD)
    assert set(relations[:first_ahead]) == {NEAR}  # no window before the streak
    assert first_ahead * step >= streak - 2 * step
    assert windows[first_ahead:first_ahead + 3] == [4, 8, 16]
    assert max(windows) == 16 and JUMP not in relations


def test_window_chunks_are_asked_for_once():
    state = ReadState(next_row=0)
    asked: list[int] = []
    for r0 in range(0, IMAGES.nrows - 100, 100):
        plan = plan_read(state, IMAGES, r0, r0 + 100)
        state = plan.state
        asked += plan.ahead
    assert len(asked) == len(set(asked)) and max(asked) < IMAGES.nchunks


def test_a_jump_resets_the_run():
    state = ReadState(next_row=3000, streak_start=1000, window=16, ahead_until=80)
    slack = readahead.DEFAULT.streak_bytes // IMAGES.row_bytes
    # anywhere within the run, give or take the kernel's parallel reads, is sequential
    assert plan_read(state, IMAGES, 1000 - slack, 1001 - slack).relation != JUMP
    assert plan_read(state, IMAGES, 3000 + slack, 3001 + slack).relation != JUMP
    plan = plan_read(state, IMAGES, 3001 + slack, 3002 + slack)
    assert plan.relation == JUMP and plan.ahead == []
    assert plan.state == ReadState(next_row=3002 + slack, streak_start=3001 + slack)


def test_page_faults_of_one_mmapped_image_do_not_start_readahead():
    """The kernel turns one page fault into a few consecutive reads."""
    state = plan_read(ReadState(next_row=5, streak_start=0), IMAGES, 2000, 2001).state
    for r0 in range(2001, 2008):
        plan = plan_read(state, IMAGES, r0, r0 + 1)
        state = plan.state
        assert plan.relation == NEAR and plan.ahead == []


@pytest.mark.parametrize("seed", range(20))
def test_plans_stay_inside_the_dataset(seed):
    rng = random.Random(seed)
    geo = Geometry(nrows=rng.randrange(1, 100_000), rows_per_chunk=rng.randrange(1, 2000),
                   row_bytes=rng.randrange(1, 100_000), nchunks=0, stored_bytes=0)
    geo = Geometry(geo.nrows, geo.rows_per_chunk, geo.row_bytes,
                   -(-geo.nrows // geo.rows_per_chunk), rng.randrange(1, 10 ** 9))
    state = ReadState()
    for _ in range(200):
        r0 = rng.randrange(0, geo.nrows)
        r1 = min(geo.nrows, r0 + rng.randrange(1, 500))
        plan = plan_read(state, geo, r0, r1)
        state = plan.state
        assert all(0 <= c < geo.nchunks for c in plan.ahead)
        assert (r1 - 1) // geo.rows_per_chunk not in plan.ahead
        assert plan.state.window <= readahead.DEFAULT.max_window


def test_groups_hold_at_least_the_minimum_fetch_on_average():
    group = group_size(IMAGES.stored_bytes, IMAGES.nchunks)
    assert group == 6  # 1 MiB / 0.2 MB per chunk, rounded up
    assert group * 200_000 >= MiB
    assert group_size(0, 10) == 1 and group_size(10 ** 9, 10) == 1
    assert with_groups([7], 6, 97) == [6, 7, 8, 9, 10, 11]
    assert with_groups([95, 0, 96], 6, 97) == [0, 1, 2, 3, 4, 5, 90, 91, 92, 93, 94, 95, 96]


def test_the_bulk_fetch_waits_for_a_quarter_of_the_groups_and_room_in_the_cache():
    assert not sweep_due(3, 8, 10 * MiB, 1024 * MiB)  # at least four groups
    assert sweep_due(4, 8, 10 * MiB, 1024 * MiB)
    assert not sweep_due(4, 17, 10 * MiB, 1024 * MiB)  # a quarter of 17 is more than 4
    assert sweep_due(5, 17, 10 * MiB, 1024 * MiB)
    assert not sweep_due(100, 100, 300 * MiB, 1024 * MiB)  # would evict itself


def test_back_to_back_chunks_share_a_request_up_to_the_limit():
    index = {0: (1000, 100), 1: (1100, 100), 2: (1200, 100), 3: (5000, 100), 5: (5100, 100)}
    assert back_to_back_runs(index, [2, 0, 1, 1]) == [(1000, 1300, 3)]
    assert back_to_back_runs(index, [0, 1, 2, 3, 4, 5]) == [(1000, 1300, 3), (5000, 5200, 2)]
    assert back_to_back_runs(index, [0, 1, 2], max_run_bytes=250) == [(1000, 1200, 2),
                                                                      (1200, 1300, 1)]
    assert back_to_back_runs(index, [4]) == []  # never written: nothing to fetch


def test_a_column_of_features_tsv_fetches_only_the_chunks_of_its_rows():
    """``head`` of the table reads a block or two of rows: no chunk beyond them, in any
    of the columns, until a long sequential run opens the window ahead."""
    column = Geometry(nrows=300_000, rows_per_chunk=16_384, row_bytes=8, nchunks=19,
                      stored_bytes=19 * 60_000)
    first = plan_read(ReadState(), column, 0, 1024, readahead.COLUMN)
    assert first.relation == FIRST and first.ahead == []
    near = plan_read(first.state, column, 1024, 2048, readahead.COLUMN)
    assert near.relation == NEAR and near.ahead == []
    assert group_size(column.stored_bytes, column.nchunks, readahead.COLUMN) == 1
    assert group_size(column.stored_bytes, column.nchunks) > 1  # the default groups them
    state, fetched = near.state, set()
    for r0 in range(2048, 300_000, 1024):  # a whole read does open the window
        plan = plan_read(state, column, r0, r0 + 1024, readahead.COLUMN)
        state, fetched = plan.state, fetched | set(plan.ahead)
    assert fetched and max(fetched) == column.nchunks - 1
