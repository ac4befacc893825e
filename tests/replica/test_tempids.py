"""Tempids (DESIGN.md 2 and 5): negative ints and strings name new entities within one
transaction, the tx entity is ``"db/current-tx"`` (also ``"datomic.tx"`` and the keyword
``:db/current-tx``), after DataScript's test-resolve-eid, test-resolve-eid-refs,
test-resolve-current-tx and test-tempid-ref-issue-295 (test/datascript/test/transact.cljc).

Each row: a transaction on an empty database (schema only), the datoms it makes as
``(label, attribute, value)`` with entity ids as the row's tempid labels (the tx entity is
"tx"), and which tempids are one entity. New ids are allocated in order of first appearance,
the tx id first; ``report.tempids`` maps every tempid (and "db/current-tx") to its id.

Errors: a tempid used only as a value (never given an attribute) is a TxDataError naming it,
as in DataScript; an id that is no entity id is an EntityIdError.
"""

from __future__ import annotations

from typing import Any

import pytest

from replica import EntityIdError, Keyword, ReplicaError, TxDataError
from tests.replica._txtable import MakeConn, all_datoms, assert_rejected

SCHEMA = [
    {"db/ident": "name", "db/valueType": "db.type/string"},
    {"db/ident": "age", "db/valueType": "db.type/long"},
    {"db/ident": "friend", "db/valueType": "db.type/ref", "db/cardinality": "db.cardinality/many"},
    {"db/ident": "ref", "db/valueType": "db.type/ref", "db/unique": "db.unique/identity"},
    {"db/ident": "created-at", "db/valueType": "db.type/ref"},
    {
        "db/ident": "multi",
        "db/valueType": "db.type/string",
        "db/cardinality": "db.cardinality/many",
    },
    {"db/ident": "prop", "db/valueType": "db.type/string"},
]
REFS = {"friend", "ref", "created-at"}


CASES: dict[str, tuple[Any, set[tuple[Any, str, Any]]]] = {
    "negative ints and strings": (
        [
            ["db/add", -1, "name", "Ivan"],
            ["db/add", -1, "age", 19],
            ["db/add", -2, "name", "Petr"],
            ["db/add", -2, "age", 22],
            ["db/add", "Serg", "name", "Sergey"],
            ["db/add", "Serg", "age", 30],
        ],
        {
            (-1, "name", "Ivan"),
            (-1, "age", 19),
            (-2, "name", "Petr"),
            (-2, "age", 22),
            ("Serg", "name", "Sergey"),
            ("Serg", "age", 30),
        },
    ),
    "a tempid as a ref value": (
        [["db/add", -1, "name", "Ivan"], ["db/add", -2, "friend", -1]],
        {(-1, "name", "Ivan"), (-2, "friend", -1)},
    ),
    "refs forwards, backwards and in a cycle": (
        [
            {"db/id": "s", "name": "Sergey", "friend": [-1, -2]},
            ["db/add", -1, "name", "Ivan"],
            ["db/add", -2, "name", "Petr"],
            ["db/add", "B", "name", "Boris"],
            ["db/add", "B", "friend", -3],
            ["db/add", -3, "name", "Oleg"],
            ["db/add", -3, "friend", "B"],
        ],
        {
            ("s", "name", "Sergey"),
            ("s", "friend", -1),
            ("s", "friend", -2),
            (-1, "name", "Ivan"),
            (-2, "name", "Petr"),
            ("B", "name", "Boris"),
            ("B", "friend", -3),
            (-3, "name", "Oleg"),
            (-3, "friend", "B"),
        },
    ),
    "a tempid as the value of a unique ref (issue-295)": (
        [["db/add", -1, "name", "Ivan"], ["db/add", -2, "name", "Petr"], ["db/add", -1, "ref", -2]],
        {(-1, "name", "Ivan"), (-1, "ref", -2), (-2, "name", "Petr")},
    ),
    "-1 and '-1' are two tempids": (
        [{"db/id": -1, "name": "A"}, {"db/id": "-1", "name": "B"}],
        {(-1, "name", "A"), ("-1", "name", "B")},
    ),
    "a map and an add of one tempid": (
        [{"db/id": "x", "name": "X"}, ["db/add", "x", "age", 1]],
        {("x", "name", "X"), ("x", "age", 1)},
    ),
    "the tx entity: every spelling": (
        [
            {"db/id": "x", "name": "X", "created-at": "db/current-tx"},
            {"db/id": "db/current-tx", "prop": "prop1"},
            ["db/add", "datomic.tx", "age", 2],
            ["db/add", -1, "name", "Y"],
            ["db/add", -1, "created-at", Keyword("db/current-tx")],
        ],
        {
            ("x", "name", "X"),
            ("x", "created-at", "tx"),
            ("tx", "prop", "prop1"),
            ("tx", "age", 2),
            (-1, "name", "Y"),
            (-1, "created-at", "tx"),
        },
    ),
    "EDN: the keyword :db/current-tx": (
        '[{:db/id :db/current-tx :prop "p"} {:db/id "x" :created-at :db/current-tx :name "X"}]',
        {("tx", "prop", "p"), ("x", "created-at", "tx"), ("x", "name", "X")},
    ),
    "EDN: negative ints and strings": (
        '[[:db/add -1 :name "A"] {:db/id "b" :name "B" :friend [-1]}]',
        {(-1, "name", "A"), ("b", "name", "B"), ("b", "friend", -1)},
    ),
    "your own ids below 2**64": (
        [["db/add", 7, "name", "Seven"], {"db/id": 8, "friend": 7}],
        {(7, "name", "Seven"), (8, "friend", 7)},
    ),
    "nil entries are skipped, as in DataScript": (
        [["db/add", -1, "name", "A"], None, ["db/add", -2, "name", "B"]],
        {(-1, "name", "A"), (-2, "name", "B")},
    ),
}


