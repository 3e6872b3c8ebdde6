"""Real processes for the tests: ``dcorfs serve`` and ``dcorfs mount --foreground``.

Modelled on pyfuse3's harness: wait for the mount, fail fast when the mount process
died, unmount at the end and assert that the process exited cleanly.  Every mount's
log is watched: a WARNING (or worse) with a code the test did not declare with
``@pytest.mark.expect_warnings("DCF101", ...)`` fails the test (``conftest.py``).
"""
from __future__ import annotations

from collections.abc import Callable

import io
import os
import pathlib
import re
import subprocess

import numpy as np
import pytest
import requests

from dcorfs.mount.fusermount import fuse_problem, unmount
from dcorfs.mount.status import wait_until_warm
from dcorfs.processes import announced_store, api_answers, dcorfs_argv, stop, tail, wait_for
from dcorfs.server.ports import free_port

# every mount started by a test, for the log watch
MOUNTS: list["Mount"] = []
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
LOG_PROBLEM = re.compile(r" (WARNING|ERROR|CRITICAL) [\w.]+: (DC[A-Z]\d{3})?")


def array_view(array: np.ndarray, asked: list | None = None):
    """An ``NpyView`` of an in-memory array, for the views made from one (text, TIFF);
    ``asked`` records the row ranges read."""
    from dcorfs.views.view import NpyView

    def rows(r0: int, r1: int) -> np.ndarray:
        if asked is not None:
            asked.append((r0, r1))
        return array[r0:r1]
    return NpyView(array.dtype, array.shape, rows)


def npy_bytes(array: np.ndarray) -> bytes:
    """What ``np.save`` writes: the bytes every ``.npy`` file of a mount must have."""
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def require_fuse() -> None:
    """Skip where FUSE cannot run, but fail instead when DCORFS_REQUIRE_FUSE=1 (CI)."""
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
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                dcorfs_argv("serve", data_dir, "--port", self.port, "--cache-dir", cache_dir,
                            "--token-file", self.token_file, *args),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_for(api_answers(self.url), self.proc, "dcorfs serve", 240, self.log, 0.2)
        except RuntimeError:
            stop(self.proc)
            raise
        self.token = self.token_file.read_text().strip()
        self.ids = self._resource_ids()
        self.store_url = announced_store(self.log)  # what its URLs point at

    def _resource_ids(self) -> dict[str, str]:
        """relative path -> resource id of every file of the data folder the server
        serves (as ``package_search`` lists them to the token's holder)."""
        from dcorfs.server.catalog import resource_id

        found = requests.get(f"{self.url}/api/3/action/package_search",
                             params={"rows": 1000, "include_private": "true"},
                             headers={"Authorization": self.token}, timeout=30).json()["result"]
        served = {res["id"] for pkg in found["results"] for res in pkg["resources"]}
        files = (p.relative_to(self.data_dir).as_posix()
                 for p in self.data_dir.rglob("*") if p.is_file())
        return {relpath: rid for relpath in files if (rid := resource_id(relpath)) in served}

    def stats(self) -> dict[str, int]:
        return requests.get(f"{self.url}/_dcorfs/stats", timeout=10).json()

    def reset_stats(self) -> None:
        requests.post(f"{self.url}/_dcorfs/stats/reset", timeout=10).raise_for_status()

    def set_faults(self, **faults) -> None:
        requests.post(f"{self.url}/_dcorfs/faults", json=faults, timeout=10).raise_for_status()

    def dcserv(self, rid: str, query: str, token: bool = True):
        headers = {"Authorization": self.token} if token else {}
        return requests.get(f"{self.url}/api/3/action/dcserv",
                            params={"id": rid, "query": query, "version": "2"},
                            headers=headers, timeout=30).json()

    def searched(self, q: str, token: bool = False) -> list[str]:
        """The names ``package_search`` returns for ``q``, in its order, every page."""
        names: list[str] = []
        start = 0
        while True:
            answer = requests.get(f"{self.url}/api/3/action/package_search",
                                  params={"q": q, "rows": 1000, "start": start,
                                          "include_private": "true"},
                                  headers={"Authorization": self.token} if token else {},
                                  timeout=60).json()
            assert answer["success"], answer
            names += [row["name"] for row in answer["result"]["results"]]
            start += 1000
            if start >= answer["result"]["count"]:
                return names

    def stop(self) -> None:
        stop(self.proc)


