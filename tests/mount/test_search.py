"""``search/<query>/`` on real mounts against ``dcorfs serve``: every example of the
README lists exactly what ``package_search`` returns for it, ``results.tsv`` is in
DCOR's order, and CKAN's quirks hold (dismax without a colon, the standard parser
with one)."""
from __future__ import annotations

import csv
import errno
import io
import os
import pathlib
import re
import shlex

import pytest
import requests

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def readme_queries() -> list[str]:
    """The queries of the README's search examples (``ls ~/dcor/search/<query>/``)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Find data: `search/`", 1)[1].split("\n## ", 1)[0]
    queries = []
    for line in section.splitlines():
        match = re.match(r"ls ~/dcor/search/(\S+?)/?\s+#", line) or \
            re.match(r"ls ~/dcor/search/('[^']*')/\s+#", line)
        if match:
            queries.append(shlex.split(match.group(1).rstrip("/"))[0])
    return queries


def listed(mnt, q: str) -> set[str]:
    return set(os.listdir(mnt.path / "search" / q)) - {"results.tsv"}


def test_the_readme_has_examples():
    queries = readme_queries()
    assert len(queries) >= 8 and "blood OR beads" in queries and "title:eryth*" in queries


@pytest.mark.parametrize("with_token", [False, True])
def test_each_readme_example_lists_what_package_search_returns(browse_server, fresh_mount,
                                                               with_token):
    mnt = fresh_mount(browse_server.url,
                      token_file=browse_server.token_file if with_token else None)
    found_any = False
    for q in readme_queries():
        expected = browse_server.searched(q, with_token)
        assert listed(mnt, q) == set(expected), q
        found_any = found_any or bool(expected)
        for name in expected:  # each result opens as in datasets/
            assert os.readlink(mnt.path / "search" / q / name) == f"../../datasets/{name}"
    assert found_any


def test_ckan_quirks_hold(browse_server, fresh_mount):
    """What the README promises of DCOR's syntax, on the catalog's own words."""
    mnt = fresh_mount(browse_server.url)
    blood, beads = listed(mnt, "blood"), listed(mnt, "beads")
    assert blood and beads and blood != beads
    assert listed(mnt, "blood OR beads") == listed(mnt, "blood beads") == blood & beads
    assert listed(mnt, "tags:blood OR tags:beads") == \
        listed(mnt, "tags:blood") | listed(mnt, "tags:beads")
    assert listed(mnt, "eryth*") == set() and listed(mnt, "title:eryth*") == {"blood-cells"}
    assert listed(mnt, "erythrocyte") == listed(mnt, "erythrocytes")  # stemmed
    assert listed(mnt, "nothing-like-this-anywhere") == set()
    assert os.listdir(mnt.path / "search" / "nothing-like-this-anywhere") == []


def test_a_circle_search_equals_the_circle_folder(browse_server, fresh_mount):
    mnt = fresh_mount(browse_server.url, token_file=browse_server.token_file)
    for circle in os.listdir(mnt.path / "circles"):
        assert listed(mnt, f"organization:{circle}") == \
            set(os.listdir(mnt.path / "circles" / circle)), circle


def test_private_datasets_need_the_token(browse_server, fresh_mount):
    anonymous = fresh_mount(browse_server.url)
    member = fresh_mount(browse_server.url, token_file=browse_server.token_file)
    assert "blood-private" not in listed(anonymous, "blood")
    assert "blood-private" in listed(member, "blood")
    assert os.listdir(member.path / "search" / "blood" / "blood-private")


def test_results_tsv_is_in_dcors_order(browse_server, fresh_mount):
    mnt = fresh_mount(browse_server.url, token_file=browse_server.token_file)
    path = mnt.path / "search" / "blood" / "results.tsv"
    text = path.read_bytes()
    assert path.stat().st_size == len(text)  # exact before reading
    rows = list(csv.DictReader(io.StringIO(text.decode()), delimiter="\t"))
    assert [r["name"] for r in rows] == browse_server.searched("blood", True)
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    by_name = {r["name"]: r for r in rows}
    cells = by_name["blood-cells"]
    assert cells["title"] == "Erythrocytes of a healthy donor"
    assert cells["circle"] == "blood-lab" and cells["collections"] == "blood-study"
    assert int(cells["resources"]) == len([n for n in os.listdir(
        mnt.path / "datasets" / "blood-cells") if "." in n]) - 1  # without dataset.json
    readme = (mnt.path / "search" / "README.txt").read_text()
    assert "title:eryth*" in readme and "README.txt" in os.listdir(mnt.path / "search")
    assert "blood" in os.listdir(mnt.path / "search")  # asked since the mount


@pytest.mark.expect_warnings("DCB706")
def test_a_query_dcor_rejects_is_einval(browse_server, fresh_mount):
    mnt = fresh_mount(browse_server.url)
    for q in ("tags:(blood", "nosuchfield:x"):
        with pytest.raises(OSError) as info:
            os.listdir(mnt.path / "search" / q)
        assert info.value.errno == errno.EINVAL, q
    assert "DCB706" in mnt.log_text() and "undefined field nosuchfield" in mnt.log_text()
    server_answer = requests.get(f"{browse_server.url}/api/3/action/package_search",
                                 params={"q": "tags:(blood"}, timeout=30)
    assert server_answer.status_code == 409  # CKAN's answer to a Solr syntax error
    assert server_answer.json()["error"]["__type"] == "Search Error"
    with pytest.raises(FileNotFoundError):  # hidden names are not asked
        os.stat(mnt.path / "search" / ".hidden")


def test_a_search_asked_before_lists_offline(browse_dir, servers, fresh_mount, tmp_path):
    srv = servers.start(browse_dir, "--private", "blood-private/*")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    first = fresh_mount(srv.url, extra=cache)
    expected = os.listdir(first.path / "search" / "tags:blood")
    tsv = (first.path / "search" / "tags:blood" / "results.tsv").read_bytes()
    assert first.unmount() == 0
    srv.stop()
    offline = fresh_mount(srv.url, extra=cache + ["--offline"])
    assert os.listdir(offline.path / "search" / "tags:blood") == expected
    assert (offline.path / "search" / "tags:blood" / "results.tsv").read_bytes() == tsv
