"""DCOR by name: ``datasets/``, ``circles/`` and ``collections/`` as folders.

What DCOR lists is asked for once and kept for ``ttl`` seconds (``--listing-ttl``), so
new datasets appear without a remount and a busy ``ls`` costs nothing:

- ``datasets/`` pages through ``package_search`` (1000 rows a request, only the fields
  it needs; the pages after the first in parallel);
- ``circles/`` and ``collections/`` are ``organization_list`` and ``group_list``; a
  circle or a collection lists only its own datasets (``fq``);
- ``datasets/<name>`` looked up directly is one ``package_show``, never a listing;
  its folder is that answer: each resource under its DCOR name, a link to the feature
  folder of each RT-DC resource, and ``dataset.json``.

A listing older than the TTL is served while it is asked for again in the background;
when DCOR fails, it stays as it was (log ``DCB701``).  With the disk cache, listings
are kept there too: a remount lists at once, and offline lists what was listed. Names
that cannot be CKAN names are ENOENT without a request; names DCOR does not know are
remembered as missing for ``negative_ttl`` seconds.

Name collisions inside a dataset folder: resource files keep their DCOR names and win.
A resource named ``dataset.json`` hides the package dict (log ``DCB702``); a stem
that equals another resource's name (or an earlier stem) gets no link (log ``DCB703``);
the feature folder is still at ``MOUNT/<resource-id>/``.
"""
from __future__ import annotations

import concurrent.futures
import datetime
import errno
import json
import logging
import re
import threading
from typing import Any

from ..io import deadline
from ..io.answers import AnswerStore, Key
from ..io.remote_object import RemoteObject
from ..views.nodes import BrowseDir, Dir, File, LazyEntries, Link, Node
from ..views.view import BytesView, LazyRemoteView
from .api import is_resource_id
from .search_folder import SearchFolder
from .shared import Shared

log = logging.getLogger(__name__)

CKAN_NAME = re.compile(r"[a-z0-9_-]{2,100}")
PAGE_ROWS = 1000  # package_search's most rows per request
RTDC_SUFFIXES = (".rtdc", ".dc")


def is_ckan_name(name: str) -> bool:
    """CKAN's rule for dataset, organization and group names."""
    return CKAN_NAME.fullmatch(name) is not None


def ckan_time(text: Any) -> float | None:
    """CKAN's UTC timestamps ('2026-01-01T00:00:00.000000') as epoch seconds."""
    if not isinstance(text, str) or not text:
        return None
    try:
        stamp = datetime.datetime.fromisoformat(text.rstrip("Z"))
    except ValueError:
        return None
    return stamp.replace(tzinfo=stamp.tzinfo or datetime.timezone.utc).timestamp()


def listing_key(scope: str, key: Key) -> str:
    """A listing's key in the disk cache: ``scope`` is the site and ``public`` or the
    salted hash of the token it was given to (a token's listings are its own)."""
    return f"listing:{scope}:" + "/".join(map(str, key))