class Servers:
    """The one way tests start ``dcorfs serve``: each server in a work folder of its
    own, every one stopped when the fixture that made this ends (``conftest.py``:
    ``session_servers``, ``module_servers``, ``servers``)."""

    def __init__(self, workdir: Callable[[str], pathlib.Path],
                 cache_dir: pathlib.Path) -> None:
        """``workdir(name)``: a new empty folder; ``cache_dir``: the condensed files."""
        self._workdir = workdir
        self.cache_dir = cache_dir
        self._started: list[Server] = []

    def start(self, data_dir: pathlib.Path, *args: str, name: str = "server",
              port: int | None = None) -> Server:
        srv = Server(data_dir, self._workdir(name), self.cache_dir, list(args), port=port)
        self._started.append(srv)
        return srv

    def stop(self) -> None:
        for srv in reversed(self._started):
            srv.stop()
        self._started.clear()


class Mount:
    """``dcorfs mount --foreground`` in a subprocess, mounted and checked."""

    def __init__(self, server_url: str, mountpoint: pathlib.Path, workdir: pathlib.Path,
                 token_file: pathlib.Path | None = None, extra: list[str] | None = None,
                 env: dict[str, str] | None = None, warm: bool = True) -> None:
        """``env``: variables for the mount process (the runner's proxy settings are
        not passed on: the servers are on this machine); ``warm``: wait for the
        warm-up, so that tests counting requests start once the mount's own are done."""
        require_fuse()
        self.expected_exit = 0  # what unmount() must return; a test that kills it says so
        self.path = mountpoint
        self.path.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"mount-{mountpoint.name}.log"
        extra = list(extra or [])
        if "--cache-dir" not in extra:  # cold unless a test asks for a disk cache
            extra.append("--no-disk-cache")
        argv = dcorfs_argv("mount", mountpoint, "--foreground", "--host", server_url,
                           "--log-file", self.log, "-v", *extra)
        if token_file is not None:
            argv += ["--token-file", str(token_file)]
        env = {**{k: v for k, v in os.environ.items() if k != "DCOR_API_TOKEN"
                  and k.lower() not in PROXY_VARIABLES}, **(env or {})}
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env)
        try:
            wait_for(lambda: os.path.ismount(mountpoint), self.proc, "dcorfs mount", 30,
                     self.log)
        except RuntimeError as exc:
            if self.proc.poll() is None:
                self.proc.kill()
            raise RuntimeError(f"{exc}\n{self.proc.stderr.read().decode()}") from None
        MOUNTS.append(self)
        self.warm_up = None
        if not warm:
            return
        try:
            self.warm_up = wait_until_warm(mountpoint, timeout=30)["warm_up"]
        except OSError as exc:
            self.unmount()
            raise RuntimeError(f"{exc}\n{self.log_text()}") from None

    def status(self) -> dict:
        from dcorfs.mount.status import read_status

        return read_status(self.path)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def problems_since(self, offset: int) -> list[tuple[str, str]]:
        """(code, line) of each WARNING or worse logged after byte ``offset``."""
        with self.log.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        return [(match.group(2) or "no code", line) for line in text.splitlines()
                if (match := LOG_PROBLEM.search(line))]

    def unmount(self) -> int:
        if os.path.ismount(self.path):
            unmount(self.path)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            unmount(self.path, lazy=True)
            raise


__all__ = ["MOUNTS", "Mount", "Server", "free_port", "npy_bytes", "require_fuse", "tail"]
