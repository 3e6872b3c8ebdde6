"""Fixtures: the test corpus, real ``dcorfs serve`` processes, real FUSE mounts.

The corpus (``corpus.py``) is written by the tests; nothing beside the repository is
needed.  ``DCORFS_TEST_DATA=DIR`` adds every ``.rtdc`` file below DIR (the shared
corpus of real files) to the oracle tests, on a server of its own.
"""
from __future__ import annotations

import itertools
import os
import pathlib

import pytest

import corpus
from harness import MOUNTS, Mount, Server

EXTENDED_DATA = pathlib.Path(os.environ["DCORFS_TEST_DATA"]) if os.environ.get(
    "DCORFS_TEST_DATA") else None
EXTENDED_PRIVATE_GLOB = "DCOR-Aid/*"


def pytest_configure(config) -> None:
    # mounts started without --cache-dir (the CLI tests) must not use the user's cache
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="dcorfs-test-xdg-cache-")
    config.addinivalue_line("markers", "expect_warnings(*codes): log codes at WARNING or "
                                       "above that the test provokes on purpose")


@pytest.fixture(autouse=True)
def no_unexpected_warnings(request):
    """Fail a test when a mount logged a WARNING (or worse) it did not declare."""
    allowed: set[str] = set()
    for marker in request.node.iter_markers("expect_warnings"):
        allowed.update(marker.args)
    before = {id(m): m.log_size() for m in MOUNTS}
    yield
    unexpected = []
    for mnt in MOUNTS:
        for code, line in mnt.problems_since(before.get(id(mnt), 0)):
            if code not in allowed:
                unexpected.append(line)
    if unexpected:
        pytest.fail("unexpected log warnings:\n" + "\n".join(unexpected[:20]), pytrace=False)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("corpus")
    corpus.write_corpus(folder)
    return folder


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> pathlib.Path:
    """The servers' condensed files, made once per session."""
    return tmp_path_factory.mktemp("serve-cache")


@pytest.fixture(scope="session")
def server(corpus_dir, tmp_path_factory, cache_dir):
    srv = Server(corpus_dir, tmp_path_factory.mktemp("server"), cache_dir,
                 ["--private", corpus.PRIVATE_GLOB, "--no-condensed", corpus.NO_CONDENSED_GLOB])
    yield srv
    srv.stop()


def _session_mount(server: Server, tmp_path_factory, name: str):
    work = tmp_path_factory.mktemp(name)
    mnt = Mount(server.url, work / "mnt", work, token_file=server.token_file)
    yield mnt
    assert mnt.unmount() == 0, mnt.log_text()[-3000:]


@pytest.fixture(scope="session")
def mount(server, tmp_path_factory):
    """The main mount, with the token, shared by the read-only comparison tests."""
    yield from _session_mount(server, tmp_path_factory, "mount")


@pytest.fixture(scope="session")
def extended_server(tmp_path_factory, cache_dir):
    if EXTENDED_DATA is None:
        pytest.skip("DCORFS_TEST_DATA is not set")
    srv = Server(EXTENDED_DATA, tmp_path_factory.mktemp("extended-server"), cache_dir,
                 ["--private", EXTENDED_PRIVATE_GLOB])
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def extended_mount(extended_server, tmp_path_factory):
    yield from _session_mount(extended_server, tmp_path_factory, "extended-mount")


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> pathlib.Path:
    """The demo's data at test size: 1,500 events with images in chunks of ~1 MiB."""
    from dcorfs.server.demo_data import write_demo_folder

    folder = tmp_path_factory.mktemp("demo-data")
    write_demo_folder(folder, events=1500)
    return folder


@pytest.fixture(scope="session")
def demo_server(demo_dir, tmp_path_factory, cache_dir):
    """Demo data, the beads dataset private, presigned URLs living only 3 s."""
    srv = Server(demo_dir, tmp_path_factory.mktemp("demo-server"), cache_dir,
                 ["--private", "beads/*", "--presign-ttl", "3"])
    yield srv
    srv.stop()


