"""Where an HDF5 file's next structures live, guessed from bytes in hand."""
from __future__ import annotations

import re

import pytest

from dcorfs.hdf5.hints import group_table_addresses, object_header_hints


@pytest.mark.parametrize("relpath", ["beads/calibration_beads.rtdc", "condensed",
                                     "basins/internal_basin.rtdc"])
def test_hints_name_every_symbol_table_node(relpath, corpus_dir, condensed_beads):
    data = (condensed_beads if relpath == "condensed" else corpus_dir / relpath).read_bytes()
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


def test_header_hints_name_the_chunk_index_root_not_in_hand(tmp_path):
    """h5py reads a dataset's chunk index root right after its header: when the root is
    not in hand yet, it is named, so that it is fetched in the header's wave."""
    import h5py
    import numpy as np

    path = tmp_path / "one.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("events/deform", data=np.arange(1000.0), chunks=(100,))
    data = path.read_bytes()
    with h5py.File(path, "r") as h5:
        events = h5["events"]
        header = events.id.links.get_info(b"deform").u
    roots = [m.start() for m in re.finditer(rb"TREE\x01", data)]
    assert len(roots) == 1  # ten chunks: the root lists them all
    root = roots[0]

    def header_only(start: int, stop: int) -> bytes | None:
        return data[start:stop] if header <= start and stop <= header + 512 else None

    hints = object_header_hints(header_only, header, len(data))
    assert root in hints and hints[root] >= 24 + 10 * 32
    # with the root in hand, it is not named again
    assert root not in object_header_hints(lambda s, e: data[s:e], header, len(data))


def test_a_small_dataset_written_whole_has_its_chunks_named_with_its_index(tmp_path):
    """h5py writes a dataset's index root, then its chunks: for a dataset of at most
    ``between`` bytes before compression, the root comes with that many bytes after
    it, which hold every chunk; a larger one gets its root alone."""
    import h5py
    import numpy as np

    path = tmp_path / "whole.h5"
    with h5py.File(path, "w") as h5:
        ds = h5.create_dataset("deform", shape=(50_000,), dtype="f8", chunks=(5_000,),
                               compression="gzip")
        ds[:] = np.random.default_rng(1).random(50_000)
    data = path.read_bytes()
    with h5py.File(path, "r") as h5:
        header = h5.id.links.get_info(b"deform").u
        chunks: list[tuple[int, int]] = []
        h5["deform"].id.chunk_iter(lambda info: chunks.append((info.byte_offset, info.size)))
    peek = lambda start, stop: data[start:stop] if stop <= header + 512 else None  # noqa: E731
    (root, length), = object_header_hints(peek, header, len(data), between=400_000).items()
    assert data[root:root + 4] == b"TREE"
    assert all(root < at and at + size <= root + length for at, size in chunks)
    (alone, node), = object_header_hints(peek, header, len(data), between=399_999).items()
    assert alone == root and node <= min(at for at, _ in chunks) - root
