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
from collections.abc import Callable
from typing import Any, TypeVar

import mfusepy

from ..io.deadline import deadline
from ..io.reachability import Unreachable
from .filesystem import Filesystem, FsConfig

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


# names handed to FUSE per call; the kernel's buffer takes about a hundred at a time
READDIR_PAGE = 512


class DcorOperations(mfusepy.Operations):
    use_ns = True

    def __init__(self, fs: Filesystem, op_timeout: float) -> None:
        self.fs = fs
        self.op_timeout = op_timeout

    @_errors_mapped
    def getattr(self, path: str, fh: int | None = None) -> dict:
        attrs = self.fs.getattr(path)
        for key in ("st_atime", "st_mtime", "st_ctime"):
            attrs[key] = int(attrs[key] * 1e9)
        return attrs

    @_errors_mapped
    def readdir_with_offset(self, path: str, offset: int, fh: int) -> list[tuple[str, None, int]]:
        """A page of a folder from ``offset`` (the kernel's cookie: the position after
        the last entry it took); FUSE calls again for the next page until one is empty."""
        dots = [(".", None, 1), ("..", None, 2)][offset:]
        start = max(0, offset - 2)
        names = self.fs.readdir_page(path, start, READDIR_PAGE)
        return dots + [(name, None, start + i + 3) for i, name in enumerate(names)]

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
        self.fs.warm_up()

    def destroy(self, path: str) -> None:
        self.fs.close()


def run_mount(mountpoint: pathlib.Path, config: FsConfig, fuse_options: list[str]) -> int:
    """Mount and serve until unmounted; returns the exit code."""
    fs = Filesystem(config)
    options: dict[str, Any] = {
        "fsname": "dcorfs", "subtype": "dcorfs", "ro": True, "default_permissions": True,
        "kernel_cache": True, "attr_timeout": 3600, "entry_timeout": 3600,
        "negative_timeout": 10,
    }
    for opt in fuse_options:
        for item in opt.split(","):
            key, sep, value = item.partition("=")
            if key:
                options[key.strip()] = value if sep else True
    log.info("DCM503 mounting %s at %s", config.host, mountpoint)
    try:
        mfusepy.FUSE(DcorOperations(fs, config.op_timeout), str(mountpoint), foreground=True, nothreads=False,
                     **options)
    except RuntimeError as exc:
        log.error("DCM504 FUSE ended with an error: %s", exc)
        return 1
    log.info("DCM505 unmounted %s", mountpoint)
    return 0