@pytest.fixture
def fresh_mount(tmp_path):
    """A factory for per-test mounts (cold cache, other tokens); unmounted cleanly after."""
    mounts: list[Mount] = []
    numbers = itertools.count()  # mounts may be made by several threads at once

    def make(server_url: str, token_file: pathlib.Path | None = None,
             extra: list[str] | None = None, env: dict[str, str] | None = None,
             warm: bool = True) -> Mount:
        mnt = Mount(server_url, tmp_path / f"mnt{next(numbers)}", tmp_path, token_file, extra,
                    env, warm)
        mounts.append(mnt)
        return mnt

    yield make
    exits = [(mnt, mnt.unmount()) for mnt in mounts]  # every one, before any assert
    for mnt, code in exits:
        assert code == mnt.expected_exit, mnt.log_text()[-3000:]


@pytest.fixture(scope="session")
def condensed_beads(corpus_dir, tmp_path_factory) -> pathlib.Path:
    """The beads file condensed the way DCOR condenses, with dclab."""
    import warnings

    import dclab.cli

    out = tmp_path_factory.mktemp("condensed") / "calibration_beads_condensed.rtdc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dclab.cli.condense(corpus_dir / "beads" / "calibration_beads.rtdc", out,
                           store_ancillary_features=True, store_basin_features=True)
    return out


class InThreadServer:
    """``dcorfs serve``'s server in this process: for the FUSE-free tests."""

    TOKEN = "in-thread-token"

    def __init__(self, data_dir: pathlib.Path, cache_dir: pathlib.Path) -> None:
        from dcorfs.server.app import DcorServer, ServerConfig
        from dcorfs.server.catalog import Catalog
        from dcorfs.server.link import Link

        catalog = Catalog(data_dir, cache_dir, [corpus.PRIVATE_GLOB])
        self.config = ServerConfig(catalog=catalog, tokens={self.TOKEN}, link=Link())
        self.server = DcorServer(self.config, port=0, store_port=0)
        catalog.site_url, catalog.store_base = self.config.site_url, self.config.store_base
        catalog.scan()
        self.server.start()
        self.url = self.config.api_base
        self.ids = {res.relpath: res.id for res in catalog.resources.values()}
        self.stats = self.config.stats
        self.faults = self.config.faults

    def stop(self) -> None:
        self.server.stop()
        self.config.catalog.close()


@pytest.fixture(scope="session")
def in_thread_server(corpus_dir, cache_dir):
    srv = InThreadServer(corpus_dir, cache_dir)
    yield srv
    srv.stop()


BROWSE_MANIFEST = {
    "circles": {"blood-lab": {"title": "Blood lab", "datasets": ["blood-*"]},
                "bead-lab": {"title": "Bead lab", "datasets": ["beads-*"]}},
    "collections": {"blood-study": {"title": "Blood study",
                                    "datasets": ["blood-cells", "blood-private",
                                                 "beads-calibration"]},
                    "empty-collection": {"title": "Nothing yet", "datasets": []}},
}


@pytest.fixture(scope="session")
def browse_dir(corpus_dir, tmp_path_factory) -> pathlib.Path:
    """A catalog: two circles and a third by default, two collections, datasets with
    several resources, supplementary files and a private dataset (``blood-private/*``)."""
    import json
    import shutil

    root = tmp_path_factory.mktemp("browse")
    layout = {"blood-cells": {"M001_data.rtdc": "beads/calibration_beads.rtdc",
                              "M002_scalars.rtdc": "scalars/example.rtdc"},
              "blood-private": {"M003_data.rtdc": "private/calibration_beads.rtdc"},
              "beads-calibration": {"calibration.rtdc": "deflate/deflate_images.rtdc"},
              "unsorted": {"empty.rtdc": "empty/empty_recording.rtdc"}}
    for dataset, files in layout.items():
        (root / dataset).mkdir()
        for name, source in files.items():
            shutil.copy(corpus_dir / source, root / dataset / name)
    (root / "blood-cells" / "notes.txt").write_text("measured on a Monday\n")
    (root / "blood-cells" / "settings.ini").write_text("[camera]\nshutter = 2\n")
    # the newest dataset holds no RT-DC file (the mount's warm-up must cope)
    (root / "protocols").mkdir()
    (root / "protocols" / "staining.txt").write_text("1. stain\n2. wash\n")
    (root / "catalog.json").write_text(json.dumps(BROWSE_MANIFEST))
    return root


@pytest.fixture(scope="session")
def browse_server(browse_dir, tmp_path_factory, cache_dir):
    srv = Server(browse_dir, tmp_path_factory.mktemp("browse-server"), cache_dir,
                 ["--private", "blood-private/*"])
    yield srv
    srv.stop()
