"""``db/cas`` (alias ``db.fn/cas``): compare-and-swap of a cardinality-one value (DESIGN.md 5),
after DataScript's test-db-fn-cas (test/datascript/test/transact.cljc).

Each row: a transaction on a database where ivan weighs 200, and the values of ivan's
attributes afterwards. ``None`` as the old value means "no value yet". A cas sees the state so
far in its transaction, so two cas in a row chain. A failed cas is CasFailed naming the
entity, the attribute, the expected and the current value; nothing is written.

Where we differ from DataScript: cas needs a cardinality-one attribute (as in Datomic); on a
cardinality-many attribute it is a TxDataError (DataScript adds the new value if the old one
is among the values).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import replica
from replica import (
    CasFailed,
    EntityIdError,
    Keyword,
    LookupRefNotFound,
    ReplicaError,
    TxDataError,
    UniqueConflict,
    UnknownAttribute,
    ValueTypeError,
)
from tests.replica._txtable import Id, MakeConn, assert_rejected, bind

SCHEMA = [
    {"db/ident": "p/name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "p/weight", "db/valueType": "db.type/long"},
    {"db/ident": "p/age", "db/valueType": "db.type/long"},
    {"db/ident": "p/score", "db/valueType": "db.type/double"},
    {"db/ident": "p/kind", "db/valueType": "db.type/keyword"},
    {"db/ident": "p/friend", "db/valueType": "db.type/ref"},
    {
        "db/ident": "p/label",
        "db/valueType": "db.type/keyword",
        "db/cardinality": "db.cardinality/many",
    },
]
SETUP = [
    {"db/id": "ivan", "p/name": "Ivan", "p/weight": 200, "p/kind": "human", "p/score": 1.5},
    {"db/id": "petr", "p/name": "Petr"},
]
IVAN = {"p/name": "Ivan", "p/weight": 200, "p/kind": Keyword("human"), "p/score": 1.5}


async def setup(make_conn: MakeConn) -> tuple[replica.Connection, dict[str, int]]:
    conn = await make_conn(SCHEMA)
    ids = {k: v for k, v in (await conn.transact(SETUP)).tempids.items() if k != "db/current-tx"}
    return conn, ids


async def values(db: replica.DB, e: int, names: Mapping[int, str]) -> dict[str, Any]:
    """Ivan's values by attribute (cardinality one only here); refs as labels."""
    out: dict[str, Any] = {}
    for d in await db.datoms("eavt", e):
        out[d.a] = names[d.v] if d.a == "p/friend" else d.v
    return out


CASES = {
    "cas": ([["db/cas", Id("ivan"), "p/weight", 200, 300]], {**IVAN, "p/weight": 300}),
    "db.fn/cas is the same": (
        [["db.fn/cas", Id("ivan"), "p/weight", 200, 300]],
        {**IVAN, "p/weight": 300},
    ),
    "cas to the same value": ([["db/cas", Id("ivan"), "p/weight", 200, 200]], IVAN),
    "cas from nothing": ([["db/cas", Id("ivan"), "p/age", None, 42]], {**IVAN, "p/age": 42}),
    "two cas in a row chain": (
        [
            ["db/cas", Id("ivan"), "p/weight", 200, 300],
            ["db/cas", Id("ivan"), "p/weight", 300, 400],
        ],
        {**IVAN, "p/weight": 400},
    ),
    "cas sees an add earlier in the tx": (
        [["db/add", Id("ivan"), "p/age", 1], ["db/cas", Id("ivan"), "p/age", 1, 2]],
        {**IVAN, "p/age": 2},
    ),
    "cas sees a retraction earlier in the tx": (
        [["db/retract", Id("ivan"), "p/weight", 200], ["db/cas", Id("ivan"), "p/weight", None, 1]],
        {**IVAN, "p/weight": 1},
    ),
    "cas on a lookup ref": (
        [["db/cas", ("p/name", "Ivan"), "p/weight", 200, 201]],
        {**IVAN, "p/weight": 201},
    ),
    "cas of the identity itself": (
        [["db/cas", Id("ivan"), "p/name", "Ivan", "Ivan2"]],
        {**IVAN, "p/name": "Ivan2"},
    ),
    "cas with an int for a double": (
        [["db/cas", Id("ivan"), "p/score", 1.5, 2]],
        {**IVAN, "p/score": 2.0},
    ),
    "cas with keywords given as strings": (
        [["db/cas", Id("ivan"), "p/kind", "human", "robot"]],
        {**IVAN, "p/kind": Keyword("robot")},
    ),
    "cas of a ref: ids": (
        [
            ["db/add", Id("ivan"), "p/friend", Id("ivan")],
            ["db/cas", Id("ivan"), "p/friend", Id("ivan"), Id("petr")],
        ],
        {**IVAN, "p/friend": "petr"},
    ),
    "cas of a ref: lookup refs": (
        [
            ["db/add", Id("ivan"), "p/friend", Id("ivan")],
            ["db/cas", Id("ivan"), "p/friend", ("p/name", "Ivan"), ("p/name", "Petr")],
        ],
        {**IVAN, "p/friend": "petr"},
    ),
    "cas of a ref from nothing": (
        [["db/cas", Id("ivan"), "p/friend", None, ("p/name", "Petr")]],
        {**IVAN, "p/friend": "petr"},
    ),
    "cas on a new entity from nothing": (
        [
            ["db/add", "n", "p/name", "N"],
            ["db/cas", "n", "p/age", None, 1],
            ["db/add", Id("ivan"), "p/friend", "n"],
        ],
        {**IVAN, "p/friend": "n"},
    ),
    "EDN": (
        '[[:db/cas [:p/name "Ivan"] :p/kind :human :robot]]',
        {**IVAN, "p/kind": Keyword("robot")},
    ),
}


