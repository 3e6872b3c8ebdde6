"""``make bench``: dcorfs vs dclab's DCOR client vs h5py on local disk, side by side.

One run, one machine, one emulated link (``dcorfs serve --latency-ms 20
--bandwidth-mbs 50``): every figure is a ratio measured in the same run, so a
noisy shared machine shifts all columns alike.  Each timed read runs in a fresh
Python process (imports excluded from the timing); dcorfs gets a fresh mount for
every cold run.  Every cold figure is the median of ``--repeats`` runs (3), warm
ones the best of 3.  The server counts the requests, bytes and round trips each
tool caused.

The physical limit of a scenario is ``round trips x latency + compressed bytes
needed / bandwidth``.  Its round trips are the fewest a reader that knows nothing
about the file can take (``HDF5Chain``): the basins; the file's head and tail at
once; then each HDF5 structure on the way to the feature's chunks that lies beyond
the bytes it already has, one after another because each names the next (the
group's B-tree node, its symbol-table node, the dataset's object header, its chunk
index); then the chunks.  For the files here that is 5 for one feature, as the
issue's own estimate has it (dclab's 0.73 s is "about 5x" 5 x 20 ms + 2.3 MB at
50 MB/s).  Random single images are asked for one by one, so their limit is the
cheaper of two readers that learn each pick only when it is read: one that fetches
each chunk touched (a round trip per chunk), and one that streams the whole
dataset at once.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import struct
import subprocess
import sys
import tempfile
import textwrap
import time

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import requests

from dcorfs import paths
from dcorfs.hdf5.hints import find_all, group_table_addresses
from dcorfs.mount.fusermount import unmount
from dcorfs.mount.status import wait_until_warm
from dcorfs.processes import announced_store, api_answers, dcorfs_argv, stop, wait_for
from dcorfs.server.ports import free_port

EVENTS = 300_000
IMAGES = 5_000
LATENCY_MS = 20.0
BANDWIDTH_MBS = 50.0
SCALARS = ["deform", "area_um", "bright_avg", "circ"]
RANDOM_IMAGES = 200
SYNTHETIC = 10_000  # datasets added to the catalog for the browsing scenarios
HANDSHAKE_RTTS = 2  # a new connection costs TCP's and TLS 1.3's round trips, as on DCOR
IDLE_CLOSE_S = 20.0  # idle keep-alive connections are closed, as S3 does after about 20 s
MANY_FILES = 20  # resources of the dataset ``many-files``
LARGE_EVENTS = 220_000  # a large measurement with images and contours (issue 16)
HUGE_EVENTS = 2_000_000  # a scalar-only measurement of this many events
CONSECUTIVE = 1_000  # contours read one after another in (r)
FAR_LATENCY_MS = 150.0  # DCOR reached from outside Europe, for (a), (c) and (m) again
# the round trips of a cold scalar read that carry what the reader needs: DCOR's answer,
# the file's metadata, the chunks (issue 28's limit; the HDF5 chain's own is longer)
DATA_ROUND_TRIPS = 3
MIRROR_MOUNTS = 4  # machines of a lab reading one resource at once in (y)


class HDF5Chain:
    """Counts the dependent round trips an ideal reader needs to reach datasets' chunks.

    The reader fetches the first MiB and the last 64 KiB at once, then whole 64 KiB
    blocks around each structure it must read (with the first symbol-table node, all
    the group tables the head and tail name); a structure in bytes it already has
    costs nothing, any other one a round trip after the one that named it.
    """

    HEAD, TAIL, BLOCK = 1 << 20, 64 << 10, 64 << 10

    def __init__(self, path: pathlib.Path) -> None:
        self.data = path.read_bytes()
        size = len(self.data)
        self.known = [(0, self.HEAD), (max(0, size - self.TAIL), size)]
        # symbol-table nodes named by group B-tree nodes inside the head and tail
        self.named = (group_table_addresses(self.data[:self.HEAD], size)
                      | group_table_addresses(self.data[-self.TAIL:], size))
        self.snod_of: dict[int, int] = {}  # object header address -> its symbol-table node
        for at in find_all(self.data, b"SNOD"):
            if self.data[at + 4] != 1:
                continue
            for i in range(struct.unpack_from("<H", self.data, at + 6)[0]):
                entry = at + 8 + 40 * i
                if entry + 16 <= size:
                    self.snod_of.setdefault(struct.unpack_from("<Q", self.data, entry + 8)[0], at)
        self.h5 = h5py.File(path, "r", locking=False)

    def close(self) -> None:
        self.h5.close()

    def _costs(self, address: int, length: int) -> int:
        """0 if ``[address, address + length)`` is in hand, else 1 (and now it is)."""
        if any(a <= address and address + length <= b for a, b in self.known):
            return 0
        start = address // self.BLOCK * self.BLOCK
        self.known.append((start, start + self.BLOCK))
        return 1

    def _chunk_index(self, dataset: h5py.Dataset, first_chunk: int) -> int | None:
        """The version-1 B-tree node that lists the dataset's first chunk."""
        key = 8 + 8 * (dataset.ndim + 1)  # chunk size, filter mask, offsets
        for at in find_all(self.data, b"TREE"):
            if self.data[at + 4] != 1:
                continue
            for i in range(struct.unpack_from("<H", self.data, at + 6)[0]):
                child = at + 24 + i * (key + 8) + key
                if child + 8 <= len(self.data) and \
                        struct.unpack_from("<Q", self.data, child)[0] == first_chunk:
                    return at
        return None

    def round_trips(self, feature: str, data: bool = True, alone: bool = False) -> int:
        """Round trips after the head and tail until the chunks of ``events/feature``
        have arrived (their own round trip included), or with ``data=False`` until its
        shape is known.  ``alone``: as if nothing else had been read since the probe
        (readers running in parallel)."""
        known = list(self.known)
        events = self.h5["events"]
        header = events.id.links.get_info(feature.encode()).u
        snod = self.snod_of[header]
        trips = 0 if snod in self.named else 1  # the B-tree node naming it
        if self._costs(snod, 8 + 40 * 2):
            trips += 1  # in the same wave, every other table the probe names (dcorfs does)
            for address in self.named:
                self._costs(address, 1)
        trips += self._costs(header, 512)
        if data:
            offsets: list[int] = []
            events[feature].id.chunk_iter(lambda info: offsets.append(info.byte_offset))
            tree = self._chunk_index(events[feature], min(offsets)) if offsets else None
            trips += (0 if tree is None else self._costs(tree, 24)) + 1
        if alone:
            self.known = known
        return trips

    def in_turn(self, features: list[str]) -> int:
        """Round trips to read ``features`` one after another (each finds what the ones
        before it fetched); the chain is left as it was, for the scenarios after."""
        known = list(self.known)
        try:
            return sum(self.round_trips(f) for f in features)
        finally:
            self.known = known

    def metadata_bytes(self, features: list[str]) -> int:
        """Bytes the ideal reader fetches besides chunks to reach ``features``' chunks:
        the head and tail, and the 64 KiB blocks around each structure on the way."""
        known = list(self.known)
        try:
            for feature in features:
                self.round_trips(feature)
            spans = sorted(self.known)
        finally:
            self.known = known
        total, reach = 0, 0
        for begin, end in spans:  # their union
            total += max(0, end - max(begin, reach))
            reach = max(reach, end)
        return total

    def listing_round_trips(self) -> int:
        """Round trips after the head and tail until every feature's shape is known,
        all looked up in parallel."""
        return max((self.round_trips(name, data=False, alone=True)
                    for name in self.h5["events"]), default=0)


