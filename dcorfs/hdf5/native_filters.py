"""DCOR's own filter pipeline (Zstandard, fletcher32) run outside Python's global lock.

h5py holds the GIL while HDF5 decodes, so one 1 MiB image chunk (about 3 ms) stalls
every other thread of the daemon: the sockets receiving the next chunks and the FUSE
threads answering reads.  dclab writes Zstandard + fletcher32 and nothing else, so
for exactly that pipeline we call the same C code HDF5 would, through ctypes (which
releases the GIL): ``H5_checksum_fletcher32`` from the libhdf5 h5py loaded, and
``ZSTD_decompress`` from hdf5plugin's Zstandard filter library.  The checksum is
verified first, with HDF5's rule (its pre-1.6.3 byte order accepted too), so a
corrupt chunk is still never served.  Any other pipeline, a chunk whose filter mask
skipped a filter, or a missing library symbol: ``decoder_for`` returns None and
HDF5 decodes as before.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from collections.abc import Callable

import h5py
import numpy as np

from .layout import Layout

log = logging.getLogger(__name__)

ZSTD = 32015
FLETCHER32 = h5py.h5z.FILTER_FLETCHER32

Decode = Callable[[bytes, int], "np.ndarray | None"]


class _Native:
    def __init__(self) -> None:
        self.fletcher32 = None
        self.zstd_decompress = None
        self.zstd_is_error = None
        self.problems: list[str] = []
        hdf5 = _loaded_library("libhdf5")
        if hdf5 is None:
            self.problems.append("h5py's libhdf5 not found among the loaded libraries")
        else:
            try:
                func = ctypes.CDLL(hdf5).H5_checksum_fletcher32
                func.restype = ctypes.c_uint32
                func.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
                self.fletcher32 = func
            except (OSError, AttributeError) as exc:
                self.problems.append(f"no native fletcher32: {exc}")
                log.warning("DCC604 no native fletcher32 (%s); HDF5 decodes chunks, "
                            "holding the GIL", exc)
        try:
            import hdf5plugin

            lib = ctypes.CDLL(os.path.join(hdf5plugin.PLUGIN_PATH, "libh5zstd.so"))
            decompress, is_error = lib.ZSTD_decompress, lib.ZSTD_isError
            decompress.restype = ctypes.c_size_t
            decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                   ctypes.c_size_t]
            is_error.restype = ctypes.c_uint
            is_error.argtypes = [ctypes.c_size_t]
            self.zstd_decompress, self.zstd_is_error = decompress, is_error
        except (ImportError, OSError, AttributeError) as exc:
            self.problems.append(f"no native Zstandard: {exc}")
            log.warning("DCC605 no native Zstandard (%s); HDF5 decodes chunks, "
                        "holding the GIL", exc)


def _loaded_library(stem: str) -> str | None:
    """The path of the shared library ``stem`` this process has loaded (h5py's own
    libhdf5, wherever its wheel or the distribution put it)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip()
                name = os.path.basename(path)
                if name.startswith((stem + "-", stem + ".so")):
                    return path
    except OSError:
        pass
    return None


_native: _Native | None = None
_native_lock = threading.Lock()


def _get_native() -> _Native:
    global _native
    with _native_lock:
        if _native is None:
            _native = _Native()
        return _native


def availability() -> dict:
    """For the mount's status: whether dclab's pipeline decodes outside the GIL, and
    if not, why (``decoder.native`` false means every chunk stalls all threads)."""
    native = _get_native()
    return {"native": not native.problems, "problems": list(native.problems)}


def decoder_for(layout: Layout) -> Decode | None:
    """A GIL-free decode(raw, filter_mask) for this dataset's chunks, or None.

    The function returns None for a chunk it must leave to HDF5 (a filter skipped).
    """
    dtype = layout.dtype
    if layout.chunks is None or dtype.kind not in "iuf" or dtype.subdtype is not None:
        return None
    filters = list(layout.filters)
    if filters not in ([ZSTD, FLETCHER32], [ZSTD], [FLETCHER32]):
        return None
    native = _get_native()
    checksum = FLETCHER32 in filters
    compressed = ZSTD in filters
    if (checksum and native.fletcher32 is None) or (compressed and native.zstd_decompress is None):
        return None
    shape = layout.chunks
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize

    def decode(raw: bytes, filter_mask: int) -> np.ndarray | None:
        if filter_mask:
            return None
        if not isinstance(raw, bytes):
            raw = bytes(raw)
        size = len(raw)
        address = ctypes.cast(ctypes.c_char_p(raw), ctypes.c_void_p).value
        if checksum:
            if size < 4:
                raise OSError(errno.EIO, "chunk shorter than its fletcher32 checksum")
            size -= 4
            stored = int.from_bytes(raw[size:], "little")
            computed = native.fletcher32(address, size)
            swapped = ((computed & 0x00FF00FF) << 8) | ((computed >> 8) & 0x00FF00FF)
            if stored not in (computed, swapped):
                raise OSError(errno.EIO, "data error detected by fletcher32 checksum")
        out = np.empty(shape, dtype=dtype)
        if compressed:
            got = native.zstd_decompress(out.ctypes.data, nbytes, address, size)
            if native.zstd_is_error(got) or got != nbytes:
                raise OSError(errno.EIO, f"Zstandard chunk did not decode to {nbytes} bytes")
        else:
            if size != nbytes:
                raise OSError(errno.EIO, f"chunk has {size} bytes, expected {nbytes}")
            out.reshape(-1).view(np.uint8)[:] = np.frombuffer(raw, np.uint8, size)
        return out

    return decode
