"""How the local server counts the round trips a client waited for."""
from __future__ import annotations

from dcorfs.server.app import round_trips


def test_round_trips_count_waits_not_requests():
    assert round_trips([]) == 0
    parallel = [(0.0, 1.0), (0.1, 1.2), (0.2, 0.9)]
    assert round_trips(parallel) == 1
    # a second wave that starts once the first answered, then a third after that
    assert round_trips(parallel + [(1.3, 2.0), (1.3, 2.5), (2.6, 3.0)]) == 3
    # a request sent while another is still open does not wait for it
    assert round_trips([(0.0, 2.0), (1.0, 1.5), (1.6, 1.8)]) == 2
