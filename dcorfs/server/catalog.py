"""What the local DCOR knows: circles, collections, datasets, resources and artifacts.

Every ``.rtdc`` file below a folder, and every supplementary file DCOR allows
(``SUPPLEMENTARY``), becomes a resource.  Its id is derived from its path relative to
that folder, so it is stable across restarts and machines (tests and bookmarks rely
on that).  Each folder holding such files becomes a dataset (CKAN package) named
after its path.  Circles (organizations) and collections (groups) come from an
optional manifest, ``catalog.json`` in the top folder::

    {"circles": {"blood-lab": {"title": "Blood lab", "datasets": ["blood-*"]}},
     "collections": {"blood-study": {"title": "A study", "datasets": ["blood-cells", "beads"]}},
     "datasets": {"blood-cells": {"title": "Blood cells of a donor", "tags": ["blood"],
                                  "description": "RT-DC of whole blood"}}}

where ``datasets`` of circles and collections are glob patterns over the datasets'
folders, and ``datasets`` at the top gives a dataset (by its folder) a title, tags and a
description, which DCOR's search finds.  A dataset no circle
claims is in the circle ``dcorfs-local``.  ``synthetic=N`` adds N datasets in circles
of 200 (``synthetic-000``, ...), each with one resource that shares the first RT-DC
file's bytes: a catalog of DCOR's size that costs nothing on disk.  Condensed copies
are made the way DCOR makes them, with dclab's condense, and kept in a cache folder
keyed by the original's SHA-256 so a restart does not redo them.
"""
from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import functools
import hashlib
import json
import logging
import math
import os
import pathlib
import re
import shutil
import tempfile
import uuid
import warnings
from typing import Any

import numpy as np

from . import dcor_jobs

log = logging.getLogger(__name__)

ID_NAMESPACE = uuid.UUID("6f1f7a52-6d0f-4b7e-9a7e-dc0f5dcf0001")
ORG_NAME = "dcorfs-local"  # the circle of datasets the manifest does not place
MANIFEST = "catalog.json"
#: what the synthetic datasets hold (a tag and a word of the title each), in turn
SYNTHETIC_SAMPLES = ("blood", "beads", "hl60", "neutrophils", "erythrocytes")
RTDC_SUFFIXES = (".rtdc",)
# the supplementary files DCOR accepts as resources (dcor_schemas)
SUPPLEMENTARY = (".ini", ".csv", ".tsv", ".pdf", ".txt", ".jpg", ".png", ".tif", ".py",
                 ".ipynb", ".poly", ".sof", ".so2")
SYNTHETIC_CIRCLE_SIZE = 200


@functools.lru_cache(maxsize=65536)
def resource_id(relpath: str) -> str:
    """The stable id of the resource at ``relpath`` (below the data folder)."""
    return str(uuid.uuid5(ID_NAMESPACE, f"resource:{relpath}"))


