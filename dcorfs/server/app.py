"""HTTP front of the local DCOR: the CKAN action API, download routes and an object store.

Two listening sockets, like the real deployment: the DCOR host (API and routes) and
a separate object-store host that answers range GETs on ``/{bucket}/{key}``.  Keeping
them apart lets tests prove that the API token never reaches the object store.
Behaviour follows ``docs/dcor-api.md`` (envelope, status codes, Werkzeug reason
phrases, validation order of ``dcserv``, presigned URLs with expiry).
"""
from __future__ import annotations

import dataclasses
import hashlib
import heapq
import hmac
import http.server
import json
import logging
import mimetypes
import os
import re
import secrets
import socketserver
import threading
import time
import urllib.parse
from typing import Any

from . import solr_query
from .catalog import (
    Catalog,
    Dataset,
    Group,
    Resource,
    bucket_name,
    iso_time,
    object_key,
)
from .faults import FaultInjector, Faults
from .link import Link

log = logging.getLogger(__name__)

CKAN_VERSION = "2.11.3"
REASONS = {200: "OK", 206: "Partial Content", 302: "FOUND", 400: "BAD REQUEST",
           403: "FORBIDDEN", 404: "NOT FOUND", 409: "CONFLICT", 416: "Requested Range Not Satisfiable",
           500: "INTERNAL SERVER ERROR"}
STORE_REASONS = {403: "Forbidden", 404: "Not Found"}
USER = {"id": "5f2c1a7e-0d7e-4c55-9b0c-6f2f7e3a9d11", "name": "dcorfs-user",
        "fullname": "dcorfs local user", "email": "user@localhost", "state": "active",
        "sysadmin": False}


class ActionError(Exception):
    """A CKAN action failure: HTTP status, error type and message."""

    def __init__(self, status: int, err_type: str, message: Any) -> None:
        super().__init__(message)
        self.status = status
        self.err_type = err_type
        self.message = message


def not_found(msg: str = "") -> ActionError:
    return ActionError(404, "Not Found Error", "Not found" + (f": {msg}" if msg else ""))


def forbidden(msg: str = "") -> ActionError:
    return ActionError(403, "Authorization Error", "Access denied" + (f": {msg}" if msg else ""))


def validation(msg: Any) -> ActionError:
    return ActionError(409, "Validation Error", msg)


