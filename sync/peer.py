"""The websocket adapter: peer server and client around sync/protocol.py (docs/protocol.md).

One task owns each :class:`~sync.protocol.SyncProtocol` object and everything written to its
websocket: a reader task and the branch watcher only put items on that task's queue. A
session sends hello, then its branch heads; whenever it learns the peer's heads (or a branch
of ours changes) it streams what the peer lacks (sync/missing.py) and an update naming the
heads that are now complete there. Received nodes are verified (hash, and that everything
they refer to is present: children first) and stored as they come, but a branch moves only
on an update whose heads are present, through ``Connection.add_heads`` (which merges).
"""

from __future__ import annotations

import contextlib
import hmac
import http
import logging
import math
import random
import ssl as _ssl
from collections import ChainMap
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import websockets
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.http11 import Request, Response

from replica.commit import decode_commit
from replica.connection import Connection
from replica.datom import TREES
from replica.errors import NoSuchCommit
from replica.maintenance import PENDING_REF, decode_commit_list
from replica.merge import is_ancestor
from store.codec import encode
from store.errors import CorruptNode, TreeError
from store.nodes import TreeConfig
from sync.missing import (
    DELTA_EDITS,
    CommitDelta,
    RebuildNodes,
    ask_sample,
    children_of,
    missing_commits,
    nodes_to_send,
    rebuild,
    samples,
    unsure,
)
from sync.protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_TOO_BIG,
    Ask,
    Bye,
    Delta,
    Have,
    Heads,
    Hello,
    Limits,
    Nodes,
    PeerClosed,
    RemoteProtocolError,
    SyncError,
    SyncProtocol,
    Update,
)

_log = logging.getLogger("replica.sync")

#: how often a session re-reads the branch refs, to notice commits written by other
#: processes on the same store (writes through this process are noticed at once)
POLL_SECONDS = 0.5
#: received messages queued for the session's task (beyond that the peer waits)
QUEUE_ITEMS = 16
#: frames the websockets library buffers before it stops reading the socket
WS_QUEUE = 4
#: bytes held in memory for a peer allowed to write only some branches
MAX_HELD_BYTES = 64 << 20
#: a peer must say hello within this long after the websocket opened
HELLO_SECONDS = 10.0
#: bytes of nodes rebuilt from deltas kept in memory before they are stored together
UNSTORED_BYTES = 8 << 20
#: commits named in one ask, and ask rounds before sending what is still unsure (4.4)
ASK_LIMIT = 256
MAX_ASK_ROUNDS = 3
_TIMEOUT = object()


#: PENDING_REF lists complete commits received but not yet published (at most MAX_PENDING);
#: its name and decoding belong to replica/maintenance.py, whose gc keeps what it lists
MAX_PENDING = 256


@dataclass(frozen=True, slots=True)
class Permissions:
    """Which branches a peer may read and write (``"*"`` in a set: all)."""

    read: frozenset[str] = frozenset({"*"})
    write: frozenset[str] = frozenset({"*"})

    def can_read(self, branch: str) -> bool:
        return "*" in self.read or branch in self.read

    def can_write(self, branch: str) -> bool:
        return "*" in self.write or branch in self.write


READ_ONLY = Permissions(write=frozenset())


@dataclass(frozen=True, slots=True)
class Statistics:
    bytes_sent: int
    bytes_received: int
    messages_sent: int
    messages_received: int
    nodes_sent: int
    nodes_received: int
    round_trips: int
    sessions: int


