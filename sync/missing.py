"""What a peer lacks, and checking what a peer sent (docs/protocol.md section 4).

The sender knows the receiver's heads, a sample of commits below them at exponential
distances (1, 4, 16, ... first-parent steps), and complete commits the receiver holds without
having published them (an interrupted sync). The commits it can vouch the receiver has
(``known``: those of these it has itself) bound a walk of its own commit graph in generation
order: everything reachable from its heads and not from ``known`` is missing, and for each
missing commit the nodes reachable from it but not from its first parent (a tree diff,
``new_nodes``). All in one message stream after the heads exchange: no round trip per commit
or per tree level.

If the receiver's heads are unknown to the sender (they diverged), the samples still name
a common commit within four times the divergence; asks (``unsure``, ``ask_sample``) then find
which of the commits in between the receiver holds, so that little is sent twice.

Nodes go out children first (leaves, then each level up; a commit after its trees, schema and
parents), so a receiver that stores them in order never holds a node whose children it lacks:
a present commit is a complete commit, even after a sync was cut anywhere.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass

from replica.commit import Commit, decode_commit
from replica.datom import TREES
from replica.db import Database
from store.codec import decode
from store.errors import CodecError, CorruptNode, TreeError
from store.nodes import Node, Nodes, TreeConfig, decode_node
from store.tree import Tree, diff, new_nodes
from sync.protocol import RemoteProtocolError

#: a received commit stamped further than this in the future is refused
MAX_CLOCK_SKEW_MS = 10 * 60 * 1000


async def samples(
    database: Database, heads: Iterable[bytes], limit: int = 48, depth: int = 1024
) -> list[bytes]:
    """Commits below ``heads`` at first-parent distances 1, 4, 16, ... up to ``depth`` (the
    cost of an announcement does not grow with history length; peers that diverged by more
    than ``depth`` commits fall back to older common commits, e.g. genesis, which is never
    sampled: every database has it). Six per head at most, so that a no-op sync stays under
    1 KiB however long the history; the asks (protocol.md 4.4) narrow what they leave open."""
    out: set[bytes] = set()
    for head in heads:
        c = await database.commit(head)
        distance, mark = 0, 1
        while c.parents and distance < depth and len(out) < limit:
            c = await database.commit(c.parents[0])
            distance += 1
            if distance == mark and c.parents:
                out.add(c.address)
                mark *= 4
    return sorted(out)


async def missing_commits(
    database: Database, ours: Iterable[bytes], known: Iterable[bytes]
) -> list[Commit]:
    """Commits reachable from ``ours`` and not from ``known`` (all present locally), oldest
    generation first (parents before children)."""
    flags: dict[bytes, int] = {}
    heap: list[tuple[int, bytes]] = []

    async def push(addr: bytes, flag: int) -> None:
        old = flags.get(addr, 0)
        if old | flag == old:
            return
        flags[addr] = old | flag
        heapq.heappush(heap, (-(await database.commit(addr)).gen, addr))

    for k in known:
        await push(k, 2)
    for h in ours:
        await push(h, 1)
    out: list[Commit] = []
    done: set[bytes] = set()
    while heap and any(flags[a] == 1 for _, a in heap):
        _, addr = heapq.heappop(heap)
        if addr in done:
            continue
        done.add(addr)
        f = flags[addr]
        c = await database.commit(addr)
        if f == 1:
            out.append(c)
        for p in c.parents:
            await push(p, f)
    out.sort(key=lambda c: (c.gen, c.address))
    return out


def unsure(commits: list[Commit], lacks: set[bytes]) -> list[Commit]:
    """Of ``commits`` (missing_commits' answer, parents first), those the peer may still
    hold: not a commit it said it lacks, nor a descendant of one (a peer holding a commit
    holds its ancestors)."""
    lacking: set[bytes] = set()
    out = []
    for c in commits:
        if c.address in lacks or any(p in lacking for p in c.parents):
            lacking.add(c.address)
        else:
            out.append(c)
    return out


def ask_sample(commits: list[Commit], limit: int) -> list[bytes]:
    """At most ``limit`` of ``commits`` (parents first) to ask the peer about: the oldest
    ones (whose parents are outside the list: if the peer lacks those, it lacks them all),
    then evenly spaced ones, so that each answer narrows the unsure part by ``limit``."""
    if len(commits) <= limit:
        return [c.address for c in commits]
    inside = {c.address for c in commits}
    roots = [c.address for c in commits if not any(p in inside for p in c.parents)]
    picked = dict.fromkeys(roots[: limit // 2])
    rest = limit - len(picked)
    step = len(commits) / rest
    for i in range(rest):
        picked.setdefault(commits[int(i * step)].address)
    return list(picked)[:limit]


#: a commit whose trees differ from its first parent's in at most this many entries goes
#: as a delta (its edits) instead of its new nodes (protocol.md 4.5)
DELTA_EDITS = 4096


#: decoded nodes a :class:`RebuildNodes` keeps between rebuilds
REBUILD_NODES = 4096


#: bytes of nodes one rebuild may write before it is refused (a delta of DELTA_EDITS edits
#: writes at most a few MB; a hostile one must not make us build hundreds)
REBUILD_BYTES = 64 << 20


class RebuildNodes(Nodes):
    """Nodes for rebuilding a commit's trees from a delta: reads go through ``base`` (its
    cache and store) or ``extra`` (nodes received but held in memory); what the trees write
    stays in :attr:`written`, in memory, until the caller stores it. A rebuild writing more
    than ``budget`` bytes raises TreeError."""

    def __init__(
        self,
        base: Nodes,
        config: TreeConfig,
        extra: Mapping[bytes, bytes] | None = None,
        budget: int = REBUILD_BYTES,
    ) -> None:
        super().__init__(base.store, config, cache_bytes=0)
        self._base = base
        self.extra: Mapping[bytes, bytes] = extra or {}
        self._fresh: dict[bytes, Node] = {}
        self.written: dict[bytes, bytes] = {}
        self.budget = budget
        self._written_bytes = 0

    def begin(self) -> None:
        """Start another rebuild: forget what was written (the nodes stay readable, up to
        :data:`REBUILD_NODES` of them, for rebuilding the next commit on top)."""
        self.written = {}
        self._written_bytes = 0
        if len(self._fresh) > REBUILD_NODES:
            self._fresh = {}

    def peek(self, address: bytes) -> Node | None:
        return self._fresh.get(address) or self._base.peek(address)

    async def load(self, address: bytes) -> Node:
        node = self.peek(address)
        if node is not None:
            return node
        data = self.extra.get(address)
        if data is not None:
            node = decode_node(address, data)
            self._fresh[address] = node
            return node
        return await self._base.load(address)

    async def load_many(self, addresses: Iterable[bytes]) -> list[Node]:
        return [await self.load(a) for a in addresses]

    def add(self, node: Node, data: bytes) -> None:
        self._spend(len(data))
        self._fresh[node.address] = node
        self.written[node.address] = data

    def add_raw(self, address: bytes, data: bytes) -> None:
        self._spend(len(data))
        self.written[address] = data

    def _spend(self, size: int) -> None:
        self._written_bytes += size
        if self._written_bytes > self.budget:
            raise TreeError(f"the rebuild writes more than {self.budget} bytes")

    async def flush(self, *, defer: bool = False) -> None:
        return None

    async def maybe_flush(self) -> None:
        return None


async def rebuild(
    nodes: RebuildNodes, parent: Commit, edits: Sequence[Sequence[tuple[bytes, bytes | None]]]
) -> dict[str, bytes]:
    """The roots of ``parent``'s trees after ``edits`` (one sorted list per tree, in
    :data:`TREES` order); the new nodes are in ``nodes.written``."""
    roots = {}
    for name, pairs in zip(TREES, edits, strict=True):
        tree = Tree(nodes, parent.roots[name])
        if pairs:
            keys = [k for k, _ in pairs]
            values = [v for _, v in pairs]
            tree = await tree.edit_sorted(keys, values, flush=False)
        roots[name] = tree.root
    return roots


async def delta_of(
    database: Database,
    c: Commit,
    parent: Commit,
    limit: int = DELTA_EDITS,
    max_bytes: int = 1 << 20,
) -> list[list[tuple[bytes, bytes | None]]] | None:
    """``c``'s trees as edits of ``parent``'s (one sorted list per tree), or None if they
    differ in more than ``limit`` entries, would take more than about ``max_bytes`` on the
    wire, or do not rebuild ``c``'s trees here (trees made with other chunking parameters
    than ours)."""
    nodes = database.nodes
    edits: list[list[tuple[bytes, bytes | None]]] = []
    total = 0
    size = 256
    for name in TREES:
        pairs: list[tuple[bytes, bytes | None]] = []
        async for batch in diff(Tree(nodes, parent.roots[name]), Tree(nodes, c.roots[name])):
            total += len(batch)
            size += sum(len(key) + len(new or b"") + 12 for key, _, new in batch)
            if total > limit or size > max_bytes:
                return None
            pairs.extend((key, new) for key, _, new in batch)
        edits.append(pairs)
    if await rebuild(RebuildNodes(nodes, nodes.config), parent, edits) != dict(c.roots):
        return None
    return edits


@dataclass(frozen=True, slots=True)
class CommitDelta:
    """A commit to send as a delta message: its bytes and its trees' edits."""

    address: bytes
    data: bytes
    edits: list[list[tuple[bytes, bytes | None]]]