@pytest.mark.parametrize(("tx", "expected"), CASES.values(), ids=CASES.keys())
async def test_tempids(make_conn: MakeConn, tx: Any, expected: set[tuple[Any, str, Any]]) -> None:
    conn = await make_conn(SCHEMA)
    before = await all_datoms(conn.db)
    report = await conn.transact(tx)
    tempids = dict(report.tempids)
    assert tempids.pop("db/current-tx") == report.tx
    labels: dict[int, Any] = {report.tx: "tx"}
    for label, eid in tempids.items():
        if label in ("datomic.tx", "db/current-tx"):
            assert eid == report.tx
            continue
        assert eid not in labels, f"{label} and {labels[eid]} are one entity"
        labels[eid] = label
    # the tempids are exactly those of the transaction, each a new entity
    used = {e for (e, _, _) in expected} | {v for (_, a, v) in expected if a in REFS}
    assert set(labels.values()) == (used - {7, 8}) | {"tx"}
    labels.update({7: 7, 8: 8})
    got = {
        (labels[e], a, labels[v] if a in REFS else v)
        for (e, a, v) in await all_datoms(conn.db) - before
        if a != "db/txInstant"
    }
    assert got == expected
    new = [eid for eid in labels if eid > 1 << 64]
    assert all(eid >> 64 == conn.replica_id for eid in new)


async def test_ids_follow_first_appearance(make_conn: MakeConn) -> None:
    """The tx id comes first, then tempids in order of first appearance: as an entity or as
    a value, in maps, nested maps and operations alike."""
    conn = await make_conn(SCHEMA)
    report = await conn.transact(
        [
            {"db/id": "a", "name": "A", "friend": ["c", {"db/id": "b", "name": "B"}]},
            ["db/add", "c", "name", "C"],
            {"name": "no tempid"},
            ["db/add", -9, "name", "D"],
        ]
    )
    t = report.tempids
    anon = (await conn.db.datoms("avet", "name", "no tempid"))[0].e
    assert report.tx < t["a"] < t["c"] < t["b"] < anon < t[-9]


async def test_tempids_are_scoped_to_their_transaction(make_conn: MakeConn) -> None:
    conn = await make_conn(SCHEMA)
    first = await conn.transact([{"db/id": -1, "name": "A"}, {"db/id": "x", "name": "X"}])
    second = await conn.transact([{"db/id": -1, "name": "B"}, {"db/id": "x", "name": "Y"}])
    assert first.tempids[-1] != second.tempids[-1]
    assert first.tempids["x"] != second.tempids["x"]
    assert first.tx != second.tx
    assert second.tempids["db/current-tx"] == second.tx
    names = {d.v for d in await conn.db.datoms("aevt", "name")}
    assert names == {"A", "B", "X", "Y"}


async def test_maps_without_db_id_are_new_entities(make_conn: MakeConn) -> None:
    conn = await make_conn(SCHEMA)
    report = await conn.transact([{"name": "A"}, {"name": "A"}, {"age": 1}])
    assert set(report.tempids) == {"db/current-tx"}
    assert len({d.e for d in report.tx_data if d.e != report.tx}) == 3


BAD = {
    "a tempid only as a ref value": (
        [["db/add", -1, "friend", -2]],
        TxDataError,
        ("used only as a value", "-2"),
    ),
    "a tempid only as a ref value in a map": (
        [{"db/id": -1, "friend": -2}],
        TxDataError,
        ("used only as a value", "-2"),
    ),
    "a string tempid only as a ref value": (
        [{"db/id": "a", "friend": ["b"]}],
        TxDataError,
        ("used only as a value", "'b'"),
    ),
    "a map with only db/id gives no attribute": (
        [{"db/id": -1}, ["db/add", -2, "friend", -1]],
        TxDataError,
        ("used only as a value", "-1"),
    ),
    "an empty many value gives no attribute": (
        [{"db/id": -1, "multi": []}, ["db/add", -2, "friend", -1]],
        TxDataError,
        ("used only as a value", "-1"),
    ),
    "a tempid only retracted": (
        [["db/retract", -1, "name", "Ivan"]],
        TxDataError,
        ("-1",),
    ),
    "a tempid only retractEntity'd": (
        [["db/retractEntity", "gone"]],
        TxDataError,
        ("'gone'",),
    ),
    "an id of 2**128": (
        [["db/add", 1 << 128, "name", "X"]],
        EntityIdError,
        (str(1 << 128), "2**128"),
    ),
    "a boolean id": ([["db/add", True, "name", "X"]], EntityIdError, ("True",)),
    "a nil id": ([["db/add", None, "name", "X"]], EntityIdError, ("None",)),
    "a float id": ([{"db/id": 1.5, "name": "X"}], EntityIdError, ("1.5",)),
    "a map as id": ([["db/add", {}, "name", "X"]], EntityIdError, ("{}",)),
    "a float as a ref value": (
        [["db/add", -1, "friend", 2.5], ["db/add", -1, "name", "X"]],
        EntityIdError,
        ("2.5",),
    ),
    "a huge ref value": (
        [["db/add", -1, "friend", 1 << 200], ["db/add", -1, "name", "X"]],
        EntityIdError,
        ("2**128",),
    ),
}


@pytest.mark.parametrize(("tx", "error", "fragments"), BAD.values(), ids=BAD.keys())
async def test_bad_ids_are_rejected(
    make_conn: MakeConn, tx: Any, error: type[ReplicaError], fragments: tuple[str, ...]
) -> None:
    conn = await make_conn(SCHEMA)
    await conn.transact([{"name": "someone"}])
    await assert_rejected(conn, tx, error, *fragments)
