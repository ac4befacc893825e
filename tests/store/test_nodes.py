"""The node cache and write buffer (store/nodes.py): bounded by bytes, batches writes."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from store.codec import address_of, encode
from store.errors import CorruptNode, NodeNotFound, TreeError
from store.memory import MemoryStore
from store.nodes import Nodes, TreeConfig, decode_node, make_internal, make_leaf
from store.tree import Tree


class CountingStore(MemoryStore):
    """A memory store that counts put_many calls and fetched addresses."""

    def __init__(self) -> None:
        super().__init__()
        self.put_calls = 0
        self.fetched: list[bytes] = []

    async def put_many(self, nodes: Mapping[bytes, bytes]) -> None:
        self.put_calls += 1
        await super().put_many(nodes)

    async def get(self, address: bytes) -> bytes:
        self.fetched.append(address)
        return await super().get(address)


def leaf(i: int) -> tuple[object, bytes]:
    return make_leaf([b"k%05d" % i], [b"x" * 1000])


async def test_cache_stays_within_its_byte_bound() -> None:
    store = CountingStore()
    writer = Nodes(store)
    made = [leaf(i) for i in range(200)]
    for node, data in made:
        writer.add(node, data)  # type: ignore[arg-type]
    await writer.flush()
    bound = 50_000
    reader = Nodes(store, cache_bytes=bound)
    for node, _ in made:
        await reader.load(node.address)  # type: ignore[attr-defined]
        assert reader.cached_bytes <= bound
    assert reader.stats.fetches == 200
    # the most recent node is cached, the first long evicted
    first, last = made[0][0].address, made[-1][0].address  # type: ignore[attr-defined]
    assert reader.peek(last) is not None
    assert reader.peek(first) is None
    store.fetched.clear()
    await reader.load(last)
    assert store.fetched == []


async def test_flush_writes_a_whole_build_in_few_batches() -> None:
    store = CountingStore()
    nodes = Nodes(store, TreeConfig(target=256, min_size=64, max_size=1024))
    tree = await Tree.build(nodes, ((b"%06d" % i, b"v" * 20) for i in range(5000)))
    assert nodes.stats.writes == len(await tree.reachable())
    assert store.put_calls == 1  # under the default 4 MiB flush threshold: one batch
    edited = await tree.edit([(b"%06d" % i, b"w") for i in range(0, 5000, 500)])
    assert store.put_calls == 2
    assert await edited.get(b"000500") == b"w"


async def test_pending_nodes_are_readable_before_flush() -> None:
    nodes = Nodes(MemoryStore())
    node, data = make_leaf([b"a"], [b"b"])
    nodes.add(node, data)
    assert (await nodes.load(node.address)).values == [b"b"]
    with pytest.raises(NodeNotFound):
        await nodes.store.get(node.address)
    await nodes.flush()
    assert await nodes.store.get(node.address) == data


async def test_load_many_fetches_missing_in_one_batch() -> None:
    store = CountingStore()
    writer = Nodes(store)
    made = [leaf(i) for i in range(10)]
    for node, data in made:
        writer.add(node, data)  # type: ignore[arg-type]
    await writer.flush()
    reader = Nodes(store)
    got = await reader.load_many([n.address for n, _ in made])  # type: ignore[attr-defined]
    assert [g.keys for g in got] == [[b"k%05d" % i] for i in range(10)]
    assert store.fetched == []  # get_many, not one get per node
    assert reader.stats.fetches == 10


def test_decode_node_rejects_malformed_nodes() -> None:
    good, data = make_internal(1, [b"a", b"b"], [address_of(b"1"), address_of(b"2")], [1, 2])
    assert decode_node(good.address, data).count == 3
    bad = [
        encode("hello"),
        encode([0, [b"a"]]),
        encode([0, [b"b", b"a"], [b"1", b"2"]]),  # keys out of order
        encode([0, [b"a"], ["text"]]),
        encode([1, [b"a"], [b"not an address"], [1]]),
        encode([1, [b"a"], [address_of(b"1")], [0]]),  # empty subtree count
        encode([1, [], [], []]),
        encode([-1, [], []]),
    ]
    for raw in bad:
        with pytest.raises(CorruptNode):
            decode_node(address_of(raw), raw)


def test_tree_config_validates() -> None:
    with pytest.raises(TreeError):
        TreeConfig(target=10, min_size=20, max_size=30)
    with pytest.raises(TreeError):
        TreeConfig(target=10, min_size=0, max_size=30)
    with pytest.raises(TreeError):
        TreeConfig(target=40, min_size=20, max_size=30)
