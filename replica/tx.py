"""Transaction processing: from tx data to the datoms a transaction asserts and retracts.

Semantics follow DataScript/Datahike (their test suites are the reference); where they differ
or are silent, the choice is written in docs/transactions.md. The steps:

1. **Expand** tx data (entity maps, nested maps, reverse refs, list forms, ``db.fn/call``)
   into primitive operations, in order (nil items are skipped, as in DataScript).
2. **Resolve** entity ids: lookup refs to existing entities, tempids (negative ints and strings)
   by upsert through ``db.unique/identity`` attributes (composite tuples too) against the
   database before the transaction; tempids asserting the same new identity value are one
   entity; the rest get new ids, allocated in order of first appearance.
3. **Apply** the operations one after the other against an overlay of the database (nothing is
   written): cardinality one replaces, cardinality many adds, uniqueness is enforced,
   ``db/cas`` compares, ``retractEntity`` follows components and incoming refs, and so does
   retracting a component attribute without a value. A composite tuple may be asserted only
   as what it already is (so a map can upsert by it); composites are recomputed at the end.
4. **Schema**: attribute definitions among the changes are validated and become the new schema
   (effective from the next transaction).
5. The net changes, plus the tx entity's ``db/txInstant`` and metadata, are the tx data.

Any error raises a TransactionError (or SchemaError) subclass naming the offending item, before
anything is written.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from query.types import Keyword
from replica.datom import MAX_EID, Datom
from replica.errors import (
    EntityIdError,
    LookupRefNotFound,
    SchemaError,
    TransactionError,
    TxDataError,
    TxFunctionError,
    UniqueConflict,
    UnknownAttribute,
    UpsertConflict,
    ValueTypeError,
)
from replica.schema import (
    SCHEMA_ATTRS,
    Attribute,
    Schema,
    attribute_from_entity,
    check_change,
    check_composites,
    coerce_scalar,
    coerce_tuple,
)
from replica.values import encode_value

if TYPE_CHECKING:
    from replica.db import DB

TxFunction = Callable[..., Any]

_ADD = ("db/add",)
_RETRACT = ("db/retract",)
_RETRACT_ENTITY = ("db/retractEntity", "db.fn/retractEntity")
_RETRACT_ATTR = ("db.fn/retractAttribute", "db/retractAttribute")
_CAS = ("db/cas", "db.fn/cas")
_CALL = ("db.fn/call",)
_CURRENT_TX = ("datomic.tx", "db/current-tx")
_MAX_FN_DEPTH = 32
_PREFETCH_MIN = 16  # entity ids in a transaction from which absent ones are found in bulk


class _Temp:
    """A tempid: a user's (negative int or string) or one made for a map without db/id
    (``label`` None; ``item`` is that map, for error messages)."""

    __slots__ = ("item", "label")

    def __init__(self, label: Any, item: Any = None) -> None:
        self.label = label
        self.item = item

    def __repr__(self) -> str:
        return f"tempid {self.label!r}"

    def shown(self) -> Any:
        """What an error message names: the user's label, or the map without db/id."""
        return self.label if self.label is not None else self.item


class _Lookup:
    __slots__ = ("attr", "item", "value")

    def __init__(self, attr: str, value: Any, item: Any) -> None:
        self.attr = attr
        self.value = value
        self.item = item


class _Ident:
    __slots__ = ("ident",)

    def __init__(self, ident: str) -> None:
        self.ident = ident


_MISSING = object()


@dataclass(frozen=True, slots=True)
class TxResult:
    datoms: list[Datom]
    tempids: dict[Any, int]
    schema: Schema
    schema_changed: bool
    value_keys: list[bytes] | None = None  # encode_value of each datom's value, in order


