"""What every resource of a mount shares: the clients, the caches and the thread pools."""
from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable

from ..hdf5.decoding import DecodedCache, DecoderCache
from ..io.background import BackgroundFetches
from ..io.block_cache import BlockCache
from ..io.disk_cache import DiskCache
from ..io.range_fetch import RangeFetcher
from .api import DcorApi


@dataclasses.dataclass
class Shared:
    api: DcorApi  # the only holder of the token
    cache: BlockCache  # raw bytes of every artifact, by basin key
    fetcher: RangeFetcher  # verified range requests to the object store
    background: BackgroundFetches  # network-only tasks nobody waits for yet
    pool: concurrent.futures.Executor  # decode and listing tasks; they may wait for fetches
    decoded: DecodedCache  # decoded chunks, so 128 KiB kernel reads do not re-decode
    decoders: DecoderCache  # in-memory HDF5 files that run unusual filter pipelines
    disk: DiskCache | None = None  # the disk cache, also for DCOR's answers about public data
    # called before a resource is asked about over the network: reopens idle connections
    reopen: Callable[[], None] | None = None
    # a salted hash of the token: private answers on disk are served offline only to it
    token_id: str | None = None
    # seconds after which answers kept on disk are asked for again, in the background
    answers_ttl: float = 300.0
