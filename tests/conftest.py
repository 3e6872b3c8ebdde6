"""Fixtures: the test corpus, real ``dcorfs serve`` processes, real FUSE mounts.

The corpus (``corpus.py``) is written by the tests; nothing beside the repository is
needed.  ``DCORFS_TEST_DATA=DIR`` adds every ``.rtdc`` file below DIR (the shared
corpus of real files) to the oracle tests, on a server of its own.
"""
from __future__ import annotations

import itertools
import logging
import os
import pathlib
import re

import pytest

import corpus
from harness import MOUNTS, Mount, Server, Servers

EXTENDED_DATA = pathlib.Path(os.environ["DCORFS_TEST_DATA"]) if os.environ.get(
    "DCORFS_TEST_DATA") else None
EXTENDED_PRIVATE_GLOB = "DCOR-Aid/*"


def pytest_configure(config) -> None:
    # mounts started without --cache-dir (the CLI tests) must not use the user's cache
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="dcorfs-test-xdg-cache-")
    config.addinivalue_line(
        "markers", "expect_warnings(*codes, maybe=()): log codes at WARNING or above that "
                   "the test provokes on purpose; each of ``codes`` must come, those in "
                   "``maybe`` may (a fault drawn at random, a race allowed)")
    config.addinivalue_line("markers", "fuse: needs FUSE and mounts (``make test-unit`` "
                                       "leaves these out)")


FUSE_FIXTURES = {"mount", "extended_mount", "fresh_mount"}


def pytest_collection_modifyitems(config, items) -> None:
    """A test that mounts is marked ``fuse``: the ones below ``tests/mount`` and any
    other that takes a mount fixture."""
    for item in items:
        if "tests/mount/" in str(item.path).replace(os.sep, "/") or \
                FUSE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.fuse)


class _Warnings(logging.Handler):
    """WARNING or worse logged in this process by the core (the FUSE-free tests)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("dcorfs.server"):  # the in-thread server's, not the core's
            return
        text = record.getMessage()
        match = re.match(r"(DC[A-Z]\d{3})\b", text)
        self.seen.append((match.group(1) if match else "no code",
                          f"{record.levelname} {record.name}: {text}"))


@pytest.fixture(autouse=True)
def no_unexpected_warnings(request):
    """Fail a test when a mount, or the core in this process, logged a WARNING (or
    worse) it did not declare, or when a code it declares never came (pyfuse3's
    ``assert_logs``)."""
    required: set[str] = set()
    allowed: set[str] = set()
    for marker in request.node.iter_markers("expect_warnings"):
        required.update(marker.args)
        allowed.update(marker.args, marker.kwargs.get("maybe", ()))
    before = {id(m): m.log_size() for m in MOUNTS}
    here = _Warnings()
    logging.getLogger("dcorfs").addHandler(here)
    try:
        yield
    finally:
        logging.getLogger("dcorfs").removeHandler(here)
    seen = list(here.seen)
    for mnt in MOUNTS:
        seen += mnt.problems_since(before.get(id(mnt), 0))
    if os.environ.get("DCORFS_RECORD_WARNINGS"):  # what each test logs, to declare it
        with open(os.environ["DCORFS_RECORD_WARNINGS"], "a", encoding="utf-8") as out:
            out.writelines(f"{request.node.nodeid}\t{code}\n" for code, _ in seen)
        return
    if getattr(request.node, "rep_call_failed", False):
        return  # the test's own failure says more
    unexpected = [line for code, line in seen if code not in allowed]
    if unexpected:
        pytest.fail("unexpected log warnings:\n" + "\n".join(unexpected[:20]), pytrace=False)
    missing = sorted(required - {code for code, _ in seen})
    if missing:
        pytest.fail(f"expected log warnings never came: {', '.join(missing)} (if they may "
                    f"not come, list them as maybe=)", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call_failed = report.failed


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
def session_servers(tmp_path_factory, cache_dir):
    """Servers that live for the session (``Servers.start``)."""
    servers = Servers(tmp_path_factory.mktemp, cache_dir)
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory, cache_dir):
    """Servers that live for a test module."""
    servers = Servers(tmp_path_factory.mktemp, cache_dir)
    yield servers
    servers.stop()


@pytest.fixture
def servers(tmp_path, cache_dir):
    """Servers that live for one test (it may stop and restart them)."""
    numbers = itertools.count()

    def workdir(name: str) -> pathlib.Path:
        folder = tmp_path / f"{name}{next(numbers)}"
        folder.mkdir()
        return folder
    made = Servers(workdir, cache_dir)
    yield made
    made.stop()


@pytest.fixture(scope="session")
def server(corpus_dir, session_servers) -> Server:
    return session_servers.start(corpus_dir, "--private", corpus.PRIVATE_GLOB,
                                 "--no-condensed", corpus.NO_CONDENSED_GLOB)


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
def extended_server(session_servers) -> Server:
    if EXTENDED_DATA is None:
        pytest.skip("DCORFS_TEST_DATA is not set")
    return session_servers.start(EXTENDED_DATA, "--private", EXTENDED_PRIVATE_GLOB,
                                 name="extended-server")


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
def demo_server(demo_dir, session_servers) -> Server:
    """Demo data, the beads dataset private, presigned URLs living only 3 s."""
    return session_servers.start(demo_dir, "--private", "beads/*", "--presign-ttl", "3",
                                 name="demo-server")


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
    # what DCOR's search finds (search/<query>/): titles, tags and descriptions
    "datasets": {
        "blood-cells": {"title": "Erythrocytes of a healthy donor",
                        "tags": ["blood", "erythrocytes"],
                        "description": "RT-DC of whole blood: erythrocytes and leukocytes"},
        "blood-private": {"title": "A private blood measurement", "tags": ["blood"],
                          "description": "Not published yet"},
        "beads-calibration": {"title": "Calibration beads", "tags": ["beads", "calibration"],
                              "description": "Polystyrene beads or cells, to calibrate"},
        "unsorted": {"title": "Unsorted upload", "description": "An empty recording"},
        "protocols": {"title": "Staining protocols", "tags": ["protocol"],
                      "description": "How the blood was stained"}},
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
def browse_server(browse_dir, session_servers) -> Server:
    return session_servers.start(browse_dir, "--private", "blood-private/*",
                                 name="browse-server")
