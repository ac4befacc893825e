"""``Connection.merge`` and the automatic merge of branch heads (issue 5; docs/conflicts.md).

* fast-forward, merging an ancestor / the branch itself (no-ops), a list of commits, a DB;
* ``strategy="strict"``: MergeConflict listing the conflicts, and nothing written (branch ref,
  commit id and the store's nodes as before); without conflicts it merges like ``auto``;
* ``tx_data``: transacted on the merged value in the same call (Datahike's ``merge-db``);
* errors: an unknown branch is NoSuchBranch, an unknown strategy BranchError, before anything
  is written;
* nothing lost silently: the losing values stay in ``db.history``, ``as_of`` a transaction
  before the merge gives the view of that time;
* ``refresh`` merges a branch holding several heads (as sync leaves it) into one commit that
  every connection computes alike;
* ``on_race="merge"``: two connections racing on one store end with every write present and
  merge commits (two or more parents) in the branch history.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import replica
from replica import BranchError, MergeConflict, NoSuchBranch, NoSuchCommit, ReplicaError
from replica.connection import _BranchState, encode_heads
from store.codec import address_of
from tests.replica._tx_writer import count_cas_failures
from tests.replica.conftest import MakeConn

SCHEMA: list[dict[str, Any]] = [
    {"db/ident": "p/name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "p/age", "db/valueType": "db.type/long"},
    {
        "db/ident": "p/tag",
        "db/valueType": "db.type/string",
        "db/cardinality": "db.cardinality/many",
    },
    {"db/ident": "p/seen", "db/valueType": "db.type/long", "db/noHistory": True},
]


async def wait_past(stamp: replica.Stamp) -> None:
    """Sleep until a transaction made now is stamped after ``stamp``."""
    # the clock counts whole milliseconds: sleep past the next one, then make sure
    await anyio.sleep(max(0.0, (stamp.wall_ms + 2) / 1000 - time.time()))
    assert int(time.time() * 1000) > stamp.wall_ms


async def datoms(db: replica.DB, e: int) -> set[tuple[str, Any]]:
    return {(d.a, d.v) for d in await db.datoms("eavt", e)}


class World:
    """main with ivan {name Ivan, age 30, tag a}, and branch b forked from it."""

    def __init__(self, conn: replica.Connection, ivan: int, base: bytes) -> None:
        self.conn = conn
        self.ivan = ivan
        self.base = base

    @classmethod
    async def make(cls, make_conn: MakeConn) -> World:
        conn = await make_conn(SCHEMA)
        report = await conn.transact(
            [{"db/id": "ivan", "p/name": "Ivan", "p/age": 30, "p/tag": "a"}]
        )
        await conn.branch("b")
        return cls(conn, report.tempids["ivan"], conn.commit_id)

    async def on_b(self, *txs: Any) -> tuple[bytes, list[int]]:
        """Transact ``txs`` on branch b (stamped after everything on main); returns b's head
        and the tx ids."""
        await wait_past(self.conn.db.stamp)
        tx_ids = []
        async with replica.connect(self.conn.url, branch="b") as side:
            for tx in txs:
                tx_ids.append((await side.transact(tx)).tx)
            return side.commit_id, tx_ids

    async def conflicting(self) -> tuple[bytes, bytes, int, int]:
        """main sets age 31, b (later) sets age 32: one lww conflict. Returns main's head,
        b's head and the two tx ids."""
        a = await self.conn.transact([["db/add", self.ivan, "p/age", 31]])
        b_head, (b_tx,) = await self.on_b([["db/add", self.ivan, "p/age", 32]])
        return self.conn.commit_id, b_head, a.tx, b_tx


async def snapshot(conn: replica.Connection) -> tuple[Any, ...]:
    """Everything a merge that writes nothing must leave alone."""
    return (
        conn.commit_id,
        await conn.store.get_ref("branches/main"),
        await conn.store.get_ref("branches/b"),
        await conn.store.list_addresses(),
    )


