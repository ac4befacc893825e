"""Decoded tree nodes, the chunking parameters, and the byte-bounded node cache.

:class:`Nodes` is what a tree reads and writes through: it sits in front of a NodeStore, keeps
decoded nodes in an LRU bounded by bytes (shared by every tree and DB value of the store, so
memory does not grow with database size), counts reads for tests and the query planner's
statistics, and buffers the nodes a tree operation creates so that a whole batch edit or
build reaches the store in few ``put_many`` calls (O(1) fsyncs per batch on the file store).

Node encoding (docs/format.md section 4), a CBOR array:

* leaf:     ``[0, [key, ...], [value, ...]]``
* internal: ``[level, [last_key, ...], [child_address, ...], [subtree_count, ...]]``

keys and values are byte strings, keys strictly ascending; ``level >= 1`` for internal nodes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from operator import lt as _lt
from typing import Any

from store.base import NodeStore
from store.codec import ADDRESS_LENGTH, ADDRESS_PREFIX, address_of, decode, encode_trusted
from store.errors import CodecError, CorruptNode, TreeError
from store.speedups import native


@dataclass(frozen=True, slots=True)
class TreeConfig:
    """Chunking parameters, part of a store's format: trees built with different parameters
    have different nodes and roots. ``target`` is the mean node size the split probability
    aims at; ``min_size``/``max_size`` are hard bounds (bytes of keys and values, approximately
    the encoded node size)."""

    target: int = 4096
    min_size: int = 512
    max_size: int = 16384

    def __post_init__(self) -> None:
        if not (0 < self.min_size <= self.target <= self.max_size):
            raise TreeError(
                f"TreeConfig needs 0 < min_size <= target <= max_size, got "
                f"{self.min_size}/{self.target}/{self.max_size}"
            )


class Node:
    """A decoded node. Treat as immutable: nodes are shared through the cache."""

    __slots__ = ("address", "children", "count", "counts", "keys", "level", "size", "values")

    level: int
    keys: list[bytes]
    values: list[bytes]  # leaves only
    children: list[bytes]  # internal only
    counts: list[int]  # internal only
    count: int  # entries in this subtree
    size: int  # encoded bytes
    address: bytes

    @property
    def is_leaf(self) -> bool:
        return self.level == 0


def encode_leaf(keys: list[bytes], values: list[bytes]) -> bytes:
    """The canonical bytes of a leaf (the definition; store/_speedups.c has a C twin)."""
    return encode_trusted([0, keys, values])


def encode_internal(
    level: int, keys: list[bytes], children: list[bytes], counts: list[int]
) -> bytes:
    """The canonical bytes of an internal node (store/_speedups.c has a C twin)."""
    return encode_trusted([level, keys, children, counts])


_encode_leaf = encode_leaf if native is None else native.encode_leaf
_encode_internal = encode_internal if native is None else native.encode_internal


def make_leaf_py(keys: list[bytes], values: list[bytes]) -> tuple[Node, bytes]:
    """Build a leaf node and its canonical bytes (:data:`make_leaf`: this, or its C twin)."""
    data = _encode_leaf(keys, values)
    node = Node()
    node.level = 0
    node.keys = keys
    node.values = values
    node.children = []
    node.counts = []
    node.count = len(keys)
    node.size = len(data)
    node.address = address_of(data)
    return node, data


def make_internal_py(
    level: int, keys: list[bytes], children: list[bytes], counts: list[int]
) -> tuple[Node, bytes]:
    """Build an internal node and its canonical bytes (:data:`make_internal`: this, or its C
    twin)."""
    data = _encode_internal(level, keys, children, counts)
    node = Node()
    node.level = level
    node.keys = keys
    node.values = []
    node.children = children
    node.counts = counts
    node.count = sum(counts)
    node.size = len(data)
    node.address = address_of(data)
    return node, data


def _libcrypto() -> str | None:
    """The path of a libcrypto this process loaded (Linux; hashlib's, unless several are:
    bind_nodes checks its SHA256 against hashlib's anyway), or None."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(" ")[-1]
                if "/libcrypto" in path:
                    return path
    except OSError:
        pass
    return None


def _bind_native() -> bool:
    """Whether the C twins of make_leaf/make_internal can be used: they hash with the SHA256
    of the libcrypto hashlib loaded, after checking it against hashlib."""
    if native is None:
        return False
    hashlib.sha256(b"")  # (loads libcrypto, if hashlib uses it)
    path = _libcrypto()
    return path is not None and native.bind_nodes(Node, path, _sha256_digest)


def _sha256_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


#: Build a leaf node and its canonical bytes: ``(node, data)``.
make_leaf: Callable[[list[bytes], list[bytes]], tuple[Node, bytes]] = make_leaf_py
#: Build an internal node and its canonical bytes: ``(node, data)``.
make_internal: Callable[[int, list[bytes], list[bytes], list[int]], tuple[Node, bytes]] = (
    make_internal_py
)
if _bind_native():
    assert native is not None
    make_leaf = native.make_leaf
    make_internal = native.make_internal


def decode_node(address: bytes, data: bytes) -> Node:
    """Decode and validate a node's bytes (already verified against ``address`` by the store).
    Raises CorruptNode if they are not a well-formed node.

    Every node read from a store is checked in full (canonical CBOR, field types, ascending
    keys): a store shared with other writers, or a corrupted one whose bytes still hash
    right, must not hand a tree something it would mis-read. The per-item checks run as
    C-level ``map``s over the node's lists."""
    try:
        raw: Any = decode(data, check_types=False)
    except CodecError as exc:
        raise CorruptNode(address, str(exc)) from exc
    if type(raw) is not list or not raw or type(raw[0]) is not int or raw[0] < 0:
        raise CorruptNode(address, "not a tree node")
    level = raw[0]
    node = Node()
    node.level = level
    node.address = address
    node.size = len(data)
    if level == 0:
        if len(raw) != 3:
            raise CorruptNode(address, "leaf must have 3 fields")
        keys, values = raw[1], raw[2]
        if not (type(keys) is list and type(values) is list and len(keys) == len(values)):
            raise CorruptNode(address, "leaf keys/values malformed")
        if values and set(map(type, values)) != _BYTES:
            raise CorruptNode(address, "leaf values must be bytes")
        node.values, node.children, node.counts = values, [], []
        node.count = len(keys)
    else:
        if len(raw) != 4:
            raise CorruptNode(address, "internal node must have 4 fields")
        keys, children, counts = raw[1], raw[2], raw[3]
        if not (
            type(keys) is list
            and type(children) is list
            and type(counts) is list
            and len(keys) == len(children) == len(counts)
            and keys
        ):
            raise CorruptNode(address, "internal node fields malformed")
        if not (
            set(map(type, children)) == _BYTES
            and set(map(len, children)) == _ADDRESS_LEN
            and set(map(_first_byte, children)) == _ADDRESS_VERSION
        ):
            raise CorruptNode(address, "child is not an address")
        if set(map(type, counts)) != _INT or min(counts) <= 0:
            raise CorruptNode(address, "subtree counts must be positive integers")
        node.values, node.children, node.counts = [], children, counts
        node.count = sum(counts)
    if keys:
        if set(map(type, keys)) != _BYTES:
            raise CorruptNode(address, "keys must be bytes")
        if not all(map(_lt, keys, islice(keys, 1, None))):
            raise CorruptNode(address, "keys not strictly ascending")
    node.keys = keys
    return node


_BYTES = {bytes}
_INT = {int}
_ADDRESS_LEN = {ADDRESS_LENGTH}
_ADDRESS_VERSION = {ADDRESS_PREFIX[0]}
_first_byte = itemgetter(0)


@dataclass(slots=True)
class NodeStats:
    """Counters: ``reads`` = node accesses by trees (cache hits included), ``fetches`` = nodes
    fetched from the store (cache misses), ``writes`` = new nodes handed to the store."""

    reads: int = 0
    fetches: int = 0
    writes: int = 0

    def reset(self) -> None:
        self.reads = self.fetches = self.writes = 0


class Nodes:
    """Node access for trees: a byte-bounded LRU of decoded nodes over a NodeStore, plus a
    write buffer. Call :meth:`flush` to make buffered nodes durable (tree operations flush
    before returning)."""

    def __init__(
        self,
        store: NodeStore,
        config: TreeConfig | None = None,
        *,
        cache_bytes: int = 64 << 20,
        flush_bytes: int = 4 << 20,
    ) -> None:
        self.store = store
        self.config = config or TreeConfig()
        self.cache_bytes = cache_bytes
        self.flush_bytes = flush_bytes
        self.stats = NodeStats()
        self._cache: OrderedDict[bytes, Node] = OrderedDict()
        self._cached_bytes = 0
        self._pending: dict[bytes, bytes] = {}
        self._pending_nodes: dict[bytes, Node] = {}
        self._pending_bytes = 0

    # -- reading -----------------------------------------------------------------------------

    def peek(self, address: bytes) -> Node | None:
        """The node if it is cached or pending, without I/O."""
        node = self._cache.get(address)
        if node is None:
            return self._pending_nodes.get(address)
        return node

    def load_cached(self, address: bytes) -> Node | None:
        """:meth:`load` without I/O, and without counting the read: the node if it is cached
        (now the most recently used) or pending, else None."""
        node = self._cache.get(address)
        if node is not None:
            self._cache.move_to_end(address)
            return node
        return self.peek(address)

    def cached_maps(self) -> tuple[dict[bytes, Node], dict[bytes, Node]]:
        """The cache and the pending nodes, where :meth:`load_cached` looks, for a C walk to
        look in directly (store/_speedups.c edit_tree): without making them the most
        recently used (a tree edit replaces the nodes it reads)."""
        return self._cache, self._pending_nodes

    async def load(self, address: bytes) -> Node:
        """The decoded node at ``address`` (NodeNotFound / CorruptNode from the store)."""
        self.stats.reads += 1
        node = self._cache.get(address)
        if node is not None:
            self._cache.move_to_end(address)
            return node
        node = self._pending_nodes.get(address)
        if node is not None:
            return node
        data = await self.store.get(address)
        self.stats.fetches += 1
        node = decode_node(address, data)
        self._remember(node)
        return node

    async def load_many(self, addresses: Iterable[bytes]) -> list[Node]:
        """Decoded nodes for ``addresses`` in order, fetching the uncached ones in one batch."""
        addresses = list(addresses)
        self.stats.reads += len(addresses)
        return await self._fetch(addresses)

    async def prefetch(self, addresses: Iterable[bytes]) -> list[Node]:
        """:meth:`load_many` for nodes that a tree operation is about to read one by one
        (store/tree.py ``prefetch_paths``): the uncached ones are fetched in one batch and
        counted as fetches, but not as reads, since the operation's own loads count them."""
        return await self._fetch(list(addresses))

    async def _fetch(self, addresses: list[bytes]) -> list[Node]:
        cache = self._cache
        out: list[Node | None] = list(map(self.peek, addresses))  # a subclass's peek too
        if None not in out:
            for address in addresses:
                if address in cache:
                    cache.move_to_end(address)
            return out  # type: ignore[return-value]
        absent = [a for a, node in zip(addresses, out, strict=True) if node is None]
        fetched = await self.store.get_many(absent)
        self.stats.fetches += len(fetched)
        decoded: dict[bytes, Node] = {}
        for address, data in fetched.items():
            fresh = decode_node(address, data)
            decoded[address] = fresh
            self._remember(fresh)
        result: list[Node] = []
        for address, known in zip(addresses, out, strict=True):
            if known is not None:
                if address in cache:
                    cache.move_to_end(address)
                result.append(known)
                continue
            got = decoded.get(address)
            if got is None:  # not returned by the store: fetch it alone
                got = decode_node(address, await self.store.get(address))
                self.stats.fetches += 1
            result.append(got)
        return result

    def _remember(self, node: Node) -> None:
        self._remember_all([node])

    def _remember_all(self, nodes: Iterable[Node]) -> None:
        """Cache ``nodes`` (the newest last), then drop the least recently used ones over
        the budget."""
        cache = self._cache
        added = 0
        for node in nodes:
            address = node.address
            if address not in cache:
                cache[address] = node
                added += node.size
        # decoded nodes take several times their encoded size in Python objects
        cached = self._cached_bytes + added * 3
        if cached > self.cache_bytes:
            limit = self.cache_bytes
            pop = cache.popitem
            while cached > limit and len(cache) > 1:
                cached -= pop(False)[1].size * 3
        self._cached_bytes = cached

    @property
    def cached_bytes(self) -> int:
        """Estimated bytes held by the cache (3x the encoded size of each cached node)."""
        return self._cached_bytes

    # -- writing -----------------------------------------------------------------------------

    def add(self, node: Node, data: bytes) -> None:
        """Buffer a new node for the next :meth:`flush`."""
        self.add_all([(node, data)])

    def add_all(self, made: list[tuple[Node, bytes]]) -> None:
        """Buffer each new ``(node, data)`` of ``made`` for the next :meth:`flush` (one
        already pending or cached is left as it is)."""
        pending, nodes, cache = self._pending, self._pending_nodes, self._cache
        added = 0
        for node, data in made:
            address = node.address
            if address not in pending and address not in cache:
                pending[address] = data
                nodes[address] = node
                added += len(data)
        self._pending_bytes += added

    def add_raw(self, address: bytes, data: bytes) -> None:
        """Buffer a non-tree node (a commit, a schema) for the next :meth:`flush`; the caller
        guarantees ``address == address_of(data)`` (``put_many`` checks it again, a deferred
        flush does not)."""
        if address not in self._pending:
            self._pending[address] = data
            self._pending_bytes += len(data)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    async def flush(self, *, defer: bool = False) -> None:
        """Write every buffered node to the store in one ``put_many``.

        With ``defer``, a store that can stage nodes (``FileStore.stage``) takes them to
        write with its next ref change or put instead, in the same batch and sync: the
        caller must then move a ref (or flush again) before relying on their durability.
        They are staged as verified (not hashed again): every buffered address was computed
        here from its bytes (:func:`make_leaf`, :func:`make_internal`), or by the caller of
        :meth:`add_raw`, which must guarantee it."""
        if not self._pending:
            return
        batch = self._pending
        nodes = self._pending_nodes
        stage = getattr(self.store, "stage", None) if defer else None
        if stage is not None:
            stage(batch, verified=True)
        else:
            await self.store.put_many(batch)
        self.stats.writes += len(batch)
        self._pending = {}
        self._pending_nodes = {}
        self._pending_bytes = 0
        self._remember_all(nodes.values())

    async def maybe_flush(self) -> None:
        if self._pending_bytes >= self.flush_bytes:
            await self.flush()
