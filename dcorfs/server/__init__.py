"""``dcorfs serve``: a local DCOR-compatible server (API, object store, condensed files)."""
from __future__ import annotations

import json
import logging
import pathlib
import signal
import threading

from .app import DcorServer, ServerConfig, read_or_create_token
from .catalog import Catalog
from .faults import Faults
from .link import Link

log = logging.getLogger(__name__)

SHOWN = 50  # resources listed at start


def run(data_dir: pathlib.Path, host: str, port: int, store_port: int, cache_dir: pathlib.Path,
        private: list[str], token_file: pathlib.Path | None, latency_ms: float,
        bandwidth_mbs: float, presign_ttl: float, list_only: bool,
        faults: str | None = None, synthetic: int = 0, handshake_round_trips: int = 1,
        idle_close_s: float = 0.0, intra_dataset_basins: bool = True,
        no_condensed: list[str] | None = None, site_address: str | None = "auto",
        previews: bool = True) -> int:
    catalog = Catalog(data_dir, cache_dir, private, synthetic=synthetic,
                      no_condensed=no_condensed, previews=previews)
    if list_only:
        catalog.scan()
        for row in catalog.summary():
            flags = ("private" if row["private"] else "public") + \
                    ("" if row["condensed"] else ", no condensed")
            print(f"{row['id']}  {row['path']}  ({flags})")
        catalog.close()
        return 0
    tokens = {read_or_create_token(token_file)} if token_file else set()
    config = ServerConfig(catalog=catalog, tokens=tokens,
                          link=Link(latency_ms, bandwidth_mbs), presign_ttl=presign_ttl,
                          handshake_round_trips=handshake_round_trips, idle_close_s=idle_close_s,
                          intra_dataset_basins=intra_dataset_basins)
    if faults:
        config.faults.set(Faults.from_dict(json.loads(faults)))
    server = DcorServer(config, host=host, port=port, store_port=store_port,
                        site_address=site_address)
    # the condensed files name the server's addresses in their basins, as DCOR's do
    catalog.site_url, catalog.store_base = config.site_url, config.store_base
    try:
        catalog.scan()
    except BaseException:
        server.stop()
        catalog.close()
        raise
    server.start()
    print(f"DCOR API:      {config.api_base}   (mount with --host {config.api_base})", flush=True)
    print(f"object store:  {config.store_base}", flush=True)
    if config.site_url != config.api_base:
        print(f"site URL:      {config.site_url}   (in the basins of condensed files)",
              flush=True)
    if token_file:
        print(f"API token in:  {token_file}", flush=True)
    rows = catalog.summary()
    for row in rows[:SHOWN]:
        flags = "private" if row["private"] else "public"
        print(f"  {row['id']}  {row['path']}  ({flags})", flush=True)
    if len(rows) > SHOWN:
        print(f"  ... and {len(rows) - SHOWN} more (--list prints them all)", flush=True)
    print(f"serving {len(catalog.datasets)} datasets with {len(catalog.resources)} resources "
          f"in {len(catalog.circles)} circles and {len(catalog.collections)} collections; "
          f"stop with Ctrl-C", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    catalog.close()
    log.info("DCS105 server stopped")
    return 0