def _script(prelude: str, body: str) -> str:
    """A timed program: ``prelude`` (imports, untimed) then ``body`` (timed).  A body
    that times itself (processes of its own) sets ``inner`` to its seconds."""
    return "\n".join([textwrap.dedent(prelude).strip(), "t0 = time.perf_counter()",
                      textwrap.dedent(body).strip(),
                      'print(json.dumps({"seconds": globals().get("inner", '
                      'time.perf_counter() - t0)}))'])


def _together(imports: str, work: str, argv: str, margin: float = 3.0,
              items: list[str] = SCALARS) -> str:
    """A body that runs ``work`` in a process per item (``f`` in ``argv``) at once,
    timed inside them: each imports first, then waits for a common start ``margin``
    seconds ahead, works, and prints when it finished; ``inner`` is the last finish
    minus the start.  Process start and imports, which differ between contenders, are
    not timed."""
    child = (f"import sys, time; {imports}; start = float(sys.argv[-1]); "
             f"time.sleep(max(0.0, start - time.time())); {work}; print(time.time())")
    return f"""
        import subprocess, sys
        start = time.time() + {margin}
        procs = [subprocess.Popen([sys.executable, "-c", {child!r}, *({argv}), str(start)],
                                  stdout=subprocess.PIPE, text=True) for f in {items!r}]
        ends = [float(p.communicate()[0].split()[-1]) for p in procs]
        assert all(p.returncode == 0 for p in procs)
        inner = max(ends) - start
    """


