"""Image features as TIFF stacks (``image.tif``, ``mask.tif``, ...) that ImageJ, Fiji,
napari, Octave and tifffile open: one uncompressed page per event.

The file is computed, never stored, and its size is exact before anything is read:

    header | IFD 0 | description | resolution | IFD 1 ... IFD N-1 | pixels of page 0..N-1

Every IFD but the first (which also names ImageJ's description) has the same size,
and every page's pixels the same, so any byte range maps to IFDs made on the fly
(a template patched with numpy: strip offset and next-IFD offset per page) and to
the events whose pixels it covers, read through the feature's ``NpyView``.  The
pixels of all pages follow each other, so ImageJ (told ``images=N`` in its
description) reads page k at ``first + k * page`` without walking N IFDs, and a
virtual stack fetches only the pages it shows.  Pixel types follow the data: uint8
images, masks as 0/255 uint8 (ImageJ's binary convention), floating point as
float32.  Files of 4 GiB and more are BigTIFF (64-bit offsets).
"""
from __future__ import annotations

import errno
import struct

import numpy as np

from .view import NpyView

CLASSIC_LIMIT = 2 ** 32  # offsets of classic TIFF are 32-bit

# tag numbers and value types of TIFF 6.0 (and BigTIFF's LONG8)
_SHORT, _LONG, _RATIONAL, _ASCII, _LONG8 = 3, 4, 5, 2, 16
_TYPE_SIZE = {_SHORT: 2, _LONG: 4, _RATIONAL: 8, _ASCII: 1, _LONG8: 8}
_STRIP_OFFSETS = 273


def page_dtype(dtype: np.dtype, mask: bool) -> np.dtype:
    """The pixel type of a page: uint8 for masks (0/255), float32 for floating point,
    else the data's own integer type."""
    dtype = np.dtype(dtype)
    if mask or dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype.kind == "f":
        return np.dtype("<f4")
    if dtype.kind in "ui":
        return dtype.newbyteorder("<")
    raise OSError(errno.EIO, f"no TIFF pixel type for {dtype}")


