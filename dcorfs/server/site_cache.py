"""A real nginx running ``examples/nginx-dcor-cache.conf`` in front of an object store.

The tests and the benchmark prove ``--store-mirror`` with the configuration users are
given, not with a look-alike: the file is copied with only its ``site:`` lines changed
(where it listens, which store it fronts, http instead of https for a local store).
nginx runs unprivileged (as ``nobody`` when started by root) in a folder of its own.
"""
from __future__ import annotations

import os
import pathlib
import pwd
import re
import shutil
import socket
import subprocess
import tempfile

from ..io.store_mirror import origin_of
from ..processes import stop, wait_for
from .ports import free_port

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "nginx-dcor-cache.conf"
FOLDERS = ("logs", "temp", "cache")


def nginx_binary() -> str | None:
    """Debian's nginx lives in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def site_config(text: str, origin: str, port: int, max_size: str | None = None) -> str:
    """The example configuration, listening on 127.0.0.1:``port`` in front of ``origin``
    (``http(s)://host:port``)."""
    found = origin_of(origin)
    if found is None:
        raise ValueError(f"not an http(s) URL: {origin!r}")
    scheme, store_host, store_port = found
    host = f"{store_host}:{store_port}"
    changes = [(r"^(\s*)server \S+;(\s*# site:)", rf"\g<1>server {host};\g<2>"),
               (r"^(\s*)listen \S+;(\s*# site:)", rf"\g<1>listen 127.0.0.1:{port};\g<2>"),
               (r"^(\s*)set \$store_host \S+;(\s*# site:)", rf"\g<1>set $store_host {host};\g<2>"),
               (r"^(\s*)proxy_pass https?://(\S+);(\s*# site:)",
                rf"\g<1>proxy_pass {scheme}://\g<2>;\g<3>")]
    if max_size:
        changes.append((r"max_size=\S+", f"max_size={max_size}"))
    for pattern, replacement in changes:
        text, n = re.subn(pattern, replacement, text, count=1, flags=re.M)
        if n != 1:
            raise ValueError(f"the example configuration has no line matching {pattern!r}")
    return text


class SiteCache:
    """``nginx`` with the example configuration, as a subprocess: ``url`` is what
    ``--store-mirror`` names, ``cache`` the folder its slices are kept in."""

    def __init__(self, origin: str, max_size: str | None = None) -> None:
        binary = nginx_binary()
        if binary is None:
            raise FileNotFoundError("nginx is not installed (apt-get install nginx)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # /tmp, not a test's private folder: nginx must reach it as nobody
        self.prefix = pathlib.Path(tempfile.mkdtemp(prefix="dcorfs-site-cache-"))
        for name in FOLDERS:
            (self.prefix / name).mkdir()
        self.cache = self.prefix / "cache"
        self.conf = self.prefix / "nginx-dcor-cache.conf"
        self.conf.write_text(site_config(EXAMPLE.read_text(), origin, self.port, max_size))
        self.error_log = self.prefix / "logs" / "error.log"
        self.access_log = self.prefix / "logs" / "access.log"
        argv = [binary, "-p", str(self.prefix), "-c", str(self.conf), "-e", str(self.error_log),
                "-g", "daemon off;"]
        if os.geteuid() == 0:  # run it as nobody, as a site would run it unprivileged
            nobody = pwd.getpwnam("nobody")
            for path in [self.prefix, *self.prefix.rglob("*")]:
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            argv = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                    "--clear-groups", *argv]
        with (self.prefix / "logs" / "stderr.log").open("wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        try:
            wait_for(self._listening, self.proc, "nginx", 20, self.error_log)
        except RuntimeError:
            self.stop()
            raise

    def _listening(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(1.0)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """A fast shutdown (SIGTERM): open connections are closed at once."""
        if self.proc.poll() is None:
            stop(self.proc)

    def cached_files(self) -> list[pathlib.Path]:
        return [p for p in self.cache.rglob("*") if p.is_file()]

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)
