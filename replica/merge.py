"""Head sets and the deterministic merge of concurrent commits (docs/conflicts.md).

A branch's value is a set of head commits: adding a commit removes its ancestors (join =
union minus ancestors, :func:`join_heads`). Ancestry is decided with the generation number
every commit carries (1 + its largest parent's), so a walk stops as soon as it is below the
commit it looks for instead of walking the whole history.

When a branch has several heads they merge into one merge commit that is a pure function of
the set of heads (:func:`merge_heads`):

* its history trees (heavt, haevt, log) are the union of the heads' history trees: every
  assertion and retraction any head holds, found by tree diffs (O(d log n));
* its current indexes are recomputed, for each (entity, attribute) a diff touched, from the
  union's history under the attribute's rule, so the merged data is a function of the set of
  transactions and not of the order in which heads met (merge is commutative, associative and
  idempotent on data):

  - a retraction names the assertions it removed (their stamps, the history entry's value),
    so it removes only what it saw;
  - cardinality many: an element is present while one of its assertions is not removed
    (add-wins set);
  - cardinality one: the latest assertion (by stamp: hybrid clock, then tx id, whose high
    bits are the replica id) holds the value unless it was removed (last writer wins; a
    retraction never removes a value it did not see);
  - attributes without history (``db/noHistory``) merge three-way against the merge base;

* then ``db.unique/identity`` and ``db.unique/value`` collisions the recomputation produced
  are settled by the merge transaction's own datoms (one entity survives an identity
  collision; the earliest assertion keeps a unique value), and every conflict is recorded as
  ``conflict/*`` datoms on the merge transaction.

The merge commit has sorted parents, no wall time of its own, replica 0, the clock of its
latest parent ticked once, and a tx id derived from the hash of its parents: any two peers
merging the same heads write the byte-identical commit.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from query import edn
from query.types import Keyword
from replica.commit import Commit, commit_body, encode_commit, schema_body
from replica.datom import (
    STAMP_LEN,
    Stamp,
    attr_bytes,
    eid_bytes,
    eid_from,
)
from replica.db import DB, Database, prefix_end
from replica.errors import BranchError, ReplicaError, SchemaError
from replica.schema import SCHEMA_ATTRS, Attribute, Schema, attribute_from_entity, coerce_scalar
from replica.values import _dec_str, decode_value, encode_value
from store.codec import address_of, encode
from store.tree import Tree, prefetch_paths, scan_ranges
from store.tree import diff as tree_diff

#: names of the merge rules, as recorded in ``conflict/rule``
RULE_LWW = "lww"
RULE_RETRACT = "update-wins-over-retraction"
RULE_ADD_WINS = "add-wins"
RULE_IDENTITY = "unique-identity"
RULE_VALUE = "unique-value"
RULE_SCHEMA = "schema-lww"
RULE_NO_HISTORY = "no-history-three-way"
RULE_RESOLVER = "resolver"


class MergeError(BranchError):
    """A merge that cannot be made (e.g. a resolver the heads need is not registered here)."""


class MergeConflict(BranchError):
    """A strict merge found conflicts; nothing was written. ``conflicts`` lists them."""

    def __init__(self, conflicts: tuple[Conflict, ...]) -> None:
        self.conflicts = conflicts
        first = conflicts[0]
        super().__init__(
            f"{len(conflicts)} conflict(s), e.g. entity {first.entity} attribute "
            f"{first.attribute!r}: ours {first.ours!r}, theirs {first.theirs!r}"
        )


@dataclass(frozen=True, slots=True)
class Conflict:
    """One conflict a merge resolved (stored as ``conflict/*`` datoms on the merge tx).

    ``base``, ``ours``, ``theirs`` and ``winner`` are the attribute's value(s) in the merge
    base, the two sides and the result: a value or None for cardinality one, a frozenset for
    cardinality many (entity ids for identity collisions)."""

    entity: int
    attribute: str
    base: Any
    ours: Any
    theirs: Any
    winner: Any
    rule: str
    tx: int | None = None


# -- commit graph -----------------------------------------------------------------------------


async def is_ancestor(database: Database, a: bytes, b: bytes) -> bool:
    """Is commit ``a`` an ancestor of (or equal to) commit ``b``? Walks back from ``b`` only
    through commits whose generation is above ``a``'s."""
    if a == b:
        return True
    ga = (await database.commit(a)).gen
    seen = {b}
    stack = [b]
    while stack:
        c = await database.commit(stack.pop())
        for p in c.parents:
            if p == a:
                return True
            if p not in seen:
                seen.add(p)
                if (await database.commit(p)).gen > ga:
                    stack.append(p)
    return False


async def join_heads(database: Database, heads: Iterable[bytes]) -> list[bytes]:
    """The head set of ``heads``: sorted, without duplicates and without any commit that is
    an ancestor of another (the join of the branch-head CRDT)."""
    cands = sorted(set(heads))
    if len(cands) <= 1:
        return cands
    gens = {h: (await database.commit(h)).gen for h in cands}
    keep: list[bytes] = []
    # a commit can only be an ancestor of one with a larger generation
    for h in cands:
        higher = [o for o in cands if o != h and gens[o] > gens[h]]
        dominated = False
        for o in higher:
            if await is_ancestor(database, h, o):
                dominated = True
                break
        if not dominated:
            keep.append(h)
    return keep


async def tips(database: Database, heads: Iterable[bytes]) -> list[bytes]:
    """The head set with every merge commit replaced by its parents (recursively): the
    transactions a merge of ``heads`` must contain. Merging is a function of these, so a
    merge of (A, merge(B, C)) is the very commit merge(A, B, C): peers whose merges cross on
    the wire agree on the next merge instead of merging each other's merges forever."""
    out: set[bytes] = set()
    stack = list(heads)
    seen: set[bytes] = set()
    while stack:
        h = stack.pop()
        if h in seen:
            continue
        seen.add(h)
        c = await database.commit(h)
        if len(c.parents) > 1:
            stack.extend(c.parents)
        else:
            out.add(h)
    return await join_heads(database, out)


async def merge_bases(
    database: Database, ours: Iterable[bytes], theirs: Iterable[bytes]
) -> list[bytes]:
    """The best common ancestors of the commits ``ours`` and ``theirs`` (several after
    criss-cross merges), sorted. Walks down from both sides in generation order and stops
    when every commit still queued is below a common ancestor already found."""
    flags: dict[bytes, int] = {}
    heap: list[tuple[int, bytes]] = []

    async def push(addr: bytes, flag: int) -> None:
        old = flags.get(addr, 0)
        if old | flag == old:
            return
        flags[addr] = old | flag
        heapq.heappush(heap, (-(await database.commit(addr)).gen, addr))

    for h in ours:
        await push(h, 1)
    for h in theirs:
        await push(h, 2)
    found: list[bytes] = []
    while heap and any(not flags[a] & 4 for _, a in heap):
        _, addr = heapq.heappop(heap)
        f = flags[addr]
        if f & 3 == 3 and not f & 4:
            found.append(addr)
            f |= 4
        for p in (await database.commit(addr)).parents:
            await push(p, f)
    # drop a found commit that is an ancestor of another found one
    out = []
    for c in found:
        dominated = False
        for o in found:
            if o != c and await is_ancestor(database, c, o):
                dominated = True
                break
        if not dominated:
            out.append(c)
    return sorted(set(out))


# -- resolvers --------------------------------------------------------------------------------

Resolver = Callable[[Any, Any, Any], Any]

_RESOLVERS: dict[str, Resolver] = {}

#: the attribute that names an attribute's resolver, on the attribute's entity
RESOLVER_ATTR = "db.merge/resolver"
#: on an entity a merge unified into another: the entity it now is (docs/conflicts.md)
ALIAS_ATTR = "db.merge/into"


def register_resolver(name: str, fn: Resolver) -> None:
    """Make ``fn(base, ours, theirs) -> value`` available to merges under ``name`` (a name
    and a version, ``"max@1"``). An attribute uses it when its entity says so
    (``{"db/ident": "x/y", "db.merge/resolver": "max@1"}``): its cardinality-one conflicts are
    then resolved by ``fn`` instead of last writer wins. ``fn`` must be pure (the same inputs
    give the same value on every peer); a peer asked to merge such a conflict without the
    named resolver refuses (MergeError) rather than diverge."""
    if not callable(fn):
        raise ReplicaError(f"resolver {name!r} must be callable")
    if not isinstance(name, str) or name.count("@") != 1 or name.startswith("@"):
        raise ReplicaError(f"resolver name must look like 'name@version', got {name!r}")
    _RESOLVERS[name] = fn


def unregister_resolver(name: str) -> None:
    _RESOLVERS.pop(name, None)


# -- helpers ----------------------------------------------------------------------------------


def _split_ea(key: bytes) -> tuple[bytes, str, int]:
    """The entity+attribute prefix of an eavt/heavt key, the attribute, and where V starts."""
    raw, pos = _dec_str(key, 16)
    return key[:pos], raw.decode(), pos


def _tags(value: bytes) -> list[bytes]:
    return [value[i : i + STAMP_LEN] for i in range(0, len(value), STAMP_LEN)]


def _merge_tx_id(heads: list[bytes]) -> int:
    h = hashlib.sha256(b"replica-merge\x00" + b"".join(heads)).digest()
    hi = int.from_bytes(h[:8], "big") or 1
    return hi << 64


def _resolve_ops(ops: list[tuple[bytes, bytes, int, bytes]], many: bool) -> dict[bytes, bytes]:
    """The current entries ``{value key: tags}`` of one (entity, attribute) from its history
    ops ``(value key, stamp, op, value)`` (docs/conflicts.md)."""
    asserts: dict[bytes, list[bytes]] = {}
    named: set[tuple[bytes, bytes]] = set()
    legacy: list[tuple[bytes, bytes]] = []
    for vk, stamp, op, val in ops:
        if op:
            asserts.setdefault(vk, []).append(stamp)
        elif val:
            for t in _tags(val):
                named.add((vk, t))
        else:
            legacy.append((vk, stamp))
    for vk, stamp in legacy:  # a retraction without tags removes every earlier assertion
        for t in asserts.get(vk, ()):
            if t < stamp:
                named.add((vk, t))
    if many:
        out: dict[bytes, bytes] = {}
        for vk, tags in asserts.items():
            live = sorted((t for t in tags if (vk, t) not in named), reverse=True)
            if live:
                out[vk] = b"".join(live)
        return out
    # the latest assertion, unless removed; two assertions share a stamp only when a merge
    # moved one onto a surviving entity: then the one not removed counts
    top = max((t for tags in asserts.values() for t in tags), default=None)
    if top is None:
        return {}
    live = [vk for vk, tags in asserts.items() if top in tags and (vk, top) not in named]
    return {max(live): top} if live else {}


def _value(vk: bytes) -> Any:
    return decode_value(vk, 0)[0]


def _shown(entries: Mapping[bytes, bytes], many: bool) -> Any:
    if many:
        return frozenset(_value(vk) for vk in entries)
    for vk in entries:
        return _value(vk)
    return None


def _plain(value: Any) -> Any:
    """A schema property value as stored in conflict records (keywords as strings)."""
    if isinstance(value, Keyword):
        return str(value)
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _edn(value: Any) -> str:
    if isinstance(value, frozenset):
        return edn.dumps(frozenset(value))
    return edn.dumps(value)


@dataclass
class _Edits:
    """Pending edits of the seven trees (later edits of a key win)."""

    trees: dict[str, dict[bytes, bytes | None]] = field(
        default_factory=lambda: {n: {} for n in ("eavt", "aevt", "avet", "vaet")}
    )

    def current(
        self, e_a: bytes, ab: bytes, eb: bytes, vk: bytes, ref: bool, val: bytes | None
    ) -> None:
        t = self.trees
        t["eavt"][e_a + vk] = val
        t["aevt"][ab + eb + vk] = val
        t["avet"][ab + vk + eb] = val
        if ref:
            t["vaet"][eid_bytes(_value(vk)) + ab + eb] = val

    async def apply(self, nodes: Any, roots: dict[str, bytes]) -> None:
        for name, edits in self.trees.items():
            if edits:
                keys = sorted(edits)
                tree = Tree(nodes, roots[name])
                await _prefetch_edit(tree, keys)
                roots[name] = (
                    await tree.edit_sorted(keys, [edits[k] for k in keys], flush=False)
                ).root
                edits.clear()


async def _prefetch_edit(tree: Tree, keys: list[bytes]) -> None:
    """Load the nodes a batch edit of the sorted ``keys`` will read, level by level (a few
    store round trips instead of one per node), as many leaves as fit in half the cache."""
    nodes = tree.nodes
    limit = nodes.cache_bytes // (6 * nodes.config.target)
    await prefetch_paths(tree, keys, limit)


class _Merger:
    """Folds head commits one by one into an accumulated state (roots + schema)."""

    def __init__(self, database: Database, first: Commit, schema: Schema, stamp: Stamp) -> None:
        self.database = database
        self.nodes = database.nodes
        self.roots = dict(first.roots)
        self.schema = schema
        self.heads = [first.address]
        self.stamp = stamp
        self.sb = stamp.encode()
        self.conflicts: list[Conflict] = []
        self.resolvers: dict[str, str] = {}
        # how many datoms the merge transaction itself asserts/retracts, and their history
        # entries not yet written
        self.own = 0
        self.pending: list[tuple[bytes, bytes]] = []
        self.ours_eavt = first.roots["eavt"]
        self.retyped: set[str] = set()  # attributes defined with two value types
        # the items under (tree root, prefix), read ahead by _read_ahead: trees are values,
        # so an entry stays true (a tree edited since has a new root)
        self._scans: dict[tuple[bytes, bytes], list[tuple[bytes, bytes]]] = {}

    # -- reading ----------------------------------------------------------------------------

    async def _read_ahead(self, root: bytes, prefixes: Iterable[bytes]) -> None:
        """Scan the tree ``root`` under each of ``prefixes`` together, level by level
        (store/tree.py ``scan_ranges``), for the :meth:`_scan` calls that follow."""
        scans = self._scans
        want = [p for p in dict.fromkeys(prefixes) if (root, p) not in scans]
        if not want:
            return
        found = await scan_ranges(Tree(self.nodes, root), [(p, prefix_end(p)) for p in want])
        for p, items in zip(want, found, strict=True):
            scans[(root, p)] = items

    async def _scan(self, root: bytes, prefix: bytes) -> list[tuple[bytes, bytes]]:
        known = self._scans.get((root, prefix))
        if known is not None:
            return known
        out: list[tuple[bytes, bytes]] = []
        async for batch in Tree(self.nodes, root).scan(prefix, prefix_end(prefix)):
            out.extend(batch)
        return out

    async def _scan_one(self, root: bytes, prefix: bytes) -> bool:
        """Does any key start with ``prefix``?"""
        async for batch in Tree(self.nodes, root).scan(prefix, prefix_end(prefix)):
            if batch:
                return True
        return False

    async def _entries(self, root: bytes, e_a: bytes) -> dict[bytes, bytes]:
        n = len(e_a)
        return {k[n:]: v for k, v in await self._scan(root, e_a)}

    # -- one fold step ----------------------------------------------------------------------

    async def fold(self, theirs: Commit, their_schema: Schema) -> None:
        nodes = self.nodes
        ours_roots = dict(self.roots)
        self.ours_eavt = ours_roots["eavt"]
        # 1. history: the union, and which (e, a) either side changed
        only_ours: set[bytes] = set()
        only_theirs: set[bytes] = set()
        ours_side: set[bytes] = set()  # (e, a) with history only we have
        theirs_side: set[bytes] = set()  # (e, a) with history only they have
        touched: dict[bytes, str] = {}
        add_h: list[tuple[bytes, bytes]] = []
        async for batch in tree_diff(
            Tree(nodes, ours_roots["heavt"]), Tree(nodes, theirs.roots["heavt"])
        ):
            for key, old, new in batch:
                e_a, a, _ = _split_ea(key)
                touched[e_a] = a
                if old is None:
                    only_theirs.add(key)
                    theirs_side.add(e_a)
                    assert new is not None
                    add_h.append((key, new))
                elif new is None:
                    only_ours.add(key)
                    ours_side.add(e_a)
        # the history union first, while the heavt nodes the diff read are still cached;
        # then the eavt diff, whose nodes the scans and edits below read again
        await self._add_history(add_h)
        async for batch in tree_diff(
            Tree(nodes, ours_roots["eavt"]), Tree(nodes, theirs.roots["eavt"])
        ):
            for key, _, _ in batch:
                e_a, a, _ = _split_ea(key)
                touched[e_a] = a
        if not touched:
            self.heads.append(theirs.address)
            return
        base_eavt: bytes | None = None

        async def base_root() -> bytes:
            nonlocal base_eavt
            if base_eavt is None:
                bases = await merge_bases(self.database, self.heads, [theirs.address])
                if bases:
                    base_eavt = (await self.database.commit(bases[0])).roots["eavt"]
                else:
                    base_eavt = (await Tree.empty(nodes)).root
            return base_eavt

        # 2. schema attributes first: the merged schema decides the data's rules
        order = sorted(touched, key=lambda k: (touched[k] not in SCHEMA_ATTRS, k))
        edits = _Edits()
        schema_entities: set[bytes] = set()
        unique_checks: list[tuple[str, bytes]] = []
        schema_done = False
        for pos, e_a in enumerate(order):
            a = touched[e_a]
            if a not in SCHEMA_ATTRS and not schema_done:
                schema_done = True
                await edits.apply(nodes, self.roots)
                if schema_entities:
                    self.schema = await self._merged_schema(schema_entities, their_schema)
                await self._read_ahead_fold(
                    order[pos:], touched, ours_side, theirs_side, ours_roots, theirs.roots
                )
            attr = self.schema.attribute(a) or Attribute(a)
            if a in SCHEMA_ATTRS:
                schema_entities.add(e_a[:16])
            many = attr.many
            one_sided = not attr.no_history and (e_a in ours_side) != (e_a in theirs_side)
            if one_sided and e_a in ours_side:
                # only we changed it: the union of histories is ours, so is the value
                if attr.unique:
                    unique_checks.extend(
                        (a, vk) for vk in await self._entries(ours_roots["eavt"], e_a)
                    )
                continue
            ours = await self._entries(ours_roots["eavt"], e_a)
            their = await self._entries(theirs.roots["eavt"], e_a)
            rule = None
            if one_sided:
                # only they changed it: their value is the union's
                merged = dict(their)
                base = ours
            elif attr.no_history:
                base = await self._entries(await base_root(), e_a)
                merged = self._three_way(base, ours, their, many)
                rule = RULE_NO_HISTORY
            else:
                ops: list[tuple[bytes, bytes, int, bytes]] = []
                base_ops: list[tuple[bytes, bytes, int, bytes]] = []
                n = len(e_a)
                for key, val in await self._scan(self.roots["heavt"], e_a):
                    op = (key[n : -1 - STAMP_LEN], key[-1 - STAMP_LEN : -1], key[-1], val)
                    ops.append(op)
                    if key not in only_ours and key not in only_theirs:
                        base_ops.append(op)
                merged = _resolve_ops(ops, many)
                base = _resolve_ops(base_ops, many)
            if many:
                if ours != base and their != base:
                    self._add_wins_conflicts(e_a, a, base, ours, their, merged, rule)
            elif ours != base and their != base and set(ours) != set(their):
                merged, rule = await self._resolve(e_a, a, attr, base, ours, their, merged, rule)
                self._conflict(e_a, a, many, base, ours, their, merged, rule)
            if not many and not attr.no_history and not one_sided:
                # values that lost (held by a side, not kept, and not retracted by anyone)
                # are retracted by the merge in history, so time travel shows the result
                named = {(o[0], t) for o in ops if not o[2] for t in _tags(o[3])}
                e = eid_from(e_a, 0)
                for side in (ours, their):
                    for vk, tags in side.items():
                        unnamed = [t for t in _tags(tags) if (vk, t) not in named]
                        if vk not in merged and unnamed:
                            named.update((vk, t) for t in unnamed)
                            self._own_history(e, attr, vk, False, b"".join(unnamed))
            if merged != ours:
                ab = attr_bytes(a)
                eb = e_a[:16]
                for vk in ours:
                    if vk not in merged:
                        edits.current(e_a, ab, eb, vk, attr.is_ref, None)
                for vk, tags in merged.items():
                    if ours.get(vk) != tags:
                        edits.current(e_a, ab, eb, vk, attr.is_ref, tags)
            if attr.unique:
                unique_checks.extend((a, vk) for vk in merged)
        await edits.apply(nodes, self.roots)
        if not schema_done and schema_entities:
            self.schema = await self._merged_schema(schema_entities, their_schema)
        await self._retype()
        await self._forward(touched, unique_checks)
        await self._composites(touched, unique_checks)
        await self._settle_uniques(unique_checks)
        self._scans.clear()
        self.heads.append(theirs.address)

    async def _read_ahead_fold(
        self,
        pairs: list[bytes],
        touched: Mapping[bytes, str],
        ours_side: set[bytes],
        theirs_side: set[bytes],
        ours_roots: Mapping[str, bytes],
        theirs_roots: Mapping[str, bytes],
    ) -> None:
        """Read ahead, in a few batched descents, what :meth:`fold` is about to scan for
        each of the (entity, attribute) ``pairs`` (the same choices, under the merged
        schema): the current entries on each side, and the merged history when both sides
        changed it."""
        ours: list[bytes] = []
        theirs: list[bytes] = []
        both: list[bytes] = []
        for e_a in pairs:
            attr = self.schema.attribute(touched[e_a]) or Attribute(touched[e_a])
            one_sided = not attr.no_history and (e_a in ours_side) != (e_a in theirs_side)
            if one_sided and e_a in ours_side:
                if attr.unique:
                    ours.append(e_a)
                continue
            ours.append(e_a)
            theirs.append(e_a)
            if not one_sided and not attr.no_history:
                both.append(e_a)
        await self._read_ahead(ours_roots["eavt"], ours)
        await self._read_ahead(theirs_roots["eavt"], theirs)
        await self._read_ahead(self.roots["heavt"], both)

    async def _forward(self, touched: Mapping[bytes, str], checks: list[tuple[str, bytes]]) -> None:
        """Entities an earlier merge unified into another (``db.merge/into``) that got new
        datoms from a writer who had not seen that merge: move those onto the survivor, as
        the unification did with the rest (so the result does not depend on merge order)."""
        edits = _Edits()
        alias_ab = attr_bytes(ALIAS_ATTR)
        if not await self._scan_one(self.roots["aevt"], alias_ab):
            return  # no entity was ever unified into another
        for eb in sorted({e_a[:16] for e_a, a in touched.items() if a != ALIAS_ATTR}):
            into = await self._entries(self.roots["eavt"], eb + alias_ab)
            if not into:
                continue
            target = _value(min(into))
            hops = 0
            while hops < 64:  # follow a chain of aliases to the entity that survived
                nxt = await self._entries(self.roots["eavt"], eid_bytes(target) + alias_ab)
                if not nxt:
                    break
                target = _value(min(nxt))
                hops += 1
            checks.extend(await self._unify(edits, target, eid_from(eb, 0)))
        await edits.apply(self.nodes, self.roots)

    async def _retype(self) -> None:
        """After one attribute was defined with two value types, retract (and record) the
        values that do not fit the definition that won."""
        edits = _Edits()
        for ident in sorted(self.retyped):
            attr = self.schema.attribute(ident)
            if attr is None or attr.value_type is None:
                continue
            ab = attr_bytes(ident)
            for k, v in await self._scan(self.roots["aevt"], ab):
                e = eid_from(k, len(ab))
                vk = k[len(ab) + 16 :]
                value = _value(vk)
                try:
                    fits = coerce_scalar(value, attr.value_type, ident) == value
                except ReplicaError:
                    fits = False
                if not fits:
                    self._own(edits, e, attr, vk, False, v)
                    self.conflicts.append(Conflict(e, ident, None, value, None, None, RULE_SCHEMA))
        self.retyped.clear()
        await edits.apply(self.nodes, self.roots)

    async def _composites(
        self, touched: Mapping[bytes, str], checks: list[tuple[str, bytes]]
    ) -> None:
        """Recompute the composite tuples whose parts the merge changed."""
        todo: set[tuple[bytes, str]] = set()
        for e_a, a in touched.items():
            for comp in self.schema.composites_of.get(a, ()):
                todo.add((e_a[:16], comp.ident))
        if not todo:
            return
        edits = _Edits()
        for eb, ident in sorted(todo):
            found = self.schema.attribute(ident)
            if found is None or found.tuple_attrs is None:
                continue
            comp = found
            values = []
            for part in found.tuple_attrs:
                cur = await self._entries(self.roots["eavt"], eb + attr_bytes(part))
                values.append(_value(min(cur)) if cur else None)
            new = None if all(v is None for v in values) else encode_value(tuple(values))
            e_a = eb + attr_bytes(ident)
            have = await self._entries(self.roots["eavt"], e_a)
            e = eid_from(eb, 0)
            for vk, tags in have.items():
                if vk != new:
                    self._own(edits, e, comp, vk, False, tags)
            if new is not None and new not in have:
                self._own(edits, e, comp, new, True, b"")
                if comp.unique:
                    checks.append((ident, new))
        await edits.apply(self.nodes, self.roots)

    async def _resolve(
        self,
        e_a: bytes,
        a: str,
        attr: Attribute,
        base: dict[bytes, bytes],
        ours: dict[bytes, bytes],
        their: dict[bytes, bytes],
        merged: dict[bytes, bytes],
        rule: str | None,
    ) -> tuple[dict[bytes, bytes], str]:
        """The rule (and result) for a cardinality-one conflict."""
        if rule is not None:
            return merged, rule
        if a in SCHEMA_ATTRS:
            return merged, RULE_SCHEMA
        name = await self._resolver_name(attr)
        if name is not None:
            fn = _RESOLVERS.get(name)
            if fn is None:
                raise MergeError(
                    f"attribute {a!r} is merged by resolver {name!r}, which is not registered "
                    "here; register it (replica.register_resolver) to merge"
                )
            try:
                value = fn(_shown(base, False), _shown(ours, False), _shown(their, False))
            except Exception as exc:
                raise MergeError(f"resolver {name!r} failed on attribute {a!r}: {exc!r}") from exc
            self.resolvers[a] = name
            if value is None:
                resolved: dict[bytes, bytes] = {}
            else:
                resolved = {encode_value(value): self.sb}
            e = eid_from(e_a, 0)
            for vk in resolved:
                self._own_history(e, attr, vk, True, b"")
            for vk, tags in merged.items():
                if vk not in resolved:
                    self._own_history(e, attr, vk, False, tags)
            return resolved, RULE_RESOLVER
        if not ours or not their:
            return merged, RULE_RETRACT
        return merged, RULE_LWW

    async def _resolver_name(self, attr: Attribute) -> str | None:
        if attr.eid is None:
            return None
        prefix = eid_bytes(attr.eid) + attr_bytes(RESOLVER_ATTR)
        for k, _ in await self._scan(self.roots["eavt"], prefix):
            name = _value(k[len(prefix) :])
            return name if isinstance(name, str) else None
        return None

    def _conflict(
        self,
        e_a: bytes,
        a: str,
        many: bool,
        base: Mapping[bytes, bytes],
        ours: Mapping[bytes, bytes],
        their: Mapping[bytes, bytes],
        merged: Mapping[bytes, bytes],
        rule: str,
    ) -> None:
        self.conflicts.append(
            Conflict(
                eid_from(e_a, 0),
                a,
                _shown(base, many),
                _shown(ours, many),
                _shown(their, many),
                _shown(merged, many),
                rule,
            )
        )

    def _add_wins_conflicts(
        self,
        e_a: bytes,
        a: str,
        base: Mapping[bytes, bytes],
        ours: Mapping[bytes, bytes],
        their: Mapping[bytes, bytes],
        merged: Mapping[bytes, bytes],
        rule: str | None,
    ) -> None:
        """Cardinality many: an element one side removed while the other re-asserted it
        (the re-assertion wins). One record per entity and attribute."""
        for vk, tag in base.items():
            o, t = ours.get(vk), their.get(vk)
            if (o is None and t is not None and t != tag) or (
                t is None and o is not None and o != tag
            ):
                self._conflict(e_a, a, True, base, ours, their, merged, rule or RULE_ADD_WINS)
                return

    @staticmethod
    def _three_way(
        base: dict[bytes, bytes], ours: dict[bytes, bytes], their: dict[bytes, bytes], many: bool
    ) -> dict[bytes, bytes]:
        if ours == base:
            return dict(their)
        if their == base or ours == their:
            return dict(ours)
        if not many:
            cands = [(t, vk) for side in (ours, their) for vk, t in side.items()]
            if not cands:
                return {}
            tag, vk = max(cands)
            return {vk: tag}
        out: dict[bytes, bytes] = {}
        for vk in set(ours) | set(their):
            o, t = ours.get(vk), their.get(vk)
            if vk in base and (o is None or t is None) and (o or t) == base[vk]:
                continue  # removed on one side, untouched on the other
            out[vk] = max(x for x in (o, t) if x is not None)
        return out

    # -- history ----------------------------------------------------------------------------

    async def _add_history(self, entries: list[tuple[bytes, bytes]]) -> None:
        if not entries:
            return
        heavt: dict[bytes, bytes | None] = {}
        haevt: dict[bytes, bytes | None] = {}
        log: dict[bytes, bytes | None] = {}
        for key, val in entries:
            _, _, pos = _split_ea(key)
            eb, ab = key[:16], key[16:pos]
            rest = key[pos:]  # V S op
            v = rest[: -1 - STAMP_LEN]
            s = rest[-1 - STAMP_LEN : -1]
            op = rest[-1:]
            heavt[key] = val
            haevt[ab + eb + rest] = val
            log[s + eb + ab + v + op] = val
        for name, edits in (("heavt", heavt), ("haevt", haevt), ("log", log)):
            keys = sorted(edits)
            tree = Tree(self.nodes, self.roots[name])
            await _prefetch_edit(tree, keys)
            self.roots[name] = (
                await tree.edit_sorted(keys, [edits[k] for k in keys], flush=False)
            ).root

    # -- schema -----------------------------------------------------------------------------

    async def _merged_schema(self, entities: set[bytes], their_schema: Schema) -> Schema:
        attrs = {a.ident: a for a in self.schema.user_attributes()}
        for a in their_schema.user_attributes():
            attrs.setdefault(a.ident, a)
        for eb in sorted(entities):
            eid = eid_from(eb, 0)
            entity: dict[str, Any] = {}
            for k, _v in await self._scan(self.roots["eavt"], eb):
                _, ident, pos = _split_ea(k)
                if ident in SCHEMA_ATTRS:
                    entity[ident] = decode_value(k, pos)[0]
            for old in (self.schema.by_eid(eid), their_schema.by_eid(eid)):
                if old is not None and attrs.get(old.ident) is old:
                    del attrs[old.ident]
            try:
                new = attribute_from_entity(
                    {
                        k: Keyword(v) if isinstance(v, str) and k != "db/doc" else v
                        for k, v in entity.items()
                    },
                    eid,
                )
            except SchemaError:
                # the per-property result is no valid attribute: the side that changed the
                # definition last keeps its whole definition
                ours_a, theirs_a = self.schema.by_eid(eid), their_schema.by_eid(eid)
                new = max(
                    (x for x in (ours_a, theirs_a) if x is not None),
                    key=lambda x: x.ident,
                    default=None,
                )
            if new is None:
                continue
            prior = attrs.get(new.ident)
            if prior is not None and prior.eid != eid and prior.to_map() != new.to_map():
                # one ident defined differently on two entities: the smaller entity id's
                # definition wins whole (they unify on db/ident); one record per property
                keep = prior if (prior.eid or 0) < eid else new
                if prior.value_type != new.value_type:
                    self.retyped.add(new.ident)
                pm, nm, km = prior.to_map(), new.to_map(), keep.to_map()
                for prop in sorted(set(pm) | set(nm)):
                    if pm.get(prop) != nm.get(prop):
                        self.conflicts.append(
                            Conflict(
                                keep.eid or 0,
                                prop,
                                None,
                                _plain(pm.get(prop)),
                                _plain(nm.get(prop)),
                                _plain(km.get(prop)),
                                RULE_SCHEMA,
                            )
                        )
            if prior is None or (prior.eid or 0) >= eid:
                attrs[new.ident] = new
        return Schema(attrs, self.schema.flexibility)

    # -- uniqueness -------------------------------------------------------------------------

    async def _settle_uniques(self, checks: list[tuple[str, bytes]]) -> None:
        rounds = 0
        while checks and rounds < 8:
            rounds += 1
            edits = _Edits()
            next_checks: list[tuple[str, bytes]] = []
            done: set[int] = set()

            def identity_first(check: tuple[str, bytes]) -> tuple[bool, str, bytes]:
                attr = self.schema.attribute(check[0])
                return (not (attr is not None and attr.identity), *check)

            todo = sorted(set(checks), key=identity_first)
            await self._read_ahead(
                self.roots["avet"],
                [
                    attr_bytes(a) + vk
                    for a, vk in todo
                    if (attr := self.schema.attribute(a)) is not None and attr.unique
                ],
            )
            for a, vk in todo:
                attr = self.schema.attribute(a)
                if attr is None or not attr.unique:
                    continue
                ab = attr_bytes(a)
                holders = await self._scan(self.roots["avet"], ab + vk)
                owners = sorted(
                    (v[:STAMP_LEN], eid_from(k, len(k) - 16), v)
                    for k, v in holders
                    if len(k) - 16 == len(ab) + len(vk)
                )
                eids = sorted({e for _, e, _ in owners} - done)
                if len(eids) < 2:
                    continue
                if attr.identity:
                    survivor, losers = eids[0], eids[1:]
                    for loser in losers:
                        done.add(loser)
                        next_checks.extend(await self._unify(edits, survivor, loser))
                    self.conflicts.append(
                        Conflict(
                            survivor,
                            a,
                            None,
                            eids[0],
                            eids[1] if len(eids) > 1 else None,
                            survivor,
                            RULE_IDENTITY,
                        )
                    )
                else:
                    keeper = owners[0][1]  # the earliest assertion keeps the value
                    losers = []
                    for _, e, tags in owners[1:]:
                        if e != keeper:
                            losers.append(e)
                            self._own(edits, e, attr, vk, False, tags)
                    # ours/theirs: the two holders (entity ids), winner: the keeper
                    pair = sorted([keeper, losers[0]])
                    self.conflicts.append(
                        Conflict(keeper, a, None, pair[0], pair[1], keeper, RULE_VALUE)
                    )
                await edits.apply(self.nodes, self.roots)
            checks = next_checks

    def _own(
        self, edits: _Edits, e: int, attr: Attribute, vk: bytes, added: bool, tags: bytes
    ) -> None:
        """A datom of the merge transaction itself: current index edit now, history entry
        (at the merge's stamp; a retraction names ``tags``) with the next history flush."""
        eb = eid_bytes(e)
        ab = attr_bytes(attr.ident)
        edits.current(eb + ab, ab, eb, vk, attr.is_ref, self.sb if added else None)
        self._own_history(e, attr, vk, added, tags)

    def _own_history(self, e: int, attr: Attribute, vk: bytes, added: bool, tags: bytes) -> None:
        self.own += 1
        if not attr.no_history:
            key = (
                eid_bytes(e)
                + attr_bytes(attr.ident)
                + vk
                + self.sb
                + (b"\x01" if added else b"\x00")
            )
            self.pending.append((key, b"" if added else tags))

    async def _flush_history(self, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
        entries = dict(self.pending)
        entries.update(extra)
        self.pending.clear()
        await self._add_history(sorted(entries.items()))

    async def _unify(self, edits: _Edits, survivor: int, loser: int) -> list[tuple[str, bytes]]:
        """Make ``loser`` and ``survivor`` one entity: the loser's datoms are retracted by
        the merge, and the survivor receives them as if their transactions had asserted
        them on it (history entries at their original stamps), so the result does not
        depend on which merge unified them; refs to the loser likewise. The survivor keeps
        its own schema definition (an attribute entity's ``db/*`` datoms are not moved)."""
        await edits.apply(self.nodes, self.roots)
        checks: list[tuple[str, bytes]] = []
        fab: list[tuple[bytes, bytes]] = []
        touched: set[tuple[int, str]] = set()
        copies: dict[tuple[int, str], dict[bytes, bytes]] = {}  # attributes without history
        sb_ = eid_bytes(survivor)
        lb = eid_bytes(loser)
        before: dict[tuple[int, str], tuple[dict[bytes, bytes], dict[bytes, bytes]]] = {}
        for k, v in await self._scan(self.roots["eavt"], lb):
            _, a, pos = _split_ea(k)
            vk = k[pos:]
            if a == ALIAS_ATTR:
                continue  # the loser stays an alias (of the survivor: repointed below)
            attr = self.schema.attribute(a) or Attribute(a)
            self._own(edits, loser, attr, vk, False, v)
            if a in SCHEMA_ATTRS:
                continue
            if attr.is_ref and vk == encode_value(loser):
                vk = encode_value(survivor)  # the loser's refs to itself
            if (survivor, a) not in before:
                mine = await self._entries(self.roots["eavt"], sb_ + attr_bytes(a))
                before[(survivor, a)] = (mine, {})
            before[(survivor, a)][1][vk] = v
            touched.add((survivor, a))
            if attr.no_history:
                copies.setdefault((survivor, a), {})[vk] = v
            else:
                for t in _tags(v):
                    fab.append((sb_ + attr_bytes(a) + vk + t + b"\x01", b""))
            if attr.unique and not attr.identity:
                checks.append((a, vk))
        for k, v in await self._scan(self.roots["vaet"], lb):
            raw, pos = _dec_str(k, 16)
            a = raw.decode()
            e = eid_from(k, pos)
            if e == loser:
                continue
            attr = self.schema.attribute(a) or Attribute(a)
            self._own(edits, e, attr, encode_value(loser), False, v)
            touched.add((e, a))
            svk = encode_value(survivor)
            if attr.no_history:
                copies.setdefault((e, a), {})[svk] = v
            else:
                for t in _tags(v):
                    fab.append((eid_bytes(e) + attr_bytes(a) + svk + t + b"\x01", b""))
        alias = self.schema.attribute(ALIAS_ATTR)
        assert alias is not None
        if not await self._entries(self.roots["eavt"], lb + attr_bytes(ALIAS_ATTR)):
            self._own(edits, loser, alias, encode_value(survivor), True, b"")
        await edits.apply(self.nodes, self.roots)
        await self._flush_history(fab)
        for e, a in sorted(touched):
            attr = self.schema.attribute(a) or Attribute(a)
            eb = eid_bytes(e)
            ab = attr_bytes(a)
            e_a = eb + ab
            cur = await self._entries(self.roots["eavt"], e_a)
            if attr.no_history:
                merged = dict(cur)
                for vk, tags in copies.get((e, a), {}).items():
                    if attr.many:
                        merged[vk] = max(tags, merged.get(vk, b""))
                    elif not merged or max(merged.values()) < tags:
                        merged = {vk: tags}
            else:
                merged = _resolve_ops(
                    [
                        (k[len(e_a) : -1 - STAMP_LEN], k[-1 - STAMP_LEN : -1], k[-1], val)
                        for k, val in await self._scan(self.roots["heavt"], e_a)
                    ],
                    attr.many,
                )
            for vk in cur:
                if vk not in merged:
                    edits.current(e_a, ab, eb, vk, attr.is_ref, None)
                    if not attr.many:
                        self._own_history(e, attr, vk, False, cur[vk])
            for vk, tags in merged.items():
                if cur.get(vk) != tags:
                    edits.current(e_a, ab, eb, vk, attr.is_ref, tags)
            pair = before.get((e, a))
            if pair is not None and not attr.many:
                mine, theirs = pair
                if mine and theirs and set(mine) != set(theirs):
                    # ours: the value the accumulated side held
                    if await self._entries(self.ours_eavt, e_a) != mine:
                        mine, theirs = theirs, mine
                    self._conflict(e_a, a, False, {}, mine, theirs, merged, RULE_LWW)
        return checks

    # -- the merge transaction's own datoms -------------------------------------------------

    async def record(self, tx: int) -> None:
        """Write the merge transaction's remaining datoms: the conflict records, its tx
        instant (its stamp's wall time), and the history of all its datoms."""
        edits = _Edits()
        for k, c in enumerate(self.conflicts, 1):
            ce = tx | k
            rows: list[tuple[str, Any]] = [
                ("conflict/entity", c.entity),
                ("conflict/attribute", Keyword(c.attribute)),
                ("conflict/base", _edn(c.base)),
                ("conflict/ours", _edn(c.ours)),
                ("conflict/theirs", _edn(c.theirs)),
                ("conflict/winner", _edn(c.winner)),
                ("conflict/rule", Keyword("conflict.rule/" + c.rule)),
            ]
            for a, v in rows:
                attr = self.schema.attribute(a)
                assert attr is not None
                self._own(edits, ce, attr, encode_value(v), True, b"")
        if self.own:
            instant = _dt.datetime.fromtimestamp(self.stamp.wall_ms / 1000, _dt.UTC)
            attr = self.schema.attribute("db/txInstant")
            assert attr is not None
            self._own(edits, tx, attr, encode_value(instant), True, b"")
        await edits.apply(self.nodes, self.roots)
        await self._flush_history()


async def merge_heads(
    database: Database, heads: list[bytes], *, strict: bool = False
) -> tuple[DB, tuple[Conflict, ...]]:
    """Merge the head set ``heads`` into one merge commit (written to the node buffer of
    ``database.nodes`` and flushed) and return its DB and the conflicts it resolved. A pure
    function of the set: every peer merging the same heads writes the same commit. With
    ``strict``, raise :class:`MergeConflict` instead of writing a merge that has conflicts."""
    heads = await join_heads(database, heads)
    if len(heads) == 1:
        return await database.db_at(heads[0]), ()
    heads = await tips(database, heads)
    if len(heads) == 1:
        return await database.db_at(heads[0]), ()
    commits = [await database.commit(h) for h in heads]
    schemas = [await database.schema(c.schema) for c in commits]
    tx = _merge_tx_id(heads)
    top = max(c.stamp for c in commits)
    stamp = Stamp(top.wall_ms, top.counter + 1, tx)
    m = _Merger(database, commits[0], schemas[0], stamp)
    for c, s in zip(commits[1:], schemas[1:], strict=True):
        await m.fold(c, s)
    conflicts = tuple(
        Conflict(c.entity, c.attribute, c.base, c.ours, c.theirs, c.winner, c.rule, tx)
        for c in m.conflicts
    )
    if strict and conflicts:
        raise MergeConflict(conflicts)
    await m.record(tx)
    schema = m.schema
    schema_data = encode(schema_body(schema))
    schema_addr = address_of(schema_data)
    if all(schema_addr != c.schema for c in commits):
        database.nodes.add_raw(schema_addr, schema_data)
    database.remember_schema(schema_addr, schema)
    gen = max(c.gen for c in commits) + 1
    meta = sorted(("resolver/" + a, n.encode()) for a, n in m.resolvers.items())
    body = commit_body(heads, m.roots, schema_addr, stamp, 0, gen, meta)
    address, data = encode_commit(body)
    database.nodes.add_raw(address, data)
    await database.nodes.flush()
    commit = Commit(
        address, tuple(sorted(heads)), body["roots"], schema_addr, stamp, 0, gen, tuple(meta)
    )
    database.remember_commit(commit)
    return DB(database, commit, schema), conflicts


async def conflicts(db: DB) -> list[Conflict]:
    """Every conflict recorded by the merges in ``db``'s history (current datoms), sorted by
    merge tx then entity. Values are read back from their EDN text."""
    from query.engine import q

    rows = await q(
        """[:find ?c ?e ?a ?base ?ours ?theirs ?winner ?rule ?tx
            :where [?c :conflict/entity ?e ?tx] [?c :conflict/attribute ?a]
                   [?c :conflict/base ?base] [?c :conflict/ours ?ours]
                   [?c :conflict/theirs ?theirs] [?c :conflict/winner ?winner]
                   [?c :conflict/rule ?rule]]""",
        db,
    )
    out = []
    for _c, e, a, base, ours, theirs, winner, rule, tx in sorted(rows, key=lambda r: (r[8], r[0])):
        out.append(
            Conflict(
                e,
                str(a).lstrip(":"),
                edn.loads(base),
                edn.loads(ours),
                edn.loads(theirs),
                edn.loads(winner),
                str(rule).split("/", 1)[-1],
                tx,
            )
        )
    return out


__all__ = [
    "Conflict",
    "MergeConflict",
    "MergeError",
    "conflicts",
    "is_ancestor",
    "join_heads",
    "merge_bases",
    "merge_heads",
    "register_resolver",
    "tips",
    "unregister_resolver",
]
