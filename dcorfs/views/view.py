"""File contents as byte ranges: .npy over rows of a dataset, in-memory text, passthrough.

A view has an exact ``size`` before any data is read and answers
``read(offset, size)``.  ``NpyView`` maps a byte range to the rows it covers,
asks a row reader for just those rows and cuts the answer to the bytes requested.
"""
from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

from ..io.remote_object import RemoteObject
from ..io.sequential import SequentialReadahead
from .npy_format import npy_header

RowReader = Callable[[int, int], np.ndarray]


class View(Protocol):
    size: int

    def read(self, offset: int, size: int) -> bytes: ...


class BytesView:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read(self, offset: int, size: int) -> bytes:
        return self.data[offset:offset + size]


class LazyBytesView:
    """Content produced on first use (e.g. from an API query), size included."""

    def __init__(self, produce: Callable[[], bytes]) -> None:
        self._produce = produce
        self._data: bytes | None = None
        self._lock = threading.Lock()

    @property
    def content(self) -> bytes:
        with self._lock:
            if self._data is None:
                self._data = self._produce()
            return self._data

    @property
    def size(self) -> int:  # type: ignore[override]
        return len(self.content)

    def read(self, offset: int, size: int) -> bytes:
        return self.content[offset:offset + size]


class NpyView:
    """An array of ``shape`` and ``dtype`` as an .npy file, rows read on demand."""

    def __init__(self, dtype: np.dtype, shape: tuple[int, ...], rows: RowReader) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self.header = npy_header(self.dtype, self.shape)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.nrows = self.shape[0] if self.shape else 1
        self.size = len(self.header) + self.nrows * self.row_bytes
        self._rows = rows

    def rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``[r0, r1)`` (within the array), checked to be exactly those: the other
        views (text, TIFF) are made from them too."""
        rows = np.ascontiguousarray(self._rows(r0, r1), dtype=self.dtype)
        expected = (r1 - r0,) + self.shape[1:]
        if rows.shape != expected:
            raise OSError(errno.EIO, f"rows {r0}-{r1} came back as {rows.shape}, "
                                     f"expected {expected}")
        return rows

    def read(self, offset: int, size: int) -> bytes:
        head, dstart, dend = split_at_header(self.header, offset, min(offset + size, self.size))
        if dend <= dstart or not self.row_bytes:
            return head
        r0, r1 = dstart // self.row_bytes, -(-dend // self.row_bytes)
        raw = self.rows(r0, r1).tobytes()
        skip = dstart - r0 * self.row_bytes
        return head + raw[skip:skip + (dend - dstart)]


def split_at_header(header: bytes, offset: int, end: int) -> tuple[bytes, int, int]:
    """For a file of ``header`` and then rows: the header's bytes within ``[offset,
    end)``, and the rest of that range as offsets into the rows' bytes (empty when the
    second is not past the first)."""
    hlen = len(header)
    head = header[offset:min(end, hlen)] if offset < hlen else b""
    return head, max(offset, hlen) - hlen, end - hlen


class RemoteBytesView:
    """An artifact byte for byte (``data.rtdc``), straight through the block cache; read
    front to back, it streams ahead (``io/sequential.py``)."""

    def __init__(self, obj) -> None:
        self.obj = obj
        self.size = obj.size
        self._stream = SequentialReadahead(obj)

    def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.size)
        self._stream.before_read(offset, end)
        return self.obj.read(offset, end)


class LazyRemoteView:
    """A file whose size is known in advance and whose bytes come from a remote object
    made on the first read (``stat`` of a listed resource costs no request)."""

    def __init__(self, size: int, open_object: Callable[[], RemoteObject]) -> None:
        self.size = size
        self._open = open_object
        self._obj: RemoteBytesView | None = None
        self._lock = threading.Lock()

    def read(self, offset: int, size: int) -> bytes:
        with self._lock:
            if self._obj is None:
                self._obj = RemoteBytesView(self._open())
        end = min(offset + size, self.size)
        return self._obj.read(offset, end - offset) if end > offset else b""
