"""What DCOR's background jobs make of an upload: the condensed file's basins, the preview.

DCOR condenses every RT-DC upload in a background job (ckanext-dc_serve
``jobs.py::generate_condensed_resource``) and then writes basins into the condensed
file (``_generate_condensed_resource``):

- ``DCOR dcserv`` (format ``dcor``): the resource itself through the API,
- ``DCOR direct S3`` (format ``s3``) and ``DCOR public S3 via HTTP`` (format ``http``):
  the original object on the store,

each declaring the original's features the condensed file lacks, and, for every
``file`` basin of the upload that names another resource of the same dataset (the
run identifiers match, ``_is_basin_of_dataset``), a ``dcor`` basin ``DCOR intra-dataset
for <name>`` at ``<site>/api/3/action/dcserv?id=<rid>`` with the upload's basin map
(``_get_intra_dataset_upstream_basins``).  That is how dcnum output (events without
images) gets its images from the raw file.  ``dcserv`` then declares every feature of
these basins in the condensed basin (serve.py
``get_resource_kernel_complement_condensed``).

ckanext-dc_view's job (``jobs.py::job_create_preview``) draws an overview of the first
5,000 events with matplotlib and stores it as a JPEG at ``preview/<rid[:3]>/...``;
``overview_plot`` here is its code.  A failed job leaves no preview.
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import pathlib
import shutil
import warnings
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: bump when what ``preview`` draws changes: previews are kept by the original's sha256
PREVIEW_VERSION = 1
_NO_MATPLOTLIB: list[ImportError] = []  # said once


def file_basins(ds: Any) -> list[dict]:
    """The ``file`` basins (format ``hdf5``) of an opened dclab dataset, as
    ``_get_intra_dataset_upstream_basins`` looks at them."""
    return [{"name": b.get("name"), "identifier": b.get("identifier"),
             "mapping": b.get("mapping", "same")}
            for b in ds.basins_get_dicts()
            if b.get("type") == "file" and b.get("format") == "hdf5"]


def is_basin_of(ds_runid: str | None, upstream_runid: str | None, basin: dict) -> bool:
    """dc_serve's ``_is_basin_of_dataset``: whether a resource whose run identifier is
    ``upstream_runid`` is the measurement ``basin`` (of a file with ``ds_runid``) names."""
    named = basin.get("identifier")
    if not upstream_runid or not named or upstream_runid != named:
        return False
    if basin.get("mapping", "same") == "same":
        return upstream_runid == ds_runid
    return bool(ds_runid) and ds_runid.startswith(upstream_runid)


def write_dcor_basins(base: pathlib.Path, out: pathlib.Path, original: pathlib.Path,
                      innate: list[str], site_url: str, rid: str, object_url: str,
                      upstream: list[dict]) -> None:
    """Copy the condensed file ``base`` to ``out`` with DCOR's basins written into it.

    ``innate``: the original's features (dclab's ``features_innate``); ``upstream``: the
    intra-dataset basins, each ``{"rid", "res_name", "features", "mapping"}``; the basin
    map is read from ``original``'s ``events/<mapping>``.
    """
    import h5py
    from dclab import RTDCWriter

    tmp = out.with_name(out.name + ".tmp")
    shutil.copyfile(base, tmp)
    with h5py.File(original, "r") as h5:
        maps = {u["mapping"]: h5["events"][u["mapping"]][:] for u in upstream
                if u["mapping"] != "same"}
    with h5py.File(tmp, "r") as h5:
        missing = sorted(set(innate) - set(h5.get("events", {}).keys()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with RTDCWriter(tmp, mode="append") as hw:
            hw.store_basin(basin_name="DCOR dcserv", basin_type="remote", basin_format="dcor",
                           basin_locs=[f"{site_url}/api/3/action/dcserv?id={rid}"],
                           basin_descr="Original access via DCOR API", basin_feats=missing,
                           verify=False)
            hw.store_basin(basin_name="DCOR direct S3", basin_type="remote",
                           basin_format="s3", basin_locs=[object_url],
                           basin_descr="Direct access via S3", basin_feats=missing,
                           verify=False)
            hw.store_basin(basin_name="DCOR public S3 via HTTP", basin_type="remote",
                           basin_format="http", basin_locs=[object_url],
                           basin_descr="Public resource access via HTTP",
                           basin_feats=missing, verify=False)
            for up in upstream:
                same = up["rid"] == rid
                hw.store_basin(
                    basin_name=(f"DCOR self-reference {up['res_name']}" if same
                                else f"DCOR intra-dataset for {up['res_name']}"),
                    basin_type="remote", basin_format="dcor",
                    basin_locs=[f"{site_url}/api/3/action/dcserv?id={up['rid']}"],
                    basin_descr=("Basin is the resource itself on DCOR" if same
                                 else "Upstream DCOR intra-dataset resource"),
                    basin_feats=up["features"],
                    basin_map=maps.get(up["mapping"]), verify=False)
    tmp.replace(out)


def basin_features(path: pathlib.Path) -> list[str]:
    """The features ``dcserv`` declares for a condensed file: its innate features and
    every feature its first-level basins declare (``enable_intra_dataset_basins``)."""
    import h5py

    feats: set[str] = set()
    with h5py.File(path, "r") as h5:
        feats.update(h5.get("events", {}).keys())
        for name in h5.get("basins", {}):
            try:
                spec = json.loads("".join(x.decode() if isinstance(x, bytes) else str(x)
                                          for x in h5["basins"][name][:]))
            except (ValueError, KeyError, OSError):
                continue
            feats.update(spec.get("features") or [])
    return sorted(feats)


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def make_preview(original: pathlib.Path, out: pathlib.Path) -> bool:
    """dc_view's ``job_create_preview``: the overview plot as a JPEG at 80 dpi; False
    (and no file) when it fails, as DCOR leaves none."""
    import os
    import tempfile

    os.environ.setdefault("MPLCONFIGDIR", tempfile.gettempdir() + "/dcorfs-matplotlib")
    try:
        import dclab
        import matplotlib
        matplotlib.use("agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        if not _NO_MATPLOTLIB:
            _NO_MATPLOTLIB.append(exc)
            log.warning("DCS108 no previews: %s (pip install 'dcorfs[serve]')", exc)
        return False
    tmp = out.with_name(out.name + ".tmp.jpg")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with dclab.new_dataset(original) as ds:
                fig = overview_plot(ds)
                fig.savefig(str(tmp), dpi=80)
                plt.close("all")
        tmp.replace(out)
        return True
    except Exception as exc:  # noqa: BLE001 - DCOR's job swallows every failure too
        log.info("DCS109 no preview for %s: %s: %s", original.name, type(exc).__name__, exc)
        tmp.unlink(missing_ok=True)
        return False


def overview_plot(rtdc_ds):  # noqa: C901 - dc_view's function, kept as it is there
    """ckanext-dc_view ``jobs.py::overview_plot``: scatter, KDE scatter, image with
    contour, mask and traces of the first 5,000 events."""
    import dclab
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    size = min(len(rtdc_ds), 5000)
    rtdc_ds.filter.manual[:] = False
    rtdc_ds.filter.manual[:size] = True
    rtdc_ds.apply_filter()
    ds = dclab.new_dataset(rtdc_ds)
    scatter_x, scatter_y = "area_um", "deform"
    event_index = min(len(ds) - 1, 47)
    xlabel = dclab.dfn.get_feature_label(scatter_x, rtdc_ds=ds)
    ylabel = dclab.dfn.get_feature_label(scatter_y, rtdc_ds=ds)
    plots = collections.OrderedDict()
    plots["scatter_basic"] = scatter_x in ds and scatter_y in ds
    plots["scatter_kde"] = scatter_x in ds and scatter_y in ds
    plots["image"] = "image" in ds
    plots["mask"] = "mask" in ds
    plots["trace"] = "trace" in ds
    numplots = sum(plots.values())
    if not numplots:
        return plt.figure(figsize=(4, 4))
    height_ratios = [1 if key in ("image", "mask") else 2 for key in plots if plots[key]]
    fig = plt.figure(figsize=(4, np.sum(height_ratios) * 1.5))
    gs = GridSpec(numplots, 1, height_ratios=height_ratios)
    ii = 0
    if scatter_x in ds and scatter_y in ds:
        ax1 = fig.add_subplot(gs[ii])
        ax1.set_title("Basic scatter plot")
        ii += 1
        x_start = np.percentile(ds[scatter_x], 1)
        x_end = np.percentile(ds[scatter_x], 99)
        y_start = np.percentile(ds[scatter_y], 1)
        y_end = np.percentile(ds[scatter_y], 99)
        ax1.plot(ds[scatter_x], ds[scatter_y], "o", color="k", alpha=.2, ms=1)
        ax1.set_xlabel(xlabel)
        ax1.set_ylabel(ylabel)
        ax1.set_xlim(x_start, x_end)
        ax1.set_ylim(y_start, y_end)
        ax2 = fig.add_subplot(gs[ii])
        ax2.set_title("KDE scatter plot")
        ii += 1
        sc = ax2.scatter(ds[scatter_x], ds[scatter_y],
                         c=ds.get_kde_scatter(xax=scatter_x, yax=scatter_y,
                                              kde_type="histogram"), s=3)
        plt.colorbar(sc, label="kernel density [a.u]", ax=ax2)
        ax2.set_xlabel(xlabel)
        ax2.set_ylabel(ylabel)
        ax2.set_xlim(x_start, x_end)
        ax2.set_ylim(y_start, y_end)
    if "image" in ds:
        ax3 = fig.add_subplot(gs[ii])
        ax3.set_title("Event image with contour")
        ii += 1
        ax3.imshow(ds["image"][event_index], cmap="gray")
        ax3.set_xlabel("Detector X [px]")
        ax3.set_ylabel("Detector Y [px]")
        if "contour" in ds:
            ax3.plot(ds["contour"][event_index][:, 0], ds["contour"][event_index][:, 1], c="r")
    if "mask" in ds:
        ax4 = fig.add_subplot(gs[ii])
        ax4.set_title("Event mask")
        ii += 1
        pxsize = ds.config["imaging"]["pixel size"]
        ax4.imshow(ds["mask"][event_index],
                   extent=(0, ds["mask"][0].shape[1] * pxsize,
                           0, ds["mask"][0].shape[0] * pxsize), cmap="gray")
        ax4.set_xlabel("Detector X [µm]")
        ax4.set_ylabel("Detector Y [µm]")
    if "trace" in ds:
        ax5 = fig.add_subplot(gs[ii])
        ax5.set_title("Fluorescence traces")
        ii += 1
        flsamples = ds.config["fluorescence"]["samples per event"]
        flrate = ds.config["fluorescence"]["sample rate"]
        fltime = np.arange(flsamples) / flrate * 1e6
        for name, color in (("fl1_raw", "#15BF00"), ("fl2_raw", "#BF8A00"),
                            ("fl3_raw", "#BF0C00")):
            if name in ds["trace"]:
                ax5.plot(fltime, ds["trace"][name][event_index], c=color, label=name)
        ax5.legend()
        ax5.set_xlabel("Event time [µs]")
        ax5.set_ylabel("Fluorescence [a.u.]")
        ax5.set_xlim(0, fltime[-1])
    plt.tight_layout()
    return fig