def _timed_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it must print one JSON line with 'seconds'."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class Bench:
    def __init__(self, workdir: pathlib.Path) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        # two measurements, as DCOR would hold them: a long one with scalar features
        # only, and one with images (a 300,000-image file would be 6 GB raw)
        self.files = {"scalars": self.data / "scalars" / "M001_scalars.rtdc",
                      "images": self.data / "images" / "M002_images.rtdc",
                      "large": self.data / "large" / "M003_large.rtdc",
                      "huge": self.data / "huge" / "M004_scalars.rtdc"}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: subprocess.Popen | None = None
        self.repeats = 3
        self.mounts: list[tuple[subprocess.Popen, pathlib.Path]] = []
        self.chains: dict[str, HDF5Chain] = {}

    # -- setup --------------------------------------------------------------------
    def prepare(self) -> None:
        from dcorfs.server.demo_data import write_demo_file

        marker = self.data / f".{EVENTS}-{IMAGES}.ok"
        if not marker.exists():
            print(f"writing {EVENTS:,d} events of scalar features and {IMAGES:,d} events with "
                  f"images and masks of 80x250 ...", flush=True)
            write_demo_file(self.files["scalars"], events=EVENTS, images=0,
                            with_contours=False, with_traces=False, seed=7)
            write_demo_file(self.files["images"], events=IMAGES, with_contours=False,
                            with_traces=False, seed=8)
            marker.touch()
        marker = self.data / f".{LARGE_EVENTS}-{HUGE_EVENTS}.ok"
        if not marker.exists():
            print(f"writing {LARGE_EVENTS:,d} events with images and contours, and "
                  f"{HUGE_EVENTS:,d} events of scalar features (once; minutes) ...", flush=True)
            write_demo_file(self.files["large"], events=LARGE_EVENTS, with_traces=False,
                            seed=9)
            write_demo_file(self.files["huge"], events=HUGE_EVENTS, images=0,
                            with_contours=False, with_traces=False, seed=10)
            marker.touch()
        many = self.data / "many-files"
        many.mkdir(parents=True, exist_ok=True)
        for i in range(MANY_FILES):
            (many / f"table_{i:02d}.csv").write_text("time,temperature\n0,22.5\n1,22.6\n")
        log = self.workdir / "serve.log"
        self.server = self.serve(self.port, LATENCY_MS, log)
        # the first start condenses every measurement, as DCOR does (the large one with
        # its contours: about ten minutes); later starts find them in serve-cache
        wait_for(api_answers(self.url), self.server, "dcorfs serve", 7200, log, interval=0.5)
        by_name = {}
        for kind, path in self.files.items():
            found = requests.get(f"{self.url}/api/3/action/package_show",
                                 params={"id": path.parent.name}, timeout=30).json()
            by_name.update({r["name"]: r for r in found["result"]["resources"]})
        self.rids = {kind: by_name[path.name]["id"] for kind, path in self.files.items()}
        self.store_url = announced_store(log)
        self.condensed = {kind: self.workdir / "serve-cache" /
                          f"{by_name[path.name]['sha256']}_condensed.rtdc"
                          for kind, path in self.files.items()}
        for kind, path in self.condensed.items():
            if not path.exists():
                raise RuntimeError(f"the server made no condensed file for {kind}; "
                                   f"see {self.workdir / 'serve.log'}")

    def serve(self, port: int, latency_ms: float, log: pathlib.Path) -> subprocess.Popen:
        """``dcorfs serve`` of the bench's data on ``port`` at ``latency_ms``."""
        with log.open("w") as out:
            return subprocess.Popen(
                dcorfs_argv("serve", self.data, "--port", port,
                            "--cache-dir", self.workdir / "serve-cache",
                            "--latency-ms", latency_ms, "--bandwidth-mbs", BANDWIDTH_MBS,
                            "--handshake-rtts", HANDSHAKE_RTTS, "--idle-close-s", IDLE_CLOSE_S,
                            "--synthetic", SYNTHETIC),
                stdout=out, stderr=subprocess.STDOUT)

    def chunk_bytes(self, path: pathlib.Path, feature: str, rows: list[int] | None = None) -> tuple[int, int]:
        """(compressed bytes, chunks) needed for a feature, or for the chunks of some rows."""
        with h5py.File(path, "r", locking=False) as h5:
            ds = h5["events"][feature]
            sizes = {}
            ds.id.chunk_iter(lambda info: sizes.__setitem__(info.chunk_offset[0] // ds.chunks[0], info.size))
            if rows is None:
                return sum(sizes.values()), len(sizes)
            touched = {r // ds.chunks[0] for r in rows}
            return sum(sizes[c] for c in touched), len(touched)

    # -- mounts and stats -------------------------------------------------------------
    def mount(self, cache_dir: pathlib.Path | None = None,
              extra: tuple[str, ...] = (), warm: bool = True) -> pathlib.Path:
        """A fresh mount; without ``cache_dir``, with no disk cache (cold means cold);
        ``warm``: wait for its warm-up, as for anyone who mounted before reading."""
        mnt = pathlib.Path(tempfile.mkdtemp(prefix="dcorfs-bench-"))
        log = self.workdir / "mount.log"
        disk = ["--cache-dir", cache_dir] if cache_dir is not None else ["--no-disk-cache"]
        proc = subprocess.Popen(dcorfs_argv("mount", mnt, "--foreground", "--host", self.url,
                                            "--log-file", log, "--cache-size", "1G", *disk,
                                            *extra),
                                stdin=subprocess.DEVNULL)
        wait_for(lambda: os.path.ismount(mnt), proc, "dcorfs mount", 30, log)
        self.mounts.append((proc, mnt))
        if warm:
            wait_until_warm(mnt)  # its connections opened: what a user who mounted earlier finds
        return mnt

    def mount_rss_mb(self, field: str = "VmHWM") -> float:
        """The last mount daemon's peak (VmHWM) or current (VmRSS) memory, MB."""
        proc, _ = self.mounts[-1]
        for line in pathlib.Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def unmount_all(self) -> None:
        for proc, mnt in self.mounts:
            unmount(mnt)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            with contextlib.suppress(OSError):
                mnt.rmdir()
        self.mounts.clear()

    def median(self, run) -> dict:
        """The run with the median time of ``self.repeats`` (all times kept): one slow
        moment of a shared machine should not decide a ratio."""
        results = sorted((run() for _ in range(self.repeats)), key=lambda r: r["seconds"])
        chosen = dict(results[len(results) // 2])
        chosen["runs_seconds"] = [round(r["seconds"], 4) for r in results]
        if any("peak_rss_mb" in r for r in results):
            chosen["peak_rss_mb"] = max(r.get("peak_rss_mb", 0.0) for r in results)
        return chosen

    def cold(self, body: str, kind: str) -> tuple[dict, pathlib.Path]:
        """dcorfs on a fresh mount per repeat; returns the median and the last mount
        (which has read the data, for warm re-reads)."""
        def once() -> dict:
            self.unmount_all()  # earlier repeats' mounts are done
            result = self.dcorfs(body, self.mount(), kind)
            result["peak_rss_mb"] = self.mount_rss_mb()
            return result
        return self.median(once), self.mounts[-1][1]

    def reset(self) -> None:
        requests.post(f"{self.url}/_dcorfs/stats/reset", timeout=10).raise_for_status()

    def seen(self) -> dict:
        stats = requests.get(f"{self.url}/_dcorfs/stats", timeout=10).json()
        return {"requests": stats.get("api_requests", 0) + stats.get("store_requests", 0),
                "api_requests": stats.get("api_requests", 0),
                "store_requests": stats.get("store_requests", 0),
                "round_trips": stats.get("round_trips", 0),
                "connections": stats.get("connections", 0),
                "api_bytes": stats.get("api_bytes", 0),
                "bytes": stats.get("store_bytes", 0)}

    # -- the three contenders ------------------------------------------------------------
    def dcorfs(self, body: str, mnt: pathlib.Path, kind: str) -> dict:
        code = _script(f"""
            import json, os, time, numpy as np
            root = {str(mnt)!r}
            folder = {str(mnt / self.rids[kind])!r}
        """, body)
        self.reset()
        result = _timed_python(code)
        result.update(self.seen())
        return result

    def dclab(self, body: str, kind: str) -> dict:
        code = _script("""
            import json, time, warnings, numpy as np
            warnings.simplefilter("ignore")
            import dclab
        """, f"ds = dclab.new_dataset({self.rids[kind]!r}, host={self.url.split('//')[1]!r}, "
             f"use_ssl=False)\n" + textwrap.dedent(body).strip())
        self.reset()
        result = _timed_python(code)
        result.update(self.seen())
        return result

    def local(self, body: str, kind: str) -> dict:
        code = _script("import json, time, h5py, hdf5plugin, numpy as np",
                       f"h5 = h5py.File({str(self.files[kind])!r}, 'r', locking=False)\n"
                       f"ev = h5['events']\n" + textwrap.dedent(body).strip())
        return _timed_python(code)

    # -- scenarios ---------------------------------------------------------------------
    def run(self) -> list[dict]:
        lat, bw = LATENCY_MS / 1000, BANDWIDTH_MBS * 1e6
        rng = np.random.default_rng(1)
        picks = [int(i) for i in rng.choice(IMAGES, RANDOM_IMAGES, replace=False)]
        rows = []

        def row(name, dcorfs, dclab, local, limit_rt, limit_bytes, **extra):
            limit = limit_rt * lat + limit_bytes / bw
            entry = {"scenario": name, "dcorfs": dcorfs, "dclab": dclab, "local": local,
                     "limit_seconds": limit, "limit_round_trips": limit_rt,
                     "limit_bytes": limit_bytes, **extra}
            rows.append(entry)
            d = dcorfs["seconds"]
            print(f"{name}: dcorfs {d:.3f} s, dclab "
                  f"{dclab['seconds']:.3f} s, local {local['seconds']:.3f} s, "
                  f"limit {limit:.3f} s; dcorfs {dcorfs.get('requests', '-')} requests in "
                  f"{dcorfs.get('round_trips', '-')} round trips, "
                  f"{dcorfs.get('bytes', 0):,d} B", flush=True)

        sca, img = "scalars", "images"
        src = self.condensed[sca]  # scalar features come from the condensed basin
        # dependent round trips of an ideal reader: 2 (basins; head and tail) + the chain
        chains = self.chains = {sca: HDF5Chain(src), img: HDF5Chain(self.files[img]),
                                "images condensed": HDF5Chain(self.condensed[img])}
        one, _ = self.chunk_bytes(src, "deform")
        a, mnt_a = self.cold("np.load(os.path.join(folder, 'deform.npy'))", sca)
        warm_mounts = [self.mounts.pop()]  # kept out of the next scenarios' unmounting for (e)
        row("(a) one scalar feature, cold", a,
            self.median(lambda: self.dclab("ds['deform'][:]", sca)),
            self.median(lambda: self.local("ev['deform'][:]", sca)),
            2 + chains[sca].round_trips("deform", alone=True), one,
            feature_compressed_bytes=one)

        three = sum(self.chunk_bytes(src, f)[0] for f in SCALARS[:3])
        row("(b) three scalar features, cold",
            self.cold("\n".join(f"np.load(os.path.join(folder, '{f}.npy'))" for f in SCALARS[:3]),
                      sca)[0],
            self.median(lambda: self.dclab("\n".join(f"ds['{f}'][:]" for f in SCALARS[:3]), sca)),
            self.median(lambda: self.local("\n".join(f"ev['{f}'][:]" for f in SCALARS[:3]), sca)),
            2 + chains[sca].in_turn(SCALARS[:3]), three)

        images, _ = self.chunk_bytes(self.files[img], "image")
        c, mnt_c = self.cold("np.load(os.path.join(folder, 'image.npy'))", img)
        warm_mounts.append(self.mounts.pop())
        row("(c) all images, sequentially", c, self.median(lambda: self.dclab("ds['image'][:]", img)),
            self.median(lambda: self.local("ev['image'][:]", img)),
            2 + chains[img].round_trips("image", alone=True), images,
            image_compressed_bytes=images, mount_peak_rss_mb=c["peak_rss_mb"])

        pick_bytes, touched = self.chunk_bytes(self.files[img], "image", picks)
        body_d = f"""
            images = np.load(os.path.join(folder, 'image.npy'), mmap_mode='r')
            for i in {picks!r}:
                np.array(images[i])
        """
        per_chunk = (2 + chains[img].round_trips("image", alone=True) - 1 + touched, pick_bytes)
        whole = (2 + chains[img].round_trips("image", alone=True), images)
        row("(d) 200 random single images (mmap)", self.cold(body_d, img)[0],
            self.median(lambda: self.dclab(f"for i in {picks!r}:\n    ds['image'][i]", img)),
            self.median(lambda: self.local(f"for i in {picks!r}:\n    ev['image'][i]", img)),
            *min(per_chunk, whole, key=lambda limit: limit[0] * lat + limit[1] / bw),
            chunks_touched=touched)
        self.mounts.extend(warm_mounts)

        # warm reads are bound by the machine's page-fault speed, which varies a lot on
        # shared machines: best of three for every contender
        warm_a = min((self.dcorfs("np.load(os.path.join(folder, 'deform.npy'))", mnt_a, sca)
                      for _ in range(3)), key=lambda r: r["seconds"])
        warm_c = min((self.dcorfs("np.load(os.path.join(folder, 'image.npy'))", mnt_c, img)
                      for _ in range(3)), key=lambda r: r["seconds"])
        raw_image = IMAGES * 80 * 250
        warm_c["mb_per_s"] = raw_image / warm_c["seconds"] / 1e6
        best = lambda run: min((run() for _ in range(3)), key=lambda r: r["seconds"])  # noqa: E731
        row("(e1) warm re-read of (a)", warm_a, best(lambda: self.dclab("ds['deform'][:]", sca)),
            best(lambda: self.local("ev['deform'][:]", sca)), 0, 0)
        row("(e2) warm re-read of (c)", warm_c, best(lambda: self.dclab("ds['image'][:]", img)),
            best(lambda: self.local("ev['image'][:]", img)), 0, 0, mb_per_s=warm_c["mb_per_s"])

        body_f = """
            import subprocess
            subprocess.run(["ls", "-l", folder], check=True, capture_output=True)
        """
        row("(f) ls -l of a resource folder, cold", self.cold(body_f, img)[0],
            self.median(lambda: self.dclab("sorted(ds.features)", img)),
            self.median(lambda: self.local("[ev[k].shape for k in ev]", img)),
            2 + max(chains[img].listing_round_trips(),
                    chains["images condensed"].listing_round_trips()), 0)

        body_g = _together("import numpy as np", "np.load(sys.argv[1])",
                           "[os.path.join(folder, f + '.npy')]")
        body_g_dclab = _together(
            "import warnings, dclab; warnings.simplefilter('ignore')",
            "ds = dclab.new_dataset(sys.argv[1], host=sys.argv[2], use_ssl=False); "
            "ds[sys.argv[3]][:]", f"[{self.rids[sca]!r}, {self.url.split('//')[1]!r}, f]")
        body_g_local = _together(
            "import h5py, hdf5plugin",
            "h5py.File(sys.argv[1], 'r', locking=False)['events'][sys.argv[2]][:]",
            f"[{str(self.files[sca])!r}, f]")
        four = sum(self.chunk_bytes(src, f)[0] for f in SCALARS)
        row("(g) four processes, four features, cold", self.cold(body_g, sca)[0],
            self.median(lambda: self.dclab(body_g_dclab, sca)),
            self.median(lambda: self.local(body_g_local, sca)),
            2 + max(chains[sca].round_trips(f, alone=True) for f in SCALARS), four)
        return rows


def browse(bench: "Bench", deform_round_trips: int) -> list[dict]:
    """Browsing by name, dcorfs only (dclab has no equivalent): cold, on fresh mounts,
    the median of ``bench.repeats`` runs; the requests each needed."""
    lat, bw = LATENCY_MS / 1000, BANDWIDTH_MBS * 1e6
    rows = []
    datasets = SYNTHETIC + 5  # scalars, images, many-files, large, huge

    def cold(body: str) -> dict:
        def once() -> dict:
            bench.unmount_all()
            bench.mount()
            rss_before = bench.mount_rss_mb("VmRSS")
            result = bench.dcorfs(body, bench.mounts[-1][1], "scalars")
            result["rss_growth_mb"] = bench.mount_rss_mb("VmRSS") - rss_before
            return result
        return bench.median(once)

    h = cold("assert len(os.listdir(os.path.join(root, 'datasets'))) == "
             f"{datasets}")
    # the first page, then the others at once: two round trips and the answers' bytes
    limit = 2 * lat + h["api_bytes"] / bw
    rows.append({"scenario": f"(h) ls datasets/ ({datasets:,d} datasets), cold", "dcorfs": h,
                 "target_requests": -(-datasets // 1000) + 1, "limit_seconds": limit})
    i = cold("assert len(os.listdir(os.path.join(root, 'circles', 'synthetic-003'))) == 200")
    rows.append({"scenario": "(i) ls circles/<c>/ (200 datasets), cold", "dcorfs": i,
                 "target_requests": 2, "limit_seconds": 0.0})
    j = cold("import subprocess\nsubprocess.run(['ls', '-l', os.path.join(root, 'datasets', "
             "'many-files')], check=True, capture_output=True)")
    rows.append({"scenario": f"(j) ls -l datasets/<d>/ ({MANY_FILES} resources), cold",
                 "dcorfs": j, "target_requests": 1, "limit_seconds": 0.0})
    stem = bench.files["scalars"].stem
    k = cold(f"np.load(os.path.join(root, 'datasets', 'scalars', {stem!r}, 'deform.npy'))")
    rows.append({"scenario": "(k) (a) through datasets/<d>/<stem>/, cold", "dcorfs": k,
                 "target_round_trips": deform_round_trips + 1, "limit_seconds": 0.0})
    # a fifth of the synthetic datasets are tagged blood: 2,000 links and results.tsv
    found = SYNTHETIC // 5
    z = cold(f"assert len(os.listdir(os.path.join(root, 'search', 'tags:blood'))) == "
             f"{found + 1}")
    rows.append({"scenario": f"(z) ls search/tags:blood/ ({found:,d} of {datasets:,d} "
                             f"datasets), cold", "dcorfs": z,
                 "target_requests": 1 + -(-found // 1000),
                 "limit_seconds": 2 * lat + z["api_bytes"] / bw, "target_ratio": 2.0})
    return rows


def idle_mounts(bench: "Bench", count: int) -> list[tuple[subprocess.Popen, pathlib.Path, float]]:
    """Mounts for (m), started before every other scenario so that they sit idle while
    those run: (process, mount point, when their warm-up ended)."""
    made = []
    for _ in range(count):
        mnt = bench.mount()
        proc, _ = bench.mounts.pop()
        made.append((proc, mnt, time.monotonic()))
    return made


def disk_cache(bench: "Bench", rows: list[dict], idle: list, idle_s: float) -> list[dict]:
    """The disk cache and idle connections (issue 12's targets), beside (a) and (c)."""
    lat, bw = LATENCY_MS / 1000, BANDWIDTH_MBS * 1e6
    a = next(r for r in rows if r["scenario"].startswith("(a)"))
    c = next(r for r in rows if r["scenario"].startswith("(c)"))
    out = []
    body_a = "np.load(os.path.join(folder, 'deform.npy'))"
    body_c = "np.load(os.path.join(folder, 'image.npy'))"

    # (l) a remount finds the feature on disk: no request, and how close to local disk
    def remount_once() -> dict:
        bench.unmount_all()
        cache = pathlib.Path(tempfile.mkdtemp(prefix="dcorfs-bench-cache-"))
        bench.dcorfs(body_a, bench.mount(cache), "scalars")
        bench.unmount_all()
        result = bench.dcorfs(body_a, bench.mount(cache), "scalars")
        bench.unmount_all()
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        return result
    local_a = a["local"]
    lm = bench.median(remount_once)
    out.append({"scenario": "(l) (a) after a remount, from the disk cache", "dcorfs": lm,
                "compare": local_a, "compare_name": "local h5py", "target": "<= 3x local h5py, "
                "0 requests", "ratio": lm["seconds"] / local_a["seconds"]})

    # (m) after sitting idle: the server closed every connection
    def idle_once() -> dict:
        proc, mnt, since = idle.pop(0)
        bench.mounts.append((proc, mnt))  # unmounted with the others from now on
        time.sleep(max(0.0, since + idle_s - time.monotonic()))
        return bench.dcorfs(body_a, mnt, "scalars")
    results = sorted((idle_once() for _ in range(len(idle))), key=lambda r: r["seconds"])
    m = dict(results[len(results) // 2])
    m["runs_seconds"] = [round(r["seconds"], 4) for r in results]
    limit = (a["limit_round_trips"] + HANDSHAKE_RTTS) * lat + a["limit_bytes"] / bw
    out.append({"scenario": f"(m) (a) after {idle_s:.0f} s idle", "dcorfs": m,
                "compare": a["dclab"], "compare_name": "dclab (a)",
                "target": ">= 3x faster than dclab, <= 1.5x the limit with handshakes",
                "ratio": a["dclab"]["seconds"] / m["seconds"], "limit_seconds": limit})
    bench.unmount_all()

    # (n) dcorfs prefetch of the image resource: how much of the link it uses
    def prefetch_once() -> dict:
        bench.unmount_all()
        cache = pathlib.Path(tempfile.mkdtemp(prefix="dcorfs-bench-cache-"))
        mnt = bench.mount(cache)
        result = bench.dcorfs("import contextlib, io\nfrom dcorfs import prefetch\n"
                              "with contextlib.redirect_stderr(io.StringIO()):\n"
                              "    assert prefetch.run([folder], None, 4) == 0", mnt, "images")
        bench.unmount_all()
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        result["link_share"] = result["bytes"] / result["seconds"] / bw
        return result
    n = bench.median(prefetch_once)
    out.append({"scenario": f"(n) dcorfs prefetch of a resource ({n['bytes'] / 1e6:.0f} MB)",
                "dcorfs": n, "target": ">= 85% of the link",
                "ratio": n["link_share"]})

    # (o) cold reads that also fill the disk cache, against (a) and (c) without it
    for name, body, kind, without in (("(a)", body_a, "scalars", a), ("(c)", body_c, "images", c)):
        def filling_once(body=body, kind=kind) -> dict:
            bench.unmount_all()
            cache = pathlib.Path(tempfile.mkdtemp(prefix="dcorfs-bench-cache-"))
            result = bench.dcorfs(body, bench.mount(cache), kind)
            bench.unmount_all()
            subprocess.run(["rm", "-rf", str(cache)], check=True)
            return result
        o = bench.median(filling_once)
        out.append({"scenario": f"(o) {name} cold, with the disk cache on", "dcorfs": o,
                    "compare": without["dcorfs"], "compare_name": f"{name} without it",
                    "target": "<= 1.10x without it",
                    "ratio": o["seconds"] / without["dcorfs"]["seconds"]})
    return out


def large(bench: "Bench") -> list[dict]:
    """A large measurement's contours and originals, and a huge scalar one (issue 16),
    beside dclab and the limit where one applies."""
    lat, bw = LATENCY_MS / 1000, BANDWIDTH_MBS * 1e6
    last = LARGE_EVENTS - 1
    width = len(str(last))
    out = []

    def cold(body: str, kind: str, rss: bool = False, opened: bool = True) -> dict:
        def once() -> dict:
            bench.unmount_all()
            mnt = bench.mount()
            if opened:  # the resource is looked up first (its basins): what is measured
                bench.dcorfs("os.stat(folder)", mnt, kind)  # is the contour folder's work
            before = bench.mount_rss_mb("VmRSS")
            result = bench.dcorfs(body, mnt, kind)
            if rss:
                result["rss_growth_mb"] = bench.mount_rss_mb("VmRSS") - before
            return result
        return bench.median(once)

    p = cold(f"assert len(os.listdir(os.path.join(folder, 'contour'))) == {LARGE_EVENTS}",
             "large")
    out.append({"scenario": f"(p) ls contour/ ({LARGE_EVENTS:,d} events), cold", "dcorfs": p,
                "target": "<= 1 s, <= 3 requests"})
    q_body = f"np.load(os.path.join(folder, 'contour', '{last:0{width}d}.npy'))"
    q = cold(q_body, "large")
    q_dclab = bench.median(lambda: bench.dclab(f"ds['contour'][{last}]", "large"))
    out.append({"scenario": f"(q) contour/{last}.npy, cold", "dcorfs": q, "dclab": q_dclab,
                "target": "<= dclab, <= 12 round trips"})
    # (r) a loop over contours, as users write it, from event 0, a random start and the
    # middle; then from random starts after ls -l learned every address (a remount)
    rng = np.random.default_rng(28)
    starts = {"from event 0": 0,
              "from a random start": int(rng.integers(1, LARGE_EVENTS - CONSECUTIVE)),
              "from the middle": LARGE_EVENTS // 2}

    def loop(first: int) -> str:
        return (f"for i in range({first}, {first + CONSECUTIVE}):\n"
                f"    np.load(os.path.join(folder, 'contour', f'{{i:0{width}d}}.npy'))")

    for label, first in starts.items():
        r = cold(loop(first), "large")
        r_dclab = bench.median(lambda first=first: bench.dclab(
            f"for i in range({first}, {first + CONSECUTIVE}):\n    ds['contour'][i]", "large"))
        label += f" ({first:,d})" if "random" in label else ""
        out.append({"scenario": f"(r) {CONSECUTIVE:,d} consecutive contours {label}, cold",
                    "dcorfs": r, "dclab": r_dclab,
                    "limit_seconds": contour_limit(bench, range(first, first + CONSECUTIVE)),
                    "target": ">= 10x faster than dclab, <= 3 s"})
    ls_l = ("import subprocess\nsubprocess.run(['ls', '-l', os.path.join(folder, 'contour')], "
            "check=True, capture_output=True)")
    cache = pathlib.Path(tempfile.mkdtemp(prefix="dcorfs-bench-cache-"))
    bench.unmount_all()
    bench.dcorfs(ls_l, bench.mount(cache), "large")  # every size and address, kept on disk
    known = [int(n) for n in rng.integers(1, LARGE_EVENTS - CONSECUTIVE, bench.repeats)]

    def known_once() -> dict:
        bench.unmount_all()
        mnt = bench.mount(cache)
        bench.dcorfs("os.stat(folder)", mnt, "large")
        return bench.dcorfs(loop(known.pop()), mnt, "large")  # a new start each time
    r = bench.median(known_once)
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    out.append({"scenario": f"(r) {CONSECUTIVE:,d} consecutive contours from a random start, "
                            f"addresses known (ls -l, then a remount)", "dcorfs": r,
                "target": "<= 1.5 s"})
    bench.unmount_all()
    mnt = bench.mount()
    bench.dcorfs("os.stat(folder)", mnt, "large")
    before = bench.mount_rss_mb("VmRSS")
    s_cold = bench.dcorfs(ls_l, mnt, "large")
    s_cold["rss_growth_mb"] = bench.mount_rss_mb("VmRSS") - before
    s_warm = bench.dcorfs(ls_l, mnt, "large")
    out.append({"scenario": "(s) ls -l contour/, cold (once)", "dcorfs": s_cold,
                "target": "<= 30 s, RSS growth <= 150 MB"})
    out.append({"scenario": "(s) ls -l contour/, warm", "dcorfs": s_warm,
                "target": "<= 3 s"})
    chain = HDF5Chain(bench.condensed["huge"])
    try:
        one = chain.round_trips("deform", alone=True)
    finally:
        chain.close()
    t = cold("np.load(os.path.join(folder, 'deform.npy'))", "huge", opened=False)
    t_dclab = bench.median(lambda: bench.dclab("ds['deform'][:]", "huge"))
    limit = (2 + one) * lat + bench.chunk_bytes(bench.condensed["huge"], "deform")[0] / bw
    out.append({"scenario": f"(t) one scalar feature of {HUGE_EVENTS:,d} events, cold",
                "dcorfs": t, "dclab": t_dclab, "limit_seconds": limit,
                "target": "<= 1.5x the limit"})
    u = cold("import hashlib\nh = hashlib.md5()\n"
             "with open(os.path.join(folder, 'data.rtdc'), 'rb') as f:\n"
             "    for piece in iter(lambda: f.read(1 << 20), b''):\n        h.update(piece)",
             "large", opened=False)
    u["link_share"] = bench.files["large"].stat().st_size / u["seconds"] / bw
    out.append({"scenario": f"(u) md5 of data.rtdc ({bench.files['large'].stat().st_size / 1e6:,.0f} MB)",
                "dcorfs": u, "target": ">= 80% of the link"})
    bench.unmount_all()
    return out


def distant(bench: "Bench", rows: list[dict]) -> list[dict]:
    """(a), (a) after idling and (c) again on a link of ``FAR_LATENCY_MS`` (DCOR from
    outside Europe), beside dclab on the same link and the limits of (a) and (c) at
    that latency; after idling the limit counts the handshakes of new connections."""
    far = FAR_LATENCY_MS / 1000
    bw = BANDWIDTH_MBS * 1e6
    port = free_port()
    log = bench.workdir / "serve-far.log"
    proc = bench.serve(port, FAR_LATENCY_MS, log)
    near = bench.url
    out = []
    try:
        bench.url = f"http://127.0.0.1:{port}"
        wait_for(api_answers(bench.url), proc, "dcorfs serve (far)", 600, log, interval=0.5)
        for name, body, kind, dclab_body in (
                ("(a)", "np.load(os.path.join(folder, 'deform.npy'))", "scalars",
                 "ds['deform'][:]"),
                ("(c)", "np.load(os.path.join(folder, 'image.npy'))", "images",
                 "ds['image'][:]")):
            at_20 = next(r for r in rows if r["scenario"].startswith(name))
            limit = at_20["limit_round_trips"] * far + at_20["limit_bytes"] / bw
            d = bench.cold(body, kind)[0]
            c = bench.median(lambda body=dclab_body, kind=kind: bench.dclab(body, kind))
            out.append({"scenario": f"{name} at {FAR_LATENCY_MS:.0f} ms, cold", "dcorfs": d,
                        "dclab": c, "limit_seconds": limit,
                        "target": "<= 1.5x the limit" if name == "(a)" else "<= 1.25x the limit"})
            if name != "(a)":
                continue

            def idle_once(body=body) -> dict:
                bench.unmount_all()
                mnt = bench.mount()
                time.sleep(IDLE_CLOSE_S + 5)  # the server closes every idle connection
                return bench.dcorfs(body, mnt, "scalars")
            out.append({"scenario": f"(a) at {FAR_LATENCY_MS:.0f} ms after "
                                    f"{IDLE_CLOSE_S + 5:.0f} s idle", "dcorfs":
                        bench.median(idle_once), "dclab": c,
                        "limit_seconds": limit + HANDSHAKE_RTTS * far,
                        "target": "<= 1.5x the limit with handshakes"})
    finally:
        bench.url = near
        bench.unmount_all()
        stop(proc)
    return out


def contour_limit(bench: "Bench", numbers: range) -> float:
    """The least time a reader that knows nothing about the file needs for the contours
    ``numbers``: the basins; the file's head and tail; the group's heap (every name)
    and root; each further level of its index, the symbol nodes last, all names of a
    level at once; then every contour's header, chunk index and chunk, at once.  Each
    step a round trip; the bytes at the link's speed."""
    from dcorfs.hdf5 import symbol_table as st

    path = bench.files["large"]
    with h5py.File(path, "r", locking=False) as h5, path.open("rb") as raw:
        events = h5["events"]
        group = h5["events/contour"]
        at = events.id.links.get_info(b"contour").u
        raw.seek(at)
        root, heap = st.symbol_table(raw.read(4096), 0)
        raw.seek(root)
        levels = st.tree_node(raw.read(4096), 0)[0] + 1
        raw.seek(heap)
        heap_bytes = st.local_heap(raw.read(32), 0)[1]
        # each contour: its header's first 512 bytes, its chunk index (one leaf of a
        # 2-D dataset: 96 bytes) and its chunk
        contours = sum(512 + 96 + group[str(n)].id.get_chunk_info(0).size for n in numbers)
    round_trips = 2 + 1 + levels + 1
    return round_trips * LATENCY_MS / 1000 + (heap_bytes + contours) / (BANDWIDTH_MBS * 1e6)


def views(bench: "Bench") -> list[dict]:
    """features.tsv and the TIFF stacks (issue 13): what a non-Python tool costs."""
    lat, bw = LATENCY_MS / 1000, BANDWIDTH_MBS * 1e6
    src, chain = bench.condensed["scalars"], bench.chains["scalars"]
    with h5py.File(src, "r", locking=False) as h5:
        scalars = sorted(n for n, d in h5["events"].items()
                         if isinstance(d, h5py.Dataset) and d.ndim == 1)
    out = []
    # (v) the first 999 events of every scalar feature, all in parallel: what the ideal
    # reader (HDF5Chain) fetches to load those rows' chunks, and the chunks alone
    chunks_only = sum(bench.chunk_bytes(src, f, rows=list(range(999)))[0] for f in scalars)
    head_bytes = chunks_only + chain.metadata_bytes(scalars)
    head_rt = 2 + max(chain.round_trips(f, alone=True) for f in scalars)
    v, _ = bench.cold("""
        import subprocess
        subprocess.run(["head", "-n", "1000", os.path.join(folder, "features.tsv")],
                       check=True, capture_output=True)
    """, "scalars")
    out.append({"scenario": f"(v) head -n 1000 features.tsv ({len(scalars)} features), cold",
                "dcorfs": v, "limit_seconds": head_rt * lat + head_bytes / bw,
                "limit_round_trips": head_rt, "limit_bytes": head_bytes,
                "chunk_bytes": chunks_only,
                "target": "<= the round trips and bytes of those rows' chunks"})
    # (w) the whole text: first read (every chunk fetched, every row formatted), then warm
    read_all = """
        with open(os.path.join(folder, "features.tsv"), "rb") as f:
            for piece in iter(lambda: f.read(1 << 20), b""):
                pass
    """
    first, mnt = bench.cold(read_all, "scalars")
    size = (mnt / bench.rids["scalars"] / "features.tsv").stat().st_size
    first["mb_per_s"] = size / first["seconds"] / 1e6
    warm = min((bench.dcorfs(read_all, mnt, "scalars") for _ in range(3)),
               key=lambda r: r["seconds"])
    warm["mb_per_s"] = size / warm["seconds"] / 1e6
    out.append({"scenario": f"(w) read all of features.tsv ({size / 1e6:.0f} MB), first",
                "dcorfs": first, "target": "-"})
    out.append({"scenario": "(w) read all of features.tsv, warm", "dcorfs": warm,
                "target": ">= 100 MB/s"})
    # (x) the first page of a TIFF stack against the first image of image.npy
    x_tif, _ = bench.cold("""
        import tifffile
        with tifffile.TiffFile(os.path.join(folder, "image.tif")) as tif:
            tif.pages[0].asarray()
    """, "images")
    x_npy, _ = bench.cold("np.array(np.load(os.path.join(folder, 'image.npy'), "
                          "mmap_mode='r')[0])", "images")
    out.append({"scenario": "(x) first page of image.tif, cold", "dcorfs": x_tif,
                "compare": x_npy, "target": "the requests of image.npy's first image"})
    bench.unmount_all()
    return out


def site_cache(bench: "Bench") -> list[dict]:
    """(y) MIRROR_MOUNTS machines mount and read one resource at once: every mount straight from
    the store, then through one nginx site cache (examples/nginx-dcor-cache.conf) that
    starts empty, then new mounts through the warm site cache (a machine that comes
    later).  Each mount reads the images and four scalar features in a process of its
    own, all starting at once; the time is until the last one is done."""
    from dcorfs.server.site_cache import SiteCache, nginx_binary

    if nginx_binary() is None:
        print("(y) skipped: nginx is not installed", flush=True)
        return []
    work = "; ".join(f"np.load(os.path.join(sys.argv[1], '{f}.npy'))"
                     for f in ["image", *SCALARS])
    size = bench.files["images"].stat().st_size

    def together(extra: tuple[str, ...]) -> dict:
        bench.unmount_all()
        # a cluster job mounts and reads at once: no waiting for the warm-up
        mounts = [bench.mount(extra=extra, warm=False) for _ in range(MIRROR_MOUNTS)]
        folders = [str(mnt / bench.rids["images"]) for mnt in mounts]
        result = bench.dcorfs(_together("import os, numpy as np", work, "[f]", items=folders),
                              mounts[0], "images")
        result["origin_share"] = result["bytes"] / size
        return result

    rows = [{"scenario": f"(y) {MIRROR_MOUNTS} mounts at once, straight from the store",
             "dcorfs": together(())}]
    site = SiteCache(bench.store_url)
    try:
        mirror = ("--store-mirror", site.url)
        rows.append({"scenario": f"(y) {MIRROR_MOUNTS} mounts at once, through an empty site cache",
                     "dcorfs": together(mirror)})
        rows.append({"scenario": f"(y) {MIRROR_MOUNTS} new mounts, through the warm site cache",
                     "dcorfs": together(mirror)})
    finally:
        bench.unmount_all()
        site.close()
    for row in rows:
        row["resource_bytes"] = size
    return rows


def site_markdown(rows: list[dict]) -> str:
    lines = ["| scenario | s (last mount done) | store requests | store MB "
             "| store bytes / resource size |", "|---|---|---|---|---|"]
    for r in rows:
        d = r["dcorfs"]
        lines.append(f"| {r['scenario']} | {d['seconds']:.3f} | {d['store_requests']} "
                     f"| {d['bytes'] / 1e6:.1f} | {d['origin_share']:.2f} |")
    return "\n".join(lines) + "\n"


def views_markdown(rows: list[dict]) -> str:
    lines = ["| scenario | dcorfs s | requests | round trips | MB | note | target |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["dcorfs"]
        if "limit_seconds" in r:
            note = (f"{d['seconds'] / r['limit_seconds']:.2f}x the limit ({r['limit_round_trips']} "
                    f"round trips, {r['limit_bytes'] / 1e6:.2f} MB, of which "
                    f"{r['chunk_bytes'] / 1e6:.2f} MB chunks)")
        elif "mb_per_s" in d:
            note = f"{d['mb_per_s']:.0f} MB/s"
        elif "compare" in r:
            c = r["compare"]
            note = (f"image.npy's first image: {c['seconds']:.3f} s, {c['requests']} requests, "
                    f"{c['round_trips']} round trips")
        else:
            note = ""
        lines.append(f"| {r['scenario']} | {d['seconds']:.3f} | {d['requests']} "
                     f"| {d['round_trips']} | {d['bytes'] / 1e6:.2f} | {note} | {r['target']} |")
    return "\n".join(lines) + "\n"


def large_markdown(rows: list[dict]) -> str:
    lines = ["| scenario | dcorfs s | dclab s | dclab / dcorfs | requests | round trips | MB "
             "| note | target |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d, c = r["dcorfs"], r.get("dclab")
        note = ""
        if "link_share" in d:
            note = f"{d['link_share'] * 100:.0f}% of the link"
        elif "limit_seconds" in r:
            note = f"{d['seconds'] / r['limit_seconds']:.2f}x the limit"
        elif "rss_growth_mb" in d:
            note = f"RSS +{d['rss_growth_mb']:.0f} MB"
        ratio = f"{c['seconds'] / d['seconds']:.1f}x" if c else "-"
        dclab_s = f"{c['seconds']:.3f}" if c else "-"
        lines.append(f"| {r['scenario']} | {d['seconds']:.3f} | {dclab_s} | {ratio} "
                     f"| {d['requests']} | {d['round_trips']} | {d['bytes'] / 1e6:.2f} | {note} "
                     f"| {r['target']} |")
    return "\n".join(lines) + "\n"


def scalar_markdown(rows: list[dict], disk_rows: list[dict], far_rows: list[dict]) -> str:
    """(a) fresh and after idling, near and far, against ``DATA_ROUND_TRIPS`` round trips
    and the chunks' bytes, plus the handshakes of a new connection after idling."""
    a = next(r for r in rows if r["scenario"].startswith("(a)"))
    one = a["feature_compressed_bytes"] / (BANDWIDTH_MBS * 1e6)
    found = [(a, LATENCY_MS, 0)]
    found += [(r, LATENCY_MS, HANDSHAKE_RTTS) for r in disk_rows
              if r["scenario"].startswith("(m)")]
    found += [(r, FAR_LATENCY_MS, HANDSHAKE_RTTS if "idle" in r["scenario"] else 0)
              for r in far_rows if r["scenario"].startswith("(a)")]
    lines = [f"One scalar feature against {DATA_ROUND_TRIPS} round trips that carry data and "
             f"its {a['feature_compressed_bytes'] / 1e6:.2f} MB of chunks (after idling, with "
             f"{HANDSHAKE_RTTS} round trips of handshakes):", "",
             "| scenario | link ms | dcorfs s | limit s | dcorfs / limit | round trips "
             "| new connections | target |", "|---|---|---|---|---|---|---|---|"]
    for r, latency, handshakes in found:
        d = r["dcorfs"]
        limit = (DATA_ROUND_TRIPS + handshakes) * latency / 1000 + one
        lines.append(f"| {r['scenario']} | {latency:.0f} | {d['seconds']:.3f} | {limit:.3f} "
                     f"| {d['seconds'] / limit:.2f}x | {d['round_trips']} "
                     f"| {d.get('connections', '-')} | <= 1.5x |")
    return "\n".join(lines) + "\n"


def disk_markdown(rows: list[dict]) -> str:
    lines = ["| scenario | dcorfs s | compared with | its s | ratio | target | requests "
             "| round trips | MB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d, other = r["dcorfs"], r.get("compare")
        ratio = (f"{r['ratio'] * 100:.0f}% of the link" if r["scenario"].startswith("(n)")
                 else f"{r['ratio']:.2f}x")
        lines.append(f"| {r['scenario']} | {d['seconds']:.3f} | {r.get('compare_name', '-')} "
                     f"| {other['seconds'] if other else float('nan'):.3f} | {ratio} "
                     f"| {r['target']} | {d['requests']} | {d['round_trips']} "
                     f"| {d['bytes'] / 1e6:.2f} |")
    for r in rows:
        if "limit_seconds" in r:
            lines += ["", f"- {r['scenario'][:3]}: {r['dcorfs']['seconds'] / r['limit_seconds']:.2f}x "
                          f"the limit counted with the handshakes of new connections "
                          f"({r['limit_seconds']:.3f} s); {r['dcorfs']['connections']} new "
                          f"connections."]
    return "\n".join(lines) + "\n"


def browse_markdown(rows: list[dict]) -> str:
    lines = ["| scenario | dcorfs s | requests | target | round trips | API MB | daemon RSS growth MB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["dcorfs"]
        target = (f"requests <= {r['target_requests']}" if "target_requests" in r
                  else f"round trips <= {r['target_round_trips']}")
        lines.append(f"| {r['scenario']} | {d['seconds']:.3f} | {d['requests']} | {target} "
                     f"| {d['round_trips']} | {d['api_bytes'] / 1e6:.2f} "
                     f"| {d['rss_growth_mb']:.1f} |")
    lines.append("")
    for r in rows:
        if r["limit_seconds"] > 0:
            target = f"; target <= {r['target_ratio']:.0f}x" if "target_ratio" in r else ""
            lines.append(f"- {r['scenario'][:3]}: {r['dcorfs']['seconds'] / r['limit_seconds']:.2f}"
                         f"x the time its requests need on the link ({r['limit_seconds']:.3f} "
                         f"s: two round trips and {r['dcorfs']['api_bytes'] / 1e6:.2f} MB of "
                         f"answers){target}.")
    return "\n".join(lines) + "\n"


def to_markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"Benchmark: {meta['events']:,d} events, {meta['images']:,d} images 80x250; "
             f"link {meta['latency_ms']:g} ms, {meta['bandwidth_mbs']:g} MB/s, "
             f"{meta['handshake_rtts']} round trips per new connection, idle connections "
             f"closed after {meta['idle_close_s']:g} s; "
             f"{meta['date']} on {meta['machine']}; cold figures are the median of "
             f"{meta['repeats']} runs, warm ones the best of 3.", "",
             "| scenario | dcorfs s | dclab s | local h5py s | dclab / dcorfs | dcorfs / limit "
             "| dcorfs requests | dcorfs round trips | dcorfs MB | dclab requests "
             "| dclab round trips | dclab MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d, c, loc = r["dcorfs"], r["dclab"], r["local"]
        ratio_limit = d["seconds"] / r["limit_seconds"] if r["limit_seconds"] else float("nan")
        c_ratio = c["seconds"] / d["seconds"]
        lines.append(
            f"| {r['scenario']} | {d['seconds']:.3f} | {c['seconds']:.3f} | {loc['seconds']:.3f} "
            f"| {'-' if r['scenario'].startswith('(e') else f'{c_ratio:.1f}x'} | "
            f"{'-' if r['limit_seconds'] == 0 else f'{ratio_limit:.2f}x'} "
            f"| {d.get('requests', '-')} | {d.get('round_trips', '-')} | {d.get('bytes', 0) / 1e6:.2f} "
            f"| {c.get('requests', '-')} | {c.get('round_trips', '-')} | {c.get('bytes', 0) / 1e6:.2f} |")
    notes = []
    for r in rows:
        if "feature_compressed_bytes" in r:
            notes.append(f"- (a): feature compressed {r['feature_compressed_bytes'] / 1e6:.2f} MB; "
                         f"dcorfs transferred {r['dcorfs']['bytes'] / r['feature_compressed_bytes']:.2f}x that. "
                         f"New connections (each costs {meta['handshake_rtts']} round trips): dcorfs "
                         f"{r['dcorfs']['connections']}, dclab {r['dclab']['connections']}.")
        if "image_compressed_bytes" in r:
            notes.append(f"- (c): {r['image_compressed_bytes'] / 1e6:.1f} MB of compressed images, "
                         f"{r['image_compressed_bytes'] / 1e6 / r['dcorfs']['seconds']:.1f} MB/s through "
                         f"dcorfs ({r['image_compressed_bytes'] / 1e6 / r['dcorfs']['seconds'] / meta['bandwidth_mbs'] * 100:.0f}% "
                         f"of the link); mount daemon peak RSS {r['mount_peak_rss_mb']:.0f} MB "
                         f"with a 1 GiB cache.")
        if "chunks_touched" in r:
            notes.append(f"- (d): {r['chunks_touched']} distinct chunks touched; dcorfs made "
                         f"{r['dcorfs']['store_requests']} object-store requests.")
        if "mb_per_s" in r:
            notes.append(f"- (e2): warm re-read at {r['mb_per_s']:.0f} MB/s through the mount.")
        if r["scenario"].startswith("(f)"):
            notes.append(f"- (f): {r['dcorfs']['requests']} requests "
                         f"({r['dcorfs']['api_requests']} API, {r['dcorfs']['store_requests']} object store) "
                         f"in {r['dcorfs']['round_trips']} round trips.")
    notes.append("- (e): dcorfs re-reads from its caches; dclab has none across processes, so "
                 "its column is another cold read and no ratio is shown.")
    notes.append("- (g): four processes start together and are timed inside (after their "
                 "imports, from a common start to the last one's end), alike for all three.")
    notes.append("- Round trips: the longest chain of requests that each reached the server after "
                 "the one before was answered (the server's count), i.e. the latencies a "
                 "contender waited for one after another.")
    return "\n".join(lines + [""] + notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=str(paths.cache_dir() / "bench"))
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per cold scenario and contender; the median is reported "
                             "(default: %(default)s)")
    parser.add_argument("--out", default="bench-results",
                        help="folder for results.md and results.json (default: %(default)s)")
    parser.add_argument("--sections", default="all",
                        help="comma-separated parts to run besides (a)-(g), which the "
                             "others compare with: browse, disk, large, distant, views, "
                             "site (default: all)")
    parser.add_argument("--idle-s", type=float, default=120.0,
                        help="how long the mounts of (m) sit idle before they read "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(workdir)
    bench.repeats = max(1, args.repeats)
    idle: list = []
    wanted = {"browse", "disk", "large", "distant", "views", "site"} \
        if args.sections == "all" else set(args.sections.split(","))
    browse_rows = disk_rows = large_rows = far_rows = view_rows = site_rows = []
    try:
        bench.prepare()
        if "disk" in wanted:
            idle = idle_mounts(bench, bench.repeats)
        rows = bench.run()
        a = next(r for r in rows if r["scenario"].startswith("(a)"))
        if "browse" in wanted:
            browse_rows = browse(bench, a["dcorfs"]["round_trips"])
        if "disk" in wanted:
            disk_rows = disk_cache(bench, rows, idle, args.idle_s)
        if "large" in wanted:
            large_rows = large(bench)
        if "distant" in wanted:
            far_rows = distant(bench, rows)
        if "views" in wanted:
            view_rows = views(bench)
        if "site" in wanted:
            site_rows = site_cache(bench)
    finally:
        bench.mounts.extend((proc, mnt) for proc, mnt, _ in idle)
        bench.unmount_all()
        for chain in bench.chains.values():
            chain.close()
        if bench.server is not None:
            stop(bench.server)
    meta = {"events": EVENTS, "images": IMAGES, "latency_ms": LATENCY_MS, "repeats": bench.repeats,
            "handshake_rtts": HANDSHAKE_RTTS, "idle_close_s": IDLE_CLOSE_S,
            "bandwidth_mbs": BANDWIDTH_MBS, "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows,
                                                  "browse": browse_rows, "disk": disk_rows,
                                                  "large": large_rows, "distant": far_rows,
                                                  "views": view_rows,
                                                  "site_cache": site_rows},
                                                 indent=1))
    markdown = (to_markdown(rows, meta) + "\nBrowsing by name:\n\n" + browse_markdown(browse_rows)
                + "\nThe disk cache and idle connections:\n\n" + disk_markdown(disk_rows)
                + "\nLarge measurements:\n\n" + large_markdown(large_rows)
                + f"\nA distant link ({FAR_LATENCY_MS:.0f} ms):\n\n" + large_markdown(far_rows)
                + "\n" + scalar_markdown(rows, disk_rows, far_rows)
                + "\nViews for any tool:\n\n" + views_markdown(view_rows)
                + "\nMany machines, one site cache:\n\n" + site_markdown(site_rows))
    (out / "results.md").write_text(markdown)
    print("\n" + markdown)
    print(f"written to {out / 'results.md'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
