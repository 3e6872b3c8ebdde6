"""The core's parts with fake collaborators, no server and no FUSE: ``Filesystem`` over a
tree it is handed, and ``OpenResources``'s LRU and "not found" (on a stepped clock)."""
from __future__ import annotations

import errno
import itertools
import os
import threading

import pytest

from dcorfs.core.filesystem import Filesystem
from dcorfs.core.resources import OpenResources
from dcorfs.io.answers import AnswerStore
from dcorfs.views.nodes import Dir, File, Link
from dcorfs.views.view import BytesView

RID = "0123abcd-0000-4000-8000-0000000000{:02d}"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeResource:
    """A resource whose folder holds ``deform.npy`` (its id as bytes)."""

    made: list[str] = []
    missing: set[str] = set()

    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.closed = False
        self.root = Dir(lambda: {"deform.npy": File(lambda: BytesView(rid.encode()))})
        FakeResource.made.append(rid)

    def load(self) -> None:
        if self.rid in FakeResource.missing:
            raise OSError(errno.ENOENT, f"no resource {self.rid}")

    def prepare_listing(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def parts():
    FakeResource.made, FakeResource.missing = [], set()
    clock = Clock()
    resources = OpenResources(FakeResource, max_open=2,
                              not_found=AnswerStore(0.0, 30.0, clock=clock))
    return resources, clock


def names(fs: Filesystem, fh: int, start: int, count: int) -> list[str]:
    return [n for n, _ in itertools.islice(fs.readdir_plus(fh, start, False), count)]


def test_lookup_read_and_errors_over_a_handed_tree(parts):
    resources, _ = parts
    folder = {"a.txt": File(lambda: BytesView(b"hello")), "link": Link("../x")}
    fs = Filesystem({"things": Dir(lambda: folder)}, resources)
    assert fs.readdir("/") == ["things"]
    assert fs.getattr("/things/a.txt")["st_size"] == 5
    assert fs.readlink("/things/link") == "../x"
    fh = fs.open("/things/a.txt", os.O_RDONLY)
    assert fs.read(fh, 1, 100) == b"ello"
    fs.release(fh)
    for path, code in (("/things/nope", errno.ENOENT), ("/things/a.txt/x", errno.ENOTDIR),
                       ("/not-an-id", errno.ENOENT), ("/" + "x" * 256, errno.ENAMETOOLONG)):
        with pytest.raises(OSError) as info:
            fs.getattr(path)
        assert info.value.errno == code, path
    with pytest.raises(OSError) as info:
        fs.open("/things/a.txt", os.O_WRONLY)
    assert info.value.errno == errno.EROFS
    with pytest.raises(OSError) as info:
        fs.read(fh, 0, 1)  # released
    assert info.value.errno == errno.EBADF
    assert FakeResource.made == []  # no resource was asked for


def test_each_listing_pages_from_its_own_handle(parts):
    """A folder that changes between pages: each ``opendir`` goes on with what its
    first page saw; a listing from the start sees the change."""
    resources, _ = parts
    version = itertools.count()

    class Changing(Dir):
        """A browsing folder: its entries are made anew each time they are asked for."""

        @property
        def entries(self) -> dict:
            n = next(version)
            return {f"{n}-{i}": Link("x") for i in range(5)}

    fs = Filesystem({"live": Changing(dict)}, resources)
    one = fs.opendir("/live")
    first = names(fs, one, 0, 2)
    two = fs.opendir("/live")
    assert names(fs, two, 0, 5) == [f"1-{i}" for i in range(5)]
    assert first + names(fs, one, 2, 10) == [f"0-{i}" for i in range(5)]
    assert names(fs, one, 0, 1) == ["2-0"]  # from the start again: anew
    fs.releasedir(one)
    fs.releasedir(two)
    with pytest.raises(OSError) as info:
        fs.opendir("/live/nothing-here/x")
    assert info.value.errno == errno.ENOENT


def test_the_least_recently_used_resource_without_open_files_is_closed(parts):
    resources, _ = parts
    fs = Filesystem({}, resources)
    a, b, c = (RID.format(i) for i in range(3))
    fh = fs.open(f"/{a}/deform.npy", os.O_RDONLY)  # a has an open file
    fs.getattr(f"/{b}")
    first_b = resources.get(b)
    fs.getattr(f"/{c}")  # three open, two allowed: b goes, a is in use
    assert resources.ids() == sorted([a, c]) and first_b.closed
    assert fs.read(fh, 0, 100) == a.encode()
    fs.release(fh)
    fs.getattr(f"/{b}")  # opened again; now a goes
    assert resources.ids() == sorted([b, c])
    assert fs.readdir("/") == sorted([b, c])
    assert FakeResource.made == [a, b, c, b]


def test_not_found_is_remembered_for_its_time_and_errors_never(parts):
    resources, clock = parts
    gone = RID.format(9)
    FakeResource.missing.add(gone)
    for _ in range(3):
        with pytest.raises(FileNotFoundError):
            resources.get(gone)
    assert FakeResource.made == [gone]  # asked once
    clock.now += 30
    with pytest.raises(FileNotFoundError):
        resources.get(gone)
    assert FakeResource.made == [gone, gone]


def test_a_resource_is_loaded_once_however_many_ask(parts):
    resources, _ = parts
    rid = RID.format(5)
    gate = threading.Event()
    original = FakeResource.load

    def slow(self):
        gate.wait(5)
        original(self)
    FakeResource.load = slow
    try:
        threads = [threading.Thread(target=resources.get, args=(rid,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        gate.set()
        for thread in threads:
            thread.join(10)
    finally:
        FakeResource.load = original
    assert FakeResource.made == [rid]
