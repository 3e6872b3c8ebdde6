"""The FUSE-free core in this process, against the local server in a thread.

``Filesystem`` answers lookup, list, open and read as the FUSE adapter calls them;
a failure here points at the core, not at FUSE or at another process.
"""
from __future__ import annotations

import dataclasses
import errno
import io
import itertools
import os
import pathlib

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest
from harness import npy_bytes

from dcorfs.core.build import FsConfig, build
from dcorfs.core.filesystem import Filesystem
from dcorfs.tuning import TUNING


@pytest.fixture
def core(in_thread_server):
    fs = build(FsConfig(host=in_thread_server.url, cache_bytes=64 << 20))
    yield fs
    fs.close()


def page(fs: Filesystem, fh: int, start: int, count: int) -> list[str]:
    """``count`` names of the open folder ``fh`` from ``start``, as the kernel asks."""
    return [name for name, _ in itertools.islice(fs.readdir_plus(fh, start, False), count)]


def listed_plus(fs: Filesystem, path: str, start: int = 0) -> list[tuple[str, dict | None]]:
    """A listing of ``path`` from ``start`` with attributes, as ``ls -l`` asks for it."""
    fh = fs.opendir(path)
    try:
        return list(fs.readdir_plus(fh, start))
    finally:
        fs.releasedir(fh)


def read_all(fs: Filesystem, path: str) -> bytes:
    fh = fs.open(path, os.O_RDONLY)
    try:
        size = fs.getattr(path)["st_size"]
        parts, offset = [], 0
        while offset < size:  # as the kernel does: 128 KiB at a time
            parts.append(fs.read(fh, offset, 128 * 1024))
            offset += len(parts[-1])
        assert fs.read(fh, size, 10) == b""
        return b"".join(parts)
    finally:
        fs.release(fh)


@pytest.mark.parametrize("relpath", ["beads/calibration_beads.rtdc", "deflate/deflate_images.rtdc",
                                     "contiguous/uncompressed.rtdc", "qpi/qpi_float32.rtdc",
                                     "empty/empty_recording.rtdc"])
def test_features_read_as_np_save_of_the_local_file(core, in_thread_server, corpus_dir,
                                                    relpath):
    rid = in_thread_server.ids[relpath]
    names = core.readdir(f"/{rid}")
    assert "metadata.json" in names and "data.rtdc" in names
    with h5py.File(corpus_dir / relpath, "r") as h5:
        for name in h5["events"]:
            if not isinstance(h5["events"][name], h5py.Dataset):
                continue
            expected = h5["events"][name][:]
            if name == "mask":
                expected = expected.astype(bool)
            path = f"/{rid}/{name}.npy"
            assert f"{name}.npy" in names
            assert core.getattr(path)["st_size"] == len(npy_bytes(expected))
            assert read_all(core, path) == npy_bytes(expected), path
    assert read_all(core, f"/{rid}/data.rtdc") == (corpus_dir / relpath).read_bytes()


def test_names_that_cannot_be_ids_cost_no_request(core, in_thread_server):
    before = in_thread_server.stats.snapshot().get("api_requests", 0)
    for name in ("/.Trash", "/desktop.ini", "/ABCDEF00-0000-0000-0000-000000000000",
                 "/" + "x" * 200):
        with pytest.raises(OSError) as info:
            core.getattr(name)
        assert info.value.errno == errno.ENOENT
    assert in_thread_server.stats.snapshot().get("api_requests", 0) == before
    with pytest.raises(OSError) as info:
        core.getattr("/" + "y" * 300)
    assert info.value.errno == errno.ENAMETOOLONG


@pytest.mark.expect_warnings("DCF101")
def test_errors_carry_errnos(core, in_thread_server):
    rid = in_thread_server.ids["beads/calibration_beads.rtdc"]
    cases = [(lambda: core.getattr(f"/{rid}/nope.npy"), errno.ENOENT),
             (lambda: core.getattr(f"/{rid}/deform.npy/x"), errno.ENOTDIR),
             (lambda: core.open(f"/{rid}/deform.npy", os.O_RDWR), errno.EROFS),
             (lambda: core.open(f"/{rid}/trace", os.O_RDONLY), errno.EISDIR),
             (lambda: core.readdir(f"/{rid}/deform.npy"), errno.ENOTDIR),
             (lambda: core.read(999, 0, 10), errno.EBADF),
             (lambda: core.getattr("/0123abcd-0000-4000-8000-000000000000"), errno.ENOENT),
             (lambda: core.getattr("/" + in_thread_server.ids["private/calibration_beads.rtdc"]),
              errno.EACCES),
             (lambda: core.getxattr("/", "user.other"), errno.ENODATA),
             (lambda: core.getxattr(f"/{rid}/deform.npy", "security.selinux"), errno.ENOTSUP)]
    for call, code in cases:
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == code, call


