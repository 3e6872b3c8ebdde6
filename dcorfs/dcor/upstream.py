"""Features that live in another basin named inside a basin file: DCOR's intra-dataset basins.

DCOR writes basins into every condensed file (ckanext-dc_serve ``jobs.py``): the
resource itself through ``dcserv`` (format ``dcor``) and on the store (``http``,
``s3``), and, for dcnum output whose ``file`` basin names another resource of the same
dataset, that resource through ``dcserv`` with the output's basin map.  dclab follows
them (``fmt_dcor/basin.py: DCORBasin``, the token reused); so does dcorfs, with
``Upstream``: the other resource is opened by its id on the mount's own DCOR host
with the mount's token, and row ``i`` of a feature is row ``map[i]`` of the upstream's.

A referring file's basin map (``events/basinmapN``) is read whole once: it has one
integer per event.  A read of rows ``[r0, r1)`` gathers the upstream rows they map
to, reading runs of them in one call where they lie close together.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ..tuning import TUNING
from ..views.nodes import Dir, File, LazyEntries, Node, NumberedNames
from ..views.view import NpyView, View


@dataclasses.dataclass
class Via:
    """Where a feature comes from when a basin file's own basin holds it: the upstream
    (a resource, or a one-basin stand-in for an object URL) and the basin map, None
    for ``same``."""

    upstream: "object"  # a Resource: typed loosely, resource_folder imports this module
    basinmap: Callable[[], np.ndarray] | None

    def view(self, feature: str) -> View:
        inner = self.upstream.feature_view(feature)  # type: ignore[attr-defined]
        return inner if self.basinmap is None else mapped(inner, self.basinmap)

    def map_node(self, node: Node) -> Node:
        """An upstream file as a file of the referring resource (rows mapped)."""
        if self.basinmap is None or not isinstance(node, File):
            return node
        return File(lambda: mapped(node.view, self.basinmap))

    def folder(self, name: str) -> dict[str, Node]:
        """The entries of the upstream's folder ``name`` (``trace``, ``contour``) as
        this resource's: a trace is mapped row by row; contour ``i`` is the upstream's
        contour ``map[i]``."""
        folder = self.upstream.root.get(name)  # type: ignore[attr-defined]
        if not isinstance(folder, Dir):
            return {}
        entries = folder.entries
        if self.basinmap is None:
            return entries
        if name != "contour":
            return {key: self.map_node(node) for key, node in entries.items()}
        if not isinstance(entries, LazyEntries):  # contour/ is one, always
            return {}
        index = self.basinmap()
        names = NumberedNames(len(index))

        def make(key: str) -> Node | None:
            number = names.number(key)
            if number is None:
                return None
            found = entries.names_from(int(index[number]), 1)
            return entries.get(found[0]) if found else None
        return LazyEntries(names, make)


def mapped(inner: View, basinmap: Callable[[], np.ndarray]) -> NpyView:
    """``inner``'s rows ``basinmap()[i]`` as row ``i``."""
    if not isinstance(inner, NpyView):
        raise OSError(5, "a mapped basin feature must be an array")
    index = basinmap()
    if index.size and (index.min() < 0 or index.max() >= inner.nrows):
        raise OSError(5, f"basin map points outside the upstream's {inner.nrows} rows")
    def rows(r0: int, r1: int) -> np.ndarray:
        wanted = index[r0:r1]
        if not len(wanted):
            return np.empty((0,) + inner.shape[1:], inner.dtype)
        unique, inverse = np.unique(wanted, return_inverse=True)
        parts = []
        start = 0
        for cut in list(np.nonzero(np.diff(unique) > TUNING.upstream_gather_gap)[0] + 1) + [len(unique)]:
            first, last = int(unique[start]), int(unique[cut - 1])
            block = inner.rows(first, last + 1)
            parts.append(block[unique[start:cut] - first])
            start = cut
        return np.concatenate(parts)[inverse]

    return NpyView(inner.dtype, (len(index),) + inner.shape[1:], rows)
