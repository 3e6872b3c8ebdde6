"""features.tsv on its own: exact text, exact sizes, rows read only where asked."""
from __future__ import annotations

import concurrent.futures
import io

import numpy as np
import pytest
from harness import array_view

from dcorfs.views.tsv import TsvView, field_format
from dcorfs.tuning import TUNING


@pytest.fixture(scope="module")
def pool():
    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        yield executor


def extremes(dtype) -> np.ndarray:
    """The values hardest to print in a fixed width, and to read back."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        info = np.finfo(dtype)
        return np.array([0.0, -0.0, 1 / 3, -2 / 3, info.max, -info.max, info.tiny,
                         -info.smallest_subnormal, info.eps, np.nan, np.inf, -np.inf,
                         min(123456789.123, float(info.max)), float(info.tiny) / 3],
                        dtype=np.float64).astype(dtype)
    if dtype.kind == "b":
        return np.array([True, False, True], dtype=bool)
    info = np.iinfo(dtype)
    return np.array([info.min, info.max, 0, 1, info.max // 3], dtype=dtype)


DTYPES = ["<f8", "<f4", "<f2", "?", "i1", "u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8"]


def test_every_type_reads_back_exactly(pool):
    columns = {f"c{i}_{np.dtype(t).name}": extremes(t) for i, t in enumerate(DTYPES)}
    n = min(len(a) for a in columns.values())
    view = TsvView([(name, array_view(a[:n])) for name, a in columns.items()], pool)
    text = view.read(0, view.size)
    assert len(text) == view.size
    lines = text.decode("ascii").splitlines()
    assert lines[0].split("\t") == list(columns) and len(lines) == n + 1
    assert len({len(line) for line in lines[1:]}) == 1  # fixed width
    for col, (name, array) in enumerate(columns.items()):
        fields = [line.split("\t")[col].strip() for line in lines[1:]]
        if array.dtype.kind == "f":
            got = np.array([float(f) for f in fields]).astype(array.dtype)
            nan = np.isnan(array[:n])
            assert np.array_equal(np.isnan(got), nan), name
            assert got[~nan].tobytes() == array[:n][~nan].tobytes(), name
            assert {f for f, x in zip(fields, array) if not np.isfinite(x)} <= {"NaN", "Inf", "-Inf"}
        else:
            assert [int(f) for f in fields] == [int(x) for x in array[:n]], name
    # NumPy reads it as it is
    loaded = np.loadtxt(io.BytesIO(text), delimiter="\t", skiprows=1)
    assert loaded.shape == (n, len(columns))


def test_random_reads_cut_the_same_text_and_read_only_their_rows(pool):
    rng = np.random.default_rng(0)
    deform, area = rng.random(5000), rng.random(5000).astype(np.float32) * 100
    asked: list = []
    view = TsvView([("deform", array_view(deform, asked)), ("area_um", array_view(area, asked))], pool)
    whole = view.read(0, view.size)
    assert len(whole) == view.size == len(view.header) + 5000 * view.row_bytes
    view = TsvView([("deform", array_view(deform, asked)), ("area_um", array_view(area, asked))], pool)
    asked.clear()
    start = len(view.header) + 3500 * view.row_bytes + 3
    assert view.read(start, 2 * view.row_bytes) == whole[start:start + 2 * view.row_bytes]
    # both columns, once each, the rows of the block that holds rows 3500-3502 only
    block = 3500 // TUNING.tsv_block_rows * TUNING.tsv_block_rows
    assert asked == [(block, block + TUNING.tsv_block_rows)] * 2
    for offset in rng.integers(0, view.size, 40):
        assert view.read(int(offset), 777) == whole[offset:offset + 777]
    assert view.read(view.size, 10) == b""


@pytest.mark.parametrize("events", [0, 1, 7])
def test_sizes_are_exact_before_reading(pool, events):
    asked: list = []
    view = TsvView([("deform", array_view(np.arange(events, dtype=float), asked)),
                    ("frame", array_view(np.arange(events, dtype=np.uint64), asked)),
                    ("image", array_view(np.zeros((events, 2, 2), np.uint8), asked))], pool)
    size = view.size
    assert asked == []  # the size needed no data
    assert view.header == b"deform\tframe\n"  # not scalar: left out
    assert len(view.read(0, size + 100)) == size


def test_columns_of_different_lengths_cut_the_table(pool):
    view = TsvView([("a", array_view(np.arange(5.0))), ("b", array_view(np.arange(3.0)))], pool)
    assert view.nrows == 3


def test_unprintable_types_are_left_out(pool):
    assert field_format(np.dtype("V8")) is None and field_format(np.dtype("c16")) is None
    view = TsvView([("z", array_view(np.zeros(3, dtype="c16"))), ("a", array_view(np.arange(3.0)))],
                   pool)
    assert view.names == ["a"]
