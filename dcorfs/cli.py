"""Command line: ``dcorfs mount | unmount | serve | demo | demo-data | doctor``.

The token is read from ``DCOR_API_TOKEN`` or ``--token-file`` only, never from an
argument value (it would show in ``ps`` and in shell history).  ``dcorfs SOURCE
MOUNTPOINT -o OPTIONS``, the form ``mount -t fuse.dcorfs`` and ``/etc/fstab`` use
(through mount.fuse3), is translated into ``dcorfs mount`` (``mount_helper_argv``).
"""
from __future__ import annotations

import argparse
import logging
import os
import pathlib
import re
import stat
import subprocess
import sys

from . import __version__, paths
from .io.http import check_plain_http, check_proxy_url
from .io.store_mirror import check_mirror_url
from .mount.fusermount import fuse_problem, unmount
from .mount.options import add_mount_options, background_argv, fs_config, helper_option
from .processes import dcorfs_argv, wait_for

log = logging.getLogger("dcorfs")

def default_token_file() -> pathlib.Path:
    return paths.config_dir() / "token"


def read_token(token_file: str | None) -> str:
    """The API token: ``--token-file``, else ``DCOR_API_TOKEN``, else the config file
    ``~/.config/dcorfs/token`` if it exists; '' for anonymous access."""
    if not token_file and not os.environ.get("DCOR_API_TOKEN") and default_token_file().exists():
        token_file = str(default_token_file())
    if token_file:
        path = pathlib.Path(token_file).expanduser()
        try:
            st = path.stat()
        except OSError as exc:
            raise SystemExit(f"dcorfs: cannot read token file {path}: {exc.strerror}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SystemExit(f"dcorfs: token file {path} is readable by group or others "
                             f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}")
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise SystemExit(f"dcorfs: token file {path} is empty")
        return token
    return os.environ.get("DCOR_API_TOKEN", "").strip()


def normalise_host(host: str) -> str:
    """'dcor.mpl.mpg.de' -> 'https://dcor.mpl.mpg.de'; URLs with a scheme are kept."""
    host = host.strip().rstrip("/")
    if not re.match(r"^https?://", host):
        host = "https://" + host
    if not re.fullmatch(r"https?://[A-Za-z0-9.\-]+(:\d+)?|https?://\[[0-9a-fA-F:]+\](:\d+)?", host):
        raise SystemExit(f"dcorfs: --host must be a host name or a URL like "
                         f"http://127.0.0.1:8000, not {host!r}")
    return host


def setup_logging(verbosity: int, log_file: str | None = None) -> None:
    level = logging.WARNING - 10 * verbosity
    handler: logging.Handler = (logging.FileHandler(log_file) if log_file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.DEBUG, level))
    # urllib3 logs full URLs at DEBUG; keep it quiet so presigned signatures stay out of logs
    logging.getLogger("urllib3").setLevel(logging.WARNING)


# -- mount --------------------------------------------------------------------------
def cmd_mount(args: argparse.Namespace) -> int:
    problem = fuse_problem()
    if problem:
        print(f"dcorfs: cannot mount: {problem}", file=sys.stderr)
        return 2
    mountpoint = pathlib.Path(args.mountpoint).expanduser().resolve()
    if not mountpoint.is_dir():
        print(f"dcorfs: mount point {mountpoint} is not a directory (mkdir -p {mountpoint})",
              file=sys.stderr)
        return 2
    if os.path.ismount(mountpoint):
        print(f"dcorfs: {mountpoint} is already a mount point (dcorfs unmount {mountpoint})",
              file=sys.stderr)
        return 2
    host = normalise_host(args.host)
    try:
        check_plain_http(host, args.allow_insecure_http)
    except OSError as exc:
        print(f"dcorfs: {exc.strerror}", file=sys.stderr)
        return 2
    if args.offline and args.no_disk_cache:
        print("dcorfs: --offline serves the disk cache; it cannot go with --no-disk-cache",
              file=sys.stderr)
        return 2
    for name in ("store_mirror", "store_origin"):
        value = getattr(args, name)
        try:
            setattr(args, name, check_mirror_url(value) if value else None)
        except ValueError as exc:
            print(f"dcorfs: --{name.replace('_', '-')}: {exc}", file=sys.stderr)
            return 2
    if args.proxy:
        try:
            args.proxy = check_proxy_url(args.proxy)
        except ValueError as exc:
            print(f"dcorfs: --proxy: {exc}", file=sys.stderr)
            return 2
    if args.store_origin and not args.store_mirror:
        print("dcorfs: --store-origin names the store behind --store-mirror; give both",
              file=sys.stderr)
        return 2
    token = read_token(args.token_file)
    if not args.foreground:
        return _mount_in_background(args, mountpoint)
    setup_logging(args.verbose, args.log_file)
    from .mount.fuse_adapter import run_mount

    config = fs_config(args, host, token)
    return run_mount(mountpoint, config, fuse_options=args.fuse_options)


