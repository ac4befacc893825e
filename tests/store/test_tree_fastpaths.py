"""The synchronous and batched fast paths of store/tree.py against the general paths they
shortcut: ``Tree.items_cached`` against ``Tree.items`` (and a dict model), ``edit_trees``
against one ``Tree.edit_sorted(..., flush=False)`` per tree on a twin store.

Tiny nodes (target 64 bytes) make a few hundred keys span several levels. Keys are drawn from
a four-byte alphabet so that they share prefixes and prefixes of keys make useful bounds. Both
fast paths only shortcut plain :class:`Nodes` (a subclass reads its own way) and, with the C
extension, the C edit: every test here must pass with and without ``REPLICA_PURE_PYTHON=1``.
"""

from __future__ import annotations

import asyncio
import random
from bisect import bisect_left
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.errors import NodeNotFound, TreeError
from store.memory import MemoryStore
from store.nodes import Node, Nodes, TreeConfig
from store.speedups import native
from store.tree import Tree, edit_trees

T = TypeVar("T")
Model = dict[bytes, bytes]

TINY = TreeConfig(target=64, min_size=16, max_size=256)
ALPHABET = b"\x00ab\xff"

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def random_key(rng: random.Random) -> bytes:
    return bytes(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 6)))


def random_value(rng: random.Random) -> bytes:
    if rng.random() < 0.04:
        return rng.randbytes(rng.randrange(100, 300))  # bigger than a whole node
    return rng.randbytes(rng.randrange(0, 9))


def random_model(rng: random.Random, n: int) -> Model:
    return {random_key(rng): random_value(rng) for _ in range(n)}


def model_range(model: Model, lo: bytes, hi: bytes | None) -> list[tuple[bytes, bytes]]:
    return sorted((k, v) for k, v in model.items() if lo <= k and (hi is None or k < hi))


async def leaves_of(tree: Tree) -> list[Node]:
    """The leaves of ``tree`` in key order: its nodes that are cached or pending, seen without
    touching that cache's order or counters, the others read through a Nodes of their own."""
    own = Nodes(tree.nodes.store, TINY)
    out: list[Node] = []

    async def walk(address: bytes) -> None:
        node = tree.nodes.peek(address) or await own.load(address)
        if node.is_leaf:
            out.append(node)
        else:
            for child in node.children:
                await walk(child)

    await walk(tree.root)
    return out


def expect_answer(leaves: list[Node], lo: bytes, hi: bytes | None) -> bool:
    """Whether items_cached must answer (not None) for ``[lo, hi)`` when the whole path is
    cached: the range lies in the leaf holding ``lo`` (the first leaf whose last key is >=
    lo), or there is no such leaf, or it is the last leaf."""
    for index, leaf in enumerate(leaves):
        if leaf.keys and leaf.keys[-1] >= lo:
            return index == len(leaves) - 1 or (hi is not None and hi <= leaf.keys[-1])
    return True  # lo is beyond every key (or the tree is empty)


def pick_bound(rng: random.Random, keys: list[bytes], kind: str) -> bytes:
    if kind == "key" and keys:
        return rng.choice(keys)
    if kind == "prefix" and keys:
        key = rng.choice(keys)
        return key[: rng.randrange(0, len(key) + 1)]
    if kind == "after" and keys:
        return rng.choice(keys) + b"\x00"
    if kind == "below":
        return b""
    if kind == "beyond":
        return (keys[-1] if keys else b"") + b"\x00" if rng.random() < 0.5 else b"\xff" * 7
    return random_key(rng)


BOUND_KINDS = ["key", "prefix", "after", "below", "beyond", "random"]


def path_cached(tree: Tree, lo: bytes) -> bool:
    """Whether the nodes items_cached needs for ``lo`` are all cached or pending (the walk
    from the root to the first leaf whose last key is >= lo, or to the level where every key
    is below lo), seen without touching the cache's order or the counters."""
    peek = tree.nodes.peek
    node = peek(tree.root)
    while node is not None and node.level:
        i = bisect_left(node.keys, lo)
        if i == len(node.keys):
            return True
        node = peek(node.children[i])
    return node is not None


