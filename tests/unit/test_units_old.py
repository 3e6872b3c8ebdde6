"""The pieces below the mount, each on its own: block cache, deadline, HDF5 hints."""
from __future__ import annotations

import errno
import re
import threading
import time

import pytest

from conftest import SHARED_DATA
from dcorfs import deadline
from dcorfs.block_cache import BlockCache
from dcorfs.hdf5_hints import group_table_addresses, object_header_hints


def test_block_cache_coalesces_and_never_fetches_twice():
    data = bytes(range(256)) * 4096  # 1 MiB
    calls: list[tuple[int, int]] = []
    lock = threading.Lock()

    def fetch(start: int, stop: int) -> bytes:
        with lock:
            calls.append((start, stop))
        time.sleep(0.01)
        return data[start:stop]

    cache = BlockCache(max_bytes=4 << 20, block_size=64 * 1024)
    assert cache.read("k", 100, 200_000, len(data), fetch) == data[100:200_000]
    assert calls == [(0, 4 * 65536)]  # four blocks, one request
    threads = [threading.Thread(target=lambda o=o: cache.read("k", o, o + 300_000, len(data), fetch))
               for o in (250_000, 260_000, 270_000, 280_000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fetched = [b for s, e in calls for b in range(s // 65536, -(-e // 65536))]
    assert len(fetched) == len(set(fetched))  # no block twice, even under concurrency
    assert cache.read("k", len(data) - 10, len(data) + 100, len(data), fetch) == data[-10:]


def test_claimed_blocks_are_waited_for_and_served_as_they_arrive():
    data = bytes(range(256)) * 4096
    bs = 64 * 1024
    streamed: list[tuple[int, int]] = []
    fetched: list[tuple[int, int]] = []
    first_read_done = threading.Event()
    served_before_the_end: list[bool] = []

    def fetch(start: int, stop: int) -> bytes:
        fetched.append((start, stop))
        return data[start:stop]

    def fetch_into(start: int, stop: int, sink) -> None:
        streamed.append((start, stop))
        for at in range(start, stop, bs // 2):  # a slow stream, half a block at a time
            if at == stop - bs // 2:
                served_before_the_end.append(first_read_done.wait(5))
            sink(data[at:at + bs // 2])
            time.sleep(0.01)

    cache = BlockCache(max_bytes=4 << 20, block_size=bs)
    runs = cache.claim("k", bs, 4 * bs)  # as the probe claims a file's head
    filler = threading.Thread(target=cache.fill, args=("k", runs, fetch_into))
    filler.start()
    assert cache.read("k", 70_000, 100_000, len(data), fetch) == data[70_000:100_000]
    first_read_done.set()
    filler.join()
    assert cache.read("k", 70_000, 4 * bs, len(data), fetch) == data[70_000:4 * bs]
    assert streamed == [(bs, 4 * bs)] and fetched == []
    assert served_before_the_end == [True]  # the first block was not held back for the last

    def broken(start: int, stop: int, sink) -> None:
        sink(data[start:start + bs])
        raise OSError(errno.EIO, "store unreachable")

    runs = cache.claim("k2", 0, 3 * bs)
    with pytest.raises(OSError):
        cache.fill("k2", runs, broken)
    # the block that arrived is kept, the claims of the others were released
    assert cache.read("k2", 0, 3 * bs, len(data), fetch) == data[:3 * bs]
    assert fetched == [(bs, 3 * bs)]


def test_block_cache_is_bounded():
    cache = BlockCache(max_bytes=256 * 1024, block_size=64 * 1024)
    blob = b"x" * (1 << 20)
    cache.read("k", 0, len(blob), len(blob), lambda s, e: blob[s:e])
    assert cache.current_bytes <= 256 * 1024


def test_deadline_bounds_waits():
    event = threading.Event()
    started = time.monotonic()
    with deadline.deadline(0.3):
        with pytest.raises(OSError) as info:
            deadline.wait(event)
    assert info.value.errno == errno.EIO
    assert time.monotonic() - started < 2
    with deadline.deadline(5):
        assert deadline.remaining(30) <= 5
    assert deadline.remaining(30) == 30  # none outside an operation


@pytest.mark.parametrize("relpath", ["generated/calibration_beads_47_condensed.rtdc",
                                     "DCscope/naiad-capture_blood_pipeline.rtdc"])
def test_hints_name_every_symbol_table_node(relpath):
    data = (SHARED_DATA / relpath).read_bytes()
    hints = group_table_addresses(data, len(data))
    nodes = {m.start() for m in re.finditer(rb"SNOD", data)}
    assert nodes and nodes <= hints
    assert all(0 < address < len(data) for address in hints)


def test_header_hints_name_the_continuation_and_the_chunk_index(tmp_path):
    import io
    import struct

    import h5py
    import numpy as np

    path = tmp_path / "many-chunks.h5"
    with h5py.File(path, "w") as h5:
        images = h5.create_dataset("events/image", data=np.zeros((2000, 8, 8), np.uint8),
                                   chunks=(10, 8, 8), fletcher32=True)
        for i in range(40):  # attributes added later overflow into a continuation block
            images.attrs[f"note {i}"] = f"value {i}"
    data = path.read_bytes()

    class Recorder(io.BytesIO):
        def __init__(self, initial: bytes) -> None:
            super().__init__(initial)
            self.reads: list[tuple[int, int]] = []

        def readinto(self, buffer):  # type: ignore[override]
            self.reads.append((self.tell(), len(buffer)))
            return super().readinto(buffer)

    recorder = Recorder(data)
    with h5py.File(recorder, "r") as h5:
        events = h5["events"]
        header = events.id.links.get_info(b"image").u
        chunks: list[int] = []
        recorder.reads.clear()
        events["image"].id.chunk_iter(lambda info: chunks.append(info.byte_offset))
        opened = list(recorder.reads)

    hints = object_header_hints(lambda start, stop: data[start:stop], header, len(data))
    # the chunk index's leaves: B-tree nodes of level 0 listing every chunk
    key = 8 + 8 * 4
    listed = set()
    for node in hints:
        if data[node:node + 6] == b"TREE\x01\x00":
            entries = struct.unpack_from("<H", data, node + 6)[0]
            listed |= {struct.unpack_from("<Q", data, node + 24 + i * (key + 8) + key)[0]
                       for i in range(entries)}
    assert listed == set(chunks)
    # the rest is the header's continuation, which h5py reads when it opens the dataset
    continuation = [start for start in hints if data[start:start + 4] != b"TREE"]
    assert continuation and all(any(at <= start < at + n for at, n in opened)
                                for start in continuation)
    # bytes not in hand name nothing
    assert object_header_hints(lambda start, stop: None, header, len(data)) == {}


def test_round_trips_count_waits_not_requests():
    from dcorfs.server.app import round_trips

    assert round_trips([]) == 0
    parallel = [(0.0, 1.0), (0.1, 1.2), (0.2, 0.9)]
    assert round_trips(parallel) == 1
    # a second wave that starts once the first answered, then a third after that
    assert round_trips(parallel + [(1.3, 2.0), (1.3, 2.5), (2.6, 3.0)]) == 3
    # a request sent while another is still open does not wait for it
    assert round_trips([(0.0, 2.0), (1.0, 1.5), (1.6, 1.8)]) == 2


@pytest.mark.parametrize("relpath", ["generated/calibration_beads_47_condensed.rtdc",
                                     "DCscope/naiad-capture_blood_pipeline.rtdc",
                                     "dcnum/fmt-hdf5_shapein_raw-with-variable-length-logs/"
                                     "file_with_variable_length_logs.rtdc"])
def test_native_filters_decode_like_hdf5_and_reject_corruption(relpath):
    import h5py
    import hdf5plugin  # noqa: F401

    from dcorfs.chunks import ChunkDecoder
    from dcorfs.native_filters import FLETCHER32, decoder_for

    compared = 0
    with h5py.File(SHARED_DATA / relpath, "r") as h5:
        for name in h5["events"]:
            ds = h5["events"][name]
            decode = decoder_for(ds) if ds.chunks else None
            if decode is None or ds.id.get_num_chunks() == 0:
                continue
            mask, raw = ds.id.read_direct_chunk(ds.id.get_chunk_info(0).chunk_offset)
            ours = decode(raw, mask)
            reference = ChunkDecoder(ds).decode(raw, mask)
            assert ours.dtype == reference.dtype and ours.tobytes() == reference.tobytes()
            compared += 1
            dcpl = ds.id.get_create_plist()
            if FLETCHER32 in [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]:
                bad = bytearray(raw)
                bad[len(bad) // 2] ^= 0x10
                with pytest.raises(OSError) as info:
                    decode(bytes(bad), mask)
                assert info.value.errno == errno.EIO
    assert compared > 0
