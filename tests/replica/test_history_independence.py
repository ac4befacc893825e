"""The same datoms give the same index trees, however they were reached (DESIGN.md 4 and 5).

A current index holds ``key -> stamp``, so identical roots need identical ``(e, a, v, stamp)``
sets. Two levels:

* **Index edits**: the edits ``replica.db.index_edits`` makes for one transaction's datoms (one
  stamp), applied to an empty tree in any batching and order, with extra datoms asserted and
  retracted on the way, give the roots that ``Tree.build`` gives from the sorted final keys.
* **Databases**: two databases run the same number of transactions with the same tx ids and
  stamps (same replica id, a frozen wall clock); each transaction asserts the same final datoms
  in both, but in the second one in another order and mixed with extra datoms that a later
  transaction undoes (added then retracted, overwritten through cardinality one, an entity
  made and retractEntity'd with the refs to it, final datoms asserted early, retracted and
  asserted again). The current-index roots (eavt, aevt, avet, vaet) must be equal; the
  history roots differ exactly when there were extras.

Extra *transactions* can never leave equal roots: each one's ``db/txInstant`` is a current datom.
There is no public way to choose a connection's tx ids and stamps, so the second test sets
``Connection.replica_id`` and freezes ``time`` as replica/connection.py sees it.
"""

from __future__ import annotations

import asyncio
import random
import types
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replica
from replica import Attribute, Datom, Keyword, Schema, Stamp, Tree, TreeConfig
from replica.datom import INDEXES, TREES
from replica.db import index_edits
from store.memory import MemoryStore
from store.nodes import Nodes

