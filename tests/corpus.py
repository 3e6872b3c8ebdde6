"""The test corpus: small RT-DC files, one per edge case, written with dclab's RTDCWriter.

Nothing is read from outside the repository; ``write_corpus(folder)`` makes every file
in a few seconds.  Each file stands for files found in the wild (the shared corpus
that ``DCORFS_TEST_DATA`` adds to the oracle tests holds real ones):

| file                                | edge case                                             |
|-------------------------------------|-------------------------------------------------------|
| beads/calibration_beads.rtdc        | everything: images, masks, contours, five traces,     |
|                                     | logs, a table; Zstandard + fletcher32 (dclab's way)   |
| private/calibration_beads.rtdc      | the same in a private dataset                         |
| scalars/example.rtdc                | 5,000 events of scalars, fletcher32 without compression|
| single/one_event.rtdc               | N = 1 event, with images, masks, contours and traces  |
| deflate/deflate_images.rtdc         | deflate + fletcher32, image_bg                        |
| contiguous/uncompressed.rtdc        | contiguous datasets: no chunks, no filters            |
| empty/empty_recording.rtdc          | N = 0 events; DCOR cannot condense it: no condensed file|
| video/image_mask_lengths.rtdc       | image and mask of different lengths                   |
| logs/variable_length_logs.rtdc      | variable-length string logs; Zstandard without fletcher32|
| qpi/qpi_float32.rtdc                | float32 QPI images (qpi_pha, qpi_amp), qpi_oah, int32 contours,|
|                                     | scalar qpi_focus, qpi_dm_avg, qpi_ri_avg              |
| basins/internal_basin.rtdc          | an internal basin with a basinmap, ml_score and userdef|
| tables/compound.rtdc                | a compound table of shape (M, 1) and a plain table    |
| dcnum/M1.rtdc, dcnum/M1_dcn.rtdc    | dcnum's pair: a raw file (an image per frame) and its |
|                                     | processed events (fewer, a basin map that repeats and |
|                                     | skips frames, no image) with a `file` basin naming it |
| private/dcnum/M1*.rtdc              | the same pair in a private dataset                    |

Run ``python tests/corpus.py FOLDER`` to write it somewhere and look at it.
"""
from __future__ import annotations

import pathlib
import sys
import warnings

import h5py
import hdf5plugin
import numpy as np

ZSTD_ONLY = {"compression": hdf5plugin.Zstd(clevel=5).filter_id,
             "compression_opts": hdf5plugin.Zstd(clevel=5).filter_options}


def _meta(n_events: int, height: int = 80, width: int = 250, traces: int = 0) -> dict:
    meta = {
        "experiment": {"date": "2026-12-01", "time": "10:00:00", "run index": 1,
                       "sample": "dcorfs test corpus", "event count": n_events},
        "imaging": {"frame rate": 2000.0, "pixel size": 0.34, "roi size x": width,
                    "roi size y": height},
        "setup": {"channel width": 20.0, "chip region": "channel", "flow rate": 0.04,
                  "medium": "CellCarrier", "software version": "dcorfs corpus"},
    }
    if traces:
        meta["fluorescence"] = {"channel count": 2, "laser count": 1, "lasers installed": 1,
                                "sample rate": 312500, "samples per event": traces,
                                "signal max": 1.0, "signal min": -1.0, "trace median": 0,
                                "channel 1 name": "525/50", "channel 2 name": "593/46"}
    return meta


