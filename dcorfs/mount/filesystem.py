"""The FUSE-free core: look up paths, list folders, open and read files.

Everything here raises ``OSError(errno.X, message)``; the FUSE adapter maps those
once.  Resource folders are resolved on first lookup.  Names that cannot be a
resource id are ENOENT without a request; "not found" answers are remembered for
a short while, other errors never (the next try may succeed).
"""
from __future__ import annotations

import collections
import contextlib
import concurrent.futures
import dataclasses
import errno
import itertools
import json
import logging
import os
import pathlib
import sqlite3
import stat
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from .. import __version__
from ..dcor.api import DcorApi, is_resource_id
from ..dcor.browse import Browser
from ..dcor.nodes import Dir, File, LazyEntries, Link, Node
from ..dcor.resource_folder import Resource
from ..dcor.shared import Shared
from ..hdf5 import native_filters
from ..hdf5.decoding import DecodedCache, DecoderCache
from ..io.background import BackgroundFetches, prestart
from ..io.block_cache import BlockCache
from ..io.disk_cache import DiskCache
from ..io.http import proxy_for, proxy_shown, redact
from ..io.range_fetch import STORE_CONNECTIONS, RangeFetcher
from ..io.reachability import Reachability
from ..io.store_mirror import StoreMirror
from .status import STATUS_XATTR

log = logging.getLogger(__name__)

NEGATIVE_TTL = 30.0
DECODE_WORKERS = 16  # the pool for decodes and listing tasks (they may wait for fetches)
BLKSIZE = 1024 * 1024
# names a lazy listing takes from its folder at a time: with attributes (the kernel
# takes a few dozen entries per call) and without (it takes thousands)
READDIR_CHUNK, READDIR_NAMES_CHUNK = 64, 4096
PLUS_KEPT = 600.0  # seconds; well inside the kernel's entry timeout (3600 s)
LISTING_KEPT = 30.0  # seconds a listing's later pages come from its first (see _listed)
# servers close keep-alive connections that sat idle (S3 after about 20 s, nginx after
# 75 s); after this long without a request, opening a resource first reopens store
# connections, while its API query is on the way, so the reads after it find them open
REOPEN_AFTER = 5.0


@dataclasses.dataclass
class FsConfig:
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