TINY = TreeConfig(target=128, min_size=32, max_size=512)
SCHEMA = Schema(
    {
        "p/name": Attribute("p/name", "db.type/string", unique="db.unique/identity"),
        "p/age": Attribute("p/age", "db.type/long"),
        "p/tag": Attribute("p/tag", "db.type/keyword", many=True),
        "p/friend": Attribute("p/friend", "db.type/ref", many=True),
        "p/score": Attribute("p/score", "db.type/double"),
    }
)
SCHEMA_TX = [
    {"db/ident": "p/name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "p/age", "db/valueType": "db.type/long"},
    {
        "db/ident": "p/tag",
        "db/valueType": "db.type/keyword",
        "db/cardinality": "db.cardinality/many",
    },
    {
        "db/ident": "p/friend",
        "db/valueType": "db.type/ref",
        "db/cardinality": "db.cardinality/many",
    },
    {"db/ident": "p/score", "db/valueType": "db.type/double"},
]
TAGS = [Keyword(t) for t in ("a", "b", "c", "ns/d")]
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- index edits -----------------------------------------------------------------------------


def _typed(e: int, a: str, n: int) -> tuple[int, str, Any]:
    if a == "p/name":
        return (e, a, f"{e}-{n}")
    if a == "p/score":
        return (e, a, n / 8)
    return (e, a, n)


def facts(eids: list[int], min_size: int, max_size: int) -> st.SearchStrategy[list[Any]]:
    """Distinct (e, a, v) facts on ``eids`` (card-one attributes at most once per entity)."""
    card_one = st.builds(
        _typed,
        st.sampled_from(eids),
        st.sampled_from(["p/name", "p/age", "p/score"]),
        st.integers(-(1 << 40), 1 << 40),
    )
    many = st.one_of(
        st.tuples(st.sampled_from(eids), st.just("p/tag"), st.sampled_from(TAGS)),
        st.tuples(st.sampled_from(eids), st.just("p/friend"), st.sampled_from(eids)),
    )
    return st.lists(
        st.one_of(card_one, many),
        min_size=min_size,
        max_size=max_size,
        unique_by=lambda f: f if f[1] in ("p/tag", "p/friend") else f[:2],
    )


async def roots_by_build(nodes: Nodes, datoms: list[Datom], stamp: Stamp) -> dict[str, bytes]:
    edits = index_edits(datoms, SCHEMA, stamp)
    out = {}
    for name in INDEXES:
        items = sorted((k, v) for k, v in edits[name] if v is not None)
        out[name] = (await Tree.build(nodes, items)).root
    return out


@SETTINGS
@given(
    final=facts(list(range(1, 40)), 20, 120),
    extra=facts([5, 7, 1 << 70], 0, 30),
    seed=st.integers(0, 1 << 32),
    batches=st.integers(1, 8),
)
def test_index_trees_depend_only_on_the_datoms(
    final: list[tuple[int, str, Any]], extra: list[tuple[int, str, Any]], seed: int, batches: int
) -> None:
    rng = random.Random(seed)
    stamp = Stamp(1_700_000_000_000, 3, 42)
    final_set = {(e, a, v) for e, a, v in final}
    extra = [f for f in extra if f not in final_set]
    wanted = [Datom(e, a, v, 42) for e, a, v in final]

    async def main() -> None:
        nodes = Nodes(MemoryStore(), TINY)
        want = await roots_by_build(nodes, wanted, stamp)
        # one datom at a time, in a random order
        empty = await Tree.empty(nodes)
        order = wanted[:]
        rng.shuffle(order)
        trees = {name: empty for name in INDEXES}
        for d in order:
            edits = index_edits([d], SCHEMA, stamp)
            trees = {name: await t.edit(edits[name]) for name, t in trees.items()}
        assert {name: t.root for name, t in trees.items()} == want
        # extras asserted along the way, then retracted, in random batches
        ops = [(Datom(e, a, v, 42), None) for e, a, v in final]
        ops += [(Datom(e, a, v, 42), "undo") for e, a, v in extra]
        rng.shuffle(ops)
        undo = [Datom(d.e, d.a, d.v, 42, False) for d, how in ops if how == "undo"]
        rng.shuffle(undo)
        stream = [d for d, _ in ops] + undo
        cuts = sorted(rng.randrange(len(stream) + 1) for _ in range(batches - 1))
        trees = {name: empty for name in INDEXES}
        for lo, hi in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            edits = index_edits(stream[lo:hi], SCHEMA, stamp)
            trees = {name: await t.edit(edits[name]) for name, t in trees.items()}
        assert {name: t.root for name, t in trees.items()} == want
        assert await Tree(nodes, want["eavt"]).height() >= 3  # several levels were edited

    asyncio.run(main())


# -- databases -------------------------------------------------------------------------------


NOW_S = 1_800_000_000.5  # the frozen wall clock: every stamp is (this, counter, tx)
REPLICA_ID = 0x5EED_0000_0000_0001
EIDS = [1, 2, 3, 4]  # the final entities (the users' own id space: no tempids, no allocation)
JUNK = 101  # an entity that only exists in between


@st.composite
def plans(draw: st.DrawFn) -> tuple[int, list[list[Any]], list[list[Any]]]:
    """``(n, same, extra)``: per transaction, the ops both databases run, and the extra ops
    only the second runs (whose effects are gone by the end)."""
    n = draw(st.integers(1, 5))
    same: list[list[Any]] = [[] for _ in range(n)]
    extra: list[list[Any]] = [[] for _ in range(n)]

    def at(lo: int, hi: int) -> int:
        return draw(st.integers(lo, hi))

    for e in EIDS:
        card_one = {"p/name": f"n{e}", "p/age": draw(st.integers(0, 99)), "p/score": e / 4}
        for a, v in card_one.items():
            if not draw(st.booleans()):
                continue
            k = at(0, n - 1)
            same[k].append(["db/add", e, a, v])
            if k >= 1 and draw(st.booleans()):  # an earlier value, overwritten at k
                junk = {"p/name": f"old{e}", "p/age": 1000 + e, "p/score": -1.0 - e}[a]
                extra[at(0, k - 1)].append(["db/add", e, a, junk])
            if k >= 2 and draw(st.booleans()):  # the final value early, retracted, again at k
                j = at(0, k - 2)
                extra[j].append(["db/add", e, a, v])
                extra[at(j + 1, k - 1)].append(["db/retract", e, a, v])
        many = [("p/tag", t) for t in TAGS[:3]] + [("p/friend", f) for f in EIDS]
        for a, v in many:
            if draw(st.integers(0, 2)) == 0:
                continue
            k = at(0, n - 1)
            same[k].append(["db/add", e, a, v])
            if k >= 2 and draw(st.booleans()):
                j = at(0, k - 2)
                extra[j].append(["db/add", e, a, v])
                extra[at(j + 1, k - 1)].append(["db/retract", e, a, v])
        if n >= 2 and draw(st.booleans()):  # a tag that comes and goes
            j = at(0, n - 2)
            extra[j].append({"db/id": e, "p/tag": [TAGS[3]]})
            extra[at(j + 1, n - 1)].append(["db/retract", e, "p/tag", TAGS[3]])
    if n >= 2 and draw(st.booleans()):  # an entity with refs to it, made and retracted
        j = at(0, n - 2)
        r = at(j + 1, n - 1)
        extra[j].append({"db/id": JUNK, "p/name": "junk", "p/age": 5, "p/friend": [1]})
        for e in draw(st.lists(st.sampled_from(EIDS), unique=True)):
            extra[at(j, r - 1)].append(["db/add", e, "p/friend", JUNK])
        extra[r].append(["db/retractEntity", JUNK])
    return n, same, extra


async def open_pinned(url: str) -> replica.Connection:
    conn = await replica.connect(url, create=True, tree_config=TINY)
    conn.replica_id = REPLICA_ID  # same tx ids in both databases
    await conn.transact(SCHEMA_TX)
    return conn


@settings(SETTINGS, max_examples=100)
@given(plan=plans(), seed=st.integers(0, 1 << 32))
def test_same_datoms_same_roots_however_reached(
    plan: tuple[int, list[list[Any]], list[list[Any]]], seed: int
) -> None:
    n, same, extra = plan
    rng = random.Random(seed)
    frozen = types.SimpleNamespace(time=lambda: NOW_S)

    async def main() -> None:
        a = await open_pinned(f"mem://hi-{uuid.uuid4().hex}")
        b = await open_pinned(f"mem://hi-{uuid.uuid4().hex}")
        try:
            for k in range(n):
                ops_b = same[k] + extra[k]
                rng.shuffle(ops_b)
                ra = await a.transact(same[k])
                rb = await b.transact(ops_b)
                assert ra.tx == rb.tx and ra.db_after.stamp == rb.db_after.stamp
            da, db = a.db, b.db
            assert await da.datoms("eavt") == await db.datoms("eavt")
            for name in INDEXES:
                assert da.commit.roots[name] == db.commit.roots[name], name
            history_equal = all(da.commit.roots[t] == db.commit.roots[t] for t in TREES)
            assert history_equal == (not any(extra)), "history differs iff there were extras"
            # and a fresh build of the same items gives the same root
            nodes = da.database.nodes
            for name in INDEXES:
                items = await Tree(nodes, da.commit.roots[name]).items()
                assert (await Tree.build(nodes, items)).root == da.commit.roots[name]
        finally:
            await a.aclose()
            await b.aclose()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(replica.connection, "time", frozen)
        asyncio.run(main())
