"""Schema-on-write (DESIGN.md 2, replica/schema.py): attribute definitions, the schema changes
that are allowed, and values checked against their attribute's type, after DataScript's
test/datascript/test/validation.cljc and Datahike's schema rules; plus schema-on-read.

Attributes are entities (``db/ident``, ``db/valueType``, ``db/cardinality``, ...). A schema
change takes effect with the next transaction (Datahike): a transaction cannot use an attribute
it defines. Every bad input is rejected with an error naming the attribute (and the value) and
nothing is written. Definitions of system attributes' values are themselves typed: a
``db/isComponent`` that is not a boolean is a ValueTypeError of ``db/isComponent``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import pytest

import replica
from replica import (
    EntityIdError,
    Keyword,
    ReplicaError,
    SchemaError,
    Symbol,
    TxDataError,
    UnknownAttribute,
    ValueTypeError,
)
from replica.edn import EDNError
from tests.replica._txtable import MakeConn, assert_rejected


def attr(ident: str, vt: str = "db.type/string", **more: Any) -> dict[str, Any]:
    return {"db/ident": ident, "db/valueType": vt, **{f"db/{k}": v for k, v in more.items()}}


TYPES = {
    "string": "db.type/string",
    "long": "db.type/long",
    "bigint": "db.type/bigint",
    "double": "db.type/double",
    "bigdec": "db.type/bigdec",
    "boolean": "db.type/boolean",
    "keyword": "db.type/keyword",
    "symbol": "db.type/symbol",
    "instant": "db.type/instant",
    "uuid": "db.type/uuid",
    "bytes": "db.type/bytes",
    "ref": "db.type/ref",
}
SCHEMA = [
    *(attr(f"v/{name}", vt) for name, vt in TYPES.items()),
    attr("p/name", unique="db.unique/identity"),
    attr("p/tag", cardinality="db.cardinality/many"),
    attr("p/nick"),
    attr("p/code", unique="db.unique/value"),
]
SETUP = [
    {"db/id": "a", "p/name": "A", "p/tag": ["x", "y"], "p/nick": "same", "p/code": "c1"},
    {"db/id": "b", "p/name": "B", "p/tag": "x", "p/nick": "same"},
]


async def setup(make_conn: MakeConn, **options: Any) -> tuple[replica.Connection, dict[str, int]]:
    conn = await make_conn(SCHEMA, **options)
    ids = {k: v for k, v in (await conn.transact(SETUP)).tempids.items() if k != "db/current-tx"}
    return conn, ids


# -- attribute definitions -------------------------------------------------------------------

BAD_DEFINITIONS = {
    "unknown value type": ([attr("n/x", "db.type/strin")], SchemaError, ("'n/x'", "db.type/strin")),
    "value type not a keyword": ([attr("n/x", 5)], ValueTypeError, ("db/valueType", "5")),
    "unknown cardinality": (
        [attr("n/x", cardinality="db.cardinality/few")],
        SchemaError,
        ("'n/x'", "db.cardinality/few"),
    ),
    "unknown uniqueness": (
        [attr("n/x", unique="db.unique/yes")],
        SchemaError,
        ("'n/x'", "db.unique/yes"),
    ),
    "component of a non-ref": (
        [attr("n/x", isComponent=True)],
        SchemaError,
        ("'n/x'", "db/isComponent", "db.type/ref"),
    ),
    "component flag not a boolean": (
        [attr("n/x", "db.type/ref", isComponent="aaa")],
        ValueTypeError,
        ("db/isComponent", "'aaa'"),
    ),
    "index flag not a boolean": (
        [attr("n/x", index=1)],
        ValueTypeError,
        ("db/index", "1"),
    ),
    "doc not a string": ([attr("n/x", doc=5)], ValueTypeError, ("db/doc", "5")),
    "the db namespace is reserved": (
        [attr("db/x")],
        SchemaError,
        ("'db/x'", "reserved"),
    ),
    "the db.* namespaces are reserved": (
        [attr("db.type/x")],
        SchemaError,
        ("'db.type/x'", "reserved"),
    ),
    "a definition without db/ident": (
        [{"db/valueType": "db.type/string"}],
        SchemaError,
        ("db/ident", "db.type/string"),
    ),
    "a new attribute without a value type": (
        [{"db/ident": "n/x", "db/cardinality": "db.cardinality/many"}],
        SchemaError,
        ("'n/x'", "db/valueType"),
    ),
    "an unknown schema attribute": (
        [{"db/ident": "n/x", "db/valueType": "db.type/string", "db/colour": "red"}],
        UnknownAttribute,
        ("'db/colour'",),
    ),
    "tuple attributes on a string": (
        [attr("n/x", tupleType="db.type/long")],
        SchemaError,
        ("'n/x'", "non-tuple"),
    ),
    "db/ident not a keyword": (
        [{"db/ident": 5, "db/valueType": "db.type/string"}],
        ValueTypeError,
        ("db/ident", "5"),
    ),
}


@pytest.mark.parametrize(
    ("tx", "error", "fragments"), BAD_DEFINITIONS.values(), ids=BAD_DEFINITIONS.keys()
)
async def test_bad_definitions_are_rejected(
    make_conn: MakeConn, tx: Any, error: type[ReplicaError], fragments: tuple[str, ...]
) -> None:
    conn, _ = await setup(make_conn)
    await assert_rejected(conn, tx, error, *fragments)


async def test_a_definition_is_datoms_and_an_attribute(make_conn: MakeConn) -> None:
    conn, _ = await setup(make_conn)
    report = await conn.transact(
        [attr("n/x", "db.type/ref", cardinality="db.cardinality/many", isComponent=True, doc="d")]
    )
    e = next(d.e for d in report.tx_data if d.a == "db/ident")
    got = {(d.a, d.v) for d in await conn.db.datoms("eavt", e)}
    assert got == {
        ("db/ident", Keyword("n/x")),
        ("db/valueType", Keyword("db.type/ref")),
        ("db/cardinality", Keyword("db.cardinality/many")),
        ("db/isComponent", True),
        ("db/doc", "d"),
    }
    a = conn.db.schema.get("n/x")
    assert a is not None
    assert (a.value_type, a.many, a.is_component, a.doc, a.eid) == (
        "db.type/ref",
        True,
        True,
        "d",
        e,
    )
    # re-asserting the same definition changes nothing
    again = await conn.transact(
        [attr("n/x", "db.type/ref", cardinality="db.cardinality/many", isComponent=True, doc="d")]
    )
    assert [d.a for d in again.tx_data] == ["db/txInstant"]
    assert again.db_after.schema == again.db_before.schema


async def test_edn_definitions(make_conn: MakeConn) -> None:
    conn = await make_conn(
        "[{:db/ident :e/name :db/valueType :db.type/string :db/unique :db.unique/identity}"
        " {:db/ident :e/tags :db/valueType :db.type/keyword :db/cardinality :db.cardinality/many}]"
    )
    await conn.transact('[{:e/name "x" :e/tags [:a :b]}]')
    got = {(d.a, d.v) for d in await conn.db.datoms("aevt", "e/tags")}
    assert got == {("e/tags", Keyword("a")), ("e/tags", Keyword("b"))}
    assert conn.db.schema.get("e/name").unique == "db.unique/identity"  # type: ignore[union-attr]


# -- schema changes --------------------------------------------------------------------------


def change(attribute: str, /, **more: Any) -> dict[str, Any]:
    """A schema change of an existing attribute: its entity by the lookup ref of its ident."""
    return {"db/id": ("db/ident", attribute), **{f"db/{k}": v for k, v in more.items()}}


async def test_one_to_many_takes_effect_next_transaction(make_conn: MakeConn) -> None:
    conn, ids = await setup(make_conn)
    # in the transaction that changes it, p/nick is still cardinality one: the add replaces
    await conn.transact(
        [change("p/nick", cardinality="db.cardinality/many"), ["db/add", ids["a"], "p/nick", "two"]]
    )
    assert conn.db.schema.get("p/nick").many  # type: ignore[union-attr]
    assert {d.v for d in await conn.db.datoms("eavt", ids["a"], "p/nick")} == {"two"}
    await conn.transact([["db/add", ids["a"], "p/nick", "three"]])
    assert {d.v for d in await conn.db.datoms("eavt", ids["a"], "p/nick")} == {"two", "three"}


async def test_an_attribute_defined_in_a_transaction_is_usable_after_it(
    make_conn: MakeConn,
) -> None:
    conn, _ = await setup(make_conn)
    await assert_rejected(conn, [attr("n/new"), {"n/new": "v"}], UnknownAttribute, "'n/new'")
    await conn.transact([attr("n/new")])
    report = await conn.transact([{"n/new": "v"}])
    assert [(d.a, d.v) for d in report.tx_data if d.e != report.tx] == [("n/new", "v")]


ALLOWED_CHANGES = {
    "many to one, each entity having one value": (
        [change("p/tag", cardinality="db.cardinality/one")],
        [["db/retract", ("p/name", "A"), "p/tag", "y"]],
        "p/tag",
        {"many": False},
    ),
    "one to many": (
        [change("p/nick", cardinality="db.cardinality/many")],
        [],
        "p/nick",
        {"many": True},
    ),
    "unique identity on unique values": (
        [change("p/code", unique="db.unique/identity")],
        [],
        "p/code",
        {"unique": "db.unique/identity"},
    ),
    "unique on an attribute whose values are unique": (
        [change("v/string", unique="db.unique/value")],
        [],
        "v/string",
        {"unique": "db.unique/value"},
    ),
    "drop uniqueness": (
        [["db/retract", ("db/ident", "p/code"), "db/unique", Keyword("db.unique/value")]],
        [],
        "p/code",
        {"unique": None},
    ),
    "component on a ref": (
        [change("v/ref", isComponent=True)],
        [],
        "v/ref",
        {"is_component": True},
    ),
    "index, noHistory, doc": (
        [change("p/nick", index=True, noHistory=True, doc="a nickname")],
        [],
        "p/nick",
        {"index": True, "no_history": True, "doc": "a nickname"},
    ),
}


@pytest.mark.parametrize(
    ("tx", "pre", "ident", "fields"), ALLOWED_CHANGES.values(), ids=ALLOWED_CHANGES.keys()
)
async def test_allowed_schema_changes(
    make_conn: MakeConn, tx: Any, pre: Any, ident: str, fields: dict[str, Any]
) -> None:
    conn, _ = await setup(make_conn)
    if pre:
        await conn.transact(pre)
    report = await conn.transact(tx)
    after = report.db_after.schema.get(ident)
    assert after is not None
    assert {k: getattr(after, k) for k in fields} == fields
    assert report.db_before.schema.get(ident) != after
    # the change is in the stored schema: a fresh connection sees it
    other = await replica.connect(conn.url)
    try:
        assert other.db.schema.get(ident) == after
    finally:
        await other.aclose()


BAD_CHANGES = {
    "many to one with several values": (
        [change("p/tag", cardinality="db.cardinality/one")],
        SchemaError,
        ("'p/tag'", "cardinality one"),
    ),
    "unique over duplicate values": (
        [change("p/nick", unique="db.unique/identity")],
        SchemaError,
        ("'p/nick'", "unique"),
    ),
    "a new value type": (
        [change("p/nick", valueType="db.type/long")],
        SchemaError,
        ("'p/nick'", "db/valueType", "db.type/long"),
    ),
    "a new value type by redefinition": (
        [attr("p/nick", "db.type/keyword")],
        SchemaError,
        ("'p/nick'", "db.type/keyword"),
    ),
    "renaming an attribute": (
        [change("p/nick", ident="p/nickname")],
        SchemaError,
        ("'p/nick'", "'p/nickname'"),
    ),
    "retracting a definition": (
        [["db/retractEntity", ("db/ident", "p/nick")]],
        SchemaError,
        ("'p/nick'",),
    ),
    "retracting the value type": (
        [["db/retract", ("db/ident", "p/nick"), "db/valueType", Keyword("db.type/string")]],
        SchemaError,
        ("'p/nick'", "retracting the definition"),
    ),
    "component on a string": (
        [change("p/nick", isComponent=True)],
        SchemaError,
        ("'p/nick'", "db/isComponent"),
    ),
}


@pytest.mark.parametrize(("tx", "error", "fragments"), BAD_CHANGES.values(), ids=BAD_CHANGES.keys())
async def test_bad_schema_changes_are_rejected(
    make_conn: MakeConn, tx: Any, error: type[ReplicaError], fragments: tuple[str, ...]
) -> None:
    conn, _ = await setup(make_conn)
    await assert_rejected(conn, tx, error, *fragments)


# -- values ----------------------------------------------------------------------------------

UTC_NOON = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
U = uuid.UUID("6f1e2c9a-0000-4000-8000-000000000001")

GOOD_VALUES = {
    "string": ("v/string", "s", "s"),
    "long": ("v/long", -(1 << 63), -(1 << 63)),
    "bigint": ("v/bigint", 1 << 100, 1 << 100),
    "double": ("v/double", 1.5, 1.5),
    "double from an int": ("v/double", 2, 2.0),
    "bigdec": ("v/bigdec", decimal.Decimal("1.50"), decimal.Decimal("1.50")),
    "bigdec from an int": ("v/bigdec", 3, decimal.Decimal(3)),
    "boolean": ("v/boolean", False, False),
    "keyword": ("v/keyword", Keyword("ns/k"), Keyword("ns/k")),
    "keyword from a string": ("v/keyword", ":ns/k", Keyword("ns/k")),
    "symbol from a string": ("v/symbol", "sym", Symbol("sym")),
    "instant, to UTC": (
        "v/instant",
        dt.datetime(2024, 5, 1, 14, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        UTC_NOON,
    ),
    "uuid": ("v/uuid", U, U),
    "uuid from a string": ("v/uuid", str(U), U),
    "bytes": ("v/bytes", b"\x00\xff", b"\x00\xff"),
    "bytes from a bytearray": ("v/bytes", bytearray(b"ab"), b"ab"),
}


@pytest.mark.parametrize(("a", "given", "stored"), GOOD_VALUES.values(), ids=GOOD_VALUES.keys())
async def test_values_are_stored_with_their_type(
    make_conn: MakeConn, a: str, given: Any, stored: Any
) -> None:
    conn, ids = await setup(make_conn)
    await conn.transact([["db/add", ids["a"], a, given]])
    (d,) = await conn.db.datoms("eavt", ids["a"], a)
    assert d.v == stored
    assert type(d.v) is type(stored)


BAD_VALUES = {
    "string: an int": ("v/string", 1, ValueTypeError),
    "long: a string": ("v/long", "1", ValueTypeError),
    "long: a boolean": ("v/long", True, ValueTypeError),
    "long: a float": ("v/long", 1.5, ValueTypeError),
    "long: beyond 64 bits": ("v/long", 1 << 63, ValueTypeError),
    "bigint: a float": ("v/bigint", 1.0, ValueTypeError),
    "double: a string": ("v/double", "1.5", ValueTypeError),
    "bigdec: a float": ("v/bigdec", 1.5, ValueTypeError),
    "bigdec: NaN": ("v/bigdec", decimal.Decimal("NaN"), ValueTypeError),
    "boolean: an int": ("v/boolean", 1, ValueTypeError),
    "keyword: an int": ("v/keyword", 5, ValueTypeError),
    "keyword: an empty string": ("v/keyword", "", ValueTypeError),
    "symbol: an int": ("v/symbol", 5, ValueTypeError),
    "instant: a naive datetime": ("v/instant", dt.datetime(2024, 5, 1), ValueTypeError),
    "instant: a date string": ("v/instant", "2024-05-01", ValueTypeError),
    "uuid: not a uuid": ("v/uuid", "not-a-uuid", ValueTypeError),
    "bytes: a string": ("v/bytes", "ab", ValueTypeError),
    "ref: a float": ("v/ref", 1.5, EntityIdError),
    "string: nil": ("v/string", None, TxDataError),
}


@pytest.mark.parametrize(("a", "value", "error"), BAD_VALUES.values(), ids=BAD_VALUES.keys())
@pytest.mark.parametrize("form", ["add", "map"])
async def test_bad_values_are_rejected(
    make_conn: MakeConn, a: str, value: Any, error: type[ReplicaError], form: str
) -> None:
    conn, ids = await setup(make_conn)
    tx = [["db/add", ids["a"], a, value]] if form == "add" else [{"db/id": ids["a"], a: value}]
    await assert_rejected(conn, tx, error, a, repr(value)[:20] if value is not None else "nil")


UNKNOWN = {
    "map": [{"n/nope": 1}],
    "add": [["db/add", -1, "n/nope", 1]],
    "retract": [["db/retract", ("p/name", "A"), "n/nope", 1]],
    "retractAttribute": [["db.fn/retractAttribute", ("p/name", "A"), "n/nope"]],
    "cas": [["db/cas", ("p/name", "A"), "n/nope", None, 1]],
    "lookup ref": [["db/add", ("n/nope", 1), "p/nick", "x"]],
    "reverse ref": [{"db/id": ("p/name", "A"), "n/_nope": ("p/name", "B")}],
    "nested map": [{"p/name": "C", "v/ref": {"n/nope": 1}}],
    "EDN": "[{:n/nope 1}]",
}


@pytest.mark.parametrize("tx", UNKNOWN.values(), ids=UNKNOWN.keys())
async def test_unknown_attributes_are_rejected(make_conn: MakeConn, tx: Any) -> None:
    conn, _ = await setup(make_conn)
    await assert_rejected(conn, tx, UnknownAttribute, "'n/nope'")


BAD_SHAPES = {
    "tx data not a list": ({"p/name": "x"}, TxDataError, ("list", "'p/name'")),
    "an item that is a string": (["db/add", -1, "p/name", "x"], TxDataError, ("'db/add'",)),
    "an empty operation": ([[]], TxDataError, ("[]",)),
    "an unknown operation": (
        [["db/frobnicate", -1, "p/name", "x"]],
        TxDataError,
        ("db/frobnicate",),
    ),
    "an operation name that is not a keyword": ([[5, -1, "p/name", "x"]], TxDataError, ("5",)),
    "add with too few elements": ([["db/add", -1, "p/name"]], TxDataError, ("db/add",)),
    "add with too many elements": ([["db/add", -1, "p/name", "x", 1]], TxDataError, ("db/add",)),
    "an attribute that is not a keyword": ([["db/add", -1, 17, "x"]], TxDataError, ("17",)),
    "a nil attribute": ([["db/add", -1, None, "x"]], TxDataError, ("None",)),
    "a map key that is not a keyword": ([{"db/id": -1, 17: "x"}], TxDataError, ("17",)),
    "a nil value in a map": ([{"db/id": -1, "p/name": None}], TxDataError, ("p/name", "nil")),
    "a nil value for a unique attribute": (
        [{"db/id": -1, "p/name": "A2"}, {"db/id": -1, "p/code": None}],
        TxDataError,
        ("p/code",),
    ),
    "retractEntity with two entities": (
        [["db/retractEntity", 1, 2]],
        TxDataError,
        ("db/retractEntity",),
    ),
    "retractAttribute without attribute": (
        [["db.fn/retractAttribute", 1]],
        TxDataError,
        ("db.fn/retractAttribute",),
    ),
    "a reverse ref of a non-ref attribute": (
        [{"db/id": -1, "p/_nick": 1, "p/name": "x"}],
        TxDataError,
        ("p/_nick", "ref"),
    ),
    "an EDN syntax error": ('[{:p/name "x"', EDNError, ("line 1, column 14",)),
}


@pytest.mark.parametrize(("tx", "error", "fragments"), BAD_SHAPES.values(), ids=BAD_SHAPES.keys())
async def test_malformed_tx_data_is_rejected(
    make_conn: MakeConn, tx: Any, error: type[ReplicaError], fragments: tuple[str, ...]
) -> None:
    conn, _ = await setup(make_conn)
    commit = conn.db.commit_id
    with pytest.raises(ReplicaError) as info:
        await conn.transact(tx)
    assert isinstance(info.value, error), repr(info.value)
    if error is TxDataError:
        assert type(info.value) is error
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert (await conn.refresh()).commit_id == commit


# -- schema-on-read --------------------------------------------------------------------------


async def test_schema_on_read_takes_any_attribute_and_value(make_conn: MakeConn) -> None:
    conn = await make_conn(None, schema_flexibility="read")
    report = await conn.transact(
        [
            {"db/id": "x", "free/a": 1, "free/b": "s", "free/c": [1, "two"]},
            {"db/id": "y", "free/a": "text"},
        ]
    )
    x, y = report.tempids["x"], report.tempids["y"]
    got = {(d.e, d.a, d.v) for d in await conn.db.datoms("aevt", "free/a")}
    assert got == {(x, "free/a", 1), (y, "free/a", "text")}
    assert [d.v for d in await conn.db.datoms("eavt", x, "free/c")] == [(1, "two")]
    # an undefined attribute is cardinality one
    await conn.transact([["db/add", x, "free/a", 2]])
    assert [d.v for d in await conn.db.datoms("eavt", x, "free/a")] == [2]


async def test_schema_on_read_still_checks_defined_attributes(make_conn: MakeConn) -> None:
    conn = await make_conn([attr("k/n", "db.type/long")], schema_flexibility="read")
    await conn.transact([{"k/n": 1, "k/free": "anything"}])
    await assert_rejected(conn, [{"k/n": "one"}], ValueTypeError, "'k/n'", "'one'")
    await assert_rejected(conn, [{"k/free": {"a": 1}}], ValueTypeError, "'k/free'", "dict")
    await assert_rejected(conn, [{"k/free": object}], ValueTypeError, "'k/free'")
    await assert_rejected(
        conn, [["db/add", ("k/free", 1), "k/n", 2]], TxDataError, "k/free", "unique"
    )
