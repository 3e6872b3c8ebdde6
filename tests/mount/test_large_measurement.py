"""A measurement of tens of thousands of events with contours, as dclab's writer lays it
out (each contour a dataset of its own, scattered between the image chunks): its
``contour/`` folder lists and opens without reading the group's whole index."""
from __future__ import annotations

import errno
import os
import re
import subprocess
import time
import warnings

import dclab
import h5py
import numpy as np
import pytest
import requests

from harness import npy_bytes
from dcorfs.tuning import TUNING

EVENTS = 30_000  # the index of events/contour spans hundreds of scattered nodes
BULK = TUNING.contour_bulk_after
GAPS_EVENTS, GAPS = 3 * BULK, (BULK + 5, 2 * BULK + 1)


@pytest.fixture(scope="module")
def large_dir(tmp_path_factory):
    from dcorfs.server.demo_data import write_demo_file

    root = tmp_path_factory.mktemp("large")
    write_demo_file(root / "large" / "M001_large.rtdc", events=EVENTS, height=24, width=32,
                    with_traces=False, seed=11)
    # a truncated write: the metadata promises ten events, the last two contours are gone
    short = write_demo_file(root / "large" / "M002_short.rtdc", events=10, height=24,
                            width=32, with_traces=False, seed=12)
    with h5py.File(short, "a") as h5:
        for name in ("8", "9"):
            del h5["events/contour"][name]
    # enough events that a listing reads its sizes in bulk, with contours gone inside
    gaps = write_demo_file(root / "large" / "M003_gaps.rtdc", events=GAPS_EVENTS, height=24,
                           width=32, with_traces=False, seed=13)
    with h5py.File(gaps, "a") as h5:
        for number in GAPS:
            del h5["events/contour"][str(number)]
    return root


@pytest.fixture(scope="module")
def large_server(large_dir, module_servers):
    return module_servers.start(large_dir, name="large-server")


