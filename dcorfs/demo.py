"""``dcorfs demo``: the whole product in one command, on local demo data.

Writes a realistic measurement, starts ``dcorfs serve`` on it with a DCOR-like link
(latency, bandwidth), mounts it, lists a resource folder, loads features with
NumPy, shows what crossed the network and unmounts.  Nothing is fetched from
outside, so a newcomer sees it work on a fresh machine.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import requests

from .mount.fusermount import fuse_problem, unmount
from .mount.status import wait_until_warm
from .processes import api_answers, dcorfs_argv, stop, wait_for
from .server.ports import free_port


def _say(text: str) -> None:
    print(text, flush=True)


def run(workdir: pathlib.Path, events: int, latency_ms: float, bandwidth_mbs: float) -> int:
    problem = fuse_problem()
    if problem:
        print(f"dcorfs demo: cannot mount: {problem}", file=sys.stderr)
        return 2
    from .server.demo_data import write_demo_folder

    data = workdir / "data"
    marker = data / f".catalog-v2-events-{events}"  # a new layout writes the data anew
    if not marker.exists():
        _say(f"1. writing demo measurements ({events} events, images, masks, contours, "
             f"traces) to {data} ...")
        shutil.rmtree(data, ignore_errors=True)
        write_demo_folder(data, events=events)
        marker.touch()
    else:
        _say(f"1. demo measurements already in {data}")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve_log = workdir / "serve.log"
    _say(f"2. starting the local DCOR at {url} (latency {latency_ms:g} ms, "
         f"bandwidth {bandwidth_mbs:g} MB/s) ...")
    with serve_log.open("w") as out:
        server = subprocess.Popen(
            dcorfs_argv("serve", data, "--port", port, "--cache-dir", workdir / "serve-cache",
                        "--latency-ms", latency_ms, "--bandwidth-mbs", bandwidth_mbs),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    mountpoint = pathlib.Path(tempfile.mkdtemp(prefix="dcorfs-demo-mnt-"))
    mount = None
    try:
        wait_for(api_answers(url), server, "dcorfs serve", 300, serve_log, interval=0.1)

        mount_log = workdir / "mount.log"
        _say(f"3. mounting it at {mountpoint}")
        _say(f"   $ dcorfs mount {mountpoint} --host {url} --no-disk-cache")
        mount = subprocess.Popen(
            dcorfs_argv("mount", mountpoint, "--host", url, "--foreground", "--no-disk-cache",
                        "--log-file", mount_log), stdin=subprocess.DEVNULL)
        wait_for(lambda: os.path.ismount(mountpoint), mount, "dcorfs mount", 30, mount_log)
        warm = wait_until_warm(mountpoint)["warm_up"]
        _say(f"   mounted; connections to the API and the object store ({warm['store']}) "
             f"opened in the background in {warm['seconds']:.2f} s ({warm['state']})")

        requests.post(f"{url}/_dcorfs/stats/reset", timeout=10)
        _say("\n4. browsing by name")
        for sub in ("circles", "circles/demo-lab", "collections/demo-study",
                    "datasets/blood-cells"):
            listing = sorted(os.listdir(mountpoint / sub))
            _say(f"   $ ls {sub}/\n     " + "  ".join(
                f"{name}@" if os.path.islink(mountpoint / sub / name) else name
                for name in listing))
        results = mountpoint / "search" / "tags:blood"
        found = sorted(n for n in os.listdir(results) if n != "results.tsv")
        _say("   $ ls 'search/tags:blood/'      (DCOR's search, as a folder)\n     "
             + "  ".join(f"{name}@" for name in found))
        stats = requests.get(f"{url}/_dcorfs/stats", timeout=10).json()
        _say(f"   (those listings cost {stats.get('api_requests', 0)} API requests)")
        folder = mountpoint / "datasets" / "blood-cells" / "M001_data"
        _say(f"   $ readlink {folder.relative_to(mountpoint)}\n     {os.readlink(folder)}")

        requests.post(f"{url}/_dcorfs/stats/reset", timeout=10)
        _say(f"\n5. $ ls -l {folder}")
        for entry in sorted(folder.iterdir()):
            kind = "d" if entry.is_dir() else "-"
            size = entry.stat().st_size if entry.is_file() else 0
            _say(f"   {kind} {size:>12,d}  {entry.name}")
        stats = requests.get(f"{url}/_dcorfs/stats", timeout=10).json()
        _say(f"   (listing cost {stats.get('api_requests', 0)} API and "
             f"{stats.get('store_requests', 0)} object-store requests, "
             f"{stats.get('store_bytes', 0):,d} bytes)")

        file_size = (folder / "data.rtdc").stat().st_size
        for letter, (title, code) in zip("abc", (
                ("one scalar feature", lambda: np.load(folder / "deform.npy")),
                ("one image out of thousands, memory-mapped",
                 lambda: np.load(folder / "image.npy", mmap_mode="r")[events // 2].copy()),
                ("a fluorescence trace", lambda: np.load(folder / "trace" / "fl1_raw.npy")))):
            requests.post(f"{url}/_dcorfs/stats/reset", timeout=10)
            started = time.monotonic()
            array = code()
            took = time.monotonic() - started
            stats = requests.get(f"{url}/_dcorfs/stats", timeout=10).json()
            _say(f"\n6{letter}. {title}: shape {array.shape}, dtype {array.dtype}, "
                 f"{took * 1000:.0f} ms")
            _say(f"   fetched {stats.get('store_bytes', 0):,d} bytes in "
                 f"{stats.get('store_requests', 0)} requests "
                 f"{'(the listing had fetched it already) ' if not stats.get('store_requests') else ''}"
                 f"({100 * stats.get('store_bytes', 0) / file_size:.1f}% of the "
                 f"{file_size:,d}-byte file)")
        deform = np.load(folder / "deform.npy")
        _say(f"\n   deform: mean {deform.mean():.4f}, first values {np.round(deform[:4], 4)}")
        _say("\n7. unmounting")
    except RuntimeError as exc:
        print(f"dcorfs demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if mount is not None:
            unmount(mountpoint)
            with contextlib.suppress(subprocess.TimeoutExpired):
                mount.wait(timeout=20)
        stop(server)
        with contextlib.suppress(OSError):
            mountpoint.rmdir()
    code = mount.returncode if mount is not None else 1
    _say("demo done" if code == 0 else f"mount process exited with {code}")
    return 0 if code == 0 else 1