async def nodes_to_send(
    database: Database,
    commits: list[Commit],
    already: set[bytes] | None = None,
    batch_bytes: int = 4 << 20,
    delta_edits: int = 0,
    delta_bytes: int = 1 << 20,
) -> AsyncIterator[list[tuple[bytes, bytes]] | CommitDelta]:
    """The nodes of ``commits`` (parents first) that their first parents do not have, in
    batches of about ``batch_bytes``: children before parents, each once (``already`` holds
    addresses sent before and is updated). Memory stays at one batch plus the addresses of
    one commit's new nodes, however big the commit.

    With ``delta_edits``, a commit whose trees differ from its first parent's in at most that
    many entries (and about ``delta_bytes`` encoded) comes as a :class:`CommitDelta` instead
    (after its schema node, if that is new): the receiver, which holds the parent by then,
    rebuilds the trees."""
    sent = already if already is not None else set()
    nodes = database.nodes
    store = database.store
    for c in commits:
        parent = await database.commit(c.parents[0]) if c.parents else None
        if parent is not None and delta_edits and c.address not in sent:
            body = await store.get(c.address)
            room = delta_bytes - len(body) - 256  # the whole message must fit delta_bytes
            edits = await delta_of(database, c, parent, delta_edits, room) if room > 0 else None
            if edits is not None:
                if c.schema != parent.schema and c.schema not in sent:
                    sent.add(c.schema)
                    yield [(c.schema, await store.get(c.schema))]
                sent.add(c.address)
                yield CommitDelta(c.address, body, edits)
                continue
        order: list[tuple[int, bytes]] = []
        for name in TREES:
            base = Tree(nodes, parent.roots[name]) if parent is not None else None
            fresh = sorted(await new_nodes(base, Tree(nodes, c.roots[name])) - sent)
            for i in range(0, len(fresh), 1024):
                for node in await nodes.load_many(fresh[i : i + 1024]):
                    order.append((node.level, node.address))
        order.sort()
        want = [a for _, a in order]
        want += [a for a in (c.schema, c.address) if a not in sent and a not in want]
        batch: list[tuple[bytes, bytes]] = []
        size = 0
        for i in range(0, len(want), 256):
            chunk = want[i : i + 256]
            data = await store.get_many(chunk)
            for a in chunk:
                if a in sent:
                    continue
                sent.add(a)
                batch.append((a, data[a]))
                size += len(data[a])
                if size >= batch_bytes:
                    yield batch
                    batch, size = [], 0
        if batch:
            yield batch


