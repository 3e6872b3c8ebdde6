"""The command line's parsing, without mounting anything."""
from __future__ import annotations

import subprocess
import sys

import pytest

from dcorfs import __version__
from dcorfs.cli import build_parser, mount_helper_argv, normalise_host
from dcorfs.mount.options import parse_size


def test_sizes_and_hosts():
    assert parse_size("1G") == 1 << 30 and parse_size("512M") == 512 << 20
    assert parse_size("1048576") == 1 << 20 and parse_size("2GiB") == 2 << 30
    assert normalise_host("dcor.mpl.mpg.de") == "https://dcor.mpl.mpg.de"
    assert normalise_host("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    with pytest.raises(SystemExit):
        normalise_host("http://host/with/path")


def test_version():
    out = subprocess.run([sys.executable, "-m", "dcorfs", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"dcorfs {__version__}"


def test_help_explains():
    out = subprocess.run([sys.executable, "-m", "dcorfs", "--help"], capture_output=True,
                         text=True, timeout=60).stdout
    for command in ("mount", "unmount", "serve", "demo", "doctor"):
        assert command in out
    mount_help = subprocess.run([sys.executable, "-m", "dcorfs", "mount", "--help"],
                                capture_output=True, text=True, timeout=60).stdout
    assert "DCOR_API_TOKEN" in mount_help and "--cache-size" in mount_help
    assert "fstab" in mount_help


def test_the_mount_helper_form_becomes_dcorfs_mount():
    """What mount.fuse3 runs for ``mount -t fuse.dcorfs`` and fstab lines."""
    argv = mount_helper_argv(["http://127.0.0.1:8000", "/mnt/dcor", "-o",
                              "rw,nodev,nosuid,noexec,cache_size=64M,allow_other"])
    assert argv == ["mount", "/mnt/dcor", "--host", "http://127.0.0.1:8000",
                    "--cache-size", "64M", "-o", "nodev,nosuid,noexec,allow_other"]
    args = build_parser().parse_args(argv)
    assert args.cache_size == 64 << 20 and args.fuse_options == ["nodev,nosuid,noexec,allow_other"]
    # the host as an option, the source a placeholder; mount(8)'s own options dropped
    argv = mount_helper_argv(["dcorfs", "/mnt/dcor", "-o", "ro,noauto,user,_netdev,"
                              "host=dcor-dev.mpl.mpg.de,token_file=/home/me/t,"
                              "allow_insecure_http,x-systemd.automount"])
    assert argv == ["mount", "/mnt/dcor", "--host", "dcor-dev.mpl.mpg.de",
                    "--token-file", "/home/me/t", "--allow-insecure-http"]
    argv = mount_helper_argv(["dcorfs", "/mnt/dcor", "-o", "offline,cache_dir=/var/c"])
    assert argv == ["mount", "/mnt/dcor", "--offline", "--cache-dir", "/var/c"]
    assert build_parser().parse_args(argv).offline is True
    assert mount_helper_argv(["mount", "/mnt/dcor"]) is None  # a command, not a source
    assert mount_helper_argv(["--version"]) is None
    with pytest.raises(SystemExit):
        mount_helper_argv(["dcorfs", "/mnt/dcor", "--bogus"])
    with pytest.raises(SystemExit):
        mount_helper_argv(["dcorfs", "/mnt/dcor", "-o", "cache_size"])


def test_the_site_cache_is_named_by_option_environment_or_fstab(monkeypatch):
    assert build_parser().parse_args(["mount", "/m"]).store_mirror == ""
    monkeypatch.setenv("DCORFS_STORE_MIRROR", "http://cache.lab:8080")
    assert build_parser().parse_args(["mount", "/m"]).store_mirror == "http://cache.lab:8080"
    args = build_parser().parse_args(["mount", "/m", "--store-mirror", "http://other:80"])
    assert args.store_mirror == "http://other:80"  # the command line wins
    argv = mount_helper_argv(["dcorfs", "/mnt/dcor", "-o",
                              "store_mirror=http://cache.lab:8080,store_origin=https://s3.org"])
    assert argv == ["mount", "/mnt/dcor", "--store-mirror", "http://cache.lab:8080",
                    "--store-origin", "https://s3.org"]


def test_a_proxy_is_named_by_option_or_fstab():
    assert build_parser().parse_args(["mount", "/m"]).proxy is None
    args = build_parser().parse_args(["mount", "/m", "--proxy", "http://proxy.lab:3128"])
    assert args.proxy == "http://proxy.lab:3128"
    argv = mount_helper_argv(["dcorfs", "/mnt/dcor", "-o", "proxy=http://proxy.lab:3128"])
    assert argv == ["mount", "/mnt/dcor", "--proxy", "http://proxy.lab:3128"]


def test_proxy_choice_follows_curl_and_requests(monkeypatch):
    from dcorfs.io.http import check_proxy_url, proxy_for, proxy_shown

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                 "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("https://dcor.mpl.mpg.de/api") is None
    monkeypatch.setenv("https_proxy", "http://p:3128")
    assert proxy_for("https://dcor.mpl.mpg.de/api") == "http://p:3128"
    assert proxy_for("http://127.0.0.1:8000/api") is None  # HTTP_PROXY is not set
    assert proxy_for("http://127.0.0.1:8000/api", "http://q:8080") == "http://q:8080"
    monkeypatch.setenv("NO_PROXY", "mpg.de,127.0.0.1")
    assert proxy_for("https://dcor.mpl.mpg.de/api") is None
    assert proxy_for("http://127.0.0.1:8000/api", "http://q:8080") is None
    assert proxy_shown("http://user:secret@p:3128") == "http://p:3128"
    with pytest.raises(ValueError):
        check_proxy_url("proxy.lab:3128")


def test_each_mount_option_reaches_the_parser_fstab_the_background_and_the_config():
    """One table (``MOUNT_OPTIONS``) makes all four: an option given in fstab form
    parses to the value the long form gives, the background mount is given it again,
    and its config field gets it."""
    from dcorfs.mount.options import MOUNT_OPTIONS, background_argv, fs_config

    values = {"host": "http://127.0.0.1:8000", "token_file": "/etc/dcorfs/token",
              "cache_size": "2G", "cache_dir": "/var/cache/dcorfs", "disk_cache_size": "3G",
              "timeout": "7.5", "op_timeout": "70", "max_open_resources": "5",
              "listing_ttl": "12", "log_file": "/var/log/dcorfs.log",
              "store_mirror": "http://cache.lab:8080", "store_origin": "http://s3.lab",
              "proxy": "http://proxy.lab:3128"}
    for option in MOUNT_OPTIONS:
        item = option.dest if option.switch else f"{option.dest}={values[option.dest]}"
        helper = mount_helper_argv(["dcorfs", "/mnt/dcor", "-o", item])
        long_form = ["mount", "/mnt/dcor", option.flag] + ([] if option.switch else
                                                            [values[option.dest]])
        parser = build_parser()
        given = parser.parse_args(helper)
        assert given == parser.parse_args(long_form), option.flag
        assert getattr(given, option.dest) not in (None, "", False)
        if option.background:  # the background mount is given it, and parses it back
            again = parser.parse_args(["mount", "/mnt/dcor", *background_argv(given)])
            assert getattr(again, option.dest) == getattr(given, option.dest), option.flag
        if option.config:
            config = fs_config(given, "http://127.0.0.1:8000", "")
            assert getattr(config, option.config) == getattr(given, option.dest), option.flag
