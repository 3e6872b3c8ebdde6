"""The token stays secret; the mount is private and read-only."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from harness import require_fuse


def _mount_options(mountpoint: pathlib.Path) -> list[str]:
    for line in pathlib.Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == str(mountpoint):
            return fields[3].split(",")
    raise AssertionError(f"{mountpoint} is not mounted")


def test_token_never_in_argv_logs_or_errors(server, tmp_path):
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "mount.log"
    env = dict(os.environ, DCOR_API_TOKEN=server.token)
    result = subprocess.run([sys.executable, "-m", "dcorfs", "mount", str(mnt), "--host", server.url,
                             "--log-file", str(log), "-vv"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    try:
        pids = subprocess.run(["pgrep", "-f", f"dcorfs mount {mnt}"], capture_output=True,
                              text=True).stdout.split()
        assert pids
        for pid in pids:
            cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
            assert server.token.encode() not in cmdline
        server.reset_stats()
        private = server.ids["private/calibration_beads.rtdc"]
        assert np.load(mnt / private / "deform.npy").shape == (47,)
        assert np.load(mnt / private / "image.npy", mmap_mode="r")[3].any()
        for bad in ("0123abcd-0000-4000-8000-00000000000f", "not-an-id"):
            with pytest.raises(FileNotFoundError):
                os.stat(mnt / bad)
        seen = server.stats()
        assert seen.get("api_auth_headers", 0) > 0  # the token did go to the API ...
        assert seen.get("store_auth_headers", 0) == 0  # ... and never to the object store
    finally:
        subprocess.run([sys.executable, "-m", "dcorfs", "unmount", str(mnt)], timeout=60)
    time.sleep(0.5)
    text = log.read_text()
    assert "DEBUG" in text  # the log really was verbose
    assert server.token not in text
    assert "Signature=" not in text  # presigned query strings stay out too
    assert server.token not in result.stdout + result.stderr


@pytest.mark.expect_warnings("DCF101", "DCM501")  # EACCES, as it should be
def test_wrong_token_errors_do_not_echo_it(server, tmp_path, fresh_mount):
    token_file = tmp_path / "wrong-token"
    token_file.write_text("wrong-secret-token-123\n")
    token_file.chmod(0o600)
    mnt = fresh_mount(server.url, token_file=token_file, extra=["-vv"])
    private = server.ids["private/calibration_beads.rtdc"]
    with pytest.raises(PermissionError):
        os.listdir(mnt.path / private)
    assert "wrong-secret-token-123" not in mnt.log_text()


def test_plain_http_only_for_loopback(tmp_path):
    require_fuse()
    (tmp_path / "mnt").mkdir()
    result = subprocess.run([sys.executable, "-m", "dcorfs", "mount", str(tmp_path / "mnt"),
                             "--host", "http://dcor.example.org", "--foreground"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--allow-insecure-http" in result.stderr


def test_mount_is_private_and_read_only(server, mount):
    options = _mount_options(mount.path)
    assert "ro" in options
    assert "allow_other" not in options
    if os.geteuid() != 0:
        pytest.skip("checking access by another user needs root")
    rid = server.ids["beads/calibration_beads.rtdc"]
    result = subprocess.run(["ls", str(mount.path / rid)], user=65534, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode != 0 and "Permission denied" in result.stderr


def test_token_from_the_config_file(server, tmp_path):
    require_fuse()
    config = tmp_path / "config"
    (config / "dcorfs").mkdir(parents=True)
    token = config / "dcorfs" / "token"
    token.write_text(server.token + "\n")
    token.chmod(0o644)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DCOR_API_TOKEN"}
    env["XDG_CONFIG_HOME"] = str(config)
    argv = [sys.executable, "-m", "dcorfs", "mount", str(mnt), "--host", server.url,
            "--log-file", str(tmp_path / "log")]
    refused = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "chmod 600" in refused.stderr
    token.chmod(0o600)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    try:
        private = server.ids["private/calibration_beads.rtdc"]
        assert np.load(mnt / private / "deform.npy").shape == (47,)
    finally:
        subprocess.run([sys.executable, "-m", "dcorfs", "unmount", str(mnt)], timeout=60)
