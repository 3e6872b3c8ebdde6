"""The bulk read of a group's dataset shapes (``hdf5.group_shapes``), against files h5py
writes, through a fetch function that reads the local file and counts requests."""
from __future__ import annotations

import concurrent.futures
import errno
import threading
import time

import h5py
import numpy as np
import pytest

from dcorfs.hdf5 import symbol_table as st
from dcorfs.hdf5.group_shapes import GroupShapes, GroupShapesConfig
from dcorfs.hdf5.waves import WaveConfig, coalesce


class LocalFetch:
    """``fetch(start, stop)`` from a local file; ``damage`` maps an address to bytes
    written over what is read there."""

    def __init__(self, path, damage: dict[int, bytes] | None = None) -> None:
        self.data = path.read_bytes()
        self.damage = damage or {}
        self.requests: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def __call__(self, start: int, stop: int) -> bytes:
        with self._lock:
            self.requests.append((start, stop))
        piece = bytearray(self.data[start:stop])
        for at, patch in self.damage.items():
            if start <= at < stop:
                piece[at - start:at - start + len(patch)] = patch
        return bytes(piece)


@pytest.fixture(scope="module")
def pool():
    with concurrent.futures.ThreadPoolExecutor(8) as executor:
        yield executor


def write_scattered(path, members: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A group of ``members`` small chunked datasets written in batches between the
    chunks of a large dataset, as dclab's writer lays out contours and images."""
    rng = np.random.default_rng(seed)
    written = {}
    with h5py.File(path, "w") as h5:
        images = h5.create_dataset("images", shape=(0, 64, 64), maxshape=(None, 64, 64),
                                   chunks=(8, 64, 64), dtype="u1")
        group = h5.create_group("contour")
        for start in range(0, members, 100):
            stop = min(members, start + 100)
            images.resize(stop, axis=0)
            images[start:stop] = rng.integers(0, 255, (stop - start, 64, 64), dtype="u1")
            for i in range(start, stop):
                dtype = {7: ">i4", 11: "f4", 13: "u1"}.get(i % 50, "i2")
                data = rng.integers(0, 100, (int(rng.integers(1, 90)), 2)).astype(dtype)
                group.create_dataset(str(i), data=data, chunks=data.shape, compression="gzip")
                written[str(i)] = data
    return written


def members_of(reader: GroupShapes, header: bytes, headers: dict | None = None) -> list:
    """Every member ``reader`` hands out, as (name, shape, dtype), checking none comes
    twice; ``headers`` gets each one's object header address."""
    out: list = []
    reader.read(header, out.extend)
    assert len({name for name, *_ in out}) == len(out)
    if headers is not None:
        headers.update((name, address) for name, _, _, address in out)
    return [member[:3] for member in out]


def group_header(fetch: LocalFetch, path, name: str) -> bytes:
    with h5py.File(path, "r") as h5:
        address = h5py.h5o.get_info(h5[name].id).addr
    return fetch.data[address:address + 4096]


def test_every_member_has_the_shape_and_type_h5py_gives(tmp_path, pool):
    path = tmp_path / "scattered.h5"
    written = write_scattered(path, 3000)
    fetch = LocalFetch(path)
    reader = GroupShapes(fetch, pool.submit)
    headers: dict[str, int] = {}
    members = members_of(reader, group_header(fetch, path, "contour"), headers)
    assert sorted(name for name, _, _ in members) == sorted(written)
    with h5py.File(path, "r") as h5:
        for name, shape, dtype in members:
            assert shape == h5["contour"][name].shape, name
            assert dtype == h5["contour"][name].dtype, name
            assert headers[name] == h5["contour"].id.links.get_info(name.encode()).u
    assert {m[2].str for m in members} == {"<i2", ">i4", "<f4", "|u1"}
    # a few large requests, not one or more per member
    assert reader.counts.requests == len(fetch.requests) < len(written) / 20
    assert reader.counts.bytes == sum(b - a for a, b in fetch.requests)


def test_a_type_it_does_not_read_comes_back_without_a_shape(tmp_path, pool):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as h5:
        group = h5.create_group("g")
        group.create_dataset("plain", data=np.arange(6, dtype="i8").reshape(3, 2))
        group.create_dataset("records", data=np.zeros(4, dtype=[("a", "i4"), ("b", "f8")]))
        group.create_dataset("text", data=np.array([b"ab", b"cd"]))
    fetch = LocalFetch(path)
    members = {n: (s, d) for n, s, d in members_of(GroupShapes(fetch, pool.submit),
                                                   group_header(fetch, path, "g"))}
    assert members == {"plain": ((3, 2), np.dtype("<i8")), "records": (None, None),
                       "text": (None, None)}


def test_structures_in_data_are_believed_only_where_the_index_points(tmp_path, pool):
    """Data that looks like a symbol node and like a dataset header sits between the
    members: the scan finds it, but no member's shape comes from it."""
    real = np.zeros((5, 2), dtype="<i2")
    fake_header = bytearray(72)
    fake_header[0:16] = bytes([1, 0, 2, 0, 1, 0, 0, 0, 56, 0, 0, 0, 0, 0, 0, 0])
    fake_header[16:24] = bytes([1, 0, 24, 0, 0, 0, 0, 0])  # a dataspace message
    fake_header[24:32] = bytes([1, 2, 0, 0, 0, 0, 0, 0])
    fake_header[32:48] = (777).to_bytes(8, "little") + (2).to_bytes(8, "little")
    fake_header[48:56] = bytes([3, 0, 16, 0, 0, 0, 0, 0])  # a datatype message: int16
    fake_header[56:68] = bytes([0x10, 0x08, 0, 0, 2, 0, 0, 0, 0, 0, 16, 0])
    assert st.dataset_header(bytes(fake_header), 0) == ((777, 2), np.dtype("<i2"))
    fake_snod = b"SNOD\x01\x00\x01\x00" + (0).to_bytes(8, "little") + (48).to_bytes(8, "little")
    decoy = np.frombuffer((bytes(fake_header) + fake_snod + bytes(32)) * 64, dtype="u1")
    path = tmp_path / "decoy.h5"
    with h5py.File(path, "w") as h5:
        group = h5.create_group("g")
        for i in range(40):
            group.create_dataset(str(i), data=real)
            h5.create_dataset(f"decoy{i}", data=decoy)  # contiguous: its bytes as they are
    fetch = LocalFetch(path)
    assert sum(1 for _ in st.header_candidates(fetch.data)) > 40  # the decoys match
    members = members_of(GroupShapes(fetch, pool.submit), group_header(fetch, path, "g"))
    assert len(members) == 40
    assert all(shape == (5, 2) and dtype == np.dtype("<i2") for _, shape, dtype in members)


def test_a_new_style_group_is_left_to_h5py(tmp_path, pool):
    path = tmp_path / "latest.h5"
    with h5py.File(path, "w", libver="latest") as h5:
        h5.create_group("g").create_dataset("0", data=np.zeros(3))
    fetch = LocalFetch(path)
    with pytest.raises(OSError) as info:
        members_of(GroupShapes(fetch, pool.submit), group_header(fetch, path, "g"))
    assert info.value.errno == errno.ENOTSUP


def test_an_index_node_that_does_not_parse_is_eio(tmp_path, pool):
    path = tmp_path / "damaged.h5"
    write_scattered(path, 300)
    clean = LocalFetch(path)
    header = group_header(clean, path, "contour")
    root, _ = st.symbol_table(header, 0)
    fetch = LocalFetch(path, damage={root: b"XXXX"})
    with pytest.raises(OSError) as info:
        members_of(GroupShapes(fetch, pool.submit), header)
    assert info.value.errno == errno.EIO
    assert fetch.requests.count(fetch.requests[0]) == 1  # asked once, not in a loop


def test_what_is_held_at_once_is_bounded(tmp_path, pool):
    path = tmp_path / "bounded.h5"
    write_scattered(path, 2000)
    fetch = LocalFetch(path)
    held, most = [0], [0]
    lock = threading.Lock()

    def counting(start: int, stop: int) -> bytes:
        with lock:
            held[0] += stop - start
            most[0] = max(most[0], held[0])
        time.sleep(0.002)  # let requests overlap
        data = fetch(start, stop)
        with lock:
            held[0] -= stop - start
        return data

    config = GroupShapesConfig(waves=WaveConfig(max_request=64 * 1024, in_flight=128 * 1024))
    members = members_of(GroupShapes(counting, pool.submit, config),
                         group_header(fetch, path, "contour"))
    assert len(members) == 2000 and all(shape for _, shape, _ in members)
    heap = max(fetch.requests, key=lambda r: r[1] - r[0])
    assert all(b - a <= 64 * 1024 for a, b in fetch.requests if (a, b) != heap)
    assert most[0] <= max(128 * 1024, heap[1] - heap[0])


def test_members_are_handed_out_as_they_are_found(tmp_path, pool):
    """A listing waiting for one member's size need not wait for the whole group."""
    path = tmp_path / "progress.h5"
    write_scattered(path, 3000)
    fetch = LocalFetch(path)
    batches: list[tuple[int, int]] = []  # (members so far, requests so far)
    reader = GroupShapes(fetch, pool.submit)
    total = [0]

    def emit(batch):
        total[0] += len(batch)
        batches.append((total[0], len(fetch.requests)))

    reader.read(group_header(fetch, path, "contour"), emit)
    assert total[0] == 3000 and len(batches) > 3
    half = next(requests for members, requests in batches if members >= 1500)
    assert half < len(fetch.requests)  # half of them before the last request


def test_coalesce_merges_near_spans_up_to_a_length():
    spans = [(0, 10), (15, 20), (100, 110), (105, 130), (1000, 1010)]
    assert coalesce(spans, gap=10, most=1000) == [(0, 20), (100, 130), (1000, 1010)]
    assert coalesce(spans, gap=1000, most=50) == [(0, 20), (100, 130), (1000, 1010)]
    assert coalesce(spans, gap=1000, most=2000) == [(0, 1010)]
    assert coalesce([], gap=1, most=1) == []
