"""What DCOR says about one resource (``dcserv``: basins, metadata, logs, tables), kept.

A public resource whose answers the disk cache holds is opened from them without asking
DCOR: published data never changes (they are asked again in the background once older
than the store's TTL, and at once when the store contradicts them).  A private one
always asks DCOR, which checks the token; only when DCOR cannot be reached is it opened
from the answers kept for this same token, with presigned URLs cut to their unsigned
form.  The metadata is asked for beside the basins, so a listing does not wait for one
more round trip later.
"""
from __future__ import annotations

import concurrent.futures
import errno
import logging
from typing import Any

from ..io import deadline
from .shared import Shared

log = logging.getLogger(__name__)

#: every query whose answer is kept for a resource
QUERIES = ("basins", "metadata", "logs", "tables")


class ResourceAnswers:
    def __init__(self, rid: str, shared: Shared) -> None:
        self.rid = rid
        self.shared = shared
        self.api = shared.api
        self.public = False  # no basin is perishable: DCOR's answers may be kept on disk
        self.from_disk = False  # opened from answers kept on disk, not asked of DCOR
        self._metadata: concurrent.futures.Future | None = None

    def basins(self) -> list:
        """The basin list (``dcserv query=basins``): proves the id exists and is
        readable with the mount's token.  Starts the metadata's question beside it."""
        stored = self.shared.answers.kept((self.rid, "basins"))
        if stored is not None and all_public(stored[0]):
            self.public = self.from_disk = True
            self._metadata = self.shared.pool.submit(deadline.bind(self.answer), "metadata")
            if stored[1] > self.shared.answers.ttl:
                self.shared.pool.submit(self.revalidate)
            log.info("DCR406 %s opened from the disk cache's answers", self.rid)
            return stored[0]
        try:
            return self._ask_basins()
        except OSError as exc:
            private = self.shared.private_answers.kept((self.rid, "basins"))
            if exc.errno != errno.EIO or private is None:
                raise
            self._metadata = self.shared.pool.submit(deadline.bind(self.answer), "metadata")
            log.info("DCR408 %s: DCOR cannot be reached (%s); opened from the answers kept "
                     "for this token", self.rid, exc.strerror)
            return private[0]

    def given(self, metadata: dict) -> None:
        """Answers not asked of DCOR (a resource made from a URL alone)."""
        self._metadata = concurrent.futures.Future()
        self._metadata.set_result(metadata)

    def _ask_basins(self) -> list:
        ask = deadline.bind(self.api.dcserv)
        self._metadata = self.shared.pool.submit(ask, self.rid, "metadata")
        reopener = self.shared.reopener
        if reopener is not None and reopener.due():
            # both queries first: starting two dozen connections before them delayed
            # their sending by 15 ms; after them it overlaps their round trip.  An idle
            # mount's pool has no queue to wait behind.
            basins = self.shared.pool.submit(ask, self.rid, "basins")
            reopener.reopen()
            specs = basins.result()
        else:
            specs = self.api.dcserv(self.rid, "basins")
        if not isinstance(specs, list):
            raise OSError(errno.EIO, f"dcserv basins for {self.rid} is not a list")
        self.public = all_public(specs)
        self._keep("basins", specs)
        self._metadata.add_done_callback(
            lambda f: None if f.exception() else self._keep("metadata", f.result()))
        return specs

    def metadata(self) -> dict:
        """The resource's metadata ({} when DCOR gives none)."""
        try:
            if self._metadata is None:
                raise OSError(errno.EIO, "metadata was not requested")
            meta = self._metadata.result(timeout=deadline.remaining(3600.0))
        except (OSError, concurrent.futures.TimeoutError):  # errors are not kept: ask again
            meta = self.answer("metadata")
        return meta if isinstance(meta, dict) else {}

    def answer(self, query: str) -> Any:
        """``dcserv`` for ``query``: from the disk cache for a public resource asked
        before (published data never changes); else from DCOR, and from the disk when
        DCOR cannot be reached."""
        if self.public:
            stored = self.shared.answers.kept((self.rid, query))
            if stored is not None:
                return stored[0]
        store = self.shared.answers if self.public else self.shared.private_answers
        return store.ask((self.rid, query), lambda: self.api.dcserv(self.rid, query))

    def _keep(self, query: str, value: Any) -> None:
        """A public resource's answer for everyone, a private one's under the token's
        hash, its presigned URLs cut to their unsigned form."""
        if self.public:
            self.shared.answers.keep((self.rid, query), value)
        else:
            self.shared.private_answers.keep(
                (self.rid, query), unsigned(value) if query == "basins" else value)

    def revalidate(self) -> None:
        """Ask DCOR again about a public resource opened from stored answers: a changed
        answer replaces the stored one (the next open uses it); a resource that is
        gone or no longer public loses its stored answers."""
        try:
            specs = self.api.dcserv(self.rid, "basins")
            meta = self.api.dcserv(self.rid, "metadata")
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EACCES):
                self._forget(f"gone from DCOR or not public ({exc.strerror})")
            return
        if not all_public(specs):
            self._forget("no longer public")
            return
        stored = self.shared.answers.kept((self.rid, "basins"))
        if stored is None or stored[0] != specs:
            log.info("DCR407 %s: DCOR's basins changed; the next open uses them", self.rid)
        self._keep("basins", specs)
        self._keep("metadata", meta)

    def contradicted(self, what: str) -> None:
        """The store has no ``what``, which DCOR declared: if that declaration came from
        answers kept on disk, DCOR is asked again (and its answer kept) before anything
        fails, so the next open uses what DCOR says now."""
        if not self.from_disk:
            return
        self.from_disk = False
        log.info("DCR420 %s: the store has no %s, which the kept answers declare; asking "
                 "DCOR again", self.rid, what)
        try:
            self.revalidate()
        except OSError as exc:  # the reader's own error says what failed
            log.info("DCR420 %s: DCOR could not be asked again: %s", self.rid, exc.strerror)

    def _forget(self, why: str) -> None:
        for query in QUERIES:
            self.shared.answers.forget((self.rid, query))
        log.info("DCR407 %s is %s; its stored answers are dropped", self.rid, why)

    def check_original(self, key: str) -> None:
        """Every block of the original is on disk: check it against DCOR's sha256 (in
        the pool: the disk's writer thread calls this)."""
        def check() -> None:
            try:
                sha = self.api.call("resource_show", id=self.rid).get("sha256")
            except (OSError, AttributeError) as exc:
                log.info("DCR410 %s: no sha256 to check the cached original against (%s)",
                         self.rid, exc)
                return
            if isinstance(sha, str) and len(sha) == 64 and self.shared.disk is not None:
                self.shared.disk.verify(key, sha)
        try:
            self.shared.pool.submit(check)
        except RuntimeError:  # unmounting: the pool is shut down; the next mount checks
            log.debug("%s: unmounting, the sha256 check waits for the next mount", key)


def all_public(specs: Any) -> bool:
    """Whether a basin list is a public resource's: a list with no perishable basin."""
    return isinstance(specs, list) and bool(specs) and not any(
        isinstance(s, dict) and s.get("perishable") for s in specs)


def unsigned(specs: Any) -> Any:
    """Basins with presigned URLs cut before their query: no signature goes to disk."""
    if not isinstance(specs, list):
        return specs
    return [{**s, "urls": [u.split("?", 1)[0] for u in s.get("urls") or []
                           if isinstance(u, str)]} if isinstance(s, dict) else s
            for s in specs]
