"""What the local DCOR knows: datasets, resources and their artifacts.

Every ``.rtdc`` file below a folder becomes a resource.  Its id is derived from its
path relative to that folder, so it is stable across restarts and machines (tests
and bookmarks rely on that).  Each folder holding ``.rtdc`` files becomes a dataset
(CKAN package) in one circle (organization).  Condensed copies are made the way DCOR
makes them, with dclab's condense, and kept in a cache folder keyed by the
original's SHA-256 so a restart does not redo them.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import logging
import math
import os
import pathlib
import re
import uuid
import warnings
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ID_NAMESPACE = uuid.UUID("6f1f7a52-6d0f-4b7e-9a7e-dc0f5dcf0001")
ORG_ID = str(uuid.uuid5(ID_NAMESPACE, "organization:dcorfs-local"))
ORG_NAME = "dcorfs-local"


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
    condensed_path: pathlib.Path | None = None
    condensed_etag: str = ""
    condense_error: str = ""
    metadata: dict = dataclasses.field(default_factory=dict)
    features: list[str] = dataclasses.field(default_factory=list)
    condensed_features: list[str] = dataclasses.field(default_factory=list)
    logs: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    tables: dict[str, list] = dataclasses.field(default_factory=dict)
    trace_names: list[str] | None = None

    def artifact_path(self, artifact: str) -> pathlib.Path | None:
        if artifact == "resource":
            return self.path
        if artifact == "condensed":
            return self.condensed_path
        return None

    def artifact_etag(self, artifact: str) -> str:
        return self.etag if artifact == "resource" else self.condensed_etag


@dataclasses.dataclass
class Dataset:
    id: str
    name: str
    title: str
    private: bool
    resources: list[Resource] = dataclasses.field(default_factory=list)


def object_key(artifact: str, rid: str) -> str:
    """DCOR's object key layout (dcor_shared ``s3cc``)."""
    return f"{artifact}/{rid[:3]}/{rid[3:6]}/{rid[6:]}"


def bucket_name() -> str:
    return f"circle-{ORG_ID}"


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
                 private_patterns: list[str] | None = None) -> None:
        self.root = pathlib.Path(root).resolve()
        self.cache_dir = pathlib.Path(cache_dir)
        self.private_patterns = list(private_patterns or [])
        self.datasets: dict[str, Dataset] = {}
        self.resources: dict[str, Resource] = {}

    def scan(self) -> None:
        """Find files, make condensed copies and read metadata (slow once, then cached)."""
        if not self.root.is_dir():
            raise OSError(2, f"data folder does not exist: {self.root}")
        files = sorted(p for p in self.root.rglob("*.rtdc") if p.is_file())
        if not files:
            log.warning("DCS101 no .rtdc files below %s", self.root)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for index, path in enumerate(files, 1):
            relpath = path.relative_to(self.root).as_posix()
            folder = path.parent.relative_to(self.root).as_posix()
            ds_id = str(uuid.uuid5(ID_NAMESPACE, f"dataset:{folder}"))
            dataset = self.datasets.get(ds_id)
            if dataset is None:
                dataset = Dataset(id=ds_id, name=_slug(folder if folder != "." else "root"),
                                  title=folder if folder != "." else self.root.name,
                                  private=False)
                self.datasets[ds_id] = dataset
            if any(fnmatch.fnmatch(relpath, pat) for pat in self.private_patterns):
                dataset.private = True
            rid = str(uuid.uuid5(ID_NAMESPACE, f"resource:{relpath}"))
            res = Resource(id=rid, name=path.name, path=path, relpath=relpath,
                           dataset_id=ds_id, position=len(dataset.resources))
            log.info("DCS102 [%d/%d] preparing %s", index, len(files), relpath)
            try:
                self._prepare(res)
            except Exception as exc:  # noqa: BLE001 - one unreadable upload must not stop DCOR
                log.warning("DCS107 %s cannot be read (%s: %s); served as a resource without "
                            "metadata or features", relpath, type(exc).__name__, exc)
                res.metadata, res.features, res.logs, res.tables = {}, [], {}, {}
            dataset.resources.append(res)
            self.resources[rid] = res

    def _prepare(self, res: Resource) -> None:
        import dclab  # the server is the only place that needs dclab at run time

        res.size = res.path.stat().st_size
        res.sha256, res.etag = _file_digests(res.path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with dclab.new_dataset(res.path) as ds:
                res.metadata = to_json_compatible(ds.config.as_dict(pop_filtering=True))
                res.features = sorted(ds.features_innate)
                res.logs = {k: [str(x) for x in ds.logs[k]] for k in ds.logs}
                res.tables = {}
                for name in ds.tables:
                    arr = np.asarray(ds.tables[name])
                    names = list(arr.dtype.names) if arr.dtype.names else None
                    res.tables[name] = [names, to_json_compatible(arr.tolist())]
                if "trace" in ds:
                    res.trace_names = sorted(ds["trace"].keys())
        self._condense(res)

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
        res.condensed_path = out
        _, res.condensed_etag = _file_digests(out)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with dclab.new_dataset(out) as ds:
                res.condensed_features = sorted(ds.features_innate)
                # dcserv's logs answer: original logs plus condensed logs not yet present
                for name in ds.logs:
                    if name not in res.logs:
                        res.logs[name] = [str(x) for x in ds.logs[name]]

    def is_private(self, res: Resource) -> bool:
        return self.datasets[res.dataset_id].private

    def summary(self) -> list[dict]:
        """One row per resource, for ``--list`` and for tests."""
        return [{"id": r.id, "path": r.relpath, "private": self.is_private(r),
                 "condensed": r.condensed_path is not None, "size": r.size}
                for r in self.resources.values()]