# -- fast-forward and no-ops ----------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_fast_forward(make_conn: MakeConn) -> None:
    w = await World.make(make_conn)
    b_head, _ = await w.on_b([["db/add", w.ivan, "p/age", 31]], [["db/add", w.ivan, "p/tag", "b"]])
    report = await w.conn.merge("b")
    assert report.fast_forward
    assert report.conflicts == ()
    assert report.tx_report is None
    assert report.db.commit_id == b_head == w.conn.commit_id
    assert await w.conn.store.get_ref("branches/main") == encode_heads([b_head])
    assert await datoms(w.conn.db, w.ivan) == {
        ("p/name", "Ivan"),
        ("p/age", 31),
        ("p/tag", "a"),
        ("p/tag", "b"),
    }
    # no merge commit: the history is one chain
    for commit in await w.conn.branch_history():
        assert len(await w.conn.parent_commit_ids(commit)) <= 1


@pytest.mark.timeout(60)
async def test_strict_fast_forward_is_allowed(make_conn: MakeConn) -> None:
    w = await World.make(make_conn)
    b_head, _ = await w.on_b([["db/add", w.ivan, "p/age", 31]])
    report = await w.conn.merge("b", strategy="strict")
    assert report.fast_forward and w.conn.commit_id == b_head


@pytest.mark.timeout(60)
async def test_merging_the_branch_into_itself_or_an_ancestor_changes_nothing(
    make_conn: MakeConn,
) -> None:
    w = await World.make(make_conn)
    await w.conn.transact([["db/add", w.ivan, "p/age", 31]])
    head = w.conn.commit_id
    before = await snapshot(w.conn)
    for other in ("main", head, w.base, w.conn.db, [w.base, head], "b"):
        # b is still at the base: an ancestor of main
        report = await w.conn.merge(other)
        assert not report.fast_forward, other
        assert report.conflicts == ()
        assert report.db.commit_id == head
        assert await snapshot(w.conn) == before, other


# -- merging --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_merge_writes_one_merge_commit(make_conn: MakeConn) -> None:
    w = await World.make(make_conn)
    a_head, b_head, _, _ = await w.conflicting()
    report = await w.conn.merge("b")
    assert not report.fast_forward
    assert report.db.parent_commit_ids == tuple(sorted([a_head, b_head]))
    assert w.conn.commit_id == report.db.commit_id
    assert await w.conn.store.get_ref("branches/main") == encode_heads([report.db.commit_id])
    # b itself is not moved
    assert await w.conn.store.get_ref("branches/b") == encode_heads([b_head])
    assert await datoms(report.db, w.ivan) == {("p/name", "Ivan"), ("p/age", 32), ("p/tag", "a")}
    (c,) = report.conflicts
    assert (c.entity, c.attribute, c.base, {c.ours, c.theirs}, c.winner, c.rule) == (
        w.ivan,
        "p/age",
        30,
        {31, 32},
        32,
        "lww",
    )
    assert (c.ours, c.theirs) == ((31, 32) if a_head < b_head else (32, 31))
    assert c.tx == report.db.commit.tx
    # the merge commit is in the branch history, with its two parents
    history = await w.conn.branch_history()
    assert history[0] == report.db.commit_id
    assert {a_head, b_head} <= set(history)


@pytest.mark.timeout(60)
async def test_merge_a_db_value_or_a_commit_id(make_conn: MakeConn) -> None:
    w = await World.make(make_conn)
    _, b_head, _, _ = await w.conflicting()
    b_db = await w.conn.branch_as_db("b")
    first = await w.conn.merge(b_db)
    # the same merge again, by commit id: nothing new
    second = await w.conn.merge(b_head)
    assert second.db.commit_id == first.db.commit_id
    assert not second.fast_forward and second.conflicts == ()


@pytest.mark.timeout(60)
async def test_merge_a_list_of_commits(make_conn: MakeConn) -> None:
    w = await World.make(make_conn)
    conn = w.conn
    await conn.branch("c")
    await conn.transact([["db/add", w.ivan, "p/tag", "main"]])
    main_head = conn.commit_id
    b_head, _ = await w.on_b([["db/add", w.ivan, "p/tag", "b"]])
    async with replica.connect(conn.url, branch="c") as c:
        await c.transact([["db/add", w.ivan, "p/tag", "c"]])
        c_head = c.commit_id
    # the base is an ancestor of everything: dropped from the head set
    report = await conn.merge([b_head, c_head, w.base])
    assert report.db.parent_commit_ids == tuple(sorted([main_head, b_head, c_head]))
    assert report.conflicts == ()
    assert {v for a, v in await datoms(report.db, w.ivan) if a == "p/tag"} == {
        "a",
        "main",
        "b",
        "c",
    }
    # the same three heads merged in another order, elsewhere, give the same commit
    async with replica.connect(conn.url, branch="c") as c:
        again = await c.merge([b_head, main_head])
    assert again.db.commit_id == report.db.commit_id


