"""The prolly tree (DESIGN.md 4, docs/format.md 4): examples, errors, corruption and cost bounds.

The properties (history independence, scans, diff and new_nodes against a dict model) are in
test_tree_props.py. Tests here use tiny nodes (target 64 bytes) so a few hundred keys make a
tree of several levels, or a medium configuration for the cost bounds, where the tree must be
large enough that a walk of the whole tree would clearly break the bound.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import AsyncIterator

import cbor2
import pytest

import store.tree as tree_module
from store.codec import address_of, encode
from store.errors import CorruptNode, NodeNotFound, ReplicaError, StoreError, TreeError
from store.memory import MemoryStore
from store.nodes import Node, Nodes, TreeConfig, make_leaf
from store.tree import Tree, diff, new_nodes

TINY = TreeConfig(target=64, min_size=16, max_size=256)
MEDIUM = TreeConfig(target=256, min_size=64, max_size=1024)

# the empty leaf [0, [], []] (docs/format.md 4)
EMPTY_ROOT = address_of(bytes.fromhex("83008080"))


def tiny_nodes() -> Nodes:
    return Nodes(MemoryStore(), TINY)


def numbered(n: int, step: int = 1) -> list[tuple[bytes, bytes]]:
    return [(b"key%06d" % i, b"value%d" % i) for i in range(0, n * step, step)]


async def all_diff(a: Tree, b: Tree) -> list[tuple[bytes, bytes | None, bytes | None]]:
    return [change async for batch in diff(a, b) for change in batch]


async def leaves(tree: Tree) -> list[Node]:
    """The tree's leaves in key order, by a plain recursive walk."""
    out: list[Node] = []

    async def walk(address: bytes) -> None:
        node = await tree.nodes.load(address)
        if node.is_leaf:
            out.append(node)
        else:
            for child in node.children:
                await walk(child)

    await walk(tree.root)
    return out


# -- building --------------------------------------------------------------------------------


async def test_tiny_config_gives_a_deep_tree() -> None:
    # the property tests rely on this: 200 keys span several levels with TINY
    tree = await Tree.build(tiny_nodes(), numbered(200))
    assert await tree.height() >= 3
    assert await tree.count() == 200
    assert len(await leaves(tree)) > 10


async def test_empty_tree() -> None:
    nodes = tiny_nodes()
    empty = await Tree.empty(nodes)
    assert empty.root == EMPTY_ROOT
    assert await nodes.store.get(EMPTY_ROOT) == bytes.fromhex("83008080")
    assert await empty.count() == 0
    assert await empty.height() == 1
    assert await empty.get(b"a") is None
    assert await empty.items() == []
    assert await empty.items(reverse=True) == []
    assert await empty.count_range(b"a", b"z") == 0
    assert await empty.reachable() == {EMPTY_ROOT}
    assert await all_diff(empty, empty) == []


async def test_build_of_nothing_is_the_empty_tree() -> None:
    nodes = tiny_nodes()

    async def nothing() -> AsyncIterator[tuple[bytes, bytes]]:
        for item in ():
            yield item

    assert (await Tree.build(nodes, [])).root == EMPTY_ROOT
    assert (await Tree.build(nodes, iter([]))).root == EMPTY_ROOT
    assert (await Tree.build(nodes, nothing())).root == EMPTY_ROOT
    # and it is stored: a fresh reader over the same store finds it
    fresh = Tree(Nodes(nodes.store, TINY), EMPTY_ROOT)
    assert await fresh.items() == []


async def test_single_item_tree() -> None:
    tree = await Tree.build(tiny_nodes(), [(b"k", b"v")])
    leaf, _ = make_leaf([b"k"], [b"v"])
    assert tree.root == leaf.address
    assert await tree.get(b"k") == b"v"
    assert await tree.items() == [(b"k", b"v")]


async def test_empty_key_and_empty_values() -> None:
    # a value larger than max_size makes a leaf of its own
    items = [(b"", b""), (b"\x00", b"x"), (b"a", b""), (b"\xff" * 20, b"big" * 100)]
    nodes = tiny_nodes()
    tree = await Tree.build(nodes, items)
    for key, value in items:
        assert await tree.get(key) == value
    assert await tree.items() == items
    assert await tree.items(reverse=True) == items[::-1]
    assert await tree.items(b"", b"a") == items[:2]
    assert await tree.count_range(b"", b"a", hi_inclusive=True) == 3
    edited = await (await Tree.empty(nodes)).edit(reversed(items))
    assert edited == tree
    assert (await tree.edit([(b"", None)])).root == (await Tree.build(nodes, items[1:])).root


