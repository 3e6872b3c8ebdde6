"""What every resource of a mount shares: the clients, the caches, the answer stores and
the thread pools, made once by ``core.build`` and handed to the DCOR layer only (the
core, the views and the layers below never see it: each takes its own parts)."""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import threading
from collections.abc import Callable
from typing import Protocol

from ..hdf5.decoding import DecodedCache, DecoderCache
from ..io.answers import AnswerStore
from ..io.background import BackgroundFetches
from ..io.block_cache import BlockCache
from ..io.derived_store import DerivedStore
from ..io.disk_cache import DiskCache
from ..io.range_fetch import RangeFetcher
from ..io.remote_object import RemoteObject
from .api import DcorApi


class Counts:
    """Counters for the mount's status, safe across threads."""

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class Reopener(Protocol):
    """What reopens the store connections a server closed while the mount sat idle."""

    def due(self) -> bool:
        """Whether they are closed by now (no request for a while)."""

    def reopen(self) -> None:
        """Open them in the background."""


@dataclasses.dataclass
class Shared:
    api: DcorApi  # the only holder of the token
    cache: BlockCache  # raw bytes of every artifact, by basin key
    fetcher: RangeFetcher  # verified range requests to the object store
    background: BackgroundFetches  # network-only tasks nobody waits for yet
    pool: concurrent.futures.Executor  # decode and listing tasks; they may wait for fetches
    decoded: DecodedCache  # decoded chunks, so 128 KiB kernel reads do not re-decode
    decoders: DecoderCache  # in-memory HDF5 files that run unusual filter pipelines
    disk: DiskCache | None = None  # the disk cache: layouts and contour sizes kept
    derived: DerivedStore | None = None  # decoded chunks kept on disk
    # store connections closed while the mount idled: reopened when a resource is asked
    # about over the network (``warm_up.WarmUp``)
    reopener: Reopener | None = None
    # DCOR's answers about public resources (kept on disk, for everyone), and about
    # private ones (on disk under a salted hash of the token: served offline only to it)
    answers: AnswerStore = dataclasses.field(default_factory=lambda: AnswerStore(300.0))
    private_answers: AnswerStore = dataclasses.field(
        default_factory=lambda: AnswerStore(300.0))
    # hdf5_files_opened, kept_layouts_used: how often h5py had to open a file
    counts: Counts = dataclasses.field(default_factory=Counts)
    # the DCOR host (``dcor.mpl.mpg.de``, ``127.0.0.1:8000``): every key of the caches
    # names it, so that two instances on one cache folder never mix (resource ids of a
    # local ``dcorfs serve`` come from file names and may be anyone's)
    site: str = ""

    def site_key(self, name: str) -> str:
        """``name`` (an artifact's key, an answer's) as this DCOR instance's."""
        return site_key(self.site, name)

    def remote_object(self, name: str, url: str, *, expires_at: float | None = None,
                      refresh: Callable[[], None] | None = None,
                      probe_tail: bool = True) -> RemoteObject:
        """The object at ``url``, read through the mount's caches under the key ``name``
        (an artifact's stable name on this site, never its URL)."""
        return RemoteObject(key=self.site_key(name), url=url, expires_at=expires_at,
                            cache=self.cache, fetcher=self.fetcher,
                            background=self.background, refresh=refresh,
                            probe_tail=probe_tail)

    def resolved_object(self, name: str, resolve: Callable[[], str],
                        probe_tail: bool = True) -> RemoteObject:
        """The object at the URL ``resolve()`` gives (where a DCOR route redirects: a
        presigned URL), resolved again when that URL is refused."""
        obj = self.remote_object(name, resolve(), probe_tail=probe_tail)
        obj.refresh = lambda: obj.set_url(resolve(), None)
        return obj


def site_key(site: str, name: str) -> str:
    """``name`` as the key of DCOR instance ``site`` in the caches."""
    return f"{site}|{name}" if site else name
