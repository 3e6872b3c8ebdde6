"""Resources as the real DCOR serves them open as dclab opens them.

dcnum data split over two resources (the processed events name the raw file, whose
images DCOR's condensing job reaches through an intra-dataset ``dcor`` basin), an
upload whose condensed file does not exist yet (``--no-condensed``: the store then
answers 403 to an unsigned request, as DCOR's does), scalar features whose names look
like images (``qpi_*``), and DCOR's preview JPEG.  The oracle is dclab's own DCOR
client against the same server, which follows those basins itself.
"""
from __future__ import annotations

import io
import os
import pathlib
import warnings

import numpy as np
import pytest
import requests

import corpus
from conftest import EXTENDED_DATA
from harness import npy_bytes
from test_against_dclab import readable

dclab = pytest.importorskip("dclab")

PAIRS = [pytest.param("dcnum/M1_dcn.rtdc", False, id="public"),
         pytest.param("private/dcnum/M1_dcn.rtdc", True, id="private")]


def open_dclab(server, rid: str, private: bool):
    return dclab.new_dataset(rid, host=server.url.split("//")[1], use_ssl=False,
                             api_key=server.token if private else "")


def expected_value(ds, feature: str) -> np.ndarray:
    value = ds[feature]
    return np.asarray(value[:] if hasattr(value, "shape") and len(value.shape) > 1
                      else value)


