"""What mounting needs from the system: /dev/fuse, fusermount3, libfuse."""
from __future__ import annotations

import os
import shutil
import subprocess


def fusermount() -> str | None:
    """The path of fusermount3 (or fusermount), or None."""
    return shutil.which("fusermount3") or shutil.which("fusermount")


def fuse_problem() -> str | None:
    """Why FUSE cannot work here, with what to install, or None if it can."""
    if not os.path.exists("/dev/fuse"):
        return ("/dev/fuse is missing: load the module (sudo modprobe fuse) or, in a container, "
                "start it with --device /dev/fuse --cap-add SYS_ADMIN")
    if fusermount() is None:
        return "fusermount3 is missing: install FUSE 3 (Debian/Ubuntu: sudo apt-get install fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return (f"the FUSE library cannot be loaded ({exc}): install libfuse3 "
                f"(Debian/Ubuntu: sudo apt-get install fuse3)")
    return None


def unmount(mountpoint: str | os.PathLike, lazy: bool = False,
            timeout: float = 30.0) -> subprocess.CompletedProcess:
    """``fusermount3 -u`` (``-z`` when ``lazy``); ``umount`` where FUSE's tool is missing."""
    tool = fusermount()
    argv = ([tool, "-u"] + (["-z"] if lazy else []) if tool
            else ["umount"] + (["-l"] if lazy else []))
    return subprocess.run(argv + [str(mountpoint)], capture_output=True, text=True,
                          timeout=timeout, check=False)
