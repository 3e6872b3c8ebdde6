"""The FUSE-free core: look up paths, list folders, open and read files.

``Filesystem`` knows the tree (``views.nodes``) and nothing of DCOR: the browsing
folders at the root (``roots``) and the resource folders (``resources``, by id) are
handed to it, and ``build.build`` wires them.  Everything here raises
``OSError(errno.X, message)``; the FUSE adapter maps those once.

A listing is paged from the handle ``opendir`` gave out: the entries its first page saw
are the ones its later pages come from, so a folder that changes between two pages (a
browsing folder refreshed from DCOR, a resource opened) never repeats or skips a name,
and two listings of one folder at once each have their own.
"""
from __future__ import annotations

import dataclasses
import errno
import itertools
import json
import logging
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..ids import is_resource_id
from ..tuning import TUNING, Tuning
from ..views.nodes import Dir, File, LazyEntries, Link, Node
from .resources import OpenResources

log = logging.getLogger(__name__)

#: the attribute a mount's status is read from (at the root)
STATUS_XATTR = "user.dcorfs.status"


@dataclasses.dataclass
class _Folder:
    """An open folder (``opendir``): its node and the entries its listing goes on with."""

    path: str
    node: Dir | None  # None: the root
    entries: Any = None


class Filesystem:
    def __init__(self, roots: Mapping[str, Node], resources: OpenResources, *,
                 status: Callable[[], dict] = dict,
                 on_mount: Callable[[], None] = lambda: None,
                 on_close: Callable[[], None] | None = None,
                 tuning: Tuning = TUNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``roots``: the folders at the root besides the resources; ``status``: what
        the mount reports at ``user.dcorfs.status``; ``on_mount``: run once mounted
        (the warm-up); ``on_close``: run at unmount (by default the resources are
        closed)."""
        self.roots = roots
        self.resources = resources
        self._status = status
        self._on_mount = on_mount
        self._on_close = on_close or resources.close
        self.tuning = tuning
        self._clock = clock
        self._lock = threading.Lock()
        self._files: dict[int, tuple[str, File]] = {}
        self._folders: dict[int, _Folder] = {}
        self._next_fh = itertools.count(1)
        self._given_plus: dict[str, float] = {}  # folder -> when listed with attributes
        self.parts: Any = None  # what ``build`` made (``build.Parts``), if it made this
        self.mounted_at = time.time()
        self.uid = os.getuid()
        self.gid = os.getgid()

    def mounted(self) -> None:
        self._on_mount()

    # -- paths -------------------------------------------------------------------------
    def lookup(self, path: str) -> Node | None:
        """The node at ``path``; None for the root folder."""
        parts = [p for p in path.split("/") if p]
        if not parts:
            return None
        if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
            raise OSError(errno.ENAMETOOLONG, "name longer than 255 bytes")
        node: Node | None = self.roots.get(parts[0])
        if node is None:
            node = self.resources.get(parts[0]).root
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
            return {**base, "st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, "st_size": 0,
                    "st_blksize": self.tuning.blksize}
        if isinstance(node, Link):
            return {**base, "st_mode": stat.S_IFLNK | 0o777, "st_nlink": 1,
                    "st_size": len(node.target.encode())}
        size = node.size
        return {**base, "st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": size,
                "st_blksize": self.tuning.blksize, "st_blocks": (size + 511) // 512}

    def readlink(self, path: str) -> str:
        node = self.lookup(path)
        if not isinstance(node, Link):
            raise OSError(errno.EINVAL, f"{path} is not a symbolic link")
        return node.target

    # -- folders -----------------------------------------------------------------------
    def opendir(self, path: str) -> int:
        node = self.lookup(path)
        if node is not None and not isinstance(node, Dir):
            raise OSError(errno.ENOTDIR, f"{path} is not a folder")
        fh = next(self._next_fh)
        with self._lock:
            self._folders[fh] = _Folder(path, node)
        return fh

    def releasedir(self, fh: int) -> None:
        with self._lock:
            self._folders.pop(fh, None)

    def readdir(self, path: str) -> list[str]:
        """Every name in a folder (for small folders and tests; FUSE pages through
        ``readdir_plus``)."""
        return self.readdir_page(path, 0, sys.maxsize)

    def readdir_page(self, path: str, start: int, count: int) -> list[str]:
        """``count`` names of a folder from position ``start``, as one listing."""
        fh = self.opendir(path)
        try:
            return self._page(self._folder(fh), start, count)[0]
        finally:
            self.releasedir(fh)

    def _folder(self, fh: int) -> _Folder:
        with self._lock:
            folder = self._folders.get(fh)
        if folder is None:
            raise OSError(errno.EBADF, f"no open folder {fh}")
        return folder

    def _page(self, folder: _Folder, start: int, count: int) -> tuple[list[str], Any]:
        """A page of names, and the entries they come from (a list for the root).  A
        listing from the start takes the folder's entries anew (``rewinddir`` sees
        changes); later pages come from what it took."""
        if start == 0 or folder.entries is None:
            folder.entries = self._entries(folder, start)
        entries = folder.entries
        if isinstance(entries, LazyEntries):
            return entries.names_from(start, count), entries
        return list(itertools.islice(entries, start, start + count)), entries

    def _entries(self, folder: _Folder, start: int) -> Any:
        if folder.node is None:
            return sorted(self.roots) + self.resources.ids()
        parts = [p for p in folder.path.split("/") if p]
        if start == 0 and len(parts) == 1 and is_resource_id(parts[0]):
            # a resource folder: its entries are about to be stat'ed
            self.resources.get(parts[0]).prepare_listing()
        return folder.node.entries

    def readdir_plus(self, fh: int, start: int,
                     with_attrs: bool = True) -> Iterator[tuple[str, dict | None]]:
        """The names of the open folder ``fh`` from position ``start``, each with its
        attributes where they are known without a request of its own (the kernel then
        skips looking it up: ``ls -l`` of 220,000 contours makes 220,000 lookups
        otherwise), else None; without ``with_attrs``, names only.  Lazy: the kernel
        takes a few dozen entries with attributes at a time, and thousands of names
        without, and only what it takes is made.  The attributes are shared between
        files of one size: not to be changed.

        Once a listing with attributes reached a folder's end (the kernel asks for
        them on later pages only while the names are being stat'ed, so it has every
        entry by then), the folder is listed without them for ``plus_kept``: a second
        ``ls -l`` of 220,000 contours would otherwise spend seconds making attributes
        the kernel already has."""
        folder = self._folder(fh)
        files: dict[tuple[int, float | None], dict] = {}  # the attributes of a file size
        with self._lock:
            given = self._given_plus.get(folder.path)
        bare = not with_attrs or (given is not None
                                  and given > self._clock() - self.tuning.plus_kept)
        chunk = self.tuning.readdir_names_chunk if bare else self.tuning.readdir_chunk
        gave = False
        while True:
            names, entries = self._page(folder, start, chunk)
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
            if len(names) < chunk:  # a short page is the end
                if gave:
                    with self._lock:
                        self._given_plus[folder.path] = self._clock()
                return
            start += len(names)

    # -- files -------------------------------------------------------------------------
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
            self._files[fh] = (rid, node)
        self.resources.opened(rid)
        return fh

    def read(self, fh: int, offset: int, size: int) -> bytes:
        with self._lock:
            handle = self._files.get(fh)
        if handle is None:
            raise OSError(errno.EBADF, f"no open file {fh}")
        rid, node = handle
        if offset < 0 or size < 0:
            raise OSError(errno.EINVAL, "negative offset or size")
        try:
            data = node.view.read(offset, size)
        except OSError as exc:
            if exc.errno == errno.ESTALE:  # it changed on DCOR: the next lookup reopens it
                self.resources.drop(rid)
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
            handle = self._files.pop(fh, None)
        if handle is not None:
            self.resources.released(handle[0])

    # -- the mount ---------------------------------------------------------------------
    def status(self) -> dict:
        """What the mount is doing, for ``getfattr -n user.dcorfs.status MOUNT``."""
        with self._lock:
            open_files = len(self._files)
        return {**self._status(), "mounted_at": self.mounted_at,
                "uptime_s": round(time.time() - self.mounted_at, 1),
                "resources": self.resources.ids(), "open_files": open_files}

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
        return {"f_bsize": self.tuning.blksize, "f_frsize": self.tuning.blksize,
                "f_blocks": 0, "f_bfree": 0, "f_bavail": 0, "f_files": len(self.resources),
                "f_ffree": 0, "f_namemax": 255}

    def close(self) -> None:
        self._on_close()
