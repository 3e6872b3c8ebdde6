"""A deadline per filesystem operation, so no read can hang a user's process.

The FUSE layer opens a deadline for every operation; everything below that waits
(HTTP attempts, backoff sleeps, waiting for another reader's fetch) asks how much
time is left and gives up with EIO when none is.  Work handed to the thread pool
carries the deadline of the operation that asked for it.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_local = threading.local()


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Run the block with at most ``seconds`` for everything that waits inside it."""
    previous = getattr(_local, "at", None)
    _local.at = None if seconds is None else time.monotonic() + seconds
    if previous is not None and _local.at is not None:
        _local.at = min(previous, _local.at)
    try:
        yield
    finally:
        _local.at = previous


def remaining(default: float) -> float:
    """Seconds left in the current operation (``default`` when none is set).

    Raises ``OSError(EIO)`` once the deadline has passed.
    """
    at = getattr(_local, "at", None)
    if at is None:
        return default
    left = at - time.monotonic()
    if left <= 0:
        raise OSError(errno.EIO, "operation deadline exceeded")
    return min(default, left)


def bind(func: Callable[..., T]) -> Callable[..., T]:
    """``func`` running under the caller's deadline, for another thread."""
    at = getattr(_local, "at", None)

    @functools.wraps(func)
    def wrapper(*args, **kwargs) -> T:
        previous = getattr(_local, "at", None)
        _local.at = at
        try:
            return func(*args, **kwargs)
        finally:
            _local.at = previous
    return wrapper


def wait(event: threading.Event, default: float = 3600.0) -> None:
    """Wait for ``event`` no longer than the deadline allows; EIO when it passes."""
    while not event.wait(timeout=min(1.0, remaining(default))):
        pass
