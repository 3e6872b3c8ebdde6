"""Faults on demand for ``dcorfs serve``: the bench for dcorfs's fault tolerance.

Set at start with ``--faults JSON`` or at run time with ``POST /_dcorfs/faults``
(the JSON body replaces the whole set; ``{}`` clears it).  Rates are
probabilities per request.  Every fault that fires is counted in the server's
stats as ``fault_<name>``, so a test can tell that it really happened.
"""
from __future__ import annotations

import dataclasses
import random
import threading
import time
from typing import Any


@dataclasses.dataclass
class Faults:
    latency_ms: float = 0.0        # added to every request
    jitter_ms: float = 0.0         # plus a uniform random 0..jitter_ms
    stall_rate: float = 0.0        # accept, read the request, never answer
    error_rate: float = 0.0        # answer 502 (API) or 503 SlowDown (object store)
    retry_after: float | None = None  # Retry-After seconds on those, and on maintenance
    maintenance_s: float = 0.0     # the API answers 503 for this long, from when it is set
    reset_rate: float = 0.0        # send part of the body, then reset the connection
    truncate_rate: float = 0.0     # send part of the body, then close cleanly
    wrong_range_rate: float = 0.0  # 206 with a Content-Range for other bytes
    full_body_rate: float = 0.0    # 200 with the whole object instead of 206
    expire_after_s: float | None = None  # presigned URLs expire this long after issue
    bad_json_rate: float = 0.0     # API answers 200 with broken JSON
    html_rate: float = 0.0         # API answers 200 with an HTML page
    seed: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Faults":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        faults = cls(**data)
        for field in dataclasses.fields(cls):
            value = getattr(faults, field.name)
            if field.name.endswith("_rate") and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{field.name} must be between 0 and 1")
        return faults


class FaultInjector:
    """The current fault set and a seeded random source, shared by handler threads."""

    def __init__(self, faults: Faults | None = None) -> None:
        self._lock = threading.Lock()
        self.released = threading.Event()  # set to free stalled requests
        self.set(faults or Faults())

    def set(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)
            self.maintenance_until = time.monotonic() + faults.maintenance_s
        # stalled requests are let go whenever the fault set changes
        self.released.set()
        self.released = threading.Event()

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.faults)

    def fires(self, name: str) -> bool:
        rate = getattr(self.faults, f"{name}_rate")
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def in_maintenance(self) -> bool:
        """Whether DCOR is being updated now (its API answers 503, as DCOR's does)."""
        return time.monotonic() < self.maintenance_until

    def extra_delay(self) -> float:
        faults = self.faults
        delay = faults.latency_ms
        if faults.jitter_ms:
            with self._lock:
                delay += self._rng.uniform(0, faults.jitter_ms)
        return delay / 1000.0

    def cut_point(self, length: int) -> int:
        """Where to break a body of ``length`` bytes (never 0 or the full length)."""
        if length <= 1:
            return 0
        with self._lock:
            return self._rng.randrange(1, length)
