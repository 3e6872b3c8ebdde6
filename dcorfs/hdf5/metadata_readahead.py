"""Readahead for h5py's own reads of a file's metadata (group indexes, object headers,
chunk indexes), which it makes one small read at a time, each waiting for the last.

Opening a feature costs a few such reads; walking many small datasets (a large
measurement's ``contour/``, each contour a dataset of its own with its header, its
chunk index and its chunk) costs several per dataset.  dclab's writer puts those of
consecutive events next to each other, so the misses of such a walk cluster: the
algorithm, once:

- A read that finds its bytes cached costs nothing and changes nothing.
- A miss is *clustered* when it lies within ``near`` bytes after one of the last
  ``remembered`` misses.  After ``clustered_before`` clustered misses in a row, each
  further one fetches ``window`` bytes from where it starts instead of its own blocks;
  the window doubles with every clustered miss, from ``first_window`` up to
  ``max_window`` (a round trip at 20 ms and 50 MB/s is worth a MiB of transfer).
- Any other miss resets the window.  Opening one feature (misses far apart, or a few
  near ones) so never fetches more than it reads.

The fetch is one request, whose blocks the reader waits for like any claimed blocks.
"""
from __future__ import annotations

import collections
import dataclasses
import threading

KiB, MiB = 1024, 1024 ** 2


@dataclasses.dataclass(frozen=True)
class MetadataReadaheadConfig:
    #: bytes after an earlier miss within which a miss counts as clustered
    near: int = 2 * MiB
    #: misses remembered for that comparison
    remembered: int = 8
    #: clustered misses in a row before the window opens: opening a feature makes one
    #: or two, and should not fetch more than it reads
    clustered_before: int = 3
    #: the first window, and the most, in bytes
    first_window: int = 256 * KiB
    max_window: int = 2 * MiB


class MetadataReadahead:
    """The state of one file's metadata readahead (see the module doc)."""

    def __init__(self, config: MetadataReadaheadConfig = MetadataReadaheadConfig()) -> None:
        self.config = config
        self._misses: collections.deque[int] = collections.deque(maxlen=config.remembered)
        self._streak = 0
        self._window = 0
        self._lock = threading.Lock()

    def on_miss(self, start: int, stop: int) -> tuple[int, int]:
        """The bytes to fetch for a read of ``[start, stop)`` that missed the cache."""
        cfg = self.config
        with self._lock:
            clustered = any(0 <= start - miss <= cfg.near for miss in self._misses)
            self._misses.append(start)
            if not clustered:
                self._streak = 0
                self._window = 0
                return start, stop
            self._streak += 1
            if self._streak < cfg.clustered_before:
                return start, stop
            self._window = min(max(2 * self._window, cfg.first_window), cfg.max_window)
            return start, max(stop, start + self._window)