def test_the_token_opens_private_resources(in_thread_server, corpus_dir):
    fs = build(FsConfig(host=in_thread_server.url, token=in_thread_server.TOKEN))
    try:
        rid = in_thread_server.ids["private/calibration_beads.rtdc"]
        with h5py.File(corpus_dir / "private/calibration_beads.rtdc", "r") as h5:
            assert read_all(fs, f"/{rid}/deform.npy") == npy_bytes(h5["events/deform"][:])
        assert "token=<set>" in repr(fs.parts.config) and in_thread_server.TOKEN not in repr(fs.parts.config)
    finally:
        fs.close()


def test_contours_traces_logs_and_tables(core, in_thread_server, corpus_dir):
    rid = in_thread_server.ids["beads/calibration_beads.rtdc"]
    contours = core.readdir(f"/{rid}/contour")
    assert contours[:3] == ["00.npy", "01.npy", "02.npy"] and len(contours) == 47
    with h5py.File(corpus_dir / "beads/calibration_beads.rtdc", "r") as h5:
        assert read_all(core, f"/{rid}/contour/10.npy") == npy_bytes(h5["events/contour/10"][:])
        for name in h5["events/trace"]:
            assert read_all(core, f"/{rid}/trace/{name}.npy") == npy_bytes(
                h5["events/trace"][name][:])
        for name in h5["logs"]:
            lines = [line.decode() for line in h5["logs"][name][:]]
            assert read_all(core, f"/{rid}/logs/{name}.txt").decode() == "".join(
                f"{line}\n" for line in lines)
    table = np.load(io.BytesIO(read_all(core, f"/{rid}/tables/monitor.npy")))
    assert table.dtype.names == ("time", "temperature") and len(table) == 6


def test_status_says_what_the_mount_does(core, in_thread_server):
    rid = in_thread_server.ids["scalars/example.rtdc"]
    read_all(core, f"/{rid}/deform.npy")
    status = core.status()
    assert status["resources"] == [rid]
    assert status["network"]["range_bytes"] > 0 and status["cache"]["bytes"] > 0
    assert set(status["decoder"]) == {"native", "problems"}
    assert core.listxattr("/") == ["user.dcorfs.status"]


def offline_core(in_thread_server, cache: str, token: str = "") -> Filesystem:
    return build(FsConfig(host=in_thread_server.url, token=token, disk_cache_dir=cache,
                               offline=True))


@pytest.mark.expect_warnings("DCF101")
def test_offline_serves_what_the_disk_cache_holds(in_thread_server, corpus_dir, tmp_path):
    cache = str(tmp_path / "cache")
    rid = in_thread_server.ids["beads/calibration_beads.rtdc"]
    online = build(FsConfig(host=in_thread_server.url, disk_cache_dir=cache))
    try:
        deform = read_all(online, f"/{rid}/deform.npy")
        meta = read_all(online, f"/{rid}/metadata.json")
        datasets = online.readdir("/datasets")
    finally:
        online.close()
    before = in_thread_server.stats.snapshot()
    fs = offline_core(in_thread_server, cache)
    try:
        assert fs.status()["network"]["state"] == "offline"
        assert read_all(fs, f"/{rid}/deform.npy") == deform
        assert read_all(fs, f"/{rid}/metadata.json") == meta
        assert fs.readdir("/datasets") == datasets
        with pytest.raises(OSError) as info:  # never read: not on this machine
            read_all(fs, f"/{rid}/image.npy")
        assert info.value.errno == errno.EIO
        with pytest.raises(OSError) as info:  # never opened
            fs.getattr("/" + in_thread_server.ids["deflate/deflate_images.rtdc"])
        assert info.value.errno == errno.EIO
        assert fs.status()["network"]["refused_at_once"] >= 2
    finally:
        fs.close()
    after = in_thread_server.stats.snapshot()
    assert after.get("api_requests", 0) == before.get("api_requests", 0)
    assert after.get("store_requests", 0) == before.get("store_requests", 0)


