"""Browsing DCOR by name through a real mount: datasets, circles and collections."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import time
import warnings

import numpy as np
import pytest
import requests

from conftest import BROWSE_MANIFEST

dclab = pytest.importorskip("dclab")

PUBLIC = ["beads-calibration", "blood-cells", "protocols", "unsorted"]
ALL = sorted(PUBLIC + ["blood-private"])


@pytest.fixture
def with_token(browse_server, fresh_mount):
    return fresh_mount(browse_server.url, token_file=browse_server.token_file)


@pytest.fixture
def anonymous(browse_server, fresh_mount):
    return fresh_mount(browse_server.url)


def resource_show(server, rid):
    return requests.get(f"{server.url}/api/3/action/resource_show", params={"id": rid},
                        headers={"Authorization": server.token}, timeout=30).json()["result"]


def test_the_root_lists_the_browse_folders(with_token):
    assert os.listdir(with_token.path)[:3] == ["circles", "collections", "datasets"]


def test_every_dataset_circle_and_collection_with_its_members(browse_server, with_token):
    root = with_token.path
    assert sorted(os.listdir(root / "datasets")) == ALL
    assert sorted(os.listdir(root / "circles")) == ["bead-lab", "blood-lab", "dcorfs-local"]
    assert sorted(os.listdir(root / "circles" / "blood-lab")) == ["blood-cells", "blood-private"]
    assert os.listdir(root / "circles" / "bead-lab") == ["beads-calibration"]
    assert sorted(os.listdir(root / "circles" / "dcorfs-local")) == ["protocols", "unsorted"]
    assert sorted(os.listdir(root / "collections")) == sorted(BROWSE_MANIFEST["collections"])
    assert sorted(os.listdir(root / "collections" / "blood-study")) == [
        "beads-calibration", "blood-cells", "blood-private"]
    assert os.listdir(root / "collections" / "empty-collection") == []
    link = root / "collections" / "blood-study" / "blood-cells"
    assert os.readlink(link) == "../../datasets/blood-cells"
    assert os.path.samefile(link, root / "datasets" / "blood-cells")


def test_resource_files_have_dcor_size_and_sha256(browse_server, browse_dir, with_token):
    assert sorted(os.listdir(with_token.path / "datasets" / "blood-cells")) == [
        "M001_data", "M001_data.rtdc", "M002_scalars", "M002_scalars.rtdc", "dataset.json",
        "notes.txt", "settings.ini"]
    checked = 0
    for relpath, rid in sorted(browse_server.ids.items()):
        dataset, name = relpath.split("/")
        path = with_token.path / "datasets" / dataset / name
        expected = resource_show(browse_server, rid)
        st = os.stat(path)
        assert st.st_size == expected["size"], relpath
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == expected["sha256"], relpath
        assert data == (browse_dir / relpath).read_bytes()
        # st_mtime from DCOR's timestamps: `ls -lt` and make behave
        assert abs(st.st_mtime - (browse_dir / relpath).stat().st_mtime) < 1e-3
        checked += 1
    assert checked == 8


def test_features_through_the_stem_link_equal_the_id_folder_and_dclab(browse_server,
                                                                       browse_dir, with_token):
    for relpath, rid in sorted(browse_server.ids.items()):
        if not relpath.endswith(".rtdc"):
            continue
        dataset, name = relpath.split("/")
        link = with_token.path / "datasets" / dataset / name[:-len(".rtdc")]
        assert os.readlink(link) == f"../../{rid}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with dclab.new_dataset(browse_dir / relpath) as ds:
                for feat in ("deform", "image", "mask"):
                    if feat not in ds.features_innate:
                        continue
                    via_link = (link / f"{feat}.npy").read_bytes()
                    assert via_link == (with_token.path / rid / f"{feat}.npy").read_bytes()
                    expected = np.asarray(ds[feat][:] if feat != "deform" else ds[feat])
                    assert np.array_equal(np.load(link / f"{feat}.npy"), expected), relpath


def test_dataset_json_is_package_show(browse_server, with_token):
    import json

    got = json.loads((with_token.path / "datasets" / "blood-cells" / "dataset.json").read_text())
    expected = requests.get(f"{browse_server.url}/api/3/action/package_show",
                            params={"id": "blood-cells"}, timeout=30).json()["result"]
    assert got == expected


@pytest.mark.expect_warnings("DCM501")  # the EACCES of the direct lookup
def test_private_datasets_need_the_token(browse_server, with_token, anonymous):
    assert "blood-private" in os.listdir(with_token.path / "datasets")
    assert (with_token.path / "datasets" / "blood-private" / "M003_data.rtdc").stat().st_size > 0
    assert sorted(os.listdir(anonymous.path / "datasets")) == PUBLIC
    assert os.listdir(anonymous.path / "circles" / "blood-lab") == ["blood-cells"]
    with pytest.raises(OSError) as info:
        os.stat(anonymous.path / "datasets" / "blood-private")
    assert info.value.errno == errno.EACCES


def test_names_that_cannot_be_ckan_names_cost_no_request(browse_server, with_token):
    os.listdir(with_token.path / "circles")  # circles known: their lookups are free
    browse_server.reset_stats()
    for path in ("datasets/Blood-Cells", "datasets/x", "datasets/.Trash", "circles/a b",
                 "collections/" + "y" * 101, "datasets/desktop.ini"):
        with pytest.raises(OSError) as info:
            os.stat(with_token.path / path)
        assert info.value.errno == errno.ENOENT
    assert browse_server.stats().get("api_requests", 0) == 0


def test_unknown_names_cost_one_request_then_none(browse_server, with_token):
    browse_server.reset_stats()
    for _ in range(3):
        with pytest.raises(FileNotFoundError):
            os.stat(with_token.path / "datasets" / "no-such-dataset")
    assert browse_server.stats().get("api_requests", 0) == 1
    browse_server.reset_stats()
    with pytest.raises(FileNotFoundError):
        os.stat(with_token.path / "circles" / "no-such-circle")
    assert browse_server.stats().get("api_requests", 0) <= 1


def test_listings_cost_what_they_must(browse_server, with_token):
    root = with_token.path
    browse_server.reset_stats()
    subprocess.run(["ls", "-l", str(root / "datasets")], check=True, capture_output=True)
    assert browse_server.stats()["action_package_search"] == 1  # 5 datasets: one page
    assert browse_server.stats()["api_requests"] == 1  # stat of the entries: nothing more
    browse_server.reset_stats()
    subprocess.run(["ls", "-l", str(root / "datasets" / "blood-cells")], check=True,
                   capture_output=True)
    assert browse_server.stats()["api_requests"] == 1  # one package_show
    assert browse_server.stats().get("store_requests", 0) == 0
    browse_server.reset_stats()
    subprocess.run(["ls", "-l", str(root / "circles" / "blood-lab")], check=True,
                   capture_output=True)
    seen = browse_server.stats()
    assert seen["api_requests"] <= 2 and seen["action_package_search"] == 1
    assert "fq=organization" not in str(seen)  # (the counts only)


def test_a_direct_lookup_is_one_package_show(browse_server, with_token):
    browse_server.reset_stats()
    assert "M001_data.rtdc" in os.listdir(with_token.path / "datasets" / "blood-cells")
    seen = browse_server.stats()
    assert seen["api_requests"] == 1 and seen["action_package_show"] == 1


def test_find_walks_a_circle(browse_server, with_token):
    out = subprocess.run(["find", "-L", str(with_token.path / "circles" / "bead-lab")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    found = {line.split("/circles/bead-lab/", 1)[1] for line in out.splitlines()
             if "/circles/bead-lab/" in line}
    assert "beads-calibration/calibration.rtdc" in found
    assert "beads-calibration/calibration/deform.npy" in found
    assert "beads-calibration/calibration/image.npy" in found


def test_a_new_dataset_appears_after_the_ttl(browse_server, browse_dir, fresh_mount, corpus_dir):
    mnt = fresh_mount(browse_server.url, extra=["--listing-ttl", "2"])
    before = os.listdir(mnt.path / "datasets")
    listed_at = time.monotonic()
    (browse_dir / "new-dataset").mkdir()
    try:
        shutil.copy(corpus_dir / "scalars" / "example.rtdc",
                    browse_dir / "new-dataset" / "new.rtdc")
        requests.post(f"{browse_server.url}/_dcorfs/rescan", timeout=300).raise_for_status()
        # the server condenses the new file first: on a busy machine that may outlast
        # the TTL, and then there is no fresh listing left to check
        if time.monotonic() - listed_at < 1.5:
            assert os.listdir(mnt.path / "datasets") == before  # kept for the TTL
            time.sleep(max(0.0, listed_at + 2.2 - time.monotonic()))
            # the kept listing is served while DCOR is asked again behind it
            assert os.listdir(mnt.path / "datasets") == before
        for _ in range(100):
            if "new-dataset" in os.listdir(mnt.path / "datasets"):
                break
            time.sleep(0.1)
        assert "new-dataset" in os.listdir(mnt.path / "datasets")
        assert np.load(mnt.path / "datasets" / "new-dataset" / "new" / "deform.npy").shape \
            == (5000,)
    finally:
        shutil.rmtree(browse_dir / "new-dataset")
        requests.post(f"{browse_server.url}/_dcorfs/rescan", timeout=300).raise_for_status()


@pytest.mark.expect_warnings("DCA202", "DCB701", "DCM501")
def test_a_listing_is_served_as_it_was_when_dcor_fails(browse_server, fresh_mount):
    mnt = fresh_mount(browse_server.url, extra=["--listing-ttl", "1", "--timeout", "2"])
    listed = sorted(os.listdir(mnt.path / "datasets"))
    time.sleep(1.2)
    browse_server.set_faults(error_rate=1.0, retry_after=0.01)
    try:
        assert sorted(os.listdir(mnt.path / "datasets")) == listed
        with pytest.raises(OSError) as info:  # never listed, so never known: EIO
            os.listdir(mnt.path / "collections")
        assert info.value.errno == errno.EIO
        for _ in range(300):  # the revalidation behind the listing fails in its own time
            if "DCB701" in mnt.log_text():
                break
            time.sleep(0.1)
        assert sorted(os.listdir(mnt.path / "datasets")) == listed
    finally:
        browse_server.set_faults()
    assert "DCB701" in mnt.log_text()


@pytest.fixture(scope="module")
def large_server(corpus_dir, tmp_path_factory, module_servers):
    """10,000 datasets (synthetic, sharing one file) in circles of 200, and one real."""
    data = tmp_path_factory.mktemp("large-data")
    (data / "real").mkdir()
    shutil.copy(corpus_dir / "scalars" / "example.rtdc", data / "real" / "example.rtdc")
    return module_servers.start(data, "--synthetic", "10000", name="large-server")


@pytest.mark.timeout(600)
def test_ten_thousand_datasets_list_in_few_requests(large_server, fresh_mount):
    mnt = fresh_mount(large_server.url)
    large_server.reset_stats()
    names = os.listdir(mnt.path / "datasets")
    seen = large_server.stats()
    assert len(names) == 10_001 and len(set(names)) == 10_001
    assert seen["api_requests"] <= 10_001 // 1000 + 1 + 1, seen  # ceil(N/1000) pages
    large_server.reset_stats()
    members = os.listdir(mnt.path / "circles" / "synthetic-003")
    assert sorted(members) == [f"synthetic-{i:05d}" for i in range(600, 800)]
    assert large_server.stats()["api_requests"] <= 2
    # a synthetic dataset reads like any other
    deform = np.load(mnt.path / "datasets" / "synthetic-04321" / "example" / "deform.npy")
    assert deform.shape == (5000,)


@pytest.mark.timeout(600)
def test_a_search_finding_more_than_a_page_lists_every_result(large_server, fresh_mount):
    """2,000 of the 10,000 synthetic datasets are blood: all are listed, in one request
    per 1,000 (the pages after the first at once), and ``results.tsv`` ranks them all."""
    mnt = fresh_mount(large_server.url)
    expected = large_server.searched("tags:blood")
    assert len(expected) > 1000
    large_server.reset_stats()
    folder = mnt.path / "search" / "tags:blood"
    assert set(os.listdir(folder)) - {"results.tsv"} == set(expected)
    assert large_server.stats()["action_package_search"] <= 1 + -(-len(expected) // 1000)
    ranked = (folder / "results.tsv").read_text().splitlines()[1:]
    assert [line.split("\t")[1] for line in ranked] == expected