class _RunawayLevels(Exception):
    pass


HUGE_KEY_CASES = {
    # a key whose internal entry (len + 40) reaches max_size ends a node by size at every level
    "tiny, one huge key in the middle": (TINY, [(b"a", b"1"), (b"b" * 300, b"2"), (b"c", b"3")]),
    "tiny, near the size bound": (TINY, [(b"a", b"1"), (b"b" * 200, b"2"), (b"c", b"3")]),
    "tiny, single huge key": (TINY, [(b"k" * 500, b"v")]),
    "tiny, only huge keys": (TINY, [(bytes([i]) * 400, b"v") for i in range(1, 40)]),
    "tiny, huge keys among many": (
        TINY,
        sorted(
            [(b"key%06d" % i, b"v") for i in range(300)]
            + [(b"key%06d" % i + b"x" * 400, b"") for i in range(0, 300, 7)]
        ),
    ),
    "default, 12 KB key": (TreeConfig(), [(b"a", b""), (b"b" * 12_000, b""), (b"c", b"")]),
    "default, 20 KB keys": (TreeConfig(), [(bytes([i]) * 20_000, b"") for i in range(1, 6)]),
}


@pytest.mark.parametrize("how", ["build", "edit"])
@pytest.mark.parametrize(
    ("config", "items"), list(HUGE_KEY_CASES.values()), ids=list(HUGE_KEY_CASES)
)
async def test_huge_keys_still_converge_to_a_root(
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    config: TreeConfig,
    items: list[tuple[bytes, bytes]],
) -> None:
    # docs/format.md 4: an internal node never ends after its first entry, so every level
    # at least halves. Should that break, the failure is an endless synchronous loop: stop it
    # at an absurd height instead of hanging the test run.
    original = tree_module._Level.__init__

    def guarded(self: object, nodes: Nodes, level: int) -> None:
        if level > 64:
            raise _RunawayLevels(f"level {level}")
        original(self, nodes, level)  # type: ignore[arg-type]

    monkeypatch.setattr(tree_module._Level, "__init__", guarded)
    nodes = Nodes(MemoryStore(), config)
    if how == "build":
        tree = await Tree.build(nodes, items)
    else:
        tree = await (await Tree.empty(nodes)).edit(reversed(items))
    assert tree.root == (await Tree.build(Nodes(MemoryStore(), config), items)).root
    assert await tree.items() == items
    # at most one level per halving of the item count, plus the leaves
    assert await tree.height() <= len(items).bit_length() + 1
    # and the huge keys can be edited away again
    rest = await tree.edit((k, None) for k, _ in items if len(k) > 100)
    assert await rest.items() == [(k, v) for k, v in items if len(k) <= 100]


async def test_streaming_build_equals_list_build_and_stays_bounded() -> None:
    items = numbered(3000)
    flush_bytes = 2048
    streamed_nodes = Nodes(MemoryStore(), TINY, flush_bytes=flush_bytes)
    high_water = 0

    async def stream() -> AsyncIterator[tuple[bytes, bytes]]:
        nonlocal high_water
        for item in items:
            high_water = max(high_water, streamed_nodes.pending_bytes)
            yield item
            await asyncio.sleep(0)

    streamed = await Tree.build(streamed_nodes, stream())
    listed = await Tree.build(tiny_nodes(), items)
    assert streamed.root == listed.root
    assert await listed.height() >= 4
    # the write buffer was flushed along the way, not held until the end
    assert 0 < high_water <= flush_bytes + 2 * TINY.max_size
    assert streamed_nodes.stats.writes == len(await streamed.reachable())
    # everything reached the store: a fresh reader with an empty cache sees the whole tree
    fresh = Tree(Nodes(streamed_nodes.store, TINY), streamed.root)
    assert await fresh.items() == items


_ROOT_IN_SUBPROCESS = """
import asyncio, decimal, sys
decimal.getcontext().prec = 3  # an application's own decimal settings, set before any tree
from store.memory import MemoryStore
from store.nodes import Nodes, TreeConfig
from store.tree import Tree
items = [(b"key%06d" % i, b"v") for i in range(5000)]
nodes = Nodes(MemoryStore(), TreeConfig(target=64, min_size=16, max_size=256))
print(asyncio.run(Tree.build(nodes, items)).root.hex())
"""


