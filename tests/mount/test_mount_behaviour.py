"""What a user sees beyond the values: errors, private data, transfers, edge cases."""
from __future__ import annotations

import errno
import json
import os
import re
import socket
import stat
import time
import warnings
from typing import NamedTuple

import h5py
import numpy as np
import pytest

from harness import npy_bytes

dclab = pytest.importorskip("dclab")


def _errno_of(func, *args) -> int:
    with pytest.raises(OSError) as info:
        func(*args)
    return info.value.errno


# -- errors ---------------------------------------------------------------------------
def test_the_host_is_the_source_and_libfuse_says_nothing(server, mount):
    """``mount``, ``df`` and ``findmnt`` show the DCOR host as the source (as sshfs shows
    its remote), the type is ``fuse.dcorfs``, and the mount's log holds only dcorfs's
    own lines: libfuse warned at every mount before ("Ignoring invalid max threads")."""
    os.listdir(mount.path)  # it is mounted and answers
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        entries = [line.split(" - ", 1) for line in info if f" {mount.path} " in line]
    assert len(entries) == 1, entries
    fstype, source = entries[0][1].split()[:2]
    assert (fstype, source) == ("fuse.dcorfs", server.url.split("://", 1)[1])
    for line in mount.log_text().splitlines():
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ \S+: ", line), line


def test_names_that_cannot_be_ids_cost_no_request(server, mount):
    server.reset_stats()
    for name in (".Trash", "desktop.ini", "autorun.inf", "ABCDEF00-0000-0000-0000-000000000000",
                 "not-an-id", "x" * 200):
        assert _errno_of(os.stat, mount.path / name) == errno.ENOENT
    assert server.stats().get("api_requests", 0) == 0


def test_unknown_id_is_enoent(server, mount):
    rid = "0123abcd-0000-4000-8000-000000000000"
    assert _errno_of(os.stat, mount.path / rid) == errno.ENOENT
    assert _errno_of(os.listdir, mount.path / rid) == errno.ENOENT
    assert "DCF101" in mount.log_text()


def test_missing_names_inside_a_resource(server, mount):
    rid = server.ids["beads/calibration_beads.rtdc"]
    assert _errno_of(os.stat, mount.path / rid / "no_such_feature.npy") == errno.ENOENT
    assert _errno_of(os.stat, mount.path / rid / "deform.npy" / "x") == errno.ENOTDIR


def test_writes_are_refused(server, mount):
    folder = mount.path / server.ids["beads/calibration_beads.rtdc"]
    assert _errno_of(open, folder / "deform.npy", "r+b") == errno.EROFS
    assert _errno_of(open, folder / "new.npy", "wb") == errno.EROFS
    assert _errno_of(os.mkdir, folder / "newdir") == errno.EROFS
    assert _errno_of(os.unlink, folder / "deform.npy") == errno.EROFS
    assert _errno_of(os.rename, folder / "deform.npy", folder / "d.npy") == errno.EROFS
    # the mount is still fine afterwards
    assert np.load(folder / "deform.npy").shape == (47,)


@pytest.mark.expect_warnings("DCF101", "DCM501")  # EACCES, as it should be
def test_private_resource_needs_the_token(server, fresh_mount):
    rid = server.ids["private/calibration_beads.rtdc"]
    anonymous = fresh_mount(server.url)
    assert _errno_of(os.listdir, anonymous.path / rid) == errno.EACCES
    assert "DCF101" in anonymous.log_text()
    # public data still readable on the same mount: it survived the refusal
    public = server.ids["beads/calibration_beads.rtdc"]
    assert np.load(anonymous.path / public / "deform.npy").shape == (47,)