class TxContext:
    """One transaction being computed against ``db`` (nothing is written here)."""

    def __init__(
        self,
        db: DB,
        tx: int,
        instant: _dt.datetime,
        allocate: Callable[[], int],
        tx_fns: Mapping[str, TxFunction],
    ) -> None:
        self.db = db
        self.schema = db.schema
        self.tx = tx
        self.instant = instant
        self.allocate = allocate
        self.tx_fns = tx_fns
        self.ops: list[tuple[Any, ...]] = []
        self.temps: dict[Any, _Temp] = {}  # user label -> _Temp
        self.resolved: dict[_Temp, int] = {}
        self.new_eids: set[int] = set()
        # existing ids the database holds no datom of (as good as new for lookups)
        self.absent_eids: set[int] = set()
        # overlay: current values of touched (e, a): {value key: value}
        self.cur: dict[tuple[int, str], dict[bytes, Any]] = {}
        # unique values: (a, value key) -> owner eid or None
        self.owners: dict[tuple[str, bytes], int | None] = {}
        # net changes against db: (e, a, value key) -> (value, added)
        self.changes: dict[tuple[int, str, bytes], tuple[Any, bool]] = {}
        self.dirty_composites: set[tuple[int, str]] = set()
        self.fn_depth = 0
        self.new_eids.add(tx)
        self.tx_labels: set[str] = set()  # "db/current-tx", "datomic.tx" as used

    # -- step 1: expand ----------------------------------------------------------------------

    def _attr(self, ident: Any, item: Any) -> Attribute:
        if not isinstance(ident, str) or not ident:
            raise TxDataError("attribute must be a keyword/string", item)
        ident = str(ident[1:] if ident.startswith(":") else ident)  # a Keyword is a str
        a = self.schema.attribute(ident)
        if a is None:
            raise UnknownAttribute(ident, item)
        return a

    def _entity_spec(self, e: Any, item: Any, temps: bool = True) -> Any:
        t = type(e)
        if (t is str or t is Keyword) and e in _CURRENT_TX:
            self.tx_labels.add(str(e))
            return self.tx
        if t is int:
            if e < 0:
                return self._temp(e, temps)
            if e > MAX_EID:
                raise EntityIdError(e, "entity ids must be below 2**128")
            return e
        if t is Keyword:
            return _Ident(str(e))
        if t is str:
            return self._temp(e, temps)
        if t is tuple or (t is list and len(e) == 2 and isinstance(e[0], Keyword)):
            if len(e) != 2:
                raise EntityIdError(e, "a lookup ref is (attribute, value)")
            return _Lookup(self._attr(e[0], item).ident, e[1], item)
        if t is bool or e is None:
            raise EntityIdError(e, "not an entity id")
        raise EntityIdError(e, "expected an entity id, tempid, lookup ref or ident")

    def _temp(self, label: Any, allowed: bool = True) -> _Temp:
        if not allowed:
            raise EntityIdError(label, "a tempid cannot be used here (only an existing entity)")
        temp = self.temps.get(label)
        if temp is None:
            temp = self.temps[label] = _Temp(label)
        return temp

    def _value_spec(self, a: Attribute, v: Any, item: Any) -> Any:
        """A value for attribute ``a``; for refs, an entity spec (nested maps expanded)."""
        if v is None:
            raise TxDataError(f"nil value for attribute {a.ident}", item)
        if a.is_ref:
            if isinstance(v, dict):
                return self._expand_map(v, item, nested=True)
            try:
                return self._entity_spec(v, item)
            except EntityIdError as exc:
                exc.reason = f"{exc.reason} (as a value of {a.ident})"
                raise
        return v

    def expand(self, tx_data: Any) -> None:
        if not isinstance(tx_data, list | tuple):
            raise TxDataError("tx data must be a list of entity maps and operations", tx_data)
        for item in tx_data:
            if item is not None:  # nils in tx data are skipped, as in DataScript
                self._expand_item(item)

    def _expand_item(self, item: Any) -> None:
        if isinstance(item, dict):
            self._expand_map(item, item, nested=False)
        elif isinstance(item, list | tuple) and item:
            self._expand_op(item)
        else:
            raise TxDataError("expected an entity map or an operation list", item)

    def _expand_map(self, m: dict[Any, Any], item: Any, nested: bool) -> Any:
        if "db/id" in m:
            e = self._entity_spec(m["db/id"], item)
        elif ":db/id" in m:
            e = self._entity_spec(m[":db/id"], item)
        else:
            e = _Temp(None, m)
        for key, val in m.items():
            if key in ("db/id", ":db/id"):
                continue
            if not isinstance(key, str) or not key:
                raise TxDataError("entity map keys must be attribute keywords", item)
            k = key[1:] if key.startswith(":") else key
            ns, slash, name = k.rpartition("/")
            if name.startswith("_") and len(name) > 1:
                a = self._attr(f"{ns}{slash}{name[1:]}", item)
                if not a.is_ref:
                    raise TxDataError(f"reverse attribute {k} needs a ref attribute", item)
                targets = (
                    val
                    if isinstance(val, list | set | frozenset)
                    and not (
                        len(val) == 2 and isinstance(val, list) and isinstance(val[0], Keyword)
                    )
                    else [val]
                )
                for t in targets:
                    self.ops.append(("add", self._value_spec(a, t, item), a.ident, e, item))
                continue
            a = self._attr(k, item)
            for v in self._values(a, val, item):
                self.ops.append(("add", e, a.ident, self._value_spec(a, v, item), item))
        return e

    def _values(self, a: Attribute, val: Any, item: Any) -> list[Any]:
        if not a.many:
            return [val]
        if isinstance(val, set | frozenset):
            return list(val)
        if isinstance(val, list):
            if a.is_ref and len(val) == 2 and isinstance(val[0], Keyword):
                return [val]  # an EDN lookup ref, not a collection
            if a.value_type == "db.type/tuple" and val and not isinstance(val[0], list | tuple):
                return [val]
            return val
        if isinstance(val, tuple) and a.value_type != "db.type/tuple" and not a.is_ref:
            return list(val)
        return [val]

    def _expand_op(self, item: list[Any] | tuple[Any, ...]) -> None:
        op = item[0]
        if not isinstance(op, str):
            raise TxDataError("operation name must be a keyword", item)
        op = op[1:] if op.startswith(":") else op
        n = len(item)
        if op in _ADD or op in _RETRACT:
            if (op in _ADD and n != 4) or (op in _RETRACT and n not in (3, 4)):
                raise TxDataError(f"{op} takes entity, attribute, value", item)
            a = self._attr(item[2], item)
            e = self._entity_spec(item[1], item)
            if op in _ADD:
                self.ops.append(("add", e, a.ident, self._value_spec(a, item[3], item), item))
            elif n == 3:
                self.ops.append(("retract_attr", e, a.ident, item))
            else:
                self.ops.append(("retract", e, a.ident, self._value_spec(a, item[3], item), item))
        elif op in _RETRACT_ENTITY:
            if n != 2:
                raise TxDataError(f"{op} takes one entity", item)
            self.ops.append(("retract_entity", self._entity_spec(item[1], item), item))
        elif op in _RETRACT_ATTR:
            if n != 3:
                raise TxDataError(f"{op} takes entity and attribute", item)
            a = self._attr(item[2], item)
            self.ops.append(("retract_attr", self._entity_spec(item[1], item), a.ident, item))
        elif op in _CAS:
            if n != 5:
                raise TxDataError(f"{op} takes entity, attribute, old value, new value", item)
            a = self._attr(item[2], item)
            if a.many:
                raise TxDataError(
                    f"{op} needs a cardinality-one attribute, {a.ident} is many", item
                )
            old = None if item[3] is None else self._value_spec(a, item[3], item)
            new = self._value_spec(a, item[4], item)
            self.ops.append(("cas", self._entity_spec(item[1], item), a.ident, old, new, item))
        elif op in _CALL:
            if n < 2 or not isinstance(item[1], str):
                raise TxDataError("db.fn/call takes a registered function name and arguments", item)
            self.ops.append(("call", item[1], tuple(item[2:]), item))
        else:
            raise TxDataError(f"unknown operation {op!r}", item)

    # -- step 2: resolve ----------------------------------------------------------------------

    async def _lookup(self, look: _Lookup) -> int:
        a = self.schema.attribute(look.attr)
        assert a is not None
        if a.unique is None:
            raise TxDataError(
                f"lookup ref attribute {a.ident} must be db/unique", (a.ident, look.value)
            )
        if look.value is None:
            raise LookupRefNotFound((a.ident, look.value))
        v = await self._typed(a, look.value, look.item)
        owner = await self._owner(a.ident, v)
        if owner is None:
            raise LookupRefNotFound((a.ident, look.value))
        return owner

    async def _ident(self, ident: _Ident) -> int:
        owner = await self._owner("db/ident", Keyword(ident.ident))
        if owner is None:
            raise EntityIdError(Keyword(ident.ident), "no entity has this db/ident")
        return owner

    async def _typed(self, a: Attribute, raw: Any, item: Any) -> Any:
        """A value as written in tx data (lookup refs, composite tuples as lists), as stored:
        refs resolved to existing entity ids, composite tuples element by element."""
        if a.is_ref:
            return await self._entity(self._entity_spec(raw, item, False))
        if a.composite:
            assert a.tuple_attrs is not None
            if not isinstance(raw, list | tuple) or len(raw) != len(a.tuple_attrs):
                raise ValueTypeError(
                    raw, "db.type/tuple", f"expected {len(a.tuple_attrs)} elements", a.ident
                )
            return tuple(
                [
                    None if x is None else await self._typed(self._attr(p, item), x, item)
                    for p, x in zip(a.tuple_attrs, raw, strict=True)
                ]
            )
        return self._coerce(a, raw, item)

    async def _identity_value(self, a: Attribute, v: Any, item: Any) -> Any:
        """The stored value of an op's value spec ``v`` for an identity attribute, or
        _MISSING if it is a tempid (a new entity: it cannot identify an existing one)."""
        if type(v) is _Temp:
            return _MISSING
        if a.is_ref:
            return await self._entity(v)
        return await self._typed(a, v, item)

    async def resolve_tempids(self) -> None:
        """Upsert tempids through unique identity attributes; allocate the rest.

        A tempid that asserts an identity value an entity of the database holds is that
        entity; tempids that assert the same new identity value are one new entity
        (DataScript gets there by retrying against the intermediate database, Datomic
        resolves them so too). A tempid resolving to two entities is an UpsertConflict."""
        parent: dict[_Temp, _Temp] = {}

        def find(t: _Temp) -> _Temp:
            while t in parent:
                t = parent[t]
            return t

        found: dict[_Temp, tuple[str, Any, int]] = {}
        first_with: dict[tuple[str, bytes], _Temp] = {}  # new identity value -> a tempid
        composite_parts: dict[_Temp, dict[str, Any]] = {}
        identity_composites = self.schema.identity_composites

        async def identify(temp: _Temp, a: Attribute, value: Any, item: Any) -> None:
            owner = await self._owner(a.ident, value)
            if owner is not None:
                self._upsert(found, temp, (a.ident, value, owner), item)
                return
            other = first_with.setdefault((a.ident, encode_value(value)), temp)
            root, mine = find(other), find(temp)
            if root is not mine:
                parent[mine] = root

        for op in self.ops:
            if op[0] != "add" or type(op[1]) is not _Temp:
                continue
            temp, ident, v = op[1], op[2], op[3]
            a = self.schema.attribute(ident)
            assert a is not None
            if identity_composites and not a.composite:
                composite_parts.setdefault(temp, {})[ident] = v
            if not a.identity:
                continue
            value = await self._identity_value(a, v, op[4])
            if value is not _MISSING:
                await identify(temp, a, value, op[4])
        for temp, parts in composite_parts.items():
            for comp in identity_composites:
                assert comp.tuple_attrs is not None
                if all(p in parts and type(parts[p]) is not _Temp for p in comp.tuple_attrs):
                    value = tuple(
                        [
                            await self._identity_value(self._attr(p, None), parts[p], None)
                            for p in comp.tuple_attrs
                        ]
                    )
                    await identify(temp, comp, value, temp.shown())
        # a group of tempids (one new identity value) is one entity
        group_found: dict[_Temp, tuple[str, Any, int]] = {}
        for temp, hit in found.items():
            root = find(temp)
            prior = group_found.get(root)
            if prior is not None and prior[2] != hit[2]:
                raise UpsertConflict(temp.shown(), prior, hit)
            group_found[root] = hit
        for temp in found:
            self.resolved[temp] = group_found[find(temp)][2]
        # allocate in order of first appearance, so tempid order gives id order
        as_entity = {op[1] for op in self.ops if op[0] == "add" and type(op[1]) is _Temp}
        for op in self.ops:
            for spec in op[1:-1]:
                if type(spec) is _Temp and spec not in self.resolved:
                    if spec not in as_entity:
                        raise TxDataError(
                            "tempid used only as a value, never given attributes", spec.shown()
                        )
                    root = find(spec)
                    eid = self.resolved.get(root)
                    if eid is None and root in group_found:
                        eid = self.resolved[root] = group_found[root][2]
                    elif eid is None:
                        eid = self.resolved[root] = self.allocate()
                        self.new_eids.add(eid)
                    self.resolved[spec] = eid

    def _upsert(
        self,
        candidates: dict[_Temp, tuple[str, Any, int]],
        temp: _Temp,
        found: tuple[str, Any, int],
        item: Any,
    ) -> None:
        prior = candidates.get(temp)
        if prior is not None and prior[2] != found[2]:
            raise UpsertConflict(temp.shown(), prior, found)
        candidates[temp] = found

    async def _entity(self, spec: Any) -> int:
        t = type(spec)
        if t is int:
            return int(spec)
        if t is _Temp:
            return self.resolved[spec]
        if t is _Lookup:
            return await self._lookup(spec)
        if t is _Ident:
            return await self._ident(spec)
        raise EntityIdError(spec, "cannot resolve")  # pragma: no cover - expand guarantees

    # -- step 3: apply -----------------------------------------------------------------------

    def _coerce(self, a: Attribute, v: Any, item: Any) -> Any:
        if a.value_type == "db.type/tuple":
            return coerce_tuple(v, a)
        try:
            return coerce_scalar(v, a.value_type, a.ident)
        except ValueTypeError as exc:
            if exc.attribute is None:
                exc.attribute = a.ident
            raise

    async def _values_of(self, e: int, a: str) -> dict[bytes, Any]:
        key = (e, a)
        vals = self.cur.get(key)
        if vals is None:
            if e in self.new_eids or e in self.absent_eids:
                vals = {}
            else:
                vals = {encode_value(d.v): d.v for d in await self.db._eav(e, a)}
            self.cur[key] = vals
        return vals

    async def _owner(self, a: str, v: Any) -> int | None:
        vk = encode_value(v)
        key = (a, vk)
        if key in self.owners:
            return self.owners[key]
        owner = await self.db._owner_of(a, v)
        self.owners[key] = owner
        return owner

    def _record(self, e: int, a: str, vk: bytes, v: Any, added: bool) -> None:
        key = (e, a, vk)
        prior = self.changes.get(key)
        if prior is not None and prior[1] != added:
            del self.changes[key]  # added then retracted (or back): no net change
        else:
            self.changes[key] = (v, added)
        if a in self.schema.composites_of:
            self.dirty_composites.add((e, a))

    async def _assert(self, e: int, a: Attribute, v: Any, item: Any) -> None:
        try:
            vk = encode_value(v)
        except ValueTypeError as exc:  # schema-on-read: a value no type can store
            if exc.attribute is None:
                exc.attribute = a.ident
            raise
        vals = self.cur.get((e, a.ident))
        if vals is None:
            vals = await self._values_of(e, a.ident)
        if vk in vals:
            return
        if a.unique is not None:
            owner = await self._owner(a.ident, v)
            if owner is not None and owner != e:
                raise UniqueConflict(a.ident, v, owner)
        if vals and not a.many:
            for ok, ov in list(vals.items()):
                await self._retract(e, a, ok, ov)
        vals[vk] = v
        if a.unique is not None:
            self.owners[(a.ident, vk)] = e
        self._record(e, a.ident, vk, v, True)

    async def _retract(self, e: int, a: Attribute, vk: bytes, v: Any) -> None:
        vals = await self._values_of(e, a.ident)
        if vk not in vals:
            return
        del vals[vk]
        if a.unique is not None:
            self.owners[(a.ident, vk)] = None
        self._record(e, a.ident, vk, v, False)

    async def _ref_or_value(self, a: Attribute, spec: Any, item: Any) -> Any:
        if a.is_ref:
            return await self._entity(spec)
        return self._coerce(a, spec, item)

    async def _composite_add(self, e: int, a: Attribute, raw: Any, item: Any) -> None:
        """Asserting a composite tuple is allowed only as a no-op: when it equals the
        values its attributes have at this point (as in DataScript, so that an entity map
        can upsert by a composite identity value)."""
        assert a.tuple_attrs is not None
        try:
            v = await self._typed(a, raw, item)
        except ValueTypeError:
            v = _MISSING  # not even a tuple of the right types: it cannot match
        current = []
        for p in a.tuple_attrs:
            vals = await self._values_of(e, p)
            current.append(next(iter(vals.values())) if vals else None)
        if None in current or v is _MISSING or encode_value(tuple(current)) != encode_value(v):
            raise TxDataError(
                f"composite tuple {a.ident} is computed from {a.tuple_attrs}, not asserted",
                item,
            )

    async def find_absent(self) -> None:
        """Before applying a large transaction: the entity ids it names that the database
        holds no datom of, found in a few range counts instead of one lookup each."""
        eids = {op[1] for op in self.ops if op[0] == "add" and type(op[1]) is int}
        eids -= self.new_eids
        if len(eids) >= _PREFETCH_MIN:
            self.absent_eids = await self.db._absent_entities(sorted(eids))

    async def apply(self) -> None:
        attribute = self.schema.attribute
        for op in self.ops:
            kind = op[0]
            if kind in ("retract", "retract_attr"):
                a = self.schema.attribute(op[2])
                assert a is not None
                if a.composite:
                    raise TxDataError(
                        f"composite tuple {a.ident} is computed from {a.tuple_attrs}, "
                        "not retracted",
                        op[-1],
                    )
            if kind == "add":
                spec = op[1]
                e = spec if type(spec) is int else await self._entity(spec)
                a = attribute(op[2])
                assert a is not None
                if a.tuple_attrs is not None:  # composite
                    await self._composite_add(e, a, op[3], op[4])
                    continue
                if a.value_type == "db.type/ref":
                    v = await self._entity(op[3])
                else:
                    v = self._coerce(a, op[3], op[4])
                await self._assert(e, a, v, op[4])
            elif kind == "retract":
                target = await self._entity(op[1])
                a = self.schema.attribute(op[2])
                assert a is not None
                v = await self._ref_or_value(a, op[3], op[4])
                await self._retract(target, a, encode_value(v), v)
            elif kind == "retract_attr":
                target = await self._entity(op[1])
                a = self.schema.attribute(op[2])
                assert a is not None
                for vk, v in list((await self._values_of(target, a.ident)).items()):
                    await self._retract(target, a, vk, v)
                    if a.is_component:  # a component lives and dies with its owner
                        await self._retract_entity(v, set())
            elif kind == "retract_entity":
                await self._retract_entity(await self._entity(op[1]), set())
            elif kind == "cas":
                await self._cas(op)
            else:  # pragma: no cover - expand only makes the kinds above
                raise AssertionError(kind)

    async def _cas(self, op: tuple[Any, ...]) -> None:
        from replica.errors import CasFailed

        e = await self._entity(op[1])
        a = self.schema.attribute(op[2])
        assert a is not None
        vals = await self._values_of(e, a.ident)
        current = next(iter(vals.values())) if vals else None
        if op[3] is None:
            if vals:
                raise CasFailed(e, a.ident, None, current)
        else:
            old = await self._ref_or_value(a, op[3], op[5])
            if encode_value(old) not in vals:
                raise CasFailed(e, a.ident, old, current)
        await self._assert(e, a, await self._ref_or_value(a, op[4], op[5]), op[5])

    async def _retract_entity(self, e: int, seen: set[int]) -> None:
        if e in seen:
            return
        seen.add(e)
        attrs: dict[str, None] = {}
        if e not in self.new_eids and e not in self.absent_eids:
            for d in await self.db._eav(e, None):
                attrs.setdefault(d.a)
        for ce, ca in list(self.cur):
            if ce == e:
                attrs.setdefault(ca)
        components: list[int] = []
        for ident in attrs:
            a = self.schema.attribute(ident)
            assert a is not None
            for vk, v in list((await self._values_of(e, ident)).items()):
                await self._retract(e, a, vk, v)
                if a.is_component:
                    components.append(v)
        # incoming refs, stored and made in this transaction
        incoming: set[tuple[int, str]] = set()
        for d in await self.db._refs_to(e):
            incoming.add((d.e, d.a))
        for (ce, ca, _), (v, added) in self.changes.items():
            if added and v == e and ca in self.schema.refs:
                incoming.add((ce, ca))
        for src, ident in sorted(incoming):
            a = self.schema.attribute(ident)
            assert a is not None
            await self._retract(src, a, encode_value(e), e)
        for c in components:
            await self._retract_entity(c, seen)

    # -- db.fn/call ---------------------------------------------------------------------------

    async def run_calls(self) -> None:
        """Replace each db.fn/call op by the expansion of what its function returns."""
        while any(op[0] == "call" for op in self.ops):
            self.fn_depth += 1
            if self.fn_depth > _MAX_FN_DEPTH:
                names = sorted({op[1] for op in self.ops if op[0] == "call"})
                raise TxFunctionError(
                    f"db.fn/call nested deeper than {_MAX_FN_DEPTH} (calling {names})"
                )
            ops, self.ops = self.ops, []
            for op in ops:
                if op[0] != "call":
                    self.ops.append(op)
                    continue
                name, args = op[1], op[2]
                fn = self.tx_fns.get(name[1:] if name.startswith(":") else name)
                if fn is None:
                    raise TxFunctionError(f"no transaction function registered as {name!r}")
                try:
                    result = fn(self.db, *args)
                    if isinstance(result, Awaitable):
                        result = await result
                except TransactionError:
                    raise
                except Exception as exc:
                    raise TxFunctionError(f"transaction function {name!r} failed: {exc!r}") from exc
                if not isinstance(result, list | tuple):
                    raise TxFunctionError(
                        f"transaction function {name!r} must return tx data (a list), "
                        f"got {result!r}"
                    )
                self.expand(result)

    # -- step 4: composite tuples and schema ------------------------------------------------

    async def update_composites(self) -> None:
        """Recompute the composite tuples of the attributes this transaction changed. Old
        values go first, so a value that moves between entities does not collide with
        itself (uniqueness holds for the transaction's result)."""
        updates: list[tuple[int, Attribute, tuple[Any, ...] | None]] = []
        done: set[tuple[int, str]] = set()
        for e, part in sorted(self.dirty_composites):
            for comp in self.schema.composites_of.get(part, ()):
                if (e, comp.ident) in done:
                    continue
                done.add((e, comp.ident))
                assert comp.tuple_attrs is not None
                values = []
                for p in comp.tuple_attrs:
                    vals = await self._values_of(e, p)
                    values.append(next(iter(vals.values())) if vals else None)
                new = None if all(v is None for v in values) else tuple(values)
                updates.append((e, comp, new))
        for e, comp, new in updates:
            keep = None if new is None else encode_value(new)
            for vk, v in list((await self._values_of(e, comp.ident)).items()):
                if vk != keep:
                    await self._retract(e, comp, vk, v)
        for e, comp, new in updates:
            if new is not None:
                await self._assert(e, comp, new, None)

    async def new_schema(self) -> tuple[Schema, bool]:
        touched = {e for (e, a, _) in self.changes if a in SCHEMA_ATTRS}
        if not touched:
            return self.schema, False
        updated: list[Attribute] = []
        removed: set[str] = set()
        for e in sorted(touched):
            entity: dict[str, Any] = {}
            for ident in SCHEMA_ATTRS:
                vals = await self._values_of(e, ident)
                if vals:
                    entity[ident] = next(iter(vals.values()))
            old = self.schema.by_eid(e)
            vt = entity.get("db/valueType")
            if old is not None and vt is not None and str(vt).lstrip(":") != old.value_type:
                # said before attribute_from_entity, whose complaint would be less direct
                raise SchemaError(
                    f"cannot change db/valueType of attribute {old.ident!r} "
                    f"({old.value_type} -> {vt})",
                    old.ident,
                )
            new = attribute_from_entity(entity, e)
            if new is None:
                if old is not None:
                    removed.add(old.ident)
                continue
            if old is not None:
                check_change(old, new)
                await self._check_tightening(old, new)
            elif new.ident in self.schema:
                raise SchemaError(f"attribute {new.ident!r} is already defined", new.ident)
            updated.append(new)
        for ident in removed:
            raise SchemaError(
                f"retracting the definition of attribute {ident!r} is not supported", ident
            )
        attrs = {a.ident: a for a in self.schema.user_attributes()}
        for a in updated:
            attrs[a.ident] = a
        schema = Schema(attrs, self.schema.flexibility)
        check_composites(schema)
        return schema, True

    async def _check_tightening(self, old: Attribute, new: Attribute) -> None:
        if new.unique and not old.unique and await self.db._has_duplicate_values(old.ident):
            raise SchemaError(
                f"cannot make {old.ident!r} unique: some values are held by several entities",
                old.ident,
            )
        if old.many and not new.many and await self.db._has_multi_values(old.ident):
            raise SchemaError(
                f"cannot make {old.ident!r} cardinality one: some entities have several values",
                old.ident,
            )

    # -- step 5 -----------------------------------------------------------------------------

    def add_tx_entity(self) -> None:
        vk = encode_value(self.instant)
        self.cur[(self.tx, "db/txInstant")] = {vk: self.instant}
        self.changes[(self.tx, "db/txInstant", vk)] = (self.instant, True)

    def result(self, schema: Schema, changed: bool) -> TxResult:
        tx = self.tx
        changes = self.changes
        datoms = [Datom(e, a, v, tx, added) for (e, a, _), (v, added) in changes.items()]
        value_keys = [vk for (_, _, vk) in changes]
        tempids: dict[Any, int] = {}
        for label, temp in self.temps.items():
            if temp in self.resolved:
                tempids[label] = self.resolved[temp]
        tempids["db/current-tx"] = tx
        for label in self.tx_labels:
            tempids[label] = tx
        return TxResult(datoms, tempids, schema, changed, value_keys)


async def compute_tx(
    db: DB,
    tx_data: Any,
    *,
    tx: int,
    instant: _dt.datetime,
    allocate: Callable[[], int],
    tx_meta: Mapping[str, Any] | None = None,
    tx_fns: Mapping[str, TxFunction] | None = None,
) -> TxResult:
    """Compute what ``tx_data`` does to ``db`` (see the module docstring). Writes nothing."""
    ctx = TxContext(db, tx, instant, allocate, tx_fns or {})
    ctx.expand(tx_data)
    if tx_meta:
        if not isinstance(tx_meta, Mapping):
            raise TxDataError("tx_meta must be a map of attribute to value", tx_meta)
        ctx._expand_map({**tx_meta, "db/id": "db/current-tx"}, tx_meta, nested=False)
    await ctx.run_calls()
    await ctx.resolve_tempids()
    ctx.add_tx_entity()
    await ctx.find_absent()
    await ctx.apply()
    await ctx.update_composites()
    schema, changed = await ctx.new_schema()
    return ctx.result(schema, changed)


__all__ = ["TxFunction", "TxResult", "compute_tx"]
