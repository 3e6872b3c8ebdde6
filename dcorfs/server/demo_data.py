"""Realistic RT-DC files made locally, so the demo and the benchmark need nothing from outside.

Written with dclab's own ``RTDCWriter``, so the layout is exactly what DCOR holds:
Zstandard level 5 + fletcher32, about 1 MiB chunks of whole events, ``mask`` as
uint8 0/255, one contour dataset per event, fluorescence traces, logs and a table.
Cells are ellipses of random size and position on a noisy channel background, so
images compress like real ones (neither all zeros nor pure noise).
"""
from __future__ import annotations

import json
import logging
import pathlib
import time

import numpy as np

log = logging.getLogger(__name__)


def _ellipse_params(rng: np.random.Generator, n: int, height: int, width: int) -> dict:
    return {"x": rng.uniform(0.3, 0.7, n) * width, "y": rng.normal(height / 2, 2, n),
            "a": rng.uniform(8, 18, n), "b": rng.uniform(6, 12, n)}


def _images(rng: np.random.Generator, params: dict, sl: slice, height: int, width: int,
            background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width]
    x, y, a, b = (params[k][sl][:, None, None] for k in "xyab")
    inside = ((xx - x) / a) ** 2 + ((yy - y) / b) ** 2 <= 1
    noise = rng.normal(0, 3, inside.shape)
    img = background[None] + noise - 40 * inside
    return np.clip(img, 0, 255).astype(np.uint8), inside


def _contour(x: float, y: float, a: float, b: float) -> np.ndarray:
    """An ellipse traced with a point per pixel of its perimeter, as a real contour
    is: so contours differ in length from event to event."""
    perimeter = np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b)))
    npoints = int(np.clip(round(perimeter), 8, 1000))
    phi = np.linspace(0, 2 * np.pi, npoints, endpoint=False)
    return np.stack([x + a * np.cos(phi), y + b * np.sin(phi)], axis=1).round().astype(np.int64)


