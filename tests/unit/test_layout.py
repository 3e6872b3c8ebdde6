"""A dataset's layout, kept as JSON, comes back whole and reads the same rows as h5py."""
from __future__ import annotations

import json

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from dcorfs.hdf5.layout import ChunkIndex, Layout, read_chunk_index
from dcorfs.hdf5.native_filters import decoder_for


@pytest.mark.parametrize("relpath", ["beads/calibration_beads.rtdc",
                                     "contiguous/uncompressed.rtdc"])
def test_a_kept_layout_reads_what_h5py_reads(corpus_dir, relpath):
    path = corpus_dir / relpath
    raw = path.read_bytes()
    checked = 0
    with h5py.File(path, "r") as h5:
        for name, dataset in h5["events"].items():
            if not isinstance(dataset, h5py.Dataset) or not dataset.shape[0]:
                continue
            layout = Layout.of(dataset)
            if layout.rows_whole:
                layout.chunk_entries = read_chunk_index(dataset)
            kept = Layout.from_json(json.loads(json.dumps(layout.to_json())))
            assert kept == layout
            expected = dataset[:]
            if kept.plain:
                start = kept.offset
                got = np.frombuffer(raw[start:start + expected.nbytes], kept.dtype)
            else:
                decode = decoder_for(kept)
                assert decode is not None, name  # dclab's Zstandard pipeline
                index = ChunkIndex(kept)  # no loader: everything comes from the layout
                parts = [decode(raw[o:o + s], m) for _, (o, s, m) in sorted(index.entries.items())]
                got = np.concatenate(parts)[:kept.shape[0]]
            assert got.reshape(expected.shape).tobytes() == expected.tobytes(), name
            checked += 1
    assert checked >= 3


def test_a_malformed_kept_layout_is_refused():
    with pytest.raises(ValueError):
        Layout.from_json({"name": "/events/x", "dtype": "<f8"})
    with pytest.raises(ValueError):
        Layout.from_json({"name": "x", "dtype": "<f8", "shape": [2], "chunks": None,
                          "filters": [], "offset": None, "entries": [[0, 1]]})