@pytest.mark.timeout(60)
async def test_strict_raises_and_writes_nothing(make_conn: MakeConn) -> None:
    w = await World.make(make_conn)
    a_head, _, _, _ = await w.conflicting()
    before = await snapshot(w.conn)
    with pytest.raises(MergeConflict) as info:
        await w.conn.merge("b", strategy="strict")
    assert await snapshot(w.conn) == before
    assert w.conn.db.commit_id == a_head
    assert await w.conn._heads("main") == [a_head]
    (c,) = info.value.conflicts
    assert (c.entity, c.attribute, c.base, c.winner, c.rule) == (w.ivan, "p/age", 30, 32, "lww")
    assert "p/age" in str(info.value)
    # with tx_data, strict still writes nothing (the caller's data is not transacted either)
    with pytest.raises(MergeConflict):
        await w.conn.merge("b", [["db/add", w.ivan, "p/age", 99]], strategy="strict")
    assert await snapshot(w.conn) == before
    # the automatic merge then finds exactly those conflicts
    report = await w.conn.merge("b")
    assert Counter(report.conflicts) == Counter(info.value.conflicts)


@pytest.mark.timeout(60)
async def test_strict_without_conflicts_merges(make_conn: MakeConn) -> None:
    w = await World.make(make_conn)
    await w.conn.transact([["db/add", w.ivan, "p/age", 31]])
    await w.on_b([["db/add", w.ivan, "p/tag", "b"]])
    report = await w.conn.merge("b", strategy="strict")
    assert not report.fast_forward and report.conflicts == ()
    assert len(report.db.parent_commit_ids) == 2
    assert await datoms(report.db, w.ivan) == {
        ("p/name", "Ivan"),
        ("p/age", 31),
        ("p/tag", "a"),
        ("p/tag", "b"),
    }


@pytest.mark.timeout(60)
async def test_tx_data_is_transacted_after_the_merge(make_conn: MakeConn) -> None:
    w = await World.make(make_conn)
    await w.conflicting()
    report = await w.conn.merge(
        "b", tx_data=[["db/add", w.ivan, "p/age", 99]], tx_meta={"p/name": "resolution"}
    )
    assert report.tx_report is not None
    merged = report.tx_report.db_before
    assert len(merged.parent_commit_ids) == 2
    assert report.tx_report.db_after == report.db == w.conn.db
    assert report.db.parent_commit_ids == (merged.commit_id,)
    assert ("p/age", 32) in await datoms(merged, w.ivan)
    assert ("p/age", 99) in await datoms(report.db, w.ivan)
    # the conflict the rules resolved stays recorded (on the merge transaction)
    (c,) = report.conflicts
    assert c.winner == 32 and c.tx == merged.commit.tx
    assert [x.winner for x in await replica.conflicts(report.db)] == [32]


@pytest.mark.timeout(60)
async def test_bad_tx_data_writes_nothing(make_conn: MakeConn) -> None:
    """Merge and tx_data are one operation for the caller: when the tx data is rejected, the
    call fails and the branch is where it was (as for any rejected transaction); the caller
    fixes the data and merges again."""
    w = await World.make(make_conn)
    a_head, _, _, _ = await w.conflicting()
    before = await snapshot(w.conn)
    with pytest.raises(replica.UnknownAttribute):
        await w.conn.merge("b", tx_data=[["db/add", w.ivan, "p/nope", 1]])
    assert w.conn.commit_id == a_head
    assert await w.conn.store.get_ref("branches/main") == before[1]


