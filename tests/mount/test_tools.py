"""``features.tsv`` and the TIFF stacks through a real mount, read by the tools people
use (R, awk, Octave, ImageJ, pandas, NumPy, tifffile), compared with dclab exactly.

A tool that is not installed skips its test, unless ``DCORFS_REQUIRE_TOOLS=1`` (set by
``.ci/run``, which installs them all): then it fails.
"""
from __future__ import annotations

import io
import os
import pathlib
import shutil
import subprocess
import warnings

import dclab
import numpy as np
import pytest

RELPATH = "beads/calibration_beads.rtdc"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("DCORFS_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{name} is not installed, and DCORFS_REQUIRE_TOOLS=1")
        pytest.skip(f"{name} is not installed")
    return path


def run(argv: list[str], timeout: float = 240) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dclab_values(server):
    """Every scalar feature and the images, as dclab's own DCOR client reads them."""
    rid = server.ids[RELPATH]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dclab.new_dataset(rid, host=server.url.split("//")[1], use_ssl=False) as ds:
            scalars = {f: np.asarray(ds[f]) for f in ds.features_basin
                       if dclab.definitions.scalar_feature_exists(f)}
            images = np.asarray(ds["image"][:])
    return scalars, images


def same_values(name: str, got: np.ndarray, expected: np.ndarray) -> None:
    """Equal to the bit once cast to the feature's type; NaN where dclab has NaN."""
    got = np.asarray(got, dtype=np.float64)
    if expected.dtype.kind == "f":
        got = got.astype(expected.dtype)
        nan = np.isnan(expected)
        assert np.array_equal(np.isnan(got), nan), name
        assert got[~nan].tobytes() == expected[~nan].tobytes(), name
    else:
        assert np.array_equal(got, expected.astype(np.float64)), name


def tsv_path(server, mount):
    return mount.path / server.ids[RELPATH] / "features.tsv"


@pytest.mark.timeout(300)
def test_r_reads_features_tsv_exactly(server, mount, dclab_values):
    rscript = tool("Rscript")
    path = tsv_path(server, mount)
    out = run([rscript, "-e", f"""
        d <- read.delim({str(path)!r}, check.names = FALSE)
        for (n in names(d)) cat(n, sprintf("%a", as.numeric(d[[n]])), "\\n", sep = "\\t")
    """])
    scalars, _ = dclab_values
    columns = {}
    for line in out.splitlines():
        name, *values = line.rstrip("\t").split("\t")
        columns[name] = np.array([float.fromhex(v) if v.startswith(("0x", "-0x")) else float(v)
                                  for v in values])
    assert set(columns) == set(scalars)
    for name, values in columns.items():
        same_values(name, values, scalars[name])


@pytest.mark.timeout(300)
def test_numpy_pandas_and_awk_read_features_tsv(server, mount, dclab_values):
    scalars, _ = dclab_values
    path = tsv_path(server, mount)
    text = path.read_bytes()
    assert len(text) == path.stat().st_size
    names = text.split(b"\n", 1)[0].decode().split("\t")
    table = np.loadtxt(io.BytesIO(text), delimiter="\t", skiprows=1, ndmin=2)
    for i, name in enumerate(names):
        same_values(name, table[:, i], scalars[name])
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_csv(path, sep="\t")
    assert list(frame.columns) == names
    for name in names:
        same_values(name, frame[name].to_numpy(), scalars[name])
    awk = tool("awk")
    column = names.index("deform") + 1
    total = run([awk, "-F", "\t", f"NR > 1 {{ s += ${column} }} END {{ printf \"%.17g\\n\", s }}",
                 str(path)])
    expected = 0.0
    for value in scalars["deform"]:
        expected += float(value)
    assert float(total) == expected


@pytest.mark.timeout(300)
def test_tiff_stacks_equal_dclab_in_tifffile_and_octave(server, mount, dclab_values):
    tifffile = pytest.importorskip("tifffile")
    _, images = dclab_values
    path = mount.path / server.ids[RELPATH] / "image.tif"
    assert path.stat().st_size == len(path.read_bytes())
    assert np.array_equal(tifffile.imread(path), images)
    octave = tool("octave")
    k = 3
    out = run([octave, "--no-gui", "--no-window-system", "--quiet", "--eval",
               f"a = imread('{path}', 'Index', {k + 1}); disp(size(a)); "
               f"fprintf('%d\\n', a');"])
    lines = out.split()
    height, width = int(lines[0]), int(lines[1])
    page = np.array([int(v) for v in lines[2:]], dtype=np.uint8).reshape(height, width)
    assert np.array_equal(page, images[k])


IMAGEJ_JAR = pathlib.Path("/usr/share/java/ij.jar")  # Debian's imagej package


@pytest.mark.timeout(300)
def test_imagej_opens_image_tif(server, mount, dclab_values, tmp_path):
    java = tool("java")
    xvfb = tool("xvfb-run")  # ImageJ's macros need a display, even in batch mode
    if not IMAGEJ_JAR.exists():
        tool("imagej")  # skips, or fails when the tools are required
    _, images = dclab_values
    path = mount.path / server.ids[RELPATH] / "image.tif"
    k = 5
    out = tmp_path / "page.txt"
    macro = tmp_path / "page.ijm"
    macro.write_text(f'open("{path}");\nsetSlice({k + 1});\n'
                     f'run("Duplicate...", "title=page");\n'
                     f'saveAs("Text Image", "{out}");\n')
    run([xvfb, "-a", java, "-cp", str(IMAGEJ_JAR), "ij.ImageJ", "-batch", str(macro)],
        timeout=240)
    page = np.loadtxt(out, delimiter="\t", dtype=np.int64)
    assert page.shape == images[k].shape and np.array_equal(page, images[k])


@pytest.mark.parametrize("relpath", ["empty/empty_recording.rtdc", "single/one_event.rtdc",
                                     RELPATH])
def test_sizes_are_exact_before_reading(server, mount, relpath):
    folder = mount.path / server.ids[relpath]
    for name in ("features.tsv", "image.tif", "mask.tif"):
        size = (folder / name).stat().st_size
        assert len((folder / name).read_bytes()) == size, name
