"""Schema: attributes as entities, Datahike's vocabulary (DESIGN.md section 2, docs/schema.md).

An attribute is an entity with ``db/ident`` and ``db/valueType`` (and ``db/cardinality``),
stored as ordinary datoms, so the schema is queryable like any data. The system attributes that
describe attributes (``db/ident``, ``db/valueType``, ...) are built in and not stored.

Schema-on-write (the default): a transaction may only use attributes of the schema, with values
of their type. Schema-on-read (``schema_flexibility="read"``): any attribute, any value; the
attributes that are defined are still validated.

Allowed schema changes (as in Datahike): ``db/cardinality``, ``db/unique`` (adding it only if
the present values are already unique), ``db/isComponent``, ``db/index``, ``db/noHistory`` and
``db/doc``. Changing ``db/valueType``, the tuple definition or an ident is a SchemaError.
A schema change takes effect with the transaction after the one that made it.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from query.types import Keyword, Symbol
from replica.errors import SchemaError, ValueTypeError

VALUE_TYPES = frozenset(
    {
        "db.type/string",
        "db.type/boolean",
        "db.type/long",
        "db.type/bigint",
        "db.type/double",
        "db.type/float",
        "db.type/bigdec",
        "db.type/instant",
        "db.type/uuid",
        "db.type/keyword",
        "db.type/symbol",
        "db.type/ref",
        "db.type/bytes",
        "db.type/tuple",
        "db.type/number",
    }
)
CARDINALITIES = frozenset({"db.cardinality/one", "db.cardinality/many"})
UNIQUES = frozenset({"db.unique/identity", "db.unique/value"})

#: attributes that describe attributes; built in, never stored as attribute entities
SCHEMA_ATTRS = frozenset(
    {
        "db/ident",
        "db/valueType",
        "db/cardinality",
        "db/unique",
        "db/isComponent",
        "db/index",
        "db/noHistory",
        "db/doc",
        "db/tupleAttrs",
        "db/tupleType",
        "db/tupleTypes",
    }
)

_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute's schema."""

    ident: str
    value_type: str | None = None  # None: schema-on-read attribute without a definition
    many: bool = False
    unique: str | None = None
    is_component: bool = False
    index: bool = False
    no_history: bool = False
    doc: str | None = None
    tuple_attrs: tuple[str, ...] | None = None
    tuple_type: str | None = None
    tuple_types: tuple[str, ...] | None = None
    eid: int | None = None

    @property
    def is_ref(self) -> bool:
        return self.value_type == "db.type/ref"

    @property
    def identity(self) -> bool:
        return self.unique == "db.unique/identity"

    @property
    def composite(self) -> bool:
        return self.tuple_attrs is not None

    def to_map(self) -> dict[str, Any]:
        """The attribute as an entity map (Keyword values), as ``pull`` shows it."""
        out: dict[str, Any] = {"db/ident": Keyword(self.ident)}
        if self.value_type:
            out["db/valueType"] = Keyword(self.value_type)
        out["db/cardinality"] = Keyword(
            "db.cardinality/many" if self.many else "db.cardinality/one"
        )
        if self.unique:
            out["db/unique"] = Keyword(self.unique)
        for key, flag in (
            ("db/isComponent", self.is_component),
            ("db/index", self.index),
            ("db/noHistory", self.no_history),
        ):
            if flag:
                out[key] = True
        if self.doc is not None:
            out["db/doc"] = self.doc
        if self.tuple_attrs is not None:
            out["db/tupleAttrs"] = tuple(Keyword(a) for a in self.tuple_attrs)
        if self.tuple_type is not None:
            out["db/tupleType"] = Keyword(self.tuple_type)
        if self.tuple_types is not None:
            out["db/tupleTypes"] = tuple(Keyword(t) for t in self.tuple_types)
        return out


