"""The command line: help, token handling, background mounts, bad input."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import require_fuse
from dcorfs.cli import normalise_host, parse_size
from dcorfs.npy_format import npy_header


def dcorfs(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "dcorfs", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_help_explains():
    out = dcorfs("--help").stdout
    for command in ("mount", "unmount", "serve", "demo"):
        assert command in out
    mount_help = dcorfs("mount", "--help").stdout
    assert "DCOR_API_TOKEN" in mount_help and "--cache-size" in mount_help


def test_sizes_and_hosts():
    assert parse_size("1G") == 1 << 30 and parse_size("512M") == 512 << 20
    assert parse_size("1048576") == 1 << 20
    assert normalise_host("dcor.mpl.mpg.de") == "https://dcor.mpl.mpg.de"
    assert normalise_host("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    with pytest.raises(SystemExit):
        normalise_host("http://host/with/path")


def test_npy_header_equals_np_save():
    dtypes = ["<f8", "<f4", "|u1", "|b1", "<i2", "<i4", "<i8", "<u4", "<u8",
              [("a", "<f8"), ("b", "<f8")]]
    for dtype in dtypes:
        for shape in [(0,), (1,), (47,), (5000,), (10, 80, 250), (0, 177), (3, 1)]:
            buf = io.BytesIO()
            np.save(buf, np.zeros(shape, dtype=dtype))
            header = npy_header(np.dtype(dtype), shape)
            assert len(header) % 64 == 0
            assert buf.getvalue()[:len(header)] == header, (dtype, shape)


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


def test_background_mount_and_unmount(server, tmp_path):
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = dcorfs("mount", mnt, "--host", server.url, "--log-file", tmp_path / "log")
    assert result.returncode == 0, result.stderr
    try:
        assert os.path.ismount(mnt)
        rid = server.ids["dclab-docs/example.rtdc"]
        assert np.load(mnt / rid / "deform.npy").shape == (5000,)
    finally:
        result = dcorfs("unmount", mnt)
    assert result.returncode == 0, result.stderr
    assert not os.path.ismount(mnt)
    assert dcorfs("unmount", mnt).returncode == 1  # not mounted any more: says so
