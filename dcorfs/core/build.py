"""One place that wires a mount: ``build(config)`` makes every part and hands each
what it needs; ``Filesystem`` and the layers below take their parts, never make them.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import pathlib
import sqlite3
import urllib.parse

from .. import __version__
from ..dcor.api import DcorApi
from ..dcor.browse import Browser, listing_key
from ..dcor.resource_folder import Resource
from ..dcor.shared import Shared, site_key
from ..dcor.warm_up import WarmUp
from ..hdf5 import native_filters
from ..hdf5.decoding import DecodedCache, DecoderCache
from ..io.answers import AnswerStore
from ..io.background import BackgroundFetches
from ..io.block_cache import BlockCache
from ..io.derived_store import DerivedStore
from ..io.disk_cache import DiskCache
from ..io.http import proxy_for, proxy_shown
from ..io.range_fetch import RangeFetcher
from ..io.reachability import Reachability
from ..io.store_mirror import StoreMirror
from ..tuning import TUNING
from .filesystem import Filesystem
from .resources import OpenResources

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FsConfig:
    """A mount's settings, as the command line gives them (``mount.options``)."""

    host: str
    token: str = ""
    cache_bytes: int = 1 << 30
    block_size: int = 64 * 1024
    timeout: float = 30.0
    op_timeout: float = 60.0
    max_resources: int = 32
    allow_http: bool = False
    listing_ttl: float = 300.0  # seconds a listing of DCOR is kept
    disk_cache_dir: str | None = None  # None: no disk cache
    disk_cache_bytes: int = 10 << 30
    offline: bool = False  # never touch the network: serve what the disk cache holds
    # a site cache (nginx) that public object-store reads go through, and the store it
    # fronts (None: learned from DCOR, the origin of its resources' ``s3_url``)
    store_mirror: str | None = None
    store_origin: str | None = None
    proxy: str | None = None  # --proxy; None: the environment's (HTTPS_PROXY, NO_PROXY...)

    def __repr__(self) -> str:  # never show the token
        return (f"FsConfig(host={self.host!r}, token={'<set>' if self.token else '<none>'}, "
                f"cache_bytes={self.cache_bytes})")


def open_disk_cache(config: FsConfig) -> DiskCache | None:
    """The disk cache the config asks for, or None: a cache that cannot be opened (a
    full or read-only disk) leaves the mount working from the network."""
    if not config.disk_cache_dir:
        return None
    try:
        return DiskCache(pathlib.Path(config.disk_cache_dir), config.disk_cache_bytes)
    except (OSError, sqlite3.Error) as exc:
        log.warning("DCD811 the disk cache in %s cannot be used (%s); reading from the "
                    "network only", config.disk_cache_dir, exc)
        return None


@dataclasses.dataclass
class Parts:
    """What ``build`` made, for the status, for closing, and for tests to look at."""

    config: FsConfig
    reach: Reachability
    api: DcorApi
    disk: DiskCache | None
    cache: BlockCache
    derived: DerivedStore
    mirror: StoreMirror | None
    fetcher: RangeFetcher
    background: BackgroundFetches
    pool: concurrent.futures.ThreadPoolExecutor
    shared: Shared
    warm_up: WarmUp
    browser: Browser
    resources: OpenResources

    def status(self) -> dict:
        """Everything but the core's own part of ``Filesystem.status``."""
        config, cache, store_url = self.config, self.cache, self.warm_up.store_url
        return {"version": __version__, "host": config.host, "token": bool(config.token),
                "cache": {"bytes": cache.current_bytes, "max_bytes": cache.max_bytes,
                          "block_size": cache.block_size, "block_hits": cache.hits,
                          "blocks_fetched": cache.misses,
                          "decoded_chunks_from_disk": self.derived.hits},
                "disk_cache": {**self.disk.status(), "writes_pending": cache.writes_pending}
                if self.disk is not None else None,
                "network": {**self.reach.status(), "api_requests": self.api.requests,
                            "range_requests": self.fetcher.requests,
                            "range_bytes": self.fetcher.bytes,
                            "background": self.background.counts(),
                            # the proxy each host is reached through (None: directly)
                            "proxy": {"api": proxy_shown(proxy_for(config.host, config.proxy)),
                                      "store": proxy_shown(proxy_for(store_url, config.proxy))
                                      if store_url else None}},
                "decoder": native_filters.availability(),
                "hdf5": {"files_opened": 0, "kept_layouts_used": 0, "small_datasets_parsed": 0,
                         "small_datasets_h5py": 0, "contour_index_requests": 0,
                         "contours_looked_ahead": 0, **self.shared.counts.snapshot()},
                "warm_up": self.warm_up.status(),
                "store_mirror": self.mirror.status() if self.mirror is not None else None,
                "timeouts": {"request_s": config.timeout, "operation_s": config.op_timeout}}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.background.shutdown()
        self.shared.decoders.close()
        self.resources.close()
        self.cache.close()
        if self.disk is not None:
            self.disk.close()


def build(config: FsConfig) -> Filesystem:
    """A mount's core with every part made from ``config`` (``fs.parts`` holds them)."""
    reach = Reachability(forced=config.offline)
    api = DcorApi(config.host, config.token, timeout=config.timeout,
                  allow_http=config.allow_http, reach=reach, proxy=config.proxy)
    disk = open_disk_cache(config)
    cache = BlockCache(config.cache_bytes, config.block_size, disk=disk)
    mirror = (StoreMirror(config.store_mirror, config.store_origin)
              if config.store_mirror else None)
    fetcher = RangeFetcher(timeout=config.timeout, reach=reach, mirror=mirror,
                           proxy=config.proxy)
    background = BackgroundFetches()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=TUNING.decode_workers,
                                                 thread_name_prefix="decode")
    warm_up = WarmUp(api, fetcher, pool, TUNING.decode_workers, background, mirror,
                     config.offline, disk.connect if disk is not None else None,
                     reopen_after=TUNING.reopen_after)
    site = (urllib.parse.urlsplit(api.base).netloc or api.base).lower()
    token_id = api.token_id(disk.salt()) if disk is not None else None

    shared = Shared(
        api=api, cache=cache, fetcher=fetcher, background=background, pool=pool,
        decoders=DecoderCache(), disk=disk,
        derived=DerivedStore(disk, cache.write_later if disk is not None else None),
        reopener=warm_up, site=site,
        answers=AnswerStore(config.listing_ttl, disk=disk, memory=False,
                            disk_key=lambda key: site_key(site, f"dcserv:{key[0]}:{key[1]}")),
        private_answers=AnswerStore(
            config.listing_ttl, disk=disk, memory=False,
            disk_key=None if token_id is None else
            lambda key: site_key(site, f"private:{token_id}:dcserv:{key[0]}:{key[1]}")),
        decoded=DecodedCache(max_bytes=min(TUNING.decoded_cache_max,
                                           max(config.cache_bytes // 4, 1 << 20))))
    scope = site_key(site, (token_id or "token") if config.token else "public")
    browser = Browser(shared, AnswerStore(config.listing_ttl, TUNING.negative_ttl, disk=disk,
                                          disk_key=lambda key: listing_key(scope, key)),
                      private=bool(config.token))
    resources = OpenResources(lambda rid: Resource(rid, shared), max(1, config.max_resources),
                              AnswerStore(0.0, TUNING.negative_ttl))
    parts = Parts(config, reach, api, disk, cache, shared.derived, mirror, fetcher, background,
                  pool, shared, warm_up, browser, resources)
    fs = Filesystem(browser.roots, resources, status=parts.status, on_mount=warm_up.start,
                    on_close=parts.close)
    fs.parts = parts
    return fs