_KW = "db.type/keyword"
SYSTEM_ATTRIBUTES: dict[str, Attribute] = {
    "db/ident": Attribute("db/ident", _KW, unique="db.unique/identity"),
    "db/valueType": Attribute("db/valueType", _KW),
    "db/cardinality": Attribute("db/cardinality", _KW),
    "db/unique": Attribute("db/unique", _KW),
    "db/isComponent": Attribute("db/isComponent", "db.type/boolean"),
    "db/index": Attribute("db/index", "db.type/boolean"),
    "db/noHistory": Attribute("db/noHistory", "db.type/boolean"),
    "db/doc": Attribute("db/doc", "db.type/string"),
    "db/tupleAttrs": Attribute("db/tupleAttrs", "db.type/tuple", tuple_type=_KW),
    "db/tupleType": Attribute("db/tupleType", _KW),
    "db/tupleTypes": Attribute("db/tupleTypes", "db.type/tuple", tuple_type=_KW),
    "db/txInstant": Attribute("db/txInstant", "db.type/instant", index=True),
    # merges (replica/merge.py, docs/conflicts.md)
    "db.merge/resolver": Attribute("db.merge/resolver", "db.type/string"),
    "db.merge/into": Attribute("db.merge/into", "db.type/ref", index=True),
    "conflict/entity": Attribute("conflict/entity", "db.type/ref", index=True),
    "conflict/attribute": Attribute("conflict/attribute", _KW, index=True),
    "conflict/base": Attribute("conflict/base", "db.type/string"),
    "conflict/ours": Attribute("conflict/ours", "db.type/string"),
    "conflict/theirs": Attribute("conflict/theirs", "db.type/string"),
    "conflict/winner": Attribute("conflict/winner", "db.type/string"),
    "conflict/rule": Attribute("conflict/rule", _KW),
}


class Schema:
    """An immutable mapping ``ident -> Attribute`` plus the flexibility mode."""

    __slots__ = ("_attrs", "_by_eid", "composites_of", "flexibility", "identity_composites", "refs")

    def __init__(self, attrs: Mapping[str, Attribute], flexibility: str = "write") -> None:
        if flexibility not in ("write", "read"):
            raise SchemaError(f"schema_flexibility must be 'write' or 'read', not {flexibility!r}")
        self._attrs = {**SYSTEM_ATTRIBUTES, **attrs}
        self.flexibility = flexibility
        self._by_eid = {a.eid: a for a in self._attrs.values() if a.eid is not None}
        self.refs = frozenset(a.ident for a in self._attrs.values() if a.is_ref)
        comps: dict[str, list[Attribute]] = {}
        for a in self._attrs.values():
            for part in a.tuple_attrs or ():
                comps.setdefault(part, []).append(a)
        self.composites_of = {k: tuple(v) for k, v in comps.items()}
        # the unique-identity composite tuple attributes, in ident order (every upsert looks)
        self.identity_composites = tuple(
            a for a in self.user_attributes() if a.identity and a.composite
        )

    def get(self, ident: str) -> Attribute | None:
        """The attribute, or None if it is not defined."""
        return self._attrs.get(ident)

    def attribute(self, ident: str) -> Attribute | None:
        """Like :meth:`get`, but under schema-on-read an undefined attribute is a plain
        cardinality-one attribute of any type."""
        a = self._attrs.get(ident)
        if a is None and self.flexibility == "read":
            return Attribute(ident)
        return a

    def by_eid(self, eid: int) -> Attribute | None:
        return self._by_eid.get(eid)

    def user_attributes(self) -> list[Attribute]:
        return [a for k, a in sorted(self._attrs.items()) if k not in SYSTEM_ATTRIBUTES]

    def __contains__(self, ident: object) -> bool:
        return ident in self._attrs

    def __iter__(self) -> Any:
        return iter(self._attrs)

    def __len__(self) -> int:
        return len(self._attrs)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Schema)
            and other._attrs == self._attrs
            and other.flexibility == self.flexibility
        )

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._attrs)))

    def with_attributes(self, attrs: Iterable[Attribute]) -> Schema:
        merged = dict(self._attrs)
        for a in attrs:
            merged[a.ident] = a
        return Schema(
            {k: v for k, v in merged.items() if k not in SYSTEM_ATTRIBUTES}, self.flexibility
        )


def _kw(value: Any, what: str, ident: str) -> str:
    if isinstance(value, str) and value:
        return str(value).lstrip(":")
    raise SchemaError(f"{what} of {ident!r} must be a keyword, got {value!r}", ident)


