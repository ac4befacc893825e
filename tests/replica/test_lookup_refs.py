"""Lookup refs ``(attribute, value)`` and idents as entity ids in transactions (DESIGN.md 5),
after DataScript's test/datascript/test/lookup_refs.cljc.

Each row is a transaction on the database below and the datoms ivan (the first entity) holds
afterwards, as ``(attribute, value)`` with refs shown as labels. Lookup refs are resolved
against the state so far: an entity made earlier in the same transaction can be looked up.
Error rows: the error class, fragments of its message, and nothing written.

Where we differ from DataScript: a retraction (``db/retract``, ``db.fn/retractAttribute``,
``db/retractEntity``) through a lookup ref that finds nothing is LookupRefNotFound, as any other
use (DataScript ignores it); the transaction is refused rather than half-understood.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import replica
from replica import (
    EntityIdError,
    Keyword,
    LookupRefNotFound,
    ReplicaError,
    TxDataError,
    UnknownAttribute,
    ValueTypeError,
)
from tests.replica._txtable import Id, MakeConn, assert_rejected, bind

SCHEMA = [
    {"db/ident": "name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "email", "db/valueType": "db.type/string", "db/unique": "db.unique/value"},
    {"db/ident": "age", "db/valueType": "db.type/long"},
    {"db/ident": "friend", "db/valueType": "db.type/ref"},
    {
        "db/ident": "friends",
        "db/valueType": "db.type/ref",
        "db/cardinality": "db.cardinality/many",
    },
]
SETUP = [
    {"db/id": "ivan", "name": "Ivan", "email": "@1"},
    {"db/id": "petr", "name": "Petr", "email": "@2"},
    {"db/id": "oleg", "name": "Oleg"},
    {"db/id": "boss", "db/ident": "boss"},  # an ident entity: no attribute definition
]
IVAN = {("name", "Ivan"), ("email", "@1")}


async def setup(make_conn: MakeConn) -> tuple[replica.Connection, dict[str, int]]:
    conn = await make_conn(SCHEMA)
    ids = {k: v for k, v in (await conn.transact(SETUP)).tempids.items() if isinstance(k, str)}
    return conn, ids


async def entity(db: replica.DB, e: int, names: Mapping[int, str]) -> set[tuple[str, Any]]:
    """The datoms of ``e`` as (attribute, value), ref values as labels."""
    out = set()
    for d in await db.datoms("eavt", e):
        attr = db.schema.get(d.a)
        out.add((d.a, names.get(d.v, d.v) if attr is not None and attr.is_ref else d.v))
    return out


I = ("name", "Ivan")  # noqa: E741 - read as "Ivan"
P = ("name", "Petr")
O = ("name", "Oleg")  # noqa: E741

ADDS = {
    # additions
    "add: entity as lookup ref": ([["db/add", I, "age", 35]], IVAN | {("age", 35)}),
    "map: db/id as lookup ref": ([{"db/id": I, "age": 35}], IVAN | {("age", 35)}),
    "map: db/id as lookup ref by a unique value": (
        [{"db/id": ("email", "@1"), "age": 35}],
        IVAN | {("age", 35)},
    ),
    "add: ref value as lookup ref": (
        [["db/add", Id("ivan"), "friend", P]],
        IVAN | {("friend", "petr")},
    ),
    "map: ref value as lookup ref": (
        [{"db/id": Id("ivan"), "friend": P}],
        IVAN | {("friend", "petr")},
    ),
    "reverse ref with a lookup ref": (
        [{"db/id": Id("petr"), "_friend": I}],
        IVAN | {("friend", "petr")},
    ),
    "lookup refs see the state so far": (
        [["db/add", "new", "name", "Sergey"], ["db/add", I, "friend", ("name", "Sergey")]],
        IVAN | {("friend", "new")},
    ),
    "a renamed entity is found by its new name": (
        [["db/add", I, "name", "Ivan2"], ["db/add", ("name", "Ivan2"), "age", 2]],
        {("name", "Ivan2"), ("email", "@1"), ("age", 2)},
    ),
    "ident as entity and as ref value": (
        [
            ["db/add", Keyword("boss"), "friend", Id("ivan")],
            ["db/add", I, "friend", Keyword("boss")],
        ],
        IVAN | {("friend", "boss")},
    ),
    "lookup ref by db/ident": (
        [["db/add", I, "friend", ("db/ident", "boss")]],
        IVAN | {("friend", "boss")},
    ),
    # cas
    "cas: entity as lookup ref": (
        [["db/cas", I, "name", "Ivan", "Ivan2"]],
        {("name", "Ivan2"), ("email", "@1")},
    ),
    "cas: old value as lookup ref": (
        [
            ["db/add", Id("ivan"), "friend", Id("ivan")],
            ["db/cas", Id("ivan"), "friend", I, Id("petr")],
        ],
        IVAN | {("friend", "petr")},
    ),
    "cas: new value as lookup ref": (
        [
            ["db/add", Id("ivan"), "friend", Id("ivan")],
            ["db/cas", Id("ivan"), "friend", Id("ivan"), P],
        ],
        IVAN | {("friend", "petr")},
    ),
    # retractions
    "retract: entity as lookup ref": (
        [["db/add", Id("ivan"), "age", 35], ["db/retract", I, "age", 35]],
        IVAN,
    ),
    "retract: value as lookup ref": (
        [["db/add", Id("ivan"), "friend", Id("petr")], ["db/retract", Id("ivan"), "friend", P]],
        IVAN,
    ),
    "retractAttribute: entity as lookup ref": (
        [["db/add", Id("ivan"), "age", 35], ["db.fn/retractAttribute", I, "age"]],
        IVAN,
    ),
    "retractEntity: entity as lookup ref": ([["db.fn/retractEntity", I]], set()),
    "retractEntity: the lookup ref of a unique value": (
        [["db/retractEntity", ("email", "@1")]],
        set(),
    ),
    # cardinality many
    "many: add one lookup ref": (
        [["db/add", Id("ivan"), "friends", P]],
        IVAN | {("friends", "petr")},
    ),
    "many: add two lookup refs": (
        [["db/add", Id("ivan"), "friends", P], ["db/add", Id("ivan"), "friends", O]],
        IVAN | {("friends", "petr"), ("friends", "oleg")},
    ),
    "many: a lookup ref is one value, not two": (
        [{"db/id": Id("ivan"), "friends": P}],
        IVAN | {("friends", "petr")},
    ),
    "many: a list of one lookup ref": (
        [{"db/id": Id("ivan"), "friends": [P]}],
        IVAN | {("friends", "petr")},
    ),
    "many: a list of lookup refs": (
        [{"db/id": Id("ivan"), "friends": [P, O]}],
        IVAN | {("friends", "petr"), ("friends", "oleg")},
    ),
    "many: an id and a lookup ref": (
        [{"db/id": Id("ivan"), "friends": [Id("petr"), O]}],
        IVAN | {("friends", "petr"), ("friends", "oleg")},
    ),
    "many: a lookup ref and an id": (
        [{"db/id": Id("ivan"), "friends": [P, Id("oleg")]}],
        IVAN | {("friends", "petr"), ("friends", "oleg")},
    ),
    "many: reverse ref with a lookup ref": (
        [{"db/id": Id("petr"), "_friends": I}],
        IVAN | {("friends", "petr")},
    ),
    "many: reverse ref with a list of lookup refs": (
        [{"db/id": Id("petr"), "_friends": [I, O]}],
        IVAN | {("friends", "petr")},
    ),
    # EDN: a two-element vector whose first element is a keyword is a lookup ref
    "EDN: map, db/id and a list of one lookup ref": (
        '[{:db/id [:name "Ivan"] :friends [[:name "Petr"]]}]',
        IVAN | {("friends", "petr")},
    ),
    "EDN: map, a bare lookup ref for a cardinality-many ref": (
        '[{:db/id [:name "Ivan"] :friends [:name "Petr"]}]',
        IVAN | {("friends", "petr")},
    ),
    "EDN: add form": (
        '[[:db/add [:name "Ivan"] :friend [:name "Petr"]]]',
        IVAN | {("friend", "petr")},
    ),
    "EDN: reverse ref": (
        '[{:db/id [:name "Petr"] :_friends [:name "Ivan"]}]',
        IVAN | {("friends", "petr")},
    ),
    "EDN: ident": ('[[:db/add [:name "Ivan"] :friend :boss]]', IVAN | {("friend", "boss")}),
}


@pytest.mark.parametrize(("tx", "expected"), ADDS.values(), ids=ADDS.keys())
async def test_lookup_refs_in_transactions(
    make_conn: MakeConn, tx: Any, expected: set[tuple[str, Any]]
) -> None:
    conn, ids = await setup(make_conn)
    report = await conn.transact(bind(tx, ids))
    names = {eid: label for label, eid in ids.items()}
    names.update({eid: t for t, eid in report.tempids.items() if t != "db/current-tx"})
    assert await entity(conn.db, ids["ivan"], names) == expected
    # nobody else lost anything: petr and oleg keep their datoms
    assert await entity(conn.db, ids["petr"], names) >= {("name", "Petr"), ("email", "@2")}
    assert await entity(conn.db, ids["oleg"], names) >= {("name", "Oleg")}


BAD = {
    "map: db/id finds nothing": (
        [{"db/id": ("name", "Sergey"), "age": 10}],
        LookupRefNotFound,
        ("('name', 'Sergey')",),
    ),
    "add: entity finds nothing": (
        [["db/add", ("name", "Sergey"), "age", 10]],
        LookupRefNotFound,
        ("('name', 'Sergey')",),
    ),
    "add: ref value finds nothing": (
        [["db/add", Id("ivan"), "friend", ("name", "Sergey")]],
        LookupRefNotFound,
        ("('name', 'Sergey')",),
    ),
    "many: one of the values finds nothing": (
        [{"db/id": Id("ivan"), "friends": [P, ("name", "Sergey")]}],
        LookupRefNotFound,
        ("('name', 'Sergey')",),
    ),
    "reverse ref finds nothing": (
        [{"db/id": Id("petr"), "_friend": ("name", "Sergey")}],
        LookupRefNotFound,
        ("('name', 'Sergey')",),
    ),
    "retract: entity finds nothing": (
        [["db/retract", ("name", "Sergey"), "name", "Sergey"]],
        LookupRefNotFound,
        ("('name', 'Sergey')",),
    ),
    "retractAttribute: entity finds nothing": (
        [["db.fn/retractAttribute", ("name", "Sergey"), "name"]],
        LookupRefNotFound,
        ("('name', 'Sergey')",),
    ),
    "retractEntity: entity finds nothing": (
        [["db/retractEntity", ("name", "Sergey")]],
        LookupRefNotFound,
        ("('name', 'Sergey')",),
    ),
    "cas: entity finds nothing": (
        [["db/cas", ("name", "Sergey"), "age", None, 1]],
        LookupRefNotFound,
        ("('name', 'Sergey')",),
    ),
    "a nil lookup value finds nothing": (
        [["db/add", ("name", None), "age", 1]],
        LookupRefNotFound,
        ("('name', None)",),
    ),
    "a value retracted earlier in the tx finds nothing": (
        [["db/retract", Id("ivan"), "name", "Ivan"], ["db/add", I, "age", 1]],
        LookupRefNotFound,
        ("('name', 'Ivan')",),
    ),
    "lookup ref attribute is not unique": (
        [["db/add", ("age", 35), "age", 1]],
        TxDataError,
        ("age", "unique"),
    ),
    "lookup ref attribute is unknown": (
        [["db/add", ("nope", 1), "age", 1]],
        UnknownAttribute,
        ("'nope'",),
    ),
    "lookup ref of one element": (
        [["db/add", ("name",), "age", 1]],
        EntityIdError,
        ("('name',)",),
    ),
    "lookup ref of three elements": (
        [["db/add", ("name", "Ivan", "Petr"), "age", 1]],
        EntityIdError,
        ("('name', 'Ivan', 'Petr')",),
    ),
    "lookup value of the wrong type": (
        [["db/add", ("name", 1), "age", 1]],
        ValueTypeError,
        ("'name'", "1"),
    ),
    "a tempid inside a lookup ref of a ref attribute": (
        [["db/add", ("friend", "t"), "age", 1]],
        TxDataError,
        ("friend",),
    ),
    "an ident nobody has": (
        [["db/add", Keyword("nobody"), "age", 1]],
        EntityIdError,
        ("nobody",),
    ),
    "EDN: a missing lookup ref": (
        '[[:db/add [:name "Sergey"] :age 1]]',
        LookupRefNotFound,
        ("'Sergey'",),
    ),
}


@pytest.mark.parametrize(("tx", "error", "fragments"), BAD.values(), ids=BAD.keys())
async def test_bad_lookup_refs_are_rejected(
    make_conn: MakeConn, tx: Any, error: type[ReplicaError], fragments: tuple[str, ...]
) -> None:
    conn, ids = await setup(make_conn)
    await assert_rejected(conn, bind(tx, ids), error, *fragments)


async def test_lookup_refs_read_back_through_the_indexes(make_conn: MakeConn) -> None:
    """What the lookup refs wrote is in every index: eavt, aevt, avet and vaet agree."""
    conn, ids = await setup(make_conn)
    await conn.transact([{"db/id": I, "friends": [P, O]}, {"db/id": P, "friends": O}])
    db = conn.db
    i, p, o = ids["ivan"], ids["petr"], ids["oleg"]
    eavt = {(d.e, d.v) for d in await db.datoms("eavt", i, "friends")}
    aevt = {(d.e, d.v) for d in await db.datoms("aevt", "friends")}
    avet = {(d.e, d.v) for d in await db.datoms("avet", "friends", o)}
    vaet = {(d.e, d.v) for d in await db.datoms("vaet", o, "friends")}
    assert eavt == {(i, p), (i, o)}
    assert aevt == {(i, p), (i, o), (p, o)}
    assert avet == vaet == {(i, o), (p, o)}