def test_roots_do_not_depend_on_the_process_decimal_context() -> None:
    items = [(b"key%06d" % i, b"v") for i in range(5000)]
    expected = asyncio.run(Tree.build(tiny_nodes(), items)).root.hex()
    done = subprocess.run(
        [sys.executable, "-c", _ROOT_IN_SUBPROCESS],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == expected


async def test_build_from_sync_iterator_and_generator() -> None:
    items = numbered(500)
    expected = (await Tree.build(tiny_nodes(), items)).root
    assert (await Tree.build(tiny_nodes(), iter(items))).root == expected
    assert (await Tree.build(tiny_nodes(), (item for item in items))).root == expected


async def test_different_configs_make_different_trees() -> None:
    # the chunking parameters are part of the format (docs/format.md 4)
    items = numbered(2000)
    tiny = await Tree.build(tiny_nodes(), items)
    medium = await Tree.build(Nodes(MemoryStore(), MEDIUM), items)
    assert tiny.root != medium.root
    assert await tiny.height() > await medium.height()


async def test_tree_value_semantics() -> None:
    nodes = tiny_nodes()
    a = await Tree.build(nodes, numbered(300))
    b = await Tree.build(Nodes(MemoryStore(), TINY), numbered(300))
    c = await a.edit([(b"key000007", b"changed")])
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    # a is unchanged by the edit that made c
    assert await a.get(b"key000007") == b"value7"
    assert await c.get(b"key000007") == b"changed"


# -- editing ---------------------------------------------------------------------------------


async def test_edits_that_change_nothing_return_the_same_root() -> None:
    nodes = tiny_nodes()
    tree = await Tree.build(nodes, numbered(300))
    nodes.stats.reset()
    assert (await tree.edit([])).root == tree.root
    assert (await tree.edit([(b"absent", None), (b"key000299x", None)])).root == tree.root
    assert (await tree.edit([(b"key000005", b"value5")])).root == tree.root
    assert nodes.stats.writes == 0


async def test_later_edit_of_the_same_key_wins() -> None:
    nodes = tiny_nodes()
    tree = await Tree.build(nodes, numbered(100))
    edited = await tree.edit(
        [(b"key000003", b"x"), (b"key000003", None), (b"new", b"1"), (b"new", b"2")]
    )
    expected = dict(numbered(100))
    del expected[b"key000003"]
    expected[b"new"] = b"2"
    assert edited.root == (await Tree.build(nodes, sorted(expected.items()))).root


async def test_edit_accepts_any_iterable_in_any_order() -> None:
    nodes = tiny_nodes()
    items = numbered(400)
    shuffled = items[:]
    random.Random(7).shuffle(shuffled)
    empty = await Tree.empty(nodes)
    expected = await Tree.build(nodes, items)
    assert (await empty.edit(iter(shuffled))).root == expected.root
    assert (await empty.edit(x for x in shuffled)).root == expected.root


async def test_deleting_everything_gives_the_empty_tree() -> None:
    nodes = tiny_nodes()
    items = numbered(500)
    tree = await Tree.build(nodes, items)
    assert await tree.height() >= 4
    # one batch
    assert (await tree.edit((k, None) for k, _ in items)).root == EMPTY_ROOT
    # from the right, a few keys at a time: the tree shrinks level by level
    t = tree
    for i in range(len(items), 0, -37):
        t = await t.edit((k, None) for k, _ in items[max(0, i - 37) : i])
        assert t.root == (await Tree.build(nodes, items[: max(0, i - 37)])).root
    assert t.root == EMPTY_ROOT
    assert await t.items() == []


async def test_edit_cost_is_logarithmic() -> None:
    nodes = Nodes(MemoryStore(), MEDIUM)
    items = numbered(40_000, step=2)
    tree = await Tree.build(nodes, items)
    height = await tree.height()
    total = len(await tree.reachable())
    assert height >= 4 and total > 3000
    rng = random.Random(1)
    for k in (1, 10, 100):
        edits = _random_changes(rng, items, k)
        nodes.stats.reset()
        edited = await tree.edit(edits)
        writes = nodes.stats.writes
        assert edited != tree
        # each edit rewrites about one node per level, plus some re-chunking at the edges
        assert 0 < writes <= 4 * k * height + 8, (k, writes)
        assert writes < total // 8, (k, writes, total)
        # and the result is what a fresh build of the same content gives
        expected = dict(items)
        expected.update(edits)
        content = sorted((key, v) for key, v in expected.items() if v is not None)
        assert edited.root == (await Tree.build(Nodes(MemoryStore(), MEDIUM), content)).root


def _random_changes(
    rng: random.Random, items: list[tuple[bytes, bytes]], d: int
) -> list[tuple[bytes, bytes | None]]:
    """``d`` real changes to the tree of ``items`` (keys ``key%06d`` of even numbers): a mix of
    updates, deletes and inserts of absent (odd) keys, each on a distinct key."""
    n = len(items)
    picks = rng.sample(range(n), d)
    out: list[tuple[bytes, bytes | None]] = []
    for j, i in enumerate(picks):
        key, value = items[i]
        kind = j % 3
        if kind == 0:
            out.append((key, value + b"!"))
        elif kind == 1:
            out.append((key, None))
        else:
            out.append((b"key%06d" % (2 * i + 1), b"inserted"))
    return out


# -- diff and new_nodes: node-load bounds ----------------------------------------------------


@pytest.fixture(scope="module")
def big_tree() -> tuple[MemoryStore, list[tuple[bytes, bytes]], bytes, int, int]:
    """A 40k-item tree in MEDIUM: (store, items, root, height, node count)."""

    async def make() -> tuple[MemoryStore, list[tuple[bytes, bytes]], bytes, int, int]:
        store = MemoryStore()
        nodes = Nodes(store, MEDIUM)
        items = numbered(40_000, step=2)
        tree = await Tree.build(nodes, items)
        return store, items, tree.root, await tree.height(), len(await tree.reachable())

    return asyncio.run(make())


@pytest.mark.parametrize("d", [1, 10, 100])
async def test_diff_reads_are_proportional_to_changes(
    big_tree: tuple[MemoryStore, list[tuple[bytes, bytes]], bytes, int, int], d: int
) -> None:
    store, items, root, height, total = big_tree
    assert height >= 4 and total > 3000
    nodes = Nodes(store, MEDIUM)
    a = Tree(nodes, root)
    changes = _random_changes(random.Random(d), items, d)
    b = await a.edit(changes)
    old = dict(items)
    expected = sorted((key, old.get(key), new) for key, new in changes)  # distinct keys
    for x, y, sign in ((a, b, 1), (b, a, -1)):
        nodes.stats.reset()
        got = await all_diff(x, y)
        reads = nodes.stats.reads
        want = expected if sign == 1 else [(k, new, old) for k, old, new in expected]
        assert got == want
        # equal subtrees are skipped: about two root-to-leaf paths per change, where a walk of
        # both trees would read 2 * total nodes
        assert reads <= 4 * d * height + 8, (d, reads)
        assert reads < total // 3, (d, reads, total)


@pytest.mark.parametrize("d", [1, 10, 100])
async def test_new_nodes_reads_are_proportional_to_changes(
    big_tree: tuple[MemoryStore, list[tuple[bytes, bytes]], bytes, int, int], d: int
) -> None:
    store, items, root, height, total = big_tree
    nodes = Nodes(store, MEDIUM)
    a = Tree(nodes, root)
    b = await a.edit(_random_changes(random.Random(1000 + d), items, d))
    # computed without a bound first (full walks) ...
    expected = await b.reachable() - await a.reachable()
    assert expected
    # ... then measured
    nodes.stats.reset()
    got = await new_nodes(a, b)
    reads = nodes.stats.reads
    assert got == expected
    assert reads <= 4 * d * height + 8, (d, reads)
    assert reads < total // 3, (d, reads, total)
    # the nodes b needs beyond a are themselves about one path per change
    assert len(got) <= 2 * d * height + 4


async def test_diff_of_equal_trees_reads_nothing() -> None:
    nodes = tiny_nodes()
    a = await Tree.build(nodes, numbered(500))
    b = await Tree.build(Nodes(MemoryStore(), TINY), numbered(500))
    nodes.stats.reset()
    b.nodes.stats.reset()
    assert await all_diff(a, b) == []
    assert await new_nodes(a, b) == set()
    assert nodes.stats.reads == b.nodes.stats.reads == 0


async def test_diff_against_empty_and_disjoint_trees() -> None:
    nodes = tiny_nodes()
    empty = await Tree.empty(nodes)
    left = await Tree.build(nodes, [(b"a%04d" % i, b"x") for i in range(300)])
    right = await Tree.build(nodes, [(b"b%04d" % i, b"y") for i in range(300)])
    assert await all_diff(empty, left) == [(k, None, v) for k, v in await left.items()]
    assert await all_diff(left, empty) == [(k, v, None) for k, v in await left.items()]
    assert await all_diff(left, right) == [(k, v, None) for k, v in await left.items()] + [
        (k, None, v) for k, v in await right.items()
    ]
    assert await all_diff(right, left) == [(k, None, v) for k, v in await left.items()] + [
        (k, v, None) for k, v in await right.items()
    ]
    assert await new_nodes(empty, left) == await left.reachable()
    assert await new_nodes(None, left) == await left.reachable()
    # the empty tree's only node, the empty leaf, never occurs in a non-empty tree
    assert await new_nodes(left, empty) == {EMPTY_ROOT}


async def test_diff_batches_are_bounded_and_in_key_order() -> None:
    nodes = tiny_nodes()
    empty = await Tree.empty(nodes)
    full = await Tree.build(nodes, numbered(5000))
    batches = [batch async for batch in diff(empty, full)]
    assert all(batches)
    assert len(batches) > 1  # a big diff is streamed, not returned as one list
    keys = [k for batch in batches for k, _, _ in batch]
    assert keys == [k for k, _ in numbered(5000)]


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "items",
    [
        [(b"b", b"1"), (b"a", b"2")],
        [(b"a", b"1"), (b"a", b"2")],
        [(b"a", b"1"), (b"c", b"2"), (b"b", b"3")],
        [(b"key%06d" % i, b"v") for i in range(200)] + [(b"key000100", b"v")],
    ],
    ids=["unsorted", "duplicate", "unsorted later", "unsorted after many"],
)
async def test_build_rejects_unsorted_or_duplicate_keys(items: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(TreeError):
        await Tree.build(tiny_nodes(), items)


async def test_build_rejects_unsorted_stream() -> None:
    async def stream() -> AsyncIterator[tuple[bytes, bytes]]:
        yield b"b", b"1"
        yield b"a", b"2"

    with pytest.raises(TreeError):
        await Tree.build(tiny_nodes(), stream())


@pytest.mark.parametrize(
    "pair",
    [
        ("a", b"1"),
        (bytearray(b"a"), b"1"),
        (memoryview(b"a"), b"1"),
        (1, b"1"),
        (None, b"1"),
        (b"a", "1"),
        (b"a", 1),
        (b"a", bytearray(b"1")),
        (b"a", None),
    ],
    ids=repr,
)
async def test_build_rejects_non_bytes(pair: tuple[object, object]) -> None:
    with pytest.raises(TreeError):
        await Tree.build(tiny_nodes(), [(b"0", b"0"), pair])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "pair",
    [("a", b"1"), (bytearray(b"a"), b"1"), (1, None), (None, None), (b"a", "1"), (b"a", 1)],
    ids=repr,
)
async def test_edit_rejects_non_bytes(pair: tuple[object, object]) -> None:
    nodes = tiny_nodes()
    tree = await Tree.build(nodes, numbered(50))
    with pytest.raises(TreeError):
        await tree.edit([(b"key000001", b"ok"), pair])  # type: ignore[list-item]
    assert await tree.items() == numbered(50)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_size": 0},
        {"min_size": -1},
        {"target": 100, "min_size": 101, "max_size": 200},
        {"target": 300, "min_size": 10, "max_size": 299},
        {"target": 0, "min_size": 0, "max_size": 0},
    ],
    ids=repr,
)
def test_tree_config_rejects_bad_sizes(kwargs: dict[str, int]) -> None:
    with pytest.raises(TreeError):
        TreeConfig(**kwargs)


