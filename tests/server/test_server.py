"""``dcorfs serve`` answers as DCOR does (docs/dcor-api.md)."""
from __future__ import annotations

import concurrent.futures
import fnmatch
import posixpath
import shutil
import subprocess
import sys

import pytest
import requests

import corpus


def action(server, name, token=None, **params):
    headers = {"Authorization": token} if token else {}
    return requests.get(f"{server.url}/api/3/action/{name}", params=params, headers=headers,
                        timeout=30)


def test_envelope_and_validation_order(server):
    rid = server.ids["beads/calibration_beads.rtdc"]
    resp = action(server, "dcserv", id=rid)
    assert resp.status_code == 409 and resp.reason == "CONFLICT"
    body = resp.json()
    assert body["success"] is False and "help" in body
    assert body["error"] == {"__type": "Validation Error",
                             "message": "Please specify 'query' parameter!"}
    assert action(server, "dcserv", query="size").json()["error"]["message"] == \
        "Please specify 'id' parameter!"
    assert "not supported anymore" in action(server, "dcserv", id=rid, query="size",
                                             version="1").json()["error"]["message"]
    assert action(server, "dcserv", id=rid, query="peter").json()["error"]["message"] == \
        "Invalid query parameter 'peter'!"
    resp = action(server, "dcserv", id="0123abcd-0000-4000-8000-000000000000", query="size")
    assert resp.status_code == 404 and resp.json()["error"]["message"] == "Not found"
    resp = action(server, "no_such_action")
    assert resp.status_code == 400 and isinstance(resp.json(), str)


def test_dcserv_queries(server):
    rid = server.ids["beads/calibration_beads.rtdc"]
    ok = lambda q: action(server, "dcserv", id=rid, query=q).json()["result"]  # noqa: E731
    assert ok("size") == 47
    assert ok("valid") is True
    assert ok("feature_list") == []
    meta = ok("metadata")
    assert meta["experiment"]["event count"] == 47 and "sample" in meta["experiment"]
    assert ok("trace_list") == ["fl1_median", "fl1_raw", "fl2_median", "fl2_raw", "fl3_median"]
    assert "dclab-condense" in ok("logs")  # condensed file's log is merged in
    basins = ok("basins")
    assert [b["name"] for b in basins] == [f"condensed-{rid[:5]}", f"resource-{rid[:5]}"]
    for basin in basins:
        assert basin["format"] == "http" and basin["type"] == "remote"
        assert basin["mapping"] == "same" and basin["perishable"] is False
        assert "expires" not in basin["urls"][0].lower()
    # the condensed file adds features computed from the images (as DCOR's does)
    assert "bright_sd" in basins[0]["features"] and "bright_sd" not in basins[1]["features"]
    # DCOR's intra-dataset basins (on by default): the condensed basin also declares the
    # original's features that the condensed file lacks
    assert set(basins[1]["features"]) <= set(basins[0]["features"])
    assert "image" in basins[1]["features"] and "image" in basins[0]["features"]
    # trace_list without traces: DCOR's KeyError, a 500
    no_trace = server.ids["scalars/example.rtdc"]
    assert action(server, "dcserv", id=no_trace, query="trace_list").status_code == 500


def test_missing_condensed_file(server):
    rid = server.ids["empty/empty_recording.rtdc"]
    basins = action(server, "dcserv", id=rid, query="basins").json()["result"]
    assert "features" not in basins[0]
    # an unsigned GET of a key that does not exist: 403, as DCOR's store answers
    # anonymous clients (they may not list the bucket)
    answer = requests.get(basins[0]["urls"][0], timeout=10)
    assert answer.status_code == 403 and b"AccessDenied" in answer.content


def test_private_resources(server):
    rid = server.ids["private/calibration_beads.rtdc"]
    resp = action(server, "dcserv", id=rid, query="basins")
    assert resp.status_code == 403
    assert resp.json()["error"]["message"] == \
        f"Access denied: User  not authorized to read resource {rid}"
    assert action(server, "dcserv", token="wrong", id=rid, query="size").status_code == 403
    basins = action(server, "dcserv", token=server.token, id=rid, query="basins").json()["result"]
    for basin in basins:
        assert basin["perishable"] is True
        assert basin["time_expiration"] > basin["time_request"] + 3000
        assert "expires" in basin["urls"][0].lower()
        assert basin["key"].startswith("dcor-presigned-")
        unsigned = basin["urls"][0].split("?")[0]
        assert requests.get(unsigned, timeout=10).status_code == 403
        resp = requests.get(basin["urls"][0], headers={"Range": "bytes=0-7"}, timeout=10)
        assert resp.status_code == 206 and resp.content == b"\x89HDF\r\n\x1a\n"
        tampered = basin["urls"][0].replace("Signature=", "Signature=0")
        assert requests.get(tampered, timeout=10).status_code == 403
    assert action(server, "user_show", token=server.token).json()["result"]["name"]
    assert action(server, "user_show").status_code == 403


def test_object_store_ranges(server, corpus_dir):
    rid = server.ids["beads/calibration_beads.rtdc"]
    url = action(server, "dcserv", id=rid, query="basins").json()["result"][1]["urls"][0]
    original = (corpus_dir / "beads/calibration_beads.rtdc").read_bytes()
    full = requests.get(url, timeout=10)
    assert full.status_code == 200 and full.content == original
    assert len(full.headers["ETag"].strip('"')) >= 5
    assert full.headers["Accept-Ranges"] == "bytes"
    part = requests.get(url, headers={"Range": "bytes=100-299"}, timeout=10)
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 100-299/{len(original)}"
    assert part.content == original[100:300]
    tail = requests.get(url, headers={"Range": "bytes=-10"}, timeout=10)
    assert tail.content == original[-10:]
    past = requests.get(url, headers={"Range": f"bytes={len(original)}-"}, timeout=10)
    assert past.status_code == 416
    assert past.headers["Content-Range"] == f"bytes */{len(original)}"