async def check_items_cached(
    tree: Tree, model: Model, lo: bytes, hi: bytes | None
) -> list[tuple[bytes, bytes]] | None:
    """items_cached(lo, hi) against items() and the model, its reads against items' reads;
    when the path of ``lo`` is cached, also whether it answers when it must."""
    nodes = tree.nodes
    path = path_cached(tree, lo)
    reads, fetches = nodes.stats.reads, nodes.stats.fetches
    got = tree.items_cached(lo, hi)
    cached_reads = nodes.stats.reads - reads
    assert nodes.stats.fetches == fetches  # never I/O
    if path:
        leaves = await leaves_of(tree)
        must = expect_answer(leaves, lo, hi)
        assert (got is not None) == must, (lo, hi, got)
    else:
        assert got is None, (lo, hi)
    if got is None:
        assert cached_reads == 0, (lo, hi)  # nothing read, nothing counted
        return None
    reads, fetches = nodes.stats.reads, nodes.stats.fetches
    want = await tree.items(lo, hi)
    scan_reads = nodes.stats.reads - reads
    assert got == want, (lo, hi)
    assert got == model_range(model, lo, hi), (lo, hi)
    if nodes.stats.fetches == fetches:
        # (a scan that fetches also counts the sibling leaves it prefetches in one batch)
        assert cached_reads == scan_reads, (lo, hi)
    return got


# -- Tree.items_cached -----------------------------------------------------------------------


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.sampled_from([0, 1, 5, 40, 150, 400]),
    small_cache=st.booleans(),
    queries=st.lists(
        st.tuples(
            st.sampled_from(BOUND_KINDS),
            st.sampled_from([*BOUND_KINDS, "none", "none", "lo", "lo+ff", *["ahead"] * 4]),
            st.integers(0, 2**32 - 1),
        ),
        min_size=1,
        max_size=25,
    ),
)
def test_items_cached_equals_items(
    seed: int, n: int, small_cache: bool, queries: list[tuple[str, str, int]]
) -> None:
    async def go() -> None:
        rng = random.Random(seed)
        model = random_model(rng, n)
        store = MemoryStore()
        # a small cache drops nodes as the build goes: items_cached must then say None, or
        # still be right
        nodes = Nodes(store, TINY, cache_bytes=6000 if small_cache else 64 << 20)
        tree = await Tree.build(nodes, sorted(model.items()))
        keys = sorted(model)
        if n >= 150:
            assert await tree.height() >= 3
        for lo_kind, hi_kind, qseed in queries:
            qrng = random.Random(qseed)
            lo = pick_bound(qrng, keys, lo_kind)
            hi: bytes | None
            if hi_kind == "none":
                hi = None
            elif hi_kind == "lo":
                hi = lo
            elif hi_kind == "lo+ff":
                hi = lo + b"\xff"
            elif hi_kind == "ahead":
                # a key a few places after lo: the range ends in lo's leaf or soon after
                at = bisect_left(keys, lo) + qrng.randrange(0, 5)
                hi = keys[at] if at < len(keys) else None
            else:
                hi = pick_bound(qrng, keys, hi_kind)
            assert small_cache or path_cached(tree, lo)
            await check_items_cached(tree, model, lo, hi)
            # once its path is cached (get reads the same path), it must answer when the
            # range stays in one leaf, whatever the cache held before
            await tree.get(lo)
            await check_items_cached(tree, model, lo, hi)

    run(go())


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([60, 200, 400]))
def test_items_cached_answers_the_rightmost_range(seed: int, n: int) -> None:
    async def go() -> None:
        rng = random.Random(seed)
        model = random_model(rng, n)
        store = MemoryStore()
        tree = await Tree.build(Nodes(store, TINY), sorted(model.items()))
        leaves = await leaves_of(tree)
        assert len(leaves) >= 2 and await tree.height() >= 2
        last_of_previous = leaves[-2].keys[-1]
        last_leaf = leaves[-1].keys
        for lo in [
            last_of_previous + b"\x00",
            last_leaf[0],
            rng.choice(last_leaf),
            last_leaf[-1],
            last_leaf[-1] + b"\x00",
            b"\xff" * 8,
        ]:
            got = await check_items_cached(tree, model, lo, None)
            assert got is not None, lo
            assert got == model_range(model, lo, None)

    run(go())