class Filesystem:
    def __init__(self, config: FsConfig) -> None:
        self.config = config
        self.reach = Reachability(forced=config.offline)
        self.api = DcorApi(config.host, config.token, timeout=config.timeout,
                           allow_http=config.allow_http, reach=self.reach, proxy=config.proxy)
        self.disk = open_disk_cache(config)
        self.cache = BlockCache(config.cache_bytes, config.block_size, disk=self.disk)
        self.mirror = (StoreMirror(config.store_mirror, config.store_origin)
                       if config.store_mirror else None)
        self.fetcher = RangeFetcher(timeout=config.timeout, reach=self.reach, mirror=self.mirror,
                                    proxy=config.proxy)
        self.background = BackgroundFetches()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=DECODE_WORKERS,
                                                          thread_name_prefix="decode")
        self.shared = Shared(
            api=self.api, cache=self.cache, fetcher=self.fetcher, background=self.background,
            pool=self.pool, decoders=DecoderCache(), disk=self.disk,
            reopen=self._reopen_if_idle, answers_ttl=config.listing_ttl,
            site=(urllib.parse.urlsplit(self.api.base).netloc or self.api.base).lower(),
            token_id=self.api.token_id(self.disk.salt()) if self.disk is not None else None,
            decoded=DecodedCache(max_bytes=min(64 << 20, max(config.cache_bytes // 4, 1 << 20))))
        self.browser = Browser(self.shared, config.listing_ttl, private=bool(config.token))
        # resources kept open, least recently used first; evicted when not in use
        self.resources: collections.OrderedDict[str, Resource] = collections.OrderedDict()
        self._in_use: collections.Counter[str] = collections.Counter()
        self._not_found: dict[str, float] = {}
        self._given_plus: dict[str, float] = {}  # folder -> when listed with attributes
        self._listings: dict[str, tuple[float, Any]] = {}  # see _listed
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._handles: dict[int, tuple[str, File]] = {}
        self._next_fh = itertools.count(1)
        self._warm_up: dict = {"state": "not started", "store": None}
        self._store_url: str | None = None  # any object of the store, for reopening
        self.mounted_at = time.time()
        self.uid = os.getuid()
        self.gid = os.getgid()

    def warm_up(self) -> None:
        """Open the connections the first read needs while nobody waits for it.

        A new connection costs a round trip for TCP, on DCOR one or two more for TLS.
        The first lookup sends two API queries at once, the first read of a file
        three or more store requests at once, so two API connections and
        ``STORE_CONNECTIONS`` store connections are opened at mount.  The object
        store's host is learned from any public resource's basins (DCOR keeps all
        its objects on one store).  Runs in the background; the outcome is in the
        status (``warm_up``) and the log (DCF105, DCF104 if it failed); the first
        lookup reports errors to its caller.
        """
        connect = self.disk.connect if self.disk is not None else None
        prestart(self.pool, DECODE_WORKERS, connect)
        self.background.prestart(connect)
        if self.config.offline:
            with self._lock:
                self._warm_up = {"state": "offline", "store": None}
            return
        with self._lock:
            self._warm_up = {"state": "running", "store": None}
        started = time.monotonic()
        # both pings go out together, so that each opens a connection of its own (the
        # first lookup sends two queries at once); a barrier, not luck, sees to it
        together = threading.Barrier(2, timeout=5.0)
        pings = [self.pool.submit(self._ping, together) for _ in range(2)]
        # it waits for pool tasks, so it must not hold a pool worker itself
        threading.Thread(target=self._warm_up_store, args=(pings, started), daemon=True,
                         name="warm-up").start()

    def _ping(self, together: threading.Barrier) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait()
        self.api.call("status_show")

    def _warm_up_store(self, pings: list[concurrent.futures.Future], started: float) -> None:
        state, store = "failed", None
        try:
            for ping in pings:
                ping.result()
            url = self._any_store_url()
            if url is not None:
                self._store_url = url
                if self.mirror is not None:
                    self.mirror.learn_origin(url)
                store = redact(url).split("/", 3)[2]
                for future in self._open_store_connections(url):
                    try:
                        future.result()
                    except OSError as exc:  # an answer all the same: the connection is open
                        if exc.errno not in (errno.ENOENT, errno.EACCES, errno.EINVAL):
                            raise
            state = "done"
        except OSError as exc:
            log.warning("DCF104 warm-up at mount time failed (%s): %s", self.config.host,
                        exc.strerror or exc)
        finally:  # whatever happened, the status must not say "running" forever
            seconds = time.monotonic() - started
            with self._lock:
                self._warm_up = {"state": state, "store": store, "seconds": round(seconds, 3)}
        log.info("DCF105 warm-up %s in %.3f s (object store: %s)", state, seconds,
                 store or "none found")

    def _any_store_url(self) -> str | None:
        """A URL on the object store: the ``s3_url`` of a resource of the newest public
        dataset, else (an older DCOR) the URL of an RT-DC resource's existing basin."""
        found = self.api.call("package_search", rows=1)
        packages = found.get("results") if isinstance(found, dict) else None
        for package in packages if isinstance(packages, list) else []:
            resources = package.get("resources", []) if isinstance(package, dict) else []
            for res in resources if isinstance(resources, list) else []:
                if isinstance(res, dict) and isinstance(res.get("s3_url"), str) \
                        and res["s3_url"].startswith(("http://", "https://")):
                    return res["s3_url"]
            for res in resources if isinstance(resources, list) else []:
                rid = res.get("id", "") if isinstance(res, dict) else ""
                if not is_resource_id(rid) or not str(res.get("name", "")).endswith(".rtdc"):
                    continue
                urls: list[tuple[bool, str]] = []
                specs = self.api.dcserv(rid, "basins")
                for spec in specs if isinstance(specs, list) else []:
                    spec_urls = spec.get("urls") if isinstance(spec, dict) else None
                    if isinstance(spec_urls, list) and spec_urls and isinstance(spec_urls[0], str):
                        urls.append((bool(spec.get("features")), spec_urls[0]))
                if urls:
                    return max(urls, key=lambda pair: pair[0])[1]
        return None

    # -- resources ---------------------------------------------------------------------
    def resource(self, rid: str) -> Resource:
        if not is_resource_id(rid):
            raise OSError(errno.ENOENT, f"{rid!r} is not a resource id")
        with self._lock:
            res = self.resources.get(rid)
            if res is not None:
                self.resources.move_to_end(rid)
                return res
            if self._not_found.get(rid, 0.0) > time.monotonic():
                raise OSError(errno.ENOENT, f"resource {rid} not found (cached)")
            lock = self._loading.setdefault(rid, threading.Lock())
        with lock:
            with self._lock:
                if rid in self.resources:
                    return self.resources[rid]
            res = Resource(rid, self.shared)
            try:
                res.load()
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    with self._lock:
                        self._not_found[rid] = time.monotonic() + NEGATIVE_TTL
                log.log(logging.INFO if exc.errno == errno.ENOENT else logging.WARNING,
                        "DCF101 resource %s: %s", rid, exc.strerror)
                raise
            with self._lock:
                self.resources[rid] = res
                evicted = self._evictable()
            log.info("DCF102 resource %s resolved (%d basins)", rid, len(res.basins))
            for old in evicted:
                old.close()
                log.info("DCF103 closed resource %s (least recently used)", old.rid)
            return res

    def _reopen_if_idle(self) -> None:
        """Open ``STORE_CONNECTIONS`` store connections in the background if none was
        used for ``REOPEN_AFTER`` seconds: their handshakes then overlap the API query
        instead of delaying the first reads (one request of one byte each)."""
        url = self._store_url
        idle = time.monotonic() - self.fetcher.last_used
        if url is None or idle < REOPEN_AFTER:
            return
        self.fetcher.last_used = time.monotonic()
        log.info("DCF106 reopening %d store connections after %.0f s without a request",
                 STORE_CONNECTIONS, idle)
        for future in self._open_store_connections(url):
            future.add_done_callback(lambda f: f.exception() and log.debug(
                "reopening a store connection: %s", f.exception()))

    def _open_store_connections(self, url: str) -> list[concurrent.futures.Future]:
        """``STORE_CONNECTIONS`` requests of one byte at once, each opening a connection
        of its own, on threads of their own: the background pool stays free for the
        reads that may start meanwhile."""
        opener = concurrent.futures.ThreadPoolExecutor(STORE_CONNECTIONS,
                                                       thread_name_prefix="connect")
        futures = [opener.submit(self.fetcher.fetch, url, 0, 1) for _ in range(STORE_CONNECTIONS)]
        opener.shutdown(wait=False)
        return futures

    def _evictable(self) -> list[Resource]:
        """Take resources beyond ``max_resources`` out, oldest first, skipping open ones.

        Each open resource holds HDF5 files and their metadata caches; a batch over
        thousands of resources must not keep them all.  Called with the lock held.
        """
        evicted = []
        for rid in list(self.resources):
            if len(self.resources) <= self.config.max_resources:
                break
            if self._in_use[rid] == 0:
                evicted.append(self.resources.pop(rid))
        return evicted

    # -- paths -------------------------------------------------------------------------
    def lookup(self, path: str) -> Node | None:
        """The node at ``path``; None for the root folder."""
        parts = [p for p in path.split("/") if p]
        if not parts:
            return None
        if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
            raise OSError(errno.ENAMETOOLONG, "name longer than 255 bytes")
        node: Node | None = self.browser.roots.get(parts[0])
        if node is None:
            node = self.resource(parts[0]).root
        for depth, part in enumerate(parts[1:], 1):
            if not isinstance(node, Dir):
                raise OSError(errno.ENOTDIR, f"{'/'.join(parts[:depth])} is not a folder")
            child = node.get(part)
            if child is None:
                raise OSError(errno.ENOENT, f"no {'/'.join(parts[:depth + 1])}")
            node = child
        return node

    def getattr(self, path: str) -> dict:
        return self._attrs(self.lookup(path))

    def _attrs(self, node: Node | None) -> dict:
        mtime = getattr(node, "mtime", None) or self.mounted_at
        base = {"st_uid": self.uid, "st_gid": self.gid, "st_atime": mtime,
                "st_mtime": mtime, "st_ctime": mtime}
        if node is None or isinstance(node, Dir):
            # st_blksize: glibc's opendir sizes its getdents buffer by it (32 KiB to
            # 1 MiB), and the kernel asks FUSE for as many names as that buffer holds
            return {**base, "st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, "st_size": 0,
                    "st_blksize": BLKSIZE}
        if isinstance(node, Link):
            return {**base, "st_mode": stat.S_IFLNK | 0o777, "st_nlink": 1,
                    "st_size": len(node.target.encode())}
        size = node.size
        return {**base, "st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": size,
                "st_blksize": BLKSIZE, "st_blocks": (size + 511) // 512}

    def readlink(self, path: str) -> str:
        node = self.lookup(path)
        if not isinstance(node, Link):
            raise OSError(errno.EINVAL, f"{path} is not a symbolic link")
        return node.target

    def readdir(self, path: str) -> list[str]:
        """Every name in a folder (for small folders and tests; FUSE pages through
        ``readdir_page``)."""
        return self.readdir_page(path, 0, sys.maxsize)

    def readdir_page(self, path: str, start: int, count: int) -> list[str]:
        """``count`` names of a folder from position ``start``: a folder of 220,000
        contours is listed page by page as the kernel asks, never as one list."""
        return self._page(path, start, count)[0]

    def _page(self, path: str, start: int, count: int) -> tuple[list[str], dict | None]:
        """A page of names, and the entries they come from (None for the root)."""
        node = self.lookup(path)
        if node is None:
            with self._lock:
                names = sorted(self.browser.roots) + sorted(self.resources)
            return self._listed(path, start, names)[start:start + count], None
        if not isinstance(node, Dir):
            raise OSError(errno.ENOTDIR, f"{path} is not a folder")
        parts = [p for p in path.split("/") if p]
        if start == 0 and len(parts) == 1 and is_resource_id(parts[0]):
            # a resource folder: its entries are about to be stat'ed
            self.resource(parts[0]).prepare_listing()
        entries = self._listed(path, start, node.entries)
        if isinstance(entries, LazyEntries):
            return entries.names_from(start, count), entries
        return list(itertools.islice(entries, start, start + count)), entries

    def _listed(self, path: str, start: int, entries: Any) -> Any:
        """The entries a listing goes on with: the kernel asks for a folder page by
        page, and a listing that changes between two asks (a browsing folder
        refreshed from DCOR, which makes new entries) would repeat or skip names.
        The entries a listing from its start saw are kept for ``LISTING_KEPT``, and
        its later pages come from them."""
        now = time.monotonic()
        with self._lock:
            if start == 0:
                for old in [p for p, (at, _) in self._listings.items()
                            if at < now - LISTING_KEPT]:
                    del self._listings[old]
                self._listings[path] = (now, entries)
                return entries
            kept = self._listings.get(path)
        return kept[1] if kept is not None and kept[0] >= now - LISTING_KEPT else entries

    def readdir_plus(self, path: str, start: int,
                     with_attrs: bool = True) -> Iterator[tuple[str, dict | None]]:
        """The names of a folder from position ``start``, each with its attributes
        where they are known without a request of its own (the kernel then skips
        looking it up: ``ls -l`` of 220,000 contours makes 220,000 lookups
        otherwise), else None; without ``with_attrs``, names only.  Lazy: the kernel
        takes a few dozen entries with attributes at a time, and thousands of names
        without, and only what it takes is made.  The attributes are shared between
        files of one size: not to be changed.

        Once a listing with attributes reached a folder's end (the kernel asks for
        them on later pages only while the names are being stat'ed, so it has every
        entry by then), the folder is listed without them for ``PLUS_KEPT``: the
        kernel keeps what it was given (for the entry timeout), and a second ``ls -l``
        of 220,000 contours would otherwise spend seconds making attributes it
        already has."""
        files: dict[tuple[int, float | None], dict] = {}  # the attributes of a file size
        with self._lock:
            given = self._given_plus.get(path, -PLUS_KEPT) > time.monotonic() - PLUS_KEPT
        bare = not with_attrs or given  # names only
        chunk = READDIR_NAMES_CHUNK if bare else READDIR_CHUNK
        gave = False
        while True:
            names, entries = self._page(path, start, chunk)
            if bare or not isinstance(entries, LazyEntries):
                yield from zip(names, itertools.repeat(None))
            else:
                for name in names:
                    child = entries.peek(name)
                    attrs = None
                    if isinstance(child, File) and child.size_known:
                        key = (child.size, child.mtime)
                        attrs = files.get(key)
                        if attrs is None:
                            attrs = files[key] = self._attrs(child)
                    elif child is not None and not isinstance(child, File):
                        attrs = self._attrs(child)
                    gave = gave or attrs is not None
                    yield name, attrs
            # a short page is the end: not asked again, as a browsing folder's listing
            # may be refreshed between two asks
            if len(names) < chunk:
                if gave:
                    with self._lock:
                        self._given_plus[path] = time.monotonic()
                return
            start += len(names)

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC):
            raise OSError(errno.EROFS, "dcorfs is read-only")
        node = self.lookup(path)
        if not isinstance(node, File):
            raise OSError(errno.EISDIR, f"{path} is a folder")
        node.view  # make sizes and sources ready before the first read
        rid = path.strip("/").split("/", 1)[0]
        fh = next(self._next_fh)
        with self._lock:
            self._handles[fh] = (rid, node)
            self._in_use[rid] += 1
        return fh

    def read(self, fh: int, offset: int, size: int) -> bytes:
        with self._lock:
            handle = self._handles.get(fh)
        if handle is None:
            raise OSError(errno.EBADF, f"no open file {fh}")
        rid, node = handle
        if offset < 0 or size < 0:
            raise OSError(errno.EINVAL, "negative offset or size")
        try:
            data = node.view.read(offset, size)
        except OSError as exc:
            if exc.errno == errno.ESTALE:  # it changed on DCOR: the next lookup reopens it
                with self._lock:
                    self.resources.pop(rid, None)
            raise
        # every byte asked for up to the end of the file, or an error: the kernel takes a
        # short read for the end of the file (it zero-fills the page and shrinks the
        # file's size), so a program would see a truncated array, not a failure
        wanted = max(0, min(size, node.size - offset))
        if len(data) != wanted:
            log.warning("DCF107 a read of %s at %d gave %d bytes, not %d; failed instead",
                        rid, offset, len(data), wanted)
            raise OSError(errno.EIO, f"short read: {len(data)} of {wanted} bytes")
        return data

    def release(self, fh: int) -> None:
        with self._lock:
            handle = self._handles.pop(fh, None)
            if handle is not None:
                self._in_use[handle[0]] -= 1
                if self._in_use[handle[0]] <= 0:
                    del self._in_use[handle[0]]

    def status(self) -> dict:
        """What the mount is doing, for ``getfattr -n user.dcorfs.status MOUNT``."""
        with self._lock:
            resources = sorted(self.resources)
            open_files = len(self._handles)
            warm_up = dict(self._warm_up)
        return {"version": __version__, "host": self.config.host,
                "token": bool(self.config.token), "mounted_at": self.mounted_at,
                "uptime_s": round(time.time() - self.mounted_at, 1),
                "resources": resources, "open_files": open_files,
                "cache": {"bytes": self.cache.current_bytes, "max_bytes": self.cache.max_bytes,
                          "block_size": self.cache.block_size, "block_hits": self.cache.hits,
                          "blocks_fetched": self.cache.misses,
                          "decoded_chunks_from_disk": self.cache.derived_hits},
                "disk_cache": self.disk.status() if self.disk is not None else None,
                "network": {**self.reach.status(), "api_requests": self.api.requests,
                            "range_requests": self.fetcher.requests,
                            "range_bytes": self.fetcher.bytes,
                            "background": self.background.counts(),
                            # the proxy each host is reached through (None: directly)
                            "proxy": {"api": proxy_shown(proxy_for(self.config.host,
                                                                   self.config.proxy)),
                                      "store": proxy_shown(proxy_for(self._store_url,
                                                                     self.config.proxy))
                                      if self._store_url else None}},
                "decoder": native_filters.availability(),
                "hdf5": {"files_opened": 0, "kept_layouts_used": 0, "small_datasets_parsed": 0,
                         "small_datasets_h5py": 0,
                         **self.shared.counts.snapshot()},
                "warm_up": warm_up,
                "store_mirror": self.mirror.status() if self.mirror is not None else None,
                "timeouts": {"request_s": self.config.timeout,
                             "operation_s": self.config.op_timeout}}

    # The kernel asks for attributes only of what it has looked up, and ``ls -l`` asks
    # for every entry (ACLs, SELinux labels): answered without a lookup, which for a
    # contour would open its HDF5 dataset again.
    def listxattr(self, path: str) -> list[str]:
        return [STATUS_XATTR] if path.strip("/") == "" else []

    def getxattr(self, path: str, name: str) -> bytes:
        """The status at the root; nothing else has attributes.  Below the root the
        answer is "not supported", not "no such attribute": ``ls -l`` then stops asking
        (coreutils remembers a device without ACL and SELinux support) instead of
        asking twice per entry, which for 220,000 contours was 440,000 calls."""
        if path.strip("/") == "":
            if name == STATUS_XATTR:
                return (json.dumps(self.status(), indent=1) + "\n").encode()
            raise OSError(errno.ENODATA, f"no attribute {name}")
        raise OSError(errno.ENOTSUP, f"no extended attributes below the root ({name})")

    def statfs(self) -> dict:
        return {"f_bsize": BLKSIZE, "f_frsize": BLKSIZE, "f_blocks": 0, "f_bfree": 0,
                "f_bavail": 0, "f_files": len(self.resources), "f_ffree": 0, "f_namemax": 255}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.background.shutdown()
        self.shared.decoders.close()
        for res in list(self.resources.values()):
            res.close()
        self.cache.close()
        if self.disk is not None:
            self.disk.close()
