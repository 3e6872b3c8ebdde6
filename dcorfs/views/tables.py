"""Tables given as ``[column names | None, rows]`` as NumPy structured arrays."""
from __future__ import annotations

import numpy as np


def table_array(content: list) -> np.ndarray:
    """``[column names | None, rows]`` (dclab's table form), singleton axes dropped.

    HDF5 stores rec-array tables as (M, 1) compound datasets; the trailing unit axes
    carry no information, so the file is a plain (M,) structured array.
    """
    names, rows = content
    data = np.asarray(rows)
    if data.dtype.char == "O":
        data = np.asarray(rows, dtype=float)  # None (NaN on the server) becomes NaN
    if names is None:
        return np.ascontiguousarray(data, dtype=float)
    dtype = np.dtype({"names": list(names), "formats": [np.float64] * len(names)})
    data = np.ascontiguousarray(data, dtype=np.float64).reshape(-1, len(names))
    out = np.empty(len(data), dtype=dtype)
    for i, name in enumerate(names):
        out[name] = data[:, i]
    return out
