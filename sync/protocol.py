"""The sync protocol as a pure state machine (docs/protocol.md; STYLE.md items 1, 2).

No ``await``, no store, no sockets: the adapter (sync/peer.py) feeds each received websocket
message to :meth:`SyncProtocol.receive_data`, takes the parsed :meth:`events_received`, calls
``send_*`` commands, and writes what :meth:`data_to_send` returns, one websocket message each.

Transition table (protocol.md section 3). ``S`` = a send command, ``R`` = a received message::

    state        | S hello       | R hello       | S/R heads, nodes, delta,  | S/R bye
                 |               |               |     update, ask, have     |
    -------------+---------------+---------------+---------------------------+---------
    START        | -> SENT       | -> RECEIVED   | error                     | -> CLOSED
    SENT         | error         | -> OPEN       | error                     | -> CLOSED
    RECEIVED     | -> OPEN       | error         | error                     | -> CLOSED
    OPEN         | error         | error         | OPEN                      | -> CLOSED
    CLOSED       | error         | error         | error                     | error

"error" is :class:`LocalProtocolError` for our own commands and :class:`RemoteProtocolError`
for received messages. Every received node is checked against its address (SHA-256) here.
``ask``/``have`` pair up (protocol.md 4.4): a ``have`` answers the oldest unanswered ``ask``
of the other side with a subset of its addresses; at most :data:`MAX_ASKS` asks may be
unanswered each way.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from replica.errors import ReplicaError
from store.codec import address_of, decode, encode, is_address
from store.errors import CodecError

PROTOCOL_VERSION = 2
#: asks one side may have sent and not seen answered (protocol.md 2.6)
MAX_ASKS = 4
#: edits in one delta message, all trees together (protocol.md 2.6); senders make at most
#: half as many (sync.missing.DELTA_EDITS)
MAX_DELTA_EDITS = 8_192

#: close codes (protocol.md section 6); websocket close codes 4000-4999 are ours
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL = 4002
CLOSE_TOO_BIG = 4009
CLOSE_FORBIDDEN = 4003
CLOSE_VERSION = 4005
CLOSE_INTERNAL = 4011


class SyncError(ReplicaError):
    """Base of sync errors."""


class LocalProtocolError(SyncError):
    """We misused the protocol object (a bug in our adapter)."""


class RemoteProtocolError(SyncError):
    """The peer sent something illegal; the connection must close with ``code``."""

    def __init__(self, message: str, code: int = CLOSE_PROTOCOL) -> None:
        super().__init__(message)
        self.code = code


class PeerClosed(SyncError):
    """The peer closed the connection (``code``, ``reason``)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"peer closed the connection ({code}: {reason})")
        self.code = code
        self.reason = reason


