"""DB values: immutable snapshots of a database, and their views (as_of, since, history, filter).

A :class:`DB` is a value: a commit (its index roots and schema) plus, for views, a time bound
or filter. Two tasks reading the same DB always see the same thing; equality and hashing go by
commit id and view. Reading may load nodes from the store, so reads are ``async``; building a
view is not.

Index access follows Datomic/DataScript: ``db.datoms("eavt", e, a)`` gives the datoms whose
leading components match, in index order, from the current indexes, or, for history and
as-of views, from the history trees (see docs/datoms.md).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import (
    AsyncIterator,
    Callable,
    Generator,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    ValuesView,
)
from typing import Any

from replica.commit import Commit, decode_commit, decode_schema
from replica.datom import (
    MAX_EID,
    STAMP_LEN,
    Datom,
    Stamp,
    attr_bytes,
    decode_aevt,
    decode_avet,
    decode_eavt,
    decode_haevt,
    decode_heavt,
    decode_log,
    decode_vaet,
    eid_bytes,
)
from replica.errors import NoSuchCommit, ReplicaError, TxDataError
from replica.schema import Schema
from replica.values import encode_value
from store.base import NodeStore
from store.errors import NodeNotFound
from store.nodes import Nodes
from store.tree import Tree

_DECODERS = {"eavt": decode_eavt, "aevt": decode_aevt, "avet": decode_avet, "vaet": decode_vaet}


def _check_time_point(t: Any) -> None:
    if isinstance(t, bytes | Stamp) or (isinstance(t, int) and not isinstance(t, bool) and t >= 0):
        return
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            raise TxDataError("as_of/since need a timezone-aware datetime", t)
        return
    raise TxDataError("a time point is a tx id, a datetime, a commit id or a Stamp", t)


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def _ms(t: _dt.datetime) -> int:
    """Milliseconds since the epoch, floored, in integers (``int(t.timestamp() * 1000)`` is
    one millisecond short for some instants, e.g. a txInstant in 2038); 0 before the epoch,
    which no transaction's stamp is."""
    return max(0, (t - _EPOCH) // _dt.timedelta(milliseconds=1))


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix``."""
    p = prefix.rstrip(b"\xff")
    if not p:
        return None
    return p[:-1] + bytes((p[-1] + 1,))


class Database:
    """What every DB of one store shares: the store, its node cache, decoded commits and
    schemas. Internal; users hold a Connection and DB values."""

    def __init__(self, store: NodeStore, nodes: Nodes, flexibility: str) -> None:
        self.store = store
        self.nodes = nodes
        self.flexibility = flexibility
        self._commits: dict[bytes, Commit] = {}
        self._schemas: dict[bytes, Schema] = {}

    async def commit(self, address: bytes) -> Commit:
        c = self._commits.get(address)
        if c is None:
            try:
                data = await self.store.get(address)
            except NodeNotFound as exc:
                raise NoSuchCommit(address) from exc
            c = decode_commit(address, data)
            if len(self._commits) > 100_000:
                self._commits.clear()
            self._commits[address] = c
        return c

    async def schema(self, address: bytes) -> Schema:
        s = self._schemas.get(address)
        if s is None:
            s = decode_schema(address, await self.store.get(address), self.flexibility)
            self._schemas[address] = s
        return s

    def remember_commit(self, commit: Commit) -> None:
        self._commits[commit.address] = commit

    def remember_schema(self, address: bytes, schema: Schema) -> None:
        self._schemas[address] = schema

    async def db_at(self, address: bytes) -> DB:
        c = await self.commit(address)
        return DB(self, c, await self.schema(c.schema))


class DatomIter:
    """Datoms of an index range: ``async for d in it`` streams them, ``await it`` gives a
    list."""

    def __init__(self, gen: Callable[[], AsyncIterator[list[Datom]]]) -> None:
        self._gen = gen

    def __aiter__(self) -> AsyncIterator[Datom]:
        return self._each()

    async def _each(self) -> AsyncIterator[Datom]:
        async for batch in self._gen():
            for d in batch:
                yield d

    async def batches(self) -> AsyncIterator[list[Datom]]:
        async for batch in self._gen():
            yield batch

    async def to_list(self) -> list[Datom]:
        out: list[Datom] = []
        async for batch in self._gen():
            out.extend(batch)
        return out

    def __await__(self) -> Generator[Any, None, list[Datom]]:
        return self.to_list().__await__()


class DB:
    """An immutable database value. See the module docstring."""

    __slots__ = (
        "_as_of",
        "_filters",
        "_history",
        "_qsource",
        "_since",
        "_trees",
        "commit",
        "database",
        "schema",
    )

    def __init__(
        self,
        database: Database,
        commit: Commit,
        schema: Schema,
        *,
        as_of: Any = None,
        since: Any = None,
        history: bool = False,
        filters: tuple[Callable[[DB, Datom], bool], ...] = (),
    ) -> None:
        self.database = database
        self.commit = commit
        self.schema = schema
        self._as_of = as_of
        self._since = since
        self._history = history
        self._filters = filters
        self._qsource: Any = None
        nodes = database.nodes
        self._trees = {name: Tree(nodes, root) for name, root in commit.roots.items()}

    # -- identity ----------------------------------------------------------------------------

    @property
    def commit_id(self) -> bytes:
        """The address of the commit this DB is a snapshot of."""
        return self.commit.address

    @property
    def parent_commit_ids(self) -> tuple[bytes, ...]:
        return self.commit.parents

    @property
    def max_tx(self) -> int:
        """The id of the last transaction in this snapshot (0 for an empty database)."""
        return self.commit.tx

    @property
    def stamp(self) -> Stamp:
        return self.commit.stamp

    def _key(self) -> tuple[Any, ...]:
        return (self.commit.address, self._as_of, self._since, self._history, self._filters)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DB) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        view = []
        if self._as_of is not None:
            view.append("as-of")
        if self._since is not None:
            view.append("since")
        if self._history:
            view.append("history")
        if self._filters:
            view.append("filtered")
        extra = f" ({', '.join(view)})" if view else ""
        return f"<DB commit {self.commit.address.hex()[:16]}{extra}>"

    def __datom_source__(self) -> Any:
        """This value as the query layer's ``DatomSource`` (replica/qsource.py)."""
        if self._qsource is None:
            from replica.qsource import DBSource

            self._qsource = DBSource(self)
        return self._qsource

    # -- views -------------------------------------------------------------------------------

    def _view(self, **changes: Any) -> DB:
        args: dict[str, Any] = {
            "as_of": self._as_of,
            "since": self._since,
            "history": self._history,
            "filters": self._filters,
        }
        args.update(changes)
        return DB(self.database, self.commit, self.schema, **args)

    @property
    def history(self) -> DB:
        """Every assertion and retraction (``added`` tells which)."""
        return self._view(history=True)

    @property
    def is_history(self) -> bool:
        return self._history

    @property
    def is_filtered(self) -> bool:
        return bool(self._filters)

    def filter(self, pred: Callable[[DB, Datom], bool]) -> DB:
        """A view keeping only the datoms for which ``pred(db, datom)`` is true."""
        if not callable(pred):
            raise TxDataError("filter needs a callable pred(db, datom)", pred)
        return self._view(filters=(*self._filters, pred))

    def as_of(self, t: Any) -> DB:
        """The database as it was at ``t``: the datoms of every transaction stamped at or
        before ``t`` (a tx id, an aware datetime, a commit id or a Stamp). Resolved at the
        first read; an unknown tx id or commit raises then."""
        _check_time_point(t)
        return self._view(as_of=t)

    def since(self, t: Any) -> DB:
        """Only the datoms of transactions stamped after ``t`` (same kinds as as_of)."""
        _check_time_point(t)
        return self._view(since=t)

    async def _stamp_bound(self, t: Any) -> bytes | None:
        """A time point as stamp bytes, an inclusive bound compared with datom stamps."""
        if t is None:
            return None
        if isinstance(t, bytes):
            return (await self.database.commit(t)).stamp.encode()
        if isinstance(t, Stamp):
            return t.encode()
        if isinstance(t, _dt.datetime):
            return Stamp(_ms(t), 0xFFFFFFFF, 0).encode()[:12] + b"\xff" * 16
        if t == 0:
            return Stamp(0, 0, 0).encode()
        stamp = await self.tx_stamp(t)
        if stamp is None:
            raise TxDataError("no transaction with this id in the database", t)
        return stamp.encode()

    async def tx_stamp(self, tx: int) -> Stamp | None:
        """The clock stamp of transaction ``tx`` (from its db/txInstant datom)."""
        prefix = eid_bytes(tx) + attr_bytes("db/txInstant")
        async for batch in self._trees["heavt"].scan(prefix, prefix_end(prefix)):
            for key, _ in batch:
                return Stamp.decode(key, len(key) - 1 - STAMP_LEN)
        return None

    # -- reads -------------------------------------------------------------------------------

    def _components(self, index: str, components: tuple[Any, ...]) -> bytes:
        """Key prefix for leading components of ``index``."""
        if index not in _DECODERS:
            raise TxDataError("index must be one of eavt, aevt, avet, vaet", index)
        order = {"eavt": "eav", "aevt": "aev", "avet": "ave", "vaet": "vae"}[index]
        if len(components) > 3:
            raise TxDataError("at most 3 components (the tx is not part of the key)", components)
        attr = None
        for kind, c in zip(order, components, strict=False):
            if kind == "a":
                attr = c
        parts = []
        for kind, c in zip(order, components, strict=False):
            if kind == "e" or (kind == "v" and index == "vaet"):  # vaet: V is an entity id
                if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c <= MAX_EID:
                    raise TxDataError("entity component must be an entity id", c)
                parts.append(eid_bytes(c))
            elif kind == "a":
                if not isinstance(c, str):
                    raise TxDataError("attribute component must be a keyword", c)
                parts.append(attr_bytes(c[1:] if c.startswith(":") else c))
            else:
                parts.append(encode_value(self._coerce_v(attr, c)))
        return b"".join(parts)

    def _coerce_v(self, attr: str | None, v: Any) -> Any:
        if attr is None:
            return v
        a = self.schema.get(attr[1:] if attr.startswith(":") else attr)
        if a is None or a.is_ref or a.value_type is None:
            return v
        from replica.schema import coerce_scalar, coerce_tuple

        try:
            if a.value_type == "db.type/tuple":
                if a.composite:  # computed tuples: any list of parts reads as a tuple
                    return tuple(v) if isinstance(v, list | tuple) else v
                return coerce_tuple(v, a)
            return coerce_scalar(v, a.value_type, a.ident)
        except ReplicaError:
            return v

    def datoms(self, index: str, *components: Any) -> DatomIter:
        """Datoms of ``index`` ("eavt", "aevt", "avet", "vaet") whose leading components
        equal ``components``, in index order."""
        prefix = self._components(index, components)
        return DatomIter(lambda: self._range(index, prefix, prefix_end(prefix), False))

    def seek_datoms(self, index: str, *components: Any) -> DatomIter:
        """Datoms of ``index`` from the first at or after ``components`` to the end."""
        prefix = self._components(index, components)
        return DatomIter(lambda: self._range(index, prefix, None, False))

    def rseek_datoms(self, index: str, *components: Any) -> DatomIter:
        """Datoms of ``index`` from ``components`` (inclusive of its prefix) backwards."""
        prefix = self._components(index, components)
        return DatomIter(lambda: self._range(index, None, prefix_end(prefix), True))

    def index_range(self, attr: str, start: Any = None, end: Any = None) -> DatomIter:
        """AVET datoms of ``attr`` with ``start <= v <= end`` (None = unbounded), by value."""
        base = attr_bytes(attr[1:] if attr.startswith(":") else attr)
        lo = base if start is None else base + encode_value(self._coerce_v(attr, start))
        if end is None:
            hi = prefix_end(base)
        else:
            hi = prefix_end(base + encode_value(self._coerce_v(attr, end)))
        return DatomIter(lambda: self._range("avet", lo, hi, False))

    async def count_datoms(self, index: str, *components: Any) -> int:
        """How many datoms match (O(log n) from subtree counts; exact for current DBs,
        an upper bound for views)."""
        prefix = self._components(index, components)
        name = index
        if self._history or self._as_of is not None:
            name = "heavt" if index == "eavt" else "haevt"
            if index in ("avet", "vaet"):
                return await self._trees[name].count()
        return await self._trees[name].count_range(prefix, prefix_end(prefix))

    async def _range(
        self, index: str, lo: bytes | None, hi: bytes | None, reverse: bool
    ) -> AsyncIterator[list[Datom]]:
        if self._history or self._as_of is not None:
            source = self._temporal(index, lo, hi, reverse)
        else:
            source = self._current(index, lo, hi, reverse)
        filters = self._filters
        async for batch in source:
            if filters:
                batch = [d for d in batch if all(f(self, d) for f in filters)]
            if batch:
                yield batch

    async def _current(
        self, index: str, lo: bytes | None, hi: bytes | None, reverse: bool
    ) -> AsyncIterator[list[Datom]]:
        decode = _DECODERS[index]
        since = await self._stamp_bound(self._since)
        async for batch in self._trees[index].scan(lo, hi, reverse=reverse):
            if since is None:
                yield [decode(k, v) for k, v in batch]
            else:
                yield [decode(k, v) for k, v in batch if v > since]

    async def _temporal(
        self, index: str, lo: bytes | None, hi: bytes | None, reverse: bool
    ) -> AsyncIterator[list[Datom]]:
        """History or as-of datoms, from the history trees (eavt/aevt order); avet and vaet
        are computed from haevt/heavt and sorted (slower; documented)."""
        if index in ("eavt", "aevt"):
            async for batch in self._temporal_tree(index, lo, hi, reverse):
                yield batch
            return
        # avet / vaet: gather by attribute (avet) or everything (vaet), then order; the
        # same datom several times (history) in stamp order, like heavt/haevt
        keyed = []
        async for stamped in self._temporal_stamped("aevt", None, None, False):
            for d, stamp in stamped:
                if index == "avet":
                    key = attr_bytes(d.a) + encode_value(d.v) + eid_bytes(d.e)
                else:
                    a = self.schema.get(d.a)
                    if a is None or not a.is_ref:
                        continue
                    key = eid_bytes(d.v) + attr_bytes(d.a) + eid_bytes(d.e)
                if (lo is None or key >= lo) and (hi is None or key < hi):
                    keyed.append((key, stamp, d))
        keyed.sort(key=lambda x: (x[0], x[1]), reverse=reverse)
        if keyed:
            yield [d for _, _, d in keyed]

    async def _temporal_tree(
        self, index: str, lo: bytes | None, hi: bytes | None, reverse: bool
    ) -> AsyncIterator[list[Datom]]:
        async for batch in self._temporal_stamped(index, lo, hi, reverse):
            yield [d for d, _ in batch]

    async def _temporal_stamped(
        self, index: str, lo: bytes | None, hi: bytes | None, reverse: bool
    ) -> AsyncIterator[list[tuple[Datom, bytes]]]:
        """History or as-of datoms of heavt/haevt order, each with its stamp bytes."""
        name = "heavt" if index == "eavt" else "haevt"
        decode = decode_heavt if index == "eavt" else decode_haevt
        upper = await self._stamp_bound(self._as_of)
        lower = await self._stamp_bound(self._since)
        history = self._history
        # as-of: latest op of a group
        pending: tuple[bytes, tuple[Datom, bytes] | None] | None = None
        async for batch in self._trees[name].scan(lo, hi, reverse=reverse):
            out: list[tuple[Datom, bytes]] = []
            for key, _ in batch:
                d, stamp = decode(key)
                if upper is not None and stamp > upper:
                    continue
                if history:
                    if lower is None or stamp > lower:
                        out.append((d, stamp))
                    continue
                group = key[: len(key) - 1 - STAMP_LEN]
                keep = (d, stamp) if d.added and (lower is None or stamp > lower) else None
                if pending is None or pending[0] != group:
                    if pending is not None and pending[1] is not None:
                        out.append(pending[1])
                    pending = (group, keep)
                elif not reverse:
                    pending = (group, keep)  # later stamp wins going forwards
            if out:
                yield out
        if pending is not None and pending[1] is not None:
            yield [pending[1]]

    def tx_range(
        self, start: Any = None, end: Any = None
    ) -> AsyncIterator[tuple[int, list[Datom]]]:
        """Transactions from the log in stamp order, as ``(tx, datoms)``; ``start``/``end``
        are Stamps, datetimes or None (end exclusive)."""
        return self._tx_range(start, end)

    async def _tx_range(self, start: Any, end: Any) -> AsyncIterator[tuple[int, list[Datom]]]:
        lo = await self._stamp_key(start)
        hi = await self._stamp_key(end)
        current: int | None = None
        datoms: list[Datom] = []
        async for batch in self._trees["log"].scan(lo, hi):
            for key, _ in batch:
                d, _stamp = decode_log(key)
                if d.tx != current:
                    if current is not None:
                        yield current, datoms
                    current, datoms = d.tx, []
                datoms.append(d)
        if current is not None:
            yield current, datoms

    async def _stamp_key(self, t: Any) -> bytes | None:
        if isinstance(t, _dt.datetime):
            return Stamp(_ms(t), 0, 0).encode()
        if t is not None:
            _check_time_point(t)
        return await self._stamp_bound(t)

    def entity(self, eid: int) -> Entity:
        """A lazy entity: attributes are read when asked for."""
        return Entity(self, eid)

    # -- lookups for the transactor ------------------------------------------------------

    async def _eav(self, e: int, a: str | None) -> list[Datom]:
        prefix = eid_bytes(e) if a is None else eid_bytes(e) + attr_bytes(a)
        tree = self._trees["eavt"]
        items = tree.items_cached(prefix, prefix_end(prefix))
        if items is not None:  # in one cached leaf: no async iteration
            return [decode_eavt(k, v) for k, v in items]
        out: list[Datom] = []
        async for batch in tree.scan(prefix, prefix_end(prefix)):
            out.extend(decode_eavt(k, v) for k, v in batch)
        return out

    async def _absent_entities(self, eids: list[int]) -> set[int]:
        """Which of ``eids`` (sorted, distinct) have no current datom, found with subtree
        counts over ranges of them (one O(log n) count for a run of absent ids), so a
        transaction of many new entities with ids of their own needs no lookup per entity.
        Runs of a few ids that hold some datoms are left out (looked up when needed)."""
        tree = self._trees["eavt"]
        out: set[int] = set()
        todo = [(0, len(eids))]
        while todo:
            lo, hi = todo.pop()
            first = eid_bytes(eids[lo])
            if await tree.count_range(first, prefix_end(eid_bytes(eids[hi - 1]))) == 0:
                out.update(eids[lo:hi])
            elif hi - lo > 4:
                mid = (lo + hi) // 2
                todo.append((mid, hi))
                todo.append((lo, mid))
        return out

    async def _owner_of(self, a: str, v: Any) -> int | None:
        prefix = attr_bytes(a) + encode_value(v)
        async for batch in self._trees["avet"].scan(prefix, prefix_end(prefix)):
            for k, _ in batch:
                return int.from_bytes(k[len(prefix) : len(prefix) + 16], "big")
        return None

    async def _refs_to(self, e: int) -> list[Datom]:
        prefix = eid_bytes(e)
        out: list[Datom] = []
        async for batch in self._trees["vaet"].scan(prefix, prefix_end(prefix)):
            out.extend(decode_vaet(k, v) for k, v in batch)
        return out

    async def _has_duplicate_values(self, a: str) -> bool:
        prefix = attr_bytes(a)
        last: bytes | None = None
        async for batch in self._trees["avet"].scan(prefix, prefix_end(prefix)):
            for k, _ in batch:
                vpart = k[: len(k) - 16]
                if vpart == last:
                    return True
                last = vpart
        return False

    async def _has_multi_values(self, a: str) -> bool:
        prefix = attr_bytes(a)
        last: int | None = None
        async for batch in self._trees["aevt"].scan(prefix, prefix_end(prefix)):
            for k, _ in batch:
                e = int.from_bytes(k[len(prefix) : len(prefix) + 16], "big")
                if e == last:
                    return True
                last = e
        return False


_MISSING: Any = object()

#: an attribute argument of ``Entity.get`` -> (kind, name): kind 0 a forward attribute, 1
#: ``db/id``, 2 a reverse ``ns/_attr`` (name is then the forward ``ns/attr``)
_ATTR_KINDS: dict[str, tuple[int, str]] = {}


def _attr_kind(attr: Any) -> tuple[int, str]:
    try:
        return _ATTR_KINDS[attr]
    except (KeyError, TypeError):
        pass
    if not isinstance(attr, str):
        raise TypeError(f"an attribute name is a str, not {type(attr).__name__}")
    a = attr[1:] if attr.startswith(":") else attr
    forward = Entity._forward(a)
    got = (1, a) if a == "db/id" else (0, a) if forward is None else (2, forward)
    if len(_ATTR_KINDS) > 4096:
        _ATTR_KINDS.clear()
    _ATTR_KINDS[attr] = got
    return got


#: loaded entity maps kept per DB value (on its datom source): a DB is immutable, so an
#: entity's attributes never change in it; oldest dropped first beyond this many
_ENTITY_MAP_LIMIT = 1 << 16


async def _entity_map(db: DB, src: Any, eid: int) -> dict[str, Any]:
    """Every own attribute of entity ``eid`` in ``db`` as ``{attr: value}``, read in one seek
    (they sit together in EAVT), or the map already read in this DB value. Values: one value
    for cardinality one, a frozenset for cardinality many, refs as Entity. Shared: never
    changed once built."""
    maps: dict[int, dict[str, Any]] = src.entity_maps
    got = maps.get(eid)
    if got is not None:
        return got
    info_of = src.attr
    cache: dict[str, Any] = {}
    grouped: dict[str, list[Any]] | None = None
    for row in await src.entity_datoms(eid):
        if row[4]:
            a = row[1]
            info = info_of(a)
            if info is None or not (info.ref or info.many):
                cache[a] = row[2]  # plain cardinality-one value
            elif grouped is None:
                grouped = {a: [row[2]]}
            else:
                grouped.setdefault(a, []).append(row[2])
    if grouped:
        for a, vals in grouped.items():
            info = info_of(a)
            if info is not None and info.ref:
                vals = [Entity(db, v, src) for v in vals]
            cache[a] = frozenset(vals) if info is not None and info.many else vals[0]
    if len(maps) >= _ENTITY_MAP_LIMIT:
        del maps[next(iter(maps))]
    maps[eid] = cache
    return cache


class Entity:
    """A lazy view of one entity in one DB (DataScript's entity, with async reads).

    * ``await ent.get(attr, default=None)`` reads one attribute (one index seek, cached);
      ``"db/id"`` is the entity id; ``"ns/_attr"`` follows ``ns/attr`` backwards: the one
      referring Entity for a component attribute, else a frozenset of Entity.
    * ``await ent.touch()`` reads every attribute at once (one seek) and touches component
      entities recursively, as DataScript does; it returns ``{attr: value}``.
    * Once loaded, reads are synchronous: ``ent[attr]`` (``KeyError`` if the touched entity
      has no such attribute), ``attr in ent``, ``keys()``, ``values()``, ``items()``,
      ``len(ent)``, iteration. Before, they raise ReplicaError saying to ``await
      ent.touch()`` (``ent["db/id"]`` always works; a reverse attribute works once read
      with ``get``).

    Values: one value for cardinality one, a frozenset for cardinality many, refs as Entity.
    Equal when eid and DB are equal. A leading ``:`` on attribute names is accepted.

    The attributes read are kept per DB value (a DB never changes), so reading an entity
    again in the same DB, through any Entity object, costs no index seek.
    """

    __slots__ = ("_cache", "_rev", "_src", "_touched", "db", "eid")

    def __init__(self, db: DB, eid: int, _src: Any = None) -> None:
        self.db = db
        self.eid = eid
        self._src = _src
        #: every own attribute (components not touched), once loaded; never changed
        self._cache: dict[str, Any] | None = None
        self._rev: dict[str, Any] | None = None
        self._touched = False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entity) and other.eid == self.eid and other.db == self.db

    def __hash__(self) -> int:
        return hash((self.eid, self.db))

    def __repr__(self) -> str:
        return f"<Entity {self.eid}>"

    def __bool__(self) -> bool:
        return True

    @property
    def touched(self) -> bool:
        """Whether every attribute is loaded (``touch`` was awaited)."""
        return self._touched

    def _source(self) -> Any:
        if self._src is None:
            self._src = self.db.__datom_source__()
        return self._src

    @staticmethod
    def _plain_name(attr: str) -> str:
        return attr[1:] if attr.startswith(":") else attr

    @staticmethod
    def _forward(a: str) -> str | None:
        """``ns/attr`` for a reverse name ``ns/_attr``, else None."""
        ns, slash, name = a.rpartition("/")
        if len(name) > 1 and name.startswith("_"):
            return f"{ns}/{name[1:]}" if slash else name[1:]
        return None

    async def touch(self) -> dict[str, Any]:
        """All attributes of the entity: one value for cardinality one, a frozenset for many,
        refs as Entity objects; component entities are touched too."""
        if not self._touched:
            await self._touch(set())
        return dict(self._cache or {})

    async def _load(self) -> dict[str, Any]:
        """Read every own attribute in one seek (they sit together in EAVT)."""
        cache = self._cache
        if cache is None:
            cache = self._cache = await _entity_map(self.db, self._source(), self.eid)
        return cache

    async def _touch(self, seen: set[int]) -> None:
        seen.add(self.eid)
        src = self._source()
        cache = self._cache
        if cache is None:
            cache = await self._load()
        self._touched = True
        for a, v in cache.items():
            info = src.attr(a)
            if info is None or not info.component:
                continue
            for sub in v if isinstance(v, frozenset) else (v,):
                if sub.eid not in seen and not sub._touched:
                    await sub._touch(seen)

    async def get(self, attr: str, default: Any = None) -> Any:
        """The value of ``attr``, or ``default`` if the entity has none (see the class)."""
        try:
            kind, a = _ATTR_KINDS[attr]
        except (KeyError, TypeError):
            kind, a = _attr_kind(attr)
        if not kind:
            cache = self._cache
            if cache is None:
                src = self._src
                if src is None:
                    src = self._src = self.db.__datom_source__()
                cache = src.entity_maps.get(self.eid)
                if cache is None:
                    cache = await _entity_map(self.db, src, self.eid)
                self._cache = cache
            return cache.get(a, default)
        if kind == 1:
            return self.eid
        rev = self._rev
        if rev is None:
            rev = self._rev = {}
        name = self._plain_name(attr)
        if name not in rev:
            rev[name] = await self._backwards(a)
        found = rev[name]
        return default if found is None else found

    async def _backwards(self, forward: str) -> Any:
        src = self._source()
        info = src.attr(forward)
        if info is None or not info.ref:
            return None
        rows = [r for r in await src.search(a=forward, v=self.eid) if r[4]]
        if not rows:
            return None
        if info.component:
            return Entity(self.db, rows[0][0], self._src)
        return frozenset(Entity(self.db, r[0], self._src) for r in rows)

    def _not_loaded(self, a: str) -> ReplicaError:
        how = f"await entity.get({a!r})"
        if self._forward(a) is None:
            how = f"await entity.touch() first, or use {how}"
        return ReplicaError(f"attribute {a!r} of entity {self.eid} is not loaded: {how}")

    def __getitem__(self, attr: str) -> Any:
        kind, _ = _attr_kind(attr)
        a = self._plain_name(attr)
        if kind == 1:
            return self.eid
        cache = self._cache
        if cache is not None and a in cache:
            return cache[a]
        rev = self._rev
        if rev is not None and a in rev:
            found = rev[a]
            if found is None:
                raise KeyError(attr)
            return found
        if cache is not None and kind == 0:
            raise KeyError(attr)
        raise self._not_loaded(a)

    def __contains__(self, attr: object) -> bool:
        if not isinstance(attr, str):
            return False
        kind, _ = _attr_kind(attr)
        a = self._plain_name(attr)
        if kind == 1:
            return True
        cache = self._cache
        if cache is not None and a in cache:
            return True
        rev = self._rev
        if rev is not None and a in rev:
            return rev[a] is not None
        if self._touched and kind == 0:
            return False
        raise self._not_loaded(a)

    def _loaded(self) -> dict[str, Any]:
        if not self._touched or self._cache is None:
            raise ReplicaError(
                f"entity {self.eid} is not loaded: await entity.touch() before listing it"
            )
        return self._cache

    def keys(self) -> KeysView[str]:
        """The entity's attributes (``db/id`` and reverse ones not included); after touch."""
        return self._loaded().keys()

    def values(self) -> ValuesView[Any]:
        return self._loaded().values()

    def items(self) -> ItemsView[str, Any]:
        return self._loaded().items()

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


