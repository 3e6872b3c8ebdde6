"""Every file of the corpus through the mount equals dclab, byte for byte.

Two oracles: dclab's own DCOR client against the same local server
(``dclab.new_dataset(rid, host=..., use_ssl=False)``) with ``np.save`` of what it
returns, and dclab reading the local file, which no server can get wrong.  The
corpus is ``corpus.py``'s; with ``DCORFS_TEST_DATA=DIR`` every file below DIR is
compared too.
"""
from __future__ import annotations

import hashlib
import io
import json
import pathlib
import warnings

import numpy as np
import pytest
import requests

import corpus
from conftest import EXTENDED_DATA
from harness import npy_bytes

dclab = pytest.importorskip("dclab")

CASES = [pytest.param("corpus", rel, id=rel) for rel in sorted(corpus.FILES)]
if EXTENDED_DATA is not None:
    CASES += [pytest.param("extended", p.relative_to(EXTENDED_DATA).as_posix(),
                           id=f"extended:{p.relative_to(EXTENDED_DATA).as_posix()}")
              for p in sorted(EXTENDED_DATA.rglob("*.rtdc"))]

# Features dclab can read that dcorfs deliberately does not list (README, "Limits").
UNSUPPORTED = {
    # image stored in dclab's "h5datasetchop" internal basin (cropped event images)
    ("generated/dcnum_thresh_example_cropped.rtdc", "image"),
}
IMAGE_LIKE = ("image", "image_bg", "mask", "qpi_pha", "qpi_amp", "qpi_oah", "qpi_oah_bg")


@pytest.fixture
def where(request):
    """(server, mount, local folder) for a case's kind."""
    def pick(kind: str):
        if kind == "corpus":
            return (request.getfixturevalue("server"), request.getfixturevalue("mount"),
                    request.getfixturevalue("corpus_dir"))
        return (request.getfixturevalue("extended_server"),
                request.getfixturevalue("extended_mount"), EXTENDED_DATA)
    return pick


def assert_same(path: pathlib.Path, expected: np.ndarray) -> None:
    raw = path.read_bytes()
    got = np.load(io.BytesIO(raw))
    assert got.dtype == expected.dtype, path
    assert got.shape == expected.shape, path
    assert np.array_equal(got, expected, equal_nan=got.dtype.kind == "f"), path
    assert raw == npy_bytes(expected), f"{path}: bytes differ from np.save"


def open_dclab(server, rid: str, relpath: str):
    private = relpath.startswith(("private/", "DCOR-Aid/"))
    return dclab.new_dataset(rid, host=server.url.split("//")[1], use_ssl=False,
                             api_key=server.token if private else "")


def readable(ds, feat: str) -> bool:
    """Whether dclab can read a feature it lists."""
    try:
        ds[feat]
    except KeyError:
        return False
    return True


def feature_value(ds, feat: str) -> np.ndarray:
    return np.asarray(ds[feat][:] if feat in IMAGE_LIKE else ds[feat])