async def test_items_cached_answers_every_one_leaf_range() -> None:
    # every range within one leaf (hi at most its last key), every leaf, everything cached
    rng = random.Random(7)
    model = random_model(rng, 400)
    store = MemoryStore()
    tree = await Tree.build(Nodes(store, TINY), sorted(model.items()))
    leaves = await leaves_of(tree)
    assert len(leaves) > 10 and await tree.height() >= 3
    for leaf in leaves:
        first, last = leaf.keys[0], leaf.keys[-1]
        ranges = [(first, last), (last, last), (last, first)]
        if len(leaf.keys) > 1:
            ranges.append((first, first + b"\x00"))
        for lo, hi in ranges:
            got = await check_items_cached(tree, model, lo, hi)
            assert got is not None, (lo, hi)
        # the range reaching past the leaf's last key may go on in the next leaf
        if leaf is not leaves[-1]:
            assert tree.items_cached(first, last + b"\x00") is None
            assert tree.items_cached(first, None) is None


async def test_items_cached_on_a_cold_cache_is_none_and_counts_nothing() -> None:
    rng = random.Random(3)
    model = random_model(rng, 300)
    store = MemoryStore()
    built = await Tree.build(Nodes(store, TINY), sorted(model.items()))
    assert await built.height() >= 3
    leaves = await leaves_of(built)
    keys = sorted(model)
    one_leaf = leaves[len(leaves) // 2].keys
    for lo, hi in [
        (b"", None),
        (keys[0], keys[1]),
        (keys[100], keys[100] + b"\x00"),
        (one_leaf[0], one_leaf[-1]),
        (keys[-1], None),
        (b"\xff" * 8, None),
    ]:
        cold = Nodes(store, TINY)
        tree = Tree(cold, built.root)
        assert tree.items_cached(lo, hi) is None
        assert cold.stats.reads == 0 and cold.stats.fetches == 0
        # only the root cached: still None (the path goes on below it), nothing counted;
        # but the root alone shows that nothing is at or beyond a lo above every key
        await cold.load(built.root)
        reads = cold.stats.reads
        if lo > keys[-1]:
            assert tree.items_cached(lo, hi) == []
            assert cold.stats.reads == reads + 1
            continue
        assert tree.items_cached(lo, hi) is None
        assert cold.stats.reads == reads
        # the path read through items: now it answers (a range within one leaf), as items
        assert await tree.items(lo, hi) == model_range(model, lo, hi)
        assert path_cached(tree, lo)
        got = await check_items_cached(tree, model, lo, hi)
        assert (got is not None) == expect_answer(leaves, lo, hi)
        if hi is not None and hi <= one_leaf[-1] and lo >= one_leaf[0]:
            assert got == model_range(model, lo, hi)


async def test_items_cached_on_a_single_leaf_and_the_empty_tree() -> None:
    store = MemoryStore()
    empty = await Tree.empty(Nodes(store, TINY))
    assert empty.items_cached(b"", None) == []
    assert empty.items_cached(b"a", b"b") == []
    assert empty.nodes.stats.reads == 2
    model = {b"a": b"1", b"b": b"2", b"c": b"3"}
    leaf = await Tree.build(Nodes(store, TINY), sorted(model.items()))
    assert await leaf.height() == 1
    for lo, hi in [(b"", None), (b"b", None), (b"a", b"c"), (b"d", None), (b"c", b"a")]:
        got = await check_items_cached(leaf, model, lo, hi)
        assert got is not None


class SubNodes(Nodes):
    """A Nodes subclass that changes nothing: items_cached must still leave it to items."""


async def test_items_cached_leaves_nodes_subclasses_to_items() -> None:
    rng = random.Random(5)
    model = random_model(rng, 200)
    store = MemoryStore()
    nodes = SubNodes(store, TINY)
    tree = await Tree.build(nodes, sorted(model.items()))
    keys = sorted(model)
    assert await tree.items() == model_range(model, b"", None)  # everything cached
    reads = nodes.stats.reads
    for lo, hi in [(b"", None), (keys[0], keys[1]), (keys[-1], None), (b"\xff", None)]:
        assert tree.items_cached(lo, hi) is None
    assert nodes.stats.reads == reads


async def test_items_cached_reads_pending_nodes() -> None:
    # an edit with flush=False leaves its new nodes in the write buffer: items_cached reads
    # them there (a transaction reads the trees it is writing)
    rng = random.Random(11)
    model = random_model(rng, 300)
    store = MemoryStore()
    nodes = Nodes(store, TINY)
    tree = await Tree.build(nodes, sorted(model.items()))
    edits = {random_key(rng): rng.choice([None, random_value(rng)]) for _ in range(40)}
    keys = sorted(edits)
    edited = await tree.edit_sorted(keys, [edits[k] for k in keys], flush=False)
    assert nodes.pending_bytes > 0
    for key, value in edits.items():
        if value is None:
            model.pop(key, None)
        else:
            model[key] = value
    answered = 0
    for key in keys:
        for hi in [key + b"\x00", key + b"\xff", None]:
            got = await check_items_cached(edited, model, key, hi)
            answered += got is not None
    assert answered > len(keys)  # most one-key ranges are inside a leaf
    # (nothing above flushed the buffer: the new root is still only pending)
    with pytest.raises(NodeNotFound):
        await store.get(edited.root)


# -- edit_trees ------------------------------------------------------------------------------

WARMTH = ["warm", "cold", "partial", "small"]


async def twin_trees(
    models: list[Model], warmth: str, seed: int
) -> tuple[list[tuple[MemoryStore, Nodes]], list[bytes]]:
    """Two stores holding the same trees, each with a Nodes warmed the same way."""
    twins: list[tuple[MemoryStore, Nodes]] = []
    roots: list[bytes] = []
    for _ in range(2):
        store = MemoryStore()
        built = Nodes(store, TINY)
        roots = [(await Tree.build(built, sorted(m.items()))).root for m in models]
        if warmth == "warm":
            nodes = built
        elif warmth == "small":
            nodes = Nodes(store, TINY, cache_bytes=2500)
        else:
            nodes = Nodes(store, TINY)
        if warmth in ("partial", "small"):
            rng = random.Random(seed)
            for root, model in zip(roots, models, strict=True):
                keys = sorted(model) or [b"a"]
                for _ in range(rng.randrange(0, 6)):
                    await Tree(nodes, root).get(rng.choice(keys))
        nodes.stats.reset()
        twins.append((store, nodes))
    return twins, roots


def random_edits(rng: random.Random, model: Model, mode: str) -> tuple[list[bytes], list[Any]]:
    present = sorted(model)
    edits: dict[bytes, bytes | None] = {}
    size = rng.choice([1, 2, 5, 20, 80])
    for _ in range(size):
        if mode == "noop":
            # deletes of absent keys and writes of the values already there
            if present and rng.random() < 0.6:
                key = rng.choice(present)
                edits[key] = model[key]
            else:
                key = random_key(rng) + b"\x01"  # (the alphabet has no 0x01: absent)
                edits[key] = None
            continue
        key = rng.choice(present) if present and rng.random() < 0.5 else random_key(rng)
        roll = rng.random()
        if roll < 0.35:
            edits[key] = None  # delete, present or absent
        elif roll < 0.45 and key in model:
            edits[key] = model[key]  # same value
        else:
            edits[key] = random_value(rng)
    keys = sorted(edits)
    return keys, [edits[k] for k in keys]


def applied(model: Model, keys: list[bytes], values: list[bytes | None]) -> Model:
    out = dict(model)
    for key, value in zip(keys, values, strict=True):
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.sampled_from([0, 1, 30, 150, 400]), min_size=1, max_size=3),
    modes=st.lists(st.sampled_from(["mixed", "mixed", "noop"]), min_size=3, max_size=3),
    warmth=st.sampled_from(WARMTH),
    same_tree_twice=st.booleans(),
)
def test_edit_trees_equals_edit_sorted_per_tree(
    seed: int, sizes: list[int], modes: list[str], warmth: str, same_tree_twice: bool
) -> None:
    async def go() -> None:
        rng = random.Random(seed)
        models = [random_model(rng, n) for n in sizes]
        twins, roots = await twin_trees(models, warmth, seed)
        (store_a, nodes_a), (store_b, nodes_b) = twins
        batch: dict[str, tuple[bytes, list[bytes], list[Any]]] = {}
        for i, (root, model) in enumerate(zip(roots, models, strict=True)):
            batch[f"t{i}"] = (root, *random_edits(rng, model, modes[i]))
        if same_tree_twice:
            # the same tree edited again under another name (after the first edit's new
            # nodes are in the buffer)
            batch["again"] = (roots[0], *random_edits(rng, models[0], "mixed"))
            models = [*models, models[0]]
        pending_a, pending_b = nodes_a.pending_bytes, nodes_b.pending_bytes

        got = await edit_trees(nodes_a, batch)

        want: dict[str, bytes] = {}
        for name, (root, keys, values) in batch.items():
            tree = await Tree(nodes_b, root).edit_sorted(keys, values, flush=False)
            want[name] = tree.root
        assert got == want
        assert list(got) == list(batch)
        # the same reads and fetches, the same new nodes buffered
        assert nodes_a.stats.reads == nodes_b.stats.reads
        assert nodes_a.stats.fetches == nodes_b.stats.fetches
        assert nodes_a.pending_bytes - pending_a == nodes_b.pending_bytes - pending_b
        await nodes_a.flush()
        await nodes_b.flush()
        assert nodes_a.stats.writes == nodes_b.stats.writes
        assert await store_a.list_addresses() == await store_b.list_addresses()
        # and both are right: the new trees hold the edited models
        for (name, (_, keys, values)), model in zip(batch.items(), models, strict=True):
            after = applied(model, keys, values)
            check = Tree(Nodes(store_a, TINY), got[name])
            assert await check.items() == sorted(after.items()), name
            if after == model:
                assert got[name] == batch[name][0], name  # no change: the same root

    run(go())


