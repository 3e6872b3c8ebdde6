"""Work done once per key at a time, however many threads ask for it at once.

The kernel reads a file in parallel pieces, so several readers often need the same
decoded chunk or formatted block at the same moment.  The first one does the work; the
others wait for it and take its result (``lookup``), instead of doing it again.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import TypeVar

from . import deadline

T = TypeVar("T")


class SingleFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, threading.Event] = {}

    def do(self, key: Hashable, lookup: Callable[[], "T | None"], produce: Callable[[], T]) -> T:
        """``lookup()`` if it finds the result, else ``produce()`` (which keeps it where
        ``lookup`` finds it), done by one caller per key at a time.  A caller that
        waited and still finds nothing (the producer failed) produces it itself."""
        found = lookup()
        if found is not None:
            return found
        with self._lock:
            event = self._running.get(key)
            owner = event is None
            if owner:
                event = self._running[key] = threading.Event()
        if not owner:
            deadline.wait(event)
            found = lookup()
            if found is not None:
                return found
        try:
            return produce()
        finally:
            if owner:
                with self._lock:
                    self._running.pop(key, None)
                event.set()
