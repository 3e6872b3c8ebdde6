"""Every file of ../shared/data through the mount equals dclab's DCOR client, byte for byte.

The oracle is dclab's own DCOR client against the same local server
(``dclab.new_dataset(rid, host=..., use_ssl=False)``), and ``np.save`` of what it
returns: values, dtype, shape and the .npy bytes.
"""
from __future__ import annotations

import hashlib
import io
import json
import pathlib
import warnings

import numpy as np
import pytest

from conftest import SHARED_DATA, npy_bytes

dclab = pytest.importorskip("dclab")

# a placeholder keeps the tests (and so the data fixture's clear failure) when data is missing
ALL_FILES = sorted(p.relative_to(SHARED_DATA).as_posix()
                   for p in SHARED_DATA.rglob("*.rtdc")) or ["(no ../shared/data)"]

# Features dclab can read that dcorfs deliberately does not list (see README, "Limits").
UNSUPPORTED = {
    # image stored in dclab's "h5datasetchop" internal basin (cropped event images)
    ("generated/dcnum_thresh_example_cropped.rtdc", "image"),
}


def assert_same(path: pathlib.Path, expected: np.ndarray) -> None:
    raw = path.read_bytes()
    got = np.load(io.BytesIO(raw))
    assert got.dtype == expected.dtype, path
    assert got.shape == expected.shape, path
    assert np.array_equal(got, expected, equal_nan=got.dtype.kind == "f"), path
    assert raw == npy_bytes(expected), f"{path}: bytes differ from np.save"


def open_dclab(server, rid: str, relpath: str):
    private = relpath.startswith("DCOR-Aid/")
    return dclab.new_dataset(rid, host=server.url.split("//")[1], use_ssl=False,
                             api_key=server.token if private else "")


@pytest.mark.parametrize("relpath", ALL_FILES)
def test_resource_equals_dclab(server, mount, relpath):
    rid = server.ids[relpath]
    folder = mount.path / rid
    listing = set(p.name for p in folder.iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_dclab(server, rid, relpath) as ds:
            features = sorted(ds.features_basin)
            assert features, "dclab sees no features"
            for feat in features:
                if (relpath, feat) in UNSUPPORTED:
                    with pytest.raises(FileNotFoundError):
                        (folder / f"{feat}.npy").stat()
                    continue
                if feat == "contour":
                    names = sorted(p.name for p in (folder / "contour").iterdir())
                    assert len(names) == len(ds["contour"])
                    for i, name in enumerate(names):
                        assert int(name[:-4]) == i
                        assert_same(folder / "contour" / name, np.asarray(ds["contour"][i]))
                elif feat == "trace":
                    names = sorted(p.name[:-4] for p in (folder / "trace").iterdir())
                    assert names == sorted(ds["trace"].keys())
                    for name in names:
                        assert_same(folder / "trace" / f"{name}.npy",
                                    np.asarray(ds["trace"][name][:]))
                elif feat in ("image", "image_bg", "mask", "qpi_pha", "qpi_amp",
                              "qpi_oah", "qpi_oah_bg"):
                    assert_same(folder / f"{feat}.npy", np.asarray(ds[feat][:]))
                else:
                    assert_same(folder / f"{feat}.npy", np.asarray(ds[feat]))
            # nothing listed that dclab does not report
            npy = {n[:-4] for n in listing if n.endswith(".npy")}
            assert npy <= set(features)

            logs = {p.name: p.read_text(encoding="utf-8") for p in (folder / "logs").iterdir()}
            assert sorted(logs) == sorted(f"{k}.txt" for k in ds.logs)
            for name in ds.logs:
                assert logs[f"{name}.txt"] == "".join(f"{line}\n" for line in ds.logs[name])

            tables = sorted(p.name for p in (folder / "tables").iterdir())
            assert tables == sorted(f"{k}.npy" for k in ds.tables)
            for name in ds.tables:
                expected = np.asarray(ds.tables[name])
                got = np.load(folder / "tables" / f"{name}.npy")
                if expected.dtype.names:
                    assert got.dtype.names == expected.dtype.names
                    expected = expected.reshape(-1)
                    for col in expected.dtype.names:
                        assert np.array_equal(got[col], expected[col], equal_nan=True)
                else:
                    assert np.array_equal(got, expected, equal_nan=True)

    meta = json.loads((folder / "metadata.json").read_text())
    assert meta == server.dcserv(rid, "metadata")["result"]


@pytest.mark.parametrize("relpath", ALL_FILES)
def test_data_rtdc_is_the_original(server, mount, relpath):
    rid = server.ids[relpath]
    data = (mount.path / rid / "data.rtdc").read_bytes()
    original = (SHARED_DATA / relpath).read_bytes()
    assert len(data) == len(original)
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(original).hexdigest()


def test_dclab_opens_mounted_data_rtdc(server, mount):
    relpath = "DCscope/calibration_beads_47.rtdc"
    mounted = mount.path / server.ids[relpath] / "data.rtdc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dclab.new_dataset(mounted) as ds, dclab.new_dataset(SHARED_DATA / relpath) as ref:
            assert sorted(ds.features_innate) == sorted(ref.features_innate)
            for feat in ("deform", "area_um", "bright_avg"):
                assert np.array_equal(ds[feat], ref[feat])
            assert np.array_equal(ds["image"][7], ref["image"][7])


def test_condensed_rtdc_is_the_servers(server, mount):
    relpath = "DCscope/calibration_beads_47.rtdc"
    rid = server.ids[relpath]
    basins = server.dcserv(rid, "basins")["result"]
    import requests

    expected = requests.get(basins[0]["urls"][0], timeout=30).content
    got = (mount.path / rid / "condensed.rtdc").read_bytes()
    assert hashlib.sha256(got).digest() == hashlib.sha256(expected).digest()


def test_image_mmap_random_access(server, mount):
    relpath = "DCscope/naiad-capture_blood_pipeline.rtdc"
    rid = server.ids[relpath]
    images = np.load(mount.path / rid / "image.npy", mmap_mode="r")
    masks = np.load(mount.path / rid / "mask.npy", mmap_mode="r")
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_dclab(server, rid, relpath) as ds:
            assert images.shape == (len(ds),) + ds["image"][0].shape
            for index in rng.choice(len(ds), size=12, replace=False):
                assert np.array_equal(images[index], ds["image"][index])
                assert np.array_equal(masks[index], ds["mask"][index])
