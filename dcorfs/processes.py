"""Starting dcorfs in another process and waiting until it is up.

The demo, the benchmark, the tests and ``dcorfs mount`` (which starts its daemon
this way) all need the same two things: a command line that runs *this* dcorfs
whatever the working directory holds, and a wait that fails fast, with the
process's own words, when the process dies before it is ready.
"""
from __future__ import annotations

import contextlib
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Callable

import requests

# ``python -m dcorfs`` puts the working directory first on sys.path, so a folder named
# ``dcorfs`` there (a clone's parent, say) would be imported instead of the installed
# package.  This prelude drops it.  The word "dcorfs" after it keeps ``ps`` readable.
_PRELUDE = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
            "from dcorfs.cli import main; sys.exit(main(sys.argv[2:]))")


def dcorfs_argv(*args: str) -> list[str]:
    """The argv that runs ``dcorfs ARGS...`` with this interpreter and this package."""
    return [sys.executable, "-c", _PRELUDE, "dcorfs", *map(str, args)]


def tail(path: pathlib.Path | None, chars: int = 3000) -> str:
    """The end of a log file, or '' when there is none."""
    try:
        return path.read_text(errors="replace")[-chars:] if path else ""
    except OSError:
        return ""


def wait_for(ready: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float,
             log: pathlib.Path | None = None, interval: float = 0.05) -> None:
    """Wait until ``ready()``; RuntimeError with the end of ``log`` when ``proc`` exits
    first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}"
                               + (f"; the end of {log}:\n{tail(log)}" if log else ""))
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready within {timeout:.0f} s"
                               + (f"; the end of {log}:\n{tail(log)}" if log else ""))
        time.sleep(interval)


def api_answers(url: str) -> Callable[[], bool]:
    """A readiness check: the DCOR API at ``url`` answers ``status_show``."""
    def check() -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{url}/api/3/action/status_show", timeout=2).ok
        return False
    return check


def announced_store(log: pathlib.Path) -> str | None:
    """The object store's URL that ``dcorfs serve`` printed at start, from its log."""
    found = re.search(r"object store:\s+(\S+)", tail(log, 1_000_000))
    return found.group(1) if found else None


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """Terminate ``proc``; kill it when it does not end within ``timeout``."""
    proc.terminate()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
