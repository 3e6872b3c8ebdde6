"""What to fetch for a read of rows: the readahead and chunk-group policy, as pure functions.

h5py gives us a dataset's chunk index; ``ChunkedRows`` asks these functions which
chunks to fetch besides the ones a read needs, and in which requests.  They touch
no network and no lock, so they are tested with made-up geometries
(``tests/unit/test_readahead.py``).  The algorithm, once:

1. **Small datasets.**  The first read of a dataset whose compressed chunks add up
   to at most ``small_dataset_bytes`` fetches every chunk at once, in parallel: a
   scalar feature is almost always read whole (``np.load``).
2. **A first read at row 0** fetches, with its own chunks, those covering
   ``kernel_first_readahead_bytes``: after a read at offset 0 the kernel reads about
   a MiB ahead at once (``np.load``, or numpy reading the header before it maps the
   file), and those reads should not cost a second round trip.
3. **Sequential reads.**  A read that starts inside the current run of reads (the
   span from the run's first row to the next row expected, give or take the
   kernel's parallel readahead, ``streak_bytes`` of slack) continues it.  Once the
   run covers ``streak_bytes`` a window of chunks ahead is fetched in the
   background; the window starts at ``first_window`` chunks and doubles with every
   read, up to ``max_window``.  A run must be that long first because the kernel turns one page
   fault of a memory-mapped reader into a few consecutive reads, which must not
   start fetching chunks nobody asked for.
4. **Random reads** (any other read) fetch the aligned group of chunks around the
   one they touch: ``group_size`` chunks, at least ``min_fetch_bytes`` on average.
   A request much smaller than the link's bandwidth-delay product costs a round
   trip for little data (20 ms and 50 MB/s move 1 MB per round trip), and readers
   that pick rows at random come back for the neighbours.
5. **Bulk.**  Once random reads have touched ``sweep_share`` of a dataset's groups
   (and at least ``sweep_min_groups``), the rest of the dataset is fetched in bulk,
   ``sweep_streams`` requests at a time, if it fits in ``sweep_cache_share`` of the
   block cache (so that it does not evict itself): a reader that samples that
   widely wants most of it, and a few long requests move it at the link's speed.
6. **Requests.**  Chunks wanted at once that lie back to back in the file are
   fetched in one request of at most ``max_run_bytes`` (``back_to_back_runs``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

KiB, MiB = 1024, 1024 ** 2

# how a read relates to the reads before it
FIRST = "first"  # the first read: the chunks ahead are needed now, fetched with its own
AHEAD = "ahead"  # sequential: the window ahead is fetched in the background
NEAR = "near"    # sequential, but the run is too short for a window yet
JUMP = "jump"    # random


@dataclasses.dataclass(frozen=True)
class ReadaheadConfig:
    """Every tuning value of the policy, with its unit and why it has its value."""

    #: compressed bytes; a dataset up to this size is fetched whole on its first read.
    #: A scalar feature of 300,000 float64 events is 2.4 MB before compression.
    small_dataset_bytes: int = 8 * MiB
    #: bytes the kernel reads at once after a read at offset 0 (seen: 1.15 MiB)
    kernel_first_readahead_bytes: int = 1152 * KiB
    #: bytes of sequential reads before the readahead window opens; more than the
    #: kernel reads around one page fault or after a small read at offset 0 (1.1 MiB)
    streak_bytes: int = 2 * MiB
    #: chunks; the first readahead window.  The reader waits for it a round trip, and for
    #: the next one unless the first held a round trip's worth of bytes: 8 image chunks
    #: (5 MB) are most of that on a link of 150 ms and 50 MB/s, 4 were 2.5 MB
    first_window: int = 8
    #: chunks; the largest readahead window.  It must hold more than a round trip's
    #: worth of bytes while the reader decodes: with 16 image chunks (10 MB) a link of
    #: 150 ms and 50 MB/s (7.5 MB per round trip) idled, and streaming 60 MB of images
    #: took 0.15 s longer than with 32
    max_window: int = 32
    #: bytes; back-to-back chunks are fetched in one request up to this length: fewer
    #: requests, without holding a reader back behind a long run
    max_run_bytes: int = 4 * MiB
    #: bytes; a random read fetches at least this much around its chunk on average.
    #: A wasted neighbour costs at most one round trip's worth of transfer.
    min_fetch_bytes: int = 1 * MiB
    #: share of a dataset's groups random reads must touch before the bulk fetch
    sweep_share: float = 0.25
    #: ... and at least this many groups
    sweep_min_groups: int = 4
    #: the bulk fetch runs only for a dataset within this share of the block cache
    sweep_cache_share: float = 0.25
    #: requests in flight at once during the bulk fetch (leaves room for readers)
    sweep_streams: int = 4


DEFAULT = ReadaheadConfig()
#: for a dataset read as a column of a table (``features.tsv``) a block of rows at a
#: time: a read fetches only its own chunks, however small the dataset, until a
#: sequential run opens the window ahead (``head`` reads a block more than it shows:
#: the kernel's readahead, which must not fetch a group of chunks in every column)
COLUMN = ReadaheadConfig(small_dataset_bytes=0, kernel_first_readahead_bytes=0,
                         min_fetch_bytes=0)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What the policy knows about a dataset."""

    nrows: int
    rows_per_chunk: int
    row_bytes: int  # decoded bytes of one row (one event)
    nchunks: int
    stored_bytes: int  # the compressed chunks, added up


