"""Picking a port for ``dcorfs serve`` before starting it (demo, benchmark, tests)."""
from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768-60999): a port the kernel hands
    out for binding to 0 may meanwhile become the local port of some client connection,
    and a server started on it later fails with EADDRINUSE."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32768)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32767")