@pytest.mark.parametrize(("tx", "expected"), CASES.values(), ids=CASES.keys())
async def test_cas(make_conn: MakeConn, tx: Any, expected: dict[str, Any]) -> None:
    conn, ids = await setup(make_conn)
    report = await conn.transact(bind(tx, ids))
    names = {v: k for k, v in {**ids, **report.tempids}.items()}
    assert await values(conn.db, ids["ivan"], names) == expected


BAD = {
    "the old value is not the current one": (
        [["db/cas", Id("ivan"), "p/weight", 100, 300]],
        CasFailed,
        ("p/weight", "expected 100", "current value is 200"),
    ),
    "expecting nothing, there is a value": (
        [["db/cas", Id("ivan"), "p/weight", None, 300]],
        CasFailed,
        ("p/weight", "expected None", "current value is 200"),
    ),
    "expecting a value, there is none": (
        [["db/cas", Id("ivan"), "p/age", 1, 2]],
        CasFailed,
        ("p/age", "expected 1", "current value is None"),
    ),
    "the second cas of a chain sees the first": (
        [
            ["db/cas", Id("ivan"), "p/weight", 200, 300],
            ["db/cas", Id("ivan"), "p/weight", 200, 400],
        ],
        CasFailed,
        ("expected 200", "current value is 300"),
    ),
    "a cas after a retraction": (
        [["db/retract", Id("ivan"), "p/weight", 200], ["db/cas", Id("ivan"), "p/weight", 200, 1]],
        CasFailed,
        ("expected 200", "current value is None"),
    ),
    "a double is not equal to another double": (
        [["db/cas", Id("ivan"), "p/score", 1.25, 2.0]],
        CasFailed,
        ("expected 1.25", "current value is 1.5"),
    ),
    "a ref that is not the current one": (
        [
            ["db/add", Id("ivan"), "p/friend", Id("ivan")],
            ["db/cas", Id("ivan"), "p/friend", ("p/name", "Petr"), Id("ivan")],
        ],
        CasFailed,
        ("p/friend",),
    ),
    "a cardinality-many attribute": (
        [["db/cas", Id("ivan"), "p/label", "x", "y"]],
        TxDataError,
        ("p/label", "cardinality-one"),
    ),
    "too few arguments": (
        [["db/cas", Id("ivan"), "p/weight", 200]],
        TxDataError,
        ("db/cas", "old value, new value"),
    ),
    "too many arguments": (
        [["db.fn/cas", Id("ivan"), "p/weight", 200, 300, 400]],
        TxDataError,
        ("db.fn/cas",),
    ),
    "an unknown attribute": (
        [["db/cas", Id("ivan"), "p/nope", 1, 2]],
        UnknownAttribute,
        ("'p/nope'",),
    ),
    "a new value of the wrong type": (
        [["db/cas", Id("ivan"), "p/weight", 200, "heavy"]],
        ValueTypeError,
        ("'heavy'", "'p/weight'"),
    ),
    "an old value of the wrong type": (
        [["db/cas", Id("ivan"), "p/weight", "light", 300]],
        ValueTypeError,
        ("'light'", "'p/weight'"),
    ),
    "a nil new value": (
        [["db/cas", Id("ivan"), "p/weight", 200, None]],
        TxDataError,
        ("p/weight", "nil"),
    ),
    "a new value that breaks uniqueness": (
        [["db/cas", Id("ivan"), "p/name", "Ivan", "Petr"]],
        UniqueConflict,
        ("p/name", "'Petr'"),
    ),
    "a lookup ref that finds nothing": (
        [["db/cas", ("p/name", "Nobody"), "p/weight", 200, 300]],
        LookupRefNotFound,
        ("'Nobody'",),
    ),
    "a tempid only used by the cas": (
        [["db/cas", "t", "p/weight", None, 300]],
        TxDataError,
        ("tempid", "'t'"),
    ),
    "a bad entity": (
        [["db/cas", 1.5, "p/weight", 200, 300]],
        EntityIdError,
        ("1.5",),
    ),
}


@pytest.mark.parametrize(("tx", "error", "fragments"), BAD.values(), ids=BAD.keys())
async def test_failed_cas_writes_nothing(
    make_conn: MakeConn, tx: Any, error: type[ReplicaError], fragments: tuple[str, ...]
) -> None:
    conn, ids = await setup(make_conn)
    await assert_rejected(conn, bind(tx, ids), error, *fragments)


async def test_cas_failed_carries_the_facts(make_conn: MakeConn) -> None:
    conn, ids = await setup(make_conn)
    with pytest.raises(CasFailed) as info:
        await conn.transact([["db/cas", ids["ivan"], "p/weight", 100, 300]])
    err = info.value
    assert (err.entity, err.attribute, err.expected, err.current) == (
        ids["ivan"],
        "p/weight",
        100,
        200,
    )
    assert str(ids["ivan"]) in str(err)


async def test_cas_serialises_two_connections(make_conn: MakeConn) -> None:
    """Two connections read weight 200 and both cas 200 -> x: exactly one wins, the other
    fails on the value the first wrote (the transaction is recomputed on the new head)."""
    conn, ids = await setup(make_conn)
    other = await replica.connect(conn.url)
    try:
        await conn.transact([["db/cas", ids["ivan"], "p/weight", 200, 300]])
        with pytest.raises(CasFailed) as info:
            await other.transact([["db/cas", ids["ivan"], "p/weight", 200, 400]])
        assert info.value.current == 300
        await other.transact([["db/cas", ids["ivan"], "p/weight", 300, 400]])
        assert [
            d.v for d in await (await conn.refresh()).datoms("eavt", ids["ivan"], "p/weight")
        ] == [400]
    finally:
        await other.aclose()
