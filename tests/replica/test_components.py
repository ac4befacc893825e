"""Component attributes (``db/isComponent``, DESIGN.md 5), after DataScript's
test/datascript/test/components.cljc: a component lives and dies with the entity that owns it.

The database of every case: ivan owns the component ``profile`` (a) and the components
``profiles`` (c, d); d owns e in turn; ivan has a plain ``friend``, petr, who is no component.
Each row is a transaction and every user datom of the database afterwards, as
``(label, attribute, value)``, refs labelled too; an entity the row creates without a tempid is
labelled by its ``p/email``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import replica
from replica import ReplicaError, SchemaError, TxDataError, ValueTypeError
from tests.replica._txtable import Id, MakeConn, assert_rejected, bind

SCHEMA = [
    {"db/ident": "p/name", "db/valueType": "db.type/string"},
    {"db/ident": "p/email", "db/valueType": "db.type/string"},
    {"db/ident": "p/profile", "db/valueType": "db.type/ref", "db/isComponent": True},
    {
        "db/ident": "p/profiles",
        "db/valueType": "db.type/ref",
        "db/cardinality": "db.cardinality/many",
        "db/isComponent": True,
    },
    {"db/ident": "p/friend", "db/valueType": "db.type/ref"},
]
SETUP = [
    {
        "db/id": "ivan",
        "p/name": "Ivan",
        "p/profile": "a",
        "p/profiles": ["c", "d"],
        "p/friend": "petr",
    },
    {"db/id": "a", "p/email": "@a"},
    {"db/id": "c", "p/email": "@c"},
    {"db/id": "d", "p/email": "@d", "p/profile": "e"},
    {"db/id": "e", "p/email": "@e"},
    {"db/id": "petr", "p/name": "Petr"},
]
IVAN = {
    ("ivan", "p/name", "Ivan"),
    ("ivan", "p/profile", "a"),
    ("ivan", "p/profiles", "c"),
    ("ivan", "p/profiles", "d"),
    ("ivan", "p/friend", "petr"),
}
A = {("a", "p/email", "@a")}
C = {("c", "p/email", "@c")}
D = {("d", "p/email", "@d"), ("d", "p/profile", "e")}
E = {("e", "p/email", "@e")}
PETR = {("petr", "p/name", "Petr")}
ALL = IVAN | A | C | D | E | PETR


async def user_datoms(db: replica.DB, names: Mapping[int, str]) -> set[tuple[str, str, Any]]:
    """Every p/* datom as (label, attribute, value); unlabelled entities by their email."""
    datoms = [d for d in await db.datoms("eavt") if d.a.startswith("p/")]
    emails = {d.e: d.v for d in datoms if d.a == "p/email"}

    def label(e: int) -> str:
        return names.get(e) or emails[e]

    refs = {"p/profile", "p/profiles", "p/friend"}
    return {(label(d.e), d.a, label(d.v) if d.a in refs else d.v) for d in datoms}


async def setup(make_conn: MakeConn) -> tuple[replica.Connection, dict[str, int]]:
    conn = await make_conn(SCHEMA)
    ids = {k: v for k, v in (await conn.transact(SETUP)).tempids.items() if k != "db/current-tx"}
    return conn, ids


CASES = {
    "a component of a component": (
        [["db/add", Id("a"), "p/profile", Id("c")]],
        ALL | {("a", "p/profile", "c")},
    ),
    "retractEntity takes the components along, recursively": (
        [["db/retractEntity", Id("ivan")]],
        PETR,
    ),
    "retractEntity of a component removes the owner's ref to it": (
        [["db.fn/retractEntity", Id("d")]],
        (ALL - D - E) - {("ivan", "p/profiles", "d")},
    ),
    "retractEntity does not follow a plain ref": (
        [["db/retractEntity", Id("petr")]],
        ALL - PETR - {("ivan", "p/friend", "petr")},
    ),
    "retractAttribute of a component attribute retracts the component": (
        [["db.fn/retractAttribute", Id("ivan"), "p/profile"]],
        ALL - A - {("ivan", "p/profile", "a")},
    ),
    "retractAttribute of a many component attribute retracts them all": (
        [["db/retractAttribute", Id("ivan"), "p/profiles"]],
        ALL - C - D - E - {("ivan", "p/profiles", "c"), ("ivan", "p/profiles", "d")},
    ),
    "retract without a value is retractAttribute": (
        [["db/retract", Id("ivan"), "p/profiles"]],
        ALL - C - D - E - {("ivan", "p/profiles", "c"), ("ivan", "p/profiles", "d")},
    ),
    "retract with a value retracts only the ref": (
        [["db/retract", Id("ivan"), "p/profiles", Id("d")]],
        ALL - {("ivan", "p/profiles", "d")},
    ),
    "retractAttribute of a plain ref leaves the entity": (
        [["db.fn/retractAttribute", Id("ivan"), "p/friend"]],
        ALL - {("ivan", "p/friend", "petr")},
    ),
    "a component cycle ends": (
        [["db/add", Id("e"), "p/profile", Id("ivan")], ["db/retractEntity", Id("ivan")]],
        PETR,
    ),
    "nested map: a new component": (
        [{"db/id": Id("petr"), "p/profile": {"p/email": "@new"}}],
        ALL | {("petr", "p/profile", "@new"), ("@new", "p/email", "@new")},
    ),
    "nested maps: new components of a many attribute": (
        [{"db/id": "oleg", "p/name": "Oleg", "p/profiles": [{"p/email": "@1"}, {"p/email": "@2"}]}],
        ALL
        | {
            ("oleg", "p/name", "Oleg"),
            ("oleg", "p/profiles", "@1"),
            ("oleg", "p/profiles", "@2"),
            ("@1", "p/email", "@1"),
            ("@2", "p/email", "@2"),
        },
    ),
    "nested map with a tempid": (
        [
            {"db/id": Id("petr"), "p/profile": {"db/id": "q", "p/email": "@q"}},
            ["db/add", "q", "p/name", "Q"],
        ],
        ALL | {("petr", "p/profile", "q"), ("q", "p/email", "@q"), ("q", "p/name", "Q")},
    ),
    "a new component retracted in its own transaction": (
        [{"db/id": "z", "p/name": "Z", "p/profile": {"p/email": "@z"}}, ["db/retractEntity", "z"]],
        ALL,
    ),
    "replacing a card-one component keeps the old entity": (
        [["db/add", Id("ivan"), "p/profile", Id("c")]],
        (ALL - {("ivan", "p/profile", "a")}) | {("ivan", "p/profile", "c")},
    ),
}


@pytest.mark.parametrize(("tx", "expected"), CASES.values(), ids=CASES.keys())
async def test_components(
    make_conn: MakeConn, tx: Any, expected: set[tuple[str, str, Any]]
) -> None:
    conn, ids = await setup(make_conn)
    assert await user_datoms(conn.db, {v: k for k, v in ids.items()}) == ALL
    report = await conn.transact(bind(tx, ids))
    names = {v: k for k, v in ids.items()}
    names.update({v: k for k, v in report.tempids.items() if k != "db/current-tx"})
    assert await user_datoms(conn.db, names) == expected


async def test_entity_touch_and_reverse_navigation(make_conn: MakeConn) -> None:
    """The entity API sees components as entities, and ``_profile`` leads back to the
    owner (DataScript's "touch" and "reverse navigation")."""
    conn, ids = await setup(make_conn)
    ivan = await conn.db.entity(ids["ivan"]).touch()
    assert ivan["p/profile"] == conn.db.entity(ids["a"])
    assert {x.eid for x in ivan["p/profiles"]} == {ids["c"], ids["d"]}
    # a component has one owner: its reverse ref is one entity, as in DataScript
    assert await conn.db.entity(ids["a"]).get("p/_profile") == conn.db.entity(ids["ivan"])
    assert await conn.db.entity(ids["e"]).get("p/_profile") == conn.db.entity(ids["d"])


async def test_retract_entity_tx_data(make_conn: MakeConn) -> None:
    """retractEntity reports every datom it retracts, the components' too, once each."""
    conn, ids = await setup(make_conn)
    report = await conn.transact([["db/retractEntity", ids["ivan"]]])
    names = {v: k for k, v in ids.items()}
    retracted = [(names[d.e], d.a, names.get(d.v, d.v)) for d in report.tx_data if not d.added]
    assert sorted(retracted) == sorted(IVAN | A | C | D | E)
    assert [d for d in report.tx_data if d.added] == [d for d in report.tx_data if d.e == report.tx]


BAD = {
    "a nested empty map": (
        [{"db/id": Id("petr"), "p/profile": {}}],
        TxDataError,
        ("tempid used only as a value", "{}"),
    ),
    "a nested map under a non-ref attribute": (
        [{"db/id": Id("petr"), "p/name": {"p/email": "@x"}}],
        replica.ValueTypeError,
        ("'p/name'",),
    ),
    "isComponent on a non-ref attribute": (
        [{"db/ident": "p/bad", "db/valueType": "db.type/string", "db/isComponent": True}],
        SchemaError,
        ("'p/bad'", "db/isComponent"),
    ),
    "isComponent not a boolean": (
        [{"db/ident": "p/bad", "db/valueType": "db.type/ref", "db/isComponent": "aaa"}],
        ValueTypeError,
        ("'aaa'", "db/isComponent"),
    ),
}


@pytest.mark.parametrize(("tx", "error", "fragments"), BAD.values(), ids=BAD.keys())
async def test_bad_component_data_is_rejected(
    make_conn: MakeConn, tx: Any, error: type[ReplicaError], fragments: tuple[str, ...]
) -> None:
    conn, ids = await setup(make_conn)
    await assert_rejected(conn, bind(tx, ids), error, *fragments)
