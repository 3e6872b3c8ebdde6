"""Offline use through real mounts: the server stops, a remount without it, ``--offline``,
a private resource with another token, and a disk cache on a full filesystem."""
from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import time

import h5py
import hdf5plugin  # noqa: F401
import pytest

from harness import npy_bytes

RELPATH = "blood-cells/M001_data.rtdc"
PRIVATE = "beads/M002_beads.rtdc"


def timed_failure(path: pathlib.Path) -> tuple[int, float]:
    """(errno, seconds) of reading a file that must fail."""
    started = time.monotonic()
    with pytest.raises(OSError) as info:
        path.read_bytes()
    return info.value.errno, time.monotonic() - started


@pytest.fixture
def own_server(demo_dir, servers):
    """A server this test may stop: the demo data, the beads dataset private."""
    return servers.start(demo_dir, "--private", "beads/*")


@pytest.mark.expect_warnings("DCA201", "DCF104", "DCF301", "DCN901", maybe=("DCB701", "DCF101"))
@pytest.mark.timeout(300)
def test_with_the_server_stopped_cached_data_reads_and_the_rest_fails_fast(
        own_server, demo_dir, fresh_mount, tmp_path):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    rid = own_server.ids[RELPATH]
    with h5py.File(demo_dir / RELPATH, "r") as h5:
        deform = npy_bytes(h5["events/deform"][:])
    first = fresh_mount(own_server.url, extra=cache)
    assert (first.path / rid / "deform.npy").read_bytes() == deform
    datasets = sorted(os.listdir(first.path / "datasets"))
    dataset_files = sorted(os.listdir(first.path / "datasets" / "blood-cells"))
    own_server.stop()

    # the same mount: what it read is served, what it did not fails within seconds
    assert (first.path / rid / "deform.npy").read_bytes() == deform
    code, seconds = timed_failure(first.path / rid / "image.npy")
    assert code == errno.EIO and seconds < 5, seconds
    code, seconds = timed_failure(first.path / rid / "mask.npy")
    assert code == errno.EIO and seconds < 1, seconds  # known down: at once
    assert first.status()["network"]["state"] == "offline"
    assert first.unmount() == 0

    # a remount without the server: from the disk cache alone
    for flags in ([], ["--offline"]):
        mnt = fresh_mount(own_server.url, extra=cache + flags)
        assert (mnt.path / rid / "deform.npy").read_bytes() == deform
        # the resource lists what can be found offline (a feature whose source is not
        # cached is left out for now, not an error for the whole folder)
        assert "deform.npy" in os.listdir(mnt.path / rid)
        assert sorted(os.listdir(mnt.path / "datasets")) == datasets
        assert sorted(os.listdir(mnt.path / "datasets" / "blood-cells")) == dataset_files
        code, seconds = timed_failure(mnt.path / rid / "image.npy")
        assert code == errno.EIO and seconds < 5, seconds
        status = mnt.status()["network"]
        assert status["state"] == "offline" and status["forced"] == bool(flags)
        assert mnt.unmount() == 0
    assert "DCN901" not in mnt.log_text()  # --offline tried nothing


@pytest.mark.expect_warnings("DCF101", "DCM501")  # the refusals
@pytest.mark.timeout(300)
def test_a_cached_private_resource_needs_a_token_dcor_accepts(own_server, fresh_mount,
                                                              tmp_path):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    rid = own_server.ids[PRIVATE]
    owner = fresh_mount(own_server.url, token_file=own_server.token_file, extra=cache)
    deform = (owner.path / rid / "deform.npy").read_bytes()
    assert owner.unmount() == 0
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    wrong.chmod(0o600)
    for token_file in (wrong, None):
        mnt = fresh_mount(own_server.url, token_file=token_file, extra=cache)
        with pytest.raises(OSError) as info:
            (mnt.path / rid / "deform.npy").read_bytes()
        assert info.value.errno == errno.EACCES
        assert mnt.unmount() == 0
    again = fresh_mount(own_server.url, token_file=own_server.token_file, extra=cache)
    own_server.reset_stats()
    assert (again.path / rid / "deform.npy").read_bytes() == deform
    assert own_server.stats().get("store_requests", 0) == 0  # checked online, read from disk


@pytest.fixture
def small_filesystem(tmp_path):
    """A 16 MiB tmpfs of this test's own (root only, as in CI)."""
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs",
                           str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("DCORFS_REQUIRE_FUSE") == "1":
            pytest.fail(f"cannot mount a tmpfs: {done.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: pathlib.Path) -> None:
    """Write zeros until the filesystem is full, to the last page."""
    fd = os.open(folder / f"filler-{time.monotonic_ns()}", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for piece in (1 << 20, 4096):
            try:
                while True:
                    os.write(fd, bytes(piece))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert os.statvfs(folder).f_bavail == 0


@pytest.mark.expect_warnings("DCD811")
@pytest.mark.timeout(300)
def test_a_full_disk_leaves_reads_working(demo_server, demo_dir, fresh_mount, small_filesystem):
    rid = demo_server.ids[RELPATH]
    with h5py.File(demo_dir / RELPATH, "r") as h5:
        expected = {"deform.npy": npy_bytes(h5["events/deform"][:]),
                    "image.npy": npy_bytes(h5["events/image"][:])}
    original = (demo_dir / RELPATH).read_bytes()
    assert len(original) > 16 << 20  # more than the filesystem holds
    cache = small_filesystem / "cache"
    mnt = fresh_mount(demo_server.url, extra=["--cache-dir", str(cache)])
    assert (mnt.path / rid / "deform.npy").read_bytes() == expected["deform.npy"]
    fill(small_filesystem)
    assert (mnt.path / rid / "image.npy").read_bytes() == expected["image.npy"]
    assert (mnt.path / rid / "data.rtdc").read_bytes() == original
    assert mnt.status()["disk_cache"] is not None
    assert mnt.unmount() == 0
    # a mount whose disk cache cannot even be created still reads from the network
    (small_filesystem / "cache").rename(small_filesystem / "old-cache")
    fill(small_filesystem)
    late = fresh_mount(demo_server.url, extra=["--cache-dir", str(small_filesystem / "new")])
    assert (late.path / rid / "deform.npy").read_bytes() == expected["deform.npy"]