async def test_edit_trees_on_a_cold_cache_gives_the_warm_roots() -> None:
    rng = random.Random(21)
    models = [random_model(rng, n) for n in (400, 150, 0)]
    store = MemoryStore()
    warm = Nodes(store, TINY)
    roots = [(await Tree.build(warm, sorted(m.items()))).root for m in models]
    batch = {
        f"t{i}": (root, *random_edits(rng, m, "mixed"))
        for i, (root, m) in enumerate(zip(roots, models, strict=True))
    }
    want = await edit_trees(warm, batch)
    for _ in range(2):
        cold = Nodes(store, TINY)
        assert await edit_trees(cold, batch) == want
        assert cold.stats.fetches > 0
    # a cache too small for one tree's path
    assert await edit_trees(Nodes(store, TINY, cache_bytes=500), batch) == want


@pytest.mark.skipif(native is None, reason="the C edit only (REPLICA_PURE_PYTHON=1 or not built)")
async def test_edit_trees_takes_the_c_edit_on_a_warm_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # the comparisons above would hold trivially if edit_trees always went through _edit
    rng = random.Random(13)
    models = [random_model(rng, n) for n in (400, 150, 1)]
    twins, roots = await twin_trees(models, "warm", 13)
    (_, nodes), (_, ref_nodes) = twins
    batch = {
        f"t{i}": (root, *random_edits(rng, m, "mixed"))
        for i, (root, m) in enumerate(zip(roots, models, strict=True))
    }
    want = {
        name: (await Tree(ref_nodes, root).edit_sorted(keys, values, flush=False)).root
        for name, (root, keys, values) in batch.items()
    }
    slow: list[bytes] = []
    edit = Tree._edit

    async def counted(self: Tree, keys: list[bytes], values: list[Any], flush: bool) -> Tree:
        slow.append(self.root)
        return await edit(self, keys, values, flush)

    monkeypatch.setattr(Tree, "_edit", counted)
    assert await edit_trees(nodes, batch) == want
    assert slow == []
    assert nodes.stats.reads == ref_nodes.stats.reads
    assert nodes.pending_bytes == ref_nodes.pending_bytes