def _scalars(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {"area_um": rng.uniform(20, 200, n), "deform": rng.uniform(0, 0.2, n),
            "bright_avg": rng.normal(120, 5, n), "circ": rng.uniform(0.8, 1, n),
            "pos_x": rng.uniform(0, 80, n), "frame": np.arange(1, n + 1, dtype=np.uint64)}


def _images(rng: np.random.Generator, n: int, height: int, width: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Cells as dark ellipses on a noisy background: they compress like real images."""
    yy, xx = np.mgrid[0:height, 0:width]
    x = rng.uniform(0.3, 0.7, n)[:, None, None] * width
    y = rng.normal(height / 2, 2, n)[:, None, None]
    a = rng.uniform(5, 12, n)[:, None, None]
    b = rng.uniform(4, 9, n)[:, None, None]
    inside = ((xx - x) / a) ** 2 + ((yy - y) / b) ** 2 <= 1
    image = 130 + rng.normal(0, 3, inside.shape) - 40 * inside
    return np.clip(image, 0, 255).astype(np.uint8), inside


def _contours(rng: np.random.Generator, n: int, dtype=np.int64) -> list[np.ndarray]:
    return [rng.integers(0, 80, (int(rng.integers(5, 30)), 2)).astype(dtype) for _ in range(n)]


def _writer(path: pathlib.Path, **kwargs):
    from dclab.rtdc_dataset.writer import RTDCWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    return RTDCWriter(path, mode="reset", **kwargs)


def write_beads(path: pathlib.Path, seed: int = 1, n: int = 47) -> None:
    rng = np.random.default_rng(seed)
    samples = 177
    with _writer(path) as hw:
        hw.store_metadata(_meta(n, traces=samples))
        for name, values in _scalars(rng, n).items():
            hw.store_feature(name, values)
        image, mask = _images(rng, n, 80, 250)
        hw.store_feature("image", image)
        hw.store_feature("mask", mask)
        hw.store_feature("contour", _contours(rng, n))
        hw.store_feature("trace", {
            name: rng.integers(-50, 800, (n, samples)).astype(np.int16)
            for name in ("fl1_raw", "fl1_median", "fl2_raw", "fl2_median", "fl3_median")})
        hw.store_log("acquisition", ["started", "flow stable", "stopped"])
        hw.store_log("üñíçødé log", ["a line with ünïcödé", ""])
        hw.store_table("monitor", np.rec.fromarrays(
            [np.linspace(0, 1, 6), rng.normal(22, 0.1, 6)], names=["time", "temperature"]))


def write_scalars(path: pathlib.Path) -> None:
    rng = np.random.default_rng(3)
    n = 5000
    with _writer(path, compression_kwargs={"compression": None}) as hw:
        hw.store_metadata(_meta(n))
        for name, values in _scalars(rng, n).items():
            hw.store_feature(name, values)
        hw.store_feature("index", np.arange(1, n + 1, dtype=np.uint32))


DEFLATE = {"compression": "gzip", "compression_opts": 4}


def _write_deflated_images(path: pathlib.Path, seed: int, n: int, masks: int,
                           background: bool) -> None:
    """Scalars, ``n`` images and the first ``masks`` masks, deflate + fletcher32."""
    rng = np.random.default_rng(seed)
    with _writer(path, compression_kwargs=DEFLATE) as hw:
        hw.store_metadata(_meta(n))
        for name, values in _scalars(rng, n).items():
            hw.store_feature(name, values)
        image, mask = _images(rng, n, 80, 250)
        hw.store_feature("image", image)
        hw.store_feature("mask", mask[:masks])
        if background:
            hw.store_feature("image_bg", np.repeat(image[:1], n, axis=0))


def write_deflate(path: pathlib.Path) -> None:
    _write_deflated_images(path, seed=4, n=30, masks=30, background=True)


def write_contiguous(path: pathlib.Path) -> None:
    rng = np.random.default_rng(5)
    n = 25
    with _writer(path) as hw:
        hw.store_metadata(_meta(n))
    image, _ = _images(rng, n, 40, 90)
    with h5py.File(path, "a") as h5:
        events = h5.require_group("events")
        for name, values in _scalars(rng, n).items():
            events.create_dataset(name, data=values)  # no chunks, no filters
        events.create_dataset("image", data=image)
        events["image"].attrs.create("CLASS", np.bytes_("IMAGE"))


def write_empty(path: pathlib.Path) -> None:
    with _writer(path) as hw:
        hw.store_metadata(_meta(0, traces=100))
        hw.store_log("acquisition", ["started", "no events"])
    with h5py.File(path, "a") as h5:
        events = h5.require_group("events")
        for name in ("area_um", "deform", "bright_avg"):
            events.create_dataset(name, shape=(0,), dtype=np.float64, maxshape=(None,),
                                  chunks=(1000,), compression="gzip")
        for name in ("image", "mask"):
            events.create_dataset(name, shape=(0, 80, 250), dtype=np.uint8,
                                  maxshape=(None, 80, 250), chunks=(10, 80, 250))
        for name in ("fl2_median", "fl2_raw"):
            events.create_dataset(f"trace/{name}", shape=(0, 100), dtype=np.int16,
                                  maxshape=(None, 100), chunks=(10, 100))


def write_lengths(path: pathlib.Path) -> None:
    # two masks short, as in dclab's example_video.rtdc
    _write_deflated_images(path, seed=6, n=10, masks=8, background=False)


def write_vlen_logs(path: pathlib.Path) -> None:
    rng = np.random.default_rng(7)
    n = 20
    with _writer(path, compression_kwargs=ZSTD_ONLY) as hw:
        hw.store_metadata(_meta(n))
        hw.store_feature("deform", rng.uniform(0, 0.2, n))
        hw.store_feature("image", _images(rng, n, 80, 250)[0])
    with h5py.File(path, "a") as h5:
        logs = h5.require_group("logs")
        text = h5py.string_dtype("utf-8")
        logs.create_dataset("M1_para.ini", data=["[General]", "Date = 2026-12-01", "x" * 300],
                            dtype=text)
        logs.create_dataset("M1_camera.ini", data=["[Camera]", "Shutter = 2"], dtype=text)


def write_qpi(path: pathlib.Path) -> None:
    rng = np.random.default_rng(8)
    n, height, width = 10, 50, 80
    with _writer(path) as hw:
        hw.store_metadata(_meta(n, height, width))
        for name, values in _scalars(rng, n).items():
            hw.store_feature(name, values)
        _, mask = _images(rng, n, height, width)
        hw.store_feature("mask", mask)
        hw.store_feature("qpi_pha", rng.normal(0, 1, (n, height, width)).astype(np.float32))
        hw.store_feature("qpi_amp", rng.normal(1, 0.1, (n, height, width)).astype(np.float32))
        hw.store_feature("qpi_oah", rng.integers(0, 255, (n, 2 * height, 2 * width),
                                                 dtype=np.uint8))
        hw.store_feature("contour", _contours(rng, n, np.int32))
        # scalar QPI features, named like the images (DCscope's blood_rbc_qpi_data.rtdc)
        for name in ("qpi_focus", "qpi_dm_avg", "qpi_ri_avg"):
            hw.store_feature(name, rng.normal(1, 0.1, n))


def write_internal_basin(path: pathlib.Path) -> None:
    rng = np.random.default_rng(9)
    n = 12
    with _writer(path) as hw:
        hw.store_metadata(_meta(n, 32, 64))
        for name, values in _scalars(rng, n).items():
            hw.store_feature(name, values)
        image, mask = _images(rng, n, 32, 64)
        hw.store_feature("image", image)
        hw.store_feature("mask", mask)
        hw.store_feature("ml_score_abc", rng.uniform(0, 1, n).astype(np.float32))
        hw.store_feature("ml_score_r01", rng.uniform(0, 1, n).astype(np.float32))
        hw.store_feature("userdef0", rng.normal(0, 1, n))
        hw.store_basin(basin_name="background", basin_type="internal",
                       basin_format="h5dataset", basin_locs=["basin_events"],
                       basin_descr="one background image for every event",
                       basin_feats=["image_bg"], basin_map=np.zeros(n, dtype=np.int64),
                       internal_data={"image_bg": np.repeat(image[:1], 1, axis=0)})
        hw.store_log("synthetic", ["internal basin", "basinmap0 maps every event to 0"])


def write_tables(path: pathlib.Path) -> None:
    rng = np.random.default_rng(10)
    n = 10
    with _writer(path) as hw:
        hw.store_metadata(_meta(n))
        hw.store_feature("deform", rng.uniform(0, 0.2, n))
        hw.store_log("cytoshot", ["tables written as compound datasets"])
    with h5py.File(path, "a") as h5:
        tables = h5.require_group("tables")
        compound = np.zeros((7, 1), dtype=[("time", "<f8"), ("temp", "<f8"), ("flow", "<f8")])
        compound["time"][:, 0] = np.arange(7)
        compound["temp"][:, 0] = rng.normal(22, 0.1, 7)
        compound["flow"][:, 0] = np.nan  # NaN travels as null in the API's JSON
        tables.create_dataset("cytoshot_monitor", data=compound)
        tables.create_dataset("plain", data=rng.normal(0, 1, (4, 3)))


def write_dcnum_raw(path: pathlib.Path, seed: int = 11, frames: int = 40) -> None:
    """A raw measurement as dcnum reads it: one image (and background) per frame."""
    rng = np.random.default_rng(seed)
    meta = _meta(frames, 80, 250)
    meta["experiment"]["run identifier"] = f"dcorfs-corpus-raw-{seed}"
    with _writer(path) as hw:
        hw.store_metadata(meta)
        image, _ = _images(rng, frames, 80, 250)
        hw.store_feature("image", image)
        hw.store_feature("image_bg", np.repeat(image[:1], frames, axis=0))
        hw.store_feature("frame", np.arange(1, frames + 1, dtype=np.uint64))


def write_dcnum_processed(path: pathlib.Path, seed: int = 11, frames: int = 40) -> None:
    """dcnum's output for ``write_dcnum_raw``'s file beside it: events of some frames
    (two in one frame, none in others), no image, a ``file`` basin naming the raw file
    with its identifier and the basin map (``basinmap0``)."""
    rng = np.random.default_rng(seed + 100)
    raw = path.with_name(path.name.replace("_dcn", ""))
    basinmap = np.sort(np.concatenate([rng.choice(frames, 22, replace=False),
                                       rng.choice(frames, 3, replace=False)])).astype(np.int64)
    n = len(basinmap)
    meta = _meta(n, 80, 250)
    meta["experiment"]["run identifier"] = f"dcorfs-corpus-raw-{seed}_dcn-1a2b3c"
    with _writer(path) as hw:
        hw.store_metadata(meta)
        scalars = _scalars(rng, n)
        scalars["frame"] = (basinmap + 1).astype(np.uint64)  # the frame of each event
        for name, values in scalars.items():
            hw.store_feature(name, values)
        hw.store_feature("mask", _images(rng, n, 80, 250)[1])
        hw.store_basin(basin_name="raw data", basin_type="file", basin_format="hdf5",
                       basin_locs=[raw], basin_descr="dcnum's input",
                       basin_feats=["image", "image_bg"], basin_map=basinmap)


FILES = {
    "beads/calibration_beads.rtdc": write_beads,
    "private/calibration_beads.rtdc": lambda p: write_beads(p, seed=2),
    "scalars/example.rtdc": write_scalars,
    "single/one_event.rtdc": lambda p: write_beads(p, seed=9, n=1),
    "deflate/deflate_images.rtdc": write_deflate,
    "contiguous/uncompressed.rtdc": write_contiguous,
    "empty/empty_recording.rtdc": write_empty,
    "video/image_mask_lengths.rtdc": write_lengths,
    "logs/variable_length_logs.rtdc": write_vlen_logs,
    "qpi/qpi_float32.rtdc": write_qpi,
    "basins/internal_basin.rtdc": write_internal_basin,
    "tables/compound.rtdc": write_tables,
    "dcnum/M1.rtdc": write_dcnum_raw,
    "dcnum/M1_dcn.rtdc": write_dcnum_processed,
    "private/dcnum/M1.rtdc": lambda p: write_dcnum_raw(p, seed=12),
    "private/dcnum/M1_dcn.rtdc": lambda p: write_dcnum_processed(p, seed=12),
}
PRIVATE_GLOB = "private/*"
#: served as DCOR serves an upload whose condensing has not finished (or failed)
NO_CONDENSED_GLOB = "single/*"


def write_corpus(folder: pathlib.Path) -> list[str]:
    """Write every file of the corpus below ``folder``; returns their relative paths."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for relpath, write in FILES.items():
            write(pathlib.Path(folder) / relpath)
    return sorted(FILES)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/corpus.py FOLDER")
    for name in write_corpus(pathlib.Path(sys.argv[1])):
        print(name)
