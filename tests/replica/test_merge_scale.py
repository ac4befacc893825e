"""Large-history merge (issue 5, "Must show"): a fork with many commits on each side over a
large base merges with a cost proportional to the changes, not to the database or its history.

Cost is counted in node loads, never in time: ``reads`` (every node access of a tree, cache
hits included: store/nodes.py ``NodeStats``) and ``distinct`` (how many different nodes the
merge loaded, i.e. what a cold cache would fetch). The workload: a base of entities with a
``db.unique/identity`` id, a name, two cardinality-one longs and a cardinality-many tag set;
then ``commits`` transactions on each side of a fork, each updating one entity of that side's
working set (``commits / 10`` entities: each is updated about ten times), adding a tag, some
retracting a base tag, every tenth creating a new entity. A tenth of each working set is shared
by both sides, so 10% of the commits change the same entity's cardinality-one ``p/age`` on both
sides (one conflict each entity). The changes are local, as real updates are, so that the part
of the trees they touch is small: with updates spread uniformly over the whole base at this
density (10% of all entities) every leaf would change and no merge could read much less than
every node (bench/merge_bench.py measures that case, with fewer transactions).

Asserted: reads <= 3 x changed datoms x tree height (changed datoms: every datom the commits
of both sides asserted or retracted); distinct nodes loaded far below the trees' node count;
twice the base (same changes) does not double the loads; the merged database holds every write
of both sides (datom counts and values of each touched entity, the new entities); merging in
the other direction writes the same commit.

Default size: a 100k-datom base (and 50k for the doubling check), 1,000 commits per side, on
the memory store (15-35 s here). ``REPLICA_MERGE_SCALE=full`` runs the issue's size: a 1M-datom
base (and 500k), 10,000 commits per side, on the file store (several minutes; figures in
docs/benchmarks.md, "Merge (issue 5)").
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import replica
from store.tree import Tree

FULL = os.environ.get("REPLICA_MERGE_SCALE", "") == "full"
BASE_DATOMS = 1_000_000 if FULL else 100_000
COMMITS = 10_000 if FULL else 1_000
CONFLICT_RATE = 0.1
#: reads may be at most this many times (changed datoms x tree height)
FACTOR = 3

SCHEMA = [
    {"db/ident": "p/id", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "p/name", "db/valueType": "db.type/string"},
    {"db/ident": "p/age", "db/valueType": "db.type/long"},
    {"db/ident": "p/score", "db/valueType": "db.type/long"},
    {
        "db/ident": "p/tag",
        "db/valueType": "db.type/string",
        "db/cardinality": "db.cardinality/many",
    },
]
PER_ENTITY = 6  # p/id, p/name, p/age, p/score and two p/tag


def base_entity(k: int) -> dict[str, Any]:
    return {
        "db/id": k + 1,
        "p/id": f"p{k:08d}",
        "p/name": f"name-{k % 9973}",
        "p/age": k % 90,
        "p/score": k % 1000,
        "p/tag": [f"t{k % 50}", f"u{k % 7}"],
    }


@dataclass
class Expected:
    """What the merged database must hold for the entities the commits touched."""

    ages: dict[int, set[int]] = field(default_factory=dict)  # eid -> allowed final p/age
    tags: dict[int, set[str]] = field(default_factory=dict)  # eid -> exact p/tag set
    new: dict[str, int] = field(default_factory=dict)  # p/id of created entities -> p/age
    conflicting: set[int] = field(default_factory=set)


def workload(
    n_entities: int, commits: int, seed: int
) -> tuple[list[list[Any]], list[list[Any]], Expected]:
    """The commits of each side and what their merge must contain."""
    rng = random.Random(seed)
    work = max(10, commits // 10)
    n_shared = round(work * CONFLICT_RATE)
    picked = rng.sample(range(n_entities), 2 * work - n_shared)
    shared = picked[:n_shared]
    own = (picked[n_shared:work], picked[work:])
    exp = Expected(conflicting={k + 1 for k in shared})
    sides: list[list[list[Any]]] = []
    last_age: list[dict[int, int]] = [{}, {}]
    for s, name in enumerate(("m", "o")):
        ks = shared + own[s]
        txs: list[list[Any]] = []
        for i in range(commits):
            k = ks[i % work]
            e = k + 1
            age = 1000 + 100_000 * s + i
            tx: list[Any] = [["db/add", e, "p/age", age], ["db/add", e, "p/tag", f"{name}{i}"]]
            last_age[s][e] = age
            tags = exp.tags.setdefault(e, {f"t{k % 50}", f"u{k % 7}"})
            tags.add(f"{name}{i}")
            if i < work and i % 2 == 0:  # first visit of every other entity
                tx.append(["db/retract", e, "p/tag", f"u{k % 7}"])
            if i % 10 == 0:
                pid = f"{name}-new{i}"
                tx.append({"p/id": pid, "p/name": pid, "p/age": i, "p/tag": ["new"]})
                exp.new[pid] = i
            txs.append(tx)
        sides.append(txs)
    # a retraction removes the base tag whichever side made it (no side re-asserts it)
    for side in sides:
        for tx in side:
            for op in tx:
                if isinstance(op, list) and op[0] == "db/retract":
                    exp.tags[op[1]].discard(op[3])
    for e in exp.tags:
        exp.ages[e] = {a[e] for a in last_age if e in a}
    return sides[0], sides[1], exp


class LoadCounter:
    """Records every node address a Nodes object loads (wraps ``load`` and ``load_many`` on
    the instance: trees look them up there)."""

    def __init__(self, nodes: Any) -> None:
        self.addresses: set[bytes] = set()
        load, load_many = nodes.load, nodes.load_many

        async def counted_load(address: bytes) -> Any:
            self.addresses.add(address)
            return await load(address)

        async def counted_load_many(addresses: Iterable[bytes]) -> Any:
            addresses = list(addresses)
            self.addresses.update(addresses)
            return await load_many(addresses)

        nodes.load = counted_load
        nodes.load_many = counted_load_many


@dataclass
class Fork:
    url: str
    base_datoms: int
    main_head: bytes
    other_head: bytes
    changed: int
    expected: Expected
    height: int = 0
    total_nodes: int = 0


async def build_fork(base_datoms: int, commits: int, where: Path, seed: int = 5) -> Fork:
    # the full size on the file store: the memory store would keep every node of the 2 x
    # 10,000 commits in RAM (~4 GB a fork)
    url = (where / "db").as_uri() if FULL else f"mem://merge-scale-{uuid.uuid4().hex}"
    n_entities = base_datoms // PER_ENTITY
    main_txs, other_txs, exp = workload(n_entities, commits, seed)
    async with replica.connect(url, create=True, schema=SCHEMA) as conn:
        await replica.load_entities(
            conn, (base_entity(k) for k in range(n_entities)), batch_size=20_000
        )
        await conn.branch("other")
        changed = 0
        async with replica.connect(url, branch="other") as other:
            for a, b in zip(main_txs, other_txs, strict=True):  # interleaved, like two peers
                changed += len((await conn.transact(a)).tx_data)
                changed += len((await other.transact(b)).tx_data)
            fork = Fork(url, n_entities * PER_ENTITY, conn.commit_id, other.commit_id, changed, exp)
        # node count of the trees of both heads (what a full scan of both would read), and
        # the height of the tallest tree
        trees = [Tree(conn.database.nodes, r) for h in (fork.main_head, fork.other_head)
                 for r in (await conn.database.commit(h)).roots.values()]  # fmt: skip
        every: set[bytes] = set()
        for t in trees:
            every |= await t.reachable()
            fork.height = max(fork.height, await t.height())
        fork.total_nodes = len(every)
    return fork


async def measure_merge(fork: Fork, branch: str = "main", other: Any = "other") -> dict[str, Any]:
    """Merge ``other`` (a branch or a commit) into ``branch`` on a fresh connection (an empty
    node cache) and check the result: the parents, the conflicts, every write of both sides."""
    async with replica.connect(fork.url, branch=branch) as conn:
        nodes = conn.database.nodes
        counter = LoadCounter(nodes)
        nodes.stats.reset()
        t0 = time.perf_counter()
        report = await conn.merge(other)
        out = {
            "seconds": time.perf_counter() - t0,  # printed, never asserted
            "reads": nodes.stats.reads,
            "fetches": nodes.stats.fetches,
            "distinct": len(counter.addresses),
            "commit": report.db.commit_id,
        }
        assert not report.fast_forward
        assert sorted(report.db.parent_commit_ids) == sorted([fork.main_head, fork.other_head])
        # one cardinality-one conflict per shared entity, each recorded as datoms
        exp = fork.expected
        assert sorted(c.entity for c in report.conflicts) == sorted(exp.conflicting)
        assert {(c.attribute, c.rule) for c in report.conflicts} == {("p/age", "lww")}
        assert len(await replica.conflicts(report.db)) == len(exp.conflicting)
        for c in report.conflicts:  # last writer wins: the merged value is the winner
            assert {c.ours, c.theirs} == exp.ages[c.entity]
            winner = [d.v for d in await report.db.datoms("eavt", c.entity, "p/age").to_list()]
            assert winner == [c.winner]
        await check_contents(report.db, exp)
        return out


async def check_contents(db: replica.DB, exp: Expected) -> None:
    """Every write of both sides is in the merged DB: each touched entity has exactly its
    expected datoms (p/id, p/name, p/score, one p/age, its tags), its tags and an age one of
    the sides wrote last; the created entities exist."""
    for e, tags in exp.tags.items():
        datoms = await db.datoms("eavt", e).to_list()
        assert len(datoms) == 4 + len(tags), (e, datoms)
        assert {d.v for d in datoms if d.a == "p/tag"} == tags
        (age,) = [d.v for d in datoms if d.a == "p/age"]
        assert age in exp.ages[e]
    new_ids = [d async for d in db.datoms("aevt", "p/id") if "-new" in d.v]
    assert {d.v for d in new_ids} == set(exp.new)
    for d in new_ids:
        datoms = await db.datoms("eavt", d.e).to_list()
        assert len(datoms) == 4  # p/id, p/name, p/age, one tag
        assert [x.v for x in datoms if x.a == "p/age"] == [exp.new[d.v]]


@pytest.mark.timeout(3600 if FULL else 300)
async def test_large_history_merge_costs_the_changes(tmp_path: Path) -> None:
    forks: list[Fork] = []
    try:
        forks.append(await build_fork(BASE_DATOMS // 2, COMMITS, tmp_path / "half"))
        forks.append(await build_fork(BASE_DATOMS, COMMITS, tmp_path / "full"))
        half, full = forks
        small, big = await measure_merge(half), await measure_merge(full)
        print(
            f"\nbase {half.base_datoms:,} / {full.base_datoms:,} datoms, {COMMITS:,} commits per "
            f"side: changed datoms {half.changed:,} / {full.changed:,}, height {half.height} / "
            f"{full.height}, reads {small['reads']:,} / {big['reads']:,} "
            f"(= {small['reads'] / (half.changed * half.height):.2f} / "
            f"{big['reads'] / (full.changed * full.height):.2f} x changed x height), distinct "
            f"nodes {small['distinct']:,} / {big['distinct']:,} of {half.total_nodes:,} / "
            f"{full.total_nodes:,}, fetched {small['fetches']:,} / {big['fetches']:,}; merge "
            f"took {small['seconds']:.2f} / {big['seconds']:.2f} s (not asserted)"
        )
        for fork, m in ((half, small), (full, big)):
            # proportional to the changes ...
            assert m["reads"] <= FACTOR * fork.changed * fork.height, (m, fork.changed)
            # ... far from a full scan of either side
            assert m["distinct"] <= fork.total_nodes / 2, (m, fork.total_nodes)
        assert big["distinct"] <= full.total_nodes / 3, (big, full.total_nodes)
        # twice the base, the same changes: the loads do not double (the trees do)
        assert full.total_nodes > 1.6 * half.total_nodes
        assert big["reads"] < 1.5 * small["reads"], (small, big)
        assert big["distinct"] < 1.5 * small["distinct"], (small, big)
        # the other direction: the same heads give the same commit
        back = await measure_merge(full, branch="other", other=full.main_head)
        assert back["commit"] == big["commit"]
    finally:
        for fork in forks:
            if fork.url.startswith("mem://"):  # named memory stores live for the process
                await replica.delete_database(fork.url)