async def test_edit_trees_through_a_nodes_subclass() -> None:
    rng = random.Random(8)
    model = random_model(rng, 300)
    store = MemoryStore()
    nodes = SubNodes(store, TINY)
    root = (await Tree.build(nodes, sorted(model.items()))).root
    keys, values = random_edits(rng, model, "mixed")
    got = await edit_trees(nodes, {"t": (root, keys, values)})
    twin = Nodes(MemoryStore(), TINY)
    twin_root = (await Tree.build(twin, sorted(model.items()))).root
    assert twin_root == root
    assert got == {"t": (await Tree(twin, root).edit_sorted(keys, values, flush=False)).root}


async def test_edit_trees_with_nothing_to_change() -> None:
    rng = random.Random(9)
    model = random_model(rng, 300)
    store = MemoryStore()
    nodes = Nodes(store, TINY)
    root = (await Tree.build(nodes, sorted(model.items()))).root
    present = sorted(model)[::37]
    batch: dict[str, tuple[bytes, list[bytes], list[bytes | None]]] = {
        "same values": (root, present, [model[k] for k in present]),
        "absent deletes": (root, [b"\x01", b"a\x01", b"\xff\xff\xff\xff\xff\xff"], [None] * 3),
        "no keys": (root, [], []),
    }
    reads = nodes.stats.reads
    assert await edit_trees(nodes, batch) == dict.fromkeys(batch, root)
    assert nodes.pending_bytes == 0
    twin = Nodes(MemoryStore(), TINY)
    await Tree.build(twin, sorted(model.items()))
    twin.stats.reset()
    for _, keys, values in batch.values():
        assert (await Tree(twin, root).edit_sorted(keys, values, flush=False)).root == root
    assert nodes.stats.reads - reads == twin.stats.reads


