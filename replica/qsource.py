"""A database value as the query layer sees it: ``query.source.DatomSource`` over a ``DB``.

Current (non-view) databases are read straight from the index trees through a cache of
*decoded leaves*: a leaf node's keys decoded once into datom tuples, kept by node address. Leaf
addresses are content hashes, so a decoded leaf stays valid in every later database value that
still holds that leaf (most leaves survive a transaction), and nothing needs invalidating. Views
(``as_of``, ``since``, ``history``, ``filter``) go through the general ``DB.datoms`` reads.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from query.errors import QueryError
from query.source import AttrInfo, DatomTuple, group_by_attribute
from replica.datom import (
    MAX_EID,
    aevt_tuple,
    attr_bytes,
    avet_tuple,
    eavt_tuple,
    eid_bytes,
    vaet_tuple,
)
from replica.db import DB, prefix_end
from replica.errors import ReplicaError
from replica.values import encode_value
from store.nodes import Node

if TYPE_CHECKING:
    from replica.schema import Attribute

__all__ = ["DBSource"]


# -- decoded leaves ----------------------------------------------------------------------------

_LEAVES: OrderedDict[bytes, list[DatomTuple]] = OrderedDict()
_LEAF_LIMIT = 8192  # leaves of ~60 datoms: ~500k decoded datoms at most


_BY_ENTITY: OrderedDict[tuple[bytes, ...], dict[int, tuple[DatomTuple, ...]]] = OrderedDict()


_DECODE = {"eavt": eavt_tuple, "aevt": aevt_tuple, "avet": avet_tuple, "vaet": vaet_tuple}


def _decoded(index: str, leaf: Node) -> list[DatomTuple]:
    got = _LEAVES.get(leaf.address)
    if got is not None:
        return got
    dec = _DECODE[index]
    got = [dec(k, v) for k, v in zip(leaf.keys, leaf.values, strict=True)]
    _LEAVES[leaf.address] = got
    if len(_LEAVES) > _LEAF_LIMIT:
        _LEAVES.popitem(last=False)
    return got


class DBSource:
    """``DatomSource`` over one ``DB`` value (see the module docstring)."""

    __slots__ = ("_attrs", "_counts", "_direct", "_groups", "db", "entity_maps", "nodes")

    def __init__(self, db: DB) -> None:
        self.db = db
        self.nodes = db.database.nodes
        self._direct = not (
            db.is_history or db.is_filtered or db._as_of is not None or db._since is not None
        )
        self._attrs: dict[str, AttrInfo | None] = {}
        #: entity id -> its attributes as ``replica.Entity`` reads them (replica/db.py
        #: ``_entity_map``): valid as long as this source, whose DB value never changes
        self.entity_maps: dict[int, dict[str, Any]] = {}
        #: entity id -> its asserted datoms by attribute (``entity_attrs``)
        self._groups: dict[int, dict[str, list[DatomTuple]]] = {}
        #: (e, a, v) -> estimate: index counts never change in one DB value
        self._counts: dict[tuple[Any, ...], int] = {}

    @property
    def is_history(self) -> bool:
        return self.db.is_history

    # -- schema ------------------------------------------------------------------------------

    def _attribute(self, a: str) -> Attribute | None:
        return self.db.schema.get(a[1:] if a.startswith(":") else a)

    def attr(self, a: str) -> AttrInfo | None:
        try:
            return self._attrs[a]
        except KeyError:
            pass
        at = self._attribute(a)
        info = None
        if at is not None:
            unique = at.unique.rpartition("/")[2] if at.unique else None
            info = AttrInfo(at.ident, at.is_ref, at.many, at.is_component, unique, True,
                            at.tuple_attrs, at.value_type)  # fmt: skip
        self._attrs[a] = info
        return info

    def attrs(self) -> Sequence[str]:
        return [a.ident for a in self.db.schema._attrs.values()]

    # -- trees -------------------------------------------------------------------------------

    def _leaves_cached(self, index: str, lo: bytes, hi: bytes | None) -> list[Node] | None:
        """:meth:`_leaves` without I/O: None unless every node on the way is cached."""
        peek = self.nodes.peek
        node = peek(self.db.commit.roots[index])
        if node is None:
            return None
        while node.level:
            keys = node.keys
            i = bisect_left(keys, lo)
            if i == len(keys):
                return []
            if i == len(keys) - 1 or (hi is not None and keys[i] >= hi):
                node = peek(node.children[i])
                if node is None:
                    return None
            else:
                break
        level = [node]
        while level[0].level:
            want: list[bytes] = []
            for n in level:
                keys = n.keys
                i = bisect_left(keys, lo)
                j = len(keys) - 1 if hi is None else min(bisect_left(keys, hi), len(keys) - 1)
                want.extend(n.children[i : j + 1])
            if not want:
                return []
            level = []
            for a in want:
                got = peek(a)
                if got is None:
                    return None
                level.append(got)
        return level

    async def _leaves(self, index: str, lo: bytes, hi: bytes | None) -> list[Node]:
        """Leaf nodes of ``index`` that may hold keys in ``[lo, hi)``, in order."""
        got = self._leaves_cached(index, lo, hi)
        if got is not None:
            return got
        nodes = self.nodes
        root = self.db.commit.roots[index]
        node = nodes.peek(root) or await nodes.load(root)
        # a narrow range stays within one child per level: descend without building lists
        while node.level:
            keys = node.keys
            i = bisect_left(keys, lo)
            if i == len(keys):
                return []
            if i == len(keys) - 1 or (hi is not None and keys[i] >= hi):
                child = node.children[i]
                node = nodes.peek(child) or await nodes.load(child)
            else:
                break
        level = [node]
        while level[0].level:
            want: list[bytes] = []
            for n in level:
                keys = n.keys
                i = bisect_left(keys, lo)
                j = len(keys) - 1 if hi is None else min(bisect_left(keys, hi), len(keys) - 1)
                want.extend(n.children[i : j + 1])
            if not want:
                return []
            peeked = [nodes.peek(a) for a in want]
            level = [n for n in peeked if n is not None]
            if len(level) < len(want):
                level = await nodes.load_many(want)
        return level

    async def _range(self, index: str, lo: bytes, hi: bytes | None) -> list[DatomTuple]:
        leaves = self._leaves_cached(index, lo, hi)
        if leaves is None:
            leaves = await self._leaves(index, lo, hi)
        return self._rows(index, leaves, lo, hi)

    @staticmethod
    def _rows(index: str, leaves: list[Node], lo: bytes, hi: bytes | None) -> list[DatomTuple]:
        """The decoded datoms of ``leaves`` with keys in ``[lo, hi)``."""
        if len(leaves) == 1:  # the common narrow read: one slice
            leaf = leaves[0]
            keys = leaf.keys
            if not keys:
                return []
            rows = _decoded(index, leaf)
            s = bisect_left(keys, lo) if keys[0] < lo else 0
            if hi is None or keys[-1] < hi:
                return rows[s:]  # a copy: the decoded leaf is shared
            return rows[s : bisect_left(keys, hi, s)]
        out: list[DatomTuple] = []
        for leaf in leaves:
            keys = leaf.keys
            if not keys:  # the single empty leaf of an empty tree
                continue
            rows = _decoded(index, leaf)
            s = bisect_left(keys, lo) if keys[0] < lo else 0
            if hi is None or keys[-1] < hi:
                out.extend(rows[s:] if s else rows)
            else:
                out.extend(rows[s : bisect_left(keys, hi)])
        return out

    async def _prefix(self, index: str, prefix: bytes) -> list[DatomTuple]:
        return await self._range(index, prefix, prefix_end(prefix))

    async def entity_attrs(self, e: int) -> Mapping[str, Sequence[DatomTuple]]:
        """The asserted datoms of entity ``e`` by attribute, in index order (one EAVT seek,
        kept for this DB value: at most 65,536 entities, the oldest dropped first). Shared:
        never to be changed by the caller."""
        got = self._groups.get(e)
        if got is not None:
            return got
        grouped = group_by_attribute(await self.entity_datoms(e))
        groups = self._groups
        if len(groups) >= 1 << 16:
            del groups[next(iter(groups))]
        groups[e] = grouped
        return grouped

    async def entity_datoms(self, e: int) -> Sequence[DatomTuple]:
        """``search(e=e)``: every datom of entity ``e`` (one EAVT seek)."""
        if not self._direct or type(e) is not int or not 0 <= e < MAX_EID:
            return await self.search(e=e)
        lo = e.to_bytes(16, "big")
        hi = (e + 1).to_bytes(16, "big")
        leaves = self._leaves_cached("eavt", lo, hi)
        if leaves is None:
            leaves = await self._leaves("eavt", lo, hi)
        return self._rows("eavt", leaves, lo, hi)

    # -- values ------------------------------------------------------------------------------

    def _coerce(self, a: str | None, v: Any) -> Any:
        return self.db._coerce_v(a, v)

    async def _ref_value(self, v: Any) -> int | None:
        if isinstance(v, int) and not isinstance(v, bool):
            return v if 0 <= v <= MAX_EID else None
        return await self.entid(v)

    # -- DatomSource -------------------------------------------------------------------------

    async def search(
        self, e: int | None = None, a: str | None = None, v: Any = None, tx: int | None = None
    ) -> Sequence[DatomTuple]:
        if a is None and v is None and tx is None and self._direct and type(e) is int:
            return await self._prefix("eavt", eid_bytes(e)) if 0 <= e <= MAX_EID else []
        if a is not None and a.startswith(":"):
            a = a[1:]
        if e is not None and not (
            isinstance(e, int) and not isinstance(e, bool) and 0 <= e <= MAX_EID
        ):
            return []
        info = self.attr(a) if a is not None else None
        if v is not None and info is not None and info.ref:
            v = await self._ref_value(v)
            if v is None:
                return []
        elif v is not None and a is not None:
            v = self._coerce(a, v)
        if not self._direct:
            rows = await self._view_search(e, a, v)
        else:
            rows = await self._direct_search(e, a, v, info)
        if tx is not None:
            rows = [r for r in rows if r[3] == tx]
        return rows

    async def _direct_search(
        self, e: int | None, a: str | None, v: Any, info: AttrInfo | None
    ) -> list[DatomTuple]:
        try:
            if e is not None:
                prefix = eid_bytes(e)
                if a is not None:
                    prefix += attr_bytes(a)
                    if v is not None:
                        prefix += encode_value(v)
                    return await self._prefix("eavt", prefix)
                rows = await self._prefix("eavt", prefix)
                if v is not None:
                    rows = [r for r in rows if r[2] == v and type(r[2]) is type(v)]
                return rows
            if a is not None:
                if v is not None:
                    return await self._prefix("avet", attr_bytes(a) + encode_value(v))
                return await self._prefix("aevt", attr_bytes(a))
            if v is not None:
                rows = []
                if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_EID:
                    rows = await self._prefix("vaet", eid_bytes(v))
                enc = encode_value(v)
                every = await self._range("eavt", b"", None)
                seen = set(rows)
                rows.extend(r for r in every if r not in seen and encode_value(r[2]) == enc)
                return rows
            return await self._range("eavt", b"", None)
        except ReplicaError:  # a value that cannot be encoded matches nothing
            return []

    async def _view_search(self, e: int | None, a: str | None, v: Any) -> list[DatomTuple]:
        db = self.db
        try:
            if e is not None:
                comps: tuple[Any, ...] = (e,) if a is None else (e, a) if v is None else (e, a, v)
                it = db.datoms("eavt", *comps)
            elif a is not None:
                it = db.datoms("aevt", a) if v is None else db.datoms("avet", a, v)
            else:
                it = db.datoms("eavt")
            rows = [(d.e, d.a, d.v, d.tx, d.added) async for d in it]
        except ReplicaError:
            return []
        if e is not None and a is None and v is not None:
            rows = [r for r in rows if r[2] == v]
        if e is None and a is None and v is not None:
            rows = [r for r in rows if r[2] == v]
        return rows

    async def search_es(self, a: str, es: Sequence[int]) -> Mapping[int, Sequence[DatomTuple]]:
        if a.startswith(":"):
            a = a[1:]
        out: dict[int, Sequence[DatomTuple]] = {}
        if not self._direct:
            for e in es:
                found = await self.search(e, a)
                if found:
                    out[e] = found
            return out
        ab = attr_bytes(a)
        total = await self.estimate(None, a)
        if len(es) * 32 < total:  # few entities: one index seek each
            for e in es:
                found = await self._prefix("eavt", eid_bytes(e) + ab)
                if found:
                    out[e] = found
            return out
        return await self._by_entity(a, ab)

    async def _by_entity(self, a: str, ab: bytes) -> dict[int, tuple[DatomTuple, ...]]:
        """Attribute ``a``'s datoms by entity, cached by the leaves that hold them (and by
        the index root, which saves listing the leaves while the index is unchanged)."""
        root_key = (self.db.commit.roots["aevt"], ab)
        got = _BY_ENTITY.get(root_key)
        if got is not None:
            _BY_ENTITY.move_to_end(root_key)
            return got
        leaves = await self._leaves("aevt", ab, prefix_end(ab))
        key = (ab, *(leaf.address for leaf in leaves))
        got = _BY_ENTITY.get(key)
        if got is not None:
            _BY_ENTITY.move_to_end(key)
            _BY_ENTITY[root_key] = got
            if len(_BY_ENTITY) > 128:
                _BY_ENTITY.popitem(last=False)
            return got
        by_e: dict[int, list[DatomTuple]] = {}
        for r in await self._range("aevt", ab, prefix_end(ab)):
            lst = by_e.get(r[0])
            if lst is None:
                by_e[r[0]] = [r]
            else:
                lst.append(r)
        # tuples, not lists: tuples of plain values drop out of the garbage collector's sight
        frozen = {e: tuple(rows) for e, rows in by_e.items()}
        _BY_ENTITY[key] = frozen
        _BY_ENTITY[root_key] = frozen
        while len(_BY_ENTITY) > 128:
            _BY_ENTITY.popitem(last=False)
        return frozen

    async def search_range(
        self,
        a: str,
        lo: Any = None,
        hi: Any = None,
        lo_inclusive: bool = True,
        hi_inclusive: bool = True,
    ) -> Sequence[DatomTuple]:
        if a.startswith(":"):
            a = a[1:]
        try:
            ab = attr_bytes(a)
            lo_v = None if lo is None else self._coerce(a, lo)
            hi_v = None if hi is None else self._coerce(a, hi)
            lo_key = ab if lo_v is None else ab + encode_value(lo_v)
            if not lo_inclusive and lo_v is not None:
                lo_key = prefix_end(lo_key) or lo_key
            hi_key = prefix_end(ab)
            if hi_v is not None:
                hv = ab + encode_value(hi_v)
                hi_key = prefix_end(hv) if hi_inclusive else hv
        except ReplicaError:
            return []
        if self._direct:
            return await self._range("avet", lo_key, hi_key)
        rows = []
        async for d in self.db.datoms("avet", a):
            rows.append((d.e, d.a, d.v, d.tx, d.added))
        return [
            r for r in rows
            if (lo_v is None or _key(ab, r[2]) >= lo_key) and (hi_key is None or _key(ab, r[2]) < hi_key)
        ]  # fmt: skip

    async def estimate(self, e: int | None = None, a: str | None = None, v: Any = None) -> int:
        try:
            key = (e, a, v, type(v))
            return self._counts[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable value
            return await self._estimate(e, a, v)
        n = await self._estimate(e, a, v)
        if len(self._counts) > 4096:
            self._counts.clear()
        self._counts[key] = n
        return n

    async def _estimate(self, e: int | None, a: str | None, v: Any) -> int:
        if a is not None and a.startswith(":"):
            a = a[1:]
        try:
            if e is not None:
                prefix = eid_bytes(e)
                index = "eavt"
                if a is not None:
                    prefix += attr_bytes(a)
                    if v is not None:
                        prefix += encode_value(self._coerce(a, v))
            elif a is not None:
                index = "aevt"
                prefix = attr_bytes(a)
                if v is not None:
                    info = self.attr(a)
                    if info is not None and info.ref and not isinstance(v, int):
                        return 1
                    index = "avet"
                    prefix += encode_value(self._coerce(a, v))
            elif v is not None and isinstance(v, int) and not isinstance(v, bool):
                index, prefix = "vaet", eid_bytes(v) if 0 <= v <= MAX_EID else b""
            else:
                index, prefix = "eavt", b""
        except ReplicaError:
            return 0
        tree = self.db._trees[index]
        if not prefix:
            n = await tree.count()
        else:
            n = await tree.count_range(prefix, prefix_end(prefix))
        if self.db.is_history:
            n *= 2
        return n

    async def entid(self, x: Any) -> int | None:
        if isinstance(x, bool):
            raise QueryError("not an entity id", x)
        if isinstance(x, int):
            return x if 0 <= x <= MAX_EID else None
        if isinstance(x, list | tuple) and len(x) == 2 and isinstance(x[0], str):
            a = x[0][1:] if x[0].startswith(":") else x[0]
            at = self._attribute(a)
            if at is None or at.unique is None:
                raise QueryError("lookup ref attribute is not unique", x)
            if x[1] is None:
                return None
            rows = await self.search(None, a, x[1])
            return rows[0][0] if rows else None
        if isinstance(x, str):
            rows = await self.search(None, "db/ident", x if not x.startswith(":") else x[1:])
            if not rows:
                from query.types import Keyword

                rows = await self.search(None, "db/ident", Keyword(x.lstrip(":")))
            return rows[0][0] if rows else None
        raise QueryError("cannot be resolved to an entity id", x)


def _key(ab: bytes, v: Any) -> bytes:
    return ab + encode_value(v)
