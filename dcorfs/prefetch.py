"""``dcorfs prefetch PATH...``: fill the disk cache by reading through a mount.

Reading is what fills the cache, so prefetching reads: whole artifacts (a resource
folder's ``data.rtdc`` and ``condensed.rtdc``, a dataset folder's resource files) in
large sequential pieces, which the mount turns into long requests at the link's speed,
or, with ``--features``, only those features' ``.npy`` files.  Blocks already cached come
from the cache, so a prefetch that was stopped resumes where it stopped.  It says up
front when the request will not fit the cache, and shows bytes, rate and ETA (tqdm).
"""
from __future__ import annotations

import concurrent.futures
import os
import pathlib
import sys
import threading

from .mount.status import read_status
from .tuning import TUNING


def mount_root(path: pathlib.Path) -> pathlib.Path | None:
    """The dcorfs mount holding ``path`` (it answers the status attribute), or None."""
    for candidate in [path, *path.parents]:
        if os.path.ismount(candidate):
            try:
                read_status(candidate)
            except (OSError, ValueError):
                return None
            return candidate
    return None


def files_to_read(path: pathlib.Path, features: list[str] | None) -> list[pathlib.Path]:
    """The files whose reading fills the cache for ``path``, without duplicates."""
    if path.is_file():
        return [path]
    found: list[pathlib.Path] = []
    seen: set[str] = set()

    def add(file: pathlib.Path) -> None:
        real = os.path.realpath(file)
        if real not in seen:
            seen.add(real)
            found.append(file)

    def walk(folder: pathlib.Path) -> None:
        real = os.path.realpath(folder)
        if real in seen:
            return
        seen.add(real)
        names = sorted(os.listdir(folder))
        if "metadata.json" in names and "data.rtdc" in names:  # a resource folder
            if features:
                for name in features:
                    if f"{name}.npy" in names:
                        add(folder / f"{name}.npy")
            else:
                for name in ("condensed.rtdc", "data.rtdc"):
                    if name in names:
                        add(folder / name)
            return
        for name in names:
            child = folder / name
            if child.is_dir():
                walk(child)
            elif child.is_file() and not features and name != "dataset.json":
                add(child)
    walk(path)
    return found


def run(paths: list[str], features: list[str] | None, jobs: int) -> int:
    from tqdm import tqdm

    targets = [pathlib.Path(p).expanduser().absolute() for p in paths]
    roots = {mount_root(t) for t in targets}
    if None in roots:
        bad = next(t for t in targets if mount_root(t) is None)
        print(f"dcorfs prefetch: {bad} is not inside a dcorfs mount (dcorfs mount first)",
              file=sys.stderr)
        return 2
    files: list[pathlib.Path] = []
    for target in targets:
        if not target.exists():
            print(f"dcorfs prefetch: {target} does not exist", file=sys.stderr)
            return 2
        files += files_to_read(target, features)
    total = sum(f.stat().st_size for f in files)
    for root in roots:
        disk = read_status(root).get("disk_cache")  # type: ignore[arg-type]
        if disk is None:
            print(f"dcorfs prefetch: the mount at {root} has no disk cache "
                  f"(mounted with --no-disk-cache)", file=sys.stderr)
            return 2
        if total > disk["max_bytes"]:
            print(f"dcorfs prefetch: {total / 1e9:.2f} GB will not fit the disk cache of "
                  f"{disk['max_bytes'] / 1e9:.2f} GB (mount with a larger --disk-cache-size, "
                  f"or prefetch less, e.g. --features deform,area_um)", file=sys.stderr)
            return 2
    print(f"dcorfs prefetch: {len(files)} files, {total / 1e6:,.1f} MB", file=sys.stderr)
    lock = threading.Lock()
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
              desc="prefetch", file=sys.stderr) as bar:
        def read(file: pathlib.Path) -> None:
            with open(file, "rb", buffering=0) as handle:
                while True:
                    piece = handle.read(TUNING.prefetch_piece)
                    if not piece:
                        return
                    with lock:
                        bar.update(len(piece))

        with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
            failed = 0
            for file, future in [(f, pool.submit(read, f)) for f in files]:
                try:
                    future.result()
                except OSError as exc:
                    failed += 1
                    print(f"dcorfs prefetch: {file}: {exc.strerror or exc}", file=sys.stderr)
    return 1 if failed else 0