@pytest.mark.expect_warnings(maybe=("DCR405",))  # the cropped-image basin of the extended corpus
@pytest.mark.parametrize("kind, relpath", CASES)
def test_resource_equals_dclab(where, kind, relpath):
    server, mount, local_dir = where(kind)
    rid = server.ids[relpath]
    folder = mount.path / rid
    listing = set(p.name for p in folder.iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_dclab(server, rid, relpath) as ds, \
                dclab.new_dataset(local_dir / relpath) as local:
            features = sorted(ds.features_basin)
            assert features, "dclab sees no features"
            compared = 0
            for feat in features:
                if (relpath, feat) in UNSUPPORTED or not readable(ds, feat):
                    # dclab lists what a basin declares, also where that basin does not
                    # answer (a basin inside the file on another store); dcorfs lists
                    # only what opens
                    with pytest.raises(FileNotFoundError):
                        (folder / f"{feat}.npy").stat()
                    continue
                if feat == "contour":
                    names = sorted(p.name for p in (folder / "contour").iterdir())
                    assert len(names) == len(ds["contour"])
                    for i, name in enumerate(names):
                        assert int(name[:-4]) == i
                        assert_same(folder / "contour" / name, np.asarray(ds["contour"][i]))
                        assert_same(folder / "contour" / name, np.asarray(local["contour"][i]))
                elif feat == "trace":
                    names = sorted(p.name[:-4] for p in (folder / "trace").iterdir())
                    assert names == sorted(ds["trace"].keys())
                    for name in names:
                        assert_same(folder / "trace" / f"{name}.npy",
                                    np.asarray(ds["trace"][name][:]))
                else:
                    assert_same(folder / f"{feat}.npy", feature_value(ds, feat))
                    if feat in local.features_innate:
                        assert_same(folder / f"{feat}.npy", feature_value(local, feat))
                        compared += 1
            # nothing listed that dclab does not report
            npy = {n[:-4] for n in listing if n.endswith(".npy")}
            assert npy <= set(features)
            assert compared or not [f for f in local.features_innate
                                    if f not in ("contour", "trace")]

            logs = {p.name: p.read_text(encoding="utf-8") for p in (folder / "logs").iterdir()}
            assert sorted(logs) == sorted(f"{k}.txt" for k in ds.logs)
            for name in ds.logs:
                assert logs[f"{name}.txt"] == "".join(f"{line}\n" for line in ds.logs[name])
            for name in local.logs:  # the server adds the condensed file's log, no other
                assert logs[f"{name}.txt"] == "".join(f"{line}\n" for line in local.logs[name])

            tables = sorted(p.name for p in (folder / "tables").iterdir())
            assert tables == sorted(f"{k}.npy" for k in ds.tables)
            assert sorted(local.tables) == sorted(ds.tables)
            for name in ds.tables:
                got = np.load(folder / "tables" / f"{name}.npy")
                for reference in (np.asarray(ds.tables[name]), np.asarray(local.tables[name])):
                    if reference.dtype.names:
                        assert got.dtype.names == reference.dtype.names
                        reference = reference.reshape(-1)
                        for col in reference.dtype.names:
                            assert np.array_equal(got[col], reference[col], equal_nan=True)
                    else:
                        assert np.array_equal(got, reference, equal_nan=True)
            local_meta = json.loads(json.dumps(
                local.config.as_dict(pop_filtering=True), default=_jsonable))

    meta = json.loads((folder / "metadata.json").read_text())
    assert meta == server.dcserv(rid, "metadata")["result"]
    assert meta == _nan_free(local_meta)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _nan_free(obj):
    """DCOR sends NaN as null (ckanext-dc_serve >= 1.0.9)."""
    if isinstance(obj, dict):
        return {k: _nan_free(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_free(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


@pytest.mark.parametrize("kind, relpath", CASES)
def test_data_rtdc_is_the_original(where, kind, relpath):
    server, mount, local_dir = where(kind)
    rid = server.ids[relpath]
    data = (mount.path / rid / "data.rtdc").read_bytes()
    original = (local_dir / relpath).read_bytes()
    assert len(data) == len(original)
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(original).hexdigest()


def test_dclab_opens_mounted_data_rtdc(server, mount, corpus_dir):
    relpath = "beads/calibration_beads.rtdc"
    mounted = mount.path / server.ids[relpath] / "data.rtdc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dclab.new_dataset(mounted) as ds, dclab.new_dataset(corpus_dir / relpath) as ref:
            assert sorted(ds.features_innate) == sorted(ref.features_innate)
            for feat in ("deform", "area_um", "bright_avg"):
                assert np.array_equal(ds[feat], ref[feat])
            assert np.array_equal(ds["image"][7], ref["image"][7])


def test_condensed_rtdc_is_the_servers(server, mount):
    rid = server.ids["beads/calibration_beads.rtdc"]
    basins = server.dcserv(rid, "basins")["result"]
    expected = requests.get(basins[0]["urls"][0], timeout=30).content
    got = (mount.path / rid / "condensed.rtdc").read_bytes()
    assert len(got) > 0 and got == expected
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dclab.new_dataset(mount.path / rid / "condensed.rtdc") as ds:
            assert len(ds) == 47 and "deform" in ds.features_innate
            assert "image" not in ds.features_innate  # condensed: scalar features only


def test_image_mmap_random_access(server, mount, corpus_dir):
    relpath = "beads/calibration_beads.rtdc"
    rid = server.ids[relpath]
    images = np.load(mount.path / rid / "image.npy", mmap_mode="r")
    masks = np.load(mount.path / rid / "mask.npy", mmap_mode="r")
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dclab.new_dataset(corpus_dir / relpath) as ds:
            assert images.shape == (len(ds),) + ds["image"][0].shape
            for index in rng.choice(len(ds), size=12, replace=False):
                assert np.array_equal(images[index], ds["image"][index])
                assert np.array_equal(masks[index], ds["mask"][index])