def _mount_in_background(args: argparse.Namespace, mountpoint: pathlib.Path) -> int:
    """Start ``mount --foreground`` detached and wait until the mount is live.

    Forking after threads exist (HTTP pools) is unsafe, so instead of letting libfuse
    daemonise we start a fresh process and watch it.  It runs in ``/``, so that it
    holds no folder busy and cannot import a ``dcorfs`` folder from the caller's
    working directory, and its stderr goes to the log: a failure before logging
    starts (an import error, say) is there too, and is shown here.
    """
    log_file = pathlib.Path(args.log_file or _default_log_path(mountpoint)).resolve()
    argv = dcorfs_argv("mount", mountpoint, "--foreground", "--log-file", log_file,
                       *background_argv(args), *["-v"] * args.verbose)
    for opt in args.fuse_options:
        argv += ["-o", opt]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    start = log_file.stat().st_size if log_file.exists() else 0
    with log_file.open("ab") as log_out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_out, stderr=log_out,
                                cwd="/", start_new_session=True)
    try:
        wait_for(lambda: os.path.ismount(mountpoint), proc, "the mount process", 30)
    except RuntimeError as exc:
        if proc.poll() is None:
            proc.terminate()
        said = log_file.read_bytes()[start:].decode(errors="replace").strip()
        print(f"dcorfs: mount failed: {exc}\n{said[-3000:] or '(it wrote nothing)'}\n"
              f"(log: {log_file})", file=sys.stderr)
        return 1
    print(f"dcorfs: mounted {args.host} at {mountpoint} (log: {log_file})")
    return 0


def _default_log_path(mountpoint: pathlib.Path) -> pathlib.Path:
    name = re.sub(r"[^A-Za-z0-9]+", "_", str(mountpoint)).strip("_") or "root"
    return paths.state_dir() / f"{name}.log"


def cmd_unmount(args: argparse.Namespace) -> int:
    mountpoint = str(pathlib.Path(args.mountpoint).expanduser().resolve())
    if not os.path.ismount(mountpoint):
        print(f"dcorfs: {mountpoint} is not mounted", file=sys.stderr)
        return 1
    done = unmount(mountpoint, lazy=args.lazy)
    if done.returncode:
        print(f"dcorfs: cannot unmount {mountpoint}: {done.stderr.strip()} "
              f"(files still open? try --lazy)", file=sys.stderr)
    return done.returncode


# -- serve --------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    setup_logging(args.verbose + 1)
    from . import server

    return server.run(pathlib.Path(args.data_dir), host=args.bind, port=args.port,
                      store_port=args.store_port,
                      cache_dir=(pathlib.Path(args.cache_dir) if args.cache_dir
                                 else paths.cache_dir() / "serve"),
                      private=args.private,
                      token_file=pathlib.Path(args.token_file) if args.token_file else None,
                      latency_ms=args.latency_ms, bandwidth_mbs=args.bandwidth_mbs,
                      presign_ttl=args.presign_ttl, list_only=args.list, faults=args.faults,
                      synthetic=args.synthetic, handshake_round_trips=args.handshake_rtts,
                      idle_close_s=args.idle_close_s,
                      intra_dataset_basins=not args.no_intra_dataset_basins,
                      no_condensed=args.no_condensed, previews=not args.no_previews,
                      site_address=None if args.site_address == "none" else args.site_address)