class _Session:
    """One connection's sync, run by :meth:`run` in one task."""

    def __init__(
        self,
        conn: Connection,
        ws: ServerConnection | ClientConnection,
        permissions: Permissions,
        branches: Collection[str] | None,
        limits: Limits,
        on_synced: Callable[[bool], None] = lambda synced: None,
    ) -> None:
        self.conn = conn
        self.ws = ws
        self.perm = permissions
        self.branches = None if branches is None else frozenset(branches)
        self.proto = SyncProtocol(conn.replica_id.to_bytes(8, "big"), limits)
        self.on_synced = on_synced
        self.peer_heads: dict[str, tuple[bytes, ...]] | None = None
        self.known: set[bytes] = set()  # commits the peer has (told or sent by us)
        self.lacks: set[bytes] = set()  # commits the peer said it does not have
        self.ask_rounds = 0  # asks sent since the last push that asked nothing
        self.asks_sent = 0
        self.sent: set[bytes] = set()  # node addresses sent in this session
        self.received: set[bytes] = set()
        self.our_heads: dict[str, list[bytes]] = {}
        self.heads_sent = 0
        self.change_pending = False
        self.updates: dict[str, list[bytes]] = {}  # the last update sent per branch
        self.inbox: MemoryObjectReceiveStream[Any] | None = None
        self.deferred: list[Any] = []  # events that arrived while we were sending
        self.deferred_change = False
        self.closing = False
        # nodes from a peer that may write only some branches wait here for an update of
        # one of them (nothing of a refused push reaches the store)
        self.held: dict[bytes, bytes] = {}
        self.held_bytes = 0
        # nodes rebuilt from deltas, verified, to be stored together (_store_unstored)
        self.unstored: dict[bytes, bytes] = {}
        self.unstored_commits: list[bytes] = []
        self.unstored_bytes = 0
        self.rebuilder: RebuildNodes | None = None

    # -- which branches ---------------------------------------------------------------------

    def _shared(self, branch: str) -> bool:
        peer = self.proto.peer
        if not self.perm.can_read(branch):
            return False
        if self.branches is not None and branch not in self.branches:
            return False
        return not (peer is not None and peer.branches is not None and branch not in peer.branches)

    async def _current_heads(self) -> dict[str, list[bytes]]:
        return {b: h for b, h in (await self.conn.branch_heads()).items() if self._shared(b)}

    # -- the owner loop ---------------------------------------------------------------------

    async def run(self) -> None:
        # bounded: a peer writing faster than we store waits in its websocket (backpressure);
        # change notifications coalesce into one pending item
        send, receive = anyio.create_memory_object_stream[Any](QUEUE_ITEMS)
        key = self.conn.watch(lambda: self._changed(send))
        error: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._reader, send.clone())
                tg.start_soon(self._poller, send.clone())
                try:
                    await self._own(receive)
                except (SyncError, websockets.ConnectionClosed) as exc:
                    error = exc  # raised below, outside the task group (no ExceptionGroup)
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self.conn.unwatch(key)
            send.close()
        if error is not None:
            raise error

    def _changed(self, send: MemoryObjectSendStream[Any]) -> None:
        if self.change_pending:
            return
        try:
            send.send_nowait("changed")
            self.change_pending = True
        except anyio.WouldBlock:
            self.change_pending = True  # the poller picks it up
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def _reader(self, send: MemoryObjectSendStream[Any]) -> None:
        with send:
            try:
                async for message in self.ws:
                    await send.send(message)
            except websockets.ConnectionClosed:
                pass
            await send.send(None)

    async def _poller(self, send: MemoryObjectSendStream[Any]) -> None:
        with send:
            last = await self.conn.branch_heads()
            while True:
                await anyio.sleep(POLL_SECONDS)
                heads = await self.conn.branch_heads()
                if heads != last:
                    self.change_pending = True
                    await send.send("changed")
                last = heads

    async def _own(self, receive: MemoryObjectReceiveStream[Any]) -> None:
        try:
            await self._own_loop(receive)
        except RemoteProtocolError as exc:
            if not self.closing:
                _log.warning("closing sync with a peer: %s", exc)
                await self._close(exc.code, str(exc))
            raise

    async def _own_loop(self, receive: MemoryObjectReceiveStream[Any]) -> None:
        self.inbox = receive
        self.proto.send_hello(None if self.branches is None else sorted(self.branches))
        await self._flush()
        deadline = anyio.current_time() + HELLO_SECONDS
        while True:
            if self.deferred or self.deferred_change:
                # what arrived while we were sending (nodes were stored as they came);
                # a RemoteProtocolError closes the connection in _own
                if self.deferred:
                    await self._handle(self.deferred.pop(0))
                else:
                    self.deferred_change = False
                    await self._changed_now()
                await self._flush()
                self._check_synced()
                continue
            item: Any = _TIMEOUT
            with anyio.move_on_after(
                max(0.0, deadline - anyio.current_time()) if self.proto.peer is None else math.inf
            ):
                item = await receive.receive()
            if item is _TIMEOUT:
                await self._close(CLOSE_PROTOCOL, f"no hello within {HELLO_SECONDS:.0f} s")
                raise RemoteProtocolError("no hello in time")
            if item is None:
                raise PeerClosed(1006, "connection lost")
            if item == "changed":
                await self._changed_now()
            else:
                self.proto.receive_data(item)
                for event in self.proto.events_received():
                    await self._handle(event)
            if receive.statistics().current_buffer_used == 0:
                await self._store_unstored()  # no more deltas queued to batch
            await self._flush()
            self._check_synced()

    async def _changed_now(self) -> None:
        self.change_pending = False
        if self.proto.peer is not None and self.peer_heads is not None:
            heads = await self._current_heads()
            if heads == self.our_heads:
                return  # announced already (the watch and the poller both saw the change)
            await self._announce(heads)
            await self._push()

    async def _send(self, data: bytes) -> None:
        """Send one message; while the peer is slow to take it, keep reading what the peer
        sends us (both sides streaming to each other must not wait on each other forever):
        nodes are stored at once, other events wait until our own sending is done."""
        sent = anyio.Event()
        inbox = self.inbox
        assert inbox is not None
        error: BaseException | None = None

        async def send() -> None:
            nonlocal error
            try:
                await self.ws.send(data)
            except Exception as exc:  # raised below, outside the task group
                error = exc
            sent.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            try:
                while not sent.is_set():
                    await self._read_while_sending(inbox)
            except Exception as exc:  # raised below, outside the task group
                error = exc
                tg.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _read_while_sending(self, inbox: MemoryObjectReceiveStream[Any]) -> None:
        item: Any = _TIMEOUT
        with anyio.move_on_after(0.05):
            item = await inbox.receive()
        if item is _TIMEOUT:
            return
        if item is None:
            raise PeerClosed(1006, "connection lost")
        if item == "changed":
            self.deferred_change = True
            return
        self.proto.receive_data(item)
        for event in self.proto.events_received():
            if isinstance(event, Nodes):
                await self._store(event)
            elif isinstance(event, Delta):
                await self._store_delta(event)
            elif isinstance(event, Bye):
                raise PeerClosed(event.code, event.reason)
            else:
                self.deferred.append(event)
        if inbox.statistics().current_buffer_used == 0:
            await self._store_unstored()  # nothing more queued: no more deltas to batch

    async def _handle(self, event: Any) -> None:
        if not isinstance(event, Delta):
            await self._store_unstored()  # what follows may refer to it (or publish it)
        if isinstance(event, Hello):
            await self._announce()
        elif isinstance(event, Heads):
            self.peer_heads = dict(event.branches)
            told = set(event.samples) | set(event.pending)
            for h in event.branches.values():
                told.update(h)
            self.known |= {a for a in told if await self._have_commit(a)}
            if self.conn.genesis is not None:
                self.known.add(self.conn.genesis)  # every database has it (4.2)
            await self._push()
        elif isinstance(event, Ask):
            # the peer asks about commits it holds: those we hold too are common (4.4)
            have = [a for a in event.commits if await self._have_commit(a)]
            self.known.update(have)
            self.proto.send_have(have)
        elif isinstance(event, Have):
            self.known.update(event.commits)
            self.lacks.update(set(event.asked) - set(event.commits))
            await self._push()
        elif isinstance(event, Nodes):
            await self._store(event)
        elif isinstance(event, Delta):
            await self._store_delta(event)
        elif isinstance(event, Update):
            if not self.perm.can_write(event.branch) or not self._wants(event.branch):
                raise RemoteProtocolError(
                    f"peer may not write branch {event.branch!r}", CLOSE_FORBIDDEN
                )
            if self.held:
                await self.conn.store.put_many(self.held)
                self.held.clear()
                self.held_bytes = 0
            missing = await self.conn.store.missing(list(event.heads))
            if missing:
                raise RemoteProtocolError("update names commits that were not sent")
            for head in event.heads:
                try:
                    await self.conn.database.commit(head)
                except (NoSuchCommit, CorruptNode) as exc:
                    raise RemoteProtocolError(
                        f"update names {head.hex()[:16]}, which is not a commit"
                    ) from exc
            self.known.update(event.heads)
            await self.conn.add_heads(event.branch, event.heads)
            await self._prune_pending(event.heads)
        elif isinstance(event, Bye):
            raise PeerClosed(event.code, event.reason)

    def _wants(self, branch: str) -> bool:
        return self.branches is None or branch in self.branches

    async def _have_commit(self, address: bytes) -> bool:
        try:
            await self.conn.database.commit(address)
        except (NoSuchCommit, CorruptNode):
            return False
        return True

    async def _announce(self, heads: dict[str, list[bytes]] | None = None) -> None:
        if heads is None:
            heads = await self._current_heads()
        self.our_heads = heads
        every = [h for hs in heads.values() for h in hs]
        pending = decode_commit_list(await self.conn.store.get_ref(PENDING_REF))
        if pending:  # an entry whose commit a gc from before docs/protocol.md 5.5 deleted
            absent = await self.conn.store.missing(pending)
            pending = [c for c in pending if c not in absent]
        peer = self.proto.peer
        cap = peer.limits.max_heads if peer is not None else MAX_PENDING
        sampled = await samples(self.conn.database, every)
        self.proto.send_heads(heads, sampled[-cap:], pending[-cap:])
        self.heads_sent += 1

    async def _push(self) -> None:
        """Send the peer what it lacks of every shared branch, then an update per branch."""
        if self.peer_heads is None or self.proto.asks_unanswered:
            return  # (while an ask is out, its answer pushes)
        peer = self.proto.peer
        assert peer is not None
        heads = await self._current_heads()
        ask: dict[bytes, None] = {}
        for branch, ours in sorted(heads.items()):
            if peer.branches is not None and branch not in peer.branches:
                continue
            theirs = self.peer_heads.get(branch, ())
            if list(theirs) == ours or self.updates.get(branch) == ours:
                continue
            if await self._peer_has(ours, theirs):
                continue  # the peer's heads of this branch already contain ours
            commits = await missing_commits(self.conn.database, ours, self.known)
            if self.ask_rounds < MAX_ASK_ROUNDS and any(t not in self.known for t in theirs):
                # the peer's heads are unknown here: it may hold some of these (4.4)
                doubt = unsure(commits, self.lacks)
                if doubt:
                    ask.update(dict.fromkeys(ask_sample(doubt, ASK_LIMIT)))
                    continue
            async for batch in nodes_to_send(
                self.conn.database,
                commits,
                self.sent,
                delta_edits=DELTA_EDITS,
                delta_bytes=min(peer.limits.max_message, peer.limits.max_node, 1 << 20),
            ):
                if isinstance(batch, CommitDelta):
                    cfg = self.conn.database.nodes.config
                    self.proto.send_delta(
                        batch.address,
                        batch.data,
                        (cfg.target, cfg.min_size, cfg.max_size),
                        batch.edits,
                    )
                else:
                    self.proto.send_nodes(batch)
                await self._flush()  # waits while the peer reads slowly (bounded buffer)
            self.proto.send_update(branch, ours)
            self.updates[branch] = list(ours)
            self.known.update(ours)
            self.known.update(c.address for c in commits)
        if ask:
            self.proto.send_ask(list(ask)[: min(ASK_LIMIT, peer.limits.max_heads)])
            self.ask_rounds += 1
            self.asks_sent += 1
        else:
            self.ask_rounds = 0

    async def _peer_has(self, ours: list[bytes], theirs: tuple[bytes, ...]) -> bool:
        """Does the peer's branch already contain every head of ours? Yes for a head that is
        an ancestor of (or equal to) one of its heads we hold; and for a head the peer told us
        it has while its branch has heads we lack (it is ahead: it pushes to us, and if its
        branch did not contain our head, our merge of its push is new and goes back)."""
        ahead = any(t not in self.known for t in theirs)
        for h in ours:
            if h in self.known and ahead:
                continue
            found = False
            for t in theirs:
                if t in self.known and await is_ancestor(self.conn.database, h, t):
                    found = True
                    break
            if not found:
                return False
        return True

    async def _store(self, event: Nodes) -> None:
        if not self.perm.write:
            raise RemoteProtocolError("peer may not write here (read-only)", CLOSE_FORBIDDEN)
        await self._store_unstored()  # children first, on disk too
        refs: list[bytes] = []
        batch: dict[bytes, bytes] = {}
        commits: list[bytes] = []
        for addr, data in event.nodes:
            children, is_commit = children_of(addr, data)
            for child in children:
                if child not in self.received and child not in batch:
                    refs.append(child)
            batch[addr] = data
            if is_commit:
                commits.append(addr)
        await self._check_present(refs, "node")
        await self._accept(batch, commits)

    async def _check_present(self, refs: list[bytes], what: str) -> None:
        """Everything in ``refs`` must be in the store or received in this session (5.1)."""
        if refs:
            absent = await self.conn.store.missing(sorted(set(refs)))
            if absent:
                raise RemoteProtocolError(
                    f"{what} refers to {len(absent)} node(s) not sent before it "
                    f"(e.g. {sorted(absent)[0].hex()[:16]})"
                )

    async def _store_delta(self, event: Delta) -> None:
        """Rebuild a commit's trees from its parent's and the edits (4.5, 5.1); store them
        and the commit only if they are exactly the commit's trees."""
        if not self.perm.write:
            raise RemoteProtocolError("peer may not write here (read-only)", CLOSE_FORBIDDEN)
        name = event.address.hex()[:16]
        _, is_commit = children_of(event.address, event.data)
        if not is_commit:
            raise RemoteProtocolError(f"delta {name} is not a commit")
        c = decode_commit(event.address, event.data)
        if not c.parents:
            raise RemoteProtocolError(f"delta {name} is a commit with no parent")
        if len(event.edits) != len(TREES):
            raise RemoteProtocolError(f"delta {name}: {len(event.edits)} trees, not {len(TREES)}")
        refs = [a for a in (c.schema, *c.parents) if a not in self.received]
        await self._check_present(refs, f"delta {name}")
        first = c.parents[0]
        data = self.unstored.get(first) or self.held.get(first)
        try:
            parent = decode_commit(
                first, data if data is not None else await self.conn.store.get(first)
            )
            ours = self.conn.database.nodes.config
            if TreeConfig(*event.tree) != ours:
                raise RemoteProtocolError(
                    f"delta {name} uses tree parameters {list(event.tree)}, ours are "
                    f"{[ours.target, ours.min_size, ours.max_size]}"
                )
            nodes = self.rebuilder
            if nodes is None:
                nodes = RebuildNodes(
                    self.conn.database.nodes, ours, ChainMap(self.unstored, self.held)
                )
                self.rebuilder = nodes
            nodes.begin()
            roots = await rebuild(nodes, parent, event.edits)
        except (CorruptNode, TreeError) as exc:
            raise RemoteProtocolError(f"delta {name} cannot be rebuilt: {exc}") from exc
        if roots != dict(c.roots):
            raise RemoteProtocolError(f"delta {name} does not rebuild the commit's trees")
        batch = dict(nodes.written)
        batch[event.address] = event.data
        if "*" not in self.perm.write:
            await self._accept(batch, [event.address])
            return
        # stored with the deltas that follow it in the inbox, in one batch (_store_unstored)
        self.received.update(batch)
        self.unstored.update(batch)
        self.unstored_commits.append(event.address)
        self.unstored_bytes += sum(map(len, batch.values()))
        if self.unstored_bytes >= UNSTORED_BYTES:
            await self._store_unstored()

    async def _store_unstored(self) -> None:
        """Store the nodes rebuilt from deltas so far, children first, in one batch."""
        if not self.unstored:
            return
        batch, commits = self.unstored, self.unstored_commits
        await self.conn.store.put_many(batch)
        await self._remember_pending(commits)
        self.unstored = {}
        self.unstored_commits = []
        self.unstored_bytes = 0
        if self.rebuilder is not None:
            self.rebuilder.extra = ChainMap(self.unstored, self.held)

    async def _accept(self, batch: dict[bytes, bytes], commits: list[bytes]) -> None:
        """Store verified nodes (or hold them, for a peer that may write some branches)."""
        self.received.update(batch)
        if "*" not in self.perm.write:
            self.held.update(batch)
            self.held_bytes += sum(len(d) for d in batch.values())
            if self.held_bytes > MAX_HELD_BYTES:
                raise RemoteProtocolError("too much pushed before an update", CLOSE_TOO_BIG)
            return
        await self.conn.store.put_many(batch)
        if commits:
            await self._remember_pending(commits)

    async def _prune_pending(self, heads: Collection[bytes]) -> None:
        """Forget pending commits that a published head now reaches."""
        store = self.conn.store
        while True:
            raw = await store.get_ref(PENDING_REF)
            old = decode_commit_list(raw)
            if not old:
                return
            keep = []
            for c in old:
                reached = False
                for h in heads:
                    if await is_ancestor(self.conn.database, c, h):
                        reached = True
                        break
                if not reached:
                    keep.append(c)
            if keep == old:
                return
            if await store.cas_ref(PENDING_REF, raw, encode(keep) if keep else None):
                return

    async def _remember_pending(self, commits: list[bytes]) -> None:
        """Record complete commits received but not yet published (protocol.md section 5):
        after a cut, the next session announces them so the peer does not send them again."""
        store = self.conn.store
        while True:
            raw = await store.get_ref(PENDING_REF)
            old = decode_commit_list(raw)
            new = (old + [c for c in commits if c not in old])[-MAX_PENDING:]
            if await store.cas_ref(PENDING_REF, raw, encode(new)):
                return

    async def _flush(self) -> None:
        for data in self.proto.data_to_send():
            if self.inbox is None:
                await self.ws.send(data)
            else:
                await self._send(data)

    async def _close(self, code: int, reason: str) -> None:
        self.closing = True
        short = reason.encode()[:120].decode(errors="ignore")  # a close frame holds 123 bytes
        with contextlib.suppress(Exception):
            if self.proto.state.value != "closed":
                self.proto.send_bye(code, short)
                await self._flush()
        with contextlib.suppress(Exception):
            await self.ws.close(code if 4000 <= code < 5000 or code == 1000 else 1011, short)

    def _check_synced(self) -> None:
        if self.peer_heads is None:
            self.on_synced(False)
            return
        theirs = {b: list(h) for b, h in self.peer_heads.items() if self._shared(b)}
        ours = {b: h for b, h in self.our_heads.items() if b in theirs or self._peer_wants(b)}
        self.on_synced(theirs == ours)

    def _peer_wants(self, branch: str) -> bool:
        peer = self.proto.peer
        return peer is None or peer.branches is None or branch in peer.branches

    def stats(self) -> dict[str, int]:
        p = self.proto
        return {
            "bytes_sent": p.bytes_sent,
            "bytes_received": p.bytes_received,
            "messages_sent": p.messages_sent,
            "messages_received": p.messages_received,
            "nodes_sent": p.nodes_sent,
            "nodes_received": p.nodes_received,
            "round_trips": self.heads_sent + self.asks_sent,
        }