@pytest.fixture
def lone_server(corpus_dir, tmp_path, servers):
    """A server of its own: no mount and no other test sends it anything."""
    (tmp_path / "data").mkdir()
    shutil.copy(corpus_dir / "scalars" / "example.rtdc", tmp_path / "data" / "example.rtdc")
    return servers.start(tmp_path / "data", "--latency-ms", "50")


def test_stats_count_round_trips(lone_server):
    (rid,) = lone_server.ids.values()
    url = action(lone_server, "dcserv", id=rid, query="basins").json()["result"][1]["urls"][0]
    lone_server.reset_stats()
    with requests.Session() as session:
        for start in (0, 100, 200):  # one after another: three round trips
            session.get(url, headers={"Range": f"bytes={start}-{start + 99}"}, timeout=10)
        seen = lone_server.stats()
        assert seen["store_requests"] == 3 and seen["round_trips"] == 3
        assert seen["connections"] == 1  # one connection, kept alive
        # at once: one round trip.  With some latency, so that on a busy machine the
        # first answer cannot come back before the last request has arrived
        lone_server.set_faults(latency_ms=200)
        lone_server.reset_stats()
        try:
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                list(pool.map(lambda start: requests.get(
                    url, headers={"Range": f"bytes={start}-{start + 99}"}, timeout=10),
                    (0, 1, 2)))
        finally:
            lone_server.set_faults()
    seen = lone_server.stats()
    assert seen["store_requests"] == 3 and seen["round_trips"] == 1, seen


def test_routes_and_catalog(server, corpus_dir):
    rid = server.ids["beads/calibration_beads.rtdc"]
    res = action(server, "resource_show", id=rid).json()["result"]
    assert res["mimetype"] == "RT-DC" and res["size"] == (corpus_dir / "beads/calibration_beads.rtdc").stat().st_size and len(res["sha256"]) == 64
    pkg = action(server, "package_show", id=res["package_id"]).json()["result"]
    assert rid in [r["id"] for r in pkg["resources"]]
    resp = requests.get(res["url"], allow_redirects=False, timeout=10)
    assert resp.status_code == 302
    assert requests.get(resp.headers["Location"], timeout=10).content[:4] == b"\x89HDF"
    public = action(server, "package_search", rows=1000).json()["result"]
    everything = action(server, "package_search", token=server.token, rows=1000,
                        include_private="true").json()["result"]
    private = {posixpath.dirname(rel) for rel in corpus.FILES
               if fnmatch.fnmatch(rel, corpus.PRIVATE_GLOB)}
    assert everything["count"] == public["count"] + len(private)  # the private datasets
    assert action(server, "status_show").json()["result"]["ckan_version"] == "2.11.3"


def test_serve_list_prints_stable_ids(server, corpus_dir, cache_dir):
    out = subprocess.run([sys.executable, "-m", "dcorfs", "serve", str(corpus_dir), "--list",
                          "--cache-dir", str(cache_dir)], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    for relpath, rid in server.ids.items():
        assert f"{rid}  {relpath}" in out


def test_stats_count_no_token_at_the_store(server, mount):
    assert server.stats().get("store_auth_headers", 0) == 0


def test_intra_dataset_basins_can_be_turned_off(in_thread_server):
    rid = in_thread_server.ids["beads/calibration_beads.rtdc"]

    def basins():
        return requests.get(f"{in_thread_server.url}/api/3/action/dcserv",
                            params={"id": rid, "query": "basins", "version": "2"},
                            timeout=30).json()["result"]
    on = basins()
    in_thread_server.config.intra_dataset_basins = False  # --no-intra-dataset-basins
    try:
        off = basins()
    finally:
        in_thread_server.config.intra_dataset_basins = True
    assert "image" in on[0]["features"] and "image" not in off[0]["features"]
    assert "image" in off[1]["features"] and on[1] == off[1]
    assert set(on[0]["features"]) == set(off[0]["features"]) | set(off[1]["features"])


def test_fq_follows_solr_rules(browse_server):
    """CKAN adds ``+capacity:public`` to ``fq`` itself, so an unprefixed term only
    ranks (ckan issue #4477): required and quoted terms filter, as the mount sends."""
    def names(fq):
        found = action(browse_server, "package_search", rows=1000, fq=fq).json()
        return sorted(d["name"] for d in found["result"]["results"])
    everything = names("")
    circle = names('+organization:"blood-lab"')
    assert circle and set(circle) < set(everything)
    assert names("organization:blood-lab") == everything  # optional: no filter
    assert names("+organization:blood-lab") == circle
    assert names('+organization:"blood-lab" AND +groups:"blood-study"') == sorted(
        set(circle) & set(names('+groups:"blood-study"')))
    assert names('organization:"blood-lab" AND groups:"blood-study"') == sorted(
        set(circle) & set(names('+groups:"blood-study"')))
    assert set(names('-organization:"blood-lab"')) == set(everything) - set(circle)
    bad = action(browse_server, "package_search", fq="nosuchfield:x")
    assert bad.status_code == 409