@pytest.mark.expect_warnings("DCF101")
def test_offline_a_private_resource_needs_the_same_token(in_thread_server, tmp_path):
    cache = str(tmp_path / "cache")
    rid = in_thread_server.ids["private/calibration_beads.rtdc"]
    online = build(FsConfig(host=in_thread_server.url, token=in_thread_server.TOKEN,
                                 disk_cache_dir=cache))
    try:
        deform = read_all(online, f"/{rid}/deform.npy")
    finally:
        online.close()
    fs = offline_core(in_thread_server, cache, token=in_thread_server.TOKEN)
    try:
        assert read_all(fs, f"/{rid}/deform.npy") == deform
    finally:
        fs.close()
    for token in ("another-token", ""):
        fs = offline_core(in_thread_server, cache, token=token)
        try:
            with pytest.raises(OSError) as info:
                fs.getattr(f"/{rid}/deform.npy")
            assert info.value.errno == errno.EIO
        finally:
            fs.close()
    for path in pathlib.Path(cache).rglob("*"):  # no signature, no token on disk
        if path.is_file() and path.suffix != ".blk":
            text = path.read_bytes()
            assert b"Signature=" not in text and in_thread_server.TOKEN.encode() not in text


def local_features(path: pathlib.Path) -> dict[str, bytes]:
    """Every feature dataset of a local file as the mount presents it (np.save)."""
    out = {}
    with h5py.File(path, "r") as h5:
        for name, item in h5["events"].items():
            if isinstance(item, h5py.Dataset):
                out[name] = npy_bytes(item[:].astype(bool) if name == "mask" else item[:])
    return out


@pytest.mark.parametrize("relpath, needs_h5py", [("beads/calibration_beads.rtdc", False),
                                                 ("contiguous/uncompressed.rtdc", False),
                                                 ("deflate/deflate_images.rtdc", True)])
def test_a_remount_reads_features_from_kept_layouts(in_thread_server, corpus_dir, tmp_path,
                                                    relpath, needs_h5py):
    """Where each feature sits is kept on disk beside its blocks: a remount reads it
    without opening an HDF5 file, unless only HDF5 can decode it (deflate)."""
    cache = str(tmp_path / "cache")
    rid = in_thread_server.ids[relpath]
    expected = local_features(corpus_dir / relpath)
    online = build(FsConfig(host=in_thread_server.url, disk_cache_dir=cache))
    try:
        for name, data in expected.items():
            assert read_all(online, f"/{rid}/{name}.npy") == data, name
        assert online.status()["hdf5"]["files_opened"] >= 1
    finally:
        online.close()
    again = build(FsConfig(host=in_thread_server.url, disk_cache_dir=cache))
    try:
        for name, data in expected.items():
            assert again.getattr(f"/{rid}/{name}.npy")["st_size"] == len(data)
            assert read_all(again, f"/{rid}/{name}.npy") == data, name
        counts = again.status()["hdf5"]
        assert (counts["files_opened"] > 0) == needs_h5py, counts
        assert counts["kept_layouts_used"] >= 1, counts
        if not needs_h5py:
            assert counts["kept_layouts_used"] == len(expected), counts
    finally:
        again.close()


@pytest.mark.parametrize("relpath", ["beads/calibration_beads.rtdc", "qpi/qpi_float32.rtdc",
                                     "video/image_mask_lengths.rtdc", "single/one_event.rtdc",
                                     "empty/empty_recording.rtdc"])
def test_features_tsv_and_tiff_stacks_hold_the_npy_values(core, in_thread_server, relpath):
    """The text and TIFF views carry the values of the .npy files, for 0, 1 and many
    events; their sizes are exact before reading."""
    import tifffile

    rid = in_thread_server.ids[relpath]
    names = core.readdir(f"/{rid}")
    sizes = {name: core.getattr(f"/{rid}/{name}")["st_size"]
             for name in names if name.endswith((".tsv", ".tif"))}
    assert "features.tsv" in sizes
    text = read_all(core, f"/{rid}/features.tsv")
    assert len(text) == sizes["features.tsv"]
    header, *lines = text.decode("ascii").splitlines()
    columns = header.split("\t") if header else []
    assert len({len(line) for line in lines}) <= 1
    for i, name in enumerate(columns):
        expected = np.load(io.BytesIO(read_all(core, f"/{rid}/{name}.npy")))
        assert expected.ndim == 1
        got = np.array([float(line.split("\t")[i]) for line in lines]).astype(expected.dtype)
        nan = np.isnan(expected) if expected.dtype.kind == "f" else np.zeros(len(expected), bool)
        assert len(got) == len(expected) and got[~nan].tobytes() == expected[~nan].tobytes(), name
    for name, size in sizes.items():
        if not name.endswith(".tif"):
            continue
        data = read_all(core, f"/{rid}/{name}")
        assert len(data) == size, name
        expected = np.load(io.BytesIO(read_all(core, f"/{rid}/{name[:-4]}.npy")))
        if not len(expected):
            continue
        if expected.dtype == bool:
            expected = np.where(expected, 255, 0).astype(np.uint8)
        elif expected.dtype.kind == "f":
            expected = expected.astype(np.float32)
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            pages = np.stack([page.asarray() for page in tif.pages])
        assert pages.dtype == expected.dtype and np.array_equal(pages, expected), name


