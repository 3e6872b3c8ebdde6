"""Behind an institute's proxy: the environment's proxy settings, as curl and requests
read them, and ``--proxy``; the token goes to DCOR only."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from harness import npy_bytes
from proxy import ForwardingProxy

dclab = pytest.importorskip("dclab")

RELPATH = "private/calibration_beads.rtdc"


def _expected(corpus_dir, feature: str) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dclab.new_dataset(corpus_dir / RELPATH) as ds:
            value = ds[feature]
            return npy_bytes(np.asarray(value[:] if feature == "image" else value))


@pytest.mark.parametrize("how", ["HTTP_PROXY", "http_proxy", "--proxy"])
def test_every_request_goes_through_the_proxy(server, corpus_dir, fresh_mount, how):
    rid = server.ids[RELPATH]
    with ForwardingProxy() as proxy:
        if how == "--proxy":
            mnt = fresh_mount(server.url, server.token_file, extra=["--proxy", proxy.url])
        else:
            mnt = fresh_mount(server.url, server.token_file, env={how: proxy.url})
        assert mnt.status()["network"]["proxy"]["api"] == proxy.url
        server.reset_stats()
        proxy.reset()
        for feature in ("deform", "image"):
            assert (mnt.path / rid / f"{feature}.npy").read_bytes() == \
                _expected(corpus_dir, feature), feature
        seen = server.stats()
        assert seen["api_requests"] > 0 and seen["store_requests"] > 0
        # each request the servers saw came through the proxy, and no other
        assert proxy.total() == seen["api_requests"] + seen["store_requests"]
        assert proxy.proxy_headers == 0  # nothing meant for the proxy itself
        assert seen.get("store_auth_headers", 0) == 0  # the token reached DCOR only
        assert mnt.status()["network"]["proxy"]["store"] == proxy.url


def test_no_proxy_names_hosts_reached_directly(server, corpus_dir, fresh_mount):
    rid = server.ids[RELPATH]
    with ForwardingProxy() as proxy:
        mnt = fresh_mount(server.url, server.token_file,
                          env={"HTTP_PROXY": proxy.url, "NO_PROXY": "localhost,127.0.0.1"})
        assert (mnt.path / rid / "deform.npy").read_bytes() == _expected(corpus_dir, "deform")
        assert proxy.total() == 0
        assert mnt.status()["network"]["proxy"] == {"api": None, "store": None}