def attribute_from_entity(entity: Mapping[str, Any], eid: int | None = None) -> Attribute | None:
    """Build an Attribute from an entity's schema datoms (a map of schema attr -> value).
    Returns None if the entity has no ``db/valueType`` (a plain ident, not an attribute).
    Raises SchemaError for an invalid definition."""
    ident_raw = entity.get("db/ident")
    if ident_raw is None:
        if any(k in entity for k in SCHEMA_ATTRS if k != "db/doc"):
            raise SchemaError(f"schema attributes without db/ident on entity {eid}: {entity!r}")
        return None
    ident = _kw(ident_raw, "db/ident", str(ident_raw))
    vt_raw = entity.get("db/valueType")
    if vt_raw is None:
        if any(k in entity for k in SCHEMA_ATTRS - {"db/ident", "db/doc"}):
            raise SchemaError(f"attribute {ident!r} has no db/valueType", ident)
        return None
    vt = _kw(vt_raw, "db/valueType", ident)
    if ident.startswith(("db/", "db.")):
        raise SchemaError(f"attribute idents in the db namespace are reserved: {ident!r}", ident)
    if vt not in VALUE_TYPES:
        raise SchemaError(f"unknown db/valueType {vt!r} for attribute {ident!r}", ident)
    card = _kw(entity.get("db/cardinality", "db.cardinality/one"), "db/cardinality", ident)
    if card not in CARDINALITIES:
        raise SchemaError(f"unknown db/cardinality {card!r} for attribute {ident!r}", ident)
    unique = entity.get("db/unique")
    if unique is not None:
        unique = _kw(unique, "db/unique", ident)
        if unique not in UNIQUES:
            raise SchemaError(f"unknown db/unique {unique!r} for attribute {ident!r}", ident)
    flags = {}
    for key in ("db/isComponent", "db/index", "db/noHistory"):
        flag = entity.get(key, False)
        if type(flag) is not bool:
            raise SchemaError(f"{key} of {ident!r} must be true or false, got {flag!r}", ident)
        flags[key] = flag
    doc = entity.get("db/doc")
    if doc is not None and type(doc) is not str:
        raise SchemaError(f"db/doc of {ident!r} must be a string", ident)
    if flags["db/isComponent"] and vt != "db.type/ref":
        raise SchemaError(f"db/isComponent needs db.type/ref, but {ident!r} is {vt}", ident)
    tuple_attrs = entity.get("db/tupleAttrs")
    tuple_type = entity.get("db/tupleType")
    tuple_types = entity.get("db/tupleTypes")
    given = [x is not None for x in (tuple_attrs, tuple_type, tuple_types)]
    if vt == "db.type/tuple":
        if sum(given) != 1:
            raise SchemaError(
                f"tuple attribute {ident!r} needs exactly one of db/tupleAttrs, "
                "db/tupleType, db/tupleTypes",
                ident,
            )
    elif any(given):
        raise SchemaError(f"db/tupleAttrs/Type/Types on non-tuple attribute {ident!r}", ident)
    ta = tt = tts = None
    if tuple_attrs is not None:
        if not isinstance(tuple_attrs, list | tuple) or not 2 <= len(tuple_attrs) <= 8:
            raise SchemaError(f"db/tupleAttrs of {ident!r} must list 2 to 8 attributes", ident)
        ta = tuple(_kw(x, "db/tupleAttrs", ident) for x in tuple_attrs)
        if card == "db.cardinality/many":
            raise SchemaError(f"composite tuple {ident!r} must be cardinality one", ident)
    if tuple_type is not None:
        tt = _kw(tuple_type, "db/tupleType", ident)
        if tt not in VALUE_TYPES - {"db.type/tuple"}:
            raise SchemaError(f"bad db/tupleType {tt!r} for {ident!r}", ident)
    if tuple_types is not None:
        if not isinstance(tuple_types, list | tuple) or not 2 <= len(tuple_types) <= 8:
            raise SchemaError(f"db/tupleTypes of {ident!r} must list 2 to 8 types", ident)
        tts = tuple(_kw(x, "db/tupleTypes", ident) for x in tuple_types)
        for t in tts:
            if t not in VALUE_TYPES - {"db.type/tuple"}:
                raise SchemaError(f"bad type {t!r} in db/tupleTypes of {ident!r}", ident)
    return Attribute(
        ident=ident,
        value_type=vt,
        many=card == "db.cardinality/many",
        unique=unique,
        is_component=flags["db/isComponent"],
        index=flags["db/index"],
        no_history=flags["db/noHistory"],
        doc=doc,
        tuple_attrs=ta,
        tuple_type=tt,
        tuple_types=tts,
        eid=eid,
    )


