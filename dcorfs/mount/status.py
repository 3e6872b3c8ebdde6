"""Reading a mount's status from outside the daemon: the ``user.dcorfs.status`` xattr
on the mount's root, as JSON.  Used by the demo, the benchmark and the tests."""
from __future__ import annotations

import errno
import json
import os
import time

from ..core.filesystem import STATUS_XATTR


def read_status(mountpoint: str | os.PathLike) -> dict:
    """The status a mounted dcorfs reports (see ``Filesystem.status``)."""
    return json.loads(os.getxattr(mountpoint, STATUS_XATTR))


def wait_until_warm(mountpoint: str | os.PathLike, timeout: float = 30.0) -> dict:
    """Wait until the mount's warm-up has ended (done or failed) and return its status.

    A measurement that starts while the mount still opens its connections would
    count the warm-up's requests as its own.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(mountpoint)
        if status.get("warm_up", {}).get("state") not in ("running", "not started"):
            return status
        if time.monotonic() > deadline:
            raise OSError(errno.ETIMEDOUT, f"{mountpoint}: warm-up still running after {timeout} s")
        time.sleep(0.02)
