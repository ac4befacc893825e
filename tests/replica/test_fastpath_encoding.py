"""Fast paths of the transaction commit against the general code they shortcut:

* ``encode_heads`` of a list of exactly one address (every transaction's branch update)
  builds the CBOR by hand: it must give the bytes of the general path (``encode_trusted`` of
  the sorted, distinct heads) and raise where the general path raises;
* ``Schema.identity_composites`` (computed once per schema, read by every upsert) must be the
  unique-identity composite tuples of the schema in ident order, as they were computed per
  transaction before, and upserts through them must still work end to end.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import replica
from replica.connection import decode_heads, encode_heads
from replica.errors import BranchError, UpsertConflict
from replica.schema import Attribute, Schema, attribute_from_entity, check_composites
from store.codec import ADDRESS_LENGTH, address_of, decode, encode_trusted
from tests.replica.conftest import MakeConn

# -- encode_heads ----------------------------------------------------------------------------

addresses = st.binary(max_size=64).map(address_of)


def general(heads: list[Any]) -> bytes:
    """encode_heads through its general path: the same heads, not as a list."""
    return encode_heads(iter(heads))


@settings(max_examples=100, deadline=None)
@given(addresses)
def test_one_address_encodes_as_the_general_path(address: bytes) -> None:
    raw = encode_heads([address])
    assert type(raw) is bytes
    assert raw == encode_trusted([address])
    assert raw == general([address])
    assert raw == encode_heads((address,))  # a tuple: the general path
    assert raw == encode_heads([address, address])  # duplicates: the general path
    assert decode(raw) == [address]
    assert decode_heads(raw, "main") == [address]


@settings(max_examples=50, deadline=None)
@given(st.lists(addresses, min_size=2, max_size=5))
def test_several_addresses_round_trip(heads: list[bytes]) -> None:
    raw = encode_heads(heads)
    assert raw == encode_trusted(sorted(set(heads)))
    assert decode_heads(raw, "main") == sorted(set(heads))
    # one of them alone: the fast path, decoded as the general one is
    assert decode_heads(encode_heads(heads[:1]), "main") == heads[:1]


class Bytes(bytes):
    """A bytes subclass: not ``type(h) is bytes``."""


NOT_ADDRESSES: dict[str, Any] = {
    "32 bytes": b"\x01" * 32,
    "34 bytes": b"\x01" * 34,
    "empty bytes": b"",
    "33 bytes of an unknown version": b"\x02" + bytes(32),
    "str": "01" * 33,
    "str of 33 chars": "\x01" + "a" * 32,
    "int": 1,
    "None": None,
    "bytearray address": bytearray(address_of(b"x")),
    "memoryview address": memoryview(address_of(b"x")),
}


def outcome(heads: list[Any]) -> tuple[str, bytes | str]:
    """What encode_heads does with ``heads`` (as a list): its bytes, or its error type."""
    try:
        return "bytes", encode_heads(heads)
    except Exception as exc:  # the general path's exact error type is the point
        return "error", type(exc).__name__


def general_outcome(heads: list[Any]) -> tuple[str, bytes | str]:
    try:
        return "bytes", general(heads)
    except Exception as exc:
        return "error", type(exc).__name__


@pytest.mark.parametrize("head", NOT_ADDRESSES.values(), ids=NOT_ADDRESSES.keys())
def test_one_non_address_behaves_as_the_general_path(head: Any) -> None:
    got = outcome([head])
    assert got == general_outcome([head])
    if type(head) is bytes:
        assert got == ("bytes", encode_trusted([head]))  # any bytes encode
    elif type(head) is bytearray:
        assert got == ("error", "TypeError")  # (unhashable: the general path's set())
    else:
        assert got == ("error", "BranchError")


def test_one_bytes_subclass_address_behaves_as_the_general_path() -> None:
    # The general path wants ``type(h) is bytes`` ("commit ids are bytes") and raises
    # BranchError for a bytes subclass, even one holding a well-formed address; the one-head
    # fast path checks only is_address (an isinstance test), so it must agree with that.
    head = Bytes(address_of(b"x"))
    assert len(head) == ADDRESS_LENGTH
    with pytest.raises(BranchError):
        general([head])
    with pytest.raises(BranchError):
        encode_heads([head, head])
    assert outcome([head]) == general_outcome([head])


def test_list_subclass_and_empty_list_take_the_general_path() -> None:
    class Heads(list[bytes]):
        pass

    address = address_of(b"y")
    assert encode_heads(Heads([address])) == encode_trusted([address])
    assert encode_heads([]) == encode_trusted([])
    with pytest.raises(BranchError):
        decode_heads(encode_heads([]), "main")  # no heads: not a branch


# -- Schema.identity_composites --------------------------------------------------------------


def attr(ident: str, vt: str = "db.type/string", **more: Any) -> dict[str, Any]:
    return {"db/ident": ident, "db/valueType": vt, **{f"db/{k}": v for k, v in more.items()}}


IDENTITY = "db.unique/identity"

# defined out of ident order: the z/ composite before the a/ one
MIXED = [
    attr("z/x"),
    attr("z/y", "db.type/long"),
    attr("z/x+y", "db.type/tuple", tupleAttrs=["z/x", "z/y"], unique=IDENTITY),
    attr("a/p"),
    attr("a/q"),
    attr("a/r", "db.type/ref"),
    attr("a/p+q", "db.type/tuple", tupleAttrs=["a/p", "a/q"], unique=IDENTITY),
    attr("a/p+r", "db.type/tuple", tupleAttrs=["a/p", "a/r"], unique=IDENTITY),
    attr("m/value", "db.type/tuple", tupleAttrs=["a/p", "z/x"], unique="db.unique/value"),
    attr("m/plain", "db.type/tuple", tupleAttrs=["a/q", "z/y"]),
    attr("m/key", unique=IDENTITY),
    attr("m/pair", "db.type/tuple", tupleTypes=["db.type/long", "db.type/string"], unique=IDENTITY),
    attr("m/tags", "db.type/tuple", tupleType="db.type/keyword", unique=IDENTITY),
]
SCHEMAS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "no tuples": [attr("m/key", unique=IDENTITY), attr("m/n", "db.type/long")],
    "no identity composite": [
        attr("t/a"),
        attr("t/b"),
        attr("t/a+b", "db.type/tuple", tupleAttrs=["t/a", "t/b"]),
        attr("t/a+b!", "db.type/tuple", tupleAttrs=["t/a", "t/b"], unique="db.unique/value"),
    ],
    "one": [
        attr("t/a"),
        attr("t/b"),
        attr("t/a+b", "db.type/tuple", tupleAttrs=["t/a", "t/b"], unique=IDENTITY),
    ],
    "mixed": MIXED,
}


def schema_of(entities: list[dict[str, Any]], flexibility: str = "write") -> Schema:
    attrs = [attribute_from_entity(e, eid=100 + i) for i, e in enumerate(entities)]
    schema = Schema({a.ident: a for a in attrs if a is not None}, flexibility)
    check_composites(schema)
    return schema


def reference(schema: Schema) -> tuple[Attribute, ...]:
    return tuple(a for a in schema.user_attributes() if a.identity and a.composite)


@pytest.mark.parametrize("flexibility", ["write", "read"])
@pytest.mark.parametrize("entities", SCHEMAS.values(), ids=SCHEMAS.keys())
def test_identity_composites_of_built_schemas(
    entities: list[dict[str, Any]], flexibility: str
) -> None:
    schema = schema_of(entities, flexibility)
    assert type(schema.identity_composites) is tuple
    assert schema.identity_composites == reference(schema)
    idents = [a.ident for a in schema.identity_composites]
    assert idents == sorted(idents)
    for a in schema.identity_composites:
        assert schema.get(a.ident) == a


def test_identity_composites_of_the_mixed_schema() -> None:
    # spelled out, independently of user_attributes()
    schema = schema_of(MIXED)
    assert [a.ident for a in schema.identity_composites] == ["a/p+q", "a/p+r", "z/x+y"]
    assert schema_of(SCHEMAS["one"]).identity_composites == (
        schema_of(SCHEMAS["one"]).get("t/a+b"),
    )
    assert schema_of([]).identity_composites == ()


def test_identity_composites_follow_schema_changes() -> None:
    schema = schema_of(SCHEMAS["no identity composite"])
    assert schema.identity_composites == ()
    plain = schema.get("t/a+b")
    assert plain is not None
    made_identity = schema.with_attributes([dataclasses.replace(plain, unique=IDENTITY)])
    assert [a.ident for a in made_identity.identity_composites] == ["t/a+b"]
    assert made_identity.identity_composites == reference(made_identity)
    dropped = made_identity.with_attributes([plain])
    assert dropped.identity_composites == ()
    # adding a composite whose ident sorts first keeps ident order
    more = made_identity.with_attributes(
        [Attribute("0/a+b", "db.type/tuple", unique=IDENTITY, tuple_attrs=("t/a", "t/b"))]
    )
    assert [a.ident for a in more.identity_composites] == ["0/a+b", "t/a+b"]
    assert more.identity_composites == reference(more)


# -- end to end ------------------------------------------------------------------------------


async def test_identity_composites_of_a_connection(make_conn: MakeConn) -> None:
    conn = await make_conn(MIXED)
    schema = conn.db.schema
    assert [a.ident for a in schema.identity_composites] == ["a/p+q", "a/p+r", "z/x+y"]
    assert schema.identity_composites == reference(schema)


async def test_composite_identity_upserts(make_conn: MakeConn) -> None:
    conn = await make_conn(MIXED)
    report = await conn.transact(
        [
            {"db/id": "one", "a/p": "p1", "a/q": "q1", "z/x": "x1", "z/y": 1},
            {"db/id": "two", "a/p": "p2", "a/q": "q2", "m/key": "k2"},
        ]
    )
    one, two = report.tempids["one"], report.tempids["two"]
    assert one != two

    # upsert by a composite value in a map: the existing entity, no new one
    report = await conn.transact([{"db/id": "u", "a/p+q": ["p1", "q1"], "m/key": "k1"}])
    assert report.tempids["u"] == one
    # the other composite (the one defined first, last in ident order)
    report = await conn.transact([{"db/id": "v", "z/x+y": ("x1", 1), "a/r": two}])
    assert report.tempids["v"] == one
    # upsert by the composite's attributes (the composite computed in the transaction)
    report = await conn.transact([{"db/id": "w", "a/p": "p2", "a/q": "q2", "z/y": 7}])
    assert report.tempids["w"] == two
    # components of no entity: a new one
    report = await conn.transact([{"db/id": "n", "a/p": "p3", "a/q": "q3"}])
    assert report.tempids["n"] not in (one, two)

    db = conn.db
    assert {d.v: d.e for d in await db.datoms("avet", "m/key")} == {"k1": one, "k2": two}
    assert await db.datoms("avet", "a/p+q", ("p3", "q3")) != []
    assert [d.e for d in await db.datoms("avet", "a/p+q", ("p1", "q1"))] == [one]
    assert [d.e for d in await db.datoms("avet", "a/p+r", ("p1", two))] == [one]
    assert [d.e for d in await db.datoms("avet", "z/x+y", ("x1", 1))] == [one]
    assert [d.e for d in await db.datoms("avet", "a/p+q", ("p2", "q2"))] == [two]

    # two identity composites naming two entities: a conflict, as before
    await conn.transact([{"db/id": two, "z/x": "x2", "z/y": 2}])
    with pytest.raises(UpsertConflict):
        await conn.transact([{"a/p+q": ["p1", "q1"], "z/x+y": ["x2", 2]}])
    with pytest.raises(UpsertConflict):
        await conn.transact([{"a/p": "p1", "a/q": "q1", "z/x": "x2", "z/y": 2}])


async def test_composite_identity_upsert_after_a_schema_change(make_conn: MakeConn) -> None:
    schema = SCHEMAS["no identity composite"]
    conn = await make_conn(schema)
    first = (await conn.transact([{"db/id": "e", "t/a": "A", "t/b": "B"}])).tempids["e"]
    # without identity: a second entity with the same components is a new one
    other = (await conn.transact([{"db/id": "f", "t/a": "X", "t/b": "Y"}])).tempids["f"]
    assert conn.db.schema.identity_composites == ()

    await conn.transact([{"db/ident": "t/a+b", "db/unique": IDENTITY}])
    await conn.transact([])  # (a schema change takes effect with the next transaction)
    changed = conn.db.schema
    assert [a.ident for a in changed.identity_composites] == ["t/a+b"]
    assert changed.identity_composites == reference(changed)
    report = await conn.transact([{"db/id": "g", "t/a+b": ["A", "B"], "t/a": "A"}])
    assert report.tempids["g"] == first
    report = await conn.transact([{"db/id": "h", "t/a": "X", "t/b": "Y"}])
    assert report.tempids["h"] == other


async def test_composite_identity_upsert_on_a_mem_url() -> None:
    conn = await replica.connect(
        f"mem://fastpath-{uuid.uuid4().hex}", create=True, schema=SCHEMAS["one"]
    )
    try:
        e = (await conn.transact([{"db/id": "e", "t/a": "A", "t/b": "B"}])).tempids["e"]
        report = await conn.transact([{"db/id": "x", "t/a+b": ["A", "B"], "t/b": "B2"}])
        assert report.tempids["x"] == e
        assert [d.e for d in await conn.db.datoms("avet", "t/a+b", ("A", "B2"))] == [e]
        assert await conn.db.datoms("avet", "t/a+b", ("A", "B")) == []
    finally:
        await conn.aclose()
