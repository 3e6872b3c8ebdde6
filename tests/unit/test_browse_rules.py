"""The browse folders' rules, without a server: names, timestamps, listings kept and
served stale, and what a dataset folder shows when names collide."""
from __future__ import annotations

import concurrent.futures
import errno
import functools

import pytest

from dcorfs.dcor.browse import Browser, ckan_time, is_ckan_name, listing_key
from dcorfs.dcor.shared import Shared
from dcorfs.io.answers import AnswerStore
from dcorfs.io.disk_cache import DiskCache
from dcorfs.views.nodes import File, Link

RID = "0123abcd-0000-4000-8000-0000000000{:02d}"


def test_ckan_names():
    for name in ("ab", "blood-study_2", "x" * 100, "0-9"):
        assert is_ckan_name(name)
    for name in ("a", "x" * 101, "Blood", "a b", ".Trash", "desktop.ini", "ü-name", ""):
        assert not is_ckan_name(name)


def test_ckan_times_are_utc():
    assert ckan_time("1970-01-01T00:00:10.500000") == 10.5
    assert ckan_time("2026-01-01T00:00:00") == 1767225600.0
    assert ckan_time("") is None and ckan_time(None) is None and ckan_time("soon") is None


class Clock:
    """A clock the test steps: kept answers age without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store(ttl: float, **kwargs) -> tuple[AnswerStore, Clock, list]:
    """A store on a stepped clock whose revalidations wait in a list until run."""
    clock, later = Clock(), []
    return AnswerStore(ttl, clock=clock, run=later.append, **kwargs), clock, later


@pytest.mark.expect_warnings("DCB701")
def test_listings_are_kept_revalidated_in_the_background_and_served_stale():
    listings, clock, later = store(ttl=10)
    calls = []

    def fetch():
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.EIO, "DCOR is down")
        return len(calls)

    assert listings.get(("k",), fetch) == 1
    clock.now += 9
    assert listings.get(("k",), fetch) == 1 and len(calls) == 1 and not later  # kept
    clock.now += 1
    assert listings.get(("k",), fetch) == 1  # served at once, asked again behind it
    assert listings.get(("k",), fetch) == 1 and len(later) == 1  # one revalidation at a time
    later.pop()()
    assert len(calls) == 2 and listings.get(("k",), fetch) == 2  # the new answer
    clock.now += 10
    assert listings.get(("k",), fetch) == 2
    later.pop()()
    assert len(calls) == 3
    assert listings.get(("k",), fetch) == 2  # DCOR failed: the old answer, as it was


def test_listings_on_disk_serve_a_new_instance_with_their_age(tmp_path):
    disk = DiskCache(tmp_path / "cache", max_bytes=1 << 20)
    public = functools.partial(listing_key, "public")
    AnswerStore(60, disk=disk, disk_key=public).get(("datasets",), lambda: {"a": None})
    fresh, clock, later = store(ttl=60, disk=disk, disk_key=public)  # a remount, maybe offline
    down = lambda: (_ for _ in ()).throw(OSError(errno.EIO, "down"))  # noqa: E731
    assert fresh.get(("datasets",), down) == {"a": None}
    assert fresh.kept(("datasets",))[1] < 60 and not later  # young: not asked again
    other_token = AnswerStore(60, disk=disk, disk_key=functools.partial(listing_key, "0f" * 16))
    with pytest.raises(OSError):  # a token's listings are its own
        other_token.get(("datasets",), down)


def test_errors_without_a_kept_answer_and_refusals_are_not_hidden():
    listings, clock, later = store(ttl=0.0)
    with pytest.raises(OSError) as info:
        listings.get(("a",), lambda: (_ for _ in ()).throw(OSError(errno.EIO, "down")))
    assert info.value.errno == errno.EIO
    assert not listings.missing(("a",))  # errors are never remembered
    listings.get(("b",), lambda: 1)

    def refuse():
        raise OSError(errno.EACCES, "no")

    assert listings.get(("b",), refuse) == 1  # served while asked again
    later.pop()()
    with pytest.raises(OSError) as info:  # a refusal is an answer, not an outage
        listings.get(("b",), refuse)
    assert info.value.errno == errno.EACCES


def test_not_found_is_remembered():
    listings, clock, later = store(ttl=60, negative_ttl=30)
    calls = []

    def missing():
        calls.append(1)
        raise OSError(errno.ENOENT, "no such dataset")

    for _ in range(3):
        with pytest.raises(FileNotFoundError):
            listings.get(("package", "x"), missing)
    assert len(calls) == 1
    clock.now += 29.9
    assert listings.missing(("package", "x"))
    clock.now += 0.1
    with pytest.raises(FileNotFoundError):
        listings.get(("package", "x"), missing)
    assert len(calls) == 2


def test_ask_checks_each_time_and_falls_back_only_when_unreachable():
    answers, clock, later = store(ttl=60)
    assert answers.ask(("basins",), lambda: [1]) == [1]
    assert answers.ask(("basins",), lambda: [2]) == [2]  # asked again, kept anew
    assert answers.ask(("basins",), lambda: (_ for _ in ()).throw(OSError(errno.EIO, "x"))) == [2]
    with pytest.raises(PermissionError):  # a refusal is never hidden
        answers.ask(("basins",), lambda: (_ for _ in ()).throw(OSError(errno.EACCES, "no")))


class FakeApi:
    def __init__(self, package: dict) -> None:
        self.package = package
        self.calls: list[str] = []

    def call(self, action: str, **params):
        self.calls.append(action)
        return self.package


def browser_for(package: dict) -> tuple[Browser, FakeApi]:
    api = FakeApi(package)
    pool = concurrent.futures.ThreadPoolExecutor(2)
    shared = Shared(api=api, cache=None, fetcher=None, background=None, pool=pool,  # type: ignore[arg-type]
                    decoded=None, decoders=None)  # type: ignore[arg-type]
    return Browser(shared, AnswerStore(60), private=False), api


def resource(i: int, name: str, size: int = 10) -> dict:
    return {"id": RID.format(i), "name": name, "size": size,
            "created": "2026-01-01T00:00:00.000000"}


def test_a_dataset_folder_shows_files_links_and_the_package_dict():
    browser, api = browser_for({"name": "ds", "metadata_modified": "2026-02-01T00:00:00",
                                "resources": [resource(1, "M1.rtdc", 1234),
                                              resource(2, "notes.txt")]})
    entries = browser._dataset_entries("ds")
    assert sorted(entries) == ["M1", "M1.rtdc", "dataset.json", "notes.txt"]
    assert isinstance(entries["M1"], Link) and entries["M1"].target == f"../../{RID.format(1)}"
    assert isinstance(entries["M1.rtdc"], File) and entries["M1.rtdc"].view.size == 1234
    assert entries["M1.rtdc"].mtime == 1767225600.0
    assert api.calls == ["package_show"]  # sizes from the dict: nothing fetched


def test_resource_names_win_over_dataset_json_and_stems():
    browser, _ = browser_for({"name": "ds", "resources": [
        resource(1, "dataset.json"),  # hides the package dict
        resource(2, "a.csv"),
        resource(3, "a.csv.rtdc"),  # its stem is taken by a.csv: no link
        resource(4, "b.rtdc"),
        resource(5, "b.rtdc"),  # a second resource of the same name is not shown
    ]})
    entries = browser._dataset_entries("ds")
    assert sorted(entries) == ["a.csv", "a.csv.rtdc", "b", "b.rtdc", "dataset.json"]
    assert isinstance(entries["dataset.json"], File) and entries["dataset.json"].view.size == 10
    assert entries["b"].target == f"../../{RID.format(4)}"