def cmd_demo_data(args: argparse.Namespace) -> int:
    setup_logging(args.verbose + 1)
    from .server.demo_data import write_demo_folder

    for path in write_demo_folder(pathlib.Path(args.folder), events=args.events):
        print(path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    from . import demo

    workdir = (pathlib.Path(args.workdir).expanduser() if args.workdir
               else paths.cache_dir() / "demo")
    workdir.mkdir(parents=True, exist_ok=True)
    return demo.run(workdir, events=args.events, latency_ms=args.latency_ms,
                    bandwidth_mbs=args.bandwidth_mbs)


def cmd_prefetch(args: argparse.Namespace) -> int:
    from . import prefetch

    features = [f.strip() for f in args.features.split(",") if f.strip()] if args.features else None
    return prefetch.run(args.paths, features, args.jobs)


def cmd_cache(args: argparse.Namespace) -> int:
    from .io.disk_cache import DiskCache

    folder = pathlib.Path(args.cache_dir).expanduser() if args.cache_dir else paths.cache_dir()
    if not (folder / "index.sqlite").exists():
        print(f"dcorfs: no disk cache in {folder}")
        return 0 if args.action == "status" else 1
    # the limit belongs to the mounts: this one neither enforces nor records one
    disk = DiskCache(folder, max_bytes=1 << 62, record_limit=False, maintain=False)
    if args.action == "clear":
        freed = disk.clear(args.resources or None)
        print(f"dcorfs: freed {freed / 1e6:,.1f} MB in {folder}")
        return 0
    info = disk.summary()
    print(f"folder:     {info['folder']}")
    print(f"size:       {info['bytes'] / 1e6:,.1f} MB in {info['blocks']:,d} blocks")
    limit = info["max_bytes"]
    print("limit:      " + (f"{limit / 1e9:,.1f} GB (--disk-cache-size of the last mount)"
                             if limit else "not set yet (no mount has used this folder)"))
    free, total = info["filesystem_free_bytes"], info["filesystem_bytes"]
    print(f"free space: {free / 1e9:,.1f} of {total / 1e9:,.1f} GB "
          f"({free / max(total, 1):.1%}; mounts keep at least 5% free)")
    if free < 0.05 * total:
        print(f"            below the 5% floor: the cache holds {info['bytes'] / 1e9:,.2f} GB "
              f"of the {(total - free) / 1e9:,.1f} GB in use; "
              + ("the next write of a mount evicts what it needs"
                 if info["bytes"] >= 0.05 * total - free else
                 "other files fill the rest, so evicting it all would not meet the floor: "
                 "free space on that filesystem, or move --cache-dir"))
    print(f"resources:  {info['resources']} ({len(info['artifacts'])} artifacts)")
    looked = info["hits"] + info["misses"]
    print("hit rate:   " + (f"{info['hits'] / looked:.1%} of {looked:,d} block lookups"
                            if looked else "no lookups yet"))
    for item in info["artifacts"][:args.top]:
        print(f"  {item['bytes'] / 1e6:10,.1f} MB  {item['key']}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    problem = fuse_problem()
    if problem:
        print(f"dcorfs: FUSE cannot run here: {problem}", file=sys.stderr)
        return 1
    print("dcorfs: FUSE is ready (/dev/fuse, fusermount3, libfuse)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcorfs",
        description="Mount DCOR (dcor.mpl.mpg.de) so that every RT-DC measurement is a folder "
                    "of NumPy .npy files, read on demand through HTTP range requests.")
    parser.add_argument("--version", action="version", version=f"dcorfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mount = sub.add_parser(
        "mount", help="mount DCOR at a folder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Mount DCOR at MOUNTPOINT. Datasets, circles and collections are folders "
                    "(MOUNTPOINT/datasets/<name>/, MOUNTPOINT/circles/<name>/, "
                    "MOUNTPOINT/collections/<name>/), and every resource id is a folder of "
                    "features: MOUNTPOINT/<resource-id>/deform.npy and so on. The API token "
                    "comes from DCOR_API_TOKEN or --token-file (never from the command "
                    "line). Without --foreground the mount runs in the background and this command returns "
                    "once it is live.",
        epilog="mount -t and /etc/fstab work too (through mount.fuse3, which runs dcorfs\n"
               "from the system PATH); options are written with underscores:\n"
               "  mount -t fuse.dcorfs dcor.mpl.mpg.de ~/dcor -o cache_size=2G\n"
               "  dcorfs  /home/me/dcor  fuse.dcorfs  noauto,user,host=dcor.mpl.mpg.de,"
               "token_file=/home/me/.config/dcorfs/token  0 0")
    mount.add_argument("mountpoint")
    add_mount_options(mount)
    mount.add_argument("-o", dest="fuse_options", action="append", default=[],
                       metavar="OPT", help="extra FUSE option, e.g. -o allow_other (repeatable)")
    mount.add_argument("-v", "--verbose", action="count", default=0,
                       help="more log output (-v info, -vv debug)")
    mount.set_defaults(func=cmd_mount)

    unmount = sub.add_parser("unmount", help="unmount a dcorfs mount",
                             description="Unmount MOUNTPOINT (fusermount3 -u).")
    unmount.add_argument("mountpoint")
    unmount.add_argument("--lazy", "-z", action="store_true",
                         help="detach now even if files are open")
    unmount.set_defaults(func=cmd_unmount)

    serve = sub.add_parser(
        "serve", help="run a local DCOR-compatible server over a folder of .rtdc files",
        description="Serve every .rtdc file below DATA_DIR, and every supplementary file DCOR "
                    "allows (.ini .csv .tsv .pdf .txt .jpg .png .tif .py .ipynb .poly .sof "
                    ".so2), as a DCOR resource; every folder is a dataset. Circles and "
                    "collections come from DATA_DIR/catalog.json (see the README). The CKAN "
                    "action API (dcserv, resource_show, package_show, package_search, "
                    "organization_list, group_list, status_show, user_show), download routes "
                    "and an S3-like object store with range requests. Condensed files are "
                    "made with dclab, as DCOR does. POST /_dcorfs/rescan reads DATA_DIR again.")
    serve.add_argument("data_dir", metavar="DATA_DIR")
    serve.add_argument("--port", type=int, default=8000, help="API port (default: %(default)s)")
    serve.add_argument("--store-port", type=int, default=0,
                       help="object-store port (default: any free port)")
    serve.add_argument("--bind", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--latency-ms", type=float, default=0.0,
                       help="delay added to every request, to imitate a distant server")
    serve.add_argument("--bandwidth-mbs", type=float, default=0.0,
                       help="shared link bandwidth in MB/s for response bodies (0: unlimited)")
    serve.add_argument("--handshake-rtts", type=int, default=1, metavar="N",
                       help="round trips charged to every new connection: 1 for TCP, 2-3 "
                            "with TLS as on DCOR (default: %(default)s)")
    serve.add_argument("--idle-close-s", type=float, default=0.0, metavar="SECONDS",
                       help="close keep-alive connections idle this long, as nginx (75) and "
                            "S3 (about 20) do (default: 0, never)")
    serve.add_argument("--no-intra-dataset-basins", action="store_true",
                       help="declare in the condensed basin only the condensed file's own "
                            "features (DCOR's enable_intra_dataset_basins = false; by default "
                            "it also declares image, mask, contour and trace, as DCOR does)")
    serve.add_argument("--no-condensed", action="append", default=[], metavar="GLOB",
                       help="serve files matching GLOB (relative path) as DCOR serves an "
                            "upload whose condensing has not finished or failed: the "
                            "condensed basin listed without features, its object missing; "
                            "repeatable")
    serve.add_argument("--no-previews", action="store_true",
                       help="make no preview JPEGs (DCOR's preview job draws them with "
                            "matplotlib; by default every RT-DC resource gets one)")
    serve.add_argument("--site-address", default="auto", metavar="ADDR",
                       help="also answer the API on port 80 of ADDR and name the site "
                            "http://ADDR in the basins of condensed files, as DCOR names "
                            "itself (dclab follows DCOR basins only without a port); 'auto' "
                            "(default): the first free 127.0.0.N; 'none': the API's address")
    serve.add_argument("--private", action="append", default=[], metavar="GLOB",
                       help="make the datasets of files matching GLOB (relative path) private; "
                            "repeatable")
    serve.add_argument("--token-file", help="API token that grants access to private data; "
                                            "created with a new token if missing")
    serve.add_argument("--presign-ttl", type=float, default=3600.0,
                       help="lifetime of presigned object URLs in seconds (default: %(default)s)")
    serve.add_argument("--cache-dir", help="where condensed files are kept "
                                           "(default: ~/.cache/dcorfs/serve)")
    serve.add_argument("--list", action="store_true", help="print resource ids and exit")
    serve.add_argument("--synthetic", type=int, default=0, metavar="N",
                       help="add N datasets in circles of 200, each sharing the first .rtdc "
                            "file's bytes: a catalog of DCOR's size at no cost on disk (tagged "
                            "blood, beads, hl60, neutrophils and erythrocytes in turn)")
    serve.add_argument("--faults", metavar="JSON",
                       help="inject faults, e.g. '{\"error_rate\": 0.1, \"reset_rate\": 0.05}' "
                            "(keys: latency_ms, jitter_ms, stall_rate, error_rate, retry_after, "
                            "maintenance_s, reset_rate, truncate_rate, wrong_range_rate, "
                            "full_body_rate, "
                            "expire_after_s, bad_json_rate, html_rate, seed); change at run time "
                            "with POST /_dcorfs/faults")
    serve.add_argument("-v", "--verbose", action="count", default=0)
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo-data", help="write realistic demo .rtdc files",
                          description="Write demo measurements (images, masks, contours, "
                                      "traces, logs, a table; Zstandard + fletcher32 as dclab "
                                      "writes) into FOLDER.")
    demo.add_argument("folder")
    demo.add_argument("--events", type=int, default=2000, help="events in the main file")
    demo.add_argument("-v", "--verbose", action="count", default=0)
    demo.set_defaults(func=cmd_demo_data)

    showcase = sub.add_parser(
        "demo", help="run the local DCOR on demo data, mount it and read from it",
        description="Write demo data, start 'dcorfs serve' on it with a DCOR-like link, mount "
                    "it, list a resource folder, load features with NumPy, show what was "
                    "fetched, and unmount.")
    showcase.add_argument("--workdir", help="where demo data and logs go "
                                            "(default: ~/.cache/dcorfs/demo)")
    showcase.add_argument("--events", type=int, default=5000, help="events in the demo file")
    showcase.add_argument("--latency-ms", type=float, default=20.0)
    showcase.add_argument("--bandwidth-mbs", type=float, default=50.0)
    showcase.add_argument("-v", "--verbose", action="count", default=0)
    showcase.set_defaults(func=cmd_demo)

    prefetch = sub.add_parser(
        "prefetch", help="fill the disk cache for files and folders of a mount",
        description="Read PATHs (files, resource, dataset, circle or collection folders of "
                    "a running dcorfs mount) so that their bytes are in the disk cache, "
                    "with a progress bar. Whole artifacts by default; with --features only "
                    "those features. Already cached bytes are not fetched again, so a "
                    "stopped prefetch resumes.")
    prefetch.add_argument("paths", nargs="+", metavar="PATH")
    prefetch.add_argument("--features", metavar="NAME,...",
                          help="only these features of each resource, e.g. deform,area_um")
    prefetch.add_argument("--jobs", type=int, default=4,
                          help="files read at once (default: %(default)s)")
    prefetch.set_defaults(func=cmd_prefetch)

    cache = sub.add_parser("cache", help="show or clear the disk cache",
                           description="status: what the disk cache holds; clear: drop it "
                                       "all, or only the given resources' artifacts.")
    cache.add_argument("action", choices=["status", "clear"])
    cache.add_argument("resources", nargs="*", metavar="RESOURCE_ID",
                       help="with clear: only these resources")
    cache.add_argument("--cache-dir", help="the cache folder (default: $XDG_CACHE_HOME/dcorfs)")
    cache.add_argument("--top", type=int, default=10,
                       help="with status: list this many of the largest artifacts")
    cache.set_defaults(func=cmd_cache)

    doctor = sub.add_parser("doctor", help="check that FUSE can run here",
                            description="Say what is missing for mounting, and how to install it.")
    doctor.set_defaults(func=cmd_doctor)
    return parser


# the mount-helper form: ``dcorfs SOURCE MOUNTPOINT -o OPTIONS`` (mount.fuse3, fstab)
COMMANDS = {"mount", "unmount", "serve", "demo", "demo-data", "doctor", "prefetch", "cache"}
# mount(8)'s own options; dcorfs is always read-only, so rw and ro change nothing
HELPER_IGNORED = {"rw", "ro", "defaults", "auto", "noauto", "user", "nouser", "users",
                  "owner", "group", "_netdev", "nofail", "comment"}


def mount_helper_argv(argv: list[str]) -> list[str] | None:
    """``SOURCE MOUNTPOINT [-o OPTIONS]...`` as ``dcorfs mount`` arguments, or None when
    ``argv`` is not in that form.  SOURCE is the host (``dcorfs`` or ``none`` for the
    default, or ``host=`` among the options); dcorfs's own options are written with
    underscores (``cache_size=2G``); every other option goes to FUSE."""
    if len(argv) < 2 or argv[0] in COMMANDS or argv[0].startswith("-"):
        return None
    source, mountpoint, rest = argv[0], argv[1], list(argv[2:])
    out = ["mount", mountpoint]
    if source not in ("dcorfs", "none", ""):
        out += ["--host", source]
    fuse: list[str] = []
    while rest:
        arg = rest.pop(0)
        if arg == "-o" and rest:
            options = rest.pop(0)
        elif arg.startswith("-o") and len(arg) > 2:
            options = arg[2:]
        elif arg in ("-f", "-v", "-vv"):
            out.append({"-f": "--foreground"}.get(arg, arg))
            continue
        else:
            raise SystemExit(f"dcorfs: unexpected argument {arg!r}; the mount-helper form is "
                             f"dcorfs SOURCE MOUNTPOINT -o OPTIONS")
        for item in filter(None, (o.strip() for o in options.split(","))):
            key = item.partition("=")[0]
            own = helper_option(item)
            if own is not None:
                out += own
            elif not (key.startswith("x-") or key in HELPER_IGNORED):
                fuse.append(item)
    if fuse:
        out += ["-o", ",".join(fuse)]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    argv = mount_helper_argv(argv) or argv
    args = build_parser().parse_args(argv)
    return args.func(args)
