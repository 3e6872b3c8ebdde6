"""The resources a mount keeps open: least recently used first, "not found" remembered.

Each open resource holds HDF5 files and their metadata caches, so a batch over
thousands of resources must not keep them all: beyond ``max_open`` the least recently
used one without open files is closed, and opened again on its next lookup.  A
resource is loaded once however many threads ask at the same time.  Names that cannot
be a resource id are ENOENT without a request; ids DCOR does not know are remembered
as missing (``AnswerStore``'s negative cache); other errors never are.
"""
from __future__ import annotations

import collections
import errno
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from ..ids import is_resource_id
from ..io.answers import AnswerStore

log = logging.getLogger(__name__)


class Openable(Protocol):
    """What the LRU needs of a resource (``dcor.resource_folder.Resource``)."""

    rid: str

    def load(self) -> None: ...

    def close(self) -> None: ...


class OpenResources:
    def __init__(self, make: Callable[[str], Openable], max_open: int,
                 not_found: AnswerStore) -> None:
        """``make(rid)``: a resource not loaded yet; ``not_found``: where missing ids are
        remembered (its ``negative_ttl``)."""
        self._make = make
        self.max_open = max_open
        self._not_found = not_found
        self._open: collections.OrderedDict[str, Openable] = collections.OrderedDict()
        self._in_use: collections.Counter[str] = collections.Counter()
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, rid: str) -> Openable:
        """The resource ``rid``, loaded (its basins known): ENOENT if DCOR has none."""
        if not is_resource_id(rid):
            raise OSError(errno.ENOENT, f"{rid!r} is not a resource id")
        with self._lock:
            res = self._open.get(rid)
            if res is not None:
                self._open.move_to_end(rid)
                return res
            if self._not_found.missing((rid,)):
                raise OSError(errno.ENOENT, f"resource {rid} not found (remembered)")
            lock = self._loading.setdefault(rid, threading.Lock())
        with lock:
            with self._lock:
                if rid in self._open:
                    return self._open[rid]
            res = self._make(rid)
            try:
                res.load()
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    self._not_found.remember_missing((rid,))
                log.log(logging.INFO if exc.errno == errno.ENOENT else logging.WARNING,
                        "DCF101 resource %s: %s", rid, exc.strerror)
                raise
            with self._lock:
                self._open[rid] = res
                evicted = self._evictable()
            log.info("DCF102 resource %s resolved (%d basins)", rid,
                     len(getattr(res, "basins", ())))
            for old in evicted:
                old.close()
                log.info("DCF103 closed resource %s (least recently used)", old.rid)
            return res

    def drop(self, rid: str) -> None:
        """Forget ``rid`` (it changed on DCOR): the next lookup opens it anew."""
        with self._lock:
            self._open.pop(rid, None)

    def opened(self, rid: str) -> None:
        """A file of ``rid`` was opened: it is not closed while that file is open."""
        with self._lock:
            self._in_use[rid] += 1

    def released(self, rid: str) -> None:
        with self._lock:
            self._in_use[rid] -= 1
            if self._in_use[rid] <= 0:
                del self._in_use[rid]

    def ids(self) -> list[str]:
        """The open resources' ids, sorted."""
        with self._lock:
            return sorted(self._open)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def _evictable(self) -> list[Openable]:
        """Take resources beyond ``max_open`` out, oldest first, skipping those with open
        files.  Called with the lock held."""
        evicted = []
        for rid in list(self._open):
            if len(self._open) <= self.max_open:
                break
            if self._in_use[rid] == 0:
                evicted.append(self._open.pop(rid))
        return evicted

    def close(self) -> None:
        with self._lock:
            resources, self._open = list(self._open.values()), collections.OrderedDict()
        for res in resources:
            res.close()
