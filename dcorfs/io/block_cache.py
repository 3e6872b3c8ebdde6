"""An LRU cache of fixed-size blocks of remote objects, bounded in bytes.

Keys are ``(object key, block index)`` where the object key is the basin's stable
``key`` (never a presigned URL, which changes every hour).  The cache knows nothing
about HTTP: ``read`` takes a ``fetch(start, stop)`` function for the half-open byte
range of a run of missing blocks, so adjacent misses cost one request.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable

import cachetools

from ..tuning import TUNING
from . import deadline
from .disk_cache import DiskCache

log = logging.getLogger(__name__)

Fetch = Callable[[int, int], bytes]
# fetch_into(start, stop, sink): hand the bytes of [start, stop) to sink in order
FetchInto = Callable[[int, int, Callable[[bytes], None]], None]


def runs_of(indexes: Iterable[int]) -> list[tuple[int, int]]:
    """Ascending block numbers as half-open runs of consecutive ones: one request each."""
    runs: list[tuple[int, int]] = []
    for index in indexes:
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


class BlockCache:
    """The first level.  With ``disk`` (a ``DiskCache``), blocks missing here are looked
    for on disk before they are fetched, and fetched blocks are written there in the
    background (one writer thread: a read never waits for the disk)."""

    def __init__(self, max_bytes: int, block_size: int = 64 * 1024,
                 disk: DiskCache | None = None) -> None:
        if block_size <= 0 or max_bytes < block_size:
            raise ValueError("the cache must hold at least one block")
        self.disk = disk
        self._writer = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="disk")
                        if disk is not None else None)
        self.block_size = block_size
        self._lru: cachetools.LRUCache = cachetools.LRUCache(maxsize=max_bytes, getsizeof=len)
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, int], threading.Event] = {}
        self._pending = 0
        self._pending_lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _submit(self, task: Callable[..., object], *args: object) -> None:
        """Run ``task`` on the disk writer; ``writes_pending`` counts it until done."""
        with self._pending_lock:
            self._pending += 1
        try:
            future = self._writer.submit(task, *args)  # type: ignore[union-attr]
        except RuntimeError:
            with self._pending_lock:
                self._pending -= 1
            raise
        future.add_done_callback(self._written)

    def _written(self, _: concurrent.futures.Future) -> None:
        with self._pending_lock:
            self._pending -= 1

    @property
    def writes_pending(self) -> int:
        """Disk writes submitted and not done yet (tests wait for 0, not for a time)."""
        with self._pending_lock:
            return self._pending

    @property
    def current_bytes(self) -> int:
        return int(self._lru.currsize)

    @property
    def max_bytes(self) -> int:
        return int(self._lru.maxsize)

    def _claim(self, key: str, first: int, last: int
               ) -> tuple[list[tuple[int, int]], dict[int, threading.Event]]:
        """Runs of blocks this caller must fetch, and blocks others are fetching now.

        Concurrent readers (the kernel's readahead runs reads in parallel) must not
        fetch the same block twice: a missing block is claimed by one reader, the
        others wait for it.
        """
        claimed: list[int] = []
        waits: dict[int, threading.Event] = {}
        with self._lock:
            for index in range(first, last + 1):
                if (key, index) in self._lru:
                    continue
                event = self._inflight.get((key, index))
                if event is not None:
                    waits[index] = event
                    continue
                self._inflight[(key, index)] = threading.Event()
                claimed.append(index)
        return runs_of(claimed), waits

    def _release(self, key: str, b0: int, b1: int) -> None:
        with self._lock:
            for index in range(b0, b1):
                event = self._inflight.pop((key, index), None)
                if event is not None:
                    event.set()

    def store(self, key: str, first_block: int, data: bytes) -> dict[int, bytes]:
        """Split a fetched run into blocks and insert them; returns the blocks."""
        bs = self.block_size
        blocks = {first_block + i: data[i * bs:(i + 1) * bs]
                  for i in range((len(data) + bs - 1) // bs)}
        self._insert(key, blocks)
        if self._writer is not None and blocks:
            try:
                self._submit(self._write_quietly, key, blocks)
            except RuntimeError:  # closed: a fill that ends while unmounting is not kept
                log.debug("blocks %d+ of %s not written: the cache is closed", first_block, key)
        return blocks

    def _insert(self, key: str, blocks: dict[int, bytes]) -> None:
        with self._lock:
            for index, block in blocks.items():
                if len(block) <= self._lru.maxsize:
                    self._lru[(key, index)] = block

    def write_later(self, key: str, blocks: dict[int, bytes]) -> None:
        """Write ``blocks`` of ``key`` to disk in the background (not kept in memory):
        the disk writer of ``store`` and of ``DerivedStore``."""
        if self._writer is None:
            return
        with contextlib.suppress(RuntimeError):  # closed: unmounting, not kept
            self._submit(self._write_quietly, key, blocks)

    def known_object(self, key: str) -> tuple[int, str | None] | None:
        """(size, ETag) of an object as stored on disk by an earlier fetch, or None."""
        return self.disk.object_info(key) if self.disk is not None else None

    def remember_object(self, key: str, size: int, etag: str | None) -> None:
        if self._writer is not None:
            self._submit(self.disk.set_object, key, size, etag)  # type: ignore[union-attr]

    def close(self) -> None:
        """Finish the disk writes under way (an unmount loses nothing it fetched)."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)

    def forget(self, key: str) -> None:
        """Drop every block of ``key``, here and on disk: the object changed."""
        with self._lock:
            for cached in [k for k in self._lru.keys() if k[0] == key]:
                self._lru.pop(cached, None)
        if self.disk is not None:
            self.disk.forget(key)

    def _write_quietly(self, key: str, blocks: dict[int, bytes]) -> None:
        try:
            self.disk.put_many(key, blocks)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - the disk is an optimisation; reads go on
            log.exception("DCD805 writing blocks of %s to disk failed", key)

    def _from_disk(self, key: str, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Claimed runs with the blocks found on disk taken out (inserted here and
        released to their waiters, ``TUNING.disk_batch`` blocks at a time, so that a reader
        waiting for a run's first block does not wait for its last): what is left to
        fetch."""
        if self.disk is None:
            return runs
        left: list[tuple[int, int]] = []
        for b0, b1 in runs:
            found: dict[int, bytes] = {}
            for first in range(b0, b1, TUNING.disk_batch):
                batch = self.disk.get_run(key, first, min(first + TUNING.disk_batch, b1))
                if batch:
                    self._insert(key, batch)
                    for index in batch:
                        self._release(key, index, index + 1)
                    found.update(batch)
            left += runs_of(index for index in range(b0, b1) if index not in found)
            if found and self._writer is not None:
                with contextlib.suppress(RuntimeError):  # closed: ``close`` writes them
                    self._submit(self.disk.write_uses, TUNING.uses_batch)
        return left

    def claim(self, key: str, start: int, stop: int) -> list[tuple[int, int]]:
        """Claim the missing blocks of ``[start, stop)`` for a later ``fill``: readers
        that need them meanwhile wait for that fetch instead of making their own."""
        bs = self.block_size
        return self._claim(key, start // bs, (stop - 1) // bs)[0]

    def claim_missing(self, key: str, start: int, stop: int) -> list[tuple[int, int]]:
        """``claim`` for the blocks of ``[start, stop)`` that the disk does not hold."""
        bs = self.block_size
        first, last = start // bs, (stop - 1) // bs
        on_disk = self.disk.stored_blocks(key, first, last + 1) if self.disk else set()
        wanted = runs_of(index for index in range(first, last + 1) if index not in on_disk)
        return [run for b0, b1 in wanted for run in self._claim(key, b0, b1 - 1)[0]]

    def fill(self, key: str, runs: list[tuple[int, int]], fetch_into: FetchInto) -> None:
        """Fetch claimed runs, one request each, and release every block as soon as its
        bytes have arrived: a reader waiting for the first block of a long run goes on
        while the rest is still on the way.  The end of the object may cut a run
        short.  On failure the remaining blocks are released too: their waiters then
        fetch for themselves."""
        try:
            for b0, b1 in self._from_disk(key, runs):
                self._fill_run(key, b0, b1, fetch_into)
        finally:
            for b0, b1 in runs:
                self._release(key, b0, b1)

    def _fill_run(self, key: str, b0: int, b1: int, fetch_into: FetchInto) -> None:
        bs = self.block_size
        pending = bytearray()
        next_block = b0

        def sink(piece: bytes) -> None:
            nonlocal next_block
            pending.extend(piece)
            whole = len(pending) // bs
            if whole:
                self.store(key, next_block, bytes(pending[:whole * bs]))
                del pending[:whole * bs]
                self._release(key, next_block, next_block + whole)
                next_block += whole
                self.misses += whole

        fetch_into(b0 * bs, b1 * bs, sink)
        if pending:
            self.store(key, next_block, bytes(pending))
            self.misses += 1
        self._release(key, b0, b1)

    def peek(self, key: str, start: int, stop: int) -> bytes | None:
        """Bytes ``[start, stop)`` if all their blocks are cached, else None: for hints
        about what to fetch next, so it fetches nothing and waits for nothing."""
        if stop <= start:
            return b""
        bs = self.block_size
        with self._lock:
            parts = [self._lru.get((key, index), None)
                     for index in range(start // bs, (stop - 1) // bs + 1)]
        if any(part is None for part in parts):
            return None
        data = b"".join(parts)
        head = start - start // bs * bs
        return data[head:head + stop - start]

    def read(self, key: str, start: int, stop: int, size: int, fetch: Fetch) -> bytes:
        """Bytes ``[start, stop)`` of an object of ``size`` bytes, fetching what is missing."""
        stop = min(stop, size)
        if stop <= start:
            return b""
        bs = self.block_size
        first, last = start // bs, (stop - 1) // bs
        fetched: dict[int, bytes] = {}
        claimed, waits = self._claim(key, first, last)
        runs = self._from_disk(key, claimed)
        try:
            for b0, b1 in runs:
                data = fetch(b0 * bs, min(b1 * bs, size))
                fetched.update(self.store(key, b0, data))
                self._release(key, b0, b1)
        finally:
            for b0, b1 in claimed:  # on failure, let waiters try for themselves
                self._release(key, b0, b1)
        for event in waits.values():
            deadline.wait(event)
        parts = []
        for index in range(first, last + 1):
            block = fetched.get(index)
            if block is None:
                with self._lock:
                    block = self._lru.get((key, index))
                if block is None:  # evicted, or another reader's fetch failed
                    block = fetch(index * bs, min((index + 1) * bs, size))
                    self.store(key, index, block)
                else:
                    self.hits += 1
            parts.append(block)
        self.misses += len(fetched)
        # trim the first and last block before joining: h5py reads metadata a few
        # hundred bytes at a time, and copying whole blocks for each would dominate
        head = start - first * bs
        parts[-1] = parts[-1][:stop - last * bs]
        parts[0] = parts[0][head:]
        return parts[0] if len(parts) == 1 else b"".join(parts)
