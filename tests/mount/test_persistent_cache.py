"""The disk cache through real mounts: remounts, crashes, damage, size, sharing."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import h5py
import hdf5plugin  # noqa: F401
import pytest

from dcorfs.processes import dcorfs_argv
from harness import npy_bytes

RELPATH = "blood-cells/M001_data.rtdc"


@pytest.fixture
def reference(demo_dir):
    with h5py.File(demo_dir / RELPATH, "r") as h5:
        return {"deform.npy": npy_bytes(h5["events/deform"][:]),
                "image.npy": npy_bytes(h5["events/image"][:]),
                "data.rtdc": (demo_dir / RELPATH).read_bytes()}


def written(*mounts) -> None:
    """Wait until the mounts' disk writers have written everything they were given."""
    deadline = time.monotonic() + 60
    while any(m.status()["disk_cache"]["writes_pending"] for m in mounts):
        assert time.monotonic() < deadline, "disk writes still pending after 60 s"
        time.sleep(0.02)


def read_all(folder, reference) -> None:
    for name, expected in reference.items():
        assert (folder / name).read_bytes() == expected, name


def test_a_remount_reads_from_disk_without_the_store(demo_server, reference, fresh_mount,
                                                     tmp_path):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    rid = demo_server.ids[RELPATH]
    first = fresh_mount(demo_server.url, extra=cache)
    read_all(first.path / rid, reference)
    for _ in range(300):  # the whole original is cached: checked against DCOR's sha256
        if "DCD810" in first.log_text():
            break
        time.sleep(0.1)
    assert f"dcor-resource-{rid}: all {len(reference['data.rtdc'])} bytes match" \
        in first.log_text()
    assert first.unmount() == 0
    second = fresh_mount(demo_server.url, extra=cache)
    demo_server.reset_stats()  # after the warm-up's connections
    read_all(second.path / rid, reference)
    seen = demo_server.stats()
    assert seen.get("store_requests", 0) == 0, seen  # every byte came from disk
    status = second.status()
    hdf5 = status["hdf5"]
    assert (hdf5["files_opened"], hdf5["kept_layouts_used"]) == (0, 2), hdf5
    assert status["disk_cache"]["block_hits"] > 0
    assert status["disk_cache"]["bytes"] >= len(reference["data.rtdc"])


def test_a_killed_daemon_leaves_a_usable_cache(demo_server, reference, fresh_mount, tmp_path):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    rid = demo_server.ids[RELPATH]
    demo_server.set_faults(latency_ms=5)  # slow enough to be killed mid-way
    try:
        victim = fresh_mount(demo_server.url, extra=cache)
        fd = os.open(victim.path / rid / "data.rtdc", os.O_RDONLY)
        try:
            os.pread(fd, 4 << 20, 0)
            os.pread(fd, 4 << 20, 8 << 20)
        finally:
            os.close(fd)
        victim.proc.send_signal(signal.SIGKILL)  # in the middle of background fills
        victim.expected_exit = -signal.SIGKILL
        victim.proc.wait(timeout=30)
        victim.unmount()  # clears the dead mount
    finally:
        demo_server.set_faults()
    survivor = fresh_mount(demo_server.url, extra=cache)
    read_all(survivor.path / rid, reference)


@pytest.mark.expect_warnings("DCD801")
def test_damaged_blocks_are_fetched_again(demo_server, reference, fresh_mount, tmp_path):
    cache = tmp_path / "cache"
    rid = demo_server.ids[RELPATH]
    first = fresh_mount(demo_server.url, extra=["--cache-dir", str(cache)])
    read_all(first.path / rid, reference)
    assert first.unmount() == 0
    damaged = 0
    for path in sorted((cache / "blocks").rglob("*.blk"))[::7]:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x40
        path.write_bytes(bytes(data))
        damaged += 1
    demo_server.reset_stats()
    second = fresh_mount(demo_server.url, extra=["--cache-dir", str(cache)])
    read_all(second.path / rid, reference)
    assert demo_server.stats()["store_requests"] > 0  # the damaged ones, fetched again
    assert second.status()["disk_cache"]["blocks_failed_check"] >= 1
    assert "DCD801" in second.log_text() and damaged


