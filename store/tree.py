"""The prolly tree: a history-independent, content-addressed B-tree (docs/format.md section 4).

The same set of ``(key, value)`` byte pairs always yields the same nodes and the same root
address, whatever order of inserts, deletes, batches or merges produced it. That is what makes
snapshot equality O(1) (compare roots), diffs O(d log n) (skip equal subtrees) and sync cheap
(peers share every unchanged node).

**Where nodes end** (the chunker, after Dolt's key splitter). Items are added to the current
node one by one; after adding an item of ``n`` bytes to a node that held ``s`` bytes, the node
ends there with probability

    p = (F(s + n) - F(s)) / (1 - F(s)),    F(x) = 1 - exp(-(x / lam) ** 4)

(the Weibull CDF with shape k=4, conditioned on not having ended before), decided by comparing
``xxh3_64(key, seed=level)`` with ``p * 2**64`` in integer arithmetic over a table of
``1 - F`` computed exactly once per configuration (see _survival_table). Only the key is hashed, never the value, so
changing a value never moves a boundary; the per-level seed keeps the levels independent.
``lam = target / Gamma(1 + 1/4)`` makes ``target`` the mean node size. The Weibull shape makes
sizes cluster around the target (a plain "hash < 1/target" rule gives a geometric distribution
with many tiny and some huge nodes); k=4 is Dolt's choice, not something we tuned. On top, a node
never ends below ``min_size`` bytes and always ends at ``max_size``.

Since the decision depends only on the items since the node's start, every boundary is a function
of the sorted content alone: the tree is a pure function of its item set.

**Levels.** Level 0 holds the items. Level L+1 holds one entry per level-L node: its last key,
its address and its subtree count, chunked by the same rule (seed L+1, entry size = key + 40).
The root is the first level that has a single node; the empty tree is the empty leaf.

**Batch edits** re-chunk only the touched region: starting at the node holding the first edited
key (a boundary in the old tree, so the chunker starts there fresh), merge old items with edits
until the new boundaries line up with an old boundary again; from there on the old nodes are
reused. The replaced nodes become edits of the level above, and so on up to the root.
"""

from __future__ import annotations

import decimal
import functools
import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from itertools import islice
from operator import itemgetter, lt
from pathlib import Path
from typing import Any

import xxhash

from store.errors import NodeNotFound, TreeError
from store.nodes import Node, Nodes, TreeConfig, make_internal, make_leaf
from store.speedups import native as _native

__all__ = ["Tree", "TreeConfig", "diff", "new_nodes"]

_INTERNAL_ENTRY = 40  # address (33) + count + CBOR overhead, approximately
_LEAF_ENTRY = 2  # CBOR heads of key and value, approximately

# (last key, address, subtree count) of a node, as its parent holds it
Ref = tuple[bytes, bytes, int]

_hash = xxhash.xxh3_64_intdigest
_first = itemgetter(0)
_second = itemgetter(1)
_lt = lt
_VALUE_TYPES = {bytes, type(None)}


# Gamma(1 + 1/4) to 30 digits: a constant, not math.gamma, so every platform agrees
_GAMMA_1_25 = decimal.Decimal("0.906402477055477077982112016097")
_SCALE_BITS = 96
_SURVIVAL_BYTES = 13  # S[0] = 2**96 takes 97 bits
# Entries up to this many bytes are first tested against _Quick's bound (see there)
_QUICK_SPAN = 128
# The largest max_size the C chunker serves (its tables take ~33 bytes a size)
_NATIVE_MAX_SIZE = 1 << 20
# Uncached nodes the C level edit may meet (each one restarts it) before Python takes over
_NATIVE_MISSES = 4
# The survival table of the default TreeConfig, computed once by survival_table_bytes() and
# shipped (tests/store/test_chunker_table.py recomputes it): a process's first edits would
# otherwise spend ~15 us of decimal arithmetic on every node size they meet for the first time
_SHIPPED = {
    (4096, 16384): ("survival-4096-16384.bin", "fb625b27d5d6bdd4ce9a619e8c9a31ba4e980eb6810514a354b20ebe6c6ef2c4"),
}


class _Survival(dict[int, int]):
    """``S[s] = floor(2**96 * exp(-(s / lam) ** 4))`` for ``s`` in ``0..max_size``: the Weibull
    survival function at every node size, in integers, with ``decimal`` (correctly rounded, so
    identical on every platform and Python); the split decision is then pure integer
    arithmetic: no libm, no float rounding that could make two peers cut the same items
    differently. Each size is computed on its first use (the whole table takes ~0.5 s, which a
    process making one small edit should not pay) and kept."""

    def __init__(self, target: int, max_size: int, shipped: bytes | None = None) -> None:
        super().__init__()
        self.max_size = max_size
        # a private context: the process's decimal settings must not change the table
        self._ctx = decimal.Context(prec=50)
        self._lam = self._ctx.divide(decimal.Decimal(target), _GAMMA_1_25)
        self._scale = decimal.Decimal(1 << _SCALE_BITS)
        ok = shipped is not None and len(shipped) == (max_size + 1) * _SURVIVAL_BYTES
        self._shipped = shipped if ok else None
        self.quick = _Quick(self)
        # the C chunker (store/_speedups.c) reads S and Q from these tables as it needs them
        # (and keeps them in arrays of 33 bytes a size: larger configurations stay in Python)
        self.native: Any = (
            None
            if _native is None or max_size > _NATIVE_MAX_SIZE
            else _native.Chunker(
                self, self.quick, max_size, _QUICK_SPAN, _hash, _LEAF_ENTRY, _INTERNAL_ENTRY
            )
        )
        if self.native is not None:
            # the same xxh3 without a Python call per key: the C function inside the xxhash
            # module, if it is exported there and gives _hash's results (checked)
            library = getattr(getattr(xxhash, "_xxhash", None), "__file__", None)
            if library is not None:
                self.native.use_library(library)

    def compute(self, size: int) -> int:
        """``S[size]`` from its definition."""
        ctx = self._ctx
        x = ctx.divide(decimal.Decimal(size), self._lam)
        return int(ctx.multiply(ctx.exp(ctx.minus(ctx.power(x, 4))), self._scale))

    def __missing__(self, size: int) -> int:
        if type(size) is not int or not 0 <= size <= self.max_size:
            raise KeyError(size)
        shipped = self._shipped
        if shipped is not None:
            at = size * _SURVIVAL_BYTES
            value = int.from_bytes(shipped[at : at + _SURVIVAL_BYTES], "big")
        else:
            value = self.compute(size)
        self[size] = value
        return value


