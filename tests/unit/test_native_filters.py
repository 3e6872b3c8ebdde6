"""dclab's pipeline decoded outside the GIL equals HDF5's own decoding, and checks fletcher32."""
from __future__ import annotations

import errno
import os

import h5py
import hdf5plugin  # noqa: F401
import pytest

from dcorfs.hdf5 import native_filters
from dcorfs.hdf5.decoding import ChunkDecoder
from dcorfs.hdf5.layout import Layout
from dcorfs.hdf5.native_filters import FLETCHER32, decoder_for


def test_native_decoder_is_available():
    """Without it every chunk decode holds the GIL and stalls the daemon's threads; CI
    sets DCORFS_REQUIRE_NATIVE=1 so that a missing library symbol fails the build."""
    found = native_filters.availability()
    if os.environ.get("DCORFS_REQUIRE_NATIVE") == "1":
        assert found == {"native": True, "problems": []}
    elif not found["native"]:
        pytest.skip(f"the GIL-free decoder is not available here: {found['problems']}")


@pytest.mark.parametrize("relpath", ["condensed", "beads/calibration_beads.rtdc",
                                     "logs/variable_length_logs.rtdc", "scalars/example.rtdc"])
def test_native_filters_decode_like_hdf5_and_reject_corruption(relpath, corpus_dir,
                                                               condensed_beads):
    compared = 0
    path = condensed_beads if relpath == "condensed" else corpus_dir / relpath
    with h5py.File(path, "r") as h5:
        for name in h5["events"]:
            ds = h5["events"][name]
            if not isinstance(ds, h5py.Dataset):
                continue  # contour/ and trace/ hold datasets of their own
            decode = decoder_for(Layout.of(ds)) if ds.chunks else None
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