def write_demo_file(path: pathlib.Path, events: int = 2000, images: int | None = None,
                    height: int = 80, width: int = 250, seed: int = 42,
                    with_contours: bool = True, with_traces: bool = True) -> pathlib.Path:
    """Write one measurement; ``images`` limits image/mask/contour to the first events.

    Scalar features have ``events`` entries.  Image-like features are optional and
    may be fewer (the benchmark wants 300,000 scalars but only a few thousand
    images); dclab reads such files fine, trimming to the shortest feature.
    """
    import dclab
    from dclab.rtdc_dataset.writer import RTDCWriter

    rng = np.random.default_rng(seed)
    n_img = events if images is None else min(images, events)
    params = _ellipse_params(rng, events, height, width)
    area_px = np.pi * params["a"] * params["b"]
    perimeter = np.pi * (3 * (params["a"] + params["b"])
                         - np.sqrt((3 * params["a"] + params["b"]) * (params["a"] + 3 * params["b"])))
    circ = 2 * np.sqrt(np.pi * area_px) / perimeter
    pixel = 0.34
    scalars = {
        "area_um": area_px * pixel ** 2,
        "area_cvx": area_px,
        "area_msd": area_px * 0.99,
        "area_ratio": rng.normal(1.02, 0.01, events),
        "aspect": params["a"] / params["b"],
        "bright_avg": rng.normal(120, 5, events),
        "bright_sd": rng.normal(15, 2, events),
        "circ": circ,
        "deform": 1 - circ,
        "pos_x": params["x"] * pixel,
        "pos_y": params["y"] * pixel,
        "size_x": 2 * params["a"] * pixel,
        "size_y": 2 * params["b"] * pixel,
        "frame": np.cumsum(rng.integers(1, 4, events)).astype(np.uint64),
        "fl1_max": rng.gamma(2, 200, events),
        "fl1_pos": rng.uniform(0, 100, events),
        "fl1_width": rng.uniform(10, 60, events),
        "fl1_area": rng.gamma(2, 2000, events),
    }
    meta = {
        "experiment": {"date": "2026-11-30", "time": "12:00:00", "run index": 1,
                       "sample": f"dcorfs demo {seed}"},
        "imaging": {"frame rate": 3000.0, "pixel size": pixel, "roi size x": width,
                    "roi size y": height, "flash device": "LED", "flash duration": 2.0},
        "setup": {"channel width": 20.0, "chip region": "channel", "flow rate": 0.06,
                  "flow rate sample": 0.02, "flow rate sheath": 0.04, "medium": "CellCarrierB",
                  "software version": f"dcorfs demo | dclab {dclab.__version__}"},
        "online_contour": {"bin area min": 10, "bin kernel": 5, "bin threshold": -6},
    }
    trace_samples = 177
    if with_traces:
        meta["fluorescence"] = {"channel count": 1, "channels installed": 1, "laser count": 1,
                                "lasers installed": 1, "laser 1 lambda": 488.0,
                                "laser 1 power": 5.0, "sample rate": 312500,
                                "samples per event": trace_samples, "signal max": 1.0,
                                "signal min": -1.0, "trace median": 0, "bit depth": 16,
                                "channel 1 name": "525/50"}
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.rtdc")
    with RTDCWriter(tmp, mode="reset") as hw:
        hw.store_metadata(meta)
        for name, values in scalars.items():
            hw.store_feature(name, values)
        if with_traces:
            t = np.arange(trace_samples)
            for start in range(0, events, 20000):
                stop = min(events, start + 20000)
                peak = np.exp(-((t[None] - 88) / 15.0) ** 2) * scalars["fl1_max"][start:stop, None]
                raw = (peak + rng.normal(0, 5, peak.shape)).astype(np.int16)
                hw.store_feature("trace", {"fl1_raw": raw,
                                           "fl1_median": (peak + 2).astype(np.int16)})
        background = (np.full((height, width), 130.0)
                      + 10 * np.sin(np.arange(width) / 13.0)[None, :])
        batch = 520  # ten 1 MiB image chunks at 80x250
        started = time.monotonic()
        for start in range(0, n_img, batch):
            sl = slice(start, min(n_img, start + batch))
            img, inside = _images(rng, params, sl, height, width, background)
            hw.store_feature("image", img)
            hw.store_feature("mask", inside)
            if with_contours:
                hw.store_feature("contour", [
                    _contour(params["x"][i], params["y"][i], params["a"][i], params["b"][i])
                    for i in range(sl.start, sl.stop)])
        if n_img:
            hw.store_feature("image_bg", np.repeat(background.astype(np.uint8)[None], n_img, 0))
        hw.store_log("dcorfs-demo", [f"demo file written by dcorfs with seed {seed}",
                                     f"{events} events, {n_img} images",
                                     "Zstandard level 5 + fletcher32, dclab RTDCWriter"])
        monitor = np.rec.fromarrays(
            [np.linspace(0, 10, 50), rng.normal(22.5, 0.1, 50), rng.normal(0.06, 0.001, 50)],
            names=["time", "temperature", "flow_rate"])
        hw.store_table("cytoshot_monitor", monitor)
        log.debug("demo images written in %.1f s", time.monotonic() - started)
    tmp.replace(path)
    return path


DEMO_CATALOG = {
    "circles": {"demo-lab": {"title": "dcorfs demo lab", "datasets": ["blood-cells", "beads"]}},
    "collections": {"demo-study": {"title": "A demo study of blood cells and beads",
                                   "datasets": ["blood-cells", "beads"]}},
    # what DCOR's search finds (search/<query>/)
    "datasets": {"blood-cells": {"title": "Blood cells of a healthy donor",
                                 "tags": ["blood", "erythrocytes"],
                                 "description": "RT-DC of whole blood, with images, masks, "
                                                "contours and fluorescence traces"},
                 "beads": {"title": "Calibration beads", "tags": ["beads", "calibration"],
                           "description": "Polystyrene beads, to calibrate the setup"}},
}


def write_demo_folder(folder: pathlib.Path, events: int = 2000) -> list[pathlib.Path]:
    """The demo's data, a small DCOR catalog (``catalog.json``): one measurement with
    everything and its protocol (a supplementary file), and a small scalar-only one,
    as two datasets in one circle and one collection."""
    folder = pathlib.Path(folder)
    written = [write_demo_file(folder / "blood-cells" / "M001_data.rtdc", events=events, seed=1),
               write_demo_file(folder / "beads" / "M002_beads.rtdc", events=max(10, events // 4),
                               seed=2, with_contours=False, with_traces=False)]
    protocol = folder / "blood-cells" / "protocol.txt"
    protocol.write_text("Blood drawn, diluted 1:20 in CellCarrier B, measured at 0.06 ul/s.\n")
    (folder / "catalog.json").write_text(json.dumps(DEMO_CATALOG, indent=1) + "\n")
    return written + [protocol]
