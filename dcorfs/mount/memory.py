"""The daemon's heap: large buffers go back to the system when they are freed.

glibc serves an allocation above its mmap threshold (128 KiB at first) with a mapping
of its own, unmapped on free, but then raises the threshold to the size of the block
freed (up to 32 MiB).  After the first 2 MiB range a bulk read frees, every later one
comes from a heap arena instead, and with two dozen fetching threads spread over as
many arenas, the space freed there stays in the daemon's RSS.  A fixed threshold keeps
large buffers (a bulk read's ranges, streamed pieces, decoded image chunks) out of the
arenas.  Other C libraries (musl) have no ``mallopt``: nothing is changed there.
"""
from __future__ import annotations

import ctypes
import logging

from ..tuning import TUNING

log = logging.getLogger(__name__)

#: glibc's ``M_MMAP_THRESHOLD`` parameter of ``mallopt``
M_MMAP_THRESHOLD = -3


def keep_large_buffers_mapped(threshold: int = TUNING.large_buffer) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; whether that was possible."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt: the C library's own heap policy stays")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1