def iso_time(epoch: float) -> str:
    """CKAN's timestamp format (UTC, no zone): 2026-01-01T00:00:00.000000."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")


@dataclasses.dataclass
class Resource:
    """One ``.rtdc`` file and everything the API answers about it."""

    id: str
    name: str
    path: pathlib.Path
    relpath: str
    dataset_id: str
    position: int
    size: int = 0
    sha256: str = ""
    etag: str = ""
    condensed_path: pathlib.Path | None = None  # as served: with DCOR's basins in it
    condensed_base: pathlib.Path | None = None  # dclab's condense of the original
    condensed_etag: str = ""
    condense_error: str = ""
    identifier: str | None = None  # dclab's measurement identifier
    file_basins: list[dict] = dataclasses.field(default_factory=list)
    features_all: list[str] = dataclasses.field(default_factory=list)  # innate, ancillary, basin
    preview_path: pathlib.Path | None = None
    preview_etag: str = ""
    created: float = 0.0  # the file's modification time
    metadata: dict = dataclasses.field(default_factory=dict)
    features: list[str] = dataclasses.field(default_factory=list)
    condensed_features: list[str] = dataclasses.field(default_factory=list)
    # what dcserv adds with enable_intra_dataset_basins: the features of the basins
    # written into the condensed file
    condensed_basin_features: list[str] = dataclasses.field(default_factory=list)
    logs: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    tables: dict[str, list] = dataclasses.field(default_factory=dict)
    trace_names: list[str] | None = None

    @property
    def is_rtdc(self) -> bool:
        return self.name.lower().endswith(RTDC_SUFFIXES)

    def artifact_path(self, artifact: str) -> pathlib.Path | None:
        if artifact == "resource":
            return self.path
        if artifact == "condensed":
            return self.condensed_path
        if artifact == "preview":
            return self.preview_path
        return None

    def artifact_etag(self, artifact: str) -> str:
        return {"resource": self.etag, "condensed": self.condensed_etag,
                "preview": self.preview_etag}.get(artifact, "")


@dataclasses.dataclass
class Group:
    """A circle (CKAN organization) or a collection (CKAN group)."""

    id: str
    name: str
    title: str
    patterns: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Dataset:
    id: str
    name: str
    title: str
    private: bool
    folder: str = ""
    circle: str = ORG_NAME
    collections: list[str] = dataclasses.field(default_factory=list)
    resources: list[Resource] = dataclasses.field(default_factory=list)
    tags: list[str] = dataclasses.field(default_factory=list)
    description: str = ""  # CKAN's ``notes``

    created: float = 0.0  # the oldest resource's time
    modified: float = 0.0  # the newest resource's time

    def add(self, res: "Resource") -> None:
        self.resources.append(res)
        self.created = min(self.created or res.created, res.created)
        self.modified = max(self.modified, res.created)


def group_id(kind: str, name: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{kind}:{name}"))


def object_key(artifact: str, rid: str) -> str:
    """DCOR's object key layout (dcor_shared ``s3cc``)."""
    return f"{artifact}/{rid[:3]}/{rid[3:6]}/{rid[6:]}"


def bucket_name(circle_id: str) -> str:
    """One bucket per circle, as on DCOR."""
    return f"circle-{circle_id}"


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")
    return slug or "root"


