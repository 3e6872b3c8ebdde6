"""The disk cache on its own: integrity, size, sharing; and behind the block cache."""
from __future__ import annotations

import logging
import multiprocessing
import os
import pathlib
import time

import pytest

from dcorfs.io.block_cache import BlockCache
from dcorfs.io.disk_cache import DiskCache

BS = 64 * 1024


def block(i: int, size: int = BS) -> bytes:
    return bytes([i % 251]) * size


def test_blocks_and_sizes_come_back_from_a_new_instance(tmp_path):
    disk = DiskCache(tmp_path / "c", max_bytes=1 << 30)
    disk.put("k", 3, block(3))
    disk.put("k", 4, block(4, 100))
    disk.set_object("k", 4 * BS + 100, None)
    again = DiskCache(tmp_path / "c", max_bytes=1 << 30)  # another mount, or a restart
    assert again.get_run("k", 0, 10) == {3: block(3), 4: block(4, 100)}
    assert again.object_info("k") == (4 * BS + 100, None) and again.object_info("other") is None
    assert oct((tmp_path / "c").stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
@pytest.mark.expect_warnings("DCD801")
def test_a_damaged_block_is_dropped_never_served(tmp_path, damage, caplog):
    disk = DiskCache(tmp_path, max_bytes=1 << 30)
    disk.put("k", 0, block(0))
    disk.put("k", 1, block(1))
    path = disk._path("k", 1)
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[1000] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "truncate":  # a torn write, or a full disk
        path.write_bytes(path.read_bytes()[:BS // 2])
    else:
        path.unlink()
    with caplog.at_level(logging.WARNING):
        assert disk.get_run("k", 0, 2) == {0: block(0)}
    assert "DCD801" in caplog.text
    assert disk.get("k", 1) is None and disk.bad == 1  # dropped from the index too


def test_least_recently_used_blocks_go_first(tmp_path):
    disk = DiskCache(tmp_path, max_bytes=4 * BS)
    for i in range(4):
        disk.put("k", i, block(i))
    disk._touched.clear()
    assert disk.get("k", 0) == block(0)  # used: now the newest
    for i in range(4, 7):
        disk.put("k", i, block(i))
    kept = disk.get_run("k", 0, 8)
    assert sorted(kept) == [0, 4, 5, 6]  # 1, 2 and 3 were the least recently used


def test_the_filesystem_keeps_its_free_share_before_each_write(tmp_path):
    """A filesystem with room for three blocks above its floor: each write evicts the
    least recently used first, so the cache never takes the floor (not after a
    failure, not every so many writes)."""
    class Tight(DiskCache):
        def free_bytes_needed(self, extra: int = 0) -> int:
            return max(0, self._stored + extra - 3 * BS)

    disk = Tight(tmp_path, max_bytes=1 << 30)
    for i in range(6):
        disk.put("k", i, block(i))
        assert disk._stored <= 3 * BS, i
    assert disk.get("k", 5) == block(5) and disk.get("k", 0) is None  # the oldest went


@pytest.mark.expect_warnings("DCD814")
def test_a_full_disk_evicts_retries_then_pauses_writing(tmp_path, monkeypatch):
    """ENOSPC from a block file: room is made and the write retried once; when that
    fails too, writing stops for a while (DCD814) and reads go on."""
    import errno as errnos

    disk = DiskCache(tmp_path, max_bytes=1 << 30)
    disk.put("k", 0, block(0))
    real_open, fails = open, []

    def full_open(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).endswith(".tmp") and len(fails) < 2:
            fails.append(path)
            raise OSError(errnos.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_open)
    disk.put("k", 1, block(1))  # fails, makes room, fails again: paused
    assert len(fails) == 2 and disk.get("k", 1) is None
    disk.put("k", 2, block(2))  # paused: not even tried
    assert len(fails) == 2 and disk.get("k", 2) is None
    assert not list((tmp_path / "blocks").glob("*/*.tmp"))  # nothing left behind
    disk._paused_until = 0.0
    disk.put("k", 3, block(3))
    assert disk.get("k", 3) == block(3)


def _writer(folder: str, worker: int) -> None:
    disk = DiskCache(pathlib.Path(folder), max_bytes=1 << 30)
    for i in range(40):  # a block's bytes are the same whoever fetched them
        index = (i * 7 + worker) % 40
        disk.put("shared", index, block(index))


def test_processes_share_one_folder(tmp_path):
    procs = [multiprocessing.get_context("spawn").Process(target=_writer,
                                                          args=(str(tmp_path), w))
             for w in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    disk = DiskCache(tmp_path, max_bytes=1 << 30)
    found = disk.get_run("shared", 0, 40)
    assert len(found) == 40 and disk.bad == 0
    for index, data in found.items():
        assert data == block(index)
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary file left behind


def test_the_block_cache_reads_through_the_disk(tmp_path):
    data = os.urandom(10 * BS + 123)
    calls: list[tuple[int, int]] = []

    def fetch(start: int, stop: int) -> bytes:
        calls.append((start, stop))
        return data[start:stop]

    first = BlockCache(1 << 20, BS, disk=DiskCache(tmp_path, 1 << 30))
    assert first.read("obj", 5, len(data), len(data), fetch) == data[5:]
    first.close()  # the background writer has stored every block
    calls.clear()
    second = BlockCache(1 << 20, BS, disk=DiskCache(tmp_path, 1 << 30))  # after a restart
    assert second.read("obj", 0, len(data), len(data), fetch) == data
    assert calls == []
    # a block missing on disk is fetched alone, the rest still comes from disk
    second.disk._drop([("obj", 4)])
    third = BlockCache(1 << 20, BS, disk=DiskCache(tmp_path, 1 << 30))
    assert third.read("obj", 0, len(data), len(data), fetch) == data
    assert calls == [(4 * BS, 5 * BS)]


@pytest.mark.expect_warnings("DCD809")
def test_a_complete_object_is_checked_against_its_sha256(tmp_path, caplog):
    import hashlib

    disk = DiskCache(tmp_path / "c", max_bytes=1 << 30)
    data = b"".join(block(i) for i in range(3)) + b"tail"
    disk.set_object("orig", len(data), '"v1"')
    done = []
    disk.watch_complete("orig", done.append)
    for i in range(3):
        disk.put("orig", i, data[i * BS:(i + 1) * BS])
        assert disk.verify("orig", hashlib.sha256(data).hexdigest()) in (None, False) or i == 3
    assert done == []  # the last block is missing
    disk.put("orig", 3, b"tail")
    assert done == ["orig"]
    assert disk.verify("orig", hashlib.sha256(data).hexdigest()) is True
    disk.watch_complete("orig", done.append)  # checked once: not again
    assert done == ["orig"]
    other = data[:-1] + b"X"  # DCOR's sha256 says the bytes are not the original's
    disk.set_object("bad", len(other), None)
    for i in range(4):
        disk.put("bad", i, other[i * BS:(i + 1) * BS])
    with caplog.at_level(logging.WARNING):
        assert disk.verify("bad", hashlib.sha256(data).hexdigest()) is False
    assert "DCD809" in caplog.text
    assert disk.get_run("bad", 0, 4) == {} and disk.object_info("bad") is None
    caplog.clear()


class FakeStore:
    """A fetcher for ``RemoteObject``: one object whose version can change."""

    def __init__(self, data: bytes, etag: str) -> None:
        self.data, self.etag, self.requests = data, etag, 0

    def fetch(self, url, start, stop, sink=None, check=None):
        from dcorfs.io.range_fetch import RangeResult

        self.requests += 1
        if start < 0:
            start, stop = max(0, len(self.data) + start), len(self.data)
        if check is not None:  # as the fetcher does: before the body is taken
            check(len(self.data), self.etag)
        piece = self.data[start:min(stop, len(self.data))]
        if sink is not None:
            sink(piece)
            piece = b""
        return RangeResult(piece, start, len(self.data), self.etag)

    def mirrors(self, url):
        return False


@pytest.mark.expect_warnings("DCR409")
def test_an_object_whose_etag_changed_is_dropped(tmp_path, caplog):
    import errno

    from dcorfs.io.background import BackgroundFetches
    from dcorfs.io.remote_object import RemoteObject

    disk = DiskCache(tmp_path / "c", max_bytes=1 << 30)
    old = b"".join(block(i) for i in range(40))
    store = FakeStore(old, '"v1"')
    background = BackgroundFetches()

    def open_object() -> tuple[BlockCache, RemoteObject]:
        cache = BlockCache(8 << 20, BS, disk=disk)
        return cache, RemoteObject("k", "http://store/k", None, cache, store, background)

    def unmount(cache: BlockCache) -> None:
        """As an unmount does, once the fills under way have handed their blocks over
        (a reader may go on as soon as blocks are in memory, before they are written)."""
        while background.counts()["pending"]:
            time.sleep(0.01)
        cache.close()

    cache, obj = open_object()
    assert obj.read(0, 16 * BS) == old[:16 * BS]  # the head, as the first open reads it
    unmount(cache)  # everything fetched is on disk now
    store.data, store.etag = bytes(len(old)), '"v2"'  # replaced on the store, same size
    cache, obj = open_object()  # a remount
    sent = store.requests
    assert obj.read(0, 3 * BS) == old[:3 * BS]  # from disk, no request: DCOR's data never change
    assert store.requests == sent
    with caplog.at_level(logging.WARNING), pytest.raises(OSError) as info:
        obj.read(30 * BS, 31 * BS)  # the first answer of the store shows the new version
    assert info.value.errno == errno.ESTALE and "DCR409" in caplog.text
    assert disk.get_run("k", 0, 40) == {}  # the old bytes are gone, on disk and in memory
    with pytest.raises(OSError):
        obj.read(0, BS)  # this handle never mixes versions
    unmount(cache)
    cache, obj = open_object()  # opened again: the new version only
    assert obj.read(0, 3 * BS) == bytes(3 * BS)
    background.shutdown()
    caplog.clear()


def test_notes_on_an_object_hold_for_its_version_only(tmp_path):
    """What was learned about an object's contents (where a dataset sits) is served only
    while the object recorded is the version it was learned from, and goes with it."""
    disk = DiskCache(tmp_path, max_bytes=1 << 30)
    disk.set_object("k", 10 * BS, '"v1"')
    disk.put("k", 0, block(0))
    disk.keep_note("k", (10 * BS, '"v1"'), "layout:deform", {"offset": 4096})
    disk.keep_note("k", (10 * BS, '"v0"'), "layout:area_um", {"offset": 1})  # an older one
    again = DiskCache(tmp_path, max_bytes=1 << 30)
    assert again.note("k", "layout:deform") == {"offset": 4096}
    assert again.note("k", "layout:area_um") is None
    assert again.note("other", "layout:deform") is None
    again.forget("k")  # the object changed on the store
    assert again.note("k", "layout:deform") is None
    disk.set_object("k", 10 * BS, '"v1"')  # even the same version again: dropped for good
    assert disk.note("k", "layout:deform") is None


def test_what_was_derived_from_an_object_goes_with_it(tmp_path):
    from dcorfs.io.disk_cache import derived_key

    disk = DiskCache(tmp_path, max_bytes=1 << 30)
    decoded = derived_key("k", "decoded/1/x/deform")
    disk.put("k", 0, block(0))
    disk.put(decoded, 3, block(3))
    disk.put("k2", 0, block(5))  # another object, whose key starts alike
    disk.put(derived_key("k2", "decoded"), 0, block(6))
    disk.forget("k")
    assert disk.get("k", 0) is None and disk.get(decoded, 3) is None
    assert disk.get("k2", 0) == block(5) and disk.get(derived_key("k2", "decoded"), 0) == block(6)


def test_a_cache_whose_keys_name_no_host_is_dropped_whole(tmp_path):
    """Keys of format 1 named no DCOR host: such a cache is dropped on open, never
    misread; one of today's format is kept."""
    import sqlite3

    from dcorfs.io.disk_cache import KEY_FORMAT, DiskCache

    folder = tmp_path / "cache"
    disk = DiskCache(folder, 1 << 30)
    disk.put("dcor-resource-x", 0, b"a" * 100)
    disk.keep_answer("dcserv:x:basins", [1, 2])
    disk.close()
    again = DiskCache(folder, 1 << 30)
    assert again.get("dcor-resource-x", 0) == b"a" * 100  # today's format: kept
    again.close()
    with sqlite3.connect(folder / "index.sqlite") as db:
        db.execute("UPDATE settings SET value='1' WHERE name='key_format'")
    old = DiskCache(folder, 1 << 30)
    assert old.get("dcor-resource-x", 0) is None
    assert old.answer_stored("dcserv:x:basins") is None
    with sqlite3.connect(folder / "index.sqlite") as db:
        assert db.execute("SELECT value FROM settings WHERE name='key_format'").fetchone()[0] \
            == KEY_FORMAT
    old.close()