def test_private_resource_readable_with_token(server, mount):
    rid = server.ids["private/calibration_beads.rtdc"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dclab.new_dataset(rid, host=server.url.split("//")[1], use_ssl=False,
                               api_key=server.token) as ds:
            assert np.array_equal(np.load(mount.path / rid / "deform.npy"), ds["deform"])


def test_presigned_urls_refreshed_after_expiry(demo_server, fresh_mount):
    """Presigned URLs live 3 s on this server; reads keep working long after."""
    rid = demo_server.ids["beads/M002_beads.rtdc"]
    mnt = fresh_mount(demo_server.url, token_file=demo_server.token_file)
    folder = mnt.path / rid
    first = np.load(folder / "deform.npy")
    before = demo_server.stats().get("action_dcserv", 0)
    time.sleep(4.5)  # every URL handed out so far has expired
    images = np.load(folder / "image.npy", mmap_mode="r")
    assert images[len(images) - 1].any()
    assert np.array_equal(np.load(folder / "area_um.npy")[:3], np.load(folder / "area_um.npy")[:3])
    assert np.load(folder / "deform.npy").shape == first.shape
    assert demo_server.stats().get("action_dcserv", 0) > before, "no refresh happened"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dclab.new_dataset(rid, host=demo_server.url.split("//")[1], use_ssl=False,
                               api_key=demo_server.token) as ds:
            assert np.array_equal(images[-1], ds["image"][len(images) - 1])


@pytest.mark.expect_warnings("DCA201", "DCF101", "DCF104", "DCN901", maybe=("DCM501",))
def test_unreachable_server_is_eio_quickly(tmp_path, fresh_mount):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mnt = fresh_mount(f"http://127.0.0.1:{port}", extra=["--timeout", "5"])
    rid = "0123abcd-0000-4000-8000-000000000001"
    started = time.monotonic()
    assert _errno_of(os.listdir, mnt.path / rid) == errno.EIO
    assert time.monotonic() - started < 5
    assert "DCA201" in mnt.log_text() or "DCN901" in mnt.log_text()
    started = time.monotonic()  # the host is known to be down now: at once
    assert _errno_of(os.listdir, mnt.path / rid.replace("1", "2")) == errno.EIO
    assert time.monotonic() - started < 1
    assert mnt.status()["network"]["state"] == "offline"
    assert os.path.ismount(mnt.path)


# -- transfers ------------------------------------------------------------------------
def test_reading_deform_fetches_little(demo_server, fresh_mount):
    rid = demo_server.ids["blood-cells/M001_data.rtdc"]
    size = demo_server.dcserv(rid, "metadata")  # warm the server's side, not ours
    assert size["success"]
    mnt = fresh_mount(demo_server.url)
    demo_server.reset_stats()
    deform = np.load(mnt.path / rid / "deform.npy")
    assert deform.shape == (1500,)
    seen = demo_server.stats()
    file_size = (mnt.path / rid / "data.rtdc").stat().st_size
    assert seen["store_bytes"] < 0.10 * file_size, seen
    assert seen.get("store_bytes_resource", 0) < 0.05 * file_size, seen


def test_cold_read_fetches_no_block_twice(demo_server, fresh_mount):
    rid = demo_server.ids["blood-cells/M001_data.rtdc"]
    mnt = fresh_mount(demo_server.url)
    demo_server.reset_stats()
    data = (mnt.path / rid / "data.rtdc").read_bytes()
    seen = demo_server.stats()
    # every block once; the only extra is the unaligned start of the tail probe, which
    # is read before the size is known and kept only in whole 64 KiB blocks
    assert len(data) <= seen["store_bytes_resource"] < len(data) + 64 * 1024, seen
    demo_server.reset_stats()
    assert (mnt.path / rid / "data.rtdc").read_bytes() == data
    assert demo_server.stats().get("store_bytes", 0) == 0  # warm: all from cache


class _ImageLayout(NamedTuple):
    """The demo's blood-cell image dataset as stored, and as the mount must serve it."""
    rows_per_chunk: int
    row: int  # bytes per image
    header: int  # bytes of .npy header before the first image
    reference: bytes  # the whole image.npy
    stored: list[tuple[int, int]]  # (file offset, size) of each chunk


def _image_layout(demo_dir) -> _ImageLayout:
    import h5py

    with h5py.File(demo_dir / "blood-cells" / "M001_data.rtdc", "r") as h5:
        images = h5["events/image"]
        reference = npy_bytes(images[:])
        stored: list[tuple[int, int]] = []
        images.id.chunk_iter(lambda info: stored.append((info.byte_offset, info.size)))
        row = images.shape[1] * images.shape[2]
        return _ImageLayout(images.chunks[0], row, len(reference) - images.shape[0] * row,
                            reference, stored)


def test_two_chunks_under_one_read_come_in_one_request(demo_server, demo_dir, fresh_mount):
    rid = demo_server.ids["blood-cells/M001_data.rtdc"]
    rows_per_chunk, row, header, reference, stored = _image_layout(demo_dir)
    # two chunks stored back to back, far from the start (whose first read brings the
    # first chunks) and from chunk 40 (read first, for the metadata)
    second = next(k for k in range(10, 35) if sum(stored[k - 1]) == stored[k][0])
    # the kernel asks in aligned 128 KiB pieces: one piece across the edge between them
    edge = header + second * rows_per_chunk * row
    start = edge // (128 * 1024) * 128 * 1024
    mnt = fresh_mount(demo_server.url)
    fd = os.open(mnt.path / rid / "image.npy", os.O_RDONLY)
    try:
        os.pread(fd, 1, header + 40 * rows_per_chunk * row)  # metadata and the chunk index
        demo_server.reset_stats()
        data = os.pread(fd, 128 * 1024, start)
    finally:
        os.close(fd)
    assert start < edge and data == reference[start:start + 128 * 1024]
    seen = demo_server.stats()
    assert seen["store_requests"] == 1, sorted(seen.items())


def test_connections_are_opened_at_mount(demo_server, fresh_mount):
    """The first read finds its API and object-store connections open: the mount opened
    them in the background (a TCP handshake is a round trip, TLS one or two more)."""
    rid = demo_server.ids["blood-cells/M001_data.rtdc"]
    mnt = fresh_mount(demo_server.url)  # waits until the warm-up has ended
    api_host = demo_server.url.split("//", 1)[1]
    assert mnt.warm_up["state"] == "done", mnt.warm_up
    assert mnt.warm_up["store"] not in (None, api_host), mnt.warm_up
    demo_server.reset_stats()
    assert np.load(mnt.path / rid / "deform.npy").ndim == 1
    seen = demo_server.stats()
    assert seen["store_requests"] > 0 and seen.get("connections", 0) == 0, sorted(seen.items())
    assert "DCF105 warm-up done" in mnt.log_text()


def test_connections_are_shared_between_threads(demo_server, fresh_mount):
    rid = demo_server.ids["blood-cells/M001_data.rtdc"]
    mnt = fresh_mount(demo_server.url)
    path = mnt.path / rid / "data.rtdc"
    size = path.stat().st_size  # the probe has opened connections to the store
    demo_server.reset_stats()
    # reads one after another, each served by whichever daemon thread the kernel picks,
    # over the connections already open: no new TCP (on DCOR also TLS) handshake
    fd = os.open(path, os.O_RDONLY)
    try:
        for i in range(1, 9):
            assert len(os.pread(fd, 10, size * i // 10)) == 10
    finally:
        os.close(fd)
    seen = demo_server.stats()
    assert seen["store_requests"] >= 8 and seen.get("connections", 0) == 0, sorted(seen.items())


# -- edge cases of the corpus (tests/corpus.py) -----------------------------------------
def test_zero_events(server, mount, corpus_dir):
    relpath = "empty/empty_recording.rtdc"
    folder = mount.path / server.ids[relpath]
    names = os.listdir(folder)
    assert "condensed.rtdc" not in names  # condensing fails for N = 0, as on DCOR
    with h5py.File(corpus_dir / relpath, "r") as h5:
        for name in ("deform", "image", "mask", "trace/fl2_raw"):
            expected = h5["events"][name][:]
            if name == "mask":
                expected = expected.astype(bool)
            assert (folder / f"{name}.npy").read_bytes() == npy_bytes(expected)
    assert np.load(folder / "image.npy").shape == (0, 80, 250)


def test_image_and_mask_of_different_lengths(server, mount, corpus_dir):
    relpath = "video/image_mask_lengths.rtdc"
    folder = mount.path / server.ids[relpath]
    with h5py.File(corpus_dir / relpath, "r") as h5:
        assert h5["events/image"].shape[0] != h5["events/mask"].shape[0]
        assert np.array_equal(np.load(folder / "image.npy"), h5["events/image"][:])
        assert np.array_equal(np.load(folder / "mask.npy"), h5["events/mask"][:].astype(bool))


def test_variable_length_logs(server, mount, corpus_dir):
    relpath = "logs/variable_length_logs.rtdc"
    logs = mount.path / server.ids[relpath] / "logs"
    texts = {p.name: p.read_text(encoding="utf-8") for p in logs.iterdir()}
    with h5py.File(corpus_dir / relpath, "r") as h5:
        assert h5["logs/M1_para.ini"].dtype.kind == "O"  # really variable-length strings
        for name in ("M1_para.ini", "M1_camera.ini"):
            lines = [line.decode() for line in h5["logs"][name][:]]
            assert texts[f"{name}.txt"] == "".join(f"{line}\n" for line in lines)


def test_stat_sizes_exact_before_reading(server, fresh_mount):
    mnt = fresh_mount(server.url)
    folder = mnt.path / server.ids["beads/calibration_beads.rtdc"]
    sizes = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    for name, size in sizes.items():
        assert len((folder / name).read_bytes()) == size, name
    st = os.stat(folder / "image.npy")
    assert st.st_blksize >= 1 << 20
    assert stat.S_IMODE(st.st_mode) == 0o444


def test_metadata_json_is_valid_json(server, mount):
    meta = json.loads((mount.path / server.ids["beads/calibration_beads.rtdc"] /
                       "metadata.json").read_text())
    assert meta["experiment"]["event count"] == 47


def test_root_lists_resolved_resources(server, mount):
    rid = server.ids["beads/calibration_beads.rtdc"]
    os.stat(mount.path / rid)
    assert rid in os.listdir(mount.path)


def test_random_read_brings_its_chunk_group_in_one_request(demo_server, demo_dir,
                                                         fresh_mount):
    from dcorfs.hdf5.readahead import DEFAULT

    MIN_FETCH_BYTES = DEFAULT.min_fetch_bytes

    rid = demo_server.ids["blood-cells/M001_data.rtdc"]
    rows_per_chunk, row, header, reference, stored = _image_layout(demo_dir)
    # chunks are grouped from the first into runs of at least MIN_FETCH_BYTES on average
    group = -(-MIN_FETCH_BYTES * len(stored) // sum(size for _, size in stored))
    assert 1 < group < len(stored) // 4, "the demo's chunks must be smaller than a group"
    # a group stored back to back, well past the chunks the kernel reads after the header
    first = next(g for g in range(4 * group, len(stored) - 2 * group, group)
                 if all(sum(stored[k - 1]) == stored[k][0] for k in range(g + 1, g + group)))
    mnt = fresh_mount(demo_server.url)
    fd = os.open(mnt.path / rid / "image.npy", os.O_RDONLY)
    try:
        os.pread(fd, 1, len(reference) - 1)  # metadata and the chunk index
        demo_server.reset_stats()
        # a few rows in: the kernel reads whole pages, which must not reach back into
        # the chunk before
        at = header + (first * rows_per_chunk + 8) * row
        assert os.pread(fd, 1000, at) == reference[at:at + 1000]
        seen = demo_server.stats()
        assert seen["store_requests"] == 1, sorted(seen.items())
        group_bytes = sum(size for _, size in stored[first:first + group])
        assert group_bytes <= seen["store_bytes_resource"] < group_bytes + 2 * 64 * 1024
        demo_server.reset_stats()
        at = header + ((first + group - 1) * rows_per_chunk + 8) * row  # its last chunk
        assert os.pread(fd, row, at) == reference[at:at + row]
        assert demo_server.stats().get("store_requests", 0) == 0
    finally:
        os.close(fd)


def test_wide_random_reads_fetch_the_rest_in_bulk(demo_server, demo_dir, fresh_mount):
    from dcorfs.hdf5.readahead import DEFAULT

    MIN_FETCH_BYTES, SWEEP_MIN_GROUPS, SWEEP_SHARE = (
        DEFAULT.min_fetch_bytes, DEFAULT.sweep_min_groups, DEFAULT.sweep_share)

    rid = demo_server.ids["blood-cells/M001_data.rtdc"]
    rows_per_chunk, row, header, reference, layout = _image_layout(demo_dir)
    stored = [size for _, size in layout]
    group = -(-MIN_FETCH_BYTES * len(stored) // sum(stored))
    groups = -(-len(stored) // group)
    jumps = max(SWEEP_MIN_GROUPS, int(np.ceil(SWEEP_SHARE * groups)))
    assert jumps < groups - 2, "the demo's image dataset must have more groups"
    # groups far apart, from the last backwards (the first ones come with the header)
    picked = list(range(groups - 1, 0, -2))[:jumps]
    assert len(picked) == jumps
    mnt = fresh_mount(demo_server.url)
    fd = os.open(mnt.path / rid / "image.npy", os.O_RDONLY)
    try:
        for n, g in enumerate(picked):
            if n == jumps - 1:  # one short of the share: only the groups read so far
                time.sleep(0.5)  # (a bulk fetch would be well on its way by now)
                seen = demo_server.stats()["store_bytes_resource"]
                read_so_far = sum(stored[k] for p in picked[:-1]
                                  for k in range(p * group, min((p + 1) * group, len(stored))))
                assert seen < read_so_far + 2 * 1024 ** 2, seen  # + head, tail, chunk index
            at = header + (g * group * rows_per_chunk + 8) * row
            assert os.pread(fd, 1000, at) == reference[at:at + 1000]
    finally:
        os.close(fd)
    # the rest arrives in the background
    give_up = time.monotonic() + 60
    while demo_server.stats()["store_bytes_resource"] < sum(stored):
        assert time.monotonic() < give_up, demo_server.stats()
        time.sleep(0.2)
    time.sleep(0.5)  # the last blocks are stored after the server sent them
    demo_server.reset_stats()
    assert (mnt.path / rid / "image.npy").read_bytes() == reference
    assert demo_server.stats().get("store_requests", 0) == 0
    assert "DCC610" in mnt.log_text()


def test_one_mmapped_image_does_not_start_readahead(demo_server, demo_dir, fresh_mount):
    import h5py

    rid = demo_server.ids["blood-cells/M001_data.rtdc"]
    with h5py.File(demo_dir / "blood-cells" / "M001_data.rtdc", "r") as h5:
        sizes = []
        h5["events/image"].id.chunk_iter(lambda info: sizes.append(info.size))
    mnt = fresh_mount(demo_server.url)
    demo_server.reset_stats()
    # a copy: a view would keep the file mapped (and the mount busy) if an assert fails
    image = np.array(np.load(mnt.path / rid / "image.npy", mmap_mode="r")[1000])
    assert image.shape == (80, 250)
    seen = demo_server.stats()
    # the chunk group holding event 1000; the first chunks, which the kernel reads ahead (about
    # 1 MiB) when numpy reads the header; and metadata: no readahead window of our own
    assert seen["store_bytes_resource"] < 4 * max(sizes) + 1024 * 1024, seen


def test_status_readable_from_inside_the_mount(server, fresh_mount):
    mnt = fresh_mount(server.url)
    before = json.loads(os.getxattr(mnt.path, "user.dcorfs.status"))
    assert before["host"] == server.url and before["resources"] == []
    rid = server.ids["beads/calibration_beads.rtdc"]
    np.load(mnt.path / rid / "deform.npy")
    after = json.loads(os.getxattr(mnt.path, "user.dcorfs.status"))
    assert after["resources"] == [rid]
    assert after["network"]["range_bytes"] > 0 and after["cache"]["bytes"] > 0
    assert after["token"] is False
    assert "user.dcorfs.status" in os.listxattr(mnt.path)
    with pytest.raises(OSError) as info:
        os.getxattr(mnt.path, "user.other")
    assert info.value.errno == errno.ENODATA
    # below the root, "not supported": ls -l then stops asking for ACLs and SELinux
    # labels after the first entry, instead of asking twice per entry
    for path in (mnt.path / rid / "deform.npy", mnt.path / rid):
        for name in ("user.other", "security.selinux", "system.posix_acl_access"):
            with pytest.raises(OSError) as info:
                os.getxattr(path, name)
            assert info.value.errno == errno.ENOTSUP, (path, name)


def test_resources_beyond_the_limit_are_closed_and_reopened(server, fresh_mount):
    mnt = fresh_mount(server.url, extra=["--max-open-resources", "3"])
    rids = [rid for rel, rid in sorted(server.ids.items()) if not rel.startswith("private/")
            and "deform" in server.dcserv(rid, "basins")["result"][1].get("features", [])]
    first = mnt.path / rids[0] / "deform.npy"
    reference = first.read_bytes()
    fd = os.open(first, os.O_RDONLY)  # an open file keeps its resource open
    try:
        for rid in rids[1:9]:
            np.load(mnt.path / rid / "deform.npy")
        status = json.loads(os.getxattr(mnt.path, "user.dcorfs.status"))
        assert len(status["resources"]) <= 4 and rids[0] in status["resources"]
        assert os.pread(fd, len(reference) + 10, 0) == reference
    finally:
        os.close(fd)
    for rid in rids[1:9]:  # closed ones come back on demand
        assert np.load(mnt.path / rid / "deform.npy").ndim == 1
    assert "DCF103" in mnt.log_text()


@pytest.mark.expect_warnings(maybe=("DCF301",))  # a close racing a request is retried: allowed
def test_connections_closed_while_idle_are_reopened(demo_dir, servers, fresh_mount):
    """A server that closes idle connections after 1 s, as real ones do (after longer):
    reads after an idle time are exact, and the store connections are reopened while the
    API is asked."""
    srv = servers.start(demo_dir, "--private", "beads/*", "--idle-close-s", "1",
                        "--handshake-rtts", "2")
    mnt = fresh_mount(srv.url)
    rid = srv.ids["blood-cells/M001_data.rtdc"]
    with h5py.File(demo_dir / "blood-cells" / "M001_data.rtdc", "r") as h5:
        deform, area = h5["events/deform"][:], h5["events/area_um"][:]
    time.sleep(6)  # longer than TUNING.reopen_after and the server's idle close
    srv.reset_stats()
    assert np.array_equal(np.load(mnt.path / rid / "deform.npy"), deform)
    assert srv.stats()["store_connections"] >= 2  # the warm ones had been closed
    assert "DCF106" in mnt.log_text()
    time.sleep(1.5)
    assert np.array_equal(np.load(mnt.path / rid / "area_um.npy"), area)
