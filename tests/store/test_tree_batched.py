"""Batched reads of the prolly tree (store/tree.py): the level-by-level diff, ``scan_ranges``
and ``prefetch_paths``, ``Nodes.prefetch``, and the strictness of ``decode_node`` (which every
fetched node goes through) on non-canonical encodings."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest

from store.codec import address_of
from store.errors import CorruptNode
from store.memory import MemoryStore
from store.nodes import Node, Nodes, TreeConfig, decode_node, make_internal, make_leaf
from store.tree import Tree, diff, new_nodes, prefetch_paths, scan_ranges

TINY = TreeConfig(target=64, min_size=16, max_size=256)


class CallCountingStore(MemoryStore):
    """A memory store that counts single gets and batched get_many calls."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.batches = 0

    async def get(self, address: bytes) -> bytes:
        self.gets += 1
        return await super().get(address)

    async def get_many(self, addresses: object) -> dict[bytes, bytes]:
        self.batches += 1
        return await super().get_many(addresses)  # type: ignore[arg-type]


async def build(store: MemoryStore, items: Mapping[bytes, bytes]) -> Tree:
    return await Tree.build(Nodes(store, TINY), sorted(items.items()))


def random_items(rng: random.Random, n: int) -> dict[bytes, bytes]:
    return {b"%05d" % rng.randrange(20_000): rng.randbytes(rng.randrange(1, 6)) for _ in range(n)}


@pytest.mark.parametrize("seed", range(12))
async def test_scan_ranges_equals_one_scan_per_range(seed: int) -> None:
    rng = random.Random(seed)
    store = MemoryStore()
    tree = await build(store, random_items(rng, rng.choice([0, 1, 40, 600, 2500])))
    ranges: list[tuple[bytes, bytes | None]] = []
    for _ in range(rng.choice([1, 15, 300])):
        lo = (b"%05d" % rng.randrange(21_000))[: rng.randrange(1, 6)]
        hi: bytes | None = rng.choice(
            [b"%05d" % rng.randrange(21_000), lo + b"\xff", lo, None]  # some empty, unbounded
        )
        ranges.append((lo, hi))
    got = await scan_ranges(Tree(Nodes(store, TINY), tree.root), ranges)
    for (lo, hi), items in zip(ranges, got, strict=True):
        want = await tree.items(lo, hi) if hi is None or lo < hi else []
        assert items == want, (lo, hi)


async def test_scan_ranges_reads_each_node_once_per_level_batch() -> None:
    rng = random.Random(1)
    store = CallCountingStore()
    tree = await build(store, random_items(rng, 3000))
    nodes = Nodes(store, TINY)
    prefixes = sorted({b"%03d" % rng.randrange(200) for _ in range(50)})
    got = await scan_ranges(Tree(nodes, tree.root), [(p, p + b"\xff") for p in prefixes])
    assert [len(g) for g in got] == [len(await tree.items(p, p + b"\xff")) for p in prefixes]
    height = await tree.height()
    assert store.gets == 1  # the root; every other level in one batch
    assert store.batches == height - 1
    assert nodes.stats.reads == nodes.stats.fetches  # no node read twice


@pytest.mark.parametrize("seed", range(8))
async def test_diff_and_new_nodes_batch_by_level(seed: int) -> None:
    rng = random.Random(seed)
    store = CallCountingStore()
    items = random_items(rng, 3000)
    a = await build(store, items)
    edits = [(b"%05d" % rng.randrange(20_000), rng.choice([None, b"x"])) for _ in range(40)]
    b = await a.edit(edits)
    nodes = Nodes(store, TINY)
    ta, tb = Tree(nodes, a.root), Tree(nodes, b.root)
    store.gets = store.batches = 0
    changes = [c async for batch in diff(ta, tb) for c in batch]
    new = dict(items)
    for k, v in edits:
        if v is None:
            new.pop(k, None)
        else:
            new[k] = v
    assert changes == sorted(
        (k, items.get(k), new.get(k)) for k in set(items) | set(new) if items.get(k) != new.get(k)
    )
    assert store.gets == 2  # the two roots; then one batch a level, two per run of leaves
    assert store.batches <= 2 * await a.height() + 2
    assert await new_nodes(ta, tb) == await b.reachable() - await a.reachable()


