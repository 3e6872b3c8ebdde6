"""The thin FUSE layer: the only module that imports the FUSE binding.

It turns paths and file handles into calls on ``Filesystem`` and maps errors once:
``OSError`` keeps its errno, anything else becomes EIO with one log line.  Write
operations are not implemented, and the mount is read-only at the kernel (``ro``).
"""
from __future__ import annotations

import concurrent.futures
import errno
import functools
import logging
import pathlib
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import cachetools
import mfusepy

from ..core.build import FsConfig, build
from ..core.filesystem import Filesystem
from ..io.deadline import deadline
from ..io.reachability import Unreachable
from ..tuning import TUNING
from .memory import keep_large_buffers_mapped

log = logging.getLogger(__name__)

T = TypeVar("T")

# errnos that answer the caller's question (no such name, read-only, not a folder)
# rather than report a failure of the mount: not worth a warning
ANSWERS = {errno.ENOENT, errno.ENODATA, errno.EROFS, errno.ENOTDIR, errno.EISDIR,
           errno.ENAMETOOLONG, errno.EINVAL, errno.EBADF, errno.ENOTSUP}


def _errors_mapped(func: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(func)
    def wrapper(self: "DcorOperations", *args: Any) -> T:
        try:
            with deadline(self.op_timeout):
                return func(self, *args)
        except mfusepy.FuseOSError:
            raise
        except concurrent.futures.TimeoutError:
            log.warning("DCM506 %s%r: operation deadline of %.0f s exceeded",
                        func.__name__, args[:1], self.op_timeout)
            raise mfusepy.FuseOSError(errno.EIO) from None
        except OSError as exc:
            code = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else errno.EIO
            # offline, "not cached" is the expected answer: DCN901 said once why
            level = (logging.DEBUG if code in ANSWERS else
                     logging.INFO if isinstance(exc, Unreachable) else logging.WARNING)
            log.log(level, "DCM501 %s%r: %s", func.__name__, args[:1], exc.strerror or exc)
            raise mfusepy.FuseOSError(code) from None
        except Exception:  # noqa: BLE001 - anything unexpected is EIO, never a crash
            log.exception("DCM502 %s%r failed unexpectedly", func.__name__, args[:1])
            raise mfusepy.FuseOSError(errno.EIO) from None
    return wrapper


#: libfuse 3: the kernel asks for attributes with the names (``fuse_readdir_flags``),
#: and an entry comes with them (``fuse_fill_dir_flags``)
FUSE_READDIR_PLUS, FUSE_FILL_DIR_PLUS = 1 << 0, 1 << 1


class _FUSE(mfusepy.FUSE):
    """mfusepy's FUSE, handing a folder's entries to libfuse's buffer as they are
    made, and answering the kernel's READDIRPLUS with attributes.  It overrides
    ``readdir_fuse_3`` and uses ``set_st_attrs`` and ``c_stat``, mfusepy's internals,
    which is why ``pyproject.toml`` pins mfusepy below its next major version.

    mfusepy asks the file system for a list of entries per call, and fills every
    entry without attributes.  Here entries are made only until the kernel's buffer
    is full (it holds thousands of names: ``ls`` lists 220,000 contours in 9 calls),
    and the kernel's READDIRPLUS gets attributes where they are known: for
    an entry without them, the kernel looks the name up when it is stat'ed, 220,000
    lookups of about 130 us each for ``ls -l contour/``.  Entries given attributes
    are cached by the kernel instead (for the entry timeout).  The kernel asks for
    them on a folder's first page, and on later ones once its names are being
    looked up (``ls -l``, not ``ls``)."""

    _stats: cachetools.LRUCache = cachetools.LRUCache(maxsize=4096)
    _stats_lock = threading.Lock()

    def readdir_fuse_3(self, path: bytes | None, buf, filler, offset: int, fip,
                       flags: int) -> int:
        listing = getattr(self.operations, "listing", None)
        if listing is None or path is None or not fip:
            return super().readdir_fuse_3(path, buf, filler, offset, fip, flags)
        encoding, errors = self.encoding, self.errors

        def add(name: str, attrs: dict | None, cookie: int) -> bool:
            """Whether the kernel's buffer is full."""
            if attrs is None:
                return filler(buf, name.encode(encoding, errors), None, cookie, 0) != 0
            return filler(buf, name.encode(encoding, errors), self._stat_of(attrs), cookie,
                          FUSE_FILL_DIR_PLUS) != 0

        listing(path.decode(encoding, errors), fip.contents.fh, offset, add,
                bool(flags & FUSE_READDIR_PLUS))
        return 0

    def _stat_of(self, attrs: dict) -> "mfusepy.c_stat":
        """A filled ``struct stat`` (libfuse copies it); the entries of a folder mostly
        share theirs (the contours of one length), so each is filled once."""
        key = tuple(attrs.items())
        with self._stats_lock:
            st = self._stats.get(key)
        if st is None:
            st = mfusepy.c_stat()
            mfusepy.set_st_attrs(st, DcorOperations._ns(dict(attrs)), use_ns=True)
            with self._stats_lock:
                self._stats[key] = st
        return st


class DcorOperations(mfusepy.Operations):
    use_ns = True

    def __init__(self, fs: Filesystem, op_timeout: float) -> None:
        self.fs = fs
        self.op_timeout = op_timeout

    @_errors_mapped
    def getattr(self, path: str, fh: int | None = None) -> dict:
        return self._ns(self.fs.getattr(path))

    @_errors_mapped
    def opendir(self, path: str) -> int:
        return self.fs.opendir(path)

    @_errors_mapped
    def releasedir(self, path: str, fh: int) -> int:
        self.fs.releasedir(fh)
        return 0

    @_errors_mapped
    def listing(self, path: str, fh: int, offset: int,
                add: Callable[[str, dict | None, int], bool], with_attrs: bool) -> None:
        """The entries of the folder open as ``fh`` (``opendir``) from ``offset`` (the
        kernel's cookie: the position after the last entry it took), handed to ``add``
        until it says the kernel's buffer is full; with ``with_attrs``, each with its attributes where the folder knows
        them without a request (``Filesystem.readdir_plus``).  The kernel asks again
        from where it stopped until a call adds nothing, so no call builds the whole
        listing."""
        for name, cookie in ((".", 1), ("..", 2))[offset:]:
            if add(name, None, cookie):
                return
        start = max(0, offset - 2)
        entries = self.fs.readdir_plus(fh, start, with_attrs)
        for cookie, (name, attrs) in enumerate(entries, start + 3):
            if add(name, attrs, cookie):
                return

    @_errors_mapped
    def readdir(self, path: str, fh: int) -> list[str]:
        """Every name of a folder at once: mfusepy registers FUSE's readdir only for
        an operations class that has this, and calls it only where ``_FUSE`` does
        not list through ``listing`` itself (no path)."""
        return [".", ".."] + self.fs.readdir(path)

    @staticmethod
    def _ns(attrs: dict) -> dict:
        for key in ("st_atime", "st_mtime", "st_ctime"):
            attrs[key] = int(attrs[key] * 1e9)
        return attrs

    @_errors_mapped
    def readlink(self, path: str) -> str:
        return self.fs.readlink(path)

    @_errors_mapped
    def open(self, path: str, flags: int) -> int:
        return self.fs.open(path, flags)

    @_errors_mapped
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self.fs.read(fh, offset, size)

    @_errors_mapped
    def release(self, path: str, fh: int) -> int:
        self.fs.release(fh)
        return 0

    @_errors_mapped
    def listxattr(self, path: str) -> list[str]:
        return self.fs.listxattr(path)

    @_errors_mapped
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        return self.fs.getxattr(path, name)

    @_errors_mapped
    def statfs(self, path: str) -> dict:
        return self.fs.statfs()

    @_errors_mapped
    def access(self, path: str, amode: int) -> int:
        if amode & 2:  # W_OK
            raise OSError(errno.EROFS, "dcorfs is read-only")
        self.fs.lookup(path)
        return 0

    def init(self, path: str) -> None:
        """Mounted: open the connections the first read will need (in the background)."""
        self.fs.mounted()

    def destroy(self, path: str) -> None:
        self.fs.close()


def run_mount(mountpoint: pathlib.Path, config: FsConfig, fuse_options: list[str]) -> int:
    """Mount and serve until unmounted; returns the exit code."""
    keep_large_buffers_mapped()
    fs = build(config)
    options: dict[str, Any] = {
        # ``mount``, ``df`` and ``findmnt`` show the host as the source, as for sshfs
        "fsname": urllib.parse.urlsplit(config.host).netloc or config.host,
        "subtype": "dcorfs", "ro": True, "default_permissions": True,
        "max_idle_threads": TUNING.max_idle_threads, "kernel_cache": True,
        "attr_timeout": TUNING.attr_timeout, "entry_timeout": TUNING.entry_timeout,
        "negative_timeout": TUNING.negative_timeout,
    }
    for opt in fuse_options:
        for item in opt.split(","):
            key, sep, value = item.partition("=")
            if key:
                options[key.strip()] = value if sep else True
    log.info("DCM503 mounting %s at %s", config.host, mountpoint)
    try:
        _FUSE(DcorOperations(fs, config.op_timeout), str(mountpoint), foreground=True, nothreads=False,
                     **options)
    except RuntimeError as exc:
        log.error("DCM504 FUSE ended with an error: %s", exc)
        return 1
    log.info("DCM505 unmounted %s", mountpoint)
    return 0