@dataclasses.dataclass
class Stats:
    """What the server saw; tests and the benchmark read it at ``/_dcorfs/stats``."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    spans: list[tuple[float, float]] = dataclasses.field(default_factory=list)

    def add(self, **kwargs: int) -> None:
        with self.lock:
            for key, value in kwargs.items():
                self.counts[key] = self.counts.get(key, 0) + value

    def request_done(self, arrived: float, answered: float) -> None:
        with self.lock:
            if len(self.spans) < 100_000:
                self.spans.append((arrived, answered))

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            counts = dict(self.counts)
            spans = list(self.spans)
        counts["round_trips"] = round_trips(spans)
        return counts

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()
            self.spans.clear()


def round_trips(spans: list[tuple[float, float]]) -> int:
    """The longest chain of requests each of which arrived after the one before it
    was answered: the round trips a client waited for one after another, however
    many requests it had in flight at a time."""
    answered_heap: list[tuple[float, int]] = []
    best_done = deepest = 0
    for arrived, answered in sorted(spans):
        while answered_heap and answered_heap[0][0] <= arrived:
            best_done = max(best_done, heapq.heappop(answered_heap)[1])
        heapq.heappush(answered_heap, (answered, best_done + 1))
        deepest = max(deepest, best_done + 1)
    return deepest


@dataclasses.dataclass
class ServerConfig:
    catalog: Catalog
    tokens: set[str]
    link: Link
    presign_ttl: float = 3600.0
    secret: bytes = dataclasses.field(default_factory=lambda: secrets.token_bytes(32))
    api_base: str = ""
    store_base: str = ""
    site_url: str = ""  # how condensed files name this DCOR (its ckan.site_url)
    stats: Stats = dataclasses.field(default_factory=Stats)
    faults: FaultInjector = dataclasses.field(default_factory=FaultInjector)
    issued: dict[str, float] = dataclasses.field(default_factory=dict)
    searches: dict[tuple, list] = dataclasses.field(default_factory=dict)
    # (catalog generation, every dataset as Solr indexes it), made once per generation
    # (catalog generation, each dataset as Solr indexes it, its stored fields)
    index: tuple[int, dict, dict] = (-1, {}, {})
    handshake_round_trips: int = 1  # charged to every new connection
    idle_close_s: float = 0.0  # close keep-alive connections idle this long (0: never)
    # DCOR's enable_intra_dataset_basins (on by default there): the condensed basin also
    # declares the original's features that the condensed file lacks (image, contour...)
    intra_dataset_basins: bool = True
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: TCP_NODELAY, as nginx and S3 answer: with Nagle's algorithm a body written after
    #: its headers waits for their ACK, which the client delays by 40 ms (Linux), so
    #: every request after a connection's first took 20 ms + 40 ms on a 20 ms link
    disable_nagle_algorithm = True
    server_version = "dcorfs-serve"
    sys_version = ""
    config: ServerConfig  # set on the subclass made per server
    is_store = False

    # -- plumbing ---------------------------------------------------------------
    def log_message(self, fmt: str, *args: Any) -> None:  # route http.server's chatter to logging
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None, reason: str | None = None) -> None:
        self.send_response(status, reason or REASONS.get(status))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self._write_body(body)

    def _write_body(self, body: bytes | memoryview) -> None:
        view = memoryview(body)
        step = 64 * 1024
        for start in range(0, len(view), step):
            piece = view[start:start + step]
            self.config.link.transmit(len(piece))
            self.wfile.write(piece)

    def _json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        if not self.path.startswith("/_dcorfs/"):
            self.config.stats.add(api_bytes=len(body))
        self._send(status, body, "application/json;charset=utf-8")

    def _user(self) -> dict | None:
        token = self.headers.get("Authorization") or self.headers.get("X-CKAN-API-Key") or ""
        token = token.strip()
        if token and any(hmac.compare_digest(token, t) for t in self.config.tokens):
            return USER
        return None

    def setup(self) -> None:
        super().setup()
        # a new connection costs round trips before its first request: one for TCP's
        # handshake, one or two more for TLS, which real DCOR and its store use
        for _ in range(self.config.handshake_round_trips):
            self.config.link.round_trip()
        self._new_connection = True

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def _arrive(self) -> bool:
        """Per-request link delay and faults that strike before any answer; False = stalled."""
        self.config.link.round_trip()
        injector = self.config.faults
        delay = injector.extra_delay()
        if delay:
            time.sleep(delay)
        if self.path.startswith("/_dcorfs/"):
            return True
        if injector.fires("stall"):
            self.config.stats.add(fault_stall=1)
            injector.released.wait(timeout=600)  # until the faults change
            self.close_connection = True
            return False
        return True

    def _fault(self, name: str) -> bool:
        if self.config.faults.fires(name):
            self.config.stats.add(**{f"fault_{name}": 1})
            return True
        return False

    def finish(self) -> None:
        try:
            super().finish()
        except (OSError, ValueError):  # the connection was dropped on purpose or by the peer
            pass

    def _abort(self, reset: bool) -> None:
        """Drop the connection: an RST when ``reset``, else a clean close."""
        self.close_connection = True
        if reset:
            import socket
            import struct
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.wfile.flush()
        self.connection.close()

    def do_POST(self) -> None:  # noqa: N802
        self._timed(self._post)

    def do_GET(self) -> None:  # noqa: N802
        self._timed(self._get)

    def _timed(self, handle) -> None:
        """Handle one request, keeping when it arrived and when it was answered."""
        arrived = time.monotonic()
        counted = not self.path.startswith("/_dcorfs/")  # the harness's own calls are not
        if counted and self._new_connection:
            self.config.stats.add(connections=1, **{"store_connections" if self.is_store
                                                    else "api_connections": 1})
        self._new_connection = False
        try:
            handle()
        finally:
            if counted:
                self.config.stats.request_done(arrived, time.monotonic())

    def _post(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self._arrive():
            return
        if url.path == "/_dcorfs/stats/reset" and not self.is_store:
            self.config.stats.reset()
            self._json(200, {"success": True})
            return
        if url.path == "/_dcorfs/rescan" and not self.is_store:
            self.config.catalog.scan()
            self._json(200, {"success": True, "datasets": len(self.config.catalog.datasets)})
            return
        if url.path == "/_dcorfs/faults" and not self.is_store:
            try:
                self.config.faults.set(Faults.from_dict(json.loads(raw or b"{}")))
            except (ValueError, TypeError) as exc:
                self._json(400, {"success": False, "error": str(exc)})
                return
            log.warning("DCS106 faults now %s", self.config.faults.as_dict())
            self._json(200, {"success": True, "faults": self.config.faults.as_dict()})
            return
        try:
            params = json.loads(raw or b"{}")
            if not isinstance(params, dict):
                raise ValueError("body is not an object")
        except ValueError:
            self._json(400, "Bad request - JSON Error: invalid request body")
            return
        self._api(url.path, params)

    def _get(self) -> None:
        if not self._arrive():
            return
        url = urllib.parse.urlsplit(self.path)
        if self.is_store:
            self._object(url)
            return
        if url.path == "/_dcorfs/stats":
            self._json(200, self.config.stats.snapshot())
            return
        if url.path == "/_dcorfs/faults":
            self._json(200, self.config.faults.as_dict())
            return
        params: dict[str, Any] = {}
        for key, value in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
            params[key] = [params[key], value] if key in params else value
        if url.path.startswith("/api/"):
            self._api(url.path, params)
        elif url.path.startswith("/dataset/"):
            self._route(url.path)
        else:
            self._send(404, b"<html><body><h1>Not found</h1></body></html>", "text/html")

    # -- CKAN action API ----------------------------------------------------------
    def _api(self, path: str, params: dict) -> None:
        self.config.stats.add(api_requests=1)
        if self.headers.get("Authorization") is not None:
            self.config.stats.add(api_auth_headers=1)
        match = re.fullmatch(r"/api/(?:3/)?action/([A-Za-z0-9_]+)", path)
        if not match:
            self._json(400, "Bad request - Action name not known: " + path.rsplit("/", 1)[-1])
            return
        action = match.group(1)
        if self.config.faults.in_maintenance():
            # DCOR while it is updated: its front answers 503 with a maintenance page
            self.config.stats.add(maintenance_503=1)
            self._send(503, b"<html><body><h1>DCOR is under maintenance</h1></body></html>",
                       "text/html", self._retry_after_header(), reason="SERVICE UNAVAILABLE")
            return
        if self._fault("error"):
            self._send(502, b"<html><body>502 Bad Gateway</body></html>", "text/html",
                       self._retry_after_header(), reason="BAD GATEWAY")
            return
        if self._fault("bad_json"):
            self._send(200, b'{"help": "x", "success": true, "result": {"exp', "application/json")
            return
        if self._fault("html"):
            self._send(200, b"<!DOCTYPE html><html><body><h1>Maintenance</h1></body></html>",
                       "text/html")
            return
        func = getattr(self, f"action_{action}", None)
        self.config.stats.add(**{f"action_{action}" if func else "action_unknown": 1})
        helpurl = f"{self.config.api_base}/api/3/action/help_show?name={action}"
        if func is None:
            self._json(400, f"Bad request - Action name not known: {action}")
            return
        try:
            result = func(params, self._user())
        except ActionError as exc:
            message = exc.message
            error = dict(message) if isinstance(message, dict) else {"message": message}
            error["__type"] = exc.err_type
            self._json(exc.status, {"help": helpurl, "success": False, "error": error})
            return
        except Exception:  # noqa: BLE001 - CKAN answers 500 for anything unexpected
            log.exception("DCS201 action %s failed", action)
            self._json(500, {"help": helpurl, "success": False,
                             "error": {"__type": "Internal Server Error",
                                       "message": "Internal Server Error"}})
            return
        self._json(200, {"help": helpurl, "success": True, "result": result})

    def _expired_early(self, signature: str) -> bool:
        """The ``expire_after_s`` fault: a URL dies that long after it was issued."""
        after = self.config.faults.faults.expire_after_s
        if after is None:
            return False
        issued = self.config.issued.get(signature, 0.0)
        if time.time() > issued + after:
            self.config.stats.add(fault_expire=1)
            return True
        return False

    def _retry_after_header(self) -> dict[str, str]:
        after = self.config.faults.faults.retry_after
        return {} if after is None else {"Retry-After": f"{after:g}"}

    def _resource(self, rid: Any, user: dict | None) -> Resource:
        res = self.config.catalog.resources.get(rid) if isinstance(rid, str) else None
        if res is None:
            raise not_found()
        if self.config.catalog.is_private(res) and user is None:
            raise forbidden(f"User  not authorized to read resource {rid}")
        return res

    def action_status_show(self, params: dict, user: dict | None) -> dict:
        return {"ckan_version": CKAN_VERSION, "site_url": self.config.api_base,
                "site_title": "dcorfs local DCOR", "site_description": "dcorfs serve",
                "locale_default": "en", "extensions": ["dcor_schemas", "dc_serve"]}

    def action_user_show(self, params: dict, user: dict | None) -> dict:
        if user is None:
            raise forbidden("User not authorized to view user details")
        if params.get("id") not in (None, user["id"], user["name"]):
            raise forbidden("Users may only view their own details")
        return dict(user)

    def action_resource_show(self, params: dict, user: dict | None) -> dict:
        if "id" not in params:
            raise validation({"id": ["Missing value"]})
        return self._resource_dict(self._resource(params["id"], user))

    def action_package_show(self, params: dict, user: dict | None) -> dict:
        if "id" not in params:
            raise validation({"id": ["Missing value"]})
        catalog = self.config.catalog
        ds = catalog.datasets.get(params["id"]) or next(
            (d for d in catalog.datasets.values() if d.name == params["id"]), None)
        if ds is None:
            raise not_found()
        if ds.private and user is None:
            raise forbidden(f"User  not authorized to read package {ds.id}")
        return self._package_dict(ds.id)

    def action_package_search(self, params: dict, user: dict | None) -> dict:
        """CKAN 2.11's search over the catalog: ``q`` as CKAN has Solr parse it
        (``solr_query``: dismax without a colon, the standard parser with one), ``fq``
        (``organization:``, ``groups:``, ``name:``, ``id:`` terms under Solr's rules:
        only required ones filter, ``_fq_matches``), ``rows`` (at most 1000), ``start``,
        ``include_private``, ``sort`` (``score desc, metadata_modified desc`` by
        default; ``name asc``, ``metadata_modified desc``, ...) and ``fl`` (Solr's
        stored fields of each dataset).  A query Solr cannot parse is CKAN's 409
        "Search Error" (``ckan/views/api.py``)."""
        try:
            rows = max(0, min(int(params.get("rows", 10)), 1000))
            start = max(0, int(params.get("start", 0)))
        except (TypeError, ValueError):
            raise validation({"rows": ["Invalid integer"]}) from None
        include_private = str(params.get("include_private", "false")).lower() == "true"
        query = str(params.get("q", "") or "*:*")
        filters = _filter_terms(str(params.get("fq", "")))
        sort = str(params.get("sort", "score desc, metadata_modified desc"))
        hits = self._search(include_private and user is not None, query, filters, sort)
        fields = [f for f in re.split(r"[\s,]+", str(params.get("fl", ""))) if f]
        page = [self._package_dict(d.id, fields) for d in hits[start:start + rows]]
        return {"count": len(hits), "sort": sort, "results": page, "facets": {},
                "search_facets": {}}

    def _search(self, private: bool, query: str, filters: tuple, sort: str) -> list[Dataset]:
        """The datasets a search finds, in order; kept until the catalog changes (a
        paging client asks for the same search ten times in a row, as Solr caches)."""
        catalog = self.config.catalog
        key = (catalog.generation, private, query, filters, sort)
        with self.config.lock:
            found = self.config.searches.get(key)
        if found is not None:
            return found
        docs = self._index()[0]
        allowed = [docs[ds.id] for ds in catalog.datasets.values()
                   if (private or not ds.private) and _fq_matches(ds, filters)]
        try:
            ranked = solr_query.search(query, allowed, time.time())
        except solr_query.QuerySyntaxError as exc:
            raise ActionError(409, "Search Error", "Search error: (\"SOLR returned an "
                              f"error running query: {{'q': {query!r}}} Error: "
                              f"SolrError({str(exc)!r})\",)") from None
        hits = [catalog.datasets[doc.fields["id"][0]] for _, doc in ranked]
        if "name desc" in sort:
            hits.sort(key=lambda d: d.name, reverse=True)
        elif "name asc" in sort:
            hits.sort(key=lambda d: d.name)
        elif not sort.startswith("score"):
            hits.sort(key=lambda d: d.modified, reverse="asc" not in sort)
        with self.config.lock:
            if len(self.config.searches) > 64:
                self.config.searches.clear()
            self.config.searches[key] = hits
        return hits

    def _index(self) -> tuple[dict[str, solr_query.Document], dict[str, dict]]:
        """Every dataset as Solr indexes it (``ckan/lib/search/index.py``) and its stored
        fields, as ``fl`` returns them (the circle and collections by name), both made
        once per catalog generation: a page of 1,000 rows is a dict lookup per row."""
        catalog = self.config.catalog
        with self.config.lock:
            generation, docs, stored = self.config.index
        if generation == catalog.generation:
            return docs, stored
        docs, stored = {}, {}
        for ds in catalog.datasets.values():
            modified, created = iso_time(ds.modified), iso_time(ds.created)
            stored[ds.id] = {"id": ds.id, "name": ds.name, "title": ds.title,
                             "private": ds.private, "metadata_modified": modified,
                             "metadata_created": created, "num_resources": len(ds.resources),
                             "state": "active", "organization": ds.circle,
                             "groups": list(ds.collections), "tags": list(ds.tags),
                             "notes": ds.description}
            docs[ds.id] = solr_query.document({
                "id": ds.id, "name": ds.name, "title": ds.title, "notes": ds.description,
                "tags": ds.tags, "groups": ds.collections, "organization": ds.circle,
                "res_name": [r.name for r in ds.resources], "license_id": "CC0-1.0",
                "capacity": "private" if ds.private else "public",
                "metadata_modified": modified + "Z", "metadata_created": created + "Z",
                "num_resources": len(ds.resources)}, ds.modified)
        with self.config.lock:
            self.config.index = (catalog.generation, docs, stored)
        return docs, stored

    def action_organization_list(self, params: dict, user: dict | None) -> list:
        return self._group_list(self.config.catalog.circles, "organization", params)

    def action_group_list(self, params: dict, user: dict | None) -> list:
        return self._group_list(self.config.catalog.collections, "group", params)

    def _group_list(self, groups: dict[str, Group], kind: str, params: dict) -> list:
        names = sorted(groups)
        try:
            offset = int(params.get("offset", 0))
            limit = int(params.get("limit", 1000))
        except (TypeError, ValueError):
            raise validation({"limit": ["Invalid integer"]}) from None
        names = names[offset:offset + limit]
        if str(params.get("all_fields", "false")).lower() != "true":
            return names
        counts: dict[str, int] = {}
        for ds in self.config.catalog.datasets.values():
            if not ds.private:
                for name in ([ds.circle] if kind == "organization" else ds.collections):
                    counts[name] = counts.get(name, 0) + 1
        return [self._group_dict(groups[n], kind) | {"package_count": counts.get(n, 0)}
                for n in names]

    @staticmethod
    def _group_dict(group: Group, kind: str) -> dict:
        return {"id": group.id, "name": group.name, "title": group.title,
                "display_name": group.title, "description": "", "image_url": "",
                "is_organization": kind == "organization", "type": kind,
                "state": "active", "approval_status": "approved",
                "created": "2026-01-01T00:00:00.000000"}

    def action_dcserv(self, params: dict, user: dict | None) -> Any:
        # validation order of ckanext-dc_serve serve.py::dcserv
        version = str(params.get("version", "2"))
        query = params.get("query")
        if not query:
            raise validation("Please specify 'query' parameter!")
        if "id" not in params:
            raise validation("Please specify 'id' parameter!")
        if version == "1":
            raise validation("Version '1' of the DCOR API is not supported anymore. "
                             "Please use version '2' instead!")
        if version != "2":
            raise validation("Please specify version '1' or '2'!")
        res = self._resource(params["id"], user)
        if not res.name.endswith((".rtdc", ".dc")):
            raise validation(f"Resource ID {res.id} must be an .rtdc dataset!")
        if query == "metadata":
            return res.metadata
        if query == "size":
            return res.metadata.get("experiment", {}).get("event count", 0)
        if query == "valid":
            return res.path.exists()
        if query == "feature_list":
            return []
        if query == "logs":
            return res.logs
        if query == "tables":
            return res.tables
        if query == "trace_list":
            if res.trace_names is None:  # DCOR hits a KeyError here, hence a 500
                raise KeyError("trace_list")
            return res.trace_names
        if query == "basins":
            return self._basins(res)
        raise validation(f"Invalid query parameter '{query}'!")

    # -- dicts -----------------------------------------------------------------
    def _basins(self, res: Resource) -> list[dict]:
        private = self.config.catalog.is_private(res)
        basins = []
        for artifact, features in (("condensed", res.condensed_features),
                                   ("resource", res.features)):
            basin: dict[str, Any] = {
                "name": f"{artifact}-{res.id[:5]}", "format": "http", "type": "remote",
                "mapping": "same", "perishable": private,
                "key": f"dcor-{'presigned-' if private else ''}{artifact}-{res.id}",
            }
            if private:
                url, t_req, t_exp = self.presign(artifact, res.id)
                basin.update(time_request=t_req, time_expiration=t_exp, urls=[url])
            else:
                basin["urls"] = [self.object_url(artifact, res.id)]
            if res.artifact_path(artifact) is not None:
                # serve.py get_resource_kernel_complement_condensed: with intra-dataset
                # basins on, also every feature the condensed file's basins declare
                if artifact == "condensed" and self.config.intra_dataset_basins:
                    features = sorted(set(features) | set(res.condensed_basin_features))
                basin["features"] = list(features)
            basins.append(basin)
        return basins

    def _bucket(self, rid: str) -> str:
        catalog = self.config.catalog
        return bucket_name(catalog.circle_of(catalog.resources[rid]).id)

    def object_url(self, artifact: str, rid: str) -> str:
        return f"{self.config.store_base}/{self._bucket(rid)}/{object_key(artifact, rid)}"

    def presign(self, artifact: str, rid: str, ttl: float | None = None) -> tuple[str, float, int]:
        """A URL valid until an epoch, rounded like dcor_shared's ``create_presigned_url``."""
        ttl = self.config.presign_ttl if ttl is None else ttl
        now = time.time()
        wrap = max(1, int(0.2 * ttl))
        expires = int(round(now / wrap) * wrap + ttl)
        path = f"/{self._bucket(rid)}/{object_key(artifact, rid)}"
        sig = self._signature(path, expires)
        # DCOR hands out the same URL within a rounding window; for the expiry fault, the
        # last time a URL was handed out counts as its issue time
        self.config.issued[sig] = now
        if len(self.config.issued) > 100_000:
            self.config.issued.clear()
        return f"{self.config.store_base}{path}?Expires={expires}&Signature={sig}", now, expires

    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self.config.secret, f"{path}\n{expires}".encode(),
                        hashlib.sha256).hexdigest()

    def _resource_dict(self, res: Resource) -> dict:
        api = self.config.api_base
        meta = res.metadata
        fl = "fluorescence" in meta and meta["fluorescence"].get("channel count", 0)
        if res.is_rtdc:
            mimetype, fmt = "RT-DC", "RT-FDC" if fl else "RT-DC"
        else:
            mimetype = mimetypes.guess_type(res.name)[0] or "application/octet-stream"
            fmt = res.name.rsplit(".", 1)[-1].upper()
        created = iso_time(res.created)
        out = {"id": res.id, "package_id": res.dataset_id, "name": res.name,
               "url": f"{api}/dataset/{res.dataset_id}/resource/{res.id}/download/{res.name.lower()}",
               "url_type": "s3_upload", "mimetype": mimetype, "format": fmt,
               "size": res.size, "sha256": res.sha256, "etag": res.etag, "s3_available": True,
               "s3_url": self.object_url("resource", res.id), "position": res.position,
               "state": "active", "description": "", "hash": "", "resource_type": None,
               "created": created, "last_modified": created, "metadata_modified": created}
        for section, items in meta.items():
            if isinstance(items, dict):
                for key, value in items.items():
                    out[f"dc:{section}:{key}"] = value
        return out

    def _package_dict(self, ds_id: str, fields: list[str] | None = None) -> dict:
        """The dataset dict; with ``fields``, only those (Solr's stored fields, as
        ``fl`` asks), without building the rest."""
        catalog = self.config.catalog
        ds: Dataset = catalog.datasets[ds_id]
        if fields:
            stored = self._index()[1][ds_id]
            if all(f in stored for f in fields):
                return {f: stored[f] for f in fields}
            full = self._package_dict(ds_id)
            return {f: full[f] for f in fields if f in full}
        circle = catalog.circles[ds.circle]
        return {"id": ds.id, "name": ds.name, "title": ds.title, "type": "dataset",
                "state": "active", "private": ds.private, "owner_org": circle.id,
                "authors": "dcorfs", "doi": "", "references": "", "notes": ds.description,
                "license_id": "CC0-1.0", "num_resources": len(ds.resources),
                "metadata_created": iso_time(ds.created),
                "metadata_modified": iso_time(ds.modified),
                "organization": self._group_dict(circle, "organization"),
                "resources": [self._resource_dict(r) for r in ds.resources],
                "tags": [{"name": tag, "display_name": tag, "state": "active"}
                         for tag in ds.tags], "num_tags": len(ds.tags),
                "groups": [self._group_dict(catalog.collections[n], "group")
                           for n in ds.collections]}

    # -- download routes ---------------------------------------------------------
    def _route(self, path: str) -> None:
        self.config.stats.add(route_requests=1)
        uid = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
        match = re.fullmatch(
            rf"/dataset/({uid})/resource/({uid})/(download/[^/]+|condensed\.rtdc|preview\.jpg)",
            path)
        res = self.config.catalog.resources.get(match.group(2)) if match else None
        user = self._user()
        if (res is None or res.dataset_id != match.group(1)
                or (self.config.catalog.is_private(res) and user is None)):
            self._send(404, b"<html><body><h1>Resource not found</h1></body></html>", "text/html")
            return
        artifact = {"condensed.rtdc": "condensed", "preview.jpg": "preview"}.get(
            match.group(3), "resource")
        if res.artifact_path(artifact) is None:
            # ckanext-dc_view route_funcs.py dcpreview: 'No preview available'
            what = b"No preview available" if artifact == "preview" else \
                b"Condensed resource not found"
            self._send(404, b"<html><body><h1>" + what + b"</h1></body></html>", "text/html")
            return
        ttl = 3600 if self.config.catalog.is_private(res) else 86400
        url, _, _ = self.presign(artifact, res.id, ttl=ttl)
        self._send(302, b"", "text/html", {"Location": url})

    # -- object store ------------------------------------------------------------
    def _store_error(self, status: int, code: str, message: str) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>{message}</Message></Error>").encode()
        self.config.stats.add(**{f"store_status_{status}": 1})
        self._send(status, body, "application/xml", reason=STORE_REASONS.get(status))

    def _object(self, url: urllib.parse.SplitResult) -> None:
        stats = self.config.stats
        stats.add(store_requests=1)
        if self.headers.get("Authorization") is not None:
            stats.add(store_auth_headers=1)  # a client leaked its token here
        match = re.fullmatch(
            r"/([^/]+)/(resource|condensed|preview)/([0-9a-f]{3})/([0-9a-f-]{3})/([0-9a-f-]+)",
            url.path)
        res = None
        if match:
            res = self.config.catalog.resources.get(match.group(3) + match.group(4) + match.group(5))
            if res is not None and match.group(1) != self._bucket(res.id):
                res = None
        artifact = match.group(2) if match else ""
        path = res.artifact_path(artifact) if res else None
        if path is None:
            # anonymous clients may read only objects tagged public and may not list the
            # bucket, so S3 cannot tell them a key is missing: 403 (dcor_shared s3.py
            # require_bucket; dclab's test_http_file_does_not_exist)
            if self._signed(url):
                self._store_error(404, "NoSuchKey", "The specified key does not exist.")
            else:
                self._store_error(403, "AccessDenied", "Access Denied")
            return
        if self.config.catalog.is_private(res) and not self._signed(url):
            self._store_error(403, "AccessDenied", "Access Denied")
            return
        if self._fault("error"):
            self.config.stats.add(store_status_503=1)
            self._send(503, b"<Error><Code>SlowDown</Code></Error>", "application/xml",
                       self._retry_after_header(), reason="Service Unavailable")
            return
        size = path.stat().st_size
        etag = res.artifact_etag(artifact)
        headers = {"ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT"}
        rng = self.headers.get("Range")
        start, stop, status = 0, size, 200
        if rng:
            parsed = _parse_range(rng, size)
            if parsed is None:
                headers["Content-Range"] = f"bytes */{size}"
                stats.add(store_status_416=1)
                self._send(416, b"", "application/xml", headers)
                return
            if parsed != (-1, -1) and not self._fault("full_body"):
                start, stop = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
                if self._fault("wrong_range"):
                    shift = 1 if stop < size else -1
                    headers["Content-Range"] = f"bytes {start + shift}-{stop - 1 + shift}/{size}"
        stats.add(store_range_requests=1 if status == 206 else 0,
                  store_full_requests=1 if status == 200 else 0)
        self.send_response(status, REASONS[status])
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(stop - start))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        sent = 0
        cut = None
        if self._fault("reset"):
            cut = ("reset", self.config.faults.cut_point(stop - start))
        elif self._fault("truncate"):
            cut = ("truncate", self.config.faults.cut_point(stop - start))
        try:
            with path.open("rb") as fd:
                fd.seek(start)
                remaining = stop - start if cut is None else cut[1]
                while remaining > 0:
                    piece = fd.read(min(remaining, 256 * 1024))
                    if not piece:
                        break
                    self._write_body(piece)
                    sent += len(piece)
                    remaining -= len(piece)
            if cut is not None:
                self._abort(reset=cut[0] == "reset")
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True  # clients may hang up after the headers (dclab does)
        finally:
            stats.add(store_bytes=sent, **{f"store_bytes_{artifact}": sent})

    def _signed(self, url: urllib.parse.SplitResult) -> bool:
        query = dict(urllib.parse.parse_qsl(url.query))
        try:
            expires = int(query.get("Expires", ""))
        except ValueError:
            return False
        good = hmac.compare_digest(query.get("Signature", ""), self._signature(url.path, expires))
        if good and (expires < time.time() or self._expired_early(query["Signature"])):
            self.config.stats.add(store_expired=1)
            return False
        return good


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Half-open (start, stop) for one ``bytes=`` range; (-1, -1) to ignore; None for 416."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or (not match.group(1) and not match.group(2)):
        return (-1, -1)  # malformed or multi-range: S3 ignores it and sends the whole object
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        stop = min(int(last) + 1, size) if last else size
        if last and int(last) < start:
            return (-1, -1)
    else:
        start, stop = max(0, size - int(last)), size
    if start >= size or stop <= start:
        return None
    return start, stop


