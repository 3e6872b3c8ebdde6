"""Readahead for whole files read front to back (``md5sum``, ``cp``, ``dcorfs prefetch``).

The kernel hands a FUSE file system reads of 128 KiB, so a reader that streams a
multi-GB original would otherwise cost one request, and one round trip, per 128 KiB:
a fifth of a 50 MB/s link at 20 ms.  The algorithm, once:

- A read that starts within ``StreamConfig.slack`` of where the previous one ended is
  sequential (the kernel may run a few reads of one stream in parallel, out of order).
  Any other read ends the streak: random access (h5py reading a file's metadata) never
  fetches ahead.
- Each sequential read doubles the window, from ``first_window`` up to ``max_window``,
  and keeps the bytes up to ``window`` past the read's end claimed and on their way, in
  requests of ``piece`` bytes: a few requests in flight keep the link busy through each
  round trip, and each piece's blocks are handed to the reader as they arrive.
- New pieces are started only once a whole piece is due, so a streak costs one request
  per ``piece``, not one per read.

Memory stays bounded: fetched blocks go to the block cache (LRU, ``--cache-size``), and
at most ``max_window`` bytes per stream are ahead of its reader.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Protocol

MiB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    #: bytes fetched ahead after the second sequential read
    first_window: int = 4 * MiB
    #: the most bytes fetched ahead of one sequential reader: a few times the link's
    #: bandwidth-delay product, and a few requests in flight
    max_window: int = 32 * MiB
    #: bytes per request: long enough to fill the link, short enough to arrive in time
    piece: int = 4 * MiB
    #: how far from the last read's end a read may start and still be sequential
    slack: int = 1 * MiB


class Prefetchable(Protocol):
    size: int

    def prefetch(self, start: int, stop: int) -> None: ...


class SequentialReadahead:
    """The readahead state of one open file's stream (see the module doc)."""

    def __init__(self, obj: Prefetchable, config: StreamConfig = StreamConfig()) -> None:
        self.obj = obj
        self.config = config
        self._lock = threading.Lock()
        self._next: int | None = None  # where a sequential reader reads next
        self._window = 0
        self._ahead = 0  # the end of what was claimed ahead

    def plan(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The pieces to fetch ahead, given a read of ``[start, stop)``; updates the state."""
        cfg = self.config
        size = self.obj.size
        with self._lock:
            sequential = self._next is not None and abs(start - self._next) <= cfg.slack
            self._next = max(stop, self._next or 0) if sequential else stop
            if not sequential:
                self._window = 0
                self._ahead = stop
                return []
            self._window = min(max(2 * self._window, cfg.first_window), cfg.max_window)
            target = min(self._next + self._window, size)
            begin = max(self._ahead, self._next)
            if target < size:  # whole pieces only, but the file's last one
                target = begin + (target - begin) // cfg.piece * cfg.piece
            if begin >= target:
                return []
            self._ahead = target
        return [(p, min(p + cfg.piece, target)) for p in range(begin, target, cfg.piece)]

    def before_read(self, start: int, stop: int) -> None:
        for piece_start, piece_stop in self.plan(start, stop):
            self.obj.prefetch(piece_start, piece_stop)
