"""TIFF stacks on their own: tifffile reads every page, sizes are exact, pages lazy."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from harness import array_view

from dcorfs.views.tiff import TiffView


def read_in_pieces(view: TiffView, piece: int = 4093) -> bytes:
    return b"".join(view.read(offset, piece) for offset in range(0, view.size, piece))


CASES = {  # name: (array, mask, expected pixels)
    "image": lambda a: (a.astype(np.uint8), False, a.astype(np.uint8)),
    "mask": lambda a: (a > 120, True, np.where(a > 120, 255, 0).astype(np.uint8)),
    "qpi_pha": lambda a: (a.astype(np.float64) / 7, False, (a / 7).astype(np.float32)),
    "uint16": lambda a: (a.astype(np.uint16) * 200, False, a.astype(np.uint16) * 200),
}


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("events", [1, 9])
def test_tifffile_reads_every_page(kind, events, big):
    rng = np.random.default_rng(events)
    array, mask, expected = CASES[kind](rng.integers(0, 255, (events, 12, 17)))
    view = TiffView(array_view(array), mask=mask, pixel_size_um=0.34,
                    classic_limit=0 if big else 2 ** 32)
    data = read_in_pieces(view)
    assert len(data) == view.size
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        assert tif.is_bigtiff == big and len(tif.pages) == events
        for k, page in enumerate(tif.pages):
            pixels = page.asarray()
            assert pixels.dtype == expected.dtype and np.array_equal(pixels, expected[k]), k
        first = tif.pages[0]
        assert first.tags["ImageWidth"].value == 17 and first.tags["ImageLength"].value == 12
        numerator, denominator = first.tags["XResolution"].value
        assert abs(numerator / denominator - 1 / 0.34) < 1e-5
        assert tif.is_imagej and tif.imagej_metadata["images"] == events
        assert tif.imagej_metadata["unit"] == "micron"


def test_no_events_is_a_header_only():
    view = TiffView(array_view(np.zeros((0, 4, 4), np.uint8)))
    assert view.size == 8 and view.read(0, 100) == b"II*\x00\x00\x00\x00\x00"


def test_the_size_needs_no_pixels_and_a_page_reads_only_its_own():
    asked: list = []
    array = np.random.default_rng(1).integers(0, 255, (500, 30, 40)).astype(np.uint8)
    view = TiffView(array_view(array, asked))
    assert view.size == view.data_start + 500 * 30 * 40 and asked == []
    whole = read_in_pieces(view, 65536)
    asked.clear()
    start = view.data_start + 321 * view.page_bytes
    assert view.read(start, view.page_bytes) == array[321].tobytes()
    assert asked == [(321, 322)]
    for offset in np.random.default_rng(2).integers(0, view.size, 30):
        assert view.read(int(offset), 1000) == whole[offset:offset + 1000]
    asked.clear()
    view.read(0, view.data_start)  # every IFD: no pixel
    assert asked == []


def test_not_an_image_stack_is_refused():
    with pytest.raises(OSError):
        TiffView(array_view(np.zeros(10)))
