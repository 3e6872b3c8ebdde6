"""Never hang, never serve a wrong byte: faults injected by ``dcorfs serve``.

Reads go through a mount with ``direct_io`` and a small cache, so they keep
reaching the network while the server misbehaves.  Every read must return exactly
the reference bytes or fail with an errno; the test prints a table of outcomes.
"""
from __future__ import annotations

import collections
import concurrent.futures
import errno
import os
import random
import shutil
import threading
import time

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from harness import Mount, Server, free_port, npy_bytes
from dcorfs.dcor.api import DcorApi
from dcorfs.io.range_fetch import RangeFetcher

SOAK_FAULTS = {"error_rate": 0.02, "reset_rate": 0.02, "truncate_rate": 0.02,
               "wrong_range_rate": 0.02, "full_body_rate": 0.01, "jitter_ms": 5, "retry_after": 0.05, "seed": 1234}
MOUNT_OPTS = ["-o", "direct_io", "--cache-size", "8M", "--timeout", "3", "--op-timeout", "20"]


def set_faults(server: Server, **faults) -> None:
    server.set_faults(**faults)


@pytest.fixture(scope="module")
def fault_dir(demo_dir, corpus_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fault-data")
    (folder / "cells").mkdir()
    (folder / "private").mkdir()
    (folder / "broken").mkdir()
    shutil.copy(demo_dir / "blood-cells" / "M001_data.rtdc", folder / "cells" / "M001_data.rtdc")
    shutil.copy(demo_dir / "beads" / "M002_beads.rtdc", folder / "private" / "M002_beads.rtdc")
    # a chunk of 'image' (held by the original only) with a flipped byte: only
    # fletcher32 can tell
    corrupt = folder / "broken" / "corrupt_chunk.rtdc"
    shutil.copy(corpus_dir / "beads" / "calibration_beads.rtdc", corrupt)
    with h5py.File(corrupt, "r") as h5:
        info = h5["events/image"].id.get_chunk_info(0)
    with open(corrupt, "r+b") as fd:
        fd.seek(info.byte_offset + info.size // 2)
        byte = fd.read(1)
        fd.seek(info.byte_offset + info.size // 2)
        fd.write(bytes([byte[0] ^ 0xFF]))
    data = (corpus_dir / "beads" / "calibration_beads.rtdc").read_bytes()
    (folder / "broken" / "truncated.rtdc").write_bytes(data[:len(data) * 6 // 10])
    (folder / "broken" / "garbage.rtdc").write_bytes(random.Random(1).randbytes(300_000))
    return folder


@pytest.fixture(scope="module")
def fault_server(fault_dir, module_servers):
    return module_servers.start(fault_dir, "--private", "private/*",
                                "--store-port", str(free_port()), name="fault-server")


@pytest.fixture(scope="module")
def references(fault_dir):
    """The exact bytes each file must have: the original and np.save of local h5py data."""
    path = fault_dir / "cells" / "M001_data.rtdc"
    with h5py.File(path, "r") as h5:
        image = npy_bytes(h5["events/image"][:])
        deform = npy_bytes(h5["events/deform"][:])
    return {"data.rtdc": path.read_bytes(), "image.npy": image, "deform.npy": deform}


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_soak(server: Server, folder, references: dict, faults: dict, reads: int,
             threads: int = 8) -> dict:
    """``reads`` random-offset preads from ``threads`` threads while ``faults`` are on."""
    server.reset_stats()
    set_faults(server, **faults)
    outcomes = {"exact": 0, "wrong": 0}
    longest = [0.0]
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        fds = {name: os.open(folder / name, os.O_RDONLY) for name in references}
        try:
            for _ in range(reads // threads):
                name = rng.choice(list(references))
                ref = references[name]
                offset = rng.randrange(0, len(ref))
                size = rng.choice([1, 100, 4096, 65536, 131072, 262144])
                started = time.monotonic()
                try:
                    got = os.pread(fds[name], size, offset)
                    key = "exact" if got == ref[offset:offset + size] else "wrong"
                except OSError as exc:
                    key = f"errno {errno.errorcode.get(exc.errno, exc.errno)}"
                took = time.monotonic() - started
                with lock:
                    outcomes[key] = outcomes.get(key, 0) + 1
                    longest[0] = max(longest[0], took)
        finally:
            for fd in fds.values():
                os.close(fd)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    seen = server.stats()
    set_faults(server)
    return {"outcomes": outcomes, "longest": longest[0], "total": sum(outcomes.values()),
            "faults": {k: v for k, v in seen.items() if k.startswith("fault_")},
            "store_requests": seen.get("store_requests", 0)}


def assert_alive_and_exact(mnt: Mount, folder, references: dict) -> None:
    assert mnt.proc.poll() is None
    fd = os.open(folder / "image.npy", os.O_RDONLY)
    try:
        for offset in range(0, len(references["image.npy"]), 3_000_017):
            assert os.pread(fd, 65536, offset) == references["image.npy"][offset:offset + 65536]
    finally:
        os.close(fd)


@pytest.mark.expect_warnings(maybe=("DCF301", "DCM501", "DCM506"))
@pytest.mark.timeout(900)
def test_soak_with_faults(fault_server, references, fresh_mount):
    rid = fault_server.ids["cells/M001_data.rtdc"]
    mnt = fresh_mount(fault_server.url, extra=MOUNT_OPTS)
    folder = mnt.path / rid
    for name, ref in references.items():  # sizes are right before anything is read
        assert os.stat(folder / name).st_size == len(ref)
    result = run_soak(fault_server, folder, references, SOAK_FAULTS, reads=5000)
    outcomes = result["outcomes"]
    peak = rss_mb(mnt.proc.pid)
    print(f"\nsoak mixed: {result['total']} reads, outcomes {outcomes}, longest read "
          f"{result['longest']:.2f} s, faults injected {result['faults']}, store requests "
          f"{result['store_requests']}, daemon peak RSS {peak:.0f} MB")
    assert result["total"] == 5000
    assert outcomes["wrong"] == 0
    assert outcomes["exact"] >= 0.95 * result["total"]
    assert set(outcomes) <= {"exact", "wrong", "errno EIO"}
    for kind in ("error", "reset", "truncate", "wrong_range", "full_body"):
        assert result["faults"].get(f"fault_{kind}", 0) > 0, f"{kind} never fired"
    assert result["longest"] < 20 + 5
    assert_alive_and_exact(mnt, folder, references)
    assert peak < 8 + 200 + 150  # cache + 200 MB, plus the Python interpreter and h5py


@pytest.mark.expect_warnings(maybe=("DCF301", "DCM501", "DCM506"))
@pytest.mark.timeout(600)
@pytest.mark.parametrize("fault", ["error", "reset", "truncate", "wrong_range", "full_body",
                                   "jitter"])
def test_each_fault_alone(fault, fault_server, references, fresh_mount):
    """10% of object-store answers broken one way: exact bytes or EIO, never wrong."""
    rid = fault_server.ids["cells/M001_data.rtdc"]
    mnt = fresh_mount(fault_server.url, extra=MOUNT_OPTS)
    folder = mnt.path / rid
    faults = {"jitter_ms": 50} if fault == "jitter" else {f"{fault}_rate": 0.1}
    result = run_soak(fault_server, folder, references, {**faults, "seed": 99}, reads=1000)
    print(f"\nfault {fault}: {result['total']} reads, outcomes {result['outcomes']}, longest "
          f"{result['longest']:.2f} s, injected {result['faults']}, daemon peak RSS "
          f"{rss_mb(mnt.proc.pid):.0f} MB")
    assert result["outcomes"]["wrong"] == 0
    assert set(result["outcomes"]) <= {"exact", "wrong", "errno EIO"}
    assert result["outcomes"]["exact"] >= 0.95 * result["total"]
    if fault != "jitter":
        assert result["faults"].get(f"fault_{fault}", 0) > 0
    assert_alive_and_exact(mnt, folder, references)


@pytest.mark.expect_warnings(maybe=("DCF301", "DCM501", "DCM506"))
@pytest.mark.timeout(300)
def test_bulk_fetch_under_faults_caches_only_exact_bytes(fault_server, references,
                                                         fresh_mount):
    """Wide random reads start a bulk fetch of the image dataset (a cache big enough
    for it); with every fault on, reads are exact or EIO, and what the bulk fetch left
    in the cache is exact once the faults are off."""
    rid = fault_server.ids["cells/M001_data.rtdc"]
    mnt = fresh_mount(fault_server.url, extra=["-o", "direct_io", "--timeout", "3",
                                               "--op-timeout", "20"])
    reference = references["image.npy"]
    rng = random.Random(7)
    outcomes = {"exact": 0, "errno EIO": 0}
    fd = os.open(mnt.path / rid / "image.npy", os.O_RDONLY)
    try:
        set_faults(fault_server, error_rate=0.1, reset_rate=0.1, truncate_rate=0.1,
                   wrong_range_rate=0.1, retry_after=0.05, seed=7)
        for _ in range(40):
            offset = rng.randrange(0, len(reference) - 1000)
            try:
                got = os.pread(fd, 1000, offset)
            except OSError as exc:
                assert exc.errno == errno.EIO
                outcomes["errno EIO"] += 1
                continue
            assert got == reference[offset:offset + 1000]
            outcomes["exact"] += 1
        # the bulk fetch runs on in the background, still under faults
        time.sleep(3)
        seen = fault_server.stats()
        set_faults(fault_server)
        injected = {k: v for k, v in seen.items() if k.startswith("fault_")}
        print(f"\nbulk under faults: {outcomes}, injected {injected}, store requests "
              f"{seen.get('store_requests')}")
        assert outcomes["exact"] >= 36
        assert sum(injected.values()) > 0
        assert "DCC610" in mnt.log_text()
        for offset in range(0, len(reference), 1024 ** 2):
            assert os.pread(fd, 1024 ** 2, offset) == reference[offset:offset + 1024 ** 2]
    finally:
        set_faults(fault_server)
        os.close(fd)


@pytest.mark.expect_warnings(maybe=("DCF301", "DCM501", "DCM506"))
@pytest.mark.timeout(300)
def test_stalled_server_fails_within_the_deadline(fault_server, references, fresh_mount):
    rid = fault_server.ids["cells/M001_data.rtdc"]
    mnt = fresh_mount(fault_server.url, extra=["-o", "direct_io", "--cache-size", "8M",
                                               "--timeout", "2", "--op-timeout", "6"])
    path = mnt.path / rid / "data.rtdc"
    fd = os.open(path, os.O_RDONLY)
    try:
        set_faults(fault_server, stall_rate=1.0)
        started = time.monotonic()
        with pytest.raises(OSError) as info:
            os.pread(fd, 65536, 10_000_000)
        took = time.monotonic() - started
        assert info.value.errno == errno.EIO
        assert took < 6 + 3, took
        set_faults(fault_server)  # also releases the stalled requests
        assert os.pread(fd, 65536, 10_000_000) == references["data.rtdc"][10_000_000:10_065_536]
    finally:
        set_faults(fault_server)
        os.close(fd)
    assert "DCF301" in mnt.log_text() or "DCM50" in mnt.log_text()


@pytest.mark.expect_warnings(maybe=("DCA201", "DCF101", "DCF301", "DCM501", "DCM506", "DCN901"))
@pytest.mark.timeout(300)
def test_server_restarted_mid_read(fault_dir, references, servers, fresh_mount):
    store_port = free_port()
    args = ["--private", "private/*", "--store-port", str(store_port)]
    srv = servers.start(fault_dir, *args)
    rid = srv.ids["cells/M001_data.rtdc"]
    mnt = fresh_mount(srv.url, extra=MOUNT_OPTS[:4] + ["--timeout", "2", "--op-timeout", "8"])
    ref = references["data.rtdc"]
    outcomes: dict[str, int] = {}
    stop = threading.Event()

    def reader() -> None:
        rng = random.Random(7)
        fd = os.open(mnt.path / rid / "data.rtdc", os.O_RDONLY)
        try:
            while not stop.is_set():
                offset = rng.randrange(0, len(ref) - 65536)
                try:
                    ok = os.pread(fd, 65536, offset) == ref[offset:offset + 65536]
                    key = "exact" if ok else "wrong"
                except OSError as exc:
                    key = f"errno {errno.errorcode.get(exc.errno, exc.errno)}"
                outcomes[key] = outcomes.get(key, 0) + 1
        finally:
            os.close(fd)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        time.sleep(1.0)
        srv.stop()
        time.sleep(2.0)
        servers.start(fault_dir, *args, port=srv.port)
        before = outcomes.get("exact", 0)
        time.sleep(2.0)
    finally:
        stop.set()
        thread.join(timeout=60)
    print(f"\nrestart: outcomes {outcomes}")
    assert outcomes.get("wrong", 0) == 0
    assert outcomes.get("exact", 0) > before, "no read succeeded after the restart"
    assert set(outcomes) <= {"exact", "errno EIO"}


def test_expired_presigned_urls_are_refreshed(fault_server, fresh_mount):
    rid = fault_server.ids["private/M002_beads.rtdc"]
    mnt = fresh_mount(fault_server.url, token_file=fault_server.token_file, extra=MOUNT_OPTS)
    set_faults(fault_server, expire_after_s=1.0)
    try:
        deform = np.load(mnt.path / rid / "deform.npy")
        before = fault_server.stats().get("action_dcserv", 0)
        time.sleep(2.0)  # the URLs the mount holds are dead now, though "valid" for an hour
        images = np.load(mnt.path / rid / "image.npy")
        assert fault_server.stats().get("action_dcserv", 0) > before  # it refreshed
    finally:
        set_faults(fault_server)
    with h5py.File(fault_server.data_dir / "private" / "M002_beads.rtdc", "r") as h5:
        assert np.array_equal(images, h5["events/image"][:])
        assert np.array_equal(deform, h5["events/deform"][:])
    assert fault_server.stats().get("fault_expire", 0) > 0


@pytest.mark.expect_warnings("DCF101", "DCM501")
def test_api_answers_that_are_not_json(fault_server, fresh_mount):
    mnt = fresh_mount(fault_server.url, extra=["--timeout", "3", "--op-timeout", "10"])
    rid = fault_server.ids["cells/M001_data.rtdc"]
    for fault in ("bad_json_rate", "html_rate"):
        set_faults(fault_server, **{fault: 1.0})
        try:
            with pytest.raises(OSError) as info:
                os.listdir(mnt.path / rid)
            assert info.value.errno == errno.EIO
        finally:
            set_faults(fault_server)
    assert "not JSON" in mnt.log_text()
    assert "deform.npy" in os.listdir(mnt.path / rid)  # errors are not cached


@pytest.mark.expect_warnings("DCA202", maybe=("DCF301",))
def test_api_5xx_is_retried_with_retry_after(fault_server, fresh_mount):
    """A third of the answers are 5xx with Retry-After (502 from the API, 503
    SlowDown from the store); reads still work, exactly, and the errors really
    happened."""
    mnt = fresh_mount(fault_server.url)
    # seed 1: the first answer is an error, and never 4 in a row (which would be EIO)
    set_faults(fault_server, error_rate=0.3, retry_after=0.2, seed=1)
    try:
        fault_server.reset_stats()
        rid = fault_server.ids["cells/M001_data.rtdc"]
        with h5py.File(fault_server.data_dir / "cells" / "M001_data.rtdc", "r") as h5:
            assert np.array_equal(np.load(mnt.path / rid / "deform.npy"), h5["events/deform"][:])
        fired = fault_server.stats().get("fault_error", 0)
    finally:
        set_faults(fault_server)
    assert fired > 0, "no 5xx was sent"
    assert "DCA202" in mnt.log_text(), "the mount did not see the 5xx answers"
    # that each retry waited as long as Retry-After asked: tests/unit/test_api_client.py


@pytest.mark.expect_warnings("DCA203")
@pytest.mark.timeout(120)
def test_a_read_waits_out_dcors_maintenance(fault_server, fresh_mount, references):
    """DCOR answers 503 for 10 s while it is updated: a read started then returns the
    right bytes once it is back, within the operation's deadline (DCOR-Aid waits too)."""
    mnt = fresh_mount(fault_server.url, extra=["--op-timeout", "40"])
    rid = fault_server.ids["cells/M001_data.rtdc"]
    fault_server.reset_stats()
    set_faults(fault_server, maintenance_s=10, retry_after=1)
    try:
        data = (mnt.path / rid / "deform.npy").read_bytes()
        refused = fault_server.stats().get("maintenance_503", 0)
    finally:
        set_faults(fault_server)
    assert data == references["deform.npy"]
    assert refused >= 5  # asked about once a second, as Retry-After says, for 10 s
    log = mnt.log_text()
    assert log.count("DCA203") == 1 and "DCA204" in log  # said once, and when it ended


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", ["reset", "truncate"])
@pytest.mark.expect_warnings(maybe=("DCF301",))
def test_a_streamed_range_resumes_where_its_body_broke(fault, fault_server, references):
    """A run streamed into the cache hands over every byte once, in order, even when
    bodies break half-way: the retry asks only for what is missing."""
    rid = fault_server.ids["cells/M001_data.rtdc"]
    specs = DcorApi(fault_server.url, allow_http=True).dcserv(rid, "basins")
    url = next(spec["urls"][0] for spec in specs if spec["name"].startswith("resource"))
    reference = references["data.rtdc"]
    fetcher = RangeFetcher(timeout=10, retries=12, backoff=0.01)
    start, stop = 1000, min(len(reference), 3_000_000)
    set_faults(fault_server, **{f"{fault}_rate": 0.5, "seed": 7})
    fault_server.reset_stats()
    try:
        pieces: list[bytes] = []
        fetcher.fetch(url, start, stop, pieces.append)
        seen = fault_server.stats()
    finally:
        set_faults(fault_server)
    assert b"".join(pieces) == reference[start:stop]
    assert seen.get(f"fault_{fault}", 0) > 0, seen
    print(f"\n{fault}: {seen['store_requests']} requests, {seen['store_bytes']} bytes sent "
          f"for {stop - start}")
    assert seen["store_requests"] > 1
    if fault == "truncate":  # a clean close loses nothing: each retry resumes exactly
        assert seen["store_bytes"] == stop - start, seen
    # (a reset discards what the client's kernel had received but not yet handed over)


@pytest.mark.expect_warnings("DCM501")  # the EIO of the corrupt chunk
def test_corrupt_chunk_is_never_served(fault_server, corpus_dir, fresh_mount):
    rid = fault_server.ids["broken/corrupt_chunk.rtdc"]
    mnt = fresh_mount(fault_server.url)
    folder = mnt.path / rid
    with pytest.raises(OSError) as info:
        np.load(folder / "image.npy")
    assert info.value.errno == errno.EIO
    with pytest.raises(OSError) as info:  # and again: errors are not cached as data
        np.load(folder / "image.npy", mmap_mode="r")[0].copy()
    assert info.value.errno == errno.EIO
    # other features of the same file are fine
    with h5py.File(corpus_dir / "beads" / "calibration_beads.rtdc", "r") as h5:
        assert np.array_equal(np.load(folder / "area_um.npy"), h5["events/area_um"][:])
    assert mnt.proc.poll() is None


def test_truncated_and_garbage_files(fault_server, fresh_mount):
    mnt = fresh_mount(fault_server.url)
    for name in ("truncated.rtdc", "garbage.rtdc"):
        folder = mnt.path / fault_server.ids[f"broken/{name}"]
        names = os.listdir(folder)
        assert not [n for n in names if n.endswith(".npy")]  # DCOR could not read it either
        assert (folder / "data.rtdc").read_bytes() == (fault_server.data_dir / "broken" / name).read_bytes()
    assert mnt.proc.poll() is None


def test_bad_names_and_reads(fault_server, references, fresh_mount):
    mnt = fresh_mount(fault_server.url)
    rid = fault_server.ids["cells/M001_data.rtdc"]
    folder = mnt.path / rid
    for bad in (b"\xff\xfe-not-utf8", b"x" * 255, rid.upper().encode(), b"../" + rid.encode()):
        with pytest.raises(OSError) as info:
            os.stat(os.fsencode(mnt.path) + b"/" + bad)
        assert info.value.errno == errno.ENOENT
    with pytest.raises(OSError) as info:
        os.stat(os.fsencode(mnt.path) + b"/" + b"y" * 300)
    assert info.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as info:
        os.stat(folder / ".." / ".." / "etc" / "passwd")
    assert info.value.errno == errno.ENOENT
    size = len(references["deform.npy"])
    fd = os.open(folder / "deform.npy", os.O_RDONLY)
    try:
        assert os.pread(fd, 100, size + 10) == b""
        assert os.pread(fd, 1 << 30, 0) == references["deform.npy"]
        assert os.pread(fd, 1 << 20, size - 5) == references["deform.npy"][-5:]
    finally:
        os.close(fd)
    assert mnt.proc.poll() is None


@pytest.mark.expect_warnings(maybe=("DCA201", "DCF101", "DCF301", "DCM501", "DCM506", "DCN901"))
@pytest.mark.timeout(300)
def test_a_read_cut_off_by_the_server_never_shrinks_the_file(fault_dir, references, servers,
                                                             fresh_mount):
    """The server dies while eight threads read 1 MiB each through the page cache (no
    direct_io).  The mount answers each of the kernel's reads whole or with EIO, never
    with fewer bytes (``Filesystem.read``): the kernel would take those for the end of
    the file, zero-fill the page and shrink the file's size.

    Two levels are checked.  A program's read, as every runtime makes it (Python's
    ``io``, C's ``fread``, h5py, R: ``read(2)`` again until the count or an error),
    returns all its bytes, right, or fails with EIO.  One ``read(2)`` may, by Linux's
    rule for a read of many pages whose later pages fail, return the right bytes up to
    the page that failed: then the ``read(2)`` that continues it fails with EIO, never
    returns 0 (an early end of file).  ``stat`` keeps the size.  Once the server is
    back, the same ranges read right through the page cache."""
    store_port = free_port()
    args = ["--private", "private/*", "--store-port", str(store_port)]
    srv = servers.start(fault_dir, *args, "--bandwidth-mbs", "20")
    rid = srv.ids["cells/M001_data.rtdc"]
    mnt = fresh_mount(srv.url, extra=["--cache-size", "8M", "--timeout", "2",
                                      "--op-timeout", "8"])
    folder = mnt.path / rid
    sizes = {name: (folder / name).stat().st_size
             for name in ("data.rtdc", "image.tif", "features.tsv")}
    assert sizes["data.rtdc"] == len(references["data.rtdc"])
    piece = 1 << 20
    # the original's first 24 MiB, and the TIFF and TSV views (made from the chunks
    # as they arrive): 1 MiB each, eight at a time
    reads = [(name, offset, min(piece, sizes[name] - offset))
             for name, count in (("data.rtdc", 24), ("image.tif", 6), ("features.tsv", 6))
             for offset in range(0, min(count * piece, sizes[name]), piece)]

    def read(name: str, offset: int, want: int) -> tuple[str, str, bytes]:
        """(the first read(2), the program's read, the bytes): each outcome "exact",
        "eof" (0 bytes before the end), "prefix" (the first read(2) only) or an errno."""
        got = b""
        first = None
        fd = os.open(folder / name, os.O_RDONLY)
        try:
            while len(got) < want:
                try:
                    data = os.pread(fd, want - len(got), offset + len(got))
                except OSError as exc:
                    outcome = f"errno {errno.errorcode.get(exc.errno, exc.errno)}"
                    return first or outcome, outcome, got
                if not data:
                    return first or "eof", "eof", got
                got += data
                first = first or ("exact" if len(got) == want else "prefix")
        finally:
            os.close(fd)
        return first, "exact", got

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(read, *args) for args in reads]
        time.sleep(0.5)
        srv.stop()  # mid-read: 20 MB/s, so most of the reads are still on their way
        outcomes = [f.result(timeout=120) for f in futures]
    print("\ncut off:", collections.Counter((name, first, program) for (name, _, _), (
        first, program, _) in zip(reads, outcomes)))
    assert {program for _, program, _ in outcomes} <= {"exact", "errno EIO"}, outcomes
    assert {first for first, _, _ in outcomes} <= {"exact", "errno EIO", "prefix"}
    assert {program for _, program, _ in outcomes} != {"exact"}, "the server died too late"
    for name, size in sizes.items():  # never shrunk by a short answer
        assert (folder / name).stat().st_size == size

    servers.start(fault_dir, *args, port=srv.port)
    # through the page cache again, the server back (the mount tries its host again
    # once its offline time is over); Python's buffered reader this time
    deadline = time.monotonic() + 60
    whole = {}
    for name in sizes:
        while name not in whole:
            try:
                whole[name] = (folder / name).read_bytes()
            except OSError as exc:
                assert exc.errno == errno.EIO and time.monotonic() < deadline, exc
                time.sleep(1.0)
        assert len(whole[name]) == sizes[name] == (folder / name).stat().st_size
    assert whole["data.rtdc"] == references["data.rtdc"]
    # every byte served while the server died was right
    for (name, offset, _), (_, _, got) in zip(reads, outcomes):
        assert got == whole[name][offset:offset + len(got)], (name, offset)
    assert "DCF107" not in mnt.log_text()  # no view answered short