class TiffView:
    """A (N, height, width) feature as a TIFF stack, one page per event."""

    def __init__(self, source: NpyView, mask: bool = False,
                 pixel_size_um: float | None = None, classic_limit: int = CLASSIC_LIMIT) -> None:
        if len(source.shape) != 3:
            raise OSError(errno.EIO, f"a TIFF stack needs (events, height, width), "
                                     f"not {source.shape}")
        self.source = source
        self.mask = mask
        self.pages, self.height, self.width = source.shape
        self.dtype = page_dtype(source.dtype, mask)
        self.page_bytes = self.height * self.width * self.dtype.itemsize
        description = (f"ImageJ=1.53t\nimages={self.pages}\nslices={self.pages}\n"
                       + ("unit=micron\n" if pixel_size_um else "") + "loop=false\n")
        self._description = description.encode("ascii") + b"\0"
        self._resolution = _rational(1.0 / pixel_size_um) if pixel_size_um else None
        self.big = False
        self._layout()
        if self.size >= classic_limit:
            self.big = True
            self._layout()

    # -- layout ------------------------------------------------------------------------
    def _layout(self) -> None:
        big = self.big
        self._entry_size, self._count_size = (20, 8) if big else (12, 2)
        self._inline = 8 if big else 4
        header = 16 if big else 8
        first = self._ifd(0, extra_at=0, data_start=0, next_ifd=0)
        first_size = len(first[0])
        extra_at = header + first_size
        extra_size = len(first[1])
        self.ifd_start = extra_at + extra_size + (extra_size % 2)  # word aligned
        # IFD k (k >= 1) is this template with its strip offset and next IFD patched
        template, _ = self._ifd(1, extra_at=extra_at, data_start=0, next_ifd=0)
        self.ifd_size = len(template)
        ifds_end = self.ifd_start + max(self.pages - 1, 0) * self.ifd_size
        self.data_start = -(-ifds_end // 16) * 16
        self.size = self.data_start + self.pages * self.page_bytes if self.pages else header
        # what sits before IFD 1: the header, IFD 0, its description and resolution
        head = (b"II" + (struct.pack("<HHHQ", 43, 8, 0, header if self.pages else 0) if big
                         else struct.pack("<HI", 42, header if self.pages else 0)))
        if not self.pages:
            self._head = head
            return
        next_ifd = self.ifd_start if self.pages > 1 else 0
        ifd0, extra = self._ifd(0, extra_at=extra_at, data_start=self.data_start,
                                next_ifd=next_ifd)
        self._head = head + ifd0 + extra + b"\0" * (self.ifd_start - extra_at - len(extra))
        self._template = np.frombuffer(template, np.uint8)
        self._strip_at = self._field_offset(template, _STRIP_OFFSETS)

    def _entries(self, page: int, data_start: int) -> list[tuple[int, int, int, bytes]]:
        """(tag, type, count, value bytes) of a page's IFD, in tag order."""
        bits = self.dtype.itemsize * 8
        sample = {"u": 1, "i": 2, "f": 3}[self.dtype.kind]
        strip = data_start + page * self.page_bytes
        offset_type, offset_format = (_LONG8, "<Q") if self.big else (_LONG, "<I")
        entries = [(256, _LONG, 1, struct.pack("<I", self.width)),
                   (257, _LONG, 1, struct.pack("<I", self.height)),
                   (258, _SHORT, 1, struct.pack("<H", bits)),
                   (259, _SHORT, 1, struct.pack("<H", 1)),  # no compression
                   (262, _SHORT, 1, struct.pack("<H", 1))]  # 0 is black
        if page == 0:
            entries.append((270, _ASCII, len(self._description), self._description))
        entries += [(_STRIP_OFFSETS, offset_type, 1, struct.pack(offset_format, strip)),
                    (277, _SHORT, 1, struct.pack("<H", 1)),
                    (278, _LONG, 1, struct.pack("<I", self.height)),
                    (279, offset_type, 1, struct.pack(offset_format, self.page_bytes))]
        if self._resolution is not None:
            entries += [(282, _RATIONAL, 1, self._resolution),
                        (283, _RATIONAL, 1, self._resolution),
                        (296, _SHORT, 1, struct.pack("<H", 1))]  # unit: the description's
        entries.append((339, _SHORT, 1, struct.pack("<H", sample)))
        return entries

    def _ifd(self, page: int, extra_at: int, data_start: int, next_ifd: int
             ) -> tuple[bytes, bytes]:
        """A page's IFD, and the values too long to sit in it, stored at ``extra_at``:
        the resolution first (every page points to the same), page 0's description
        after it."""
        entries = self._entries(page, data_start)
        big_values = sorted((tag == 270, tag) for tag, _, _, value in entries
                            if len(value) > self._inline)
        values = {tag: value for tag, _, _, value in entries}
        where, at = {}, extra_at
        for _, tag in big_values:
            where[tag] = at
            at += len(values[tag])
        out = [struct.pack("<Q" if self.big else "<H", len(entries))]
        for tag, kind, count, value in entries:
            field = (struct.pack("<Q" if self.big else "<I", where[tag]) if tag in where
                     else value.ljust(self._inline, b"\0"))
            out.append(struct.pack("<HHQ" if self.big else "<HHI", tag, kind, count) + field)
        out.append(struct.pack("<Q" if self.big else "<I", next_ifd))
        return b"".join(out), b"".join(values[tag] for _, tag in big_values)

    def _field_offset(self, ifd: bytes, tag: int) -> int:
        """Where the value of ``tag`` sits in an IFD."""
        count = struct.unpack_from("<Q" if self.big else "<H", ifd)[0]
        for i in range(count):
            at = self._count_size + i * self._entry_size
            if struct.unpack_from("<H", ifd, at)[0] == tag:
                return at + self._entry_size - self._inline
        raise AssertionError(f"tag {tag} not in the IFD")

    # -- reading -----------------------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        out = []
        if offset < self.data_start or not self.pages:
            out.append(self._meta(offset, min(end, self.data_start if self.pages else self.size)))
        if end > self.data_start and self.pages:
            out.append(self._pixels(max(offset, self.data_start) - self.data_start,
                                    end - self.data_start))
        return b"".join(out)

    def _meta(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` before the pixels: the head, IFDs 1..N-1, padding."""
        head = len(self._head)  # == ifd_start when there are pages
        parts = [self._head[start:min(stop, head)]] if start < head else []
        ifds_end = head + max(self.pages - 1, 0) * self.ifd_size
        lo, hi = max(start, head), min(stop, ifds_end)
        if hi > lo:
            k0 = 1 + (lo - head) // self.ifd_size
            k1 = 1 + -(-(hi - head) // self.ifd_size)
            skip = lo - (head + (k0 - 1) * self.ifd_size)
            parts.append(self._ifds(k0, k1)[skip:skip + hi - lo])
        if stop > ifds_end:  # the padding before the pixels
            parts.append(b"\0" * (stop - max(start, ifds_end)))
        return b"".join(parts)

    def _ifds(self, k0: int, k1: int) -> bytes:
        """IFDs of pages ``[k0, k1)`` (k0 >= 1), from the template."""
        pages = np.arange(k0, k1, dtype=np.uint64)
        block = np.tile(self._template, (len(pages), 1))
        width = 8 if self.big else 4
        kind = "<u8" if self.big else "<u4"
        strips = (self.data_start + pages * self.page_bytes).astype(kind)
        nexts = np.where(pages + 1 < self.pages,
                         self.ifd_start + pages * self.ifd_size, 0).astype(kind)
        block[:, self._strip_at:self._strip_at + width] = strips.view(np.uint8).reshape(-1, width)
        block[:, -width:] = nexts.view(np.uint8).reshape(-1, width)
        return block.tobytes()

    def _pixels(self, start: int, stop: int) -> bytes:
        p0, p1 = start // self.page_bytes, -(-stop // self.page_bytes)
        rows = self.source.rows(p0, p1)
        if self.mask or rows.dtype.kind == "b":
            rows = np.where(rows.astype(bool), np.uint8(255), np.uint8(0))
        data = np.ascontiguousarray(rows, dtype=self.dtype).tobytes()
        skip = start - p0 * self.page_bytes
        return data[skip:skip + stop - start]


def _rational(value: float) -> bytes:
    """``value`` as a TIFF RATIONAL (two uint32), to a millionth."""
    denominator = 1_000_000
    numerator = min(int(round(value * denominator)), 2 ** 32 - 1)
    return struct.pack("<II", numerator, denominator)
