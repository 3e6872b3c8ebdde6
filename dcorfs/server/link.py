"""An emulated network link: a round-trip delay per request and a shared bandwidth.

A laptop talking to itself over loopback hides everything that makes DCOR slow
(20-100 ms round trips, tens of MB/s).  The server charges every request one
latency, every new connection one more (the TCP handshake; TLS, which real DCOR
uses, would add one or two), and every body byte to one shared link clock, so
several parallel connections share the bandwidth as they would on a real uplink.
"""
from __future__ import annotations

import threading
import time

_CONTINUOUS = 0.005  # seconds


class Link:
    def __init__(self, latency_ms: float = 0.0, bandwidth_mbs: float = 0.0) -> None:
        if latency_ms < 0 or bandwidth_mbs < 0:
            raise ValueError("latency and bandwidth must not be negative")
        self.latency = latency_ms / 1000.0
        self.bytes_per_s = bandwidth_mbs * 1e6
        self._lock = threading.Lock()
        self._free_at = 0.0

    def round_trip(self) -> None:
        if self.latency:
            time.sleep(self.latency)

    def transmit(self, nbytes: int) -> None:
        """Block until ``nbytes`` would have crossed the link."""
        if not self.bytes_per_s or nbytes <= 0:
            return
        with self._lock:
            now = time.monotonic()
            # a link that was busy a moment ago stays a continuous pipe: the time this
            # process spends writing a piece must not open a gap on the wire
            start = self._free_at if self._free_at >= now - _CONTINUOUS else now
            self._free_at = start + nbytes / self.bytes_per_s
            done = self._free_at
        delay = done - time.monotonic()
        if delay > 0:
            time.sleep(delay)
