"""DCOR's resource ids, known to every layer (the disk cache counts resources by them)."""
from __future__ import annotations

import re

RESOURCE_ID = re.compile(r"[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}")


def is_resource_id(name: str) -> bool:
    """DCOR's id rule (lower-case hex 8-4-4-4-12; not necessarily an RFC 4122 UUID)."""
    return RESOURCE_ID.fullmatch(name) is not None
