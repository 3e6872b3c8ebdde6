"""Fixtures: a real ``dcorfs serve`` over ../shared/data and real FUSE mounts of it.

Modelled on pyfuse3's harness: wait for the mount, fail fast when the mount process
died, unmount at the end and assert the process exited cleanly.  Tests skip only
where FUSE truly cannot run (no /dev/fuse or no fusermount), and not even then when
``DCORFS_REQUIRE_FUSE=1`` (CI), where that is an error instead.
"""
from __future__ import annotations

import contextlib
import io
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import requests

from dcorfs.cli import fuse_problem
from dcorfs.server.ports import free_port
from dcorfs.status import wait_until_warm

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = pathlib.Path(os.environ.get("DCORFS_TEST_DATA") or ROOT.parent / "shared" / "data")
PRIVATE_GLOB = "DCOR-Aid/*"


def npy_bytes(array: np.ndarray) -> bytes:
    """What ``np.save`` writes: the bytes every ``.npy`` file of a mount must have."""
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def require_fuse() -> None:
    problem = fuse_problem()
    if problem:
        if os.environ.get("DCORFS_REQUIRE_FUSE") == "1":
            pytest.fail(f"FUSE is required here but cannot run: {problem}")
        pytest.skip(f"FUSE cannot run here: {problem}")


class Server:
    """A running ``dcorfs serve`` and what tests need to talk to it."""

    def __init__(self, data_dir: pathlib.Path, workdir: pathlib.Path, cache_dir: pathlib.Path,
                 args: list[str], port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token_file = workdir / "server-token"
        self.log = workdir / "serve.log"
        argv = [sys.executable, "-m", "dcorfs", "serve", str(data_dir), "--port", str(self.port),
                "--cache-dir", str(cache_dir), "--token-file", str(self.token_file)] + args
        self.proc = subprocess.Popen(argv, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dcorfs serve died (exit {self.proc.returncode}):\n"
                                   + self.log.read_text()[-3000:])
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/api/3/action/status_show", timeout=2).ok:
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("dcorfs serve did not come up:\n" + self.log.read_text()[-3000:])
            time.sleep(0.2)
        self.token = self.token_file.read_text().strip()
        self.ids = self._resource_ids()

    def _resource_ids(self) -> dict[str, str]:
        """relative path -> resource id, from package_search as a client would see it."""
        found = requests.get(f"{self.url}/api/3/action/package_search",
                             params={"rows": 1000, "include_private": "true"},
                             headers={"Authorization": self.token}, timeout=30).json()["result"]
        return {f"{pkg['title']}/{res['name']}" if pkg["title"] != "." else res["name"]: res["id"]
                for pkg in found["results"] for res in pkg["resources"]}

    def stats(self) -> dict[str, int]:
        return requests.get(f"{self.url}/_dcorfs/stats", timeout=10).json()

    def reset_stats(self) -> None:
        requests.post(f"{self.url}/_dcorfs/stats/reset", timeout=10).raise_for_status()

    def dcserv(self, rid: str, query: str, token: bool = True):
        headers = {"Authorization": self.token} if token else {}
        return requests.get(f"{self.url}/api/3/action/dcserv",
                            params={"id": rid, "query": query, "version": "2"},
                            headers=headers, timeout=30).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Mount:
    """``dcorfs mount --foreground`` in a subprocess, mounted and checked."""

    def __init__(self, server_url: str, mountpoint: pathlib.Path, workdir: pathlib.Path,
                 token_file: pathlib.Path | None = None, extra: list[str] | None = None) -> None:
        require_fuse()
        self.path = mountpoint
        self.path.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"mount-{mountpoint.name}.log"
        argv = [sys.executable, "-m", "dcorfs", "mount", str(mountpoint), "--foreground",
                "--host", server_url, "--log-file", str(self.log), "-v"] + (extra or [])
        if token_file is not None:
            argv += ["--token-file", str(token_file)]
        env = {k: v for k, v in os.environ.items() if k != "DCOR_API_TOKEN"}
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 30
        while not os.path.ismount(mountpoint):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mount process died (exit {self.proc.returncode}): "
                                   f"{self.proc.stderr.read().decode()}\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("mount did not appear within 30 s\n" + self.log_text())
            time.sleep(0.05)
        # tests that count the server's requests start once the mount's own are done
        try:
            self.warm_up = wait_until_warm(mountpoint, timeout=30)["warm_up"]
        except OSError as exc:
            self.unmount()
            raise RuntimeError(f"{exc}\n{self.log_text()}") from None

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def unmount(self) -> int:
        if os.path.ismount(self.path):
            tool = shutil.which("fusermount3") or shutil.which("fusermount")
            subprocess.run([tool, "-u", str(self.path)], check=False, timeout=30)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            subprocess.run([shutil.which("fusermount3") or "fusermount", "-uz", str(self.path)],
                           check=False)
            raise


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"test data not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("serve-cache")


@pytest.fixture(scope="session")
def server(shared_data, tmp_path_factory, cache_dir):
    srv = Server(shared_data, tmp_path_factory.mktemp("server"), cache_dir,
                 ["--private", PRIVATE_GLOB])
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> pathlib.Path:
    from dcorfs.server.demo_data import write_demo_folder

    folder = tmp_path_factory.mktemp("demo-data")
    write_demo_folder(folder, events=1500)
    return folder


@pytest.fixture(scope="session")
def demo_server(demo_dir, tmp_path_factory, cache_dir):
    """Demo data, the beads dataset private, presigned URLs living only 3 s."""
    srv = Server(demo_dir, tmp_path_factory.mktemp("demo-server"), cache_dir,
                 ["--private", "beads/*", "--presign-ttl", "3"])
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def mount(server, tmp_path_factory):
    """The main mount, with the token, shared by the read-only comparison tests."""
    work = tmp_path_factory.mktemp("mount")
    mnt = Mount(server.url, work / "mnt", work, token_file=server.token_file)
    yield mnt
    assert mnt.unmount() == 0, mnt.log_text()[-3000:]


@pytest.fixture
def fresh_mount(tmp_path):
    """A factory for per-test mounts (cold cache, other tokens); unmounted cleanly after."""
    mounts: list[Mount] = []

    def make(server_url: str, token_file: pathlib.Path | None = None,
             extra: list[str] | None = None) -> Mount:
        mnt = Mount(server_url, tmp_path / f"mnt{len(mounts)}", tmp_path, token_file, extra)
        mounts.append(mnt)
        return mnt

    yield make
    for mnt in mounts:
        assert mnt.unmount() == 0, mnt.log_text()[-3000:]