class _Quick(dict[int, int]):
    """``Q[s0]``: the least hash for which no entry of at most ``_QUICK_SPAN`` bytes ends a
    node that holds ``s0`` bytes before it. A node ends after an entry taking it from ``s0``
    to ``s1`` bytes iff ``hash * S[s0] < (S[s0] - S[s1]) << 64``; ``S`` never increases, so
    for every ``s1 <= s0 + _QUICK_SPAN`` the right side is at most that of ``s0 +
    _QUICK_SPAN`` (or of ``max_size``), and ``hash >= Q[s0]`` (the ceiling of that bound
    divided by ``S[s0]``) proves "no end" exactly, in one comparison of small integers. Most
    entries (all but a few percent) are settled so; the rest take the exact test. With
    ``S[s0] == 0`` every entry ends the node: ``Q = 2**64``, which no hash reaches."""

    def __init__(self, surv: _Survival) -> None:
        super().__init__()
        self.surv = surv

    def __missing__(self, s0: int) -> int:
        surv = self.surv
        before = surv[s0]  # KeyError outside the table
        if before == 0:
            value = 1 << 64
        else:
            bound = (before - surv[min(s0 + _QUICK_SPAN, surv.max_size)]) << 64
            value = -(-bound // before)
        self[s0] = value
        return value


def survival_table_bytes(target: int, max_size: int) -> bytes:
    """The whole survival table of a configuration, ``S[0..max_size]`` as 13-byte big-endian
    integers: what store/survival-<target>-<max_size>.bin holds (about 0.5 s to compute)."""
    table = _Survival(target, max_size)
    return b"".join(
        table.compute(s).to_bytes(_SURVIVAL_BYTES, "big") for s in range(max_size + 1)
    )


@functools.lru_cache(maxsize=16)
def _survival_table(target: int, max_size: int) -> _Survival:
    """The survival table of one configuration (shared, filled as sizes are used)."""
    known = _SHIPPED.get((target, max_size))
    return _Survival(target, max_size, None if known is None else _shipped_table(*known))


def _shipped_table(name: str, sha256: str, directory: Path | None = None) -> bytes | None:
    """The bytes of a shipped table if they are the ones recorded (None: absent, e.g. not
    installed with the package, or damaged; the table is then computed as needed: a wrong
    table would cut trees differently from every other peer)."""
    try:
        data = ((directory or Path(__file__).parent) / name).read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


class _Level:
    """Accumulates the entries of one level and cuts them into nodes."""

    __slots__ = ("a", "c", "keys", "level", "max", "min", "nodes", "seed", "size", "surv")

    def __init__(self, nodes: Nodes, level: int) -> None:
        config = nodes.config
        self.nodes = nodes
        self.level = level
        self.seed = level
        self.min = config.min_size
        self.max = config.max_size
        self.surv = _survival_table(config.target, config.max_size)
        self.keys: list[bytes] = []
        self.a: list[Any] = []  # values (leaf) or child addresses (internal)
        self.c: list[int] = []  # subtree counts (internal)
        self.size = 0

    def _ends(self, key: bytes, n: int) -> bool:
        s0 = self.size
        s1 = s0 + n
        self.size = s1
        if s1 < self.min:
            return False
        if s1 >= self.max:
            return True
        # end with probability p = (S(s0) - S(s1)) / S(s0): hash/2**64 < p, in integers
        surv = self.surv
        hk = _hash(key, self.seed)
        if n <= _QUICK_SPAN and hk >= surv.quick[s0]:
            return False
        before = surv[s0]
        if before == 0:
            return True
        return hk * before < (before - surv[s1]) << 64

    def push_item(self, key: bytes, value: bytes) -> Ref | None:
        self.keys.append(key)
        self.a.append(value)
        if self._ends(key, len(key) + len(value) + _LEAF_ENTRY):
            return self.close()
        return None

    def push_ref(self, key: bytes, address: bytes, count: int) -> Ref | None:
        self.keys.append(key)
        self.a.append(address)
        self.c.append(count)
        # an internal node never ends with a single entry (only the level's last node may
        # hold one): otherwise keys near max_size would end a node per entry at every
        # level and the tree would never converge to a root
        if self._ends(key, len(key) + _INTERNAL_ENTRY) and len(self.keys) > 1:
            return self.close()
        return None

    @property
    def empty(self) -> bool:
        return not self.keys

    def close(self) -> Ref | None:
        """End the current node (if it has entries): store it, return its ref."""
        keys = self.keys
        if not keys:
            return None
        if self.level == 0:
            node, data = make_leaf(keys, self.a)
        else:
            node, data = make_internal(self.level, keys, self.a, self.c)
        self.nodes.add(node, data)
        self.keys, self.a, self.c, self.size = [], [], [], 0
        return (keys[-1], node.address, node.count)


def _chunk_refs(nodes: Nodes, refs: list[Ref], level: int) -> list[Ref]:
    """Cut a whole level of refs into nodes at ``level``; return the new level's refs."""
    out: list[Ref] = []
    lvl = _Level(nodes, level)
    for key, address, count in refs:
        r = lvl.push_ref(key, address, count)
        if r is not None:
            out.append(r)
    r = lvl.close()
    if r is not None:
        out.append(r)
    return out


def _cut_leaf(
    keys: list[bytes],
    vals: list[bytes],
    start: int,
    size: int,
    mn: int,
    mx: int,
    surv: _Survival,
) -> tuple[list[int], int]:
    """The chunker of level 0 (see _Level._ends) over ``keys[start:]`` in one tight loop: the
    current node holds ``size`` bytes before ``keys[start]``. Returns the end positions
    (exclusive) of the nodes that end, and the size of the node left open."""
    cuts: list[int] = []
    h = _hash
    quick = surv.quick
    span = _QUICK_SPAN
    i = start
    for k in keys[start:] if start else keys:
        s1 = size + len(k) + len(vals[i]) + _LEAF_ENTRY
        i += 1
        if s1 < mn:
            size = s1
            continue
        if s1 < mx:
            hk = h(k, 0)
            if s1 - size <= span and hk >= quick[size]:
                size = s1
                continue
            before = surv[size]
            if before and hk * before >= (before - surv[s1]) << 64:
                size = s1
                continue
        cuts.append(i)
        size = 0
    return cuts, size


def _cut_internal(
    keys: list[bytes],
    start: int,
    size: int,
    count: int,
    level: int,
    mn: int,
    mx: int,
    surv: _Survival,
) -> tuple[list[int], int, int]:
    """:func:`_cut_leaf` for a level >= 1 (entries of ``len(key) + 40`` bytes; a node never
    ends after its first entry); ``count`` entries are in the open node already."""
    cuts: list[int] = []
    h = _hash
    quick = surv.quick
    span = _QUICK_SPAN
    i = start
    for k in keys[start:] if start else keys:
        s1 = size + len(k) + _INTERNAL_ENTRY
        i += 1
        count += 1
        if s1 >= mn:
            if s1 < mx:
                hk = h(k, level)
                if s1 - size <= span and hk >= quick[size]:
                    size = s1
                    continue
                before = surv[size]
                end = not before or hk * before < (before - surv[s1]) << 64
            else:
                end = True
            if end and count > 1:
                cuts.append(i)
                size = count = 0
                continue
        size = s1
    return cuts, size, count


def _merge(
    keys: list[bytes], vals: list[Any], ekeys: list[bytes], evals: list[Any], lo: int, hi: int
) -> tuple[list[bytes], list[Any]]:
    """A node's sorted entries with the sorted edits ``ekeys[lo:hi]`` applied (a value None
    deletes), by slices: the loop runs over the smaller of the two sides."""
    if not keys:
        ek, ev = ekeys[lo:hi], evals[lo:hi]
        if None in ev:
            pairs = [(k, v) for k, v in zip(ek, ev, strict=True) if v is not None]
            return [k for k, _ in pairs], [v for _, v in pairs]
        return ek, ev
    mk: list[bytes] = []
    mv: list[Any] = []
    m = len(keys)
    if hi - lo <= m:
        pos = 0
        for x in range(lo, hi):
            k = ekeys[x]
            i = bisect_left(keys, k, pos)
            if i > pos:
                mk += keys[pos:i]
                mv += vals[pos:i]
            pos = i + 1 if i < m and keys[i] == k else i
            v = evals[x]
            if v is not None:
                mk.append(k)
                mv.append(v)
        if pos < m:
            mk += keys[pos:]
            mv += vals[pos:]
        return mk, mv
    # many edits, few entries: walk the entries, copy the runs of edits between them
    pos = lo
    for i in range(m):
        k = keys[i]
        j = bisect_left(ekeys, k, pos, hi)
        if j > pos:
            _extend_edits(mk, mv, ekeys, evals, pos, j)
        if j < hi and ekeys[j] == k:
            v = evals[j]
            if v is not None:
                mk.append(k)
                mv.append(v)
            pos = j + 1
        else:
            mk.append(k)
            mv.append(vals[i])
            pos = j
    if pos < hi:
        _extend_edits(mk, mv, ekeys, evals, pos, hi)
    return mk, mv


def _extend_edits(
    mk: list[bytes], mv: list[Any], ekeys: list[bytes], evals: list[Any], lo: int, hi: int
) -> None:
    ev = evals[lo:hi]
    if None in ev:
        for k, v in zip(ekeys[lo:hi], ev, strict=True):
            if v is not None:
                mk.append(k)
                mv.append(v)
    else:
        mk += ekeys[lo:hi]
        mv += ev


def _edit_lists(
    edits: Iterable[tuple[bytes, bytes | None]],
) -> tuple[list[bytes], list[bytes | None]]:
    """Validate edits and return them as sorted, distinct keys and their values (a later edit
    of the same key wins). Raises TreeError (before anything is written) on non-bytes."""
    pairs = edits if type(edits) is list else list(edits)
    if not pairs:
        return [], []
    if set(map(len, pairs)) != {2}:
        for key, value in pairs:  # raises the unpacking error of the malformed pair
            _check_pair(key, value)
    keys: list[bytes] = list(map(_first, pairs))
    vals: list[bytes | None] = list(map(_second, pairs))
    if set(map(type, keys)) != {bytes} or not set(map(type, vals)) <= _VALUE_TYPES:
        for key, value in pairs:
            _check_pair(key, value)
    if not all(map(_lt, keys, islice(keys, 1, None))):
        latest = dict(zip(keys, vals, strict=True))
        keys = sorted(latest)
        vals = list(map(latest.__getitem__, keys))
    return keys, vals


def _emit(nodes: Nodes, level: int, keys: list[bytes], vals: list[Any]) -> Ref:
    """Store one node of ``level`` (values are ``(child, count)`` pairs above level 0)."""
    if level == 0:
        node, data = make_leaf(keys, vals)
    else:
        node, data = make_internal(level, keys, list(map(_first, vals)), list(map(_second, vals)))
    nodes.add(node, data)
    return (keys[-1], node.address, node.count)


def _check_pair(key: object, value: object) -> None:
    if type(key) is not bytes:
        raise TreeError(f"tree keys must be bytes, got {type(key).__name__}: {key!r:.60}")
    if value is not None and type(value) is not bytes:
        raise TreeError(
            f"tree values must be bytes (or None to delete), got {type(value).__name__} "
            f"for key {key!r:.60}"
        )


def _native_chunker(nodes: Nodes) -> Any:
    """The C chunker for edits of trees in ``nodes`` through store/_speedups.c edit_tree (for
    roots below level 60), or None: no extension, or a subclass of Nodes, which reads and
    counts its own way through its load()."""
    if type(nodes) is not Nodes:
        return None
    return _survival_table(nodes.config.target, nodes.config.max_size).native


def _check_sorted(keys: list[bytes], values: list[bytes | None]) -> None:
    """TreeError unless ``keys`` are strictly ascending bytes and ``values`` theirs (bytes,
    or None to delete)."""
    if len(keys) != len(values):
        raise TreeError("edit_sorted: keys and values differ in length")
    if keys and (
        set(map(type, keys)) != {bytes}
        or not set(map(type, values)) <= _VALUE_TYPES
        or not all(map(_lt, keys, islice(keys, 1, None)))
    ):
        for key, value in zip(keys, values, strict=True):
            _check_pair(key, value)
        raise TreeError("edit_sorted: keys are not strictly ascending")


class Tree:
    """An immutable prolly tree value: a root address and the :class:`Nodes` it lives in.

    Equal (and equally hashed) iff the roots are equal, which holds iff the contents are equal.
    Operations that change the tree return a new Tree; buffered nodes are flushed to the store
    before they return, so the new root is durable when you get it.
    """

    __slots__ = ("nodes", "root")

    def __init__(self, nodes: Nodes, root: bytes) -> None:
        self.nodes = nodes
        self.root = root

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tree) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"Tree({self.root.hex()[:16]}...)"

    # -- construction ------------------------------------------------------------------------

    @classmethod
    async def empty(cls, nodes: Nodes) -> Tree:
        """The empty tree (its root, the empty leaf, is stored)."""
        node, data = make_leaf([], [])
        nodes.add(node, data)
        await nodes.flush()
        return cls(nodes, node.address)

    @classmethod
    async def build(
        cls,
        nodes: Nodes,
        items: Iterable[tuple[bytes, bytes]] | AsyncIterable[tuple[bytes, bytes]],
    ) -> Tree:
        """Build a tree from items in strictly ascending key order, streaming: memory stays
        bounded by the node write buffer whatever the number of items. Raises TreeError on
        unsorted or duplicate keys or non-bytes keys/values."""
        levels: list[_Level] = [_Level(nodes, 0)]
        emitted = [0]
        last_ref: list[Ref | None] = [None]

        def feed(ref: Ref, level: int) -> None:
            while True:
                if level == len(levels):
                    levels.append(_Level(nodes, level))
                    emitted.append(0)
                    last_ref.append(None)
                out = levels[level].push_ref(*ref)
                if out is None:
                    return
                emitted[level] += 1
                last_ref[level] = out
                ref = out
                level += 1

        leaf = levels[0]
        prev: bytes | None = None
        flush_at = nodes.flush_bytes

        def take(key: bytes, value: bytes) -> None:
            nonlocal prev
            if type(key) is not bytes or type(value) is not bytes:
                _check_pair(key, value)
                if value is None:
                    raise TreeError(f"build: value for key {key!r:.60} is None")
            if prev is not None and key <= prev:
                raise TreeError(f"build: keys not strictly ascending at {key!r:.60}")
            prev = key
            out = leaf.push_item(key, value)
            if out is not None:
                emitted[0] += 1
                last_ref[0] = out
                feed(out, 1)

        if isinstance(items, AsyncIterable):
            async for key, value in items:
                take(key, value)
                if nodes.pending_bytes >= flush_at:
                    await nodes.flush()
        else:
            for key, value in items:
                take(key, value)
                if nodes.pending_bytes >= flush_at:
                    await nodes.flush()

        level = 0
        while True:
            out = levels[level].close()
            if out is not None:
                emitted[level] += 1
                last_ref[level] = out
            if emitted[level] == 0:  # no items at all
                return await cls.empty(nodes)
            if emitted[level] == 1:
                ref = last_ref[level]
                assert ref is not None
                await nodes.flush()
                return cls(nodes, ref[1])
            if out is not None:
                feed(out, level + 1)
            level += 1

    # -- reading -----------------------------------------------------------------------------

    async def _root(self) -> Node:
        return await self.nodes.load(self.root)

    async def get(self, key: bytes) -> bytes | None:
        """The value stored under ``key``, or None."""
        load = self.nodes.load
        node = await load(self.root)
        while node.level:
            i = bisect_left(node.keys, key)
            if i == len(node.keys):
                return None
            node = await load(node.children[i])
        keys = node.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            return node.values[i]
        return None

    async def count(self) -> int:
        """Number of items (from the root's subtree counts: one node read)."""
        return (await self._root()).count

    async def height(self) -> int:
        """Number of levels (1 for a single leaf)."""
        return (await self._root()).level + 1

    async def _rank(self, key: bytes, inclusive: bool) -> int:
        """Number of items with key < ``key`` (or <= when ``inclusive``)."""
        load = self.nodes.load
        node = await load(self.root)
        rank = 0
        while node.level:
            i = bisect_left(node.keys, key)
            if i == len(node.keys):
                return rank + node.count
            rank += sum(node.counts[:i])
            node = await load(node.children[i])
        pos = bisect_right(node.keys, key) if inclusive else bisect_left(node.keys, key)
        return rank + pos

    async def count_range(
        self,
        lo: bytes | None = None,
        hi: bytes | None = None,
        *,
        lo_inclusive: bool = True,
        hi_inclusive: bool = False,
    ) -> int:
        """Number of items in the key range, in O(log n) node reads (subtree counts)."""
        upper = await self.count() if hi is None else await self._rank(hi, hi_inclusive)
        lower = 0 if lo is None else await self._rank(lo, not lo_inclusive)
        return max(0, upper - lower)

    async def scan(
        self,
        lo: bytes | None = None,
        hi: bytes | None = None,
        *,
        lo_inclusive: bool = True,
        hi_inclusive: bool = False,
        reverse: bool = False,
    ) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        """Items with ``lo <= key < hi`` (inclusiveness per the flags; None = unbounded), in
        ascending order, or descending with ``reverse``. Yields lists (one per leaf touched),
        loading nodes lazily, so there is one await per leaf, not per item."""
        if reverse:
            async for batch in self._scan_backward(lo, hi, lo_inclusive, hi_inclusive):
                yield batch
        else:
            async for batch in self._scan_forward(lo, hi, lo_inclusive, hi_inclusive):
                yield batch

    def items_cached(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, bytes]] | None:
        """:meth:`items` of ``lo <= key < hi`` without I/O or awaits, when that range lies in
        one leaf whose path is cached (or pending): a transaction's reads of one entity's
        attribute. None (nothing read, nothing counted) when it would need a node that is not
        cached or the next leaf, or for a subclass of :class:`Nodes` (they read their own
        way): then use :meth:`items`. Counts its node reads as :meth:`scan` does."""
        nodes = self.nodes
        if type(nodes) is not Nodes:
            return None
        cached = nodes.load_cached
        node = cached(self.root)
        if node is None:
            return None
        visits = 1
        rightmost = True  # no leaf after this path's
        while node.level:
            keys = node.keys
            i = bisect_left(keys, lo)
            if i == len(keys):  # every key is below lo
                nodes.stats.reads += visits
                return []
            rightmost = rightmost and i == len(keys) - 1
            node = cached(node.children[i])
            if node is None:
                return None
            visits += 1
        keys = node.keys
        start = bisect_left(keys, lo)
        end = len(keys) if hi is None else bisect_left(keys, hi)
        if end == len(keys) and not rightmost:
            return None  # the range may go on in the next leaf
        nodes.stats.reads += visits
        return list(zip(keys[start:end], node.values[start:end], strict=True))

    async def items(
        self, lo: bytes | None = None, hi: bytes | None = None, **flags: bool
    ) -> list[tuple[bytes, bytes]]:
        """All items of :meth:`scan` as one list."""
        out: list[tuple[bytes, bytes]] = []
        async for batch in self.scan(lo, hi, **flags):
            out.extend(batch)
        return out

    async def _prefetch(self, parent: Node, start: int, hi: bytes | None, reverse: bool) -> None:
        """Load the leaves of ``parent`` that the scan will visit in one store round trip."""
        children = parent.children
        if reverse:
            stop = 0 if hi is None else bisect_left(parent.keys, hi)
            first = max(stop, start - 63)
            want = children[first : start + 1]
        else:
            end = len(children) if hi is None else bisect_left(parent.keys, hi) + 1
            want = children[start : min(end, start + 64)]
        if len(want) > 1 and any(self.nodes.peek(a) is None for a in want):
            await self.nodes.load_many(want)

    async def _scan_forward(
        self, lo: bytes | None, hi: bytes | None, lo_inc: bool, hi_inc: bool
    ) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        load = self.nodes.load
        node = await load(self.root)
        path: list[list[Any]] = []
        while node.level:
            i = 0 if lo is None else bisect_left(node.keys, lo)
            if i == len(node.keys):
                return
            path.append([node, i])
            if node.level == 1:
                await self._prefetch(node, i, hi, False)
            node = await load(node.children[i])
        if lo is None:
            start = 0
        else:
            start = bisect_left(node.keys, lo) if lo_inc else bisect_right(node.keys, lo)
        while True:
            keys = node.keys
            if hi is None:
                end = len(keys)
            else:
                end = bisect_right(keys, hi) if hi_inc else bisect_left(keys, hi)
            if start < end:
                yield list(zip(keys[start:end], node.values[start:end], strict=True))
            if end < len(keys):
                return
            # next leaf
            depth = len(path) - 1
            while depth >= 0 and path[depth][1] == len(path[depth][0].children) - 1:
                depth -= 1
            if depth < 0:
                return
            path[depth][1] += 1
            del path[depth + 1 :]
            parent, i = path[depth]
            if parent.level == 1:
                await self._prefetch(parent, i, hi, False)
            node = await load(parent.children[i])
            while node.level:
                path.append([node, 0])
                if node.level == 1:
                    await self._prefetch(node, 0, hi, False)
                node = await load(node.children[0])
            start = 0

    async def _scan_backward(
        self, lo: bytes | None, hi: bytes | None, lo_inc: bool, hi_inc: bool
    ) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        load = self.nodes.load
        node = await load(self.root)
        path: list[list[Any]] = []
        while node.level:
            if hi is None:
                i = len(node.keys) - 1
            else:
                i = min(bisect_left(node.keys, hi), len(node.keys) - 1)
            path.append([node, i])
            if node.level == 1:
                await self._prefetch(node, i, lo, True)
            node = await load(node.children[i])
        keys = node.keys
        if hi is None:
            end = len(keys)
        else:
            end = bisect_right(keys, hi) if hi_inc else bisect_left(keys, hi)
        while True:
            keys = node.keys
            if lo is None:
                start = 0
            else:
                start = bisect_left(keys, lo) if lo_inc else bisect_right(keys, lo)
            if start < end:
                batch = list(zip(keys[start:end], node.values[start:end], strict=True))
                batch.reverse()
                yield batch
            if start > 0:
                return
            depth = len(path) - 1
            while depth >= 0 and path[depth][1] == 0:
                depth -= 1
            if depth < 0:
                return
            path[depth][1] -= 1
            del path[depth + 1 :]
            parent, i = path[depth]
            if parent.level == 1:
                await self._prefetch(parent, i, lo, True)
            node = await load(parent.children[i])
            while node.level:
                last = len(node.children) - 1
                path.append([node, last])
                if node.level == 1:
                    await self._prefetch(node, last, lo, True)
                node = await load(node.children[last])
            end = len(node.keys)

    # -- editing -----------------------------------------------------------------------------

    async def edit(
        self, edits: Iterable[tuple[bytes, bytes | None]], *, flush: bool = True
    ) -> Tree:
        """Apply inserts/updates ``(key, value)`` and deletes ``(key, None)`` in one batch, in
        any order (a later edit of the same key wins). Only the touched region of each level
        is rewritten: O(k log n) node writes for k edits. Returns the new tree.

        With ``flush=False`` the new nodes stay in the :class:`Nodes` write buffer (readable,
        not yet durable) so that several trees of one commit reach the store in one batch;
        the caller must ``await nodes.flush()`` before publishing the root."""
        ekeys, evals = _edit_lists(edits)
        return await self._edit(ekeys, evals, flush)

    async def edit_sorted(
        self, keys: list[bytes], values: list[bytes | None], *, flush: bool = True
    ) -> Tree:
        """:meth:`edit` for edits given as strictly ascending ``keys`` and their ``values``
        (None deletes), without building pairs. Raises TreeError if they are not."""
        _check_sorted(keys, values)
        return await self._edit(keys, values, flush)

    async def _edit(self, ekeys: list[bytes], evals: list[Any], flush: bool) -> Tree:
        if not ekeys:
            return self
        nodes = self.nodes
        root = await nodes.load(self.root)
        top: list[Ref] | None = None
        chunker = _native_chunker(nodes) if root.level < 60 else None
        if chunker is not None:
            # Every level in one C call (store/_speedups.c edit_tree: the walk of
            # _edit_level, level after level) over cached nodes. A node that is not cached
            # comes back as its address, to load and go again. Only for plain Nodes:
            # subclasses (sync's rebuilds, speculative transactions) read and count their
            # own way, through their load().
            # At the first miss, the root-to-leaf paths of the edit keys are fetched level by
            # level, one store round trip a level (prefetch_paths: the nodes the edit reads
            # first, so a cold edit does not meet them one miss at a time), as many leaves as
            # fill half the cache.
            # The nodes loaded after that are held here for the next calls (a small cache
            # could drop them again), so every call gets further. Each call starts over, so
            # after a few misses (a cold cache, a large edit) the Python walk below does the
            # edit: it loads as it goes, without starting over.
            held: dict[bytes, Node] = {}
            cached: tuple[dict[bytes, Node], ...] = nodes.cached_maps()
            prefetched = False
            while len(held) < _NATIVE_MISSES:
                done = self._native_pass(chunker, cached, root, ekeys, evals)
                if type(done) is bytes:
                    if not prefetched:
                        prefetched = True
                        leaves = max(1, nodes.cache_bytes // (6 * nodes.config.target))
                        await prefetch_paths(self, ekeys, leaves)
                        if nodes.peek(done) is not None:
                            continue  # fetched now: no miss spent
                    held[done] = await nodes.load(done)
                    nodes.stats.reads -= 1  # the next call reads it again, and counts that
                    cached = (held, *nodes.cached_maps())
                    continue
                top = done  # type: ignore[assignment]
                if top is None:
                    return self
                if not flush:
                    quick = self._single_root(top)
                    if quick is not None:
                        return quick
                return await self._done(top, root.level, flush)
        level_keys: list[bytes] = ekeys
        level_vals: list[Any] = evals
        for level in range(root.level + 1):
            parent_keys, parent_vals, top = await self._edit_level(
                root, level, level_keys, level_vals
            )
            if level == root.level:
                break
            if not parent_keys:
                return self  # the edits changed nothing
            level_keys, level_vals = parent_keys, parent_vals
        if top is None:
            return self
        return await self._done(top, root.level, flush)

    def _native_pass(
        self,
        chunker: Any,
        cached: tuple[dict[bytes, Node], ...],
        root: Node,
        ekeys: list[bytes],
        evals: list[Any],
    ) -> bytes | list[Ref] | None:
        """One C edit_tree call over the nodes in the maps ``cached``: the address of the first
        node it did not find (nothing done), or the new refs of the root's level (None:
        the edits changed nothing), its new nodes buffered and its reads counted."""
        nodes = self.nodes
        config = nodes.config
        done = _native.edit_tree(  # type: ignore[union-attr]
            chunker, cached, make_leaf, make_internal, root, ekeys, evals,
            config.min_size, config.max_size,
        )  # fmt: skip
        if type(done) is bytes:
            return done
        top, emitted, visits = done
        nodes.stats.reads += visits
        nodes.add_all(emitted)
        return top  # type: ignore[no-any-return]

    def _single_root(self, top: list[Ref]) -> Tree | None:
        """_finish's usual case without its awaits: one new root, just made (so pending or
        cached), not an internal node of one child. None otherwise (then _finish)."""
        if len(top) != 1:
            return None
        nodes = self.nodes
        new_root = nodes.load_cached(top[0][1])
        if new_root is None or (new_root.level and len(new_root.children) == 1):
            return None
        nodes.stats.reads += 1  # (as _finish's load counts it)
        return Tree(nodes, new_root.address)

    async def _done(self, top: list[Ref], level: int, flush: bool) -> Tree:
        tree = await self._finish(top, level)
        if flush:
            await self.nodes.flush()
        return tree

    async def _edit_level(
        self, root: Node, level: int, ekeys: list[bytes], evals: list[Any]
    ) -> tuple[list[bytes], list[Any], list[Ref] | None]:
        """Apply the sorted edits ``ekeys``/``evals`` to one level. Returns the edits this
        causes on the level above (``last key -> (address, count)`` or None to remove), and,
        for the root's level, the complete new list of refs at that level (None if nothing
        changed).

        Each run of touched nodes starts at an old node boundary, so the chunker starts
        fresh there; the entries of the first node before its first edit were not node ends
        in the old tree and are not now (same items, same state), so only their sizes are
        summed. The run ends when a new node ends exactly where an old one did."""
        nodes = self.nodes
        load = nodes.load
        config = nodes.config
        mn, mx = config.min_size, config.max_size
        surv = _survival_table(config.target, mx)
        chunker = surv.native  # (the C chunker's decisions, else Python's)
        leaf = level == 0
        parent: dict[bytes, Any] = {}
        top: list[Ref] | None = None
        n = len(ekeys)
        ei = 0
        while ei < n:
            # the node of this level that holds ekeys[ei] (the first whose last key is >= it,
            # else the level's last node), and the path to it: [node, child index] from the root
            node = root
            path: list[list[Any]] = []
            if node.level > level:
                key = ekeys[ei]
                while node.level > level:
                    i = bisect_left(node.keys, key)
                    if i == len(node.keys):
                        i -= 1
                    path.append([node, i])
                    node = await load(node.children[i])
            old: list[Node] = []
            new: list[Ref] = []
            ck: list[bytes] = []  # the open (unfinished) new node: keys, values
            cv: list[Any] = []
            size = count = 0
            while True:
                old.append(node)
                last = True  # the level's last node?
                for pn, pi in path:
                    if pi != len(pn.keys) - 1:
                        last = False
                        break
                keys = node.keys
                m = len(keys)
                vals: list[Any] = (
                    node.values if leaf else list(zip(node.children, node.counts, strict=True))
                )
                ej = n if last or not keys else bisect_right(ekeys, keys[-1], ei)
                if ej - ei == 1:
                    # one edit (the usual case): a copy of the node with one slot changed
                    k = ekeys[ei]
                    same = bisect_left(keys, k)
                    end = same + 1 if same < m and keys[same] == k else same
                    v = evals[ei]
                    mk = keys.copy()
                    mv = vals.copy() if leaf else vals
                    if v is None:
                        del mk[same:end]
                        del mv[same:end]
                    else:
                        mk[same:end] = (k,)
                        mv[same:end] = (v,)
                    ei = ej
                elif ej > ei:
                    mk, mv = _merge(keys, vals, ekeys, evals, ei, ej)
                    same = bisect_left(keys, ekeys[ei])
                    ei = ej
                else:
                    mk, mv, same = keys, vals, m
                if ck:
                    start = len(ck)
                    wk, wv = ck + mk, cv + mv
                else:
                    # fresh chunker at an old boundary: skip the unchanged leading entries
                    # (never the old node's last one, which may have ended it)
                    start = min(same, m - 1) if m else 0
                    wk, wv = mk, mv
                    if start and chunker is not None:
                        size = chunker.prefix_size(keys, vals if leaf else None, start)
                        if not leaf:
                            count = start
                    elif start:
                        size = sum(map(len, keys[:start]))
                        if leaf:
                            size += sum(map(len, vals[:start])) + _LEAF_ENTRY * start
                        else:
                            size += _INTERNAL_ENTRY * start
                            count = start
                if chunker is not None:  # the C twins of _cut_leaf/_cut_internal
                    if leaf:
                        cuts, size = chunker.cut_leaf(wk, wv, start, size, mn, mx)
                    else:
                        cuts, size, count = chunker.cut_internal(
                            wk, start, size, count, level, mn, mx
                        )
                elif leaf:
                    cuts, size = _cut_leaf(wk, wv, start, size, mn, mx, surv)
                else:
                    cuts, size, count = _cut_internal(wk, start, size, count, level, mn, mx, surv)
                a = 0
                for b in cuts:
                    if a == 0 and b == len(wk):
                        new.append(_emit(nodes, level, wk, wv))
                    else:
                        new.append(_emit(nodes, level, wk[a:b], wv[a:b]))
                    a = b
                if a:
                    ck, cv = wk[a:], wv[a:]
                else:
                    ck, cv = wk, wv
                if last:
                    if ck:
                        new.append(_emit(nodes, level, ck, cv))
                    break
                if not ck:
                    break  # our boundary coincides with an old one: the rest is unchanged
                # on to the next node of the level
                depth = len(path) - 1
                while path[depth][1] == len(path[depth][0].keys) - 1:
                    depth -= 1
                path[depth][1] += 1
                node = await load(path[depth][0].children[path[depth][1]])
                del path[depth + 1 :]
                while node.level > level:
                    path.append([node, 0])
                    node = await load(node.children[0])
            if len(new) == len(old):
                for r, nd in zip(new, old, strict=True):
                    if r[1] != nd.address:
                        break
                else:
                    continue  # the run rewrote its nodes identically
            if level == root.level:
                top = new
            for nd in old:
                if nd.keys:
                    parent[nd.keys[-1]] = None
            for key, address, cnt in new:
                parent[key] = (address, cnt)
        pkeys = sorted(parent)
        return pkeys, list(map(parent.__getitem__, pkeys)), top

    async def _finish(self, refs: list[Ref], level: int) -> Tree:
        """Make a root from the new refs of the old root's level."""
        nodes = self.nodes
        if not refs:
            node, data = make_leaf([], [])
            nodes.add(node, data)
            return Tree(nodes, node.address)
        while len(refs) > 1:
            level += 1
            refs = _chunk_refs(nodes, refs, level)
        address = refs[0][1]
        node = await nodes.load(address)
        while node.level and len(node.children) == 1:
            node = await nodes.load(node.children[0])
        return Tree(nodes, node.address)

    # -- comparing ---------------------------------------------------------------------------

    def diff(self, other: Tree) -> AsyncIterator[list[tuple[bytes, bytes | None, bytes | None]]]:
        """Changes from ``self`` to ``other``: see :func:`diff`."""
        return diff(self, other)

    async def reachable(self) -> set[bytes]:
        """Every node address of this tree (for GC and full sync)."""
        seen: set[bytes] = set()
        frontier = [self.root]
        while frontier:
            seen.update(frontier)
            loaded = await self.nodes.load_many(frontier)
            frontier = [c for nd in loaded for c in nd.children if c not in seen]
        return seen


# -- diff and new_nodes ----------------------------------------------------------------------

#: nodes per ``load_many`` of a diff or a multi-range scan (one store round trip each)
_BATCH = 256


async def _load_all(nodes: Nodes, addresses: list[bytes]) -> list[Node]:
    """The nodes at ``addresses``, in order, in batches of :data:`_BATCH` per store call."""
    if len(addresses) <= _BATCH:
        return await nodes.load_many(addresses)
    out: list[Node] = []
    for i in range(0, len(addresses), _BATCH):
        out += await nodes.load_many(addresses[i : i + _BATCH])
    return out


def _children(loaded: list[Node]) -> list[bytes]:
    return [c for node in loaded for c in node.children]


async def _frontiers(
    a: Tree, b: Tree, b_nodes: set[bytes] | None, leaves: bool
) -> tuple[list[bytes], list[bytes]]:
    """The leaves of ``a`` and of ``b`` (addresses, each side in key order) that are not
    leaves of both, found level by level from the roots: at each level the nodes of both
    sides are compared as sets, the nodes both have are dropped (they hold the same items:
    history independence), and the rest are loaded, one store round trip per level and
    :data:`_BATCH` nodes, and replaced by their children. The cost is the differing nodes,
    O(d log n) for d differences. The nodes of ``b`` kept at any level (every node of ``b``
    that ``a`` lacks) are added to ``b_nodes`` if given. Without ``leaves``, stop once ``b``
    has nothing left (then ``a``'s leaves are not needed)."""
    ra = await a.nodes.load(a.root)
    rb = await b.nodes.load(b.root)
    fa, fb = [a.root], [b.root]
    ka: list[Node] | None = [ra]  # the loaded nodes of a frontier, when at hand
    kb: list[Node] | None = [rb]
    la, lb = ra.level, rb.level
    same = a.nodes is b.nodes
    while True:
        if la == lb:
            common = set(fa).intersection(fb)
            if common:
                fa = [x for x in fa if x not in common]
                fb = [x for x in fb if x not in common]
                ka = kb = None
        if b_nodes is not None and lb >= la:
            # (not while b is the shorter: a node of b's level may still turn up in a
            # once a has descended to it; a node only ever occurs at one level)
            b_nodes.update(fb)
        if not fb and (not leaves or not fa):
            return fa, fb
        top = max(la, lb)
        if top == 0:
            return fa, fb
        if la == lb and fa and fb and same and ka is None and kb is None:
            loaded = await _load_all(a.nodes, fa + fb)
            ka, kb = loaded[: len(fa)], loaded[len(fa) :]
        if la == top:
            if fa:
                fa = _children(ka if ka is not None else await _load_all(a.nodes, fa))
            la -= 1
            ka = None
        if lb == top:
            if fb:
                fb = _children(kb if kb is not None else await _load_all(b.nodes, fb))
            lb -= 1
            kb = None


class _Leaves:
    """The leaves at ``addresses``, one by one in order, loaded :data:`_BATCH` at a time."""

    __slots__ = ("addresses", "nodes", "pos", "ready")

    def __init__(self, nodes: Nodes, addresses: list[bytes]) -> None:
        self.nodes = nodes
        self.addresses = addresses
        self.pos = 0
        self.ready: list[Node] = []

    async def next(self) -> Node | None:
        if not self.ready:
            if self.pos >= len(self.addresses):
                return None
            chunk = self.addresses[self.pos : self.pos + _BATCH]
            self.pos += len(chunk)
            self.ready = await self.nodes.load_many(chunk)
            self.ready.reverse()
        return self.ready.pop()


async def edit_trees(
    nodes: Nodes,
    edits: dict[str, tuple[bytes, list[bytes], list[bytes | None]]],
    *,
    checked: bool = False,
) -> dict[str, bytes]:
    """The root after the edit of each tree ``name -> (root, keys, values)`` (as
    :meth:`Tree.edit_sorted` takes them, checked the same way unless the caller built them
    so and says ``checked``: a commit's index edits), its new nodes left in the write buffer
    (``flush=False``). A tree whose path is cached gets its C edit here, without the awaits
    of one ``edit_sorted`` each; any other goes through ``edit_sorted``. Same nodes, same
    counts."""
    out: dict[str, bytes] = {}
    chunker = _native_chunker(nodes)
    maps = nodes.cached_maps()
    for name, (address, keys, values) in edits.items():
        if not checked:
            _check_sorted(keys, values)
        tree = Tree(nodes, address)
        root = nodes.load_cached(address) if chunker is not None and keys else None
        if root is not None and root.level < 60:
            nodes.stats.reads += 1  # (as _edit's load of the root counts it)
            top = tree._native_pass(chunker, maps, root, keys, values)
            if not isinstance(top, bytes):
                if top is not None:
                    tree = tree._single_root(top) or await tree._done(top, root.level, False)
                out[name] = tree.root
                continue
            nodes.stats.reads -= 1  # a miss: _edit reads the root again, and counts that
        out[name] = (await tree._edit(keys, values, False)).root
    return out


async def diff(a: Tree, b: Tree) -> AsyncIterator[list[tuple[bytes, bytes | None, bytes | None]]]:
    """Changes from ``a`` to ``b`` in key order, in batches of ``(key, old, new)``: ``old`` is
    None for a key only in ``b`` (added), ``new`` is None for a key only in ``a`` (removed).
    Equal subtrees are skipped without being loaded below their root, so the cost is
    O(d log n) node reads for d differences (see :func:`_frontiers`)."""
    if a.root == b.root:
        return
    fa, fb = await _frontiers(a, b, None, True)
    sa, sb = _Leaves(a.nodes, fa), _Leaves(b.nodes, fb)
    out: list[tuple[bytes, bytes | None, bytes | None]] = []
    ka: list[bytes] = []
    va: list[bytes] = []
    kb: list[bytes] = []
    vb: list[bytes] = []
    i = j = 0
    while True:  # merge the items of both sides' leaves until one side ends
        if i == len(ka):
            node = await sa.next()
            if node is None:
                break
            ka, va, i = node.keys, node.values, 0
            continue
        if j == len(kb):
            node = await sb.next()
            if node is None:
                break
            kb, vb, j = node.keys, node.values, 0
            continue
        na, nb = len(ka), len(kb)
        while i < na and j < nb:
            x, y = ka[i], kb[j]
            if x == y:
                if va[i] != vb[j]:
                    out.append((x, va[i], vb[j]))
                i += 1
                j += 1
                # skip equal items 16 at a time (slices compare in C)
                while (
                    i + 16 <= na
                    and j + 16 <= nb
                    and ka[i : i + 16] == kb[j : j + 16]
                    and va[i : i + 16] == vb[j : j + 16]
                ):
                    i += 16
                    j += 16
            elif x < y:
                out.append((x, va[i], None))
                i += 1
            else:
                out.append((y, None, vb[j]))
                j += 1
        if len(out) >= 1024:
            yield out
            out = []
    # one side has ended: the rest of the other is only on its side
    while True:
        out.extend((ka[x], va[x], None) for x in range(i, len(ka)))
        if len(out) >= 1024:
            yield out
            out = []
        node = await sa.next()
        if node is None:
            break
        ka, va, i = node.keys, node.values, 0
    while True:
        out.extend((kb[x], None, vb[x]) for x in range(j, len(kb)))
        if len(out) >= 1024:
            yield out
            out = []
        node = await sb.next()
        if node is None:
            break
        kb, vb, j = node.keys, node.values, 0
    if out:
        yield out


async def new_nodes(a: Tree | None, b: Tree) -> set[bytes]:
    """Addresses of the nodes reachable from ``b`` but not from ``a`` (all of ``b``'s if
    ``a`` is None): exactly what a peer holding ``a`` needs to receive to hold ``b``.

    History independence makes this a walk of the differing region only: a node of ``b`` that
    also occurs in ``a`` covers the same keys at the same level, so the level-by-level walk
    of :func:`_frontiers` meets it on both sides at that level (or drops an ancestor of it
    that both have). ``b``'s differing leaves are named by their parents: not loaded."""
    if a is None:
        return await b.reachable()
    if a.root == b.root:
        return set()
    out: set[bytes] = set()
    await _frontiers(a, b, out, False)
    return out


# -- many small ranges at once ---------------------------------------------------------------


async def scan_ranges(
    tree: Tree, ranges: list[tuple[bytes, bytes | None]]
) -> list[list[tuple[bytes, bytes]]]:
    """The items of each key range ``lo <= key < hi`` of ``ranges`` (``hi`` None: no upper
    bound), like :meth:`Tree.items`
    of each, found together: the tree is descended level by level for all ranges at once,
    each node they need loaded once, one store round trip per level (and per
    :data:`_BATCH` nodes). For many small ranges (a merge's per-entity lookups), where one
    scan each would descend from the root one node at a time. Every leaf any range touches
    is held at once: not for ranges that cover much of a big tree."""
    out: list[list[tuple[bytes, bytes]]] = [[] for _ in ranges]
    order = sorted(range(len(ranges)), key=lambda r: ranges[r][0])
    for i in range(0, len(order), _RANGES):  # bounds the leaves held at once
        await _scan_ranges(tree, ranges, order[i : i + _RANGES], out)
    return out


#: ranges descended together by scan_ranges
_RANGES = 1024


async def _scan_ranges(
    tree: Tree,
    ranges: list[tuple[bytes, bytes | None]],
    order: list[int],
    out: list[list[tuple[bytes, bytes]]],
) -> None:
    nodes = tree.nodes
    level_nodes = [await nodes.load(tree.root)]
    # per range (in ``order``): the first and last index into level_nodes it covers, or None
    spans: list[tuple[int, int] | None] = [(0, 0)] * len(order)
    while level_nodes[0].level:
        below: dict[bytes, int] = {}
        for n, r in enumerate(order):
            span = spans[n]
            if span is None:
                continue
            lo, hi = ranges[r]
            first = last = -1
            for x in range(span[0], span[1] + 1):
                node = level_nodes[x]
                keys = node.keys
                start = bisect_left(keys, lo) if x == span[0] else 0
                if start == len(keys):
                    continue  # beyond this node's keys (only the range's first node)
                end = len(keys) - 1
                if x == span[1] and hi is not None:
                    end = min(bisect_left(keys, hi), end)
                for c in node.children[start : end + 1]:
                    i = below.setdefault(c, len(below))
                    if first < 0:
                        first = i
                    last = i
            spans[n] = (first, last) if first >= 0 else None
        if not below:
            return
        level_nodes = await _load_all(nodes, list(below))
    for n, r in enumerate(order):
        span = spans[n]
        if span is None:
            continue
        lo, hi = ranges[r]
        items = out[r]
        for x in range(span[0], span[1] + 1):
            keys = level_nodes[x].keys
            start = bisect_left(keys, lo)
            end = len(keys) if hi is None else bisect_left(keys, hi)
            if start < end:
                items += zip(keys[start:end], level_nodes[x].values[start:end], strict=True)


async def prefetch_paths(tree: Tree, keys: list[bytes], limit: int) -> None:
    """Bring the nodes on the root-to-leaf paths of the sorted ``keys`` into the node cache,
    level by level (one store round trip per level and :data:`_BATCH` nodes), at most
    ``limit`` leaves (the first ones in key order): what a batch edit of those keys is
    about to read one node at a time (``Tree._edit_level`` seeks the same paths: at each
    level, the child of the first key >= the edit key, else the last child).
    Counted as fetches, not reads: the edit's own reads of them follow. Only a hint: a node
    the store lacks ends it quietly (the edit then raises NodeNotFound itself, if it needs
    the node, or finds it where a :class:`Nodes` subclass keeps nodes of its own)."""
    try:
        await _prefetch_paths(tree, keys, limit)
    except NodeNotFound:
        pass


async def _prefetch_paths(tree: Tree, keys: list[bytes], limit: int) -> None:
    if not keys:
        return
    nodes = tree.nodes
    n = len(keys)
    level_nodes = await nodes.prefetch([tree.root])
    while level_nodes[0].level:
        below: dict[bytes, None] = {}
        x = 0
        final = len(level_nodes) - 1
        for ni, node in enumerate(level_nodes):
            nkeys = node.keys
            top = len(nkeys) - 1
            while x < n:
                i = bisect_left(nkeys, keys[x])
                if i > top:
                    if ni < final:
                        break  # the key is in a later node of this level
                    below[node.children[top]] = None  # beyond the last key: seek's clamp
                    x = n
                    break
                below[node.children[i]] = None
                x = bisect_right(keys, nkeys[i], x)  # the keys this child holds
        wanted = list(below)
        if level_nodes[0].level == 1:
            wanted = wanted[:limit]
        if not wanted:
            return
        level_nodes = []
        for i in range(0, len(wanted), _BATCH):
            level_nodes += await nodes.prefetch(wanted[i : i + _BATCH])