def settled(mnt) -> None:
    """Wait until the mount's background fetches (a listing's header prefetch) are done."""
    for _ in range(300):
        if mnt.status()["network"]["background"]["pending"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("background fetches still pending after 15 s")


def dclab_contours(path, picks):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dclab.new_dataset(path) as ds:
            return {i: np.asarray(ds["contour"][i]) for i in picks}


@pytest.mark.timeout(600)
def test_contours_list_and_open_without_counting_the_group(large_dir, large_server,
                                                           fresh_mount):
    rid = large_server.ids["large/M001_large.rtdc"]
    mnt = fresh_mount(large_server.url, extra=["--op-timeout", "20"])
    folder = mnt.path / rid
    assert (folder / "contour").is_dir()
    settled(mnt)
    large_server.reset_stats()
    names = os.listdir(folder / "contour")
    seen = large_server.stats()
    assert len(names) == EVENTS and len(set(names)) == EVENTS
    assert names[0] == "00000.npy" and names[-1] == f"{EVENTS - 1}.npy"
    # the names come from DCOR's event count: the HDF5 file is not even opened
    assert seen.get("store_requests", 0) == 0, seen
    assert "contour" in os.listdir(folder)
    picks = [0, 1, 4567, 12345, EVENTS - 1]
    expected = dclab_contours(large_dir / "large" / "M001_large.rtdc", picks)
    settled(mnt)
    large_server.reset_stats()
    last = np.load(folder / "contour" / f"{EVENTS - 1}.npy")
    assert np.array_equal(last, expected[EVENTS - 1])
    assert large_server.stats().get("store_requests", 0) <= 12  # a few index nodes only
    for i in picks:
        data = (folder / "contour" / f"{i:05d}.npy").read_bytes()
        assert data == npy_bytes(expected[i]), i
    # dclab's contours are read from their own bytes, never through h5py
    hdf5 = mnt.status()["hdf5"]
    assert hdf5["small_datasets_parsed"] >= len(picks) and hdf5["small_datasets_h5py"] == 0
    with pytest.raises(FileNotFoundError):
        (folder / "contour" / f"{EVENTS}.npy").stat()
    with pytest.raises(FileNotFoundError):
        (folder / "contour" / "7.npy").stat()  # not a name of this folder: 00007.npy is
    assert "DCM506" not in mnt.log_text() and "DCM501" not in mnt.log_text()  # no EIO, no deadline


@pytest.mark.expect_warnings("DCR411", maybe=("DCM501",))
@pytest.mark.timeout(300)
def test_a_missing_contour_is_enoent(large_server, fresh_mount):
    rid = large_server.ids["large/M002_short.rtdc"]
    mnt = fresh_mount(large_server.url)
    folder = mnt.path / rid / "contour"
    assert sorted(os.listdir(folder)) == [f"{i}.npy" for i in range(10)]
    assert np.load(folder / "7.npy").shape[1] == 2
    for name in ("8.npy", "9.npy"):
        with pytest.raises(OSError) as info:
            (folder / name).read_bytes()
        assert info.value.errno == errno.ENOENT
    assert mnt.log_text().count("DCR411") == 1  # said once


def ls_l(folder) -> dict[str, int]:
    """Name -> size, as ``ls -l`` shows them (every entry looked up, none opened)."""
    out = subprocess.run(["ls", "-l", "--time-style=+", str(folder)], capture_output=True,
                         text=True, check=True, timeout=300).stdout
    return {line.split()[-1]: int(line.split()[4]) for line in out.splitlines()[1:]}


@pytest.mark.timeout(600)
def test_ls_l_of_contours_reads_their_sizes_in_bulk_and_keeps_them(large_dir, large_server,
                                                                   fresh_mount, tmp_path):
    rid = large_server.ids["large/M001_large.rtdc"]
    with h5py.File(large_dir / "large" / "M001_large.rtdc", "r") as h5:
        expected = {f"{i:05d}.npy": len(npy_bytes(np.zeros(h5["events/contour"][str(i)].shape,
                                                             h5["events/contour"][str(i)].dtype)))
                    for i in range(EVENTS)}
    assert len(set(expected.values())) > 10  # contours differ in length
    cache = ["--cache-dir", str(tmp_path / "cache"), "--op-timeout", "20"]
    mnt = fresh_mount(large_server.url, extra=cache)
    folder = mnt.path / rid / "contour"
    os.listdir(folder.parent)
    settled(mnt)
    large_server.reset_stats()
    assert ls_l(folder) == expected
    cold = large_server.stats().get("store_requests", 0)
    hdf5 = mnt.status()["hdf5"]
    assert hdf5["bulk_indexes_read"] == 1, hdf5
    # the first TUNING.contour_bulk_after lookups ask h5py, then one bulk read of a few large requests
    assert cold <= 4 * TUNING.contour_bulk_after + EVENTS / 100, cold
    assert "DCR415" in mnt.log_text()
    picks = [0, 4567, EVENTS - 1]  # a size read in bulk is the file's size
    for i, value in dclab_contours(large_dir / "large" / "M001_large.rtdc", picks).items():
        assert (folder / f"{i:05d}.npy").read_bytes() == npy_bytes(value)
    large_server.reset_stats()
    assert ls_l(folder) == expected  # kept: a second listing asks nothing
    assert large_server.stats().get("store_requests", 0) == 0
    mnt.unmount()
    again = fresh_mount(large_server.url, extra=cache)
    assert ls_l(again.path / rid / "contour") == expected  # kept on disk
    assert again.status()["hdf5"].get("bulk_indexes_read", 0) == 0
    for log in (mnt.log_text(), again.log_text()):
        assert "DCM501" not in log and "DCM506" not in log and "DCR414" not in log


@pytest.mark.expect_warnings("DCR411")
@pytest.mark.timeout(300)
def test_contours_a_bulk_read_finds_missing_are_enoent(large_dir, large_server, fresh_mount):
    rid = large_server.ids["large/M003_gaps.rtdc"]
    mnt = fresh_mount(large_server.url)
    folder = mnt.path / rid / "contour"
    names = sorted(os.listdir(folder))
    assert len(names) == GAPS_EVENTS
    sizes = {}
    for name in names:  # every entry looked up, none opened: a listing's lookups
        try:
            sizes[name] = (folder / name).stat().st_size
        except FileNotFoundError:
            sizes[name] = None
    assert mnt.status()["hdf5"]["bulk_indexes_read"] == 1
    assert [n for n, size in sizes.items() if size is None] == [f"{i}.npy" for i in GAPS]
    with h5py.File(large_dir / "large" / "M003_gaps.rtdc", "r") as h5:
        for name, size in sizes.items():
            if size is not None:
                assert size == len((folder / name).read_bytes())
                data = h5["events/contour"][str(int(name[:-4]))][:]
                assert (folder / name).read_bytes() == npy_bytes(data)
    assert mnt.log_text().count("DCR411") == 1


def index_height(path) -> int:
    """Levels of ``events/contour``'s B-tree in the local file, symbol nodes included:
    the most index requests one name can cost."""
    from dcorfs.hdf5 import symbol_table as st

    data = path.read_bytes()
    with h5py.File(path, "r") as h5:
        events = h5["events"]
        header = events.id.links.get_info(b"contour").u
    root, _ = st.symbol_table(data, header)
    return st.tree_node(data, root)[0] + 2


def looked_ahead(mnt) -> tuple[int, int]:
    hdf5 = mnt.status()["hdf5"]
    return hdf5["contours_looked_ahead"], hdf5["contour_index_requests"]


@pytest.mark.timeout(600)
def test_contour_loops_equal_dclab_and_only_runs_look_ahead(large_dir, large_server,
                                                           fresh_mount):
    """Loops forward from event 0, backwards from the last, and every 7th event each
    read dclab's contours, and all but their first three opens find their contour
    claimed by the lookahead; a random walk claims nothing, and each of its opens
    costs at most one request per level of the index."""
    path = large_dir / "large" / "M001_large.rtdc"
    rid = large_server.ids["large/M001_large.rtdc"]
    mnt = fresh_mount(large_server.url, extra=["--op-timeout", "20"])
    folder = mnt.path / rid / "contour"
    rng = np.random.default_rng(5)
    loops = {"forward from 0": list(range(0, 400)),
             "backwards from the end": list(range(EVENTS - 1, EVENTS - 401, -1)),
             "every 7th": list(range(1000, 1000 + 7 * 300, 7)),
             "a random walk": [int(n) for n in rng.choice(EVENTS, 300, replace=False)]}
    expected = dclab_contours(path, sorted({n for loop in loops.values() for n in loop}))
    for name, numbers in loops.items():
        claimed, requests = looked_ahead(mnt)
        for n in numbers:
            assert (folder / f"{n:05d}.npy").read_bytes() == npy_bytes(expected[n]), (name, n)
        claimed, requests = (a - b for a, b in zip(looked_ahead(mnt), (claimed, requests)))
        if name == "a random walk":
            assert claimed == 0
            assert requests <= len(numbers) * index_height(path), requests
        else:
            assert claimed >= len(numbers) - 3, (name, claimed)
    log = mnt.log_text()
    assert "DCM501" not in log and "DCM506" not in log and "DCR417" not in log


@pytest.mark.expect_warnings("DCR411")
@pytest.mark.timeout(300)
def test_a_loop_across_missing_contours(large_dir, large_server, fresh_mount):
    """A loop over a truncated write (the last two contours gone) and over a group
    with contours gone inside it: dclab's contours, then ENOENT where one is gone,
    whether the lookahead or the lookup found it gone."""
    mnt = fresh_mount(large_server.url)
    for relpath, events, gone in (("large/M002_short.rtdc", 10, {8, 9}),
                                  ("large/M003_gaps.rtdc", GAPS_EVENTS, set(GAPS))):
        folder = mnt.path / large_server.ids[relpath] / "contour"
        width = len(str(events - 1))
        expected = dclab_contours(large_dir / relpath, [n for n in range(events)
                                                        if n not in gone])
        for n in range(events):
            if n in gone:
                with pytest.raises(FileNotFoundError):
                    (folder / f"{n:0{width}d}.npy").read_bytes()
            else:
                assert (folder / f"{n:0{width}d}.npy").read_bytes() == npy_bytes(expected[n])


@pytest.mark.timeout(600)
def test_contour_addresses_are_kept_for_a_remount(large_dir, large_server, fresh_mount,
                                                  tmp_path):
    """``ls -l`` learns every contour's address with its size; after a remount a loop
    from anywhere finds its contours without a request to the index."""
    path = large_dir / "large" / "M001_large.rtdc"
    rid = large_server.ids["large/M001_large.rtdc"]
    cache = ["--cache-dir", str(tmp_path / "cache"), "--op-timeout", "20"]
    mnt = fresh_mount(large_server.url, extra=cache)
    ls_l(mnt.path / rid / "contour")
    mnt.unmount()
    again = fresh_mount(large_server.url, extra=cache)
    folder = again.path / rid / "contour"
    numbers = list(range(20_000, 20_300))
    expected = dclab_contours(path, numbers)
    for n in numbers:
        assert (folder / f"{n:05d}.npy").read_bytes() == npy_bytes(expected[n]), n
    claimed, requests = looked_ahead(again)
    assert requests == 0 and claimed >= len(numbers) - 3


@pytest.mark.timeout(300)
def test_a_cold_scalar_read_waits_for_four_round_trips(large_server, fresh_mount, tmp_path):
    """A feature of the condensed file whose header and chunks lie beyond the file's
    head and tail: DCOR's answer, the head and tail, the ``events`` group's symbol nodes
    (unless the head holds the one naming it), then the feature's header together with
    its chunks (a condensed file keeps most features' chunks just before their header).
    Its bytes are the condensed file's."""
    from dcorfs.hdf5 import symbol_table

    rid = large_server.ids["large/M001_large.rtdc"]
    spec = next(s for s in large_server.dcserv(rid, "basins")["result"]
                if s["name"].startswith("condensed"))
    condensed = tmp_path / "condensed.rtdc"
    condensed.write_bytes(requests.get(spec["urls"][0], timeout=60).content)
    with h5py.File(condensed, "r") as h5:
        events = h5["events"]
        size = condensed.stat().st_size
        headers = sorted((events.id.links.get_info(n.encode()).u, n) for n in events)
        # the last feature kept before its header (dclab's ancillary features are kept
        # after theirs) that lies beyond the head, and away from the tail
        _, (address, name) = [
            (previous, (at, n)) for previous, (at, n) in zip(headers, headers[1:])
            if previous[0] > TUNING.probe_head and at < size - 2 * TUNING.probe_tail
            and isinstance(events[n], h5py.Dataset) and events[n].ndim == 1
            and events[n].chunks and events[n].id.get_num_chunks()
            and events[n].id.get_chunk_info(0).byte_offset < at][-1]
        expected = npy_bytes(events[name][:])
    data = condensed.read_bytes()
    node = next(m.start() for m in re.finditer(b"SNOD", data) if address in
                {a for _, a in symbol_table.symbol_node(data, m.start()) or ()})
    in_probe = node + 1024 < TUNING.probe_head or node >= size - TUNING.probe_tail
    mnt = fresh_mount(large_server.url)
    large_server.set_faults(latency_ms=20)  # parallel requests overlap, as on a real link
    try:
        large_server.reset_stats()
        assert (mnt.path / rid / f"{name}.npy").read_bytes() == expected
        seen = large_server.stats()
    finally:
        large_server.set_faults()
    assert seen["round_trips"] <= (3 if in_probe else 4), (name, address, node, seen)