class Browser:
    """The ``datasets/``, ``circles/`` and ``collections/`` folders of a mount."""

    def __init__(self, shared: Shared, listings: AnswerStore, private: bool) -> None:
        """``listings``: where DCOR's answers are kept (``listing_key`` for the disk)."""
        self.shared = shared
        self.api = shared.api
        self.pool = shared.pool
        self.listings = listings
        self.private = private  # ask for private datasets too (a token is set)
        self._folders: dict[str, Dir] = {}
        self._lock = threading.Lock()
        self.roots: dict[str, Node] = {
            "datasets": BrowseDir(self._list_datasets, self._dataset_folder),
            "search": SearchFolder(self.search_rows, self.listings, ckan_time).root,
            "circles": BrowseDir(lambda: self._list_groups("circles"),
                                 lambda name: self._group_folder("circles", name)),
            "collections": BrowseDir(lambda: self._list_groups("collections"),
                                     lambda name: self._group_folder("collections", name)),
        }

    # -- questions to DCOR ---------------------------------------------------------------
    def _search(self, fq: str = "") -> dict[str, str | None]:
        """name -> metadata_modified (as DCOR writes it) of every dataset matching
        ``fq``: the first page, then all others at once."""
        params: dict[str, Any] = {"q": "*:*", "sort": "name asc",
                                  "fl": "name,metadata_modified"}
        if fq:
            params["fq"] = fq
        rows, requests = self.search_rows(params)
        found = {row["name"]: row.get("metadata_modified") for row in rows}
        log.info("DCB704 %s: %d datasets in %d requests", fq or "all datasets", len(found),
                 requests)
        return found

    def search_rows(self, params: dict[str, Any],
                    first_pages: int = 1) -> tuple[list[dict], int]:
        """Every dataset ``package_search`` finds for ``params``, in DCOR's order, and the
        requests that took: ``first_pages`` pages at once (a second one spares a round
        trip for up to 2,000 results, and costs one empty answer for fewer than 1,000),
        then all others at once (1,000 rows each; private datasets too where a token is
        set)."""
        params = {**params, "rows": PAGE_ROWS}
        if self.private:
            params["include_private"] = "true"
        ask = deadline.bind(self.api.call)

        def pages_from(starts: range) -> list[concurrent.futures.Future]:
            return [self.pool.submit(ask, "package_search", start=start, **params)
                    for start in starts]
        ahead = pages_from(range(PAGE_ROWS, first_pages * PAGE_ROWS, PAGE_ROWS))
        first = self.api.call("package_search", start=0, **params)
        count = int(first.get("count", 0)) if isinstance(first, dict) else 0
        rest = pages_from(range(first_pages * PAGE_ROWS, count, PAGE_ROWS))
        pages = [first] + [f.result(timeout=deadline.remaining(3600.0)) for f in ahead + rest]
        rows = [row for page in pages
                for row in (page.get("results", []) if isinstance(page, dict) else [])
                if isinstance(row, dict) and is_ckan_name(str(row.get("name", "")))]
        return rows, len(pages)

    def _datasets(self) -> dict[str, str | None]:
        return self.listings.get(("datasets",), self._search)

    def _group_names(self, kind: str) -> list[str]:
        action = "organization_list" if kind == "circles" else "group_list"
        return self.listings.get((kind,), lambda: sorted(self.api.call(action, limit=1000)))

    def _members(self, kind: str, name: str) -> dict[str, str | None]:
        field = "organization" if kind == "circles" else "groups"
        # required and quoted: CKAN itself adds ``+capacity:public`` to ``fq``, and with
        # Solr's OR default operator an unprefixed term would only rank, not filter
        # (ckan issue #4477); a name is a CKAN name, so quoting needs no escapes
        return self.listings.get((kind, name),
                                 lambda: self._search(f'+{field}:"{name}"'))

    def _package(self, name: str) -> dict:
        package = self.listings.get(("package", name),
                                    lambda: self.api.call("package_show", id=name))
        if not isinstance(package, dict) or not isinstance(package.get("resources"), list):
            raise OSError(errno.EIO, f"package_show {name}: not a dataset dict")
        return package

    def open_file(self, res: dict, private: bool) -> RemoteObject:
        """A resource's bytes by range requests: from the object store where the
        resource is public, else from where DCOR's download route redirects (asked
        again when that presigned URL expires)."""
        route = str(res.get("url", ""))
        url = None if private else res.get("s3_url")
        # DCOR's key for the resource artifact (as dcserv names it in the basins): the
        # blocks are shared with MOUNT/<rid>/data.rtdc and the features read from it
        name = f"dcor-{'presigned-' if private else ''}resource-{res['id']}"
        obj = (self.shared.remote_object(name, url) if isinstance(url, str) and url else
               self.shared.resolved_object(name, lambda: self.api.resolve_download(route)))
        obj.probe()
        return obj

    # -- folders -------------------------------------------------------------------------
    def _list_datasets(self) -> dict[str, Node]:
        """Names at once, folders only when one is looked at: ``ls`` of 10,000 datasets
        needs the names and nothing else."""
        datasets = self._datasets()
        return LazyEntries(datasets, lambda name: self._folder(name, datasets[name]))

    def _dataset_folder(self, name: str) -> Node | None:
        if not is_ckan_name(name):
            return None
        listed = self.listings.peek(("datasets",))
        if listed is not None and name in listed:
            return self._folder(name, listed[name])  # no request: it was listed
        package = self._package(name)  # ENOENT or EACCES if DCOR says so
        return self._folder(name, package.get("metadata_modified"))

    def _folder(self, name: str, modified: str | None) -> Dir:
        with self._lock:
            folder = self._folders.get(name)
            if folder is None:
                folder = self._folders[name] = Dir(lambda: self._dataset_entries(name),
                                                   ckan_time(modified))
            return folder

    def _list_groups(self, kind: str) -> dict[str, Node]:
        return {name: self._members_folder(kind, name) for name in sorted(self._group_names(kind))
                if is_ckan_name(name)}

    def _group_folder(self, kind: str, name: str) -> Node | None:
        if not is_ckan_name(name):
            return None
        if name not in self._group_names(kind):
            raise OSError(errno.ENOENT, f"no {kind[:-1]} {name}")
        return self._members_folder(kind, name)

    def _members_folder(self, kind: str, name: str) -> Dir:
        def entries() -> dict[str, Node]:
            return {ds: Link(f"../../datasets/{ds}", ckan_time(modified))
                    for ds, modified in self._members(kind, name).items()}

        def lookup(ds: str) -> Node | None:
            return entries().get(ds)

        return BrowseDir(entries, lookup)

    def _dataset_entries(self, name: str) -> dict[str, Node]:
        package = self._package(name)
        entries: dict[str, Node] = {}
        rtdc: list[dict] = []
        for res in package["resources"]:
            if not isinstance(res, dict) or not isinstance(res.get("name"), str):
                continue
            file_name = res["name"].replace("/", "_")
            if file_name in entries or file_name in (".", ".."):
                log.info("DCB705 %s: a second resource named %r is not shown", name, file_name)
                continue
            mtime = ckan_time(res.get("created"))
            size = int(res.get("size") or 0)
            private = bool(package.get("private"))
            entries[file_name] = File(
                lambda r=res, s=size: LazyRemoteView(s, lambda: self.open_file(r, private)),
                mtime)
            if file_name.lower().endswith(RTDC_SUFFIXES) and is_resource_id(str(res.get("id"))):
                rtdc.append(res)
        if "dataset.json" in entries:
            log.info("DCB702 %s: a resource is named dataset.json; the package dict is not "
                     "shown", name)
        else:
            text = json.dumps(package, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            entries["dataset.json"] = File(lambda t=text: BytesView(t.encode()),
                                           ckan_time(package.get("metadata_modified")))
        for res in rtdc:
            stem = res["name"].replace("/", "_").rsplit(".", 1)[0]
            if not stem or stem in entries:
                log.info("DCB703 %s: %r is taken; the feature folder of %s is only at "
                         "MOUNT/%s", name, stem, res["name"], res["id"])
                continue
            entries[stem] = Link(f"../../{res['id']}", ckan_time(res.get("created")))
        return entries
