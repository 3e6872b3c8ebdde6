"""``MOUNT/search/<query>/``: DCOR's search (CKAN's ``package_search``) as a folder.

Looking up any name under ``search/`` asks ``package_search`` with ``q=<name>``,
DCOR's own query syntax unchanged (all result pages, 1,000 rows each, the later pages
at once; private datasets too where a token is set).  The folder holds a link
``<dataset> -> ../../datasets/<dataset>`` per result, so everything below works as in
``datasets/``, and ``results.tsv``: one row per dataset in DCOR's order of relevance
(``ls`` sorts by name).  A query that matches nothing is an empty folder; one that
DCOR rejects (a Solr syntax error, 409 "Search Error") is EINVAL, with DCOR's message
in the log (``DCB706``).  Answers are kept as listings are (``--listing-ttl``, served
as they were when DCOR fails, on disk for a remount and offline), one request per
query at a time.  ``ls search/`` lists ``README.txt`` (the syntax, with examples) and
the queries asked since the mount.  Names beginning with a dot are not asked (file
managers look up ``.hidden``, ``.Trash`` and the like in every folder).
"""
from __future__ import annotations

import collections
import errno
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..io.answers import AnswerStore
from ..tuning import TUNING
from ..views.nodes import BrowseDir, File, LazyEntries, Link, Node
from ..views.view import BytesView

log = logging.getLogger(__name__)

#: the fields of each result that ``results.tsv`` shows (Solr's stored fields)
FIELDS = "name,title,organization,groups,metadata_modified,num_resources"
COLUMNS = ("rank", "name", "title", "circle", "collections", "modified", "resources")

README = """\
MOUNT/search/<query>/ asks DCOR's search, as DCOR's web page and DCOR-Aid do.

  ls ~/dcor/search/blood/                  datasets that mention blood
  cat ~/dcor/search/blood/results.tsv      the same, in DCOR's order of relevance
  ls ~/dcor/search/blood/<dataset>/        a result, as in datasets/

Each result is a link to ../../datasets/<dataset>. results.tsv has one row per dataset:
rank, name, title, circle, collections, modified, resources.

The query is DCOR's own (CKAN on Solr):

  blood                       a word: in the name, title, tags, collections,
                              description or resource names (words are stemmed:
                              cells finds cell)
  blood cells                 both words (two words must both match; three to five
                              words all but one; more, 80% of them)
  blood OR beads              also both: without a colon, OR does not widen a search
  "whole blood"               a phrase
  tags:blood                  a field: tags, organization (the circle), groups (the
                              collections), name, title, notes (the description),
                              res_name, license_id, metadata_modified
  tags:blood OR tags:beads    with a colon, AND, OR, NOT and parentheses work
  title:eryth*                wildcards work in a field (eryth* alone finds nothing)
  metadata_modified:[NOW-30DAYS TO NOW]    changed in the last 30 days
  organization:blood-lab -tags:test        a circle, without a tag

A query DCOR cannot parse fails with "Invalid argument"; the log says why. A query
that finds nothing is an empty folder. A name cannot hold "/" and is at most 255 bytes,
and names starting with "." are not asked: for those, use DCOR's web page or the API
(package_search). Results are kept for --listing-ttl seconds.
"""


class SearchFolder:
    def __init__(self, search_rows: Callable[[dict, int], tuple[list[dict], int]],
                 listings: AnswerStore, time_of: Callable[[Any], float | None]) -> None:
        """``search_rows(params, first_pages)``: every row ``package_search`` gives for
        ``params``, and the requests it took; ``listings``: where answers are kept;
        ``time_of``: a CKAN timestamp as epoch seconds."""
        self._search_rows = search_rows
        self._listings = listings
        self._time_of = time_of
        self._asked: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._made: dict[str, tuple[list[dict], dict[str, Node]]] = {}  # query -> entries
        self._lock = threading.Lock()
        self._readme = File(lambda: BytesView(README.encode()))
        self.root = BrowseDir(self._list, self._lookup)

    def _list(self) -> dict[str, Node]:
        with self._lock:
            asked = list(self._asked)
        entries: dict[str, Node] = {"README.txt": self._readme}
        for query in asked:
            entries[query] = self._folder(query)
        return entries

    def _lookup(self, name: str) -> Node | None:
        if name == "README.txt":
            return self._readme
        if name.startswith("."):
            return None
        self._results(name)  # EINVAL or an error now, at the folder's lookup
        with self._lock:
            self._asked[name] = None
            self._asked.move_to_end(name)
            while len(self._asked) > TUNING.search_recent:
                self._asked.popitem(last=False)
        return self._folder(name)

    def _folder(self, query: str) -> BrowseDir:
        return BrowseDir(lambda: self._entries(query),
                         lambda name: self._entries(query).get(name))

    def _results(self, query: str) -> list[dict]:
        """DCOR's results for ``query``, kept as listings are."""
        try:
            return self._listings.get(("search", query), lambda: self._ask(query))
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                log.warning("DCB706 search %r: DCOR rejects the query: %s", query,
                            exc.strerror)
            raise

    def _ask(self, query: str) -> list[dict]:
        rows, requests = self._search_rows({"q": query, "fl": FIELDS},
                                           TUNING.search_first_pages)
        log.info("DCB707 search %r: %d datasets in %d requests", query, len(rows), requests)
        keep = ("name", "title", "organization", "groups", "metadata_modified",
                "num_resources")
        return [{k: row.get(k) for k in keep} for row in rows]

    def _entries(self, query: str) -> dict[str, Node]:
        """The results as links, made only when looked up (``ls`` needs the names
        alone), and ``results.tsv``, formatted when first opened or stat'ed; made once
        per answer (a folder is asked for its entries on each lookup)."""
        rows = self._results(query)
        with self._lock:
            made = self._made.get(query)
            if made is not None and made[0] is rows:
                return made[1]
        if not rows:
            entries: dict[str, Node] = {}
        else:
            by_name = {row["name"]: row for row in rows}
            tsv = File(lambda: BytesView(results_tsv(rows).encode("utf-8")))

            def make(name: str) -> Node | None:
                if name == "results.tsv":
                    return tsv
                row = by_name.get(name)
                return None if row is None else Link(
                    f"../../datasets/{name}", self._time_of(row.get("metadata_modified")))
            # a link costs no request: a listing hands out its attributes too
            entries = LazyEntries(dict.fromkeys([*by_name, "results.tsv"]), make, make)
        with self._lock:
            self._made[query] = (rows, entries)
            while len(self._made) > TUNING.search_recent:
                self._made.pop(next(iter(self._made)))
        return entries


def results_tsv(rows: list[dict]) -> str:
    """One line per result in DCOR's order, after a header (``COLUMNS``)."""
    lines = ["\t".join(COLUMNS)]
    for rank, row in enumerate(rows, 1):
        lines.append("\t".join(_cell(v) for v in (
            rank, row.get("name"), row.get("title"), _name(row.get("organization")),
            ",".join(_name(g) for g in row.get("groups") or []),
            row.get("metadata_modified"), row.get("num_resources"))))
    return "\n".join(lines) + "\n"


def _name(value: Any) -> str:
    """A circle or collection as Solr stores it (its name), or as a dict with one."""
    if isinstance(value, dict):
        return str(value.get("name", ""))
    return "" if value is None else str(value)


def _cell(value: Any) -> str:
    """A value on one line of a TSV: tabs and line breaks become spaces."""
    text = "" if value is None else str(value)
    return " ".join(text.replace("\t", " ").splitlines())
