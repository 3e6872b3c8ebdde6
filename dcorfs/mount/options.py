"""The options of ``dcorfs mount``, declared once.

Each ``Option`` says its name, type, default and help, whether ``/etc/fstab`` and
``mount -t fuse.dcorfs`` may give it (as ``-o name=value`` with underscores, or
``-o name`` for a switch), and which ``FsConfig`` field it sets.  From this one table
come the parser (``add_mount_options``), the mount-helper translation
(``helper_argv``), the command line of the background mount (``background_argv``)
and the mount's config (``fs_config``), as mountpoint-s3 parses fstab options through
its argument struct.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
from collections.abc import Callable
from typing import Any

from .. import paths

SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'512M', '1G', '1073741824' -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 512M or 2G)")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2)])


@dataclasses.dataclass(frozen=True)
class Option:
    flag: str  # ``--cache-size``; its name without dashes, with underscores, is the fstab name
    help: str
    type: Callable[[str], Any] | None = None  # None: a switch
    default: Any = None
    metavar: str | None = None
    short: str | None = None
    fstab: bool = True  # may be given in /etc/fstab and to mount -t
    config: str | None = None  # the FsConfig field it sets as it is
    path: bool = False  # a file or folder: made absolute for the background mount
    background: bool = True  # passed on to the background mount as given

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def switch(self) -> bool:
        return self.type is None


MOUNT_OPTIONS = (
    Option("--host", "DCOR host name (https implied) or URL with scheme and port, e.g. "
                     "http://127.0.0.1:8000 (default: %(default)s)",
           str, "dcor.mpl.mpg.de"),
    Option("--token-file", "file holding the DCOR API token (mode 600); default: "
                           "DCOR_API_TOKEN, else ~/.config/dcorfs/token if it exists",
           str, path=True),
    Option("--cache-size", "memory for the block cache, e.g. 512M, 2G (default: 1G)",
           parse_size, parse_size("1G"), config="cache_bytes"),
    Option("--cache-dir", "where fetched bytes are kept across mounts and restarts "
                          "(default: $XDG_CACHE_HOME/dcorfs, mode 0700)",
           str, metavar="DIR", path=True),
    Option("--disk-cache-size", "the most the disk cache holds, e.g. 50G (default: 10G, "
                                "the scalar features of thousands of measurements or the "
                                "images of a few; at least 5%% of the filesystem is always "
                                "left free)",
           parse_size, parse_size("10G"), metavar="SIZE", config="disk_cache_bytes"),
    Option("--no-disk-cache", "keep fetched bytes in memory only"),
    Option("--offline", "never touch the network: serve what the disk cache holds "
                        "(listings, resources, bytes read or prefetched before); the rest "
                        "fails at once with EIO. Without it, a mount that cannot reach DCOR "
                        "goes offline by itself and back online when DCOR answers",
           config="offline"),
    Option("--timeout", "seconds to wait for one HTTP answer (default: %(default)s)",
           float, 30.0, config="timeout"),
    Option("--op-timeout", "longest any file operation may take before it fails with "
                           "EIO, retries included (default: %(default)s)",
           float, 60.0, config="op_timeout"),
    Option("--max-open-resources", "resources kept open (HDF5 metadata in memory); older "
                                   "ones without open files are closed and reopened on "
                                   "demand (default: %(default)s)",
           int, 32),
    Option("--listing-ttl", "how long listings of datasets, circles and collections are "
                            "kept before DCOR is asked again (default: %(default)s)",
           float, 300.0, metavar="SECONDS", config="listing_ttl"),
    Option("--foreground", "stay in the foreground and log to stderr", short="-f",
           background=False),
    Option("--log-file", "log here instead of stderr (background default: "
                         "~/.local/state/dcorfs/)", str, background=False),
    Option("--store-mirror", "a site cache in front of DCOR's object store (an nginx set "
                             "up as in examples/nginx-dcor-cache.conf, e.g. "
                             "http://cache.lab:8080): public reads go through it, private "
                             "ones never do; if it fails, reads go to the object store "
                             "(default: $DCORFS_STORE_MIRROR)",
           str, lambda: os.environ.get("DCORFS_STORE_MIRROR", ""), metavar="URL"),
    Option("--store-origin", "the object store the mirror fronts (default: "
                             "$DCORFS_STORE_ORIGIN, else learned from DCOR: the host of its "
                             "resources' s3_url)",
           str, lambda: os.environ.get("DCORFS_STORE_ORIGIN", ""), metavar="URL"),
    Option("--proxy", "reach DCOR and its object store through this HTTP proxy (e.g. "
                      "http://proxy.lab:3128); by default the environment's, as curl and "
                      "requests read it: HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, and NO_PROXY "
                      "for hosts reached directly (which --proxy honours too). An https "
                      "request goes through a CONNECT tunnel: the proxy never sees the "
                      "token",
           str, metavar="URL"),
    Option("--allow-insecure-http", "allow plain http to a host that is not loopback",
           config="allow_http"),
)
BY_NAME = {option.dest: option for option in MOUNT_OPTIONS}


def add_mount_options(parser: argparse.ArgumentParser) -> None:
    """Every option of ``MOUNT_OPTIONS`` on ``parser`` (defaults read now)."""
    for option in MOUNT_OPTIONS:
        flags = [option.flag] + ([option.short] if option.short else [])
        default = option.default() if callable(option.default) else option.default
        if option.switch:
            parser.add_argument(*flags, action="store_true", help=option.help)
        else:
            parser.add_argument(*flags, type=option.type, default=default,
                                metavar=option.metavar, help=option.help)


def helper_option(item: str) -> list[str] | None:
    """One ``-o`` item of the mount-helper form (``cache_size=2G``, ``offline``) as
    ``dcorfs mount`` arguments, or None when it is not dcorfs's own."""
    key, sep, value = item.partition("=")
    option = BY_NAME.get(key)
    if option is None or not option.fstab:
        return None
    if option.switch == bool(sep):
        raise SystemExit(f"dcorfs: option {key} needs {'no value' if sep else 'a value'}")
    return [option.flag, value] if sep else [option.flag]


def background_argv(args: argparse.Namespace) -> list[str]:
    """The options of ``args`` as the background mount is given them: every option
    given (switches when set), files and folders as absolute paths."""
    argv: list[str] = []
    for option in MOUNT_OPTIONS:
        value = getattr(args, option.dest)
        if not option.background or value is None or value is False or value == "":
            continue
        if option.switch:
            argv.append(option.flag)
            continue
        if option.path:
            value = pathlib.Path(value).expanduser().resolve()
        argv += [option.flag, str(value)]
    return argv


def fs_config(args: argparse.Namespace, host: str, token: str) -> Any:
    """The ``FsConfig`` of a checked ``dcorfs mount`` command line."""
    from ..core.build import FsConfig

    values = {option.config: getattr(args, option.dest) for option in MOUNT_OPTIONS
              if option.config}
    disk = None if args.no_disk_cache else str(
        pathlib.Path(args.cache_dir).expanduser() if args.cache_dir else paths.cache_dir())
    return FsConfig(host=host, token=token, max_resources=max(1, args.max_open_resources),
                    disk_cache_dir=disk, store_mirror=args.store_mirror or None,
                    store_origin=args.store_origin or None, proxy=args.proxy or None,
                    **values)
