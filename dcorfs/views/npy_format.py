"""The .npy header, computed from dtype and shape alone.

Sizes in ``stat`` must be exact before any data is read, so the header has to be
derivable without the data.  We delegate to NumPy's own header writer so the bytes
equal ``np.save`` by construction (including the 64-byte alignment that makes
``np.load(..., mmap_mode="r")`` work).
"""
from __future__ import annotations

import io

import numpy as np
from numpy.lib import format as npformat


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """Return the exact header bytes ``np.save`` writes for an array of this kind."""
    buf = io.BytesIO()
    header = {"descr": npformat.dtype_to_descr(np.dtype(dtype)),
              "fortran_order": False,
              "shape": tuple(int(s) for s in shape)}
    try:
        npformat.write_array_header_1_0(buf, header)
    except ValueError:  # header over 64 KiB: np.save switches to version 2.0 too
        buf = io.BytesIO()
        npformat.write_array_header_2_0(buf, header)
    return buf.getvalue()


def npy_size(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    """Bytes of the .npy file ``np.save`` writes for an array of this kind."""
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    return len(npy_header(dtype, shape)) + count * np.dtype(dtype).itemsize