def check_change(old: Attribute, new: Attribute) -> None:
    """Raise SchemaError unless ``old -> new`` is an allowed schema change."""
    if old.ident != new.ident:
        raise SchemaError(f"renaming attribute {old.ident!r} to {new.ident!r} is not supported")
    for field in ("value_type", "tuple_attrs", "tuple_type", "tuple_types"):
        if getattr(old, field) != getattr(new, field):
            raise SchemaError(
                f"cannot change {field} of attribute {old.ident!r} "
                f"({getattr(old, field)!r} -> {getattr(new, field)!r})",
                old.ident,
            )
    # every other field (cardinality, unique, isComponent, index, noHistory, doc) may change


def check_composites(schema: Schema) -> None:
    """Raise SchemaError unless every composite tuple's ``db/tupleAttrs`` name attributes it
    can be computed from: defined (under schema-on-write), cardinality one, and not
    composite tuples themselves (as in Datomic and DataScript)."""
    for comp in schema.user_attributes():
        for part in comp.tuple_attrs or ():
            a = schema.get(part)
            if a is None:
                if schema.flexibility == "read":
                    continue
                problem = "which is not a defined attribute"
            elif a.many:
                problem = "which is cardinality many"
            elif a.composite:
                problem = "which is itself a composite tuple"
            elif part in SYSTEM_ATTRIBUTES:
                problem = "which is a system attribute"
            else:
                continue
            raise SchemaError(
                f"db/tupleAttrs of {comp.ident!r} names {part!r}, {problem}", comp.ident
            )


# -- values ---------------------------------------------------------------------------------


def coerce_scalar(value: Any, value_type: str | None, ident: str) -> Any:
    """Check (and where unambiguous, convert) a non-ref value for an attribute type.
    Returns the value to store; raises ValueTypeError naming the attribute."""
    t = type(value)
    if value_type is None:  # schema-on-read: any storable value
        if t is list:
            return tuple(value)
        if t is float and value == 0.0:
            return 0.0
        return value
    if value_type == "db.type/string":
        if t is str:
            return value
    elif value_type == "db.type/long":
        if t is int and _LONG_MIN <= value <= _LONG_MAX:
            return value
        if t is int:
            raise ValueTypeError(value, value_type, "out of the 64-bit range", ident)
    elif value_type == "db.type/bigint":
        if t is int:
            return value
    elif value_type in ("db.type/double", "db.type/float"):
        if t is float:
            return 0.0 if value == 0.0 else value
        if t is int:
            return float(value)
    elif value_type == "db.type/number":
        if t is int or t is float:
            return value
    elif value_type == "db.type/boolean":
        if t is bool:
            return value
    elif value_type == "db.type/keyword":
        if t is Keyword:
            return value
        if t is str and value:
            return Keyword(value[1:] if value.startswith(":") else value)
    elif value_type == "db.type/symbol":
        if t is Symbol:
            return value
        if t is str and value:
            return Symbol(value)
    elif value_type == "db.type/bigdec":
        if t is decimal.Decimal and value.is_finite():
            return value
        if t is int:
            return decimal.Decimal(value)
    elif value_type == "db.type/instant":
        if t is _dt.datetime:
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueTypeError(value, value_type, "datetimes must be timezone-aware", ident)
            return value.astimezone(_dt.UTC)
    elif value_type == "db.type/uuid":
        if t is uuid.UUID:
            return value
        if t is str:
            try:
                return uuid.UUID(value)
            except ValueError:
                pass
    elif value_type == "db.type/bytes":
        if t is bytes:
            return value
        if t is bytearray:
            return bytes(value)
    raise ValueTypeError(value, value_type, "", ident)


def coerce_tuple(value: Any, attr: Attribute) -> tuple[Any, ...]:
    """Check a value for a homogeneous (tupleType) or heterogeneous (tupleTypes) tuple."""
    if not isinstance(value, list | tuple):
        raise ValueTypeError(value, "db.type/tuple", "expected a tuple", attr.ident)
    if attr.tuple_types is not None:
        if len(value) != len(attr.tuple_types):
            raise ValueTypeError(
                value, "db.type/tuple", f"expected {len(attr.tuple_types)} elements", attr.ident
            )
        return tuple(
            None if v is None else coerce_scalar(v, t, attr.ident)
            for v, t in zip(value, attr.tuple_types, strict=True)
        )
    if attr.tuple_type is not None:
        if not 1 <= len(value) <= 8:
            raise ValueTypeError(value, "db.type/tuple", "1 to 8 elements", attr.ident)
        return tuple(
            None if v is None else coerce_scalar(v, attr.tuple_type, attr.ident) for v in value
        )
    raise ValueTypeError(
        value, "db.type/tuple", "composite tuples are computed, not asserted", attr.ident
    )