def test_tree_config_accepts_equal_sizes() -> None:
    assert TreeConfig(target=64, min_size=64, max_size=64).target == 64


def test_tree_error_is_a_value_error_and_a_replica_error() -> None:
    assert issubclass(TreeError, ValueError)
    assert issubclass(TreeError, ReplicaError)


# -- corruption ------------------------------------------------------------------------------


async def _corruptible() -> tuple[MemoryStore, Tree, bytes, list[bytes]]:
    """A deep tree in a memory store, a key, and the addresses on its root-to-leaf path."""
    store = MemoryStore()
    tree = await Tree.build(Nodes(store, TINY), numbered(300))
    key = b"key000123"
    path = [tree.root]
    node = await tree.nodes.load(tree.root)
    while not node.is_leaf:
        i = next(i for i, k in enumerate(node.keys) if k >= key)
        path.append(node.children[i])
        node = await tree.nodes.load(node.children[i])
    assert key in node.keys and len(path) >= 3
    return store, tree, key, path


BAD_NODES = {
    "not a node": cbor2.dumps("hello"),
    "not cbor": b"\xff\xfe",
    "non-canonical cbor": bytes.fromhex("1817"),
    "leaf with unsorted keys": encode([0, [b"b", b"a"], [b"1", b"2"]]),
    "leaf with str keys": encode([0, ["a"], [b"1"]]),
    "leaf with int value": encode([0, [b"a"], [1]]),
    "leaf keys/values lengths differ": encode([0, [b"a", b"b"], [b"1"]]),
    "leaf with extra field": encode([0, [b"a"], [b"1"], []]),
    "negative level": encode([-1, [b"a"], [b"1"]]),
    "internal without entries": encode([1, [], [], []]),
    "internal child not an address": encode([1, [b"a"], [b"x"], [1]]),
    "internal zero count": encode([1, [b"a"], [address_of(b"")], [0]]),
    "empty array": encode([]),
}