def _file_digests(path: pathlib.Path) -> tuple[str, str]:
    sha = hashlib.sha256()
    md5 = hashlib.md5()
    with path.open("rb") as fd:
        for block in iter(lambda: fd.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def to_json_compatible(obj: Any) -> Any:
    """Turn numpy scalars/arrays into JSON types; NaN becomes None (dc_serve >= 1.0.9)."""
    if isinstance(obj, dict):
        return {str(k): to_json_compatible(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_compatible(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_json_compatible(obj.tolist())
    if isinstance(obj, np.generic):
        return to_json_compatible(obj.item())
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, pathlib.Path):
        return str(obj)
    return obj


class Catalog:
    """Scans a folder once and answers lookups; immutable afterwards, like DCOR."""

    def __init__(self, root: pathlib.Path, cache_dir: pathlib.Path,
                 private_patterns: list[str] | None = None, synthetic: int = 0,
                 no_condensed: list[str] | None = None, previews: bool = True) -> None:
        self.root = pathlib.Path(root).resolve()
        self.cache_dir = pathlib.Path(cache_dir)
        self.private_patterns = list(private_patterns or [])
        self.no_condensed = list(no_condensed or [])  # condensing not finished, or failed
        self.previews = previews
        self.synthetic = synthetic
        # where the server is, for the basins DCOR writes into condensed files: its
        # ckan.site_url and its object store (set by the server once it listens)
        self.site_url = ""
        self.store_base = ""
        self._served: pathlib.Path | None = None  # this server's condensed files
        self.generation = 0
        self.circles: dict[str, Group] = {}
        self.collections: dict[str, Group] = {}
        self.datasets: dict[str, Dataset] = {}
        self.resources: dict[str, Resource] = {}

    def scan(self) -> None:
        """Find files, make condensed copies and read metadata (slow once, then cached).

        May be called again while serving (``POST /_dcorfs/rescan``): the new catalog
        replaces the old one at once, and files seen before are not read again.
        """
        if not self.root.is_dir():
            raise OSError(2, f"data folder does not exist: {self.root}")
        manifest = self._manifest()
        files = sorted(p for p in self.root.rglob("*") if p.is_file()
                       and p.name.lower().endswith(RTDC_SUFFIXES + SUPPLEMENTARY))
        if not any(p.name.lower().endswith(RTDC_SUFFIXES) for p in files):
            log.warning("DCS101 no .rtdc files below %s", self.root)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        circles = {ORG_NAME: Group(group_id("organization", ORG_NAME), ORG_NAME,
                                   "dcorfs local circle")}
        collections: dict[str, Group] = {}
        for kind, target in (("circles", circles), ("collections", collections)):
            for name, spec in (manifest.get(kind) or {}).items():
                target[name] = Group(group_id("organization" if kind == "circles" else "group",
                                              name), name, spec.get("title", name),
                                     list(spec.get("datasets", [])))
        datasets: dict[str, Dataset] = {}
        resources: dict[str, Resource] = {}
        for index, path in enumerate(files, 1):
            relpath = path.relative_to(self.root).as_posix()
            folder = path.parent.relative_to(self.root).as_posix()
            ds_id = str(uuid.uuid5(ID_NAMESPACE, f"dataset:{folder}"))
            dataset = datasets.get(ds_id)
            if dataset is None:
                described = (manifest.get("datasets") or {}).get(folder) or {}
                dataset = Dataset(id=ds_id, name=_slug(folder if folder != "." else "root"),
                                  title=str(described.get("title") or (
                                      folder if folder != "." else self.root.name)),
                                  private=False, folder=folder,
                                  tags=[str(tag) for tag in described.get("tags") or []],
                                  description=str(described.get("description") or ""))
                dataset.circle = next((c.name for c in circles.values()
                                       if any(fnmatch.fnmatch(folder, p) for p in c.patterns)),
                                      ORG_NAME)
                dataset.collections = sorted(
                    c.name for c in collections.values()
                    if any(fnmatch.fnmatch(folder, p) for p in c.patterns))
                datasets[ds_id] = dataset
            if any(fnmatch.fnmatch(relpath, pat) for pat in self.private_patterns):
                dataset.private = True
            rid = resource_id(relpath)
            res = Resource(id=rid, name=path.name, path=path, relpath=relpath,
                           dataset_id=ds_id, position=len(dataset.resources))
            known = self.resources.get(rid)
            if known is not None and known.created == path.stat().st_mtime:
                res = dataclasses.replace(known, position=res.position)
            else:
                log.info("DCS102 [%d/%d] preparing %s", index, len(files), relpath)
                self._prepare_any(res)
            dataset.add(res)
            resources[rid] = res
        for dataset in datasets.values():
            for res in dataset.resources:
                self._condensed_as_dcor_serves(res, dataset, circles)
        self._add_synthetic(datasets, resources, circles)
        if not any(ds.circle == ORG_NAME for ds in datasets.values()):
            del circles[ORG_NAME]  # the default circle exists only when it holds something
        self.circles, self.collections = circles, collections
        self.datasets, self.resources = datasets, resources
        self.generation += 1  # searches kept by the server are stale now

    def _manifest(self) -> dict:
        path = self.root / MANIFEST
        if not path.exists():
            return {}
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise OSError(22, f"{path} is not a readable JSON manifest: {exc}") from None
        for kind in ("circles", "collections"):
            for name in manifest.get(kind) or {}:
                if _slug(name) != name or not 2 <= len(name) <= 100:
                    raise OSError(22, f"{path}: {name!r} is not a CKAN name (2 to 100 "
                                      f"lowercase letters, digits, - and _)")
        return manifest

    def _prepare_any(self, res: Resource) -> None:
        res.size = res.path.stat().st_size
        res.created = res.path.stat().st_mtime
        if not res.is_rtdc:
            res.sha256, res.etag = _file_digests(res.path)
            return
        try:
            self._prepare(res)
        except Exception as exc:  # noqa: BLE001 - one unreadable upload must not stop DCOR
            log.warning("DCS107 %s cannot be read (%s: %s); served as a resource without "
                        "metadata or features", res.relpath, type(exc).__name__, exc)
            res.metadata, res.features, res.logs, res.tables = {}, [], {}, {}

    def _add_synthetic(self, datasets: dict[str, Dataset], resources: dict[str, Resource],
                       circles: dict[str, Group]) -> None:
        if not self.synthetic:
            return
        source = next((r for r in resources.values() if r.is_rtdc and r.features), None)
        if source is None:
            raise OSError(22, "a synthetic catalog needs one readable .rtdc file to share")
        for i in range(self.synthetic):
            circle = f"synthetic-{i // SYNTHETIC_CIRCLE_SIZE:03d}"
            if circle not in circles:
                circles[circle] = Group(group_id("organization", circle), circle, circle)
            name = f"synthetic-{i:05d}"
            # five kinds of sample in turn, so that a search finds a fifth of them
            sample = SYNTHETIC_SAMPLES[i % len(SYNTHETIC_SAMPLES)]
            ds = Dataset(id=str(uuid.uuid5(ID_NAMESPACE, f"dataset:{name}")), name=name,
                         title=f"Synthetic {sample} measurement {i}", private=False,
                         folder=name, circle=circle, tags=[sample, "synthetic"],
                         description=f"RT-DC measurement {i} of {sample}, made up to fill "
                                     f"the catalog")
            rid = resource_id(f"{name}/{source.name}")
            res = dataclasses.replace(source, id=rid, dataset_id=ds.id, position=0,
                                      relpath=f"{name}/{source.name}")
            ds.add(res)
            datasets[ds.id] = ds
            resources[rid] = res

    def _prepare(self, res: Resource) -> None:
        import dclab  # the server is the only place that needs dclab at run time

        res.sha256, res.etag = _file_digests(res.path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with dclab.new_dataset(res.path) as ds:
                res.metadata = to_json_compatible(ds.config.as_dict(pop_filtering=True))
                res.features = sorted(ds.features_innate)
                res.identifier = ds.get_measurement_identifier()
                res.file_basins = dcor_jobs.file_basins(ds)
                res.features_all = sorted(set(ds.features) | {
                    f for b in ds.basins_get_dicts() if b.get("type") == "remote"
                    for f in b.get("features") or []})
                res.logs = {k: [str(x) for x in ds.logs[k]] for k in ds.logs}
                res.tables = {}
                for name in ds.tables:
                    arr = np.asarray(ds.tables[name])
                    names = list(arr.dtype.names) if arr.dtype.names else None
                    res.tables[name] = [names, to_json_compatible(arr.tolist())]
                if "trace" in ds:
                    res.trace_names = sorted(ds["trace"].keys())
        self._condense(res)
        self._preview(res)

    def _preview(self, res: Resource) -> None:
        """ckanext-dc_view's preview JPEG, made once per original (kept by sha256)."""
        if not self.previews:
            return
        out = self.cache_dir / f"{res.sha256}_preview{dcor_jobs.PREVIEW_VERSION}.jpg"
        failed = out.with_suffix(".failed")
        if not out.exists() and not failed.exists():
            if not dcor_jobs.make_preview(res.path, out):
                failed.write_text("no preview\n")
        if out.exists():
            res.preview_path = out
            _, res.preview_etag = _file_digests(out)

    def _condense(self, res: Resource) -> None:
        import dclab
        import dclab.cli

        out = self.cache_dir / f"{res.sha256}_condensed.rtdc"
        failed = self.cache_dir / f"{res.sha256}_condensed.failed"
        if not out.exists() and not failed.exists():
            tmp = self.cache_dir / f"{res.sha256}_condensed.tmp.rtdc"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    dclab.cli.condense(res.path, tmp, store_ancillary_features=True,
                                       store_basin_features=True)
                os.replace(tmp, out)
            except Exception as exc:  # noqa: BLE001 - DCOR keeps going without a condensed file
                tmp.unlink(missing_ok=True)
                failed.write_text(f"{type(exc).__name__}: {exc}\n")
        if failed.exists():
            res.condense_error = failed.read_text().strip()
            log.warning("DCS103 no condensed file for %s (%s), serving the original only",
                        res.relpath, res.condense_error)
            return
        if any(fnmatch.fnmatch(res.relpath, pat) for pat in self.no_condensed):
            res.condense_error = "condensing has not finished (--no-condensed)"
            log.info("DCS110 %s: no condensed file (--no-condensed)", res.relpath)
            return
        res.condensed_base = out
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with dclab.new_dataset(out) as ds:
                res.condensed_features = sorted(ds.features_innate)
                # dcserv's logs answer: original logs plus condensed logs not yet present
                for name in ds.logs:
                    if name not in res.logs:
                        res.logs[name] = [str(x) for x in ds.logs[name]]

    def _condensed_as_dcor_serves(self, res: Resource, dataset: Dataset,
                                  circles: dict[str, Group]) -> None:
        """The condensed file with the basins DCOR's job writes into it (``dcor_jobs``),
        in a folder of this server's: its basins name this server's addresses."""
        if res.condensed_base is None:
            res.condensed_path = None
            return
        runid = res.identifier
        upstream = []
        for basin in res.file_basins:
            for other in dataset.resources:
                if other.is_rtdc and other.features and dcor_jobs.is_basin_of(
                        runid, other.identifier, basin):
                    feats = set(other.features_all)
                    if other.condensed_base is not None:
                        feats |= set(other.condensed_features)
                    upstream.append({"rid": other.id, "res_name": other.name,
                                     "features": sorted(feats), "mapping": basin["mapping"]})
        circle = circles[dataset.circle]
        object_url = f"{self.store_base}/{bucket_name(circle.id)}/{object_key('resource', res.id)}"
        plan = {"site": self.site_url, "rid": res.id, "url": object_url, "up": upstream,
                "base": res.sha256, "innate": res.features}
        if self._served is None:
            self._served = pathlib.Path(tempfile.mkdtemp(prefix="dcorfs-serve-condensed-"))
        out = self._served / f"{res.sha256}-{dcor_jobs.digest(plan)}_condensed.rtdc"
        if not out.exists():
            dcor_jobs.write_dcor_basins(res.condensed_base, out, res.path, res.features,
                                        self.site_url, res.id, object_url, upstream)
        res.condensed_path = out
        _, res.condensed_etag = _file_digests(out)
        res.condensed_basin_features = dcor_jobs.basin_features(out)

    def close(self) -> None:
        """Remove this server's condensed files."""
        if self._served is not None:
            shutil.rmtree(self._served, ignore_errors=True)

    def is_private(self, res: Resource) -> bool:
        return self.datasets[res.dataset_id].private

    def circle_of(self, res: Resource) -> Group:
        return self.circles[self.datasets[res.dataset_id].circle]

    def summary(self) -> list[dict]:
        """One row per resource, for ``--list`` and for tests."""
        return [{"id": r.id, "path": r.relpath, "private": self.is_private(r),
                 "condensed": r.condensed_path is not None, "size": r.size}
                for r in self.resources.values()]