BAD_EDITS: dict[str, tuple[list[Any], list[Any]]] = {
    "unsorted keys": ([b"b", b"a"], [b"1", b"2"]),
    "duplicate keys": ([b"a", b"a"], [b"1", None]),
    "str key": (["a"], [b"1"]),
    "bytearray key": ([b"a", bytearray(b"b")], [b"1", b"2"]),
    "int value": ([b"a"], [1]),
    "str value": ([b"a", b"b"], [b"1", "2"]),
    "more keys than values": ([b"a", b"b"], [b"1"]),
    "more values than keys": ([b"a"], [b"1", b"2"]),
}


@pytest.mark.parametrize(("keys", "values"), BAD_EDITS.values(), ids=BAD_EDITS.keys())
async def test_edit_trees_rejects_bad_edits_as_edit_sorted(
    keys: list[Any], values: list[Any]
) -> None:
    rng = random.Random(4)
    model = random_model(rng, 300)
    twins, (root,) = await twin_trees([model], "warm", 4)
    (_, nodes), (_, ref_nodes) = twins
    with pytest.raises(TreeError) as want:
        await Tree(ref_nodes, root).edit_sorted(keys, values, flush=False)
    assert ref_nodes.pending_bytes == 0

    reads = nodes.stats.reads
    with pytest.raises(TreeError) as got:
        await edit_trees(nodes, {"bad": (root, keys, values)})
    assert str(got.value) == str(want.value)
    assert nodes.pending_bytes == 0
    assert nodes.stats.reads == reads

    # after a good tree's edit: that one's nodes stay buffered, the bad one adds none
    good_keys, good_values = random_edits(rng, model, "mixed")
    with pytest.raises(TreeError):
        await edit_trees(
            nodes, {"good": (root, good_keys, good_values), "bad": (root, keys, values)}
        )
    await edit_trees(ref_nodes, {"good": (root, good_keys, good_values)})
    assert nodes.pending_bytes == ref_nodes.pending_bytes
    assert nodes.stats.reads == ref_nodes.stats.reads
