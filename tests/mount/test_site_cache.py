"""A lab's mounts share one site cache: a real nginx running ``examples/nginx-dcor-cache.conf``
in front of ``dcorfs serve``'s object store (``--store-mirror``).

nginx is Debian's, started unprivileged on a loopback port with a folder of its own.  A
missing nginx skips these tests, unless ``DCORFS_REQUIRE_TOOLS=1`` (``.ci/run``): then
they fail.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
import threading
import time
import warnings

import dclab
import numpy as np
import pytest
import requests

from dcorfs.server.site_cache import SiteCache, nginx_binary
from harness import Server

PUBLIC = "site/M001_shared.rtdc"
SECOND = "site/M002_second.rtdc"
PRIVATE = "private/M003_private.rtdc"


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory):
    """Files of the size a lab reads: tens of MB with images, one private."""
    from dcorfs.server.demo_data import write_demo_file

    root = tmp_path_factory.mktemp("site")
    write_demo_file(root / PUBLIC, events=1500, seed=21, with_traces=False)
    write_demo_file(root / SECOND, events=1000, seed=22, with_traces=False)
    write_demo_file(root / PRIVATE, events=200, seed=23, with_traces=False)
    return root


@pytest.fixture(scope="module")
def site_server(site_dir, module_servers):
    # a link of 40 MB/s, so that a read is still running when nginx is stopped
    return module_servers.start(site_dir, "--private", "private/*", "--bandwidth-mbs", "40",
                                name="site-server")


def start_site_cache(server: Server) -> SiteCache:
    if nginx_binary() is None:
        if os.environ.get("DCORFS_REQUIRE_TOOLS") == "1":
            pytest.fail("nginx is not installed, and DCORFS_REQUIRE_TOOLS=1")
        pytest.skip("nginx is not installed")
    return SiteCache(server.store_url)


@pytest.fixture
def site_cache(site_server):
    site = start_site_cache(site_server)
    yield site
    site.close()


def objects(server: Server, rid: str) -> dict[str, int]:
    """URL -> size of every object the resource's basins name (what a mount may read)."""
    sizes = {}
    for basin in server.dcserv(rid, "basins")["result"]:
        for url in basin.get("urls") or []:
            answer = requests.get(url, headers={"Range": "bytes=0-0"}, timeout=30)
            assert answer.status_code == 206, url
            sizes[url.split("?")[0]] = int(answer.headers["Content-Range"].split("/")[1])
    return sizes


