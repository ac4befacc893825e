"""Reverse references in entity maps (DESIGN.md 5): ``{"db/id": x, "ns/_attr": y}`` asserts
``[y "ns/attr" x]``, for one source or a collection of them, given as ids, lookup refs, tempids
or nested maps; after the reverse-ref rows of DataScript's lookup_refs.cljc and
test-explode-reverse (test/datascript/test/explode.cljc).

Each row: a transaction, and every user datom afterwards as ``(label, attribute, value)``,
setup entities by label, new ones by their tempid or their name. ``pal`` is an attribute
without a namespace: its reverse is ``_pal``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import replica
from replica import (
    EntityIdError,
    LookupRefNotFound,
    ReplicaError,
    TxDataError,
    UniqueConflict,
    UnknownAttribute,
)
from tests.replica._txtable import Id, MakeConn, assert_rejected, bind

SCHEMA = [
    {"db/ident": "p/name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "p/friend", "db/valueType": "db.type/ref"},
    {
        "db/ident": "p/friends",
        "db/valueType": "db.type/ref",
        "db/cardinality": "db.cardinality/many",
    },
    {"db/ident": "p/profile", "db/valueType": "db.type/ref", "db/isComponent": True},
    {"db/ident": "p/owner", "db/valueType": "db.type/ref", "db/unique": "db.unique/value"},
    {"db/ident": "pal", "db/valueType": "db.type/ref"},
]
REFS = {"p/friend", "p/friends", "p/profile", "p/owner", "pal"}
SETUP = [
    {"db/id": "ivan", "p/name": "Ivan"},
    {"db/id": "petr", "p/name": "Petr"},
    {"db/id": "oleg", "p/name": "Oleg", "p/friend": "ivan"},
]
BASE = {
    ("ivan", "p/name", "Ivan"),
    ("petr", "p/name", "Petr"),
    ("oleg", "p/name", "Oleg"),
    ("oleg", "p/friend", "ivan"),
}


async def user_datoms(db: replica.DB, names: Mapping[int, str]) -> set[tuple[str, str, Any]]:
    datoms = [d for d in await db.datoms("eavt") if d.a.startswith("p/") or d.a == "pal"]
    by_name = {d.e: d.v for d in datoms if d.a == "p/name"}

    def label(e: int) -> str:
        return names.get(e) or by_name[e]

    return {(label(d.e), d.a, label(d.v) if d.a in REFS else d.v) for d in datoms}


async def setup(make_conn: MakeConn) -> tuple[replica.Connection, dict[str, int]]:
    conn = await make_conn(SCHEMA)
    ids = {k: v for k, v in (await conn.transact(SETUP)).tempids.items() if k != "db/current-tx"}
    return conn, ids


CASES = {
    "one source by id": (
        [{"db/id": Id("petr"), "p/_friend": Id("ivan")}],
        BASE | {("ivan", "p/friend", "petr")},
    ),
    "one source by lookup ref": (
        [{"db/id": Id("petr"), "p/_friend": ("p/name", "Ivan")}],
        BASE | {("ivan", "p/friend", "petr")},
    ),
    "the target by lookup ref": (
        [{"db/id": ("p/name", "Petr"), "p/_friends": Id("ivan")}],
        BASE | {("ivan", "p/friends", "petr")},
    ),
    "a list of sources": (
        [{"db/id": Id("petr"), "p/_friends": [Id("ivan"), ("p/name", "Oleg")]}],
        BASE | {("ivan", "p/friends", "petr"), ("oleg", "p/friends", "petr")},
    ),
    "a set of sources": (
        [{"db/id": Id("petr"), "p/_friends": frozenset({Id("ivan"), Id("oleg")})}],
        BASE | {("ivan", "p/friends", "petr"), ("oleg", "p/friends", "petr")},
    ),
    "cardinality one: the source's old value is replaced": (
        [{"db/id": Id("petr"), "p/_friend": Id("oleg")}],
        (BASE - {("oleg", "p/friend", "ivan")}) | {("oleg", "p/friend", "petr")},
    ),
    "a card-one reverse ref from several sources": (
        [{"db/id": Id("petr"), "p/_friend": [Id("ivan"), Id("oleg")]}],
        (BASE - {("oleg", "p/friend", "ivan")})
        | {("ivan", "p/friend", "petr"), ("oleg", "p/friend", "petr")},
    ),
    "a new target": (
        [{"db/id": "n", "p/name": "N", "p/_friends": Id("ivan")}],
        BASE | {("n", "p/name", "N"), ("ivan", "p/friends", "n")},
    ),
    "a new target without db/id": (
        [{"p/name": "K", "p/_friends": [Id("ivan"), Id("petr")]}],
        BASE | {("K", "p/name", "K"), ("ivan", "p/friends", "K"), ("petr", "p/friends", "K")},
    ),
    "a new source by tempid": (
        [{"db/id": Id("petr"), "p/_friend": "s"}, ["db/add", "s", "p/name", "S"]],
        BASE | {("s", "p/name", "S"), ("s", "p/friend", "petr")},
    ),
    "a source that has only the reverse ref": (
        [{"db/id": Id("petr"), "p/_friend": "ghost"}],
        BASE | {("ghost", "p/friend", "petr")},
    ),
    "a new source as a nested map": (
        [{"db/id": Id("petr"), "p/_friends": [{"p/name": "M1"}, {"p/name": "M2"}]}],
        BASE
        | {
            ("M1", "p/name", "M1"),
            ("M2", "p/name", "M2"),
            ("M1", "p/friends", "petr"),
            ("M2", "p/friends", "petr"),
        },
    ),
    "a nested map that upserts": (
        [{"db/id": Id("petr"), "p/_friends": {"p/name": "Ivan"}}],
        BASE | {("ivan", "p/friends", "petr")},
    ),
    "a reverse ref inside a nested map": (
        [{"p/name": "X", "p/friends": [{"p/name": "Y", "p/_friend": Id("ivan")}]}],
        BASE
        | {
            ("X", "p/name", "X"),
            ("Y", "p/name", "Y"),
            ("X", "p/friends", "Y"),
            ("ivan", "p/friend", "Y"),
        },
    ),
    "a reverse component ref": (
        [{"db/id": "c", "p/name": "C", "p/_profile": Id("petr")}],
        BASE | {("c", "p/name", "C"), ("petr", "p/profile", "c")},
    ),
    "an attribute without a namespace": (
        [{"db/id": Id("petr"), "_pal": Id("ivan")}],
        BASE | {("ivan", "pal", "petr")},
    ),
    "EDN: a list of lookup refs": (
        '[{:db/id [:p/name "Petr"] :p/_friends [[:p/name "Ivan"] [:p/name "Oleg"]]}]',
        BASE | {("ivan", "p/friends", "petr"), ("oleg", "p/friends", "petr")},
    ),
    "EDN: one lookup ref": (
        '[{:db/id [:p/name "Petr"] :p/_friends [:p/name "Ivan"]}]',
        BASE | {("ivan", "p/friends", "petr")},
    ),
    "EDN: without a namespace": (
        '[{:db/id [:p/name "Petr"] :_pal [:p/name "Oleg"]}]',
        BASE | {("oleg", "pal", "petr")},
    ),
}


@pytest.mark.parametrize(("tx", "expected"), CASES.values(), ids=CASES.keys())
async def test_reverse_refs(
    make_conn: MakeConn, tx: Any, expected: set[tuple[str, str, Any]]
) -> None:
    conn, ids = await setup(make_conn)
    report = await conn.transact(bind(tx, ids))
    names = {v: k for k, v in ids.items()}
    names.update(
        {v: k for k, v in report.tempids.items() if isinstance(k, str) and k != "db/current-tx"}
    )
    assert await user_datoms(conn.db, names) == expected


async def test_reverse_refs_read_back(make_conn: MakeConn) -> None:
    """What a reverse ref asserts is an ordinary ref: vaet and the entity API's ``_attr`` see
    it from the target's side."""
    conn, ids = await setup(make_conn)
    await conn.transact([{"db/id": ids["petr"], "p/_friends": [ids["ivan"], ids["oleg"]]}])
    db = conn.db
    assert {d.e for d in await db.datoms("vaet", ids["petr"], "p/friends")} == {
        ids["ivan"],
        ids["oleg"],
    }
    sources = await db.entity(ids["petr"]).get("p/_friends")
    assert {e.eid for e in sources} == {ids["ivan"], ids["oleg"]}