@pytest.mark.expect_warnings("DCD801")
def test_decoded_chunks_kept_on_disk_serve_a_remount(in_thread_server, corpus_dir, tmp_path,
                                                     caplog):
    """Chunks that barely compress are kept decoded on disk too: a remount reads them
    without decoding; a damaged one is found by its check and decoded again."""
    from dcorfs.io.disk_cache import DiskCache

    relpath = "scalars/example.rtdc"  # fletcher32 only: a chunk is as large decoded
    cache = str(tmp_path / "cache")
    rid = in_thread_server.ids[relpath]
    expected = local_features(corpus_dir / relpath)

    def read_everything() -> dict:
        fs = build(FsConfig(host=in_thread_server.url, disk_cache_dir=cache))
        try:
            for name, data in expected.items():
                assert read_all(fs, f"/{rid}/{name}.npy") == data, name
            return fs.status()["cache"]
        finally:
            fs.close()

    assert read_everything()["decoded_chunks_from_disk"] == 0
    # the random floats; not frame and index (counters compress a hundredfold)
    from_disk = read_everything()["decoded_chunks_from_disk"]
    assert from_disk >= 4
    disk = DiskCache(pathlib.Path(cache), 1 << 30)
    kept = disk._db().execute("SELECT key, block FROM blocks WHERE key LIKE '%#decoded/%'").fetchall()
    assert kept
    key, block = kept[0]
    path = disk._path(key, block)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        read_everything()  # exact bytes all the same (checked inside)
    assert "DCD801" in caplog.text  # the damaged block was dropped, its chunk decoded again
    assert read_everything()["decoded_chunks_from_disk"] == from_disk  # and kept again


