"""The command line with real mounts: background mounts, bad input, fstab and mount -t."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from harness import require_fuse

BIN = pathlib.Path(sys.executable).parent


def dcorfs(*args, env=None, timeout=60, cwd=None):
    """The installed ``dcorfs`` command, as a user runs it."""
    return subprocess.run([str(BIN / "dcorfs"), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


def test_token_file_readable_by_others_is_refused(tmp_path):
    require_fuse()
    token = tmp_path / "token"
    token.write_text("secret-token-value\n")
    token.chmod(0o644)
    (tmp_path / "mnt").mkdir()
    result = dcorfs("mount", tmp_path / "mnt", "--host", "http://127.0.0.1:9",
                    "--token-file", token, "--foreground")
    assert result.returncode != 0
    assert "chmod 600" in result.stderr
    assert "secret-token-value" not in result.stderr + result.stdout
    assert not os.path.ismount(tmp_path / "mnt")


def test_mountpoint_must_be_a_folder(tmp_path):
    require_fuse()
    result = dcorfs("mount", tmp_path / "nope", "--host", "http://127.0.0.1:9")
    assert result.returncode == 2 and "not a directory" in result.stderr


@pytest.mark.parametrize("args, said", [
    (["--store-mirror", "cache.lab:8080"], "--store-mirror: a mirror is an http(s) URL"),
    (["--store-mirror", "http://cache/?key=1"], "--store-mirror: a mirror is an http(s) URL"),
    (["--store-origin", "https://s3.org"], "give both")])
def test_a_bad_site_cache_is_refused_before_mounting(tmp_path, args, said):
    require_fuse()
    (tmp_path / "mnt").mkdir()
    result = dcorfs("mount", tmp_path / "mnt", "--host", "http://127.0.0.1:9", *args)
    assert result.returncode == 2 and said in result.stderr, result.stderr
    assert not os.path.ismount(tmp_path / "mnt")


def test_background_mount_from_any_working_directory(server, corpus_dir, tmp_path):
    """Run from a folder holding a folder named ``dcorfs`` (a clone's parent, say): the
    daemon must not import it."""
    require_fuse()
    decoy = tmp_path / "dcorfs"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise SystemExit('imported the wrong dcorfs')\n")
    (decoy / "__main__.py").write_text("raise SystemExit('imported the wrong dcorfs')\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = dcorfs("mount", "mnt", "--host", server.url, "--log-file", "mount.log",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    try:
        assert os.path.ismount(mnt)
        rid = server.ids["scalars/example.rtdc"]
        assert np.load(mnt / rid / "deform.npy").shape == (5000,)
        assert (tmp_path / "mount.log").exists()  # relative to where it was started
    finally:
        result = dcorfs("unmount", mnt)
    assert result.returncode == 0, result.stderr
    assert not os.path.ismount(mnt)
    assert dcorfs("unmount", mnt).returncode == 1  # not mounted any more: says so


def test_a_failed_background_start_says_why(server, tmp_path):
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = dcorfs("mount", mnt, "--host", server.url, "-o", "no_such_fuse_option_xyz",
                    "--log-file", tmp_path / "log")
    assert result.returncode == 1
    assert "no_such_fuse_option_xyz" in result.stderr, result.stderr  # libfuse's own words
    assert f"(log: {tmp_path / 'log'})" in result.stderr
    assert not os.path.ismount(mnt)


HELPER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture
def on_helper_path():
    """mount(8) runs mount.fuse3, which runs ``dcorfs`` from the system's PATH."""
    if os.geteuid() != 0:
        if os.environ.get("DCORFS_REQUIRE_FUSE") == "1":
            pytest.fail("mount -t and fstab need root here (CI runs as root)")
        pytest.skip("mount -t and an fstab without 'user' need root")
    if shutil.which("mount.fuse3") is None:
        pytest.fail("mount.fuse3 is missing: install fuse3")
    link = pathlib.Path("/usr/local/bin/dcorfs")
    made = False
    if shutil.which("dcorfs", path=HELPER_PATH) is None:
        link.symlink_to(BIN / "dcorfs")
        made = True
    yield
    if made:
        link.unlink()


def _mounts_and_unmounts(argv: list[str], mnt: pathlib.Path, server) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
    try:
        assert os.path.ismount(mnt)
        options = next(line.split()[3] for line in open("/proc/mounts")
                       if line.split()[1] == str(mnt))
        assert "ro" in options.split(",")
        rid = server.ids["private/calibration_beads.rtdc"]  # the token file was used
        assert np.load(mnt / rid / "deform.npy").shape == (47,)
    finally:
        done = subprocess.run(["umount", str(mnt)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not os.path.ismount(mnt)


def test_mount_dash_t(server, tmp_path, on_helper_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    _mounts_and_unmounts(["mount", "-t", "fuse.dcorfs", server.url, str(mnt), "-o",
                          f"cache_size=64M,token_file={server.token_file},"
                          f"log_file={tmp_path / 'log'}"], mnt, server)


def test_an_fstab_line(server, tmp_path, on_helper_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"dcorfs {mnt} fuse.dcorfs noauto,user,host={server.url},"
                     f"token_file={server.token_file},log_file={tmp_path / 'log'} 0 0\n")
    # -T: the same line as in /etc/fstab, without touching the machine's own
    _mounts_and_unmounts(["mount", "-T", str(fstab), str(mnt)], mnt, server)
