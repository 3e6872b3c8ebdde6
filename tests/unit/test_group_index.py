"""Members of an old-style group found by name (``hdf5.group_index``), against files
h5py writes, through a fetch function that reads the local file and counts requests."""
from __future__ import annotations

import concurrent.futures
import errno
import random

import h5py
import pytest
from test_group_shapes import LocalFetch, write_scattered

from dcorfs.hdf5 import symbol_table as st
from dcorfs.hdf5.group_index import GroupIndex

MEMBERS = 3000


@pytest.fixture(scope="module")
def pool():
    with concurrent.futures.ThreadPoolExecutor(8) as executor:
        yield executor


@pytest.fixture(scope="module")
def scattered(tmp_path_factory):
    path = tmp_path_factory.mktemp("index") / "scattered.h5"
    write_scattered(path, MEMBERS)
    with h5py.File(path, "r") as h5:
        group = h5["contour"]
        headers = {name: group.id.links.get_info(name.encode()).u for name in group}
        address = h5.id.links.get_info(b"contour").u
    return path, headers, address


def index_of(path, address, pool, fetch=None):
    fetch = fetch or LocalFetch(path)
    head = fetch.data[:64]
    return GroupIndex(fetch, fetch, pool.submit, fetch.data[address:address + 4096],
                      st.group_ks(head)), fetch


@pytest.mark.parametrize("order", ["a loop from 0", "name order", "backwards", "random"])
def test_every_name_is_found_where_h5py_finds_it(scattered, pool, order):
    path, headers, address = scattered
    names = {"a loop from 0": [str(i) for i in range(MEMBERS)],
             "name order": sorted(headers),
             "backwards": [str(i) for i in range(MEMBERS - 1, -1, -1)],
             "random": [str(i) for i in random.Random(2).sample(range(MEMBERS), 500)]}[order]
    index, _ = index_of(path, address, pool)
    learned: dict[str, int] = {}
    found = index.find(names, learned.update)
    assert found == {name: headers[name] for name in names}
    assert learned.items() >= {name: headers[name] for name in names}.items()
    assert set(learned) <= set(headers)  # neighbours too, each where h5py has it


def test_names_it_lacks_are_none(scattered, pool):
    path, headers, address = scattered
    index, _ = index_of(path, address, pool)
    wanted = ["", "-1", "0", "00", "99999", "zzz", str(MEMBERS - 1)]
    assert index.find(wanted, lambda _: None) == {
        name: headers.get(name) for name in wanted}


def test_nodes_are_kept_and_neighbours_in_name_order_share_requests(scattered, pool):
    """A second find of the same names asks only for symbol nodes; names next to each
    other in name order need far fewer requests than names a loop asks for."""
    path, headers, address = scattered
    index, fetch = index_of(path, address, pool)
    loop = [str(i) for i in range(0, 200)]
    index.find(loop, lambda _: None)
    first = len(fetch.requests)
    fetch.requests.clear()
    index.find(loop, lambda _: None)
    again = len(fetch.requests)
    assert again < first
    neighbours = sorted(headers)[1000:1200]
    fetch.requests.clear()
    index.find(neighbours, lambda _: None)
    assert len(fetch.requests) < again / 4


def test_a_node_that_is_not_where_its_parent_says_is_eio(scattered, pool):
    path, headers, address = scattered
    clean = LocalFetch(path)
    root, _ = st.symbol_table(clean.data[address:address + 4096], 0)
    level, _, children = st.tree_node(clean.data, root)
    assert level > 0
    damaged = LocalFetch(path, {child: b"XXXX" for child in children})
    index, _ = index_of(path, address, pool, damaged)
    with pytest.raises(OSError) as info:
        index.find(["1234"], lambda _: None)
    assert info.value.errno == errno.EIO


def test_a_new_style_group_is_enotsup(tmp_path, pool):
    path = tmp_path / "new.h5"
    with h5py.File(path, "w", libver="latest") as h5:
        h5.create_group("g").create_dataset("0", data=[1, 2])
        address = h5.id.links.get_info(b"g").u
    with pytest.raises(OSError) as info:
        index_of(path, address, pool)
    assert info.value.errno == errno.ENOTSUP


def test_two_threads_finding_at_once_agree_with_h5py(scattered, pool):
    path, headers, address = scattered
    index, _ = index_of(path, address, pool)
    halves = [[str(i) for i in range(0, MEMBERS, 2)], [str(i) for i in range(1, MEMBERS, 2)]]
    with concurrent.futures.ThreadPoolExecutor(2) as callers:
        results = list(callers.map(lambda names: index.find(names, lambda _: None), halves))
    assert {**results[0], **results[1]} == headers