@pytest.mark.timeout(60)
async def test_tx_data_as_edn(make_conn: MakeConn) -> None:
    w = await World.make(make_conn)
    await w.conflicting()
    report = await w.conn.merge("b", tx_data=f"[[:db/add {w.ivan} :p/age 7]]")
    assert ("p/age", 7) in await datoms(report.db, w.ivan)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_errors_write_nothing(make_conn: MakeConn) -> None:
    w = await World.make(make_conn)
    await w.conflicting()
    before = await snapshot(w.conn)
    with pytest.raises(NoSuchBranch):
        await w.conn.merge("nope")
    with pytest.raises(BranchError, match="strategy"):
        await w.conn.merge("b", strategy="ours")
    with pytest.raises(NoSuchCommit):
        await w.conn.merge(address_of(b"no such commit"))
    with pytest.raises(ReplicaError):
        await w.conn.merge(b"\x01" * 32)  # not an address at all
    with pytest.raises(BranchError):
        await w.conn.merge(42)
    assert await snapshot(w.conn) == before


# -- nothing lost silently ----------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_losing_values_stay_in_history(make_conn: MakeConn) -> None:
    w = await World.make(make_conn)
    _, _, a_tx, b_tx = await w.conflicting()
    report = await w.conn.merge("b")
    hist = {(d.v, d.tx, d.added) for d in await report.db.history.datoms("eavt", w.ivan, "p/age")}
    # 30 asserted at the base and retracted by both sides; A's losing 31 is there
    assert {(31, a_tx, True), (32, b_tx, True), (30, a_tx, False), (30, b_tx, False)} <= hist
    for c in report.conflicts:
        for value in (c.ours, c.theirs):
            assert any(v == value and added for v, _, added in hist)


@pytest.mark.timeout(60)
async def test_as_of_before_the_merge(make_conn: MakeConn) -> None:
    w = await World.make(make_conn)
    base_db = await w.conn.commit_as_db(w.base)
    a_head, _, a_tx, _ = await w.conflicting()
    a_db = await w.conn.commit_as_db(a_head)
    db = (await w.conn.merge("b")).db
    # the base, by commit id and by tx id
    assert await datoms(db.as_of(w.base), w.ivan) == await datoms(base_db, w.ivan)
    assert await datoms(db.as_of(base_db.max_tx), w.ivan) == await datoms(base_db, w.ivan)
    # A's transaction is stamped before all of B's: as of it, the view is A's
    assert await datoms(db.as_of(a_tx), w.ivan) == await datoms(a_db, w.ivan)
    assert await datoms(db.as_of(a_head), w.ivan) == {
        ("p/name", "Ivan"),
        ("p/age", 31),
        ("p/tag", "a"),
    }


@pytest.mark.timeout(60)
async def test_as_of_the_merge_commit_is_the_merged_db(make_conn: MakeConn) -> None:
    """``db.as_of(t)`` for ``t`` the merge itself (or anything after it) is the merged value:
    a cardinality-one attribute has the winner only, not the winner and the loser."""
    w = await World.make(make_conn)
    await w.conflicting()
    db = (await w.conn.merge("b")).db
    merged = await datoms(db, w.ivan)
    assert merged == {("p/name", "Ivan"), ("p/age", 32), ("p/tag", "a")}
    assert await datoms(db.as_of(db.commit_id), w.ivan) == merged
    assert await datoms(db.as_of(db.max_tx), w.ivan) == merged


# -- several heads on one branch -------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_refresh_merges_the_heads_of_a_branch(make_conn: MakeConn) -> None:
    """A branch ref holding two heads (as sync or a lost race leaves it): ``refresh`` merges
    them into one commit and moves the branch; a second connection computes the same."""
    w = await World.make(make_conn)
    a_head, b_head, _, _ = await w.conflicting()
    ref = "branches/main"
    raw = await w.conn.store.get_ref(ref)
    assert await w.conn.store.cas_ref(ref, raw, encode_heads([a_head, b_head]))
    async with replica.connect(w.conn.url) as other:
        # connecting settles the heads too
        merged = other.commit_id
        assert other.db.parent_commit_ids == tuple(sorted([a_head, b_head]))
    assert await w.conn.store.get_ref(ref) == encode_heads([merged])
    assert (await w.conn.refresh()).commit_id == merged
    assert [c.winner for c in await replica.conflicts(w.conn.db)] == [32]
    # the same two heads set again: refresh writes the very same commit
    assert await w.conn.store.cas_ref(ref, encode_heads([merged]), encode_heads([b_head, a_head]))
    assert (await w.conn.refresh()).commit_id == merged
    assert await w.conn.store.get_ref(ref) == encode_heads([merged])


