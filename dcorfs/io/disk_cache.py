"""Blocks on disk that survive restarts, shared by every mount and process of a user.

The in-memory ``BlockCache`` stays in front; this is its second level.  Layout of the
cache folder (mode 0700):

    index.sqlite          one row per block: key, block number, size, CRC-32, last use;
                          one row per object: its size and ETag (so a remount need
                          not ask, and a changed object is noticed), and the sha256 it
                          was checked against once complete;
                          DCOR's answers (basins without signatures, metadata, logs,
                          tables, listings), private ones under a salted hash of the
                          token they were given to; notes on an object's contents
                          (where its datasets sit), dropped with it
    blocks/ab/<id>.blk    the bytes of one block (64 KiB, the last of an object shorter);
                          also of bytes derived from an object (``derived_key``: its
                          decoded chunks), checked and evicted alike, dropped with it

- **Atomic writes.**  A block is written to a temporary file and renamed into place, and
  only then entered in the index (SQLite, WAL mode): a crash at any point leaves either
  no row, or a row whose file is complete.  An orphaned file without a row is harmless.
- **Integrity.**  Every read checks the block's length and CRC-32 against the index; a
  block that fails (bit rot, a torn write, a disk that filled up) is dropped and reported
  as missing, so it is fetched again and never served.
- **Size.**  Least recently used blocks go first once the cache holds more than its
  limit, and whenever the filesystem has less than ``TUNING.min_free_share`` free.
- **Sharing.**  Several processes may use one folder: SQLite serialises the index, and a
  block written twice at once is the same bytes renamed twice.
- **Originals checked.**  When every block of an object is stored, its owner may check
  them all against DCOR's sha256 (``verify``); a mismatch drops the object.
- Keys are the artifacts' stable basin keys, never presigned URLs; no token and no
  signature is written here.
"""
from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import logging
import os
import pathlib
import secrets
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from ..ids import RESOURCE_ID
from ..tuning import TUNING

log = logging.getLogger(__name__)

#: how keys are made: "2" when every key names the DCOR host it came from
#: (``Shared.site_key``); a cache of another format is dropped on open
KEY_FORMAT = "2"

SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    key TEXT NOT NULL, block INTEGER NOT NULL, size INTEGER NOT NULL,
    crc INTEGER NOT NULL, used REAL NOT NULL, PRIMARY KEY (key, block));
CREATE INDEX IF NOT EXISTS blocks_used ON blocks (used);
CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, size INTEGER NOT NULL,
                                    etag TEXT, sha256 TEXT);
CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL,
                                    stored REAL NOT NULL);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notes (key TEXT NOT NULL, name TEXT NOT NULL,
                                  version TEXT NOT NULL, value TEXT NOT NULL,
                                  PRIMARY KEY (key, name));
"""
#: columns added to ``objects`` after its first version (a cache folder outlives versions)
OBJECT_COLUMNS = {"etag": "TEXT", "sha256": "TEXT"}


def derived_key(key: str, name: str) -> str:
    """The key of bytes derived from object ``key`` (its decoded chunks), stored as blocks
    like it and dropped with it by ``DiskCache.forget``."""
    return f"{key}#{name}"


def _block_name(key: str, block: int) -> str:
    name = hashlib.sha1(f"{key}\0{block}".encode()).hexdigest()
    return f"{name[:2]}/{name}.blk"


def _read_file(path: str, size: int) -> bytes:
    """A block file's bytes (up to one more than the ``size`` expected, so that a longer
    file fails the check), or b"" when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        return os.read(fd, size + 1)
    except OSError:
        return b""
    finally:
        os.close(fd)


