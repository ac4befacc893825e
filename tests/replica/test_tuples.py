"""Tuple attributes (DESIGN.md 2 and 5), after DataScript's test/datascript/test/tuples.cljc:
composite tuples (``db/tupleAttrs``, computed from other attributes, upsert and lookup refs
through them), and plain tuples of fixed types (``db/tupleTypes``) or one type
(``db/tupleType``).

Composite tuples are computed: asserting one is allowed only when it equals what is already
computed at that point of the transaction (so that ``{"t/a+b": [...], ...}`` can upsert),
everything else, and any retraction, is a TxDataError. A composite whose attributes are all
absent is retracted; a partly absent one holds None in those places.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import replica
from replica import (
    Keyword,
    ReplicaError,
    SchemaError,
    TxDataError,
    UniqueConflict,
    UpsertConflict,
    ValueTypeError,
)
from tests.replica._txtable import Id, MakeConn, assert_rejected, bind


def attr(ident: str, vt: str = "db.type/string", **more: Any) -> dict[str, Any]:
    return {"db/ident": ident, "db/valueType": vt, **{f"db/{k}": v for k, v in more.items()}}


SCHEMA = [
    attr("t/a"),
    attr("t/b"),
    attr("t/c"),
    attr("t/d"),
    attr("t/key", unique="db.unique/identity"),
    attr("t/name", unique="db.unique/identity"),
    attr("t/ref", "db.type/ref"),
    attr("t/age", "db.type/long"),
    attr("t/a+b", "db.type/tuple", tupleAttrs=["t/a", "t/b"], unique="db.unique/identity"),
    attr("t/a+c+d", "db.type/tuple", tupleAttrs=["t/a", "t/c", "t/d"]),
    attr(
        "t/ref+name", "db.type/tuple", tupleAttrs=["t/ref", "t/name"], unique="db.unique/identity"
    ),
    attr("t/pair", "db.type/tuple", tupleTypes=["db.type/long", "db.type/string"]),
    attr("t/tags", "db.type/tuple", tupleType="db.type/keyword"),
]
SETUP = [
    {"db/id": "e1", "t/a": "A", "t/b": "B"},
    {"db/id": "e2", "t/a": "a", "t/b": "b", "t/key": "c"},
    {"db/id": "ivan", "t/name": "Ivan"},
    {"db/id": "petr", "t/name": "Petr", "t/ref": "ivan"},
]
E1 = {
    ("e1", "t/a", "A"),
    ("e1", "t/b", "B"),
    ("e1", "t/a+b", ("A", "B")),
    ("e1", "t/a+c+d", ("A", None, None)),
}
E2 = {
    ("e2", "t/a", "a"),
    ("e2", "t/b", "b"),
    ("e2", "t/key", "c"),
    ("e2", "t/a+b", ("a", "b")),
    ("e2", "t/a+c+d", ("a", None, None)),
}
IVAN = {("ivan", "t/name", "Ivan"), ("ivan", "t/ref+name", (None, "Ivan"))}
PETR = {
    ("petr", "t/name", "Petr"),
    ("petr", "t/ref", "ivan"),
    ("petr", "t/ref+name", ("ivan", "Petr")),
}
ALL = E1 | E2 | IVAN | PETR


async def user_datoms(db: replica.DB, names: Mapping[int, str]) -> set[tuple[str, str, Any]]:
    """Every t/* datom as (label, attribute, value); entity ids (refs, refs inside the ref
    composite) as labels."""
    out = set()
    for d in await db.datoms("eavt"):
        if not d.a.startswith("t/"):
            continue
        v = d.v
        if d.a == "t/ref":
            v = names[v]
        elif d.a == "t/ref+name":
            v = (names.get(v[0], v[0]), v[1])
        out.add((names[d.e], d.a, v))
    return out


async def setup(make_conn: MakeConn) -> tuple[replica.Connection, dict[str, int]]:
    conn = await make_conn(SCHEMA)
    ids = {k: v for k, v in (await conn.transact(SETUP)).tempids.items() if k != "db/current-tx"}
    return conn, ids


async def test_composites_follow_their_attributes(make_conn: MakeConn) -> None:
    """DataScript's test-tx: one entity through a sequence of transactions; after each, all
    its datoms (the composites included)."""
    conn = await make_conn(SCHEMA)
    steps: list[tuple[list[Any], set[tuple[str, Any]]]] = [
        (
            [["db/add", "x", "t/a", "a"]],
            {("t/a", "a"), ("t/a+b", ("a", None)), ("t/a+c+d", ("a", None, None))},
        ),
        (
            [["db/add", "x", "t/b", "b"]],
            {("t/a", "a"), ("t/b", "b"), ("t/a+b", ("a", "b")), ("t/a+c+d", ("a", None, None))},
        ),
        (
            [["db/add", "x", "t/a", "A"]],
            {("t/a", "A"), ("t/b", "b"), ("t/a+b", ("A", "b")), ("t/a+c+d", ("A", None, None))},
        ),
        (
            [["db/add", "x", "t/c", "c"], ["db/add", "x", "t/d", "d"]],
            {
                ("t/a", "A"),
                ("t/b", "b"),
                ("t/c", "c"),
                ("t/d", "d"),
                ("t/a+b", ("A", "b")),
                ("t/a+c+d", ("A", "c", "d")),
            },
        ),
        (
            [
                ["db/add", "x", "t/a", "a"],
                ["db/add", "x", "t/b", "B"],
                ["db/add", "x", "t/c", "C"],
                ["db/add", "x", "t/d", "D"],
            ],
            {
                ("t/a", "a"),
                ("t/b", "B"),
                ("t/c", "C"),
                ("t/d", "D"),
                ("t/a+b", ("a", "B")),
                ("t/a+c+d", ("a", "C", "D")),
            },
        ),
        (
            [["db/retract", "x", "t/a", "a"]],
            {
                ("t/b", "B"),
                ("t/c", "C"),
                ("t/d", "D"),
                ("t/a+b", (None, "B")),
                ("t/a+c+d", (None, "C", "D")),
            },
        ),
        (
            [["db/retract", "x", "t/b", "B"]],
            {("t/c", "C"), ("t/d", "D"), ("t/a+c+d", (None, "C", "D"))},
        ),
        ([["db.fn/retractAttribute", "x", "t/c"], ["db/retract", "x", "t/d"]], set()),
    ]
    eid = None
    for tx, expected in steps:
        if eid is not None:
            tx = [[op, eid, *rest] for op, _, *rest in tx]
        report = await conn.transact(tx)
        eid = eid or report.tempids["x"]
        got = {(d.a, d.v) for d in await conn.db.datoms("eavt", eid)}
        assert got == expected, tx
        # the composites are in avet too, so lookups and upserts find them
        for a, v in expected:
            if a == "t/a+b":
                assert [d.e for d in await conn.db.datoms("avet", "t/a+b", v)] == [eid]


CASES = {
    # upsert and lookup refs by composite value (test-upsert, test-lookup-refs)
    "upsert by a composite value in a map": (
        [{"t/a+b": ["A", "B"], "t/key": "C"}, {"t/a+b": ("a", "b"), "t/age": 1}],
        ALL | {("e1", "t/key", "C"), ("e2", "t/age", 1)},
    ),
    "lookup ref by composite value, add form": (
        [["db/add", ("t/a+b", ("A", "B")), "t/key", "C"]],
        ALL | {("e1", "t/key", "C")},
    ),
    "lookup ref by composite value as db/id": (
        [{"db/id": ("t/a+b", ["a", "b"]), "t/age": 7}],
        ALL | {("e2", "t/age", 7)},
    ),
    "change a component while upserting by the composite": (
        [{"t/a+b": ["A", "B"], "t/b": "b2", "t/d": "D"}],
        (ALL - E1)
        | {
            ("e1", "t/a", "A"),
            ("e1", "t/b", "b2"),
            ("e1", "t/d", "D"),
            ("e1", "t/a+b", ("A", "b2")),
            ("e1", "t/a+c+d", ("A", None, "D")),
        },
    ),
    "change a component while looking up by the composite": (
        [{"db/id": ("t/a+b", ["A", "B"]), "t/b": "b2"}],
        (ALL - E1)
        | {
            ("e1", "t/a", "A"),
            ("e1", "t/b", "b2"),
            ("e1", "t/a+b", ("A", "b2")),
            ("e1", "t/a+c+d", ("A", None, None)),
        },
    ),
    # upsert by the composite's attributes (issue-473)
    "upsert by components, tempid": (
        [{"db/id": -1, "t/a": "A", "t/b": "B", "t/name": "Oleg"}],
        ALL | {("e1", "t/name", "Oleg"), ("e1", "t/ref+name", (None, "Oleg"))},
    ),
    "upsert by components, no tempid": (
        [{"t/a": "A", "t/b": "B", "t/name": "Oleg"}],
        ALL | {("e1", "t/name", "Oleg"), ("e1", "t/ref+name", (None, "Oleg"))},
    ),
    "upsert by components, add form": (
        [["db/add", -1, "t/a", "A"], ["db/add", -1, "t/b", "B"], ["db/add", -1, "t/name", "Oleg"]],
        ALL | {("e1", "t/name", "Oleg"), ("e1", "t/ref+name", (None, "Oleg"))},
    ),
    "components of no entity make a new one": (
        [{"db/id": "n", "t/a": "x", "t/b": "y"}],
        ALL
        | {
            ("n", "t/a", "x"),
            ("n", "t/b", "y"),
            ("n", "t/a+b", ("x", "y")),
            ("n", "t/a+c+d", ("x", None, None)),
        },
    ),
    # asserting a composite that is already right is a no-op (test-ignore-correct)
    "asserting the current composite": ([{"db/id": Id("e1"), "t/a+b": ["A", "B"]}], ALL),
    "asserting the composite after changing a component": (
        [{"db/id": Id("e1"), "t/b": "B2", "t/a+b": ["A", "B2"]}],
        (ALL - {("e1", "t/b", "B"), ("e1", "t/a+b", ("A", "B"))})
        | {("e1", "t/b", "B2"), ("e1", "t/a+b", ("A", "B2"))},
    ),
    "changing both components in one map": (
        [{"db/id": Id("e1"), "t/a": "X", "t/b": "Y"}],
        (ALL - E1)
        | {
            ("e1", "t/a", "X"),
            ("e1", "t/b", "Y"),
            ("e1", "t/a+b", ("X", "Y")),
            ("e1", "t/a+c+d", ("X", None, None)),
        },
    ),
    "swapping composite values between entities in one tx": (
        [
            ["db/add", Id("e1"), "t/a", "tmp"],
            ["db/add", Id("e2"), "t/a", "A"],
            ["db/add", Id("e2"), "t/b", "B"],
            ["db/add", Id("e1"), "t/a", "a"],
            ["db/add", Id("e1"), "t/b", "b"],
        ],
        (ALL - E1 - E2)
        | {
            ("e1", "t/a", "a"),
            ("e1", "t/b", "b"),
            ("e1", "t/a+b", ("a", "b")),
            ("e1", "t/a+c+d", ("a", None, None)),
            ("e2", "t/a", "A"),
            ("e2", "t/b", "B"),
            ("e2", "t/key", "c"),
            ("e2", "t/a+b", ("A", "B")),
            ("e2", "t/a+c+d", ("A", None, None)),
        },
    ),
    # composites with a ref (issue-452)
    "upsert by a ref composite, id": (
        [{"t/ref+name": [Id("ivan"), "Petr"], "t/age": 32}],
        ALL | {("petr", "t/age", 32)},
    ),
    "upsert by a ref composite, lookup ref inside": (
        [{"t/ref+name": [("t/name", "Ivan"), "Petr"], "t/age": 32}],
        ALL | {("petr", "t/age", 32)},
    ),
    "upsert by a ref composite, add form": (
        [["db/add", -1, "t/ref+name", [Id("ivan"), "Petr"]], ["db/add", -1, "t/age", 32]],
        ALL | {("petr", "t/age", 32)},
    ),
    "lookup ref by a ref composite with a lookup ref inside": (
        [["db/add", ("t/ref+name", (("t/name", "Ivan"), "Petr")), "t/age", 32]],
        ALL | {("petr", "t/age", 32)},
    ),
    "upsert by the attributes of a ref composite": (
        [{"t/ref": Id("ivan"), "t/name": "Petr", "t/age": 32}],
        ALL | {("petr", "t/age", 32)},
    ),
    # plain tuples
    "tupleTypes": (
        [{"db/id": Id("e1"), "t/pair": [1, "x"]}],
        ALL | {("e1", "t/pair", (1, "x"))},
    ),
    "tupleTypes with a nil": (
        [{"db/id": Id("e1"), "t/pair": (None, "x")}],
        ALL | {("e1", "t/pair", (None, "x"))},
    ),
    "tupleType: keywords from strings": (
        [{"db/id": Id("e1"), "t/tags": ["k", "ns/k"]}],
        ALL | {("e1", "t/tags", (Keyword("k"), Keyword("ns/k")))},
    ),
    "a tuple value replaces the old one": (
        [["db/add", Id("e1"), "t/pair", [1, "x"]], ["db/add", Id("e1"), "t/pair", [2, "y"]]],
        ALL | {("e1", "t/pair", (2, "y"))},
    ),
    "EDN: a tuple value is a vector": (
        '[{:db/id [:t/name "Ivan"] :t/pair [1 "x"] :t/tags [:k :ns/k]}]',
        ALL | {("ivan", "t/pair", (1, "x")), ("ivan", "t/tags", (Keyword("k"), Keyword("ns/k")))},
    ),
}


@pytest.mark.parametrize(("tx", "expected"), CASES.values(), ids=CASES.keys())
async def test_tuples(make_conn: MakeConn, tx: Any, expected: set[tuple[str, str, Any]]) -> None:
    conn, ids = await setup(make_conn)
    names = {v: k for k, v in ids.items()}
    assert await user_datoms(conn.db, names) == ALL
    report = await conn.transact(bind(tx, ids))
    names.update({v: k for k, v in report.tempids.items() if isinstance(k, str)})
    assert await user_datoms(conn.db, names) == expected


BAD = {
    # composites are computed (test-ignore-correct, test-validation)
    "a composite that differs from its attributes": (
        [{"db/id": Id("e1"), "t/a+b": ["A", "X"]}],
        TxDataError,
        ("t/a+b", "computed"),
    ),
    "a composite for a new entity before its attributes": (
        [{"db/id": "n", "t/a+b": ["x", "y"], "t/a": "x", "t/b": "y"}],
        TxDataError,
        ("t/a+b",),
    ),
    "a composite after attributes that differ": (
        [{"db/id": "n", "t/a": "x", "t/b": "y", "t/a+b": ["a", "b"]}],
        TxDataError,
        ("t/a+b",),
    ),
    "a composite of one element": (
        [{"db/id": Id("e1"), "t/a+b": ["A"]}],
        TxDataError,
        ("t/a+b",),
    ),
    "a composite with a nil": (
        [{"db/id": Id("e1"), "t/a+b": ["A", None]}],
        TxDataError,
        ("t/a+b",),
    ),
    "a partly absent composite cannot be asserted either": (
        [["db/add", Id("e1"), "t/a+c+d", ["A", None, None]]],
        TxDataError,
        ("t/a+c+d",),
    ),
    "a composite that is not a tuple": (
        [{"db/id": Id("e1"), "t/a+b": "AB"}],
        TxDataError,
        ("t/a+b",),
    ),
    "retracting a composite": (
        [["db/retract", Id("e1"), "t/a+b", ["A", "B"]]],
        TxDataError,
        ("t/a+b", "not retracted"),
    ),
    "retracting a composite attribute": (
        [["db.fn/retractAttribute", Id("e1"), "t/a+b"]],
        TxDataError,
        ("t/a+b",),
    ),
    # uniqueness of composites (test-unique, test-upsert, test-lookup-refs)
    "a component change that collides with another entity's composite": (
        [["db/add", Id("e1"), "t/a", "a"], ["db/add", Id("e1"), "t/b", "b"]],
        UniqueConflict,
        ("t/a+b", "('a', 'b')"),
    ),
    "a new entity with an existing composite value by id": (
        [["db/add", Id("ivan"), "t/a", "A"], ["db/add", Id("ivan"), "t/b", "B"]],
        UniqueConflict,
        ("t/a+b", "('A', 'B')"),
    ),
    "upsert by composite and by key to two entities": (
        [{"t/a+b": ["A", "B"], "t/key": "c"}],
        UpsertConflict,
        ("t/a+b", "t/key 'c'"),
    ),
    "lookup by composite, then a key another entity holds": (
        [{"db/id": ("t/a+b", ("A", "B")), "t/key": "c"}],
        UniqueConflict,
        ("t/key", "'c'"),
    ),
    "lookup ref by a composite nobody has": (
        [["db/add", ("t/a+b", ("X", "Y")), "t/key", "C"]],
        replica.LookupRefNotFound,
        ("t/a+b", "'X'"),
    ),
    "lookup ref by a composite of the wrong length": (
        [["db/add", ("t/a+b", ("A",)), "t/key", "C"]],
        ValueTypeError,
        ("t/a+b",),
    ),
    # plain tuple values
    "tupleTypes: an element of the wrong type": (
        [{"db/id": Id("e1"), "t/pair": [1, 2]}],
        ValueTypeError,
        ("'t/pair'", "db.type/string"),
    ),
    "tupleTypes: too few elements": (
        [{"db/id": Id("e1"), "t/pair": [1]}],
        ValueTypeError,
        ("'t/pair'", "2 elements"),
    ),
    "tupleType: not a tuple": (
        [{"db/id": Id("e1"), "t/tags": 5}],
        ValueTypeError,
        ("'t/tags'",),
    ),
    "tupleType: more than 8 elements": (
        [{"db/id": Id("e1"), "t/tags": ["k"] * 9}],
        ValueTypeError,
        ("'t/tags'",),
    ),
}


@pytest.mark.parametrize(("tx", "error", "fragments"), BAD.values(), ids=BAD.keys())
async def test_bad_tuples_are_rejected(
    make_conn: MakeConn, tx: Any, error: type[ReplicaError], fragments: tuple[str, ...]
) -> None:
    conn, ids = await setup(make_conn)
    await assert_rejected(conn, bind(tx, ids), error, *fragments)


SCHEMA_BAD = {
    "tupleAttrs of one attribute": (
        [attr("t/x", "db.type/tuple", tupleAttrs=["t/a"])],
        SchemaError,
        ("'t/x'", "2 to 8"),
    ),
    "tupleAttrs not a list": (
        [attr("t/x", "db.type/tuple", tupleAttrs="t/a")],
        ValueTypeError,
        ("db/tupleAttrs", "'t/a'"),
    ),
    "a composite of cardinality many": (
        [
            attr(
                "t/x", "db.type/tuple", tupleAttrs=["t/a", "t/b"], cardinality="db.cardinality/many"
            )
        ],
        SchemaError,
        ("'t/x'", "cardinality one"),
    ),
    "a composite of an unknown attribute": (
        [attr("t/x", "db.type/tuple", tupleAttrs=["t/a", "t/nope"])],
        SchemaError,
        ("'t/x'", "'t/nope'"),
    ),
    "a composite of a cardinality-many attribute": (
        [
            attr("t/m", cardinality="db.cardinality/many"),
            attr("t/x", "db.type/tuple", tupleAttrs=["t/a", "t/m"]),
        ],
        SchemaError,
        ("'t/x'", "'t/m'", "cardinality many"),
    ),
    "a composite of a composite": (
        [attr("t/x", "db.type/tuple", tupleAttrs=["t/a+b", "t/c"])],
        SchemaError,
        ("'t/x'", "'t/a+b'", "composite"),
    ),
    "making a composite's attribute cardinality many": (
        [{"db/id": ("db/ident", "t/a"), "db/cardinality": "db.cardinality/many"}],
        SchemaError,
        ("'t/a+b'", "'t/a'"),
    ),
    "a tuple type without its definition": (
        [attr("t/x", "db.type/tuple")],
        SchemaError,
        ("'t/x'", "db/tupleAttrs"),
    ),
    "two tuple definitions": (
        [
            attr(
                "t/x",
                "db.type/tuple",
                tupleType="db.type/long",
                tupleTypes=["db.type/long", "db.type/long"],
            )
        ],
        SchemaError,
        ("'t/x'", "exactly one"),
    ),
    "tupleType on a non-tuple attribute": (
        [attr("t/x", "db.type/long", tupleType="db.type/long")],
        SchemaError,
        ("'t/x'", "non-tuple"),
    ),
    "tupleType of tuples": (
        [attr("t/x", "db.type/tuple", tupleType="db.type/tuple")],
        SchemaError,
        ("'t/x'", "db.type/tuple"),
    ),
    "tupleTypes with an unknown type": (
        [attr("t/x", "db.type/tuple", tupleTypes=["db.type/long", "db.type/nope"])],
        SchemaError,
        ("'t/x'", "db.type/nope"),
    ),
    "changing tupleAttrs": (
        [{"db/id": ("db/ident", "t/a+b"), "db/tupleAttrs": ["t/a", "t/c"]}],
        SchemaError,
        ("'t/a+b'", "tuple_attrs"),
    ),
}


@pytest.mark.parametrize(("tx", "error", "fragments"), SCHEMA_BAD.values(), ids=SCHEMA_BAD.keys())
async def test_bad_tuple_schema_is_rejected(
    make_conn: MakeConn, tx: Any, error: type[ReplicaError], fragments: tuple[str, ...]
) -> None:
    conn, _ = await setup(make_conn)
    await assert_rejected(conn, tx, error, *fragments)