@pytest.mark.timeout(60)
async def test_transact_on_a_branch_with_two_heads(make_conn: MakeConn) -> None:
    """A transaction on a branch whose ref holds two heads builds on their merge."""
    w = await World.make(make_conn)
    a_head, b_head, _, _ = await w.conflicting()
    ref = "branches/main"
    raw = await w.conn.store.get_ref(ref)
    assert await w.conn.store.cas_ref(ref, raw, encode_heads([a_head, b_head]))
    w.conn._forget_head("main")
    report = await w.conn.transact([["db/add", w.ivan, "p/tag", "z"]])
    (parent,) = report.db_after.parent_commit_ids
    assert (await w.conn.commit_as_db(parent)).parent_commit_ids == tuple(sorted([a_head, b_head]))
    assert await datoms(report.db_after, w.ivan) == {
        ("p/name", "Ivan"),
        ("p/age", 32),
        ("p/tag", "a"),
        ("p/tag", "z"),
    }


# -- concurrent writers: on_race="merge" ------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["mem", "file"])
async def test_on_race_merge_keeps_every_write(kind: str, tmp_path: Path) -> None:
    """Two connections write one branch at once with ``on_race="merge"``. Connections of one
    process normally take turns (a per-branch lock, connection.py); the second one gets a lock
    of its own here, as if it were another process, so their cas_ref calls really race. Each
    lost race keeps the loser's commit as a second head that merges: every write is present,
    each exactly once, and the branch history holds merge commits."""
    n = 30
    url = f"mem://race-{uuid.uuid4().hex}" if kind == "mem" else (tmp_path / "db").as_uri()
    schema = [
        {"db/ident": "w/n", "db/valueType": "db.type/long", "db/unique": "db.unique/identity"},
        {"db/ident": "w/by", "db/valueType": "db.type/string"},
        {
            "db/ident": "w/log",
            "db/valueType": "db.type/long",
            "db/cardinality": "db.cardinality/many",
        },
    ]
    await replica.create_database(url, schema=schema)
    async with (
        replica.connect(url, on_race="merge") as a,
        replica.connect(url, on_race="merge") as b,
    ):
        assert a.on_race == b.on_race == "merge"
        b._branch = _BranchState()  # as if b were another process
        failures = [count_cas_failures(a), count_cas_failures(b)]
        acked: list[int] = []

        async def write(conn: replica.Connection, start: int, by: str) -> None:
            for i in range(start, start + n):
                report = await conn.transact(
                    [
                        {"w/n": i, "w/by": by},
                        ["db/add", "log", "w/log", i],
                        {"db/id": "log", "w/n": -1},
                    ]
                )
                assert report.tempids
                acked.append(i)
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(write, a, 0, "a")
            tg.start_soon(write, b, n, "b")
        assert sorted(acked) == list(range(2 * n))
        db_a, db_b = await a.refresh(), await b.refresh()
        assert db_a.commit_id == db_b.commit_id
        db = db_a
        numbers = {d.v: d.e for d in await db.datoms("aevt", "w/n")}
        assert sorted(numbers) == [-1, *range(2 * n)]
        # each write once, with its own value
        for i in range(2 * n):
            assert await datoms(db, numbers[i]) == {("w/n", i), ("w/by", "a" if i < n else "b")}
        # the shared entity (upserted by w/n -1 on both sides) collected every log entry
        assert {v for a_, v in await datoms(db, numbers[-1]) if a_ == "w/log"} == set(range(2 * n))
        lost = failures[0][0] + failures[1][0]
        assert lost > 0, "the writers never raced: the merge path did not run"
        merges = [c for c in await a.branch_history() if len(await a.parent_commit_ids(c)) >= 2]
        assert merges, "no merge commit in the branch history"
        print(f"{kind}: {lost} lost races, {len(merges)} merge commits")
        assert await a.store.get_ref("branches/main") == encode_heads([db.commit_id])


@pytest.mark.timeout(60)
async def test_on_race_must_be_retry_or_merge(db_url: str) -> None:
    with pytest.raises(replica.TxDataError):
        await replica.connect(db_url, create=True, on_race="later")
