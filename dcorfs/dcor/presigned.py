"""When to refresh a presigned URL, from the times DCOR gives with it."""
from __future__ import annotations

import time


def local_expiry(spec: dict) -> float | None:
    """Local time to refresh a perishable URL: before the server's expiry, skew-free."""
    if not spec.get("perishable"):
        return None
    try:
        lifetime = float(spec["time_expiration"]) - float(spec["time_request"])
    except (KeyError, TypeError, ValueError):
        return time.time() + 60.0
    return time.time() + lifetime - min(30.0, 0.2 * lifetime)