def test_contour_sizes_are_remembered_once_known(core, in_thread_server, corpus_dir,
                                                 monkeypatch):
    """A second ``ls -l contour/`` (nodes long dropped) asks HDF5 nothing; reading a
    contour afterwards still gives its exact bytes."""
    from dcorfs.views import nodes

    monkeypatch.setattr(nodes, "TUNING",  # every node is dropped again at once
                        dataclasses.replace(nodes.TUNING, lazy_entries_kept=4))
    relpath = "beads/calibration_beads.rtdc"
    rid = in_thread_server.ids[relpath]
    names = core.readdir(f"/{rid}/contour")
    first = [core.getattr(f"/{rid}/contour/{name}")["st_size"] for name in names]
    asked = []
    real_get = h5py.Group.get

    def counting_get(self, *args, **kwargs):
        asked.append(args[0] if args else None)
        return real_get(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "get", counting_get)
    again = [core.getattr(f"/{rid}/contour/{name}")["st_size"] for name in names]
    assert again == first and asked == []
    with h5py.File(corpus_dir / relpath, "r") as h5:
        for i in (0, len(names) // 2, len(names) - 1):
            expected = npy_bytes(h5["events/contour"][str(i)][:])
            assert read_all(core, f"/{rid}/contour/{names[i]}") == expected
            assert len(expected) == first[i]


def test_a_listing_hands_out_sizes_it_knows(core, in_thread_server, corpus_dir):
    """``readdir_plus`` gives attributes only where they cost no request: none for
    contours before their sizes are known, every one once a listing's lookups made the
    mount read them in bulk, and none again while the kernel still has them."""

    rid = in_thread_server.ids["beads/calibration_beads.rtdc"]
    folder = f"/{rid}/contour"
    names = core.readdir(folder)
    with h5py.File(corpus_dir / "beads" / "calibration_beads.rtdc", "r") as h5:
        expected = {name: len(npy_bytes(h5["events/contour"][str(int(name[:-4]))][:]))
                    for name in names}
    assert len(names) > TUNING.contour_bulk_after and len(set(expected.values())) > 5
    requests = core.parts.fetcher.requests
    assert all(attrs is None for _, attrs in listed_plus(core, folder))
    assert core.parts.fetcher.requests == requests  # nothing fetched for a listing
    for name in names[:TUNING.contour_bulk_after]:  # a listing's lookups: the bulk read starts
        assert core.getattr(f"{folder}/{name}")["st_size"] == expected[name]
    listed = dict(listed_plus(core, folder))
    assert {name: attrs["st_size"] for name, attrs in listed.items()} == expected
    assert core.parts.shared.counts.snapshot()["bulk_indexes_read"] == 1
    assert all(attrs is None for _, attrs in listed_plus(core, folder))  # kept by the kernel
    assert [name for name, _ in listed_plus(core, folder, 5)] == names[5:]


def test_a_listing_goes_on_from_what_its_first_page_saw(core, in_thread_server):
    """The kernel asks for a folder page by page: a folder that changes in between (a
    resource opened, a browsing listing refreshed) must not repeat or skip names; two
    listings at once each page from their own handle."""
    fh = core.opendir("/")
    try:
        first = page(core, fh, 0, 1)
        rid = in_thread_server.ids["beads/calibration_beads.rtdc"]
        core.getattr(f"/{rid}")  # opening a resource adds it to the root folder
        other = core.opendir("/")
        try:
            assert rid in page(core, other, 0, 1000)  # a new listing sees it
            rest = page(core, fh, 1, 1000)
        finally:
            core.releasedir(other)
    finally:
        core.releasedir(fh)
    assert rid not in first + rest and len(set(first + rest)) == len(first + rest)
    assert rid in core.readdir("/")
    with pytest.raises(OSError) as info:  # a released handle lists nothing
        page(core, fh, 0, 1)
    assert info.value.errno == errno.EBADF


def test_a_refreshed_browsing_listing_does_not_change_a_listing_under_way(core):
    """``datasets/`` is made anew each time it is asked for (around the listing DCOR
    gave last, which a refresh replaces): pages after the first come from the entries
    the first page saw."""
    fh = core.opendir("/datasets")
    try:
        first, entries = core._page(core._folder(fh), 0, 1)
        assert core.lookup("/datasets").entries is not entries  # made anew
        rest, later = core._page(core._folder(fh), 1, 1000)
    finally:
        core.releasedir(fh)
    assert later is entries and first + rest == core.readdir("/datasets")


def test_the_first_read_goes_through_the_site_cache(in_thread_server, corpus_dir):
    """The store's origin is learned from the first resource a lookup opens, not only
    by the warm-up (which may not have run yet: a cluster job mounts and reads at
    once).  The mirror here is the store itself, at the same paths."""
    store = in_thread_server.config.store_base
    fs = build(FsConfig(host=in_thread_server.url, store_mirror=store))
    try:  # not mounted(): the warm-up did not learn the origin
        rid = in_thread_server.ids["beads/calibration_beads.rtdc"]
        with h5py.File(corpus_dir / "beads/calibration_beads.rtdc", "r") as h5:
            assert read_all(fs, f"/{rid}/deform.npy") == npy_bytes(h5["events/deform"][:])
        mirrored = fs.status()["store_mirror"]
        assert mirrored["requests"] > 0 and mirrored["failures"] == 0
    finally:
        fs.close()


@pytest.mark.expect_warnings("DCF107")
def test_a_read_is_whole_or_fails(core, in_thread_server):
    """A view that hands back fewer bytes than asked for (before the end of the file)
    fails the read with EIO: the kernel would take a short read for the end of the
    file and zero-fill the rest."""
    rid = in_thread_server.ids["beads/calibration_beads.rtdc"]
    path = f"/{rid}/deform.npy"
    size = core.getattr(path)["st_size"]
    fh = core.open(path, os.O_RDONLY)
    try:
        whole = core.read(fh, 0, size + 100)
        assert len(whole) == size  # up to the end, and no further
        assert core.read(fh, size - 10, 100) == whole[-10:]
        node = core._files[fh][1]

        class Short:
            size = node.size

            def read(self, offset, count):
                return whole[offset:offset + count // 2]
        node._view = Short()
        with pytest.raises(OSError) as info:
            core.read(fh, 0, size - 100)
        assert info.value.errno == errno.EIO
    finally:
        core.release(fh)
