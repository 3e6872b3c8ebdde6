"""Where dcorfs keeps its files, after the XDG base directory rules."""
from __future__ import annotations

import os
import pathlib


def _base(variable: str, fallback: str) -> pathlib.Path:
    value = os.environ.get(variable)
    if value and os.path.isabs(value):  # the spec says to ignore relative paths
        return pathlib.Path(value)
    return pathlib.Path.home() / fallback


def config_dir() -> pathlib.Path:
    """``$XDG_CONFIG_HOME/dcorfs``: the token file."""
    return _base("XDG_CONFIG_HOME", ".config") / "dcorfs"


def cache_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/dcorfs``: demo data, the local server's condensed files."""
    return _base("XDG_CACHE_HOME", ".cache") / "dcorfs"


def state_dir() -> pathlib.Path:
    """``$XDG_STATE_HOME/dcorfs``: logs of background mounts."""
    return _base("XDG_STATE_HOME", ".local/state") / "dcorfs"
