"""Lookahead for numbered names: resolve the names a reader will open next.

A folder of numbered files (``contour/0.npy``, ``1.npy``, ...) is read in loops: a
program opens 0, 1, 2, ..., or every tenth, or counts down.  Finding each name costs
round trips of its own (``hdf5.group_index``), so a loop that asks for one name at a
time waits for all of them in turn.  Like file readahead, this claims the names ahead
of such a reader, so that they are found together, in waves, while it reads.  The
algorithm, once:

- Each number opened is compared with the one before: the same step (not 0) as the
  pair before continues the *run*; any other step starts a new run with that step.
- Once a run has ``min_steps`` equal steps, the numbers up to ``first_window`` steps
  past the one opened are claimed (within the folder: 0 to ``count - 1``).
- Later opens of the run claim again once the reader has come within half a window
  of the end of what is claimed: the window then doubles, up to ``max_window``, and
  the numbers up to a window past the one opened are claimed.  So a run costs one
  walk of the index per half window at least, not one per open; while the reader
  works through one claim the next is on its way; and a loop that stops leaves at
  most a window of names claimed that it never opens.
- When a claim's names have been found and the run still holds, the next window is
  claimed at once if less than a window is claimed ahead of the last number opened:
  the next walk of the index then overlaps the reader's work on this one instead of
  starting when the reader is half-way through it.
- A number off the run (a random walk, a second reader in the same folder) ends the
  run: nothing more is claimed until a new run has ``min_steps`` steps, so random
  access never looks ahead.

What a claim costs is bounded by the window: at most ``max_window`` names, and their
bytes (a few KiB each for a contour), are on their way ahead of one reader.
"""
from __future__ import annotations

import dataclasses
import threading


@dataclasses.dataclass(frozen=True)
class NameLookaheadConfig:
    #: equal steps in a row before looking ahead: 2 (three numbers) makes a false start
    #: of a random walk rare, and costs a loop two lookups made one at a time
    min_steps: int = 2
    #: names claimed at the first claim of a run: enough to fill a wave of requests
    first_window: int = 32
    #: names claimed at a time at most.  In a 220,000-contour group a name in loop order
    #: costs about two requests (a leaf of the index and a symbol node): 128 names are
    #: about 250 requests, enough to keep 24 in flight for ten round trips, and a loop
    #: that stops wastes at most that (256 made a loop from event 0 0.2-0.3 s slower:
    #: the requests it wasted at the end competed with the ones it needed)
    max_window: int = 128


class NameLookahead:
    """The run and window of one folder's readers (see the module doc)."""

    def __init__(self, count: int, config: NameLookaheadConfig = NameLookaheadConfig()) -> None:
        self.count = count
        self.config = config
        self._lock = threading.Lock()
        self._last: int | None = None
        self._step = 0
        self._steps = 0  # equal steps in a row
        self._window = 0
        self._claimed_to: int | None = None  # the last number claimed of this run

    def opened(self, number: int) -> list[int]:
        """The numbers to find now, given that ``number`` was opened; updates the run."""
        with self._lock:
            step = 0 if self._last is None else number - self._last
            self._last = number
            if step != 0 and step == self._step:
                self._steps += 1
            else:
                self._step, self._steps = step, 1 if step else 0
                self._window, self._claimed_to = 0, None
            return self._claim(self._window // 2 + 1)

    def found(self) -> list[int]:
        """The numbers to find now, given that a claim's names were found: while the
        run holds and less than a window is claimed ahead of the reader, the next
        window, so that its walk overlaps the reader's work on this one."""
        with self._lock:
            return self._claim(self._window)

    def _claim(self, ahead: int) -> list[int]:
        """A claim from the last number opened, unless ``ahead`` steps or more are
        claimed ahead of it already."""
        cfg, number, step = self.config, self._last, self._step
        if self._steps < cfg.min_steps or number is None:
            return []
        if self._claimed_to is not None and (self._claimed_to - number) // step >= ahead:
            return []  # well ahead still
        self._window = (cfg.first_window if self._claimed_to is None
                        else min(2 * self._window, cfg.max_window))
        last = number + self._window * step
        last = min(last, self.count - 1) if step > 0 else max(last, 0)
        begin = number + step
        if self._claimed_to is not None:  # what is claimed already, unless passed
            begin = (max if step > 0 else min)(begin, self._claimed_to + step)
        due = (last - begin) // step + 1
        if due <= 0:
            return []  # the folder's end is claimed
        self._claimed_to = begin + (due - 1) * step
        return [begin + i * step for i in range(due)]
