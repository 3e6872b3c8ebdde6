"""The disk cache on its own: integrity, size, sharing; and behind the block cache."""
from __future__ import annotations

import logging
import multiprocessing
import os
import pathlib

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
    disk.set_object_size("k", 4 * BS + 100)
    again = DiskCache(tmp_path / "c", max_bytes=1 << 30)  # another mount, or a restart
    assert again.get_run("k", 0, 10) == {3: block(3), 4: block(4, 100)}
    assert again.object_size("k") == 4 * BS + 100 and again.object_size("other") is None
    assert oct((tmp_path / "c").stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
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


def test_the_filesystem_keeps_its_free_share(tmp_path):
    class Tight(DiskCache):
        def free_bytes_needed(self) -> int:
            return 2 * BS if self._stored > 2 * BS else 0

    disk = Tight(tmp_path, max_bytes=1 << 30)
    for i in range(5):
        disk.put("k", i, block(i))
    disk.shrink()
    assert disk._stored <= 3 * BS


def _writer(folder: str, worker: int) -> None:
    disk = DiskCache(pathlib.Path(folder), max_bytes=1 << 30)
    for i in range(40):
        disk.put("shared", (i * 7 + worker) % 40, block(i * 7 + worker))


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
        assert data[:1] in {bytes([(i * 7 + w) % 251]) for i in range(40) for w in range(3)
                            if (i * 7 + w) % 40 == index}
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary file left behind


def test_the_block_cache_reads_through_the_disk(tmp_path):
    data = os.urandom(10 * BS + 123)
    calls: list[tuple[int, int]] = []

    def fetch(start: int, stop: int) -> bytes:
        calls.append((start, stop))
        return data[start:stop]

    first = BlockCache(1 << 20, BS, disk=DiskCache(tmp_path, 1 << 30))
    assert first.read("obj", 5, len(data), len(data), fetch) == data[5:]
    first._writer.shutdown(wait=True)  # the background writer has stored every block
    calls.clear()
    second = BlockCache(1 << 20, BS, disk=DiskCache(tmp_path, 1 << 30))  # after a restart
    assert second.read("obj", 0, len(data), len(data), fetch) == data
    assert calls == []
    # a block missing on disk is fetched alone, the rest still comes from disk
    second.disk._drop([("obj", 4)])
    third = BlockCache(1 << 20, BS, disk=DiskCache(tmp_path, 1 << 30))
    assert third.read("obj", 0, len(data), len(data), fetch) == data
    assert calls == [(4 * BS, 5 * BS)]
