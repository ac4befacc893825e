"""Upserts through ``db.unique/identity`` attributes (DESIGN.md 5), after DataScript's
test/datascript/test/upsert.cljc, translated to our Python mapping and a Datahike schema.

The database of every case: four people who identify by ``name`` and ``email`` and point at
each other through the identity ref ``ref`` (petr -> dima -> olga -> ivan). Each row is a
transaction and the datoms that the entities it names or touches hold afterwards, as
``(label, attribute, value)``: a label is a setup tempid ("ivan"), a tempid of the case, or
(for an entity the case creates without a tempid) its ``name``. ``tempids`` lists what the
case's tempids resolved to, by label. Error rows give the error class and fragments its
message must contain; nothing may be written.

Where we differ from DataScript (docs/decisions.md): a map whose explicit ``db/id`` is not the
entity holding its identity value fails with UniqueConflict (DataScript: "Conflicting
upsert"), and tempids resolve against the database before the transaction, so a tempid does
not upsert to an entity that an earlier op of the same transaction gave that value by id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

import replica
from replica import EntityIdError, ReplicaError, UniqueConflict, UpsertConflict
from tests.replica._txtable import Id, MakeConn, all_datoms, assert_rejected, bind

SCHEMA = [
    {"db/ident": "name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "email", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {
        "db/ident": "slugs",
        "db/valueType": "db.type/string",
        "db/unique": "db.unique/identity",
        "db/cardinality": "db.cardinality/many",
    },
    {"db/ident": "ref", "db/valueType": "db.type/ref", "db/unique": "db.unique/identity"},
    {"db/ident": "friend", "db/valueType": "db.type/ref"},
    {"db/ident": "age", "db/valueType": "db.type/long"},
    {"db/ident": "likes", "db/valueType": "db.type/string"},
]
SETUP = [
    {"db/id": "ivan", "name": "Ivan", "email": "@1"},
    {"db/id": "petr", "name": "Petr", "email": "@2", "ref": "dima"},
    {"db/id": "dima", "name": "Dima", "email": "@3", "ref": "olga"},
    {"db/id": "olga", "name": "Olga", "email": "@4", "ref": "ivan"},
]
IVAN = {("ivan", "name", "Ivan"), ("ivan", "email", "@1")}
PETR = {("petr", "name", "Petr"), ("petr", "email", "@2"), ("petr", "ref", "dima")}
DIMA = {("dima", "name", "Dima"), ("dima", "email", "@3"), ("dima", "ref", "olga")}
OLGA = {("olga", "name", "Olga"), ("olga", "email", "@4"), ("olga", "ref", "ivan")}


async def labelled(
    db: replica.DB, names: Mapping[int, str], eids: set[int]
) -> set[tuple[str, str, Any]]:
    """The datoms of ``eids`` as (label, attribute, value); refs are labelled too. An entity
    without a label is named by its ``name``."""

    async def label(e: int) -> str:
        if e in names:
            return names[e]
        found = [d.v for d in await db.datoms("eavt", e, "name")]
        assert found, f"entity {e} has neither a label nor a name"
        return str(found[0])

    out = set()
    for e in eids:
        for d in await db.datoms("eavt", e):
            attr = db.schema.get(d.a)
            v = await label(d.v) if attr is not None and attr.is_ref else d.v
            out.add((await label(e), d.a, v))
    return out


@dataclass
class Case:
    tx: Any
    datoms: set[tuple[str, str, Any]] = field(default_factory=set)
    tempids: dict[Any, str] = field(default_factory=dict)
    pre: list[Any] = field(default_factory=list)  # transacted after the setup


CASES = {
    "upsert, no tempid": Case([{"name": "Ivan", "age": 35}], IVAN | {("ivan", "age", 35)}),
    "upsert by 2 attrs, no tempid": Case(
        [{"name": "Ivan", "email": "@1", "age": 35}], IVAN | {("ivan", "age", 35)}
    ),
    "upsert with tempid": Case(
        [{"db/id": -1, "name": "Ivan", "age": 35}], IVAN | {("ivan", "age", 35)}, {-1: "ivan"}
    ),
    "upsert with string tempid, map and add forms": Case(
        [
            {"db/id": "1", "name": "Ivan", "age": 35},
            ["db/add", "2", "name", "Oleg"],
            ["db/add", "2", "email", "@2"],
        ],
        IVAN
        | {("ivan", "age", 35)}
        | (PETR - {("petr", "name", "Petr")})
        | {("petr", "name", "Oleg")},
        {"1": "ivan", "2": "petr"},
    ),
    "upsert by 2 attrs with tempid": Case(
        [{"db/id": -1, "name": "Ivan", "email": "@1", "age": 35}],
        IVAN | {("ivan", "age", 35)},
        {-1: "ivan"},
    ),
    "one tempid twice: both maps upsert": Case(
        [{"db/id": -1, "name": "Ivan", "age": 35}, {"db/id": -1, "name": "Ivan", "age": 36}],
        IVAN | {("ivan", "age", 36)},
        {-1: "ivan"},
    ),
    "two tempids upsert to one entity": Case(
        [{"db/id": -1, "name": "Ivan", "age": 35}, {"db/id": -2, "name": "Ivan", "age": 36}],
        IVAN | {("ivan", "age", 36)},
        {-1: "ivan", -2: "ivan"},
    ),
    "upsert with existing id": Case(
        [{"db/id": Id("ivan"), "name": "Ivan", "age": 35}], IVAN | {("ivan", "age", 35)}
    ),
    "upsert by 2 attrs with existing id": Case(
        [{"db/id": Id("ivan"), "name": "Ivan", "email": "@1", "age": 35}],
        IVAN | {("ivan", "age", 35)},
    ),
    "upsert by 2 attrs with existing id as lookup ref": Case(
        [{"db/id": ("name", "Ivan"), "name": "Ivan", "email": "@1", "age": 35}],
        IVAN | {("ivan", "age", 35)},
    ),
    "upsert by a value nobody holds is an update": Case(
        [{"name": "Ivan", "email": "@5", "age": 35}],
        {("ivan", "name", "Ivan"), ("ivan", "email", "@5"), ("ivan", "age", 35)},
    ),
    "upsert over intermediate db: two maps, one new entity": Case(
        [{"name": "Igor", "age": 35}, {"name": "Igor", "age": 36}],
        {("Igor", "name", "Igor"), ("Igor", "age", 36)},
    ),
    "upsert over intermediate db, one tempid": Case(
        [{"db/id": -1, "name": "Igor", "age": 35}, {"db/id": -1, "name": "Igor", "age": 36}],
        {("Igor", "name", "Igor"), ("Igor", "age", 36)},
        {-1: "Igor"},
    ),
    "upsert over intermediate db, two tempids": Case(
        [{"db/id": -1, "name": "Igor", "age": 35}, {"db/id": -2, "name": "Igor", "age": 36}],
        {("Igor", "name", "Igor"), ("Igor", "age", 36)},
        {-1: "Igor", -2: "Igor"},
    ),
    "tempids sharing a new value by the add form (issue-285)": Case(
        [
            ["db/add", -1, "age", 42],
            ["db/add", -2, "likes", "Pizza"],
            ["db/add", -1, "name", "Bob"],
            ["db/add", -2, "name", "Bob"],
        ],
        {("Bob", "name", "Bob"), ("Bob", "age", 42), ("Bob", "likes", "Pizza")},
        {-1: "Bob", -2: "Bob"},
    ),
    "unique cardinality-many values are added": Case(
        [{"name": "Ivan", "slugs": "ivan1"}, {"name": "Petr", "slugs": "petr1"}],
        IVAN | PETR | {("ivan", "slugs", "ivan1"), ("petr", "slugs", "petr1")},
    ),
    "upsert by one of several cardinality-many values": Case(
        [{"name": "Ivan", "slugs": ["ivan1", "ivan2"]}],
        IVAN | {("ivan", "slugs", "ivan1"), ("ivan", "slugs", "ivan2")},
        pre=[{"name": "Ivan", "slugs": "ivan1"}],
    ),
    "upsert by a cardinality-many value alone": Case(
        [{"slugs": "ivan1", "age": 40}],
        IVAN | {("ivan", "slugs", "ivan1"), ("ivan", "age", 40)},
        pre=[{"name": "Ivan", "slugs": "ivan1"}],
    ),
    "upsert by ref (petr -> dima)": Case(
        [{"ref": Id("dima"), "age": 36}], PETR | {("petr", "age", 36)}
    ),
    "upsert by ref (olga -> ivan)": Case(
        [{"ref": Id("ivan"), "age": 38}], OLGA | {("olga", "age", 38)}
    ),
    "upsert by lookup ref (dima -> olga)": Case(
        [{"ref": ("name", "Olga"), "age": 37}], DIMA | {("dima", "age", 37)}
    ),
    "a tempid ref value does not upsert (issue-464)": Case(
        [{"db/id": -1, "name": "Igor"}, {"db/id": -2, "name": "Anna", "ref": -1}],
        {("Igor", "name", "Igor"), ("Anna", "name", "Anna"), ("Anna", "ref", "Igor")},
        {-1: "Igor", -2: "Anna"},
    ),
    "a string tempid ref value does not upsert (issue-464)": Case(
        [{"db/id": "A", "name": "Igor"}, {"db/id": "B", "name": "Anna", "ref": "A"}],
        {("A", "name", "Igor"), ("B", "name", "Anna"), ("B", "ref", "A")},
        {"A": "A", "B": "B"},
    ),
    "a ref to a tempid that upserts (issue-403), maps": Case(
        [{"db/id": "user", "name": "Ivan"}, {"db/id": "n", "age": 36, "friend": "user"}],
        IVAN | {("n", "age", 36), ("n", "friend", "ivan")},
        {"user": "ivan", "n": "n"},
    ),
    "a ref to a tempid that upserts (issue-403), add form": Case(
        [["db/add", "user", "name", "Ivan"], {"db/id": "n", "age": 36, "friend": "user"}],
        IVAN | {("n", "age", 36), ("n", "friend", "ivan")},
        {"user": "ivan", "n": "n"},
    ),
    "a ref to a tempid that upserts (issue-403), negative tempid": Case(
        [["db/add", -1, "name", "Ivan"], {"db/id": "n", "age": 36, "friend": -1}],
        IVAN | {("n", "age", 36), ("n", "friend", "ivan")},
        {-1: "ivan", "n": "n"},
    ),
    "refs to tempids that upsert later in the tx (issue-472)": Case(
        [
            {"db/id": Id("dima"), "friend": "A"},
            {"db/id": Id("olga"), "friend": "B"},
            {"db/id": "A", "name": "Ivan"},
            {"db/id": "B", "name": "Petr"},
        ],
        IVAN | PETR | DIMA | OLGA | {("dima", "friend", "ivan"), ("olga", "friend", "petr")},
        {"A": "ivan", "B": "petr"},
    ),
    "a tempid first used without its identity (redefining ids)": Case(
        [{"db/id": -1, "age": 35}, {"db/id": -1, "name": "Ivan", "age": 36}],
        IVAN | {("ivan", "age", 36)},
        {-1: "ivan"},
    ),
    "add form: identity first": Case(
        [["db/add", -1, "name", "Ivan"], ["db/add", -1, "age", 12]],
        IVAN | {("ivan", "age", 12)},
        {-1: "ivan"},
    ),
    "add form: identity last": Case(
        [["db/add", -1, "age", 12], ["db/add", -1, "name", "Ivan"]],
        IVAN | {("ivan", "age", 12)},
        {-1: "ivan"},
    ),
    "an upserted tempid as a ref value (issue-363)": Case(
        [["db/add", -1, "name", "Ivan"], ["db/add", -2, "friend", -1], ["db/add", -2, "age", 1]],
        IVAN | {("n", "friend", "ivan"), ("n", "age", 1)},
        {-1: "ivan", -2: "n"},
    ),
    "an EDN upsert": Case(
        '[{:db/id "x" :name "Ivan" :age 35}]',
        IVAN | {("ivan", "age", 35)},
        {"x": "ivan"},
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_upsert(make_conn: MakeConn, case: Case) -> None:
    conn = await make_conn(SCHEMA)
    ids = dict((await conn.transact(SETUP)).tempids)
    if case.pre:
        await conn.transact(case.pre)
    report = await conn.transact(bind(case.tx, ids))
    tempids = {k: v for k, v in report.tempids.items() if k != "db/current-tx"}
    names = {eid: label for label, eid in ids.items() if label != "db/current-tx"}
    for tempid, eid in tempids.items():
        names.setdefault(eid, tempid if isinstance(tempid, str) else str(tempid))
    # the tempids resolve as the row says: to setup entities or to new ones
    expected_eids = {t: ids.get(label) for t, label in case.tempids.items()}
    assert set(tempids) == set(case.tempids)
    for t, eid in expected_eids.items():
        if eid is not None:
            assert tempids[t] == eid, t
        else:
            assert tempids[t] not in ids.values(), t  # a new entity
    if case.tempids:
        same = {}
        for t, label in case.tempids.items():
            same.setdefault(label, set()).add(tempids[t])
        assert all(len(v) == 1 for v in same.values()), same
        for label, (eid,) in same.items():
            if label not in ids:
                names[eid] = label
    touched = {d.e for d in report.tx_data if d.e != report.tx}
    mentioned = {ids[label] for (label, _, _) in case.datoms if label in ids}
    got = await labelled(conn.db, names, touched | mentioned)
    assert got == case.datoms
    # exactly the changed datoms are in tx_data: the rest of the database is as before
    before = await all_datoms(report.db_before)
    after = await all_datoms(report.db_after)
    changed = {(d.e, d.a, d.v, d.added) for d in report.tx_data}
    assert changed == {(*x, False) for x in before - after} | {(*x, True) for x in after - before}


@dataclass
class Bad:
    tx: Any
    error: type[ReplicaError]
    fragments: tuple[str, ...]
    pre: list[Any] = field(default_factory=list)


BAD = {
    "explicit id of another entity": Bad(
        [{"db/id": Id("petr"), "name": "Ivan", "age": 36}], UniqueConflict, ("name", "'Ivan'")
    ),
    "the tx entity takes someone's identity": Bad(
        [{"db/id": "db/current-tx", "name": "Ivan", "age": 35}], UniqueConflict, ("'Ivan'",)
    ),
    "two identities of two entities": Bad(
        [{"name": "Ivan", "email": "@2", "age": 35}],
        UpsertConflict,
        ("name 'Ivan'", "email '@2'"),
    ),
    "a tempid resolves both to ivan and petr (maps)": Bad(
        [{"db/id": -1, "name": "Ivan", "age": 35}, {"db/id": -1, "name": "Petr", "age": 36}],
        UpsertConflict,
        ("for -1", "'Ivan'", "'Petr'"),
    ),
    "a tempid resolves both to ivan and petr (add form)": Bad(
        [
            ["db/add", -1, "name", "Ivan"],
            ["db/add", -1, "age", 35],
            ["db/add", -1, "name", "Petr"],
            ["db/add", -1, "age", 36],
        ],
        UpsertConflict,
        ("for -1", "'Ivan'", "'Petr'"),
    ),
    "a string tempid resolves to two entities": Bad(
        [["db/add", "who", "email", "@1"], ["db/add", "who", "email", "@3"]],
        UpsertConflict,
        ("for 'who'", "'@1'", "'@3'"),
    ),
    "cardinality-many values held by two entities": Bad(
        [{"slugs": ["ivan1", "petr1"]}],
        UpsertConflict,
        ("'ivan1'", "'petr1'"),
        pre=[{"name": "Ivan", "slugs": "ivan1"}, {"name": "Petr", "slugs": "petr1"}],
    ),
    "tempids sharing a new value upsert to two entities": Bad(
        [
            {"db/id": -1, "name": "Igor", "email": "@1"},
            {"db/id": -2, "name": "Igor", "email": "@2"},
        ],
        UpsertConflict,
        ("'@1'", "'@2'"),
    ),
    "a value given by id earlier in the tx does not upsert (differs from DataScript)": Bad(
        [["db/add", Id("ivan"), "email", "@9"], {"email": "@9", "age": 1}],
        UniqueConflict,
        ("email", "'@9'"),
    ),
    "a tempid inside a lookup ref": Bad(
        [["db/add", ("ref", "t"), "age", 1]],
        EntityIdError,
        ("'t'", "tempid"),
    ),
    "an upsert by ref to two entities": Bad(
        [{"ref": Id("dima"), "email": "@4"}],
        UpsertConflict,
        ("ref", "email '@4'"),
    ),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
async def test_upsert_rejected(make_conn: MakeConn, case: Bad) -> None:
    conn = await make_conn(SCHEMA)
    ids = (await conn.transact(SETUP)).tempids
    if case.pre:
        await conn.transact(case.pre)
    await assert_rejected(conn, bind(case.tx, ids), case.error, *case.fragments)


async def test_upsert_conflict_carries_the_facts(make_conn: MakeConn) -> None:
    conn = await make_conn(SCHEMA)
    ids = (await conn.transact(SETUP)).tempids
    err = await assert_rejected(conn, [{"name": "Ivan", "email": "@2"}], UpsertConflict)
    assert isinstance(err, UpsertConflict)
    assert err.first == ("name", "Ivan", ids["ivan"])
    assert err.second == ("email", "@2", ids["petr"])
    err = await assert_rejected(conn, [["db/add", ids["petr"], "name", "Ivan"]], UniqueConflict)
    assert isinstance(err, UniqueConflict)
    assert (err.attribute, err.value, err.existing) == ("name", "Ivan", ids["ivan"])


async def test_new_entities_are_numbered_in_order_of_first_appearance(
    make_conn: MakeConn,
) -> None:
    """Tempids that are one entity take one id; ids grow with first appearance."""
    conn = await make_conn(SCHEMA)
    report = await conn.transact(
        [
            {"db/id": "a", "name": "A"},
            {"db/id": "b", "name": "B"},
            {"db/id": "c", "name": "A", "age": 1},
            {"db/id": "d", "name": "D"},
        ]
    )
    t = report.tempids
    assert t["a"] == t["c"]
    assert t["a"] < t["b"] < t["d"]
    assert report.tx < t["a"]  # the tx entity is allocated first
    got = {(d.e, d.a, d.v) for d in await conn.db.datoms("eavt", t["a"])}
    assert got == {(t["a"], "name", "A"), (t["a"], "age", 1)}
