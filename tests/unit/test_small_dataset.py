"""Small datasets (contours) read from their own bytes (``hdf5.small_dataset``), against
files h5py writes: the values equal h5py's wherever the parse says it can read them,
and None (h5py reads them) wherever it cannot."""
from __future__ import annotations

import errno

import h5py
import hdf5plugin
import numpy as np
import pytest
from test_group_shapes import LocalFetch

from dcorfs.hdf5 import small_dataset as sd

DCLAB = {"chunks": True, **hdf5plugin.Zstd(clevel=5), "fletcher32": True}


def header_address(h5: h5py.File, name: str) -> int:
    parent, _, leaf = name.rpartition("/")
    group = h5[parent or "/"]  # held: a dropped group closes its id
    return group.id.links.get_info(leaf.encode()).u


def read(path, name: str, damage: dict[int, bytes] | None = None):
    with h5py.File(path, "r") as h5:
        address = header_address(h5, name)
    fetch = LocalFetch(path, damage)
    found = sd.read_header(fetch, address)
    return found, (None if found is None else sd.read_data(fetch, found)), fetch


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One file with a dataset of each kind; the values h5py reads back, by name."""
    path = tmp_path_factory.mktemp("small") / "small.h5"
    rng = np.random.default_rng(3)
    contour = rng.integers(0, 250, (37, 2))
    with h5py.File(path, "w") as h5:
        group = h5.create_group("contour")
        group.create_dataset("dclab", data=contour, chunks=contour.shape,
                             **{k: v for k, v in DCLAB.items() if k != "chunks"})
        for i in range(40):  # consecutive ones, as dclab writes them
            data = rng.integers(0, 250, (int(rng.integers(3, 90)), 2))
            group.create_dataset(str(i), data=data, chunks=data.shape,
                                 **{k: v for k, v in DCLAB.items() if k != "chunks"})
        h5.create_dataset("zstd_only", data=contour.astype("<u2"), chunks=contour.shape,
                          **hdf5plugin.Zstd())
        h5.create_dataset("checksum_only", data=contour.astype("f4"), chunks=contour.shape,
                          fletcher32=True)
        h5.create_dataset("plain_chunk", data=contour.astype(">i4"), chunks=contour.shape)
        h5.create_dataset("big_chunk", data=contour, chunks=(64, 2), maxshape=(None, 2),
                          **hdf5plugin.Zstd())
        h5.create_dataset("contiguous", data=contour.astype(">f8"))
        h5.create_dataset("compact", data=contour[:4].astype("i2"),
                          dcpl=_compact_dcpl())
        h5.create_dataset("gzip", data=contour, chunks=contour.shape, compression="gzip")
        h5.create_dataset("many_chunks", data=contour, chunks=(8, 2), **hdf5plugin.Zstd())
        h5.create_dataset("empty", shape=(0, 2), maxshape=(None, 2), chunks=(16, 2),
                          dtype="i8")
        h5.create_dataset("strings", data=np.array([b"ab", b"cd"]))
        many_attrs = h5.create_dataset("attributes", data=contour, chunks=contour.shape,
                                       **hdf5plugin.Zstd())
        for i in range(60):  # enough to need a continuation block
            many_attrs.attrs[f"attribute number {i}"] = np.arange(8) * i
    with h5py.File(path, "r") as h5:
        expected = {}
        h5.visititems(lambda name, obj: expected.__setitem__(name, obj[()])
                      if isinstance(obj, h5py.Dataset) else None)
    return path, expected


def _compact_dcpl():
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    return dcpl


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["contour/dclab", "zstd_only", "checksum_only",
                                  "plain_chunk", "big_chunk", "contiguous", "compact"])
def test_what_is_parsed_equals_h5py(written, name):
    path, expected = written
    found, data, fetch = read(path, name)
    assert found is not None and data is not None
    assert data.dtype == expected[name].dtype and data.shape == expected[name].shape
    assert np.array_equal(data, expected[name])
    # the header (one read, or two for a long one), the chunk index and the chunk
    assert len(fetch.requests) <= 4


@pytest.mark.timeout(60)
def test_every_consecutive_contour_equals_h5py(written):
    path, expected = written
    for i in range(40):
        found, data, _ = read(path, f"contour/{i}")
        assert np.array_equal(data, expected[f"contour/{i}"]), i
        assert data.dtype == expected[f"contour/{i}"].dtype


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["gzip", "empty"])
def test_data_stored_otherwise_is_left_to_h5py(written, name):
    """A filter native_filters does not run, no chunk written: the header parses (the
    size is known), the values are None."""
    path, expected = written
    found, data, _ = read(path, name)
    assert found is not None and found.shape == expected[name].shape
    assert data is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["many_chunks", "strings", "attributes"])
def test_headers_not_read_here_are_none(written, name):
    """More than one chunk, a type other than numbers, a continuation block (where a
    filter pipeline might hide): h5py reads them."""
    path, _ = written
    found, _, _ = read(path, name)
    assert found is None


@pytest.mark.timeout(60)
def test_a_damaged_chunk_is_eio_never_wrong_values(written):
    path, _ = written
    with h5py.File(path, "r") as h5:
        chunk = h5["contour/dclab"].id.get_chunk_info(0).byte_offset
    with pytest.raises(OSError) as err:
        read(path, "contour/dclab", damage={chunk + 5: b"\xff\x00\xff"})
    assert err.value.errno == errno.EIO


@pytest.mark.timeout(60)
def test_a_damaged_header_is_none(written):
    path, _ = written
    with h5py.File(path, "r") as h5:
        address = header_address(h5, "contour/dclab")
    found, _, _ = read(path, "contour/dclab", damage={address: b"\x07"})  # a version 7
    assert found is None
