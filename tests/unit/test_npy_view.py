"""``.npy`` views: byte offsets map to the right rows, and the bytes equal np.save's."""
from __future__ import annotations

import errno
import random

import numpy as np
import pytest
from harness import npy_bytes

from dcorfs.views.npy_format import npy_header
from dcorfs.views.view import BytesView, LazyBytesView, NpyView

ARRAYS = [np.arange(1000, dtype="<f8"), np.zeros((0,), "<f4"),
          np.arange(7 * 5 * 3, dtype="|u1").reshape(7, 5, 3),
          np.array([True, False, True]), np.arange(12, dtype="<i2").reshape(4, 3),
          np.zeros(5, dtype=[("a", "<f8"), ("b", "<f8")])]


class Rows:
    """A fake row reader that records what it was asked for."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.asked: list[tuple[int, int]] = []

    def __call__(self, r0: int, r1: int) -> np.ndarray:
        self.asked.append((r0, r1))
        return self.array[r0:r1]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
def test_every_range_reads_exactly_the_saved_bytes(array):
    reference = npy_bytes(array)
    rows = Rows(array)
    view = NpyView(array.dtype, array.shape, rows)
    assert view.size == len(reference)
    assert view.header == reference[:len(view.header)] and len(view.header) % 64 == 0
    rng = random.Random(1)
    for _ in range(300):
        offset = rng.randrange(0, len(reference) + 10)
        size = rng.choice([0, 1, 7, 64, 100, 4096, 1 << 20])
        assert view.read(offset, size) == reference[offset:offset + size]
    row_bytes = view.row_bytes
    for r0, r1 in rows.asked:  # only rows that hold asked-for bytes, each only once
        assert 0 <= r0 < r1 <= max(1, array.shape[0])
    if row_bytes and array.shape[0] >= 4:
        rows.asked.clear()
        start = len(view.header) + 2 * row_bytes + 1
        view.read(start, row_bytes)  # ends inside the fourth row
        assert rows.asked == [(2, 4)]


def test_the_header_alone_reads_no_rows():
    rows = Rows(np.arange(100.0))
    view = NpyView(np.dtype("<f8"), (100,), rows)
    assert view.read(0, len(view.header)) == view.header
    assert rows.asked == []


def test_rows_of_the_wrong_shape_are_an_error_not_data():
    view = NpyView(np.dtype("<f8"), (10,), lambda r0, r1: np.zeros(r1 - r0 - 1))
    with pytest.raises(OSError) as info:
        view.read(0, view.size)
    assert info.value.errno == errno.EIO


def test_headers_equal_np_save_for_every_dtype_and_shape():
    for dtype in ["<f8", "<f4", "|u1", "|b1", "<i2", "<i4", "<i8", "<u4", "<u8",
                  [("a", "<f8"), ("b", "<f8")]]:
        for shape in [(0,), (1,), (47,), (5000,), (10, 80, 250), (0, 177), (3, 1)]:
            header = npy_header(np.dtype(dtype), shape)
            assert npy_bytes(np.zeros(shape, dtype=dtype))[:len(header)] == header, (dtype, shape)


def test_text_views():
    assert BytesView(b"abc").read(1, 10) == b"bc"
    made = []
    lazy = LazyBytesView(lambda: made.append(1) or b"hello")
    assert made == []  # nothing produced before it is needed
    assert lazy.size == 5 and lazy.read(3, 2) == b"lo" and made == [1]
