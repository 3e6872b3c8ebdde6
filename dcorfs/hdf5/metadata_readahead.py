"""Readahead for h5py's own reads of a file's metadata (group indexes, object headers,
chunk indexes), which it makes one small read at a time, each waiting for the last.

Opening a feature costs a few such reads; walking many small datasets (a large
measurement's ``contour/``, each contour a dataset of its own with its header, its
chunk index and its chunk) costs several per dataset.  dclab's writer puts those of
consecutive events next to each other, so the misses of such a walk cluster; the
group index nodes it also needs sit elsewhere.  The algorithm, once:

- Misses form *streams*: a miss after the last miss of one of the ``streams``
  remembered, and within ``near`` bytes after it or after what the stream fetched,
  continues that stream; any other miss starts a new one
  (the least recently continued is forgotten).  A miss elsewhere (an index node)
  so never ends the walk's stream.
- After ``clustered_before`` misses in a row continue a stream, each further one
  fetches ``window`` bytes from where it starts instead of its own blocks; the window
  doubles with every such miss, from ``first_window`` up to ``max_window`` (a round
  trip at 20 ms and 50 MB/s is worth a MiB of transfer).
- A read that finds its bytes cached costs nothing, except in the second half of
  what a stream fetched last: then the next window is fetched in the background (the
  stream's end moves on, so once per window), and a walk finds its bytes there instead
  of waiting a round trip at each window's end.
- Opening one feature (misses far apart, or a few near ones) so never fetches more
  than it reads.

A miss's fetch is one request, whose blocks the reader waits for like any claimed
blocks; a fetch ahead is waited for by nobody.
"""
from __future__ import annotations

import dataclasses
import threading

KiB, MiB = 1024, 1024 ** 2


@dataclasses.dataclass(frozen=True)
class MetadataReadaheadConfig:
    #: bytes after a stream's last miss (or its last fetch) within which a miss
    #: continues the stream
    near: int = 2 * MiB
    #: streams remembered
    streams: int = 8
    #: misses in a row continuing a stream before its window opens: opening a feature
    #: makes one or two, and should not fetch more than it reads
    clustered_before: int = 3
    #: the first window, and the most, in bytes
    first_window: int = 256 * KiB
    max_window: int = 2 * MiB


@dataclasses.dataclass
class _Stream:
    last: int  # where its last miss started
    streak: int = 0  # misses in a row that continued it
    window: int = 0  # bytes its last window fetched, 0 before it opens
    end: int = 0  # where its last window (or fetch ahead) ends


class MetadataReadahead:
    """The state of one file's metadata readahead (see the module doc)."""

    def __init__(self, config: MetadataReadaheadConfig = MetadataReadaheadConfig()) -> None:
        self.config = config
        self._streams: list[_Stream] = []  # most recently continued last
        self._lock = threading.Lock()

    def on_miss(self, start: int, stop: int) -> tuple[int, int]:
        """The bytes to fetch for a read of ``[start, stop)`` that missed the cache."""
        cfg = self.config
        with self._lock:
            stream = next((s for s in reversed(self._streams)
                           if s.last <= start <= max(s.last, s.end) + cfg.near), None)
            if stream is None:
                self._streams.append(_Stream(last=start, end=stop))
                del self._streams[:-cfg.streams]
                return start, stop
            self._streams.remove(stream)
            self._streams.append(stream)
            stream.last = start
            stream.streak += 1
            if stream.streak < cfg.clustered_before:
                stream.end = max(stream.end, stop)
                return start, stop
            stream.window = min(max(2 * stream.window, cfg.first_window), cfg.max_window)
            stream.end = max(stop, start + stream.window)
            return start, stream.end

    def on_hit(self, start: int) -> tuple[int, int] | None:
        """The bytes to fetch in the background after a read at ``start`` found its
        bytes cached, or None: the next window once a read is in the second half of
        a stream's last one."""
        with self._lock:
            for stream in reversed(self._streams):
                if stream.window and stream.end - stream.window // 2 <= start < stream.end:
                    ahead = (stream.end, stream.end + stream.window)
                    stream.end = ahead[1]
                    return ahead
        return None