class State(enum.Enum):
    START = "start"
    SENT = "hello-sent"
    RECEIVED = "hello-received"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one side accepts (sent in hello; each side enforces its own)."""

    max_message: int = 16 << 20  # bytes of one websocket message
    max_node: int = 4 << 20  # bytes of one node
    max_nodes: int = 10_000  # nodes in one nodes message
    max_heads: int = 1_000  # addresses in each list of one heads message, and per update


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    peer_id: bytes
    limits: Limits
    branches: tuple[str, ...] | None  # the branches the peer wants; None: all


@dataclass(frozen=True, slots=True)
class Heads:
    """The peer's head sets per branch, commits it has reachable at exponential distances
    below them (``samples``), and complete commits it holds but has not published yet."""

    branches: Mapping[str, tuple[bytes, ...]]
    samples: tuple[bytes, ...]
    pending: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Nodes:
    """Verified nodes, children before parents (address -> bytes, in order)."""

    nodes: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Delta:
    """A verified commit sent as its trees' edits against its first parent's trees
    (``edits[i]``: sorted ``(key, value or None)`` pairs of the i-th tree), to be rebuilt with
    the chunking parameters ``tree`` (target, min, max) and checked against its roots."""

    address: bytes
    data: bytes
    tree: tuple[int, int, int]
    edits: tuple[tuple[tuple[bytes, bytes | None], ...], ...]


@dataclass(frozen=True, slots=True)
class Update:
    """Every node under ``heads`` has been sent: add them to ``branch``."""

    branch: str
    heads: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Ask:
    """Which of these commits do you hold (complete)? Answer with :meth:`SyncProtocol.send_have`."""

    commits: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Have:
    """The answer to our oldest unanswered ask: the asked commits the peer holds."""

    commits: tuple[bytes, ...]
    asked: tuple[bytes, ...]  # what that ask named


@dataclass(frozen=True, slots=True)
class Bye:
    code: int
    reason: str


Event = Hello | Heads | Nodes | Delta | Update | Ask | Have | Bye


def _branch_name(x: Any) -> str:
    if not isinstance(x, str) or not x or len(x) > 200:
        raise RemoteProtocolError(f"bad branch name {x!r:.80}")
    return x


def _addresses(x: Any, what: str, limit: int) -> tuple[bytes, ...]:
    if not isinstance(x, list) or not all(is_address(a) for a in x):
        raise RemoteProtocolError(f"{what}: expected a list of node addresses")
    if len(x) > limit:
        raise RemoteProtocolError(f"{what}: {len(x)} addresses, limit {limit}", CLOSE_TOO_BIG)
    return tuple(x)


def _local_branch(x: Any) -> None:
    if not isinstance(x, str) or not x or len(x) > 200:
        raise LocalProtocolError(f"bad branch name {x!r:.80}")


def _local_addresses(x: Sequence[Any], what: str, limit: int) -> None:
    if not all(is_address(a) for a in x):
        raise LocalProtocolError(f"{what}: not all node addresses")
    if len(x) > limit:
        raise LocalProtocolError(f"{what}: {len(x)} addresses, the peer's limit is {limit}")


class SyncProtocol:
    """One side of one sync connection. See the module docstring."""

    def __init__(self, peer_id: bytes, limits: Limits | None = None) -> None:
        if not isinstance(peer_id, bytes) or len(peer_id) != 8:
            raise LocalProtocolError("peer_id must be 8 bytes")
        self.peer_id = peer_id
        self.limits = limits or Limits()
        self.state = State.START
        self.peer: Hello | None = None
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._asked: list[tuple[bytes, ...]] = []  # our asks not answered yet, oldest first
        self._to_answer: list[tuple[bytes, ...]] = []  # the peer's asks we owe a have
        # statistics (protocol.md section 7)
        self.bytes_sent = self.bytes_received = 0
        self.messages_sent = self.messages_received = 0
        self.nodes_sent = self.nodes_received = 0

    # -- receiving --------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """One received websocket message. Raises RemoteProtocolError for anything illegal
        (the connection must then close with its ``code``)."""
        if self.state is State.CLOSED:
            raise RemoteProtocolError("message after bye")
        if not isinstance(data, bytes):
            raise RemoteProtocolError("text message; the protocol is binary CBOR")
        if len(data) > self.limits.max_message:
            raise RemoteProtocolError(
                f"message of {len(data)} bytes, limit {self.limits.max_message}", CLOSE_TOO_BIG
            )
        self.bytes_received += len(data)
        self.messages_received += 1
        try:
            msg = decode(data)
        except CodecError as exc:
            raise RemoteProtocolError(f"malformed CBOR: {exc}") from exc
        if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
            raise RemoteProtocolError("a message is a list starting with its tag")
        tag, args = msg[0], msg[1:]
        handler = _HANDLERS.get(tag)
        if handler is None:
            raise RemoteProtocolError(f"unknown message tag {tag!r:.40}")
        self._events.append(handler(self, args))

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _need_open(self, tag: str) -> None:
        if self.state is not State.OPEN:
            raise RemoteProtocolError(f"{tag} before hello (state {self.state.value})")

    def _r_hello(self, args: list[Any]) -> Hello:
        if self.state not in (State.START, State.SENT):
            raise RemoteProtocolError("second hello")
        if not args:
            raise RemoteProtocolError("hello: expected [version, peer id, limits, branches]")
        version = args[0]
        if type(version) is not int or version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"protocol version {version!r:.40}, we speak {PROTOCOL_VERSION}", CLOSE_VERSION
            )
        if len(args) != 4:
            raise RemoteProtocolError("hello: expected [version, peer id, limits, branches]")
        version, peer_id, limits, branches = args
        if not isinstance(peer_id, bytes) or len(peer_id) != 8:
            raise RemoteProtocolError("hello: peer id must be 8 bytes")
        if not isinstance(limits, dict) or not all(
            type(limits.get(k)) is int and limits[k] > 0
            for k in ("max_message", "max_node", "max_nodes", "max_heads")
        ):
            raise RemoteProtocolError("hello: bad limits")
        if branches is not None:
            if not isinstance(branches, list):
                raise RemoteProtocolError("hello: branches must be a list or null")
            branches = tuple(_branch_name(b) for b in branches)
        hello = Hello(
            version,
            peer_id,
            Limits(
                limits["max_message"], limits["max_node"], limits["max_nodes"], limits["max_heads"]
            ),
            branches,
        )
        self.peer = hello
        self.state = State.OPEN if self.state is State.SENT else State.RECEIVED
        return hello

    def _r_heads(self, args: list[Any]) -> Heads:
        self._need_open("heads")
        if len(args) != 3 or not isinstance(args[0], dict):
            raise RemoteProtocolError("heads: expected [{branch: heads}, samples, pending]")
        limit = self.limits.max_heads
        branches = {_branch_name(b): _addresses(h, "heads", limit) for b, h in args[0].items()}
        if any(not h for h in branches.values()):
            raise RemoteProtocolError("heads: a branch with no head")
        return Heads(
            branches, _addresses(args[1], "samples", limit), _addresses(args[2], "pending", limit)
        )

    def _r_nodes(self, args: list[Any]) -> Nodes:
        self._need_open("nodes")
        if len(args) != 1 or not isinstance(args[0], list):
            raise RemoteProtocolError("nodes: expected [[address, bytes], ...]")
        items = args[0]
        if len(items) > self.limits.max_nodes:
            raise RemoteProtocolError(
                f"nodes: {len(items)} nodes, limit {self.limits.max_nodes}", CLOSE_TOO_BIG
            )
        out = []
        for item in items:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not is_address(item[0])
                or not isinstance(item[1], bytes)
            ):
                raise RemoteProtocolError("nodes: each node is [address, bytes]")
            addr, data = item
            if len(data) > self.limits.max_node:
                raise RemoteProtocolError(
                    f"node {addr.hex()[:16]} of {len(data)} bytes, limit {self.limits.max_node}",
                    CLOSE_TOO_BIG,
                )
            if address_of(data) != addr:
                raise RemoteProtocolError(f"node {addr.hex()[:16]} does not match its address")
            out.append((addr, data))
        self.nodes_received += len(out)
        return Nodes(tuple(out))

    def _r_delta(self, args: list[Any]) -> Delta:
        self._need_open("delta")
        if len(args) != 4:
            raise RemoteProtocolError("delta: expected [address, bytes, tree, edits]")
        addr, data, tree, edits = args
        if not is_address(addr) or not isinstance(data, bytes):
            raise RemoteProtocolError("delta: expected an address and the commit's bytes")
        if len(data) > self.limits.max_node:
            raise RemoteProtocolError(
                f"delta {addr.hex()[:16]} of {len(data)} bytes, limit {self.limits.max_node}",
                CLOSE_TOO_BIG,
            )
        if (
            not isinstance(tree, list)
            or len(tree) != 3
            or not all(type(x) is int and 0 < x < 1 << 32 for x in tree)
            or not tree[1] <= tree[0] <= tree[2]
        ):
            raise RemoteProtocolError("delta: tree must be [target, min, max]")
        if not isinstance(edits, list) or not all(isinstance(e, list) for e in edits):
            raise RemoteProtocolError("delta: edits must be a list of lists")
        total = sum(map(len, edits))
        if total > MAX_DELTA_EDITS:
            raise RemoteProtocolError(
                f"delta: {total} edits, limit {MAX_DELTA_EDITS}", CLOSE_TOO_BIG
            )
        out = []
        for pairs in edits:
            last = None
            for pair in pairs:
                if (
                    not isinstance(pair, list)
                    or len(pair) != 2
                    or not isinstance(pair[0], bytes)
                    or not (pair[1] is None or isinstance(pair[1], bytes))
                ):
                    raise RemoteProtocolError("delta: each edit is [key, value or null]")
                if last is not None and pair[0] <= last:
                    raise RemoteProtocolError("delta: keys not strictly ascending")
                last = pair[0]
            out.append(tuple((k, v) for k, v in pairs))
        if address_of(data) != addr:
            raise RemoteProtocolError(f"delta {addr.hex()[:16]} does not match its address")
        self.nodes_received += 1
        return Delta(addr, data, (tree[0], tree[1], tree[2]), tuple(out))

    def _r_update(self, args: list[Any]) -> Update:
        self._need_open("update")
        if len(args) != 2:
            raise RemoteProtocolError("update: expected [branch, heads]")
        heads = _addresses(args[1], "update", self.limits.max_heads)
        if not heads:
            raise RemoteProtocolError("update: no heads")
        return Update(_branch_name(args[0]), heads)

    def _r_ask(self, args: list[Any]) -> Ask:
        self._need_open("ask")
        if len(args) != 1:
            raise RemoteProtocolError("ask: expected [commits]")
        commits = _addresses(args[0], "ask", self.limits.max_heads)
        if not commits:
            raise RemoteProtocolError("ask: no commits")
        if len(self._to_answer) >= MAX_ASKS:
            raise RemoteProtocolError(f"ask: more than {MAX_ASKS} asks unanswered", CLOSE_TOO_BIG)
        self._to_answer.append(commits)
        return Ask(commits)

    def _r_have(self, args: list[Any]) -> Have:
        self._need_open("have")
        if len(args) != 1:
            raise RemoteProtocolError("have: expected [commits]")
        commits = _addresses(args[0], "have", self.limits.max_heads)
        if not self._asked:
            raise RemoteProtocolError("have: we asked nothing")
        asked = self._asked[0]
        if not set(commits) <= set(asked):
            raise RemoteProtocolError("have: names a commit we did not ask about")
        self._asked.pop(0)
        return Have(commits, asked)

    def _r_bye(self, args: list[Any]) -> Bye:
        if len(args) != 2 or type(args[0]) is not int or not isinstance(args[1], str):
            raise RemoteProtocolError("bye: expected [code, reason]")
        self.state = State.CLOSED
        return Bye(args[0], args[1][:200])

    # -- sending ----------------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def _send(self, msg: list[Any]) -> None:
        data = encode(msg)
        self.bytes_sent += len(data)
        self.messages_sent += 1
        self._out.append(data)

    def _need_open_local(self, what: str) -> None:
        if self.state is not State.OPEN:
            raise LocalProtocolError(f"cannot send {what} in state {self.state.value}")

    def send_hello(self, branches: Sequence[str] | None = None) -> None:
        if self.state not in (State.START, State.RECEIVED):
            raise LocalProtocolError(f"cannot send hello in state {self.state.value}")
        for b in branches or ():
            _local_branch(b)
        lim = self.limits
        self._send(
            [
                "hello",
                PROTOCOL_VERSION,
                self.peer_id,
                {
                    "max_message": lim.max_message,
                    "max_node": lim.max_node,
                    "max_nodes": lim.max_nodes,
                    "max_heads": lim.max_heads,
                },
                None if branches is None else list(branches),
            ]
        )
        self.state = State.OPEN if self.state is State.RECEIVED else State.SENT

    def send_heads(
        self,
        branches: Mapping[str, Sequence[bytes]],
        samples: Sequence[bytes] = (),
        pending: Sequence[bytes] = (),
    ) -> None:
        self._need_open_local("heads")
        assert self.peer is not None
        limit = self.peer.limits.max_heads
        for b, h in branches.items():
            _local_branch(b)
            if not h:
                raise LocalProtocolError(f"branch {b!r} with no head")
            _local_addresses(h, "heads", limit)
        _local_addresses(samples, "samples", limit)
        _local_addresses(pending, "pending", limit)
        self._send(
            [
                "heads",
                {b: list(h) for b, h in sorted(branches.items())},
                list(samples),
                list(pending),
            ]
        )

    def send_nodes(self, nodes: Sequence[tuple[bytes, bytes]]) -> None:
        """Send nodes (children before parents), split into messages within the peer's
        limits."""
        self._need_open_local("nodes")
        assert self.peer is not None
        lim = self.peer.limits
        for addr, data in nodes:
            if not is_address(addr) or not isinstance(data, bytes):
                raise LocalProtocolError("nodes are (address, bytes) pairs")
            if len(data) > lim.max_node or len(data) + 64 > lim.max_message:
                raise LocalProtocolError(f"node of {len(data)} bytes exceeds the peer's limits")
        batch: list[list[bytes]] = []
        size = 16
        for addr, data in nodes:
            n = len(data) + 48
            if batch and (size + n > lim.max_message or len(batch) >= lim.max_nodes):
                self._send(["nodes", batch])
                batch, size = [], 16
            batch.append([addr, data])
            size += n
        if batch:
            self._send(["nodes", batch])
        self.nodes_sent += len(nodes)

    def send_delta(
        self,
        address: bytes,
        data: bytes,
        tree: Sequence[int],
        edits: Sequence[Sequence[tuple[bytes, bytes | None]]],
    ) -> None:
        """Send a commit as its trees' edits against its first parent (protocol.md 2.8)."""
        self._need_open_local("delta")
        assert self.peer is not None
        if not is_address(address) or not isinstance(data, bytes):
            raise LocalProtocolError("a delta is an address and the commit's bytes")
        if address_of(data) != address:
            raise LocalProtocolError("a delta's bytes must match its address")
        t = list(tree)
        if not (
            len(t) == 3
            and all(type(x) is int and 0 < x < 1 << 32 for x in t)
            and t[1] <= t[0] <= t[2]
        ):
            raise LocalProtocolError("a delta's tree is [target, min, max]")
        total = sum(map(len, edits))
        if len(data) > self.peer.limits.max_node or total > MAX_DELTA_EDITS:
            raise LocalProtocolError("delta over the peer's limits")
        msg = ["delta", address, data, list(tree), [[[k, v] for k, v in e] for e in edits]]
        encoded = encode(msg)
        if len(encoded) > self.peer.limits.max_message:
            raise LocalProtocolError("delta over the peer's max_message")
        self.bytes_sent += len(encoded)
        self.messages_sent += 1
        self._out.append(encoded)
        self.nodes_sent += 1

    def send_update(self, branch: str, heads: Sequence[bytes]) -> None:
        self._need_open_local("update")
        assert self.peer is not None
        _local_branch(branch)
        if not heads:
            raise LocalProtocolError("update with no heads")
        _local_addresses(heads, "update", self.peer.limits.max_heads)
        self._send(["update", branch, list(heads)])

    def send_ask(self, commits: Sequence[bytes]) -> None:
        """Ask the peer which of ``commits`` it holds; its :class:`Have` answers."""
        self._need_open_local("ask")
        assert self.peer is not None
        if not commits:
            raise LocalProtocolError("ask with no commits")
        _local_addresses(commits, "ask", self.peer.limits.max_heads)
        if len(self._asked) >= MAX_ASKS:
            raise LocalProtocolError(f"{MAX_ASKS} asks unanswered already")
        self._asked.append(tuple(commits))
        self._send(["ask", list(commits)])

    @property
    def asks_unanswered(self) -> int:
        """Our asks the peer has not answered yet."""
        return len(self._asked)

    def send_have(self, commits: Sequence[bytes]) -> None:
        """Answer the peer's oldest unanswered :class:`Ask`: those of its commits we hold."""
        self._need_open_local("have")
        if not self._to_answer:
            raise LocalProtocolError("have without an ask to answer")
        if not set(commits) <= set(self._to_answer[0]):
            raise LocalProtocolError("have names a commit the peer did not ask about")
        _local_addresses(commits, "have", len(self._to_answer[0]))
        self._to_answer.pop(0)
        self._send(["have", list(commits)])

    def send_bye(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if self.state is State.CLOSED:
            raise LocalProtocolError("bye already sent or received")
        self._send(["bye", code, reason])
        self.state = State.CLOSED


_HANDLERS: dict[str, Callable[[SyncProtocol, list[Any]], Event]] = {
    "hello": SyncProtocol._r_hello,
    "heads": SyncProtocol._r_heads,
    "nodes": SyncProtocol._r_nodes,
    "update": SyncProtocol._r_update,
    "delta": SyncProtocol._r_delta,
    "ask": SyncProtocol._r_ask,
    "have": SyncProtocol._r_have,
    "bye": SyncProtocol._r_bye,
}

__all__ = [
    "MAX_ASKS",
    "MAX_DELTA_EDITS",
    "Ask",
    "Bye",
    "Delta",
    "Event",
    "Have",
    "Heads",
    "Hello",
    "Limits",
    "LocalProtocolError",
    "Nodes",
    "PeerClosed",
    "RemoteProtocolError",
    "State",
    "SyncError",
    "SyncProtocol",
    "Update",
]