async def test_prefetch_paths_loads_what_the_edit_reads_without_counting_reads() -> None:
    rng = random.Random(3)
    store = CallCountingStore()
    tree = await build(store, random_items(rng, 3000))
    keys = sorted({b"%05d" % rng.randrange(21_000) for _ in range(60)} | {b"99999"})
    nodes = Nodes(store, TINY)
    loaded: set[bytes] = set()
    load = nodes.load

    async def counted(address: bytes) -> Node:
        loaded.add(address)
        return await load(address)

    load_cached = nodes.load_cached

    def counted_cached(address: bytes) -> Node | None:  # the C edit's way to read (speedups)
        node = load_cached(address)
        if node is not None:
            loaded.add(address)
        return node

    await prefetch_paths(Tree(nodes, tree.root), keys, 10**6)
    assert nodes.stats.reads == 0 and nodes.stats.fetches > 0
    ahead = set(nodes._cache)
    nodes.load = counted  # type: ignore[method-assign]
    nodes.load_cached = counted_cached  # type: ignore[method-assign]
    fetched = nodes.stats.fetches
    store.gets = 0
    edited = await Tree(nodes, tree.root).edit([(k, b"v") for k in keys])
    assert ahead <= loaded  # nothing was fetched ahead that the edit did not read
    assert nodes.stats.fetches - fetched == store.gets
    # the same edit without: the same reads, and the same nodes fetched in all (one by one
    # in Python; in C, by the edit's own prefetch at its first miss, then one by one)
    plain = Nodes(store, TINY)
    store.gets = 0
    again = await Tree(plain, tree.root).edit([(k, b"v") for k in keys])
    assert again == edited
    assert plain.stats.fetches == nodes.stats.fetches
    assert plain.stats.reads == nodes.stats.reads
    assert [await edited.get(k) for k in keys] == [b"v"] * len(keys)
    # a limit on the leaves
    limited = Nodes(store, TINY)
    await prefetch_paths(Tree(limited, tree.root), keys, 5)
    leaves = [n for n in limited._cache.values() if n.level == 0]
    assert len(leaves) == 5


async def test_prefetch_counts_fetches_not_reads() -> None:
    store = MemoryStore()
    writer = Nodes(store)
    made = [make_leaf([b"k%03d" % i], [b"v"]) for i in range(5)]
    for node, data in made:
        writer.add(node, data)
    await writer.flush()
    nodes = Nodes(store)
    got = await nodes.prefetch([n.address for n, _ in made])
    assert [g.keys for g in got] == [n.keys for n, _ in made]
    assert (nodes.stats.reads, nodes.stats.fetches) == (0, 5)
    await nodes.load_many([n.address for n, _ in made])
    assert (nodes.stats.reads, nodes.stats.fetches) == (5, 5)


def _long_head(major: int, n: int) -> bytes:
    """A CBOR head for ``n`` in 4 bytes: valid, but not the shortest form."""
    return bytes([major << 5 | 26]) + n.to_bytes(4, "big")


def test_decode_node_rejects_non_canonical_encodings() -> None:
    node, data = make_leaf([b"a", b"b"], [b"x", b"y"])
    assert decode_node(node.address, data).keys == [b"a", b"b"]
    # the same leaf with a long length head on its first key
    assert data[3:5] == b"\x41a"
    longer = data[:3] + _long_head(2, 1) + b"a" + data[5:]
    with pytest.raises(CorruptNode, match="canonical"):
        decode_node(address_of(longer), longer)
    # an internal node whose subtree count is a bignum (tag 2) of a small value
    child = address_of(b"child")
    _, idata = make_internal(1, [b"a"], [child], [65536])
    assert idata.endswith(b"\x81\x1a\x00\x01\x00\x00")
    bignum = idata[: -len(b"\x1a\x00\x01\x00\x00")] + b"\xc2\x43\x01\x00\x00"
    with pytest.raises(CorruptNode, match="canonical"):
        decode_node(address_of(bignum), bignum)
    # trailing bytes
    with pytest.raises(CorruptNode):
        decode_node(address_of(data + b"\x00"), data + b"\x00")


async def test_load_many_and_prefetch_look_through_a_subclass_peek() -> None:
    """Like replica/connection.py's speculative nodes: nodes held elsewhere (here another
    Nodes' unflushed buffer) are found through ``peek``, not asked of the store."""
    base = Nodes(MemoryStore())
    node, data = make_leaf([b"k"], [b"v"])
    base.add(node, data)  # buffered only: the store lacks it

    class Layered(Nodes):
        def peek(self, address: bytes) -> Node | None:
            return super().peek(address) or base.peek(address)

    layered = Layered(base.store)
    assert [n.keys for n in await layered.load_many([node.address])] == [[b"k"]]
    assert [n.keys for n in await layered.prefetch([node.address])] == [[b"k"]]
    assert layered.stats.fetches == 0
    # prefetch_paths is a hint: a node the store lacks ends it without an error
    await prefetch_paths(Tree(Nodes(MemoryStore()), node.address), [b"k"], 10)
