"""The basic transaction forms and what a transaction hands back (DESIGN.md 5), after
DataScript's test/datascript/test/transact.cljc (test-with, test-retract-fns,
test-retract-without-value-issue-339, test-retract-fns-not-found, test-transient-issue-294)
and listen.cljc.

The table: each row a transaction on the database below, every user datom afterwards and the
datoms the transaction reports (``tx_data`` without the tx entity's ``db/txInstant``), both as
``(label, attribute, value[, added])``. Operations apply in order against the state so far:
cardinality one replaces, cardinality many adds, asserting what is there or retracting what is
not changes nothing, and an add and a retract of one datom in one transaction cancel.

Then: tx metadata (``tx_meta=`` and ``{"db/id": "db/current-tx"}``), ``db/txInstant``, EDN
input, ``with_tx`` (speculative: nothing stored), the TxReport fields, listeners and
``reports()``, and ``load_entities``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import replica
from replica import (
    Datom,
    EntityIdError,
    ReplicaError,
    TxDataError,
    UniqueConflict,
    UnknownAttribute,
    ValueTypeError,
)
from tests.replica._txtable import Id, MakeConn, all_datoms, bind

SCHEMA = [
    {"db/ident": "p/name", "db/valueType": "db.type/string"},
    {"db/ident": "p/age", "db/valueType": "db.type/long"},
    {
        "db/ident": "p/aka",
        "db/valueType": "db.type/string",
        "db/cardinality": "db.cardinality/many",
    },
    {"db/ident": "p/friend", "db/valueType": "db.type/ref"},
    {"db/ident": "p/employed", "db/valueType": "db.type/boolean"},
    {"db/ident": "p/married", "db/valueType": "db.type/boolean"},
    {"db/ident": "p/email", "db/valueType": "db.type/string", "db/unique": "db.unique/value"},
    {"db/ident": "tx/source", "db/valueType": "db.type/string"},
    {"db/ident": "tx/by", "db/valueType": "db.type/ref"},
]
SETUP = [
    {"db/id": "ivan", "p/name": "Ivan", "p/age": 15, "p/aka": ["X", "Y", "Z"], "p/friend": "petr"},
    {
        "db/id": "petr",
        "p/name": "Petr",
        "p/age": 37,
        "p/employed": True,
        "p/married": False,
        "p/email": "@p",
    },
]
IVAN = {
    ("ivan", "p/name", "Ivan"),
    ("ivan", "p/age", 15),
    ("ivan", "p/aka", "X"),
    ("ivan", "p/aka", "Y"),
    ("ivan", "p/aka", "Z"),
    ("ivan", "p/friend", "petr"),
}
PETR = {
    ("petr", "p/name", "Petr"),
    ("petr", "p/age", 37),
    ("petr", "p/employed", True),
    ("petr", "p/married", False),
    ("petr", "p/email", "@p"),
}
ALL = IVAN | PETR
REFS = {"p/friend", "tx/by"}


async def setup(make_conn: MakeConn) -> tuple[replica.Connection, dict[str, int]]:
    conn = await make_conn(SCHEMA)
    ids = {k: v for k, v in (await conn.transact(SETUP)).tempids.items() if k != "db/current-tx"}
    return conn, ids


def labeller(names: Mapping[int, str]) -> Callable[[int, str, Any], tuple[str, str, Any]]:
    def label(e: int, a: str, v: Any) -> tuple[str, str, Any]:
        return (names[e], a, names[v] if a in REFS else v)

    return label


async def user_datoms(db: replica.DB, names: Mapping[int, str]) -> set[tuple[str, str, Any]]:
    label = labeller(names)
    return {label(d.e, d.a, d.v) for d in await db.datoms("eavt") if d.a.startswith("p/")}


# (tx, datoms afterwards, tx_data without db/txInstant)
CASES: dict[str, tuple[Any, set[Any], set[Any]]] = {
    "add: cardinality one replaces": (
        [["db/add", Id("ivan"), "p/age", 16]],
        (ALL - {("ivan", "p/age", 15)}) | {("ivan", "p/age", 16)},
        {("ivan", "p/age", 15, False), ("ivan", "p/age", 16, True)},
    ),
    "add: cardinality many adds": (
        [["db/add", Id("ivan"), "p/aka", "W"]],
        ALL | {("ivan", "p/aka", "W")},
        {("ivan", "p/aka", "W", True)},
    ),
    "add: what is there changes nothing": (
        [
            ["db/add", Id("ivan"), "p/age", 15],
            ["db/add", Id("ivan"), "p/aka", "X"],
            {"db/id": Id("petr"), "p/name": "Petr"},
        ],
        ALL,
        set(),
    ),
    "add: two values for cardinality one, the last wins": (
        [["db/add", Id("ivan"), "p/age", 16], ["db/add", Id("ivan"), "p/age", 17]],
        (ALL - {("ivan", "p/age", 15)}) | {("ivan", "p/age", 17)},
        {("ivan", "p/age", 15, False), ("ivan", "p/age", 17, True)},
    ),
    "add then retract: nothing": (
        [["db/add", Id("ivan"), "p/aka", "W"], ["db/retract", Id("ivan"), "p/aka", "W"]],
        ALL,
        set(),
    ),
    "retract then add: nothing": (
        [["db/retract", Id("ivan"), "p/age", 15], ["db/add", Id("ivan"), "p/age", 15]],
        ALL,
        set(),
    ),
    "a map adds every attribute": (
        [{"db/id": Id("petr"), "p/age": 38, "p/aka": ["P1", "P2"]}],
        (ALL - {("petr", "p/age", 37)})
        | {("petr", "p/age", 38), ("petr", "p/aka", "P1"), ("petr", "p/aka", "P2")},
        {
            ("petr", "p/age", 37, False),
            ("petr", "p/age", 38, True),
            ("petr", "p/aka", "P1", True),
            ("petr", "p/aka", "P2", True),
        },
    ),
    "retract a value": (
        [["db/retract", Id("ivan"), "p/aka", "Y"]],
        ALL - {("ivan", "p/aka", "Y")},
        {("ivan", "p/aka", "Y", False)},
    ),
    "retract what is not there: nothing": (
        [
            ["db/retract", Id("ivan"), "p/name", "Petr"],
            ["db/retract", Id("ivan"), "p/employed", True],
        ],
        ALL,
        set(),
    ),
    "retract false when true is there: nothing (issue-339)": (
        [["db/retract", Id("petr"), "p/employed", False]],
        ALL,
        set(),
    ),
    "retract without a value (issue-339)": (
        [
            ["db/retract", Id("ivan"), "p/name"],
            ["db/retract", Id("ivan"), "p/aka"],
            ["db/retract", Id("petr"), "p/employed"],
            ["db/retract", Id("petr"), "p/married"],
        ],
        ALL
        - {
            ("ivan", "p/name", "Ivan"),
            ("ivan", "p/aka", "X"),
            ("ivan", "p/aka", "Y"),
            ("ivan", "p/aka", "Z"),
            ("petr", "p/employed", True),
            ("petr", "p/married", False),
        },
        {
            ("ivan", "p/name", "Ivan", False),
            ("ivan", "p/aka", "X", False),
            ("ivan", "p/aka", "Y", False),
            ("ivan", "p/aka", "Z", False),
            ("petr", "p/employed", True, False),
            ("petr", "p/married", False, False),
        },
    ),
    "retractAttribute: cardinality one": (
        [["db.fn/retractAttribute", Id("ivan"), "p/name"]],
        ALL - {("ivan", "p/name", "Ivan")},
        {("ivan", "p/name", "Ivan", False)},
    ),
    "retractAttribute: cardinality many": (
        [["db/retractAttribute", Id("ivan"), "p/aka"]],
        ALL - {("ivan", "p/aka", "X"), ("ivan", "p/aka", "Y"), ("ivan", "p/aka", "Z")},
        {
            ("ivan", "p/aka", "X", False),
            ("ivan", "p/aka", "Y", False),
            ("ivan", "p/aka", "Z", False),
        },
    ),
    "retractAttribute of an attribute it lacks: nothing": (
        [["db.fn/retractAttribute", Id("ivan"), "p/employed"]],
        ALL,
        set(),
    ),
    "retractEntity": (
        [["db.fn/retractEntity", Id("ivan")]],
        PETR,
        {(*d, False) for d in IVAN},
    ),
    "retractEntity: db/retractEntity is the same": (
        [["db/retractEntity", Id("ivan")]],
        PETR,
        {(*d, False) for d in IVAN},
    ),
    "retractEntity removes incoming refs": (
        [["db/retractEntity", Id("petr")]],
        IVAN - {("ivan", "p/friend", "petr")},
        {(*d, False) for d in PETR} | {("ivan", "p/friend", "petr", False)},
    ),
    "retractEntity twice (issue-294)": (
        [
            ["db/retractEntity", Id("ivan")],
            ["db/retractEntity", Id("petr")],
            ["db/retractEntity", Id("ivan")],
        ],
        set(),
        {(*d, False) for d in ALL},
    ),
    "retractEntity then an add to it": (
        [["db/retractEntity", Id("petr")], ["db/add", Id("petr"), "p/name", "Petr2"]],
        (IVAN - {("ivan", "p/friend", "petr")}) | {("petr", "p/name", "Petr2")},
        {(*d, False) for d in PETR}
        | {("ivan", "p/friend", "petr", False), ("petr", "p/name", "Petr2", True)},
    ),
    "retractEntity removes refs made earlier in the tx": (
        [{"db/id": "n", "p/name": "N", "p/friend": Id("ivan")}, ["db/retractEntity", Id("ivan")]],
        PETR | {("n", "p/name", "N")},
        {(*d, False) for d in IVAN} | {("n", "p/name", "N", True)},
    ),
    "retracting an entity nobody has: nothing": (
        [
            ["db/retractEntity", 12345],
            ["db/retract", 12345, "p/name", "x"],
            ["db.fn/retractAttribute", 12345, "p/name"],
        ],
        ALL,
        set(),
    ),
    "a unique value moves between entities after its retraction": (
        [["db/retract", Id("petr"), "p/email", "@p"], ["db/add", Id("ivan"), "p/email", "@p"]],
        (ALL - {("petr", "p/email", "@p")}) | {("ivan", "p/email", "@p")},
        {("petr", "p/email", "@p", False), ("ivan", "p/email", "@p", True)},
    ),
    "an empty transaction": ([], ALL, set()),
    "EDN": (
        '[{:db/id "n" :p/name "Ivan" :p/aka ["a" "b"]} [:db/retract "n" :p/aka "b"]]',
        ALL | {("n", "p/name", "Ivan"), ("n", "p/aka", "a")},
        {("n", "p/name", "Ivan", True), ("n", "p/aka", "a", True)},
    ),
}


@pytest.mark.parametrize(("tx", "expected", "changes"), CASES.values(), ids=CASES.keys())
async def test_transact(
    make_conn: MakeConn, tx: Any, expected: set[Any], changes: set[Any]
) -> None:
    conn, ids = await setup(make_conn)
    before = conn.db
    report = await conn.transact(bind(tx, ids))
    names = {v: k for k, v in ids.items()}
    names.update({v: k for k, v in report.tempids.items() if k != "db/current-tx"})
    assert await user_datoms(conn.db, names) == expected
    label = labeller(names)
    reported = {(*label(d.e, d.a, d.v), d.added) for d in report.tx_data if d.a != "db/txInstant"}
    assert reported == changes
    # tx_data is exactly the difference between db_before and db_after (one datom each)
    assert report.db_before == before
    assert len(report.tx_data) == len({(d.e, d.a, d.v) for d in report.tx_data})
    diff = await replica.diff(report.db_before, report.db_after)
    assert {(d.e, d.a, d.v, True) for d in diff.added} | {
        (d.e, d.a, d.v, False) for d in diff.retracted
    } == {(d.e, d.a, d.v, d.added) for d in report.tx_data}


BAD = {
    "a retraction of the wrong type": (
        [["db/retract", Id("ivan"), "p/age", "15"]],
        ValueTypeError,
        ("'p/age'", "'15'"),
    ),
    "an add to an unknown attribute": (
        [["db/add", Id("ivan"), "p/nope", 1]],
        UnknownAttribute,
        ("'p/nope'",),
    ),
    "a unique value another entity holds": (
        [["db/add", Id("ivan"), "p/email", "@p"]],
        UniqueConflict,
        ("p/email", "'@p'"),
    ),
    "one unique value for two new entities": (
        [{"p/name": "A", "p/email": "@x"}, {"p/name": "B", "p/email": "@x"}],
        UniqueConflict,
        ("p/email", "'@x'"),
    ),
    "an entity id beyond 128 bits": (
        [["db/retractEntity", 1 << 130]],
        EntityIdError,
        ("2**128",),
    ),
    "good data then a bad op": (
        [["db/add", Id("ivan"), "p/age", 99], ["db/add", Id("ivan"), "p/age", "x"]],
        ValueTypeError,
        ("'p/age'", "'x'"),
    ),
}


@pytest.mark.parametrize(("tx", "error", "fragments"), BAD.values(), ids=BAD.keys())
async def test_bad_transactions_write_nothing(
    make_conn: MakeConn, tx: Any, error: type[ReplicaError], fragments: tuple[str, ...]
) -> None:
    conn, ids = await setup(make_conn)
    reports: list[replica.TxReport] = []
    conn.listen(reports.append)
    commit, datoms = conn.db.commit_id, await all_datoms(conn.db)
    addresses = await conn.store.list_addresses()
    with pytest.raises(ReplicaError) as info:
        await conn.transact(bind(tx, ids))
    assert type(info.value) is error, repr(info.value)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert conn.db.commit_id == commit
    assert (await conn.refresh()).commit_id == commit
    assert await all_datoms(conn.db) == datoms
    assert await conn.store.list_addresses() == addresses  # not even an orphan node
    assert reports == []


# -- tx metadata and db/txInstant --------------------------------------------------------------


async def tx_entity(db: replica.DB, tx: int) -> dict[str, Any]:
    return {d.a: d.v for d in await db.datoms("eavt", tx)}


async def test_tx_meta_argument(make_conn: MakeConn) -> None:
    conn, ids = await setup(make_conn)
    meta = {"tx/source": "import", "tx/by": ids["ivan"]}
    report = await conn.transact([{"p/name": "New"}], tx_meta=meta)
    assert report.tx_meta == meta
    got = await tx_entity(conn.db, report.tx)
    assert got == {"tx/source": "import", "tx/by": ids["ivan"], "db/txInstant": got["db/txInstant"]}
    assert {(d.e, d.a) for d in report.tx_data if d.e == report.tx} == {
        (report.tx, "tx/source"),
        (report.tx, "tx/by"),
        (report.tx, "db/txInstant"),
    }
    # a lookup ref in the metadata
    report = await conn.transact([], tx_meta={"tx/by": ("p/email", "@p")})
    assert (await tx_entity(conn.db, report.tx))["tx/by"] == ids["petr"]


async def test_tx_meta_in_tx_data(make_conn: MakeConn) -> None:
    conn, ids = await setup(make_conn)
    report = await conn.transact(
        [
            {"db/id": "db/current-tx", "tx/source": "inline"},
            ["db/add", "datomic.tx", "tx/by", ids["petr"]],
            {"db/id": "n", "p/name": "N", "p/friend": "db/current-tx"},
        ]
    )
    got = await tx_entity(conn.db, report.tx)
    assert (got["tx/source"], got["tx/by"]) == ("inline", ids["petr"])
    assert [d.v for d in await conn.db.datoms("eavt", report.tempids["n"], "p/friend")] == [
        report.tx
    ]
    assert report.tx_meta is None


async def test_bad_tx_meta_writes_nothing(make_conn: MakeConn) -> None:
    conn, _ = await setup(make_conn)
    commit = conn.db.commit_id
    with pytest.raises(UnknownAttribute, match="'tx/nope'"):
        await conn.transact([{"p/name": "x"}], tx_meta={"tx/nope": 1})
    with pytest.raises(TxDataError, match="tx_meta"):
        await conn.transact([{"p/name": "x"}], tx_meta=[("tx/source", "x")])  # type: ignore[arg-type]
    with pytest.raises(ValueTypeError, match="'tx/source'"):
        await conn.transact([{"p/name": "x"}], tx_meta={"tx/source": 5})
    assert (await conn.refresh()).commit_id == commit


async def test_every_transaction_has_a_tx_instant(make_conn: MakeConn) -> None:
    conn, _ = await setup(make_conn)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    instants = []
    for i in range(3):
        report = await conn.transact([{"p/name": f"n{i}"}] if i else [])
        (d,) = [d for d in report.tx_data if d.e == report.tx and d.a == "db/txInstant"]
        assert d.added and d.tx == report.tx
        assert type(d.v) is dt.datetime and d.v.utcoffset() == dt.timedelta(0)
        assert (await tx_entity(conn.db, report.tx))["db/txInstant"] == d.v
        instants.append(d.v)
    assert start <= instants[0] <= instants[1] <= instants[2]
    assert instants[2] <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    # the tx entities are found through the index of db/txInstant
    txs = {d.e async for d in conn.db.datoms("aevt", "db/txInstant")}
    assert len(txs) == 5  # schema, setup and the three above


# -- EDN, with_tx, the report ------------------------------------------------------------------


async def test_edn_and_python_give_the_same_datoms(make_conn: MakeConn) -> None:
    conn, _ = await setup(make_conn)
    edn = await conn.transact(
        '[{:db/id "x" :p/name "Ivan" :p/aka ["a" "b"] :p/friend [:p/email "@p"]}]'
    )
    py = await conn.transact(
        [{"db/id": "x", "p/name": "Ivan", "p/aka": ["a", "b"], "p/friend": ("p/email", "@p")}]
    )

    async def of(report: replica.TxReport) -> set[tuple[str, Any]]:
        return {(d.a, d.v) for d in await conn.db.datoms("eavt", report.tempids["x"])}

    assert (
        await of(edn)
        == await of(py)
        == {
            ("p/name", "Ivan"),
            ("p/aka", "a"),
            ("p/aka", "b"),
            ("p/friend", (await conn.db.datoms("avet", "p/email", "@p"))[0].e),
        }
    )


async def test_with_tx_stores_nothing(make_conn: MakeConn) -> None:
    conn, ids = await setup(make_conn)
    db = conn.db
    addresses = await conn.store.list_addresses()
    heads = await conn.store.get_ref("branches/main")
    report = await replica.with_tx(
        db, [["db/add", ids["ivan"], "p/age", 16], {"db/id": "n", "p/name": "N"}]
    )
    assert report.db_before == db
    assert report.db_after.parent_commit_ids == (db.commit_id,)
    assert [d.v for d in await report.db_after.datoms("eavt", ids["ivan"], "p/age")] == [16]
    assert [d.v for d in await report.db_after.datoms("eavt", report.tempids["n"], "p/name")] == [
        "N"
    ]
    # EDN, on the same database
    edn = await replica.with_tx(db, '[[:db/retractEntity [:p/email "@p"]]]')
    assert await edn.db_after.datoms("eavt", ids["petr"]) == []
    assert [d.v for d in await edn.db_after.datoms("eavt", ids["ivan"], "p/friend")] == []
    # the store, the branch and the connection are untouched
    assert await conn.store.list_addresses() == addresses
    assert await conn.store.get_ref("branches/main") == heads
    assert conn.db == db and (await conn.refresh()) == db
    assert [d.v for d in await conn.db.datoms("eavt", ids["ivan"], "p/age")] == [15]
    # errors are raised as by transact
    with pytest.raises(UniqueConflict):
        await replica.with_tx(db, [["db/add", ids["ivan"], "p/email", "@p"]])


async def test_tx_report_fields(make_conn: MakeConn) -> None:
    conn, ids = await setup(make_conn)
    before = conn.db
    report = await conn.transact(
        [{"db/id": "n", "p/name": "N"}, ["db/add", ids["ivan"], "p/age", 16]]
    )
    assert report.db_before == before
    assert report.db_after == conn.db
    assert report.db_after.commit_id != before.commit_id
    assert report.db_after.parent_commit_ids == (before.commit_id,)
    assert report.db_after.max_tx == report.tx
    assert report.tempids["db/current-tx"] == report.tx
    assert set(report.tempids) == {"n", "db/current-tx"}
    assert isinstance(report.tx_data, tuple)
    assert all(isinstance(d, Datom) and d.tx == report.tx for d in report.tx_data)
    e, a, v, tx, added = report.tx_data[-1]
    assert (e, a, v, tx, added) == (ids["ivan"], "p/age", 16, report.tx, True)
    assert report.tx_meta is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.tx = 0  # type: ignore[misc]
    # the snapshots stay what they were
    assert [d.v for d in await report.db_before.datoms("eavt", ids["ivan"], "p/age")] == [15]
    assert [d.v for d in await report.db_after.datoms("eavt", ids["ivan"], "p/age")] == [16]


# -- listeners and reports() -------------------------------------------------------------------


async def test_listeners(make_conn: MakeConn) -> None:
    conn, _ = await setup(make_conn)
    first: list[replica.TxReport] = []
    second: list[replica.TxReport] = []
    key = conn.listen(first.append, key="test")
    assert key == "test"
    conn.listen(second.append)
    r1 = await conn.transact([{"p/name": "A"}], tx_meta={"tx/source": "one"})
    with pytest.raises(UnknownAttribute):
        await conn.transact([{"p/nope": 1}])
    r2 = await conn.transact([["db/add", -1, "p/name", "B"]])
    conn.unlisten("test")
    r3 = await conn.transact([{"p/name": "C"}])
    assert first == [r1, r2]
    assert second == [r1, r2, r3]
    assert first[0] is r1 and first[0].tx_meta == {"tx/source": "one"}
    conn.unlisten("never registered")


async def test_reports_stream(make_conn: MakeConn) -> None:
    conn, _ = await setup(make_conn)
    got: list[replica.TxReport] = []

    async def consume() -> None:
        async for report in conn.reports():
            got.append(report)
            if len(got) == 2:
                break

    sent = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            while not conn._streams:  # reports() subscribes when first iterated
                await anyio.lowlevel.checkpoint()
            sent.append(await conn.transact([{"p/name": "A"}]))
            with pytest.raises(ValueTypeError):
                await conn.transact([{"p/age": "old"}])
            sent.append(await conn.transact([{"p/name": "B"}]))
    assert got == sent
    # the finished subscription is gone: later transactions publish to nobody
    await conn.transact([{"p/name": "C"}])
    assert conn._streams == []


# -- load_entities -----------------------------------------------------------------------------


async def test_load_entities_in_batches(make_conn: MakeConn) -> None:
    conn, _ = await setup(make_conn)
    reports: list[replica.TxReport] = []
    conn.listen(reports.append)
    rows = ({"p/name": f"bulk{i}", "p/age": i} for i in range(25))
    assert await replica.load_entities(conn, rows, batch_size=10) == 25
    assert len(reports) == 3
    ages = {d.v for d in await conn.db.datoms("aevt", "p/age")}
    assert ages >= set(range(25))
    with pytest.raises(TxDataError):
        await replica.load_entities(conn, [], batch_size=0)