@dataclasses.dataclass(frozen=True)
class ReadState:
    """What the policy remembers between reads of one dataset."""

    next_row: int = -1  # row after the last sequential read; -1 before the first read
    streak_start: int = 0  # first row of the current run of sequential reads
    window: int = 0  # chunks in the readahead window
    ahead_until: int = 0  # chunks below this were already asked for ahead


@dataclasses.dataclass(frozen=True)
class Plan:
    state: ReadState
    ahead: list[int]  # chunks to fetch besides those the read needs
    relation: str  # FIRST, AHEAD, NEAR or JUMP


def plan_read(state: ReadState, geo: Geometry, r0: int, r1: int,
              config: ReadaheadConfig = DEFAULT) -> Plan:
    """The chunks to fetch ahead for a read of rows ``[r0, r1)``, and the next state."""
    rows = lambda nbytes: max(1, nbytes // max(1, geo.row_bytes))  # noqa: E731
    last_chunk = (r1 - 1) // geo.rows_per_chunk
    if state.next_row == -1 and geo.stored_bytes <= config.small_dataset_bytes:
        return Plan(ReadState(next_row=r1, ahead_until=geo.nchunks),
                    [c for c in range(geo.nchunks) if c != last_chunk], FIRST)
    if state.next_row == -1 and r0 == 0:
        upto = min(geo.nchunks, -(-rows(config.kernel_first_readahead_bytes)
                                   // geo.rows_per_chunk))
        return Plan(dataclasses.replace(state, next_row=r1),
                    [c for c in range(upto) if c != last_chunk], FIRST)
    slack = rows(config.streak_bytes)
    sequential = (state.next_row >= 0
                  and state.streak_start - slack <= r0 <= state.next_row + slack)
    if not sequential:
        return Plan(ReadState(next_row=r1, streak_start=r0), [], JUMP)
    state = dataclasses.replace(state, next_row=max(r1, state.next_row))
    if r1 - state.streak_start < rows(config.streak_bytes):
        return Plan(state, [], NEAR)
    window = min(max(config.first_window, state.window * 2), config.max_window)
    start = max(last_chunk + 1, state.ahead_until)
    stop = min(geo.nchunks, last_chunk + 1 + window)
    return Plan(dataclasses.replace(state, window=window,
                                    ahead_until=max(state.ahead_until, stop)),
                list(range(start, stop)), AHEAD)


def group_size(stored_bytes: int, nchunks: int, config: ReadaheadConfig = DEFAULT) -> int:
    """Chunks per aligned group fetched by a random read: ``min_fetch_bytes`` on average."""
    if stored_bytes <= 0 or nchunks <= 0:
        return 1
    return max(1, -(-config.min_fetch_bytes * nchunks // stored_bytes))


def with_groups(chunks: Iterable[int], group: int, nchunks: int) -> list[int]:
    """``chunks`` and the rest of each one's aligned group, sorted."""
    found: set[int] = set()
    for chunk in chunks:
        base = chunk - chunk % group
        found.update(range(base, min(base + group, nchunks)))
    return sorted(found)


def sweep_due(jumped_groups: int, groups: int, stored_bytes: int, cache_bytes: int,
              config: ReadaheadConfig = DEFAULT) -> bool:
    """Whether random reads over ``jumped_groups`` of ``groups`` call for the bulk fetch."""
    return (jumped_groups >= max(config.sweep_min_groups, config.sweep_share * groups)
            and stored_bytes <= config.sweep_cache_share * cache_bytes)


def back_to_back_runs(index: Mapping[int, tuple[int, int]], chunks: Iterable[int],
                      max_run_bytes: int = DEFAULT.max_run_bytes
                      ) -> list[tuple[int, int, int]]:
    """``(start, stop, count)`` byte ranges covering ``chunks``: chunks stored back to
    back form one range, up to ``max_run_bytes`` long.  ``index`` maps a chunk to its
    (file offset, stored size); chunks it does not hold (never written) are skipped."""
    runs: list[tuple[int, int, int]] = []
    for chunk in sorted(c for c in set(chunks) if c in index):
        offset, size = index[chunk]
        if runs and runs[-1][1] == offset and offset + size - runs[-1][0] <= max_run_bytes:
            runs[-1] = (runs[-1][0], offset + size, runs[-1][2] + 1)
        else:
            runs.append((offset, offset + size, 1))
    return runs
