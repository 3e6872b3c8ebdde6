"""The per-operation deadline."""
from __future__ import annotations

import errno
import threading
import time

import pytest

from dcorfs.io import deadline


def test_deadline_bounds_waits():
    event = threading.Event()
    started = time.monotonic()
    with deadline.deadline(0.3):
        with pytest.raises(OSError) as info:
            deadline.wait(event)
    assert info.value.errno == errno.EIO
    assert time.monotonic() - started < 2
    with deadline.deadline(5):
        assert deadline.remaining(30) <= 5
    assert deadline.remaining(30) == 30  # none outside an operation