@pytest.mark.parametrize("position", ["root", "middle", "leaf"])
@pytest.mark.parametrize("bad", list(BAD_NODES.values()), ids=list(BAD_NODES))
async def test_corrupt_node_raises_corrupt_node(position: str, bad: bytes) -> None:
    store, tree, key, path = await _corruptible()
    address = {"root": path[0], "middle": path[len(path) // 2], "leaf": path[-1]}[position]
    store._data.nodes[address] = bad
    fresh = Tree(Nodes(store, TINY), tree.root)
    with pytest.raises(CorruptNode) as info:
        await fresh.get(key)
    assert info.value.address == address
    assert isinstance(info.value, StoreError)
    with pytest.raises(CorruptNode):
        await Tree(Nodes(store, TINY), tree.root).items()


async def test_corrupt_node_is_found_by_scan_and_diff() -> None:
    store, tree, _key, path = await _corruptible()
    store._data.nodes[path[-1]] = cbor2.dumps("hello")
    # differs from tree only in the corrupt leaf, so diff has to load it (equal subtrees are
    # skipped unread); built in another store so that its put_many cannot repair ours
    changed = [(k, b"other" if k == _key else v) for k, v in numbered(300)]
    other = await Tree.build(Nodes(MemoryStore(), TINY), changed)
    with pytest.raises(CorruptNode):
        await Tree(Nodes(store, TINY), tree.root).items(reverse=True)
    with pytest.raises(CorruptNode):
        await all_diff(Tree(Nodes(store, TINY), tree.root), other)
    with pytest.raises(CorruptNode):
        await Tree(Nodes(store, TINY), tree.root).reachable()


@pytest.mark.parametrize("position", ["middle", "leaf"])
async def test_absent_child_raises_node_not_found(position: str) -> None:
    store, tree, key, path = await _corruptible()
    address = path[len(path) // 2] if position == "middle" else path[-1]
    del store._data.nodes[address]
    fresh = Tree(Nodes(store, TINY), tree.root)
    with pytest.raises(NodeNotFound) as info:
        await fresh.get(key)
    assert info.value.address == address
    for op in (
        lambda t: t.items(),
        lambda t: t.items(reverse=True),
        lambda t: t.reachable(),
        lambda t: new_nodes(None, t),
    ):
        with pytest.raises(NodeNotFound):
            await op(Tree(Nodes(store, TINY), tree.root))
    # the rest of the tree still reads: keys whose path avoids the missing node
    lost = await _keys_under(tree.nodes, address)
    assert key in lost
    intact = Tree(Nodes(store, TINY), tree.root)
    for k, v in numbered(300):
        if k not in lost:
            assert await intact.get(k) == v


async def _keys_under(nodes: Nodes, address: bytes) -> set[bytes]:
    node = await nodes.load(address)
    if node.is_leaf:
        return set(node.keys)
    out: set[bytes] = set()
    for child in node.children:
        out |= await _keys_under(nodes, child)
    return out


async def test_absent_root_raises_node_not_found() -> None:
    missing = address_of(b"never stored")
    with pytest.raises(NodeNotFound):
        await Tree(tiny_nodes(), missing).get(b"a")