def _add(total: dict[str, int], more: Mapping[str, int]) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0) + v


def _statistics(total: Mapping[str, int], sessions: int) -> Statistics:
    return Statistics(
        total.get("bytes_sent", 0),
        total.get("bytes_received", 0),
        total.get("messages_sent", 0),
        total.get("messages_received", 0),
        total.get("nodes_sent", 0),
        total.get("nodes_received", 0),
        total.get("round_trips", 0),
        sessions,
    )


# -- server -----------------------------------------------------------------------------------


class PeerServer:
    """A running peer server (see :func:`serve`)."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self.sessions: set[_Session] = set()
        self._finished: dict[str, int] = {}
        self._count = 0

    @property
    def port(self) -> int:
        return int(next(iter(self._server.sockets)).getsockname()[1])

    def statistics(self) -> Statistics:
        total = dict(self._finished)
        for s in self.sessions:
            _add(total, s.stats())
        return _statistics(total, self._count)


def _bearer(request: Request) -> str | None:
    value = request.headers.get("Authorization")
    if value and value.startswith("Bearer "):
        return value[7:]
    return None


@contextlib.asynccontextmanager
async def serve(
    conn: Connection,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    token: str | None = None,
    tokens: Mapping[str, Permissions] | None = None,
    ssl: _ssl.SSLContext | None = None,
    branches: Collection[str] | None = None,
    limits: Limits | None = None,
    handshake_timeout: float = 10.0,
) -> AsyncIterator[PeerServer]:
    """Serve ``conn``'s database to peers: ``async with replica.serve(conn, host, port) as
    server`` (``server.port`` is the bound port; binding errors raise here). ``token``: one
    bearer token giving full access; ``tokens``: token -> :class:`Permissions`; neither:
    anyone may read and write (loopback use). ``branches`` limits what is served."""
    access: dict[str, Permissions] = dict(tokens or {})
    if token is not None:
        access[token] = Permissions()
    lim = limits or Limits()
    holder: list[PeerServer] = []

    def check(connection: ServerConnection, request: Request) -> Response | None:
        if not access:
            return None
        given = _bearer(request)
        for tok in access:
            if given is not None and hmac.compare_digest(given.encode(), tok.encode()):
                return None
        return connection.respond(
            http.HTTPStatus.UNAUTHORIZED, "a valid bearer token is required\n"
        )

    async def handler(ws: ServerConnection) -> None:
        perms = Permissions()
        if access:
            given = _bearer(ws.request) if ws.request is not None else None
            perms = access.get(given or "", READ_ONLY)
        srv = holder[0]
        session = _Session(conn, ws, perms, branches, lim)
        srv.sessions.add(session)
        srv._count += 1
        try:
            await session.run()
        except (SyncError, websockets.ConnectionClosed):
            pass
        except Exception:
            _log.exception("sync session failed")
            await session._close(CLOSE_INTERNAL, "internal error")
        finally:
            srv.sessions.discard(session)
            _add(srv._finished, session.stats())

    server = await ws_serve(
        handler,
        host,
        port,
        process_request=check,
        ssl=ssl,
        compression=None,
        max_size=lim.max_message,
        max_queue=WS_QUEUE,
        open_timeout=handshake_timeout,
    )
    holder.append(PeerServer(server))
    try:
        yield holder[0]
    finally:
        server.close()
        await server.wait_closed()


# -- client -----------------------------------------------------------------------------------


class PeerClient:
    """A client link to one peer (see :func:`connect_peer`)."""

    def __init__(
        self,
        conn: Connection,
        uri: str,
        token: str | None,
        ssl: _ssl.SSLContext | None,
        branches: Collection[str] | None,
        limits: Limits,
        reconnect: bool,
    ) -> None:
        self.conn = conn
        self.uri = uri
        self._token = token
        self._ssl = ssl
        self.branches = branches
        self.limits = limits
        self.reconnect = reconnect
        self._synced = anyio.Event()
        self._is_synced = False
        self._session: _Session | None = None
        self._finished: dict[str, int] = {}
        self._count = 0
        self.error: BaseException | None = None
        self.finished = False  # the link gave up (no more reconnects)
        self._connected = anyio.Event()

    def _on_synced(self, synced: bool) -> None:
        self._is_synced = synced
        if synced:
            self._synced.set()
        elif self._synced.is_set():
            self._synced = anyio.Event()

    async def wait_synced(self) -> None:
        """Wait until this peer and we hold the same heads on every shared branch (wrap it
        in ``anyio.fail_after`` to bound the wait)."""
        while True:
            if self.error is not None and (self.finished or not self.reconnect):
                if isinstance(self.error, SyncError):
                    raise self.error
                raise SyncError(f"sync with {self.uri} failed: {self.error!r}") from self.error
            if self.finished:
                raise SyncError(f"the link to {self.uri} ended")
            if self._is_synced:
                return
            event = self._synced
            with anyio.move_on_after(0.2):
                await event.wait()

    def statistics(self) -> Statistics:
        total = dict(self._finished)
        if self._session is not None:
            _add(total, self._session.stats())
        return _statistics(total, self._count)

    async def _run(self) -> None:
        delay = 0.05
        while True:
            try:
                headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
                async with ws_connect(
                    self.uri,
                    additional_headers=headers,
                    ssl=self._ssl,
                    compression=None,
                    max_size=self.limits.max_message,
                    max_queue=WS_QUEUE,
                    open_timeout=10,
                ) as ws:
                    delay = 0.05
                    session = _Session(
                        self.conn, ws, Permissions(), self.branches, self.limits, self._on_synced
                    )
                    self._session = session
                    self._count += 1
                    self._connected.set()
                    try:
                        await session.run()
                    finally:
                        _add(self._finished, session.stats())
                        self._session = None
                        self._on_synced(False)
            except websockets.InvalidStatus as exc:
                self.error = SyncError(
                    f"peer {self.uri} refused the connection: HTTP {exc.response.status_code}"
                )
                if exc.response.status_code in (401, 403) or not self.reconnect:
                    self._connected.set()
                    raise self.error from exc
            except (
                OSError,
                SyncError,
                websockets.ConnectionClosed,
                websockets.InvalidHandshake,  # e.g. the link dropped during the handshake
                TimeoutError,
            ) as exc:
                self.error = exc
                if not self.reconnect or isinstance(exc, RemoteProtocolError):
                    self._connected.set()
                    raise
            except Exception as exc:  # a bug or a hostile peer: end this link, not the caller
                _log.exception("sync with %s failed", self.uri)
                self.error = SyncError(f"sync with {self.uri} failed: {exc!r}")
                self._connected.set()
                raise self.error from exc
            await anyio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)


@contextlib.asynccontextmanager
async def connect_peer(
    conn: Connection,
    uri: str,
    *,
    token: str | None = None,
    ssl: _ssl.SSLContext | None = None,
    branches: Collection[str] | None = None,
    limits: Limits | None = None,
    reconnect: bool = True,
) -> AsyncIterator[PeerClient]:
    """Sync ``conn``'s database with the peer at ``uri`` (``ws://`` or ``wss://``) for as
    long as the block runs: ``async with replica.connect_peer(conn, uri) as peer: await
    peer.wait_synced()``. New commits flow both ways as they happen; a lost link reconnects
    with backoff (``reconnect=False``: errors end the link)."""
    client = PeerClient(conn, uri, token, ssl, branches, limits or Limits(), reconnect)
    try:
        async with anyio.create_task_group() as tg:

            async def runner() -> None:
                try:
                    await client._run()
                except Exception as exc:  # recorded; wait_synced raises it as a SyncError
                    if client.error is None:
                        client.error = exc
                finally:
                    client.finished = True

            tg.start_soon(runner)
            try:
                yield client
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise single(group) from None


def single(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups, else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def sync_once(
    conn: Connection, uri: str, *, token: str | None = None, **kw: Any
) -> Statistics:
    """Connect, sync until both sides hold the same heads, disconnect (``replica sync``)."""
    async with connect_peer(conn, uri, token=token, reconnect=False, **kw) as peer:
        await peer.wait_synced()
        return peer.statistics()


__all__ = [
    "CLOSE_NORMAL",
    "READ_ONLY",
    "PeerClient",
    "PeerServer",
    "Permissions",
    "Statistics",
    "connect_peer",
    "serve",
    "sync_once",
]
