"""Views of HDF5 datasets as .npy files: the fast reader, with h5py as the fallback.

A dataset is read by ``ChunkedRows`` (chunks fetched and decoded outside h5py's
lock) or ``ContiguousRows`` where its layout allows, else by h5py.  A layout kept in
the disk cache makes the view without opening the HDF5 file at all.  A chunk the fast
path cannot decode (a filter whose parameters depend on the original dataset, such
as szip) hands the dataset to h5py for good; a chunk h5py cannot decode either (a
failed fletcher32 check) fails the read with EIO.
"""
from __future__ import annotations

import errno
import logging
import warnings
from collections.abc import Callable

import h5py
import numpy as np

from ..hdf5.decoding import ChunkDecodeError
from ..hdf5.layout import Layout
from ..hdf5.readahead import DEFAULT, ReadaheadConfig
from ..hdf5.small_dataset import read_data, read_header
from ..io.remote_object import RemoteObject
from ..views.view import NpyView, RemoteBytesView
from .basin import Basin

log = logging.getLogger(__name__)


def read_rows(basin: Basin, dataset: h5py.Dataset, r0: int, r1: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dataset[r0:r1]
    except Exception as exc:  # h5py turns our OSErrors into generic ones
        raise basin.error_from(exc) from None


def _check_fixed_size(dataset: h5py.Dataset) -> None:
    if dataset.dtype.kind == "O" or dataset.shape is None:
        raise OSError(errno.EIO, f"dataset {dataset.name} has no fixed-size type")


def dataset_view(basin: Basin, dataset: h5py.Dataset, as_bool: bool,
                 keep: Callable[[Layout], None] | None = None,
                 config: ReadaheadConfig = DEFAULT) -> NpyView:
    """An open h5py dataset as .npy; ``keep`` is given its layout (``Basin.fast_reader``)."""
    _check_fixed_size(dataset)
    try:
        layout = Layout.of(dataset)
    except Exception as exc:  # h5py reports our OSErrors as generic ones
        raise basin.error_from(exc) from None
    return layout_view(basin, layout, lambda: dataset, as_bool, keep, config)


def layout_view(basin: Basin, layout: Layout, dataset: Callable[[], h5py.Dataset],
                as_bool: bool, keep: Callable[[Layout], None] | None = None,
                config: ReadaheadConfig = DEFAULT) -> NpyView:
    """A dataset as .npy from its layout: h5py (``dataset()``) is asked only where the
    fast reader cannot read."""
    dtype = np.dtype(bool) if as_bool else layout.dtype
    fast = [basin.fast_reader(layout, dataset, keep, config)]

    def rows(r0: int, r1: int) -> np.ndarray:
        reader = fast[0]
        if reader is None:
            data = read_rows(basin, dataset(), r0, r1)
        else:
            try:
                data = reader(r0, r1)
            except ChunkDecodeError as exc:
                # h5py decodes with the original dataset's own pipeline; if that fails
                # too (a corrupt chunk: fletcher32), the read fails with EIO
                data = read_rows(basin, dataset(), r0, r1)
                fast[0] = None
                log.info("DCC602 %s: %s; h5py decodes this dataset instead",
                         layout.name, exc.strerror)
        return data.astype(bool) if as_bool else data

    return NpyView(dtype, layout.shape, rows)


def small_view(basin: Basin, dataset: h5py.Dataset) -> NpyView:
    """A small dataset (a contour) read whole by h5py: one call, where the fast reader's
    planning and bookkeeping would cost more than the read (its bytes are cached by
    the metadata readahead that found it)."""
    _check_fixed_size(dataset)
    whole: list[np.ndarray] = []

    def rows(r0: int, r1: int) -> np.ndarray:
        if not whole:  # HDF5's own read, without h5py's selection machinery
            out = np.empty(dataset.shape, dtype=dataset.dtype)
            try:
                dataset.id.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
            except Exception as exc:  # h5py reports our OSErrors as generic ones
                raise basin.error_from(exc) from None
            whole.append(out)
        return whole[0][r0:r1]

    return NpyView(dataset.dtype, dataset.shape, rows)


def header_view(basin: Basin, address: int,
                dataset: Callable[[], h5py.Dataset]) -> NpyView:
    """A small dataset (a contour) read from its own bytes (``hdf5.small_dataset``):
    its object header at ``address`` parsed, its one chunk fetched and decoded, all
    without h5py, which costs more than the read; ``dataset()`` (h5py) reads what
    those bytes do not tell.  The mount's status counts both
    (``hdf5.small_datasets_parsed``, ``hdf5.small_datasets_h5py``)."""
    counts = basin.shared.counts
    found = read_header(basin.obj.read, address)
    if found is None or not found.shape:
        counts.add("small_datasets_h5py")
        return small_view(basin, dataset())
    whole: list[np.ndarray] = []

    def rows(r0: int, r1: int) -> np.ndarray:
        if not whole:
            data = read_data(basin.obj.read, found)
            if data is None:
                counts.add("small_datasets_h5py")
                data = small_view(basin, dataset()).rows(0, found.shape[0])
            else:
                counts.add("small_datasets_parsed")
            whole.append(data)
        return whole[0][r0:r1]

    return NpyView(found.dtype, found.shape, rows)


def mapped_view(basin: Basin, dataset: h5py.Dataset, basinmap: h5py.Dataset,
                 as_bool: bool) -> NpyView:
    """feature[i] = dataset[basinmap[i]]: an internal basin with a basinmap."""
    dtype = np.dtype(bool) if as_bool else dataset.dtype
    shape = (basinmap.shape[0],) + dataset.shape[1:]

    def rows(r0: int, r1: int) -> np.ndarray:
        index = np.asarray(read_rows(basin, basinmap, r0, r1), dtype=np.int64)
        unique, inverse = np.unique(index, return_inverse=True)
        try:
            data = dataset[unique][inverse] if len(unique) else np.empty((0,) + dataset.shape[1:], dataset.dtype)
        except Exception as exc:
            raise basin.error_from(exc) from None
        return data.astype(bool) if as_bool else data

    return NpyView(dtype, shape, rows)


def passthrough(obj: RemoteObject) -> RemoteBytesView:
    obj.probe()
    return RemoteBytesView(obj)