@pytest.mark.parametrize("relpath, private", PAIRS)
def test_dcnum_processed_resource_reads_images_of_the_raw_one(server, mount, corpus_dir,
                                                              relpath, private):
    rid = server.ids[relpath]
    folder = mount.path / rid
    basins = server.dcserv(rid, "basins")["result"]
    assert "image" in basins[0]["features"]  # the condensed basin declares it ...
    assert "image" not in basins[1]["features"]  # ... the processed file lacks it
    npy = sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".npy"))
    assert {"image", "image_bg", "mask", "deform"} <= set(npy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_dclab(server, rid, private) as ds, \
                dclab.new_dataset(corpus_dir / relpath) as local:
            assert set(npy) <= set(ds.features)
            for feature in npy:
                expected = expected_value(ds, feature)
                raw = (folder / f"{feature}.npy").read_bytes()
                assert raw == npy_bytes(expected), feature
            # the map is not the identity (frames skipped and repeated): event i
            # shows frame map[i] of the raw file
            index = np.asarray(local["basinmap0"])
            assert len(set(index)) < len(index)
            images = np.load(folder / "image.npy")
            with dclab.new_dataset(corpus_dir / relpath.replace("_dcn", "")) as raw:
                assert len(raw) > len(images)
                assert np.array_equal(images, np.asarray(raw["image"][:])[index])
    # the token went to the API only, never to the object store
    assert server.stats().get("store_auth_headers", 0) == 0


@pytest.mark.expect_warnings("DCF101", "DCM501")  # the refusal is logged
def test_private_dcnum_pair_needs_the_token(server, fresh_mount):
    anonymous = fresh_mount(server.url)
    rid = server.ids["private/dcnum/M1_dcn.rtdc"]
    with pytest.raises(PermissionError):
        os.listdir(anonymous.path / rid)
    with pytest.raises(PermissionError):
        (anonymous.path / rid / "image.npy").stat()


def test_upload_not_condensed_yet(server, mount, corpus_dir):
    """DCOR lists the condensed basin before its file exists, without features; the
    store answers 403 to an unsigned GET of the missing key.  The resource lists
    and reads from the original, as dclab does (the comparison of every file is
    ``test_against_dclab``'s: this resource is served ``--no-condensed`` there)."""
    relpath = next(rel for rel in corpus.FILES if rel.startswith(corpus.NO_CONDENSED_GLOB[:-1]))
    rid = server.ids[relpath]
    basins = server.dcserv(rid, "basins")["result"]
    assert basins[0]["name"].startswith("condensed") and "features" not in basins[0]
    answer = requests.get(basins[0]["urls"][0], headers={"Range": "bytes=0-99"}, timeout=30)
    assert answer.status_code == 403 and b"AccessDenied" in answer.content
    folder = mount.path / rid
    names = set(os.listdir(folder))
    assert "condensed.rtdc" not in names
    assert {"deform.npy", "image.npy", "contour", "features.tsv", "data.rtdc"} <= names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dclab.new_dataset(corpus_dir / relpath) as local:
            assert (folder / "deform.npy").read_bytes() == npy_bytes(np.asarray(local["deform"]))


def test_missing_key_is_403_unsigned_and_404_signed(server):
    """dcor_shared's bucket policy: anonymous clients cannot tell a missing key."""
    rid = server.ids["private/calibration_beads.rtdc"]
    signed = server.dcserv(rid, "basins")["result"][1]["urls"][0]
    missing = signed.replace("/resource/", "/condensed/").replace(rid[6:], "0" * len(rid[6:]))
    bare = missing.split("?")[0]
    assert requests.get(bare, timeout=30).status_code == 403
    public = server.dcserv(server.ids["beads/calibration_beads.rtdc"], "basins")["result"]
    gone = public[1]["urls"][0][:-4] + "ffff"
    assert requests.get(gone, timeout=30).status_code == 403


@pytest.mark.parametrize("relpath", ["beads/calibration_beads.rtdc",
                                     "private/calibration_beads.rtdc"])
def test_preview_is_dcors(server, mount, relpath):
    rid = server.ids[relpath]
    package = requests.get(f"{server.url}/api/3/action/resource_show", params={"id": rid},
                           headers={"Authorization": server.token},
                           timeout=30).json()["result"]["package_id"]
    route = f"{server.url}/dataset/{package}/resource/{rid}/preview.jpg"
    served = requests.get(route, headers={"Authorization": server.token}, timeout=30)
    assert served.status_code == 200 and served.content[:3] == b"\xff\xd8\xff"
    path = mount.path / rid / "preview.jpg"
    assert "preview.jpg" in os.listdir(mount.path / rid)
    assert path.stat().st_size == len(served.content)
    assert path.read_bytes() == served.content
    anonymous = requests.get(route, timeout=30, allow_redirects=False)
    assert anonymous.status_code == (404 if relpath.startswith("private") else 302)


def test_no_preview_is_no_file(server, mount):
    """DCOR's preview job fails on an empty measurement and leaves none."""
    rid = server.ids["empty/empty_recording.rtdc"]
    assert "preview.jpg" not in os.listdir(mount.path / rid)
    with pytest.raises(FileNotFoundError):
        (mount.path / rid / "preview.jpg").stat()


def test_qpi_scalars_are_scalars(server, mount, corpus_dir):
    """``qpi_*`` scalar features are .npy and columns of features.tsv, never TIFF."""
    rid = server.ids["qpi/qpi_float32.rtdc"]
    names = set(os.listdir(mount.path / rid))
    assert "qpi_focus.npy" in names and "qpi_focus.tif" not in names
    assert "qpi_pha.tif" in names
    header = (mount.path / rid / "features.tsv").read_text().splitlines()[0].split("\t")
    assert "qpi_focus" in header and "qpi_pha" not in header


def _walk_cases():
    cases = [pytest.param("corpus", rel, id=rel) for rel in sorted(corpus.FILES)]
    if EXTENDED_DATA is not None:
        cases += [pytest.param("extended", p.relative_to(EXTENDED_DATA).as_posix(),
                               id=f"extended:{p.relative_to(EXTENDED_DATA).as_posix()}")
                  for p in sorted(EXTENDED_DATA.rglob("*.rtdc"))]
    return cases


@pytest.fixture
def where(request):
    def pick(kind: str):
        if kind == "corpus":
            return request.getfixturevalue("server"), request.getfixturevalue("mount")
        return (request.getfixturevalue("extended_server"),
                request.getfixturevalue("extended_mount"))
    return pick


@pytest.mark.parametrize("kind, relpath", _walk_cases())
def test_every_listed_file_reads_whole(where, kind, relpath):
    """A walk that reads every file of a resource whole: a listed file always opens
    and reads; features.tsv holds every scalar feature dclab's DCOR client lists."""
    server, mount = where(kind)
    rid = server.ids[relpath]
    root = mount.path / rid
    read = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = pathlib.Path(folder) / name
            data = path.read_bytes()
            assert len(data) == path.stat().st_size, path
            read += 1
    assert read
    header = (root / "features.tsv").read_text().split("\n", 1)[0]
    columns = set(header.split("\t")) if header else set()
    private = relpath.startswith(("private/", "DCOR-Aid/"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_dclab(server, rid, private) as ds:
            scalars = {f for f in ds.features_basin if dclab.dfn.scalar_feature_exists(f)
                       and readable(ds, f)}
            if len(ds):
                assert columns == scalars
                if columns:
                    table = np.loadtxt(io.StringIO((root / "features.tsv").read_text()),
                                       delimiter="\t", skiprows=1, ndmin=2)
                    assert table.shape[0] == len(ds)


def test_kept_answers_the_store_contradicts_are_asked_again(corpus_dir, tmp_path, servers,
                                                            fresh_mount):
    """A public resource's answers kept on disk declare a condensed file that the store
    no longer has (DCOR condenses again, or the first condensing failed after the
    answers were kept): the mount asks DCOR again at once, lists no file that would not
    open, and reads the rest from the original."""
    from harness import free_port

    relpath = "beads/calibration_beads.rtdc"
    disk = tmp_path / "disk-cache"
    store_port = free_port()
    first = servers.start(corpus_dir, "--store-port", str(store_port))
    rid = first.ids[relpath]
    mnt = fresh_mount(first.url, extra=["--cache-dir", str(disk)])
    os.stat(mnt.path / rid)  # DCOR's answers are kept; no byte of the condensed file
    assert mnt.unmount() == 0
    first.stop()
    second = servers.start(corpus_dir, "--store-port", str(store_port), "--no-condensed",
                           relpath, port=first.port)
    again = fresh_mount(second.url, extra=["--cache-dir", str(disk)])
    folder = again.path / rid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dclab.new_dataset(corpus_dir / relpath) as local:
            assert (folder / "area_um.npy").read_bytes() == npy_bytes(
                np.asarray(local["area_um"]))
    names = set(os.listdir(folder))
    assert "condensed.rtdc" not in names and "volume.npy" not in names
    log = again.log_text()
    assert "DCR406" in log  # opened from the kept answers ...
    assert "DCR420" in log and "DCR407" in log  # ... asked again; DCOR's answer changed