def disk_full(exc: BaseException, folder: pathlib.Path | None = None) -> bool:
    """Whether an error of a file or of SQLite (its database, journal or WAL) means the
    disk or the user's quota is full.  SQLite says "disk I/O error" where it could not
    extend its shared-memory file: full when ``folder``'s filesystem has no room."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(exc, sqlite3.Error):
        return False
    said = str(exc).lower()
    if "full" in said:
        return True
    if "disk i/o error" in said and folder is not None:
        with contextlib.suppress(OSError):
            st = os.statvfs(folder)
            return st.f_bavail * st.f_frsize < 1 << 20
    return False


def free_by_age(folder: pathlib.Path, min_free_share: float) -> None:
    """Make room on a disk so full that the index may not open: leftover temporary
    files first, then block files oldest first, until the floor and 1% more are free.
    Rows left without files read as damaged blocks, fetched again (and ``_tidy``
    drops them)."""
    blocks = folder / "blocks"
    for tmp in blocks.glob("*/*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
    st = os.statvfs(folder)
    want, free = (min_free_share + 0.01) * st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    if free >= want:
        return
    aged = []
    for path in blocks.glob("*/*.blk"):
        with contextlib.suppress(OSError):
            info = path.stat()
            aged.append((info.st_mtime, info.st_blocks * 512, path))
    for _, size, path in sorted(aged):
        with contextlib.suppress(OSError):
            path.unlink()
            free += size
        if free >= want:
            break


class DiskCache:
    def __init__(self, folder: pathlib.Path, max_bytes: int,
                 min_free_share: float = TUNING.min_free_share, record_limit: bool = True,
                 maintain: bool = True) -> None:
        """``maintain``: restore the free floor now, by eviction, and recover a folder
        that a full disk left half-written (a mount does; ``dcorfs cache status`` only
        looks)."""
        try:
            self._open(folder, max_bytes, min_free_share, record_limit)
        except (OSError, sqlite3.Error) as exc:
            if not maintain or not disk_full(exc, pathlib.Path(folder)):
                raise
            log.warning("DCD815 the disk of the cache %s is full (%s); making room by "
                        "dropping its oldest blocks", folder, exc)
            free_by_age(pathlib.Path(folder), min_free_share)
            self._open(folder, max_bytes, min_free_share, record_limit)
            self._tidy()
        if maintain and self.free_bytes_needed(TUNING.disk_index_room) > 0:
            self.shrink()

    def _open(self, folder: pathlib.Path, max_bytes: int, min_free_share: float,
              record_limit: bool) -> None:
        self.folder = pathlib.Path(folder)
        self.max_bytes = max_bytes
        self.min_free_share = min_free_share
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)  # private data may be cached: the user's eyes only
        (self.folder / "blocks").mkdir(exist_ok=True, mode=0o700)
        self._blocks = f"{self.folder / 'blocks'}/"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._touched: dict[tuple[str, int], float] = {}
        self._uses: list[tuple[float, str, int]] = []  # (when, key, block), not written yet
        self.hits = self.misses = self.bad = self.written = 0
        self._paused_until = 0.0  # no writes until then (monotonic): the disk was full
        self._counted = (0, 0)  # hits and misses already added to the folder's totals
        self._watchers: dict[str, Callable[[str], None]] = {}
        with self._db() as db:
            db.executescript(SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(objects)")}
            for column, kind in OBJECT_COLUMNS.items():
                if column not in have:
                    try:
                        db.execute(f"ALTER TABLE objects ADD COLUMN {column} {kind}")
                    except sqlite3.OperationalError as exc:  # another process was quicker
                        if "duplicate column" not in str(exc):
                            raise
            db.execute("INSERT OR IGNORE INTO settings VALUES ('salt', ?)",
                       (secrets.token_hex(16),))
            found = db.execute("SELECT value FROM settings WHERE name='key_format'").fetchone()
        if found is None or found[0] != KEY_FORMAT:
            self._drop_other_format(found[0] if found else "1")
        with self._db() as db:
            if record_limit:  # for ``dcorfs cache status``: the limit of the last mount
                db.execute("INSERT OR REPLACE INTO settings VALUES ('max_bytes', ?)",
                           (str(max_bytes),))
        self._stored = self._total()

    def _tidy(self) -> None:
        """After a full disk: the WAL folded back into the index, rows whose files are
        gone dropped, and block files no row names removed."""
        db = self._db()
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        named = {}
        for key, block in db.execute("SELECT key, block FROM blocks").fetchall():
            named[self._blocks + _block_name(key, block)] = (key, block)
        gone = [kb for path, kb in named.items() if not os.path.exists(path)]
        if gone:
            with contextlib.suppress(sqlite3.Error):
                db.executemany("DELETE FROM blocks WHERE key=? AND block=?", gone)
        orphans = [p for p in (self.folder / "blocks").glob("*/*")
                   if str(p) not in named]
        for path in orphans:
            with contextlib.suppress(OSError):
                path.unlink()
        with self._lock:
            self._stored = self._total()
        log.info("DCD816 %s tidied after a full disk: %d rows without a file and %d files "
                 "without a row dropped", self.folder, len(gone), len(orphans))

    # -- the index -------------------------------------------------------------------
    def connect(self) -> None:
        """Open this thread's connection to the index now (about 2 ms): threads started
        at mount do, so that a cold read's fetches do not pay it one thread at a time."""
        self._db()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.folder / "index.sqlite", timeout=30.0,
                                 isolation_level=None)  # autocommit; BEGIN where needed
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # the WAL is checkpointed every 128 pages and kept at 512 KiB at most, so
            # that its growth between two writes stays within ``disk_index_room``
            db.execute("PRAGMA wal_autocheckpoint=128")
            db.execute("PRAGMA journal_size_limit=524288")
            self._local.db = db
        return db

    def _first(self, sql: str, args: tuple = ()) -> tuple | None:
        """The first row of a query, run to its end: a statement left half-read keeps
        its connection's read snapshot open, and later reads would not see new rows."""
        rows = self._db().execute(sql, args).fetchall()
        return rows[0] if rows else None

    def _total(self) -> int:
        return int(self._first("SELECT COALESCE(SUM(size), 0) FROM blocks")[0])

    def _drop_other_format(self, found: str) -> None:
        """A cache written with other keys (format 1 named no DCOR host: two instances
        could be served each other's bytes) is dropped whole, never misread."""
        freed = self.clear()
        with self._db() as db:
            for table in ("objects", "notes", "answers"):  # also what no block is held for
                db.execute(f"DELETE FROM {table}")
            db.execute("INSERT OR REPLACE INTO settings VALUES ('key_format', ?)",
                       (KEY_FORMAT,))
        if freed:
            log.info("DCD813 %s held keys of format %s, which name no DCOR host; its %.1f MB "
                     "were dropped", self.folder, found, freed / 1e6)

    def _path(self, key: str, block: int) -> pathlib.Path:
        return pathlib.Path(self._blocks + _block_name(key, block))

    # -- blocks ------------------------------------------------------------------------
    def get(self, key: str, block: int) -> bytes | None:
        """The block's bytes if stored and intact, else None (a damaged one is dropped)."""
        return self.get_run(key, block, block + 1).get(block)

    def get_run(self, key: str, first: int, stop: int, counted: bool = True) -> dict[int, bytes]:
        """The intact stored blocks among ``[first, stop)``, with one index query;
        ``counted``: whether they count in the hit rate."""
        try:
            rows = self._db().execute(
                "SELECT block, size, crc FROM blocks WHERE key=? AND block>=? AND block<?",
                (key, first, stop)).fetchall()
        except sqlite3.Error as exc:
            log.info("DCD804 cannot read the disk cache's index: %s", exc)
            rows = []
        found: dict[int, bytes] = {}
        damaged = []
        for block, size, crc in rows:
            data = _read_file(self._blocks + _block_name(key, block), size)
            if len(data) != size or zlib.crc32(data) != crc:
                damaged.append((key, block))
                continue
            found[block] = data
            self._touch(key, block)
        if damaged:
            self.bad += len(damaged)
            log.warning("DCD801 %d block(s) of %s failed their check on disk; fetching "
                        "them again", len(damaged), key)
            self._drop(damaged)
        if counted:
            self.hits += len(found)
            self.misses += stop - first - len(found)
        return found

    def stored_blocks(self, key: str, first: int, stop: int) -> set[int]:
        """Which of the blocks ``[first, stop)`` the index holds (not checked here:
        ``get_run`` checks each when it is read)."""
        try:
            return {b for (b,) in self._db().execute(
                "SELECT block FROM blocks WHERE key=? AND block>=? AND block<?",
                (key, first, stop))}
        except sqlite3.Error:
            return set()

    def object_info(self, key: str) -> tuple[int, str | None] | None:
        """(size, ETag) of an object fetched before, or None."""
        try:
            row = self._first("SELECT size, etag FROM objects WHERE key=?", (key,))
        except sqlite3.Error:
            return None
        return None if row is None else (int(row[0]), row[1])

    def set_object(self, key: str, size: int, etag: str | None) -> None:
        try:
            self._db().execute(
                "INSERT INTO objects (key, size, etag) VALUES (?, ?, ?) ON CONFLICT (key) "
                "DO UPDATE SET size=excluded.size, etag=COALESCE(excluded.etag, etag)",
                (key, size, etag))
        except sqlite3.Error as exc:
            log.info("DCD806 size of %s not stored: %s", key, exc)

    def forget(self, key: str) -> None:
        """Drop an object: its blocks, what was derived from them (``derived_key``) and
        what is known of it (it changed on the store, or failed its sha256)."""
        try:
            prefix = derived_key(key, "")
            blocks = [(k, b) for k, b in self._db().execute(
                "SELECT key, block FROM blocks WHERE key=? OR (key>=? AND key<?)",
                (key, prefix, prefix + "\uffff"))]
            self._drop(blocks)
            self._db().execute("DELETE FROM objects WHERE key=?", (key,))
            self._db().execute("DELETE FROM notes WHERE key=?", (key,))
        except sqlite3.Error as exc:
            log.info("DCD803 cannot drop %s from the index: %s", key, exc)
        with self._lock:
            self._stored = self._total()

    # -- whole objects -------------------------------------------------------------------
    def watch_complete(self, key: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(key)`` (on the writing thread) once every block of ``key``
        is stored, unless it was checked before; for the check against DCOR's sha256."""
        with self._lock:
            self._watchers[key] = callback
        self._maybe_complete(key)

    def _maybe_complete(self, key: str) -> None:
        with self._lock:
            callback = self._watchers.get(key)
        if callback is None:
            return
        try:
            row = self._first(
                "SELECT o.size, o.sha256, (SELECT COALESCE(SUM(size), 0) FROM blocks "
                "WHERE key=o.key) FROM objects o WHERE o.key=?", (key,))
        except sqlite3.Error:
            return
        if row is None or row[1] or int(row[2]) != int(row[0]):
            return
        with self._lock:
            if self._watchers.pop(key, None) is None:
                return
        callback(key)

    def verify(self, key: str, sha256: str) -> bool | None:
        """Check every stored block of ``key`` against ``sha256``: True (and recorded),
        False (the object is dropped), or None when not all of it is stored."""
        try:
            row = self._first("SELECT size FROM objects WHERE key=?", (key,))
            blocks = self._db().execute("SELECT block, size FROM blocks WHERE key=? "
                                        "ORDER BY block", (key,)).fetchall()
        except sqlite3.Error:
            return None
        if row is None or sum(size for _, size in blocks) != row[0]:
            return None
        digest = hashlib.sha256()
        for block, _ in blocks:
            data = self.get(key, block)
            if data is None:
                return None  # damaged, and dropped: fetched again later
            digest.update(data)
        if digest.hexdigest() != sha256.lower():
            log.warning("DCD809 %s: the %d bytes cached do not match DCOR's sha256; "
                        "dropped, to be fetched again", key, row[0])
            self.forget(key)
            return False
        with contextlib.suppress(sqlite3.Error):
            self._db().execute("UPDATE objects SET sha256=? WHERE key=?", (sha256, key))
        log.info("DCD810 %s: all %d bytes match DCOR's sha256", key, row[0])
        return True

    def salt(self) -> str:
        """This folder's random salt, for hashing the tokens private answers belong to."""
        return str(self._first("SELECT value FROM settings WHERE name='salt'")[0])

    def put(self, key: str, block: int, data: bytes) -> None:
        self.put_many(key, {block: data})

    def answer(self, key: str) -> Any:
        """A stored answer of DCOR's (decoded JSON), or None."""
        found = self.answer_stored(key)
        return None if found is None else found[0]

    def answer_stored(self, key: str) -> tuple[Any, float] | None:
        """(answer, when it was stored, epoch seconds), or None."""
        try:
            row = self._first("SELECT value, stored FROM answers WHERE key=?", (key,))
            return None if row is None else (json.loads(row[0]), float(row[1]))
        except (sqlite3.Error, ValueError) as exc:
            log.info("DCD807 stored answer %s unreadable: %s", key, exc)
            return None

    def forget_answer(self, key: str) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db().execute("DELETE FROM answers WHERE key=?", (key,))

    def keep_answer(self, key: str, value: Any) -> None:
        """Store an answer.  Callers strip presigned signatures first; an answer never
        holds a token."""
        try:
            self._db().execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)",
                               (key, json.dumps(value), time.time()))
        except (sqlite3.Error, TypeError, ValueError) as exc:
            log.info("DCD808 answer %s not stored: %s", key, exc)

    def keep_note(self, key: str, version: tuple[int, str | None], name: str,
                  value: Any) -> None:
        """Keep what was learned about the contents of object ``key`` (where a dataset
        sits in it), tied to its ``version`` (size, ETag): ``note`` answers only while
        the object recorded is that version."""
        try:
            self._db().execute("INSERT OR REPLACE INTO notes VALUES (?, ?, ?, ?)",
                               (key, name, json.dumps(list(version)), json.dumps(value)))
        except (sqlite3.Error, TypeError, ValueError) as exc:
            log.info("DCD812 note %s on %s not stored: %s", name, key, exc)

    def keep_array(self, key: str, version: tuple[int, str | None], name: str,
                   values: np.ndarray) -> None:
        """``keep_note`` of an int64 array (one value per event), compressed: 220,000
        contours' sizes or addresses are 1.8 MB raw, far less packed."""
        packed = zlib.compress(values.astype("<i8").tobytes(), 6)
        self.keep_note(key, version, name, {"count": len(values),
                                            "zlib": base64.b64encode(packed).decode()})

    def kept_array(self, key: str, name: str, count: int) -> np.ndarray | None:
        """The array ``keep_array`` kept, if it has ``count`` values."""
        value = self.note(key, name)
        if not isinstance(value, dict) or value.get("count") != count:
            return None
        try:
            values = np.frombuffer(zlib.decompress(base64.b64decode(value["zlib"])), "<i8")
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            log.info("DCD817 kept %s of %s unusable: %s", name, key, exc)
            return None
        return values if len(values) == count else None

    def note(self, key: str, name: str) -> Any:
        """A note on ``key``, or None: none kept, or kept of another version of it."""
        try:
            row = self._first("SELECT n.version, n.value, o.size, o.etag FROM notes n "
                              "JOIN objects o ON o.key=n.key WHERE n.key=? AND n.name=?",
                              (key, name))
            if row is None or json.loads(row[0]) != [row[2], row[3]]:
                return None
            return json.loads(row[1])
        except (sqlite3.Error, ValueError) as exc:
            log.info("DCD807 note %s on %s unreadable: %s", name, key, exc)
            return None

    def put_many(self, key: str, blocks: dict[int, bytes]) -> None:
        """Store blocks: each file written and renamed into place, then one index
        transaction for all.  Room is made first (the size limit, and the filesystem's
        free floor with these blocks on it); a full disk all the same (another writer
        filled it) evicts and retries once, then turns writing off for
        ``TUNING.disk_full_pause`` (DCD814).  Errors are logged, never raised: the cache
        is an optimisation."""
        if time.monotonic() < self._paused_until:
            return
        need = sum(len(data) for data in blocks.values())
        rows: list[tuple] | None = None
        for retry in (False, True):  # the second try with 1% more room
            self.make_room(need + (self._margin() if retry else 0))
            try:
                rows = self._store(key, blocks)
                break
            except (OSError, sqlite3.Error) as exc:
                if not disk_full(exc, self.folder):
                    log.info("DCD802 blocks of %s not stored on disk: %s", key, exc)
                    return
                failure = exc
        if rows is None:
            self._paused_until = time.monotonic() + TUNING.disk_full_pause
            log.warning("DCD814 the disk of the cache %s is full (%s); nothing is written "
                        "to it for %.0f s, reads go on from memory and the network",
                        self.folder, failure, TUNING.disk_full_pause)
            return
        with self._lock:
            self.written += len(rows)
            self._stored += sum(row[2] for row in rows)
        self._maybe_complete(key)

    def _store(self, key: str, blocks: dict[int, bytes]) -> list[tuple]:
        """Write and index ``blocks``; a failure raises after removing what it left."""
        rows, written = [], []
        try:
            for block, data in sorted(blocks.items()):
                path = self._path(key, block)
                tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                try:
                    path.parent.mkdir(exist_ok=True, mode=0o700)
                    with open(tmp, "wb") as out:
                        out.write(data)
                    os.replace(tmp, path)
                finally:
                    with contextlib.suppress(OSError):
                        tmp.unlink(missing_ok=True)
                written.append(path)
                rows.append((key, block, len(data), zlib.crc32(data), time.time()))
            if rows:
                self._db().executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?, ?)",
                                       rows)
        except (OSError, sqlite3.Error):
            for path in written:  # no block file without its row
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
            raise
        return rows

    def make_room(self, need: int = 0) -> None:
        """Evict before writing ``need`` bytes where they would pass the size limit or
        take the filesystem below its free floor."""
        with self._lock:
            over = self._stored + need > self.max_bytes
        if over or self.free_bytes_needed(need + TUNING.disk_index_room) > 0:
            self.shrink(need)

    def _margin(self) -> int:
        """Room made beyond the floor after a write failed for lack of space: 1% of the
        filesystem, so that the retry does not fail at once again."""
        st = os.statvfs(self.folder)
        return st.f_blocks * st.f_frsize // 100

    def _touch(self, key: str, block: int) -> None:
        """Note a use of a block for the LRU order; written later by ``record_use``, in
        one transaction: a write per block read would cost a remount more than the
        reads themselves."""
        now = time.time()
        with self._lock:
            if now - self._touched.get((key, block), 0.0) < TUNING.touch_every:
                return
            self._touched[(key, block)] = now
            self._uses.append((now, key, block))
            if len(self._touched) > 100_000:
                self._touched.clear()

    def write_uses(self, batch: int = 1) -> None:
        """Write the block uses noted, once at least ``batch`` of them are waiting or
        the oldest has waited ``TUNING.touch_every``."""
        with self._lock:
            if not self._uses or (len(self._uses) < batch
                                  and time.time() - self._uses[0][0] < TUNING.touch_every):
                return
            uses, self._uses = self._uses, []
        if not uses:
            return
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("UPDATE blocks SET used=? WHERE key=? AND block=?", uses)
            db.execute("COMMIT")
        except sqlite3.Error as exc:  # busy beyond the timeout: the LRU order waits
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            log.debug("cannot record the use of %d blocks: %s", len(uses), exc)

    def _drop(self, blocks: list[tuple[str, int]]) -> None:
        for key, block in blocks:
            try:
                self._path(key, block).unlink(missing_ok=True)
            except OSError:
                pass
        try:
            self._db().executemany("DELETE FROM blocks WHERE key=? AND block=?", blocks)
        except sqlite3.Error as exc:
            log.info("DCD803 cannot drop blocks from the index: %s", exc)

    def free_bytes_needed(self, extra: int = 0) -> int:
        """Bytes to free so that the filesystem keeps ``min_free_share`` free, with
        ``extra`` more bytes written."""
        st = os.statvfs(self.folder)
        want = self.min_free_share * st.f_blocks * st.f_frsize
        return max(0, int(want - (st.f_bavail * st.f_frsize - extra)))

    def record_use(self) -> None:
        """Write the block uses noted since the last call (the LRU order), and add this
        process's hits and misses to the folder's totals (for the hit rate of
        ``dcorfs cache status``)."""
        self.write_uses()
        with self._lock:
            hits, misses = self.hits - self._counted[0], self.misses - self._counted[1]
            self._counted = (self.hits, self.misses)
        if not hits and not misses:
            return
        try:
            for name, value in (("hits", hits), ("misses", misses)):
                self._db().execute(
                    "INSERT INTO settings VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                    "SET value=CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER)",
                    (name, str(value)))
        except sqlite3.Error as exc:
            log.debug("hit counts not recorded: %s", exc)

    def shrink(self, extra: int = 0) -> None:
        """Drop least recently used blocks until the cache, with ``extra`` bytes more,
        is within its size and the filesystem keeps its free share."""
        self.record_use()
        with self._lock:
            self._stored = self._total()
            excess = max(self._stored + extra - self.max_bytes,
                         self.free_bytes_needed(extra + TUNING.disk_index_room))
        while excess > 0:
            rows = self._db().execute("SELECT key, block, size FROM blocks ORDER BY used "
                                      "LIMIT 256").fetchall()
            if not rows:
                break
            victims = []
            for key, block, size in rows:
                victims.append((key, block))
                excess -= size
                if excess <= 0:
                    break
            self._drop(victims)
        with self._lock:
            self._stored = self._total()

    def summary(self) -> dict:
        """What the folder holds, for ``dcorfs cache status``."""
        db = self._db()
        blocks, stored = self._first("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blocks")
        artifacts = db.execute("SELECT key, COUNT(*), SUM(size) FROM blocks GROUP BY key "
                               "ORDER BY SUM(size) DESC").fetchall()
        st = os.statvfs(self.folder)
        settings = dict(db.execute("SELECT name, value FROM settings"))
        resources = {match.group(0) for k, _, _ in artifacts
                     if (match := RESOURCE_ID.search(k)) is not None}
        return {"folder": str(self.folder), "bytes": int(stored), "blocks": int(blocks),
                "max_bytes": int(settings["max_bytes"]) if "max_bytes" in settings else None,
                "hits": int(settings.get("hits", 0)), "misses": int(settings.get("misses", 0)),
                "resources": len(resources),
                "artifacts": [{"key": k, "blocks": int(n), "bytes": int(b)}
                              for k, n, b in artifacts],
                "filesystem_free_bytes": st.f_bavail * st.f_frsize,
                "filesystem_bytes": st.f_blocks * st.f_frsize}

    def clear(self, matching: list[str] | None = None) -> int:
        """Drop every block, or those of artifacts whose key contains one of
        ``matching`` (resource ids); returns the bytes freed."""
        rows = self._db().execute("SELECT key, block, size FROM blocks").fetchall()
        picked = [(k, b, size) for k, b, size in rows
                  if not matching or any(m in k for m in matching)]
        victims = [(k, b) for k, b, _ in picked]
        freed = sum(size for _, _, size in picked)
        self._drop(victims)
        keys = {k for k, _ in victims}
        with contextlib.suppress(sqlite3.Error):
            self._db().executemany("DELETE FROM objects WHERE key=?", [(k,) for k in keys])
            self._db().executemany("DELETE FROM notes WHERE key=?", [(k,) for k in keys])
            answers = [k for (k,) in self._db().execute("SELECT key FROM answers")
                       if not matching or any(m in k for m in matching)]
            self._db().executemany("DELETE FROM answers WHERE key=?", [(k,) for k in answers])
        with self._lock:
            self._stored = self._total()
        return freed

    def status(self) -> dict:
        return {"folder": str(self.folder), "bytes": self._stored, "max_bytes": self.max_bytes,
                "block_hits": self.hits, "block_misses": self.misses,
                "blocks_failed_check": self.bad}

    def close(self) -> None:
        self.record_use()
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