class _ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class DcorServer:
    """Both listening sockets and their threads; ``start`` returns once they accept."""

    def __init__(self, config: ServerConfig, host: str = "127.0.0.1", port: int = 8000,
                 store_port: int = 0, site_address: str | None = None) -> None:
        """``site_address``: also answer the API on port 80 of this address and name the
        site by it (``http://<address>``) in the basins written into condensed files, as
        DCOR names itself by its ``ckan.site_url``: dclab follows a ``dcor`` basin only
        when its URL has no port.  ``"auto"``: the first free loopback address from
        127.0.0.2 when ``host`` is a loopback address; None: name the site by the API's
        own address."""
        self.config = config
        # socketserver's per-connection timeout: a keep-alive connection that waits longer
        # than this for its next request is closed, as nginx (75 s) and S3 (~20 s) do
        idle = {"timeout": config.idle_close_s} if config.idle_close_s > 0 else {}
        api_handler = type("ApiHandler", (_Handler,), {"config": config, "is_store": False,
                                                       **idle})
        store_handler = type("StoreHandler", (_Handler,), {"config": config, "is_store": True,
                                                           **idle})
        self.api = _ThreadingServer((host, port), api_handler)
        self.store = _ThreadingServer((host, store_port), store_handler)
        config.api_base = f"http://{host}:{self.api.server_address[1]}"
        config.store_base = f"http://{host}:{self.store.server_address[1]}"
        self.site = _site_listener(site_address, host, api_handler)
        config.site_url = (f"http://{self.site.server_address[0]}" if self.site is not None
                           else config.api_base)
        if site_address is not None and self.site is None:
            log.info("DCS111 cannot listen on port 80 of a loopback address: condensed "
                     "files name the site %s (dclab does not follow basins with a port)",
                     config.site_url)
        self._threads: list[threading.Thread] = []

    def _servers(self) -> list[_ThreadingServer]:
        return [srv for srv in (self.api, self.store, self.site) if srv is not None]

    def start(self) -> None:
        for srv in self._servers():
            thread = threading.Thread(target=srv.serve_forever, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for srv in self._servers():
            srv.shutdown()
            srv.server_close()


def _site_listener(address: str | None, host: str, handler: type) -> _ThreadingServer | None:
    """The API's listener on port 80 of ``address`` (see ``DcorServer``), or None."""
    if address is None:
        return None
    if address != "auto":
        candidates = [address]
    elif host.startswith("127.") or host == "localhost":
        candidates = [f"127.0.0.{n}" for n in range(2, 255)]
    else:
        return None
    for candidate in candidates:
        try:
            return _ThreadingServer((candidate, 80), handler)
        except OSError:  # taken by another server, or no privilege for port 80
            continue
    return None


def read_or_create_token(path: os.PathLike) -> str:
    """The token this server accepts; created (mode 0600) when the file does not exist."""
    try:
        token = open(path, encoding="utf-8").read().strip()
    except FileNotFoundError:
        token = "dcorfs." + secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        log.info("DCS104 wrote a new API token to %s", path)
    if not token:
        raise OSError(22, f"token file {path} is empty")
    return token


FQ_FIELDS = ("organization", "groups", "name", "id", "private", "capacity")


def _filter_terms(fq: str) -> tuple[tuple[str, str, str], ...]:
    """``fq`` as Solr's standard parser reads it: ``(occur, field, value)`` terms,
    occur ``+`` (required: a ``+`` prefix, or either side of ``AND``), ``-``
    (prohibited: ``-`` or ``NOT``) or ``?`` (optional).  Values may be quoted.
    Only the fields the catalog knows are accepted, as a Solr schema would."""
    tokens = re.findall(r'[+-]?[A-Za-z_]+:(?:"[^"]*"|\S+)|\S+', fq)
    terms: list[list[str]] = []
    pending = "?"
    for index, token in enumerate(tokens):
        if token in ("AND", "&&"):
            if terms:
                terms[-1][0] = "+" if terms[-1][0] == "?" else terms[-1][0]
            pending = "+"
            continue
        if token in ("OR", "||"):
            continue
        if token == "NOT":
            pending = "-"
            continue
        occur = token[0] if token[0] in "+-" else pending
        field, sep, value = token.lstrip("+-").partition(":")
        if not sep or field not in FQ_FIELDS:
            raise ActionError(409, "Search Error",
                              f"Search error: cannot parse fq {token!r}")
        terms.append([occur, field, value.strip('"')])
        pending = "?"
    return tuple(tuple(t) for t in terms)


def _fq_matches(ds: Dataset, terms: tuple[tuple[str, str, str], ...]) -> bool:
    """Solr's rule, with CKAN's own ``+capacity:public`` (or its private variant)
    always required: a required term must match, a prohibited one must not, and an
    optional one then only ranks (ckan issue #4477: an unprefixed ``organization:x``
    lists every dataset)."""
    for occur, field, value in terms:
        hit = field == "capacity" or _matches(ds, field, value)
        if (occur == "+" and not hit) or (occur == "-" and hit):
            return False
    return True


def _matches(ds: Dataset, field: str, value: str) -> bool:
    if field == "organization":
        return ds.circle == value
    if field == "groups":
        return value in ds.collections
    if field == "private":
        return str(ds.private).lower() == value.lower()
    return getattr(ds, field, None) == value