def read_everything(folder) -> tuple[dict[str, np.ndarray], str]:
    """Every feature of a resource folder, and the md5 of its data.rtdc."""
    features = {p.name[:-4]: np.load(p) for p in sorted(folder.glob("*.npy"))}
    md5 = hashlib.md5()
    with open(folder / "data.rtdc", "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            md5.update(piece)
    return features, md5.hexdigest()


def check_against_dclab(path, features: dict[str, np.ndarray]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dclab.new_dataset(path) as ds:
            compared = 0
            for name, got in features.items():
                if name not in ds.features_innate:
                    continue
                expected = np.asarray(ds[name][:])
                assert got.shape == expected.shape, name
                assert np.array_equal(got, expected, equal_nan=expected.dtype.kind == "f"), name
                compared += 1
    assert compared >= 10


def file_md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def mirror_mount(fresh_mount, server: Server, site: SiteCache):
    mnt = fresh_mount(server.url, server.token_file,
                      ["--store-mirror", site.url, "--cache-size", "16M"])
    mirror = mnt.status()["store_mirror"]
    assert mirror["state"] == "in use" and mirror["origin"] == server.store_url, mirror
    return mnt


@pytest.mark.timeout(600)
def test_four_mounts_fetch_each_byte_from_the_store_once(site_dir, site_server, site_cache,
                                                         fresh_mount):
    mounts = [mirror_mount(fresh_mount, site_server, site_cache) for _ in range(4)]
    rid = site_server.ids[PUBLIC]
    sizes = objects(site_server, rid)
    site_server.reset_stats()
    start = threading.Barrier(len(mounts))

    def read(mnt):
        start.wait()
        return read_everything(mnt.path / rid)

    with concurrent.futures.ThreadPoolExecutor(len(mounts)) as pool:
        results = list(pool.map(read, mounts))
    origin = site_server.stats().get("store_bytes", 0)
    data = sum(sizes.values())
    # each mount read all of it: four times the data went to the mounts
    for mnt in mounts:
        assert mnt.status()["network"]["range_bytes"] >= 0.9 * max(sizes.values())
    assert origin <= 1.1 * data, (origin, data, sizes)
    expected_md5 = file_md5(site_dir / PUBLIC)
    for features, md5 in results:
        assert md5 == expected_md5
        check_against_dclab(site_dir / PUBLIC, features)
    for mnt in mounts:
        mirror = mnt.status()["store_mirror"]
        assert mirror["failures"] == 0 and mirror["bytes"] > 0.9 * max(sizes.values()), mirror

    # a private resource: read by every mount, its bytes never reach the shared cache
    prid = site_server.ids[PRIVATE]
    for mnt in mounts:
        features, md5 = read_everything(mnt.path / prid)
        assert md5 == file_md5(site_dir / PRIVATE)
        assert mnt.status()["store_mirror"]["private_reads_direct"] > 0
    check_against_dclab(site_dir / PRIVATE, features)
    assert prid not in site_cache.access_log.read_text()
    cached = b"".join(p.read_bytes() for p in site_cache.cached_files())
    assert cached, "nginx cached nothing"
    public_bytes = (site_dir / PUBLIC).read_bytes()
    samples = unique_samples((site_dir / PRIVATE).read_bytes(), public_bytes)
    assert not any(sample in cached for sample in samples)
    # the check can see bytes: samples of the public file are there
    assert all(sample in cached for sample in unique_samples(public_bytes, b""))


@pytest.mark.timeout(600)
def test_mounts_that_read_at_once_go_through_the_site_cache(site_server, site_cache, site_dir,
                                                           fresh_mount):
    """A cluster job mounts and reads at once, on every node at the same moment: no read
    goes around the site cache because its mount is young (the store's origin is
    learned from the first resource a lookup opens, not only by the warm-up)."""
    rid = site_server.ids[PUBLIC]
    sizes = objects(site_server, rid)
    site_server.reset_stats()
    start = threading.Barrier(4)

    def mount_and_read(_):
        start.wait()
        mnt = fresh_mount(site_server.url, site_server.token_file,
                          ["--store-mirror", site_cache.url, "--cache-size", "16M"], warm=False)
        return mnt, read_everything(mnt.path / rid)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(mount_and_read, range(4)))
    origin = site_server.stats().get("store_bytes", 0)
    data = sum(sizes.values())
    assert origin <= 1.1 * data, (origin, data, sizes)
    expected_md5 = file_md5(site_dir / PUBLIC)
    for mnt, (features, md5) in results:
        assert md5 == expected_md5
        mirror = mnt.status()["store_mirror"]
        assert mirror["failures"] == 0 and mirror["bytes"] > 0.9 * max(sizes.values()), mirror
    check_against_dclab(site_dir / PUBLIC, results[0][1][0])


def unique_samples(data: bytes, other: bytes, n: int = 32, length: int = 64) -> list[bytes]:
    """``n`` pieces of ``data`` found nowhere in ``other`` (HDF5 headers and blank image
    rows are alike in every file)."""
    rng = np.random.default_rng(0)
    samples: list[bytes] = []
    while len(samples) < n:
        at = int(rng.integers(0, len(data) - length))
        piece = data[at:at + length]
        if piece not in other and len(set(piece)) > 16:
            samples.append(piece)
    return samples


@pytest.mark.expect_warnings("DCP201")
@pytest.mark.timeout(300)
def test_reads_go_on_from_the_store_when_the_site_cache_stops(site_dir, site_server,
                                                             site_cache, fresh_mount):
    mnt = mirror_mount(fresh_mount, site_server, site_cache)
    rid = site_server.ids[SECOND]
    size = (site_dir / SECOND).stat().st_size
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read_everything, mnt.path / rid)
        deadline = time.monotonic() + 60
        while mnt.status()["store_mirror"]["bytes"] == 0:  # the read is under way
            assert not reading.done(), "the read ended before nginx could be stopped"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        site_cache.stop()
        site_server.reset_stats()  # from here on, only the mount reads from the store
        features, md5 = reading.result(timeout=240)
    assert md5 == file_md5(site_dir / SECOND)
    check_against_dclab(site_dir / SECOND, features)
    mirror = mnt.status()["store_mirror"]
    assert mirror["failures"] >= 1 and mirror["state"].startswith("failed"), mirror
    assert mirror["bytes"] < size  # the mirror served part of the read ...
    assert site_server.stats().get("store_bytes", 0) > 0  # ... the store the rest
    assert "DCP201" in mnt.log_text()