def index_edits(
    datoms: Iterable[Datom], schema: Schema, stamp: Stamp
) -> dict[str, list[tuple[bytes, bytes | None]]]:
    """Tree edits that record ``datoms`` (one transaction's) in every index, in the order
    given (a later datom with the same key wins: ``Tree.edit`` semantics)."""
    sb = stamp.encode()
    edits: dict[str, list[tuple[bytes, bytes | None]]] = {
        "eavt": [], "aevt": [], "avet": [], "vaet": [], "heavt": [], "haevt": [], "log": []
    }  # fmt: skip
    eavt, aevt, avet, vaet = edits["eavt"], edits["aevt"], edits["avet"], edits["vaet"]
    heavt, haevt, log = edits["heavt"], edits["haevt"], edits["log"]
    refs = schema.refs
    for d in datoms:
        eb = eid_bytes(d.e)
        ab = attr_bytes(d.a)
        vb = encode_value(d.v)
        val = sb if d.added else None
        eavt.append((eb + ab + vb, val))
        aevt.append((ab + eb + vb, val))
        avet.append((ab + vb + eb, val))
        if d.a in refs:
            vaet.append((eid_bytes(d.v) + ab + eb, val))
        a = schema.get(d.a)
        if a is not None and a.no_history:
            continue
        op = b"\x01" if d.added else b"\x00"
        heavt.append((eb + ab + vb + sb + op, b""))
        haevt.append((ab + eb + vb + sb + op, b""))
        log.append((sb + eb + ab + vb + op, b""))
    return edits


