"""``MOUNT/<rid>/preview.jpg``: DCOR's preview JPEG (ckanext-dc_view), listed when the
store has it.

A public one is read unsigned at the original's URL with ``/preview/`` for
``/resource/`` (its key, ``preview/<rid[:3]>/...``); a private one where DCOR's route
``/dataset/<id>/resource/<rid>/preview.jpg`` redirects (presigned).  The preview is
probed once, by the first listing beside the basins' headers, so that listing it costs
no round trip of its own; a failed probe is not kept.
"""
from __future__ import annotations

import concurrent.futures
import errno
import logging
import threading
from typing import Any

from ..io import deadline
from ..io.remote_object import RemoteObject
from ..views.nodes import File, Node
from .basin import Basin
from .feature_views import passthrough
from .shared import Shared

log = logging.getLogger(__name__)


class Preview:
    def __init__(self, rid: str, original: Basin, shared: Shared) -> None:
        """``original``: the resource's original basin (its URL names the store's key)."""
        self.rid = rid
        self.original = original
        self.shared = shared
        self._probe: concurrent.futures.Future | None = None
        self._lock = threading.Lock()

    def entry(self) -> tuple[Node, Any]:
        """The file, and the check that says whether it is there."""
        def exists() -> bool:
            return self.probed().result(timeout=deadline.remaining(3600.0)) is not None
        return File(lambda: passthrough(self.probed().result())), exists

    def probed(self) -> concurrent.futures.Future:
        """The preview's object, probed (its size known), or None when DCOR has none."""
        with self._lock:
            started = self._probe
            if started is None or (started.done() and started.exception() is not None):
                started = self._probe = self.shared.pool.submit(deadline.bind(self._probed))
            return started

    def _probed(self) -> RemoteObject | None:
        try:
            obj = self._object()
            obj.probe()
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EACCES):
                raise
            log.info("DCR425 %s has no preview (%s)", self.rid, exc.strerror)
            return None
        return obj

    def _object(self) -> RemoteObject:
        if not self.original.perishable:
            url = self.original.obj.url.split("?", 1)[0].replace("/resource/", "/preview/", 1)
            return self.shared.remote_object(f"dcor-preview-{self.rid}", url,
                                             probe_tail=False)
        api = self.shared.api

        def signed() -> str:
            package = api.call("resource_show", id=self.rid).get("package_id")
            return api.resolve_download(
                f"{api.base}/dataset/{package}/resource/{self.rid}/preview.jpg")
        return self.shared.resolved_object(f"dcor-presigned-preview-{self.rid}", signed,
                                           probe_tail=False)
