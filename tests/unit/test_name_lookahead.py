"""Lookahead for numbered names (``io.name_lookahead``): runs claim growing windows,
anything else claims nothing."""
from __future__ import annotations

import random

import pytest

from dcorfs.io.name_lookahead import NameLookahead, NameLookaheadConfig

CONFIG = NameLookaheadConfig(min_steps=2, first_window=8, max_window=64)


def walk(numbers, count=10_000, config=CONFIG):
    """Every claim made while ``numbers`` are opened, as (opened, claimed)."""
    lookahead = NameLookahead(count, config)
    return [(n, lookahead.opened(n)) for n in numbers]


@pytest.mark.parametrize("start, step", [(0, 1), (500, 1), (9_999, -1), (30, 7), (9_000, -13)])
def test_a_run_claims_every_number_ahead_once_in_its_order(start, step):
    numbers = list(range(start, start + 400 * step, step))
    numbers = [n for n in numbers if 0 <= n < 10_000]
    claims = walk(numbers)
    claimed = [c for _, got in claims for c in got]
    assert len(claimed) == len(set(claimed))  # none twice
    assert claimed == sorted(claimed, reverse=step < 0)  # in the reader's order
    # all but the first min_steps opens find their number claimed before they open it
    when = {c: i for i, (_, got) in enumerate(claims) for c in got}
    for i, n in enumerate(numbers[CONFIG.min_steps + 1:], CONFIG.min_steps + 1):
        assert when[n] < i, n
    # never more than a window past the reader, and within the folder
    for i, (n, got) in enumerate(claims):
        assert all(abs(c - n) <= CONFIG.max_window * abs(step) for c in got)
        assert all(0 <= c < 10_000 for c in got)


def test_the_window_grows_then_stays_at_its_most():
    sizes = [len(got) for _, got in walk(range(2_000)) if got]
    assert sizes[0] == CONFIG.first_window
    assert max(sizes) <= CONFIG.max_window and sizes[1] > sizes[0]


def test_random_access_and_a_broken_run_claim_nothing_more():
    rng = random.Random(3)
    assert all(not got for _, got in walk([rng.randrange(10_000) for _ in range(2_000)]))
    claims = walk(list(range(100)) + [rng.randrange(10_000) for _ in range(500)])
    assert all(not got for _, got in claims[101:])  # the run ended at its first jump
    assert all(not got for _, got in walk([5] * 50))  # the same number again is no run


def test_claims_stop_at_the_folders_ends():
    forward = [c for _, got in walk(range(90, 100), count=100) for c in got]
    assert forward == list(range(93, 100))
    backward = [c for _, got in walk(range(9, -1, -1), count=100) for c in got]
    assert backward == list(range(6, -1, -1))


def test_found_claims_the_next_window_while_the_reader_is_inside_this_one():
    lookahead = NameLookahead(10_000, CONFIG)
    for n in range(3):
        first = lookahead.opened(n)
    assert first == list(range(3, 3 + CONFIG.first_window))
    assert lookahead.found() == []  # a whole window is on its way
    assert lookahead.opened(3) == []  # the reader moves into it
    second = lookahead.found()  # less than a window ahead of it: claim on
    assert second[0] == first[-1] + 1
    assert lookahead.found() == []  # two windows ahead: enough
    rng = random.Random(1)
    lookahead.opened(rng.randrange(5_000, 10_000))  # a jump ends the run
    assert lookahead.found() == []