def children_of(address: bytes, data: bytes) -> tuple[list[bytes], bool]:
    """What a received node refers to (a tree node's children; a commit's trees, schema and
    parents) and whether it is a commit, checking a commit's clock. Raises
    RemoteProtocolError for a malformed node."""
    if data and 0x80 <= data[0] <= 0x9F:  # a CBOR array: a tree node, decoded once
        try:
            node = decode_node(address, data)
        except CorruptNode as exc:
            raise RemoteProtocolError(f"node {address.hex()[:16]} is malformed: {exc}") from exc
        return (list(node.children) if node.level else []), False
    try:
        body = decode(data)
    except CodecError as exc:
        raise RemoteProtocolError(f"node {address.hex()[:16]} is malformed: {exc}") from exc
    if not isinstance(body, dict):
        raise RemoteProtocolError(f"node {address.hex()[:16]} is malformed: not a tree node")
    kind = body.get("kind")
    if kind == "schema":
        return [], False
    if kind != "commit":
        raise RemoteProtocolError(f"node {address.hex()[:16]} is of unknown kind")
    try:
        c = decode_commit(address, data)
    except CorruptNode as exc:
        raise RemoteProtocolError(f"malformed commit {address.hex()[:16]}: {exc}") from exc
    if c.stamp.wall_ms > time.time() * 1000 + MAX_CLOCK_SKEW_MS:
        raise RemoteProtocolError(f"commit {address.hex()[:16]} is stamped too far ahead")
    return [*c.roots.values(), c.schema, *c.parents], True
