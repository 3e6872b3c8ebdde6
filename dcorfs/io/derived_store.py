"""Bytes derived from cached ones (decoded chunks), kept on the disk cache only.

A chunk that decodes to little more than it takes compressed (``keep_ratio`` in
``hdf5.chunked_rows``) is kept decoded, as one block of its own however long (one
file: fewer to write and read than 64 KiB pieces), under a key derived from its
object's (``disk_cache.derived_key``): it goes when the object goes.  Written by the
block cache's disk writer, in the background; never kept in memory (``DecodedCache``
does that).
"""
from __future__ import annotations

from collections.abc import Callable

from .disk_cache import DiskCache

WriteLater = Callable[[str, dict[int, bytes]], None]


class DerivedStore:
    def __init__(self, disk: DiskCache | None, write_later: WriteLater | None) -> None:
        """``write_later(key, blocks)``: writes blocks to ``disk`` in the background."""
        self.disk = disk
        self._write_later = write_later
        self.hits = 0  # derived bytes served from disk

    @property
    def enabled(self) -> bool:
        return self.disk is not None and self._write_later is not None

    def keep(self, key: str, index: int, data: bytes) -> None:
        if self._write_later is not None:
            self._write_later(key, {index: data})

    def get(self, key: str, index: int, nbytes: int) -> bytes | None:
        """The ``nbytes`` kept as block ``index`` of ``key``, if on disk and intact."""
        if self.disk is None or nbytes <= 0:
            return None
        data = self.disk.get_run(key, index, index + 1, counted=False).get(index)
        if data is None or len(data) != nbytes:
            return None
        self.hits += 1
        return data
