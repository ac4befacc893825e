"""The database on S3 (the local moto server of tests/conftest.py, over real HTTP).

A subset of the database behaviour, end to end through store/s3.py: creating a database with a
schema, transacting (tempids, upserts, retractEntity), as_of / since / history reads, reopening
from a fresh connection (same commit id, same datoms, a cold cache), branches, verify, and two
connections racing on one branch (``cas_ref`` through conditional PUTs).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import replica
from replica import BranchExists, DatabaseExists, Keyword, NoSuchBranch, UniqueConflict
from replica.maintenance import verify
from tests.replica._tx_writer import count_cas_failures

pytestmark = pytest.mark.timeout(120)

SCHEMA = [
    {"db/ident": "p/name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "p/email", "db/valueType": "db.type/string", "db/unique": "db.unique/value"},
    {"db/ident": "p/age", "db/valueType": "db.type/long"},
    {
        "db/ident": "p/tag",
        "db/valueType": "db.type/keyword",
        "db/cardinality": "db.cardinality/many",
    },
    {"db/ident": "p/friend", "db/valueType": "db.type/ref"},
]


@pytest.fixture
async def conn(s3_url: str) -> AsyncIterator[replica.Connection]:
    await replica.create_database(s3_url, schema=SCHEMA)
    async with replica.connect(s3_url) as c:
        yield c


async def eavt(db: replica.DB) -> set[tuple[int, str, Any]]:
    return {(d.e, d.a, d.v) for d in await db.datoms("eavt")}


async def person(db: replica.DB, name: str) -> dict[str, Any]:
    (d,) = await db.datoms("avet", "p/name", name)
    return {x.a: x.v for x in await db.datoms("eavt", d.e)}


async def test_create_transact_and_reopen(s3_url: str) -> None:
    assert not await replica.database_exists(s3_url)
    await replica.create_database(s3_url, schema=SCHEMA)
    assert await replica.database_exists(s3_url)
    with pytest.raises(DatabaseExists):
        await replica.create_database(s3_url)

    async with replica.connect(s3_url) as conn:
        assert conn.schema.get("p/name") is not None
        report = await conn.transact(
            [
                {"db/id": "a", "p/name": "ann", "p/age": 30, "p/tag": ["x", "y"]},
                {"db/id": "b", "p/name": "bob", "p/email": "b@x", "p/friend": "a"},
            ]
        )
        a, b = report.tempids["a"], report.tempids["b"]
        assert report.db_after.commit_id == conn.commit_id
        assert report.db_after.parent_commit_ids == (report.db_before.commit_id,)
        assert {(d.a, d.v) for d in await conn.db.datoms("eavt", a)} == {
            ("p/name", "ann"),
            ("p/age", 30),
            ("p/tag", Keyword("x")),
            ("p/tag", Keyword("y")),
        }
        assert [d.e for d in await conn.db.datoms("vaet", a, "p/friend")] == [b]
        await conn.transact([{"p/name": "cy", "p/age": 7}])
        head, datoms = conn.commit_id, await eavt(conn.db)
        history = await conn.branch_history()
        assert len(history) == 4  # genesis, the schema, two transactions

    async with replica.connect(s3_url) as again:  # a fresh store client, nothing cached
        assert again.commit_id == head
        assert await eavt(again.db) == datoms
        assert await again.branch_history() == history
        report = await verify(again)
        assert report.commits == 4
        await again.transact([{"p/name": "dee"}])
        assert again.db.parent_commit_ids == (head,)


async def test_upsert_and_unique_value(conn: replica.Connection) -> None:
    await conn.transact([{"p/name": "ann", "p/age": 30}])
    (d,) = await conn.db.datoms("avet", "p/name", "ann")
    eid = d.e
    # the same identity value: the same entity, its age replaced (cardinality one)
    report = await conn.transact([{"db/id": "t", "p/name": "ann", "p/age": 31, "p/email": "a@x"}])
    assert report.tempids["t"] == eid
    assert await person(conn.db, "ann") == {"p/name": "ann", "p/age": 31, "p/email": "a@x"}
    assert {(x.a, x.v, x.added) for x in report.tx_data if x.e == eid} == {
        ("p/age", 30, False),
        ("p/age", 31, True),
        ("p/email", "a@x", True),
    }
    assert len(await conn.db.datoms("aevt", "p/name")) == 1
    # a unique (not identity) value held by another entity is a conflict; nothing is written
    head = conn.commit_id
    with pytest.raises(UniqueConflict):
        await conn.transact([{"p/name": "bob", "p/email": "a@x"}])
    assert conn.commit_id == head
    assert (await conn.refresh()).commit_id == head


async def test_retract_entity_and_time_views(conn: replica.Connection) -> None:
    r1 = await conn.transact([{"db/id": "a", "p/name": "ann", "p/age": 30, "p/tag": ["x"]}])
    ann = r1.tempids["a"]
    r2 = await conn.transact([{"db/id": "b", "p/name": "bob", "p/friend": ann}])
    bob = r2.tempids["b"]
    r3 = await conn.transact([{"db/id": ann, "p/age": 31}])
    r4 = await conn.transact([["db/retractEntity", ann]])
    db = conn.db

    # retractEntity removed ann's datoms and the ref to her
    assert await db.datoms("eavt", ann) == []
    assert await db.datoms("avet", "p/name", "ann") == []
    assert await db.datoms("eavt", bob, "p/friend") == []
    assert {(x.e, x.a, x.added) for x in r4.tx_data if x.a != "db/txInstant"} == {
        (ann, "p/name", False),
        (ann, "p/age", False),
        (ann, "p/tag", False),
        (bob, "p/friend", False),
    }

    # as_of each earlier transaction, by tx id, commit id and Stamp
    for report, age in ((r1, 30), (r2, 30), (r3, 31)):
        for point in (report.tx, report.db_after.commit_id, report.db_after.stamp):
            past = db.as_of(point)
            assert [x.v for x in await past.datoms("eavt", ann, "p/age")] == [age], point
    assert await db.as_of(r1.tx).datoms("eavt", bob) == []
    assert [x.v for x in await db.as_of(r2.tx).datoms("eavt", bob, "p/friend")] == [ann]
    # as_of a datetime after everything is the current database
    later = _dt.datetime.now(_dt.UTC) + _dt.timedelta(days=1)
    assert await eavt(db.as_of(later)) == await eavt(db)

    # history: every assertion and retraction of ann's age (eavt order: by value, then stamp)
    ages = [(x.v, x.added, x.tx) for x in await db.history.datoms("eavt", ann, "p/age")]
    assert ages == [(30, True, r1.tx), (30, False, r3.tx), (31, True, r3.tx), (31, False, r4.tx)]
    # since: only current datoms asserted after the time point
    assert await db.since(r3.tx).datoms("eavt", bob) == []
    assert [x.v for x in await db.since(r1.tx).datoms("eavt", bob, "p/name")] == ["bob"]

    # a fresh connection reads the same views from S3 with a cold cache
    async with replica.connect(conn.url) as fresh:
        cold = fresh.db
        assert cold.commit_id == db.commit_id
        assert [x.v for x in await cold.as_of(r3.tx).datoms("eavt", ann, "p/age")] == [31]
        assert await cold.history.datoms("eavt", ann) == await db.history.datoms("eavt", ann)


async def test_branches(conn: replica.Connection, s3_url: str) -> None:
    await conn.transact([{"p/name": "ann"}])
    base = conn.commit_id
    await conn.branch("feature")
    with pytest.raises(BranchExists):
        await conn.branch("feature")
    await conn.branch("old", from_=base)
    assert await conn.branches() == ["feature", "main", "old"]

    async with replica.connect(s3_url, branch="feature") as feature:
        assert feature.commit_id == base
        await feature.transact([{"p/name": "bob"}])
        feature_head = feature.commit_id
    await conn.transact([{"p/name": "cy"}])

    main_names = {x.v for x in await conn.db.datoms("aevt", "p/name")}
    feature_db = await conn.branch_as_db("feature")
    assert feature_db.commit_id == feature_head
    assert {x.v for x in await feature_db.datoms("aevt", "p/name")} == {"ann", "bob"}
    assert main_names == {"ann", "cy"}
    assert (await conn.branch_as_db("old")).commit_id == base
    feature_history = await conn.branch_history("feature")
    assert feature_history[0] == feature_head and base in feature_history
    assert conn.commit_id not in feature_history
    assert (await verify(conn, "feature")).commits == 4

    await conn.delete_branch("old")
    assert await conn.branches() == ["feature", "main"]
    with pytest.raises(NoSuchBranch):
        await replica.connect(s3_url, branch="old")
    await conn.reset_branch("feature", base)
    assert (await conn.branch_as_db("feature")).commit_id == base


async def test_two_connections_race_on_s3(conn: replica.Connection, s3_url: str) -> None:
    n = 8
    heads: list[list[bytes]] = [[], []]

    async def write(c: replica.Connection, start: int, out: list[bytes]) -> None:
        for i in range(start, start + n):
            report = await c.transact([{"p/name": f"w{i}", "p/age": i}])
            out.append(report.db_after.commit_id)

    async with replica.connect(s3_url) as other:
        failures = [count_cas_failures(conn), count_cas_failures(other)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(write, conn, 0, heads[0])
            tg.start_soon(write, other, n, heads[1])
    async with replica.connect(s3_url) as fresh:
        ages = sorted(x.v for x in await fresh.db.datoms("aevt", "p/age"))
        assert ages == list(range(2 * n))
        history = await fresh.branch_history()
        assert len(history) == 2 * n + 2
        assert set(heads[0]) | set(heads[1]) <= set(history)
        for commit in history[:-1]:
            assert len(await fresh.parent_commit_ids(commit)) == 1
        assert (await verify(fresh)).commits == 2 * n + 2
    # one process: the per-branch lock makes the connections take turns (connection.py)
    assert failures[0][0] + failures[1][0] == 0, "connections of one process raced"