def index_edit_lists(
    datoms: list[Datom],
    schema: Schema,
    stamp: Stamp,
    value_keys: list[bytes] | None = None,
    retract_tags: Mapping[int, bytes] | None = None,
) -> dict[str, tuple[list[bytes], list[bytes | None]]]:
    """:func:`index_edits` as sorted distinct keys and their values per tree (what
    ``Tree.edit_sorted`` takes), for the net datoms of one transaction: no two of them have
    the same entity, attribute and value. ``value_keys`` are their values' encodings, if
    the caller has them already. ``retract_tags`` maps the position of a retraction to the
    stamps of the assertions it removes (the current index value): they become the value
    of its history entries (docs/conflicts.md: a retraction removes what it saw).

    Keys are built once per datom and sorted once per order: heavt and log keys sort like
    eavt keys and haevt like aevt (the same prefix-free keys followed by one stamp)."""
    sb = stamp.encode()
    n = len(datoms)
    vks = value_keys if value_keys is not None else [encode_value(d.v) for d in datoms]
    refs = schema.refs
    attr_cache: dict[str, bytes] = {}
    eid_cache: dict[int, bytes] = {}
    eav: list[bytes] = []
    aev: list[bytes] = []
    ave: list[bytes] = []
    vaet_pairs: list[tuple[bytes, bytes | None]] = []
    all_added = True
    no_history: set[str] = set()
    for d, vb in zip(datoms, vks, strict=True):
        a = d.a
        ab = attr_cache.get(a)
        if ab is None:
            ab = attr_cache[a] = attr_bytes(a)
            attr = schema.get(a)
            if attr is not None and attr.no_history:
                no_history.add(a)
        e = d.e
        eb = eid_cache.get(e)
        if eb is None:
            eb = eid_cache[e] = e.to_bytes(16, "big")
        eav.append(eb + ab + vb)
        aev.append(ab + eb + vb)
        ave.append(ab + vb + eb)
        if not d.added:
            all_added = False
        if a in refs:
            vaet_pairs.append((d.v.to_bytes(16, "big") + ab + eb, sb if d.added else None))
    if all_added:
        adds = [True] * n
    else:
        adds = [d.added for d in datoms]
    e_order = sorted(range(n), key=eav.__getitem__)
    a_order = sorted(range(n), key=aev.__getitem__)
    out: dict[str, tuple[list[bytes], list[bytes | None]]] = {}

    def values(order: list[int]) -> list[bytes | None]:
        if all_added:
            return [sb] * n
        return [sb if adds[i] else None for i in order]

    out["eavt"] = ([eav[i] for i in e_order], values(e_order))
    out["aevt"] = ([aev[i] for i in a_order], values(a_order))
    if all_added:
        ave.sort()
        out["avet"] = (ave, [sb] * n)
    else:
        v_order = sorted(range(n), key=ave.__getitem__)
        out["avet"] = ([ave[i] for i in v_order], values(v_order))
    vaet_pairs.sort()
    out["vaet"] = ([k for k, _ in vaet_pairs], [v for _, v in vaet_pairs])
    ops = [b"\x01" if x else b"\x00" for x in adds]
    if no_history:
        keep = [d.a not in no_history for d in datoms]
        e_order = [i for i in e_order if keep[i]]
        a_order = [i for i in a_order if keep[i]]
    heavt = [eav[i] + sb + ops[i] for i in e_order]
    if retract_tags:
        tag = retract_tags.get
        e_vals: list[bytes | None] = [tag(i, b"") for i in e_order]
        a_vals: list[bytes | None] = [tag(i, b"") for i in a_order]
    else:
        e_vals = a_vals = [b""] * len(e_order)
    out["heavt"] = (heavt, e_vals)
    out["haevt"] = ([aev[i] + sb + ops[i] for i in a_order], a_vals)
    out["log"] = ([sb + eav[i] + ops[i] for i in e_order], e_vals)
    return out


__all__ = [
    "DB",
    "Database",
    "DatomIter",
    "Entity",
    "index_edit_lists",
    "index_edits",
    "prefix_end",
]