def test_the_cache_keeps_its_size(demo_server, reference, fresh_mount, tmp_path):
    size = 4 << 20
    mnt = fresh_mount(demo_server.url, extra=["--cache-dir", str(tmp_path / "cache"),
                                              "--disk-cache-size", str(size)])
    rid = demo_server.ids[RELPATH]
    assert len(reference["data.rtdc"]) > 3 * size
    read_all(mnt.path / rid, reference)
    written(mnt)
    stored = sum(p.stat().st_size for p in (tmp_path / "cache" / "blocks").rglob("*.blk"))
    assert stored <= size + 64 * 1024, stored


def test_two_mounts_and_a_prefetch_share_one_cache(demo_server, demo_dir, reference,
                                                   fresh_mount, tmp_path):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    token = demo_server.token_file
    rid = demo_server.ids[RELPATH]
    one = fresh_mount(demo_server.url, token_file=token, extra=cache)
    two = fresh_mount(demo_server.url, token_file=token, extra=cache)
    read_all(one.path / rid, reference)
    written(one)
    demo_server.reset_stats()
    read_all(two.path / rid, reference)
    assert demo_server.stats().get("store_bytes", 0) < len(reference["data.rtdc"]) // 10
    # a prefetch through one mount while the other reads the same resource: both fill
    # the folder at once, and a third mount finds it whole
    beads = demo_server.ids["beads/M002_beads.rtdc"]
    original = (demo_dir / "beads/M002_beads.rtdc").read_bytes()
    prefetch = subprocess.Popen(dcorfs_argv("prefetch", one.path / beads),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert (two.path / beads / "data.rtdc").read_bytes() == original
    assert prefetch.wait(timeout=300) == 0, prefetch.stderr.read()
    written(one, two)
    third = fresh_mount(demo_server.url, token_file=token, extra=cache)
    demo_server.reset_stats()
    assert (third.path / beads / "data.rtdc").read_bytes() == original
    assert demo_server.stats().get("store_requests", 0) == 0


def dcorfs_cli(*args, timeout=300):
    return subprocess.run(dcorfs_argv(*args), capture_output=True, text=True, timeout=timeout)


def test_prefetch_fills_the_cache_for_a_remount(demo_server, demo_dir, reference, fresh_mount,
                                                tmp_path):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    rid = demo_server.ids[RELPATH]
    mnt = fresh_mount(demo_server.url, extra=cache)
    done = dcorfs_cli("prefetch", mnt.path / "datasets" / "blood-cells", "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert "prefetch" in done.stderr and "B/s" in done.stderr  # tqdm's bar: bytes and rate
    listed = os.listdir(mnt.path / "datasets" / "blood-cells")
    again = dcorfs_cli("prefetch", mnt.path / rid)  # all cached: resumes at once
    assert again.returncode == 0, again.stderr
    assert mnt.unmount() == 0
    second = fresh_mount(demo_server.url, extra=cache)
    demo_server.reset_stats()
    read_all(second.path / rid, reference)
    assert demo_server.stats().get("store_requests", 0) == 0
    assert second.unmount() == 0  # its hits are added to the folder's counts
    status = dcorfs_cli("cache", "status", "--cache-dir", tmp_path / "cache")
    assert status.returncode == 0 and f"resource-{rid}" in status.stdout
    assert "limit:      10.7 GB" in status.stdout  # the default 10 GiB
    # the dataset's resources: the measurement and its supplementary files
    assert int(status.stdout.split("resources:")[1].split()[0]) == len(
        listed) - 2  # not dataset.json and the link to the feature folder
    assert "free space:" in status.stdout
    hit_rate = float(status.stdout.split("hit rate:")[1].split("%")[0])
    assert hit_rate > 50  # the second mount read everything from disk
    cleared = dcorfs_cli("cache", "clear", rid, "--cache-dir", tmp_path / "cache")
    assert cleared.returncode == 0 and "freed" in cleared.stdout
    status = dcorfs_cli("cache", "status", "--cache-dir", tmp_path / "cache")
    assert f"resource-{rid}" not in status.stdout


def test_prefetch_says_up_front_what_it_cannot_do(demo_server, fresh_mount, tmp_path):
    rid = demo_server.ids[RELPATH]
    small = fresh_mount(demo_server.url, extra=["--cache-dir", str(tmp_path / "cache"),
                                                "--disk-cache-size", "1M"])
    demo_server.reset_stats()
    refused = dcorfs_cli("prefetch", small.path / rid)
    assert refused.returncode == 2 and "will not fit" in refused.stderr
    # nothing but the probes that learn the artifacts' sizes (their first MiB and tail)
    assert demo_server.stats().get("store_bytes", 0) < 3 * 1024 ** 2
    features = dcorfs_cli("prefetch", small.path / rid, "--features", "deform")
    assert features.returncode == 0, features.stderr
    outside = dcorfs_cli("prefetch", tmp_path)
    assert outside.returncode == 2 and "not inside a dcorfs mount" in outside.stderr


def test_a_remount_asks_nothing_for_cached_public_data(demo_server, fresh_mount, tmp_path,
                                                       reference):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    rid = demo_server.ids[RELPATH]
    private = demo_server.ids["beads/M002_beads.rtdc"]

    def use(mnt):
        folder = mnt.path / rid
        got = {"deform": (folder / "deform.npy").read_bytes(),
               "meta": (folder / "metadata.json").read_text(),
               "logs": {p.name: p.read_text() for p in (folder / "logs").iterdir()},
               "tables": sorted(os.listdir(folder / "tables"))}
        (mnt.path / private / "deform.npy").read_bytes()
        return got

    first = fresh_mount(demo_server.url, token_file=demo_server.token_file, extra=cache)
    before = use(first)
    assert first.unmount() == 0
    second = fresh_mount(demo_server.url, token_file=demo_server.token_file, extra=cache)
    demo_server.reset_stats()
    folder = second.path / rid
    assert (folder / "deform.npy").read_bytes() == reference["deform.npy"]
    public_seen = demo_server.stats()
    assert public_seen.get("api_requests", 0) == 0 and public_seen.get("store_requests", 0) == 0
    assert use(second) == before
    seen = demo_server.stats()
    # the private resource asked DCOR again (its token is checked online); nothing else did
    assert seen.get("action_dcserv", 0) >= 1 and seen.get("store_requests", 0) == 0
    assert "DCR406" in second.log_text()
    assert second.unmount() == 0
    for path in (tmp_path / "cache").rglob("*"):  # no presigned URL, no token on disk
        if path.is_file() and path.suffix != ".blk":
            text = path.read_bytes()
            assert b"Signature=" not in text and demo_server.token.encode() not in text, path


@pytest.fixture(scope="module")
def twin_servers(tmp_path_factory, module_servers):
    """Two ``dcorfs serve`` whose resources share ids (the same paths) but not bytes,
    as a local server and DCOR, or two local servers of different data, may."""
    import corpus

    servers = []
    for seed in (1, 2):
        data = tmp_path_factory.mktemp(f"twin-data-{seed}")
        corpus.write_beads(data / "beads" / "calibration_beads.rtdc", seed=seed)
        servers.append(module_servers.start(data, name=f"twin-{seed}"))
    assert servers[0].ids == servers[1].ids
    return servers


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_two_instances_on_one_cache_folder_never_mix(twin_servers, fresh_mount, tmp_path,
                                                     order):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    for index in order + order:  # each twice: a remount reads its own from the cache
        srv = twin_servers[index]
        rid = srv.ids["beads/calibration_beads.rtdc"]
        with h5py.File(srv.data_dir / "beads" / "calibration_beads.rtdc", "r") as h5:
            expected = {"deform.npy": npy_bytes(h5["events/deform"][:]),
                        "image.npy": npy_bytes(h5["events/image"][:])}
        expected["data.rtdc"] = (srv.data_dir / "beads" / "calibration_beads.rtdc").read_bytes()
        mnt = fresh_mount(srv.url, extra=cache)
        read_all(mnt.path / rid, expected)
        assert mnt.unmount() == 0