BAD = {
    "the reverse of a non-ref attribute": (
        [{"db/id": Id("petr"), "p/_name": Id("ivan")}],
        TxDataError,
        ("p/_name", "ref"),
    ),
    "the reverse of an unknown attribute": (
        [{"db/id": Id("petr"), "p/_nope": Id("ivan")}],
        UnknownAttribute,
        ("'p/nope'",),
    ),
    "a source lookup ref that finds nothing": (
        [{"db/id": Id("petr"), "p/_friend": ("p/name", "Nobody")}],
        LookupRefNotFound,
        ("'Nobody'",),
    ),
    "a nil source": (
        [{"db/id": Id("petr"), "p/_friend": None}],
        TxDataError,
        ("nil", "p/friend"),
    ),
    "a source that is no entity id": (
        [{"db/id": Id("petr"), "p/_friend": 1.5}],
        EntityIdError,
        ("1.5",),
    ),
    "two sources of a unique value": (
        [{"db/id": Id("petr"), "p/_owner": [Id("ivan"), Id("oleg")]}],
        UniqueConflict,
        ("p/owner",),
    ),
}


@pytest.mark.parametrize(("tx", "error", "fragments"), BAD.values(), ids=BAD.keys())
async def test_bad_reverse_refs_are_rejected(
    make_conn: MakeConn, tx: Any, error: type[ReplicaError], fragments: tuple[str, ...]
) -> None:
    conn, ids = await setup(make_conn)
    await assert_rejected(conn, bind(tx, ids), error, *fragments)
