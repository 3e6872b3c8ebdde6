"""``features.tsv``: every scalar feature of a resource as text that any tool reads.

One header row of feature names, then one row per event, columns separated by tabs.
Each value is printed so that parsing it gives back exactly the stored value (17
significant digits for float64, 9 for float32 and float16, integers as integers; NaN
and infinities as ``NaN``, ``Inf`` and ``-Inf``, which R, pandas and NumPy read), right
aligned in a field as wide as its type can need.  Every row so has the same length and
the file's size is exact before anything is read: ``stat``, ``tail`` and random access
work, and a read of any byte range maps to the rows it covers.  Those rows are read
from every column at once (``NpyView.rows``, in the pool: one round trip, not one per
column) and formatted by one ``%`` over a format string repeated per row, a loop in C,
``TUNING.tsv_block_rows`` rows at a time.
"""
from __future__ import annotations

import collections
import concurrent.futures
import errno
import itertools
import threading

import numpy as np

from ..io import deadline
from ..io.single_flight import SingleFlight
from ..tuning import TUNING
from .view import NpyView, split_at_header

#: field width and format per kind of value: wide enough for any value of the type
_FLOAT = {8: (24, "%24.17g"), 4: (15, "%15.9g"), 2: (15, "%15.9g")}
_SIGNED = {1: 4, 2: 6, 4: 11, 8: 20}
_UNSIGNED = {1: 3, 2: 5, 4: 10, 8: 20}


def field_format(dtype: np.dtype) -> str | None:
    """The printf format of one value of ``dtype``, of a fixed width; None if it is
    not a plain number."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize in _FLOAT:
        return _FLOAT[dtype.itemsize][1]
    if dtype.kind == "b":
        return "%1d"
    if dtype.kind == "i" and dtype.itemsize in _SIGNED:
        return f"%{_SIGNED[dtype.itemsize]}d"
    if dtype.kind == "u" and dtype.itemsize in _UNSIGNED:
        return f"%{_UNSIGNED[dtype.itemsize]}d"
    return None


class TsvView:
    """Scalar features (name, view) as fixed-width tab-separated text."""

    def __init__(self, columns: list[tuple[str, NpyView]],
                 pool: concurrent.futures.Executor | None = None) -> None:
        columns = [(name, view) for name, view in columns
                   if len(view.shape) == 1 and field_format(view.dtype) is not None]
        self.names = [name for name, _ in columns]
        self.views = [view for _, view in columns]
        # a thread per column: every column's chunk is asked for in the same round
        # trip (the mount's shared pool has fewer threads than a resource has features)
        self.pool = pool or concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, min(len(self.views), TUNING.tsv_column_threads)),
            thread_name_prefix="tsv")
        # features of one measurement have one length; a shorter one cuts the table
        self.nrows = min((view.shape[0] for view in self.views), default=0)
        self.header = ("\t".join(self.names) + "\n").encode() if self.names else b""
        formats = [field_format(view.dtype) for view in self.views]
        self.row_format = "\t".join(formats) + "\n"  # type: ignore[arg-type]
        self.row_bytes = len(self.row_format % tuple(0 for _ in formats)) if formats else 0
        self.size = len(self.header) + self.nrows * self.row_bytes
        self._blocks: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._flights = SingleFlight()
        self._lock = threading.Lock()

    def read(self, offset: int, size: int) -> bytes:
        head, dstart, dend = split_at_header(self.header, offset, min(offset + size, self.size))
        out = [head]
        block_bytes = TUNING.tsv_block_rows * self.row_bytes
        blocks = range(dstart // block_bytes, (dend - 1) // block_bytes + 1) if dend > dstart else ()
        for block in blocks:
            text = self._block(block)
            lo = max(dstart - block * block_bytes, 0)
            hi = min(dend - block * block_bytes, len(text))
            out.append(text[lo:hi])
        return b"".join(out)

    def _block(self, block: int) -> bytes:
        """Block ``block`` of ``TUNING.tsv_block_rows`` rows as text, formatted once: the kernel's
        reads are smaller than a block and come in parallel; the last ``TUNING.tsv_keep_blocks``
        are kept."""
        def lookup() -> bytes | None:
            with self._lock:
                text = self._blocks.get(block)
                if text is not None:
                    self._blocks.move_to_end(block)
                return text

        def produce() -> bytes:
            r0 = block * TUNING.tsv_block_rows
            text = self.text(r0, min(r0 + TUNING.tsv_block_rows, self.nrows))
            with self._lock:
                self._blocks[block] = text
                while len(self._blocks) > TUNING.tsv_keep_blocks:
                    self._blocks.popitem(last=False)
            return text

        return self._flights.do(block, lookup, produce)

    def text(self, r0: int, r1: int) -> bytes:
        """Rows ``[r0, r1)`` as text, every column's rows fetched at once."""
        if len(self.views) == 1:
            columns = [self.views[0].rows(r0, r1)]
        else:
            futures = [self.pool.submit(deadline.bind(view.rows), r0, r1)
                       for view in self.views]
            columns = [f.result(timeout=deadline.remaining(3600.0)) for f in futures]
        values = tuple(itertools.chain.from_iterable(zip(*(c.tolist() for c in columns))))
        text = ((self.row_format * (r1 - r0)) % values)
        # Python prints nan, inf and -inf; R reads NaN, Inf and -Inf (as do pandas and
        # NumPy).  Same length, and no number contains these letters otherwise.
        data = text.replace("nan", "NaN").replace("inf", "Inf").encode("ascii")
        if len(data) != (r1 - r0) * self.row_bytes:
            raise OSError(errno.EIO, f"rows {r0}-{r1} of features.tsv came out "
                                     f"{len(data)} bytes long, not {(r1 - r0) * self.row_bytes}")
        return data
