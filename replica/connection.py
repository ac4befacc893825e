"""Connections: the only mutable thing (DESIGN.md section 5, STYLE.md item 3).

A store holds one database: a ``config`` ref (format, schema flexibility, tree parameters) and
one ref per branch, ``branches/<name>``, whose value is the sorted set of the branch's head
commits (usually one; several after concurrent writers or a sync, until they merge:
replica/merge.py). A transaction computes the new indexes from the branch head, writes all
new nodes in one batch (O(1) fsyncs), then moves the branch with ``cas_ref``. If another
writer (another process on the same store) moved the branch first, the transaction is
computed again on the new head (``on_race="retry"``, the default) or kept and merged as a
second head (``on_race="merge"``): either way no acknowledged write is ever lost.
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
import math
import random
import time
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from query.gcpause import gc_paused
from replica.commit import Commit, commit_body, encode_commit, schema_body
from replica.datom import (
    TREES,
    ZERO_STAMP,
    Datom,
    Stamp,
    attr_bytes,
    decode_eavt,
    eid_bytes,
    new_replica_id,
)
from replica.db import DB, Database, index_edit_lists
from replica.errors import (
    BranchError,
    BranchExists,
    DatabaseExists,
    DatabaseNotFound,
    NoSuchBranch,
    TxDataError,
)
from replica.merge import Conflict, MergeConflict, join_heads, merge_heads
from replica.schema import Schema
from replica.tx import TxFunction, TxResult, compute_tx
from replica.values import encode_value
from store.base import NodeStore, check_ref_name, open_store
from store.codec import address_of, decode, encode, encode_trusted, is_address
from store.errors import CodecError, StoreError
from store.nodes import Nodes, TreeConfig
from store.tree import Tree, edit_trees

_log = logging.getLogger("replica")

CONFIG_REF = "config"
BRANCH_PREFIX = "branches/"
DB_FORMAT = 2
#: a transaction that keeps losing the branch race gives up after this long (not a count:
#: a slow writer against a fast one may lose many rounds before it wins one)
TX_RETRY_SECONDS = 120.0


class _BranchState:
    """What the connections of one process writing one branch share: a lock (they take
    turns: racing each other through cas_ref only starves the one with the colder cache)
    and the branch ref value the last of them wrote or read, so that a transaction needs
    no read of the ref first (cas_ref checks it; None: read it)."""

    __slots__ = ("__weakref__", "heads", "lock", "raw")

    def __init__(self) -> None:
        # fast_acquire: an uncontended acquire does not yield to the loop (a transaction
        # yields in its store write anyway, store/file.py FileStore.cas_ref)
        self.lock = anyio.Lock(fast_acquire=True)
        self.raw: bytes | None = None
        # the heads a transaction wrote, with the ref value it wrote (that very object):
        # the next one needs not decode the value again while it is still ``raw``
        self.heads: tuple[bytes, list[bytes]] | None = None


_BRANCH_STATES: weakref.WeakValueDictionary[tuple[str, str], _BranchState] = (
    weakref.WeakValueDictionary()
)


# Large transactions allocate millions of small objects that all stay alive until the
# transaction ends; the cyclic GC would traverse them again and again (a fifth of the time
# of a 100k-datom transaction) and free nothing. It is paused (query.gcpause) while one
# computes and writes (cycles made meanwhile are collected when it resumes).
GC_PAUSE_ITEMS = 1000


#: callbacks (per database URL, in this process) told when any branch of it changes
_WATCHERS: dict[str, dict[Any, Callable[[], None]]] = {}


def _notify(url: str) -> None:
    for callback in list(_WATCHERS.get(url, {}).values()):
        try:
            callback()
        except Exception:
            _log.exception("branch watcher %r failed", callback)


def _branch_state(url: str, branch: str) -> _BranchState:
    key = (url, branch)
    state = _BRANCH_STATES.get(key)
    if state is None:
        state = _BranchState()
        _BRANCH_STATES[key] = state
    return state


@dataclass(frozen=True, slots=True)
class TxReport:
    """What a transaction did. ``tx_data`` lists the datoms asserted and retracted."""

    db_before: DB
    db_after: DB
    tx_data: tuple[Datom, ...]
    tempids: Mapping[Any, int]
    tx_meta: Mapping[str, Any] | None
    tx: int


@dataclass(frozen=True, slots=True)
class MergeReport:
    """What :meth:`Connection.merge` did: the resulting DB, the conflicts the merge resolved,
    whether it was a fast-forward, and the report of the caller's ``tx_data`` if any."""

    db: DB
    conflicts: tuple[Conflict, ...]
    fast_forward: bool
    tx_report: TxReport | None


@dataclass(frozen=True, slots=True)
class Diff:
    """Datoms added and retracted between two DB values (see :func:`diff`)."""

    added: tuple[Datom, ...] = field(default_factory=tuple)
    retracted: tuple[Datom, ...] = field(default_factory=tuple)


def encode_heads(heads: Iterable[bytes]) -> bytes:
    if type(heads) is list and len(heads) == 1:
        head: bytes = heads[0]
        if type(head) is bytes and is_address(head):
            return _ONE_HEAD + head  # a transaction's: the canonical CBOR, without cbor2
    heads = sorted(set(heads))
    if not all(type(h) is bytes for h in heads):
        raise BranchError(f"commit ids are bytes, got {heads!r:.200}")
    return encode_trusted(heads)


_ONE_HEAD = b"\x81\x58\x21"  # CBOR: an array of one, a byte string of 33 (an address)


def decode_heads(raw: bytes, branch: str) -> list[bytes]:
    try:
        heads = decode(raw)
    except CodecError as exc:
        raise BranchError(f"branch {branch!r} ref is corrupt: {exc}") from exc
    if not isinstance(heads, list) or not heads or not all(is_address(h) for h in heads):
        raise BranchError(f"branch {branch!r} ref is corrupt")
    return heads


def _branch_ref(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise BranchError(f"invalid branch name {name!r}")
    return _checked_branch_ref(str(name))


@functools.lru_cache(maxsize=1024)
def _checked_branch_ref(name: str) -> str:
    try:
        return check_ref_name(BRANCH_PREFIX + name)
    except StoreError as exc:
        raise BranchError(f"invalid branch name {name!r}") from exc


_READS_STATE = frozenset({"db/cas", "db.fn/cas", "db.fn/call"})


def _reads_state(tx_data: Any) -> bool:
    """Does ``tx_data`` hold an operation whose effect depends on the state it reads
    (compare-and-swap, transaction functions)? Those are re-applied on a moved branch head
    instead of merged."""
    if not isinstance(tx_data, list | tuple):
        return False
    for item in tx_data:
        if isinstance(item, list | tuple) and item and str(item[0]).lstrip(":") in _READS_STATE:
            return True
    return False


def _parse_tx(tx_data: Any) -> Any:
    if isinstance(tx_data, str):
        from query import edn

        return edn.loads(tx_data)
    return tx_data


async def _read_config(store: NodeStore, url: str) -> dict[str, Any]:
    raw = await store.get_ref(CONFIG_REF)
    if raw is None:
        raise DatabaseNotFound(url)
    try:
        config = decode(raw)
    except CodecError as exc:
        raise StoreError(f"database config at {url} is corrupt: {exc}") from exc
    if not isinstance(config, dict) or config.get("kind") != "replica-db":
        raise StoreError(f"{url} holds something that is not a replica database")
    if config.get("format") != DB_FORMAT:
        raise StoreError(
            f"database at {url} has format {config.get('format')!r}; we read {DB_FORMAT}"
        )
    return config


async def _genesis(nodes: Nodes) -> bytes:
    """The genesis commit (identical in every database): empty trees, empty schema."""
    empty = await Tree.empty(nodes)
    schema_data = encode(schema_body(Schema({})))
    schema_addr = address_of(schema_data)
    nodes.add_raw(schema_addr, schema_data)
    body = commit_body([], {name: empty.root for name in TREES}, schema_addr, ZERO_STAMP, 0, 0)
    address, data = encode_commit(body)
    nodes.add_raw(address, data)
    await nodes.flush()
    return address


async def create_database(
    url: str,
    *,
    schema: Any = None,
    schema_flexibility: str = "write",
    tree_config: TreeConfig | None = None,
) -> None:
    """Create an empty database at ``url`` (with ``schema`` transacted first, if given).
    Raises DatabaseExists if there is one."""
    store = await open_store(url)
    try:
        await _create_in(store, url, schema_flexibility, tree_config)
        if schema:
            conn = await _connect_store(store, url, "main", owns_store=False)
            await conn.transact(schema)
    finally:
        await store.aclose()


async def _create_in(
    store: NodeStore, url: str, schema_flexibility: str, tree_config: TreeConfig | None
) -> None:
    if schema_flexibility not in ("write", "read"):
        raise TxDataError("schema_flexibility must be 'write' or 'read'", schema_flexibility)
    cfg = tree_config or TreeConfig()
    nodes = Nodes(store, cfg)
    genesis = await _genesis(nodes)
    config = {
        "kind": "replica-db",
        "format": DB_FORMAT,
        "schema_flexibility": schema_flexibility,
        "tree": [cfg.target, cfg.min_size, cfg.max_size],
        "genesis": genesis,
    }
    if await store.get_ref(CONFIG_REF) is not None:
        raise DatabaseExists(url)
    await store.cas_ref(BRANCH_PREFIX + "main", None, encode_heads([genesis]))
    if not await store.cas_ref(CONFIG_REF, None, encode(config)):
        raise DatabaseExists(url)


async def _connect_store(
    store: NodeStore, url: str, branch: str, owns_store: bool, cache_bytes: int = 64 << 20
) -> Connection:
    config = await _read_config(store, url)
    target, lo, hi = config["tree"]
    nodes = Nodes(store, TreeConfig(target, lo, hi), cache_bytes=cache_bytes)
    database = Database(store, nodes, config["schema_flexibility"])
    raw = await store.get_ref(_branch_ref(branch))
    if raw is None:
        raise NoSuchBranch(branch)
    heads = decode_heads(raw, branch)
    conn = Connection(url, store, database, branch, await database.db_at(heads[0]), owns_store)
    conn.genesis = config["genesis"]
    if len(heads) > 1:
        conn._db = await conn._settle(raw)
    return conn


async def database_exists(url: str) -> bool:
    store = await open_store(url)
    try:
        return await store.get_ref(CONFIG_REF) is not None
    finally:
        await store.aclose()


async def delete_database(url: str) -> None:
    """Delete every ref and node of the database at ``url``."""
    store = await open_store(url)
    try:
        for name, value in (await store.list_refs()).items():
            await store.cas_ref(name, value, None)
        await store.delete_many(await store.list_addresses())
    finally:
        await store.aclose()


class _Clock:
    """Hybrid logical clock of one connection."""

    def __init__(self) -> None:
        self.last = ZERO_STAMP

    def next(self, parent: Stamp, tx: int) -> Stamp:
        base = max(parent, self.last)
        stamp = base.next(tx, int(time.time() * 1000))
        self.last = stamp
        return stamp


class Connection:
    """A connection to one branch of a database. Use :func:`connect`."""

    def __init__(
        self,
        url: str,
        store: NodeStore,
        database: Database,
        branch: str,
        db: DB,
        owns_store: bool,
    ) -> None:
        self.url = url
        self.store = store
        self.database = database
        self.branch_name = branch
        self._db = db
        self._owns_store = owns_store
        self.replica_id = new_replica_id()
        self._counter = 0
        self._clock = _Clock()
        # mem:// without a name is private to this object; every other URL can be shared
        shared = url.rstrip("/") != "mem:"
        self._branch = _branch_state(url, branch) if shared else _BranchState()
        self._listeners: dict[Any, Callable[[TxReport], Any]] = {}
        self._streams: list[MemoryObjectSendStream[TxReport]] = []
        self.tx_fns: dict[str, TxFunction] = {}
        #: what a transaction does when another writer moved the branch first (see
        #: :func:`connect`)
        self.on_race = "retry"
        #: the database's genesis commit (the same in every database)
        self.genesis: bytes | None = None
        self._closed = False

    # -- values ------------------------------------------------------------------------------

    @property
    def db(self) -> DB:
        """The current DB value of the branch as this connection last saw it (no I/O);
        :meth:`refresh` re-reads the branch head written by other processes."""
        return self._db

    @property
    def commit_id(self) -> bytes:
        return self._db.commit_id

    @property
    def schema(self) -> Schema:
        return self._db.schema

    async def refresh(self) -> DB:
        """Re-read the branch (written by other processes or by sync); if it has several
        heads, merge them (and move the branch to the merge commit)."""
        raw = await self.store.get_ref(_branch_ref(self.branch_name))
        if raw is None:
            raise NoSuchBranch(self.branch_name)
        heads = decode_heads(raw, self.branch_name)
        if len(heads) > 1:
            self._db = await self._settle(raw)
        elif heads[0] != self._db.commit_id:
            self._db = await self.database.db_at(heads[0])
        return self._db

    async def _settle(self, raw: bytes, branch: str | None = None) -> DB:
        """Merge the heads of ``branch`` (ref value ``raw``) into one merge commit and move
        the branch to it if nobody moved it meanwhile. Returns the merged DB (several
        processes merging the same heads write the same commit, so losing that race is
        harmless)."""
        name = branch or self.branch_name
        heads = decode_heads(raw, name)
        db, _ = await merge_heads(self.database, heads)
        if heads != [db.commit_id]:
            # the merge, or the one head whose transactions include every other head's
            self._forget_head(name)
            await self.store.cas_ref(_branch_ref(name), raw, encode_heads([db.commit_id]))
        return db

    async def _heads(self, branch: str) -> list[bytes]:
        raw = await self.store.get_ref(_branch_ref(branch))
        if raw is None:
            raise NoSuchBranch(branch)
        return decode_heads(raw, branch)

    async def _db_of_heads(self, heads: list[bytes]) -> DB:
        """The DB of a head set: the head, or the merge of the heads (nothing moves)."""
        if len(heads) > 1:
            db, _ = await merge_heads(self.database, heads)
            return db
        return await self.database.db_at(heads[0])

    # -- transactions ------------------------------------------------------------------------

    def _allocate(self) -> int:
        self._counter += 1
        return self.replica_id << 64 | self._counter

    def register_tx_fn(self, name: str, fn: TxFunction) -> None:
        """Make ``fn(db, *args)`` callable as ``["db.fn/call", name, *args]``. It returns tx
        data; it runs locally only (never code received from a peer)."""
        if not callable(fn):
            raise TxDataError("transaction function must be callable", fn)
        self.tx_fns[name] = fn

    async def transact(self, tx_data: Any, tx_meta: Mapping[str, Any] | None = None) -> TxReport:
        """Apply ``tx_data`` (Python data or an EDN string) as one transaction; returns its
        TxReport once it is durable. On error nothing is written."""
        self._check_open()
        tx_data = _parse_tx(tx_data)
        ref = _branch_ref(self.branch_name)
        state = self._branch
        big = isinstance(tx_data, list | tuple) and len(tx_data) >= GC_PAUSE_ITEMS
        reads_state = _reads_state(tx_data)
        async with state.lock:
            with gc_paused(big):
                deadline = anyio.current_time() + TX_RETRY_SECONDS
                attempt = 0
                raw = state.raw
                while True:
                    if raw is None:
                        raw = await self.store.get_ref(ref)
                        if raw is None:
                            raise NoSuchBranch(self.branch_name)
                    known = state.heads
                    if known is not None and known[0] is raw:
                        heads = known[1]
                    else:
                        heads = decode_heads(raw, self.branch_name)
                    db = self._db
                    if len(heads) == 1 and heads[0] == db.commit_id and not db.is_filtered:
                        db_before = db
                    else:
                        db_before = await self._db_of_heads(heads)
                    tx = self._allocate()
                    stamp = self._clock.next(db_before.stamp, tx)
                    instant = _dt.datetime.fromtimestamp(stamp.wall_ms / 1000, _dt.UTC)
                    result = await compute_tx(
                        db_before,
                        tx_data,
                        tx=tx,
                        instant=instant,
                        allocate=self._allocate,
                        tx_meta=tx_meta,
                        tx_fns=self.tx_fns,
                    )
                    db_after = await write_commit(
                        self.database, db_before, result, stamp, self.replica_id, flush=False
                    )
                    new_raw = encode_heads([db_after.commit_id])
                    # the nodes go with the ref update where the store can (one sync)
                    await self.database.nodes.flush(defer=True)
                    if await self.store.cas_ref(ref, raw, new_raw):
                        state.raw = new_raw
                        state.heads = (new_raw, [db_after.commit_id])
                        self._db = db_after
                        break
                    state.raw = raw = None
                    if self.on_race == "merge" and not reads_state:
                        # another writer (another process) moved the branch: our commit is
                        # durable (the lost cas wrote its nodes), so it becomes one more
                        # head and the heads merge (docs/conflicts.md, concurrent writers)
                        merged = await self._add_head(ref, db_after.commit_id)
                        if merged is not None:
                            self._db = merged
                            break
                        continue
                    # a transaction whose result depends on what it read (db/cas,
                    # db.fn/call) is computed again on the new head instead: back off a
                    # random, growing while (so two writers stop colliding in lockstep)
                    attempt += 1
                    if anyio.current_time() > deadline:
                        raise BranchError(
                            f"gave up after {attempt} lost races for branch "
                            f"{self.branch_name!r} in {TX_RETRY_SECONDS:.0f} s"
                        )
                    await anyio.sleep(random.uniform(0, min(0.05, 0.0005 * 2**attempt)))
        report = TxReport(db_before, db_after, tuple(result.datoms), result.tempids, tx_meta, tx)
        self._publish(report)
        return report

    async def _add_head(self, ref: str, commit: bytes) -> DB | None:
        """Add ``commit`` to the head set of the branch (join: union minus ancestors), then
        merge the heads. Returns the merged DB, or None if the commit could not be added
        because the branch was deleted or reset meanwhile (then the transaction is computed
        again)."""
        while True:
            raw = await self.store.get_ref(ref)
            if raw is None:
                raise NoSuchBranch(self.branch_name)
            heads = decode_heads(raw, self.branch_name)
            joined = await join_heads(self.database, [*heads, commit])
            if commit not in joined:
                return await self._settle(raw) if len(heads) > 1 else None
            new_raw = encode_heads(joined)
            if await self.store.cas_ref(ref, raw, new_raw):
                return await self._settle(new_raw)

    async def merge(
        self,
        other: Any,
        tx_data: Any = None,
        *,
        strategy: str = "auto",
        tx_meta: Mapping[str, Any] | None = None,
    ) -> MergeReport:
        """Merge ``other`` (a branch name, a commit id, a DB or a list of commit ids) into
        this connection's branch. Fast-forwards when this branch is an ancestor of it. With
        ``tx_data`` (Datahike's ``merge-db``), that data is transacted on the merged value
        in the same call, to settle what the automatic rules decided. ``strategy``:
        ``"auto"`` resolves conflicts by the per-attribute rules (docs/conflicts.md);
        ``"strict"`` raises :class:`MergeConflict` listing them and writes nothing."""
        self._check_open()
        if strategy not in ("auto", "strict"):
            raise BranchError(f"unknown merge strategy {strategy!r} (auto or strict)")
        if isinstance(other, list | tuple | set | frozenset):
            theirs = [await self._resolve_commit(c) for c in other]
        elif isinstance(other, str):
            theirs = await self._heads(other)
        else:
            theirs = [await self._resolve_commit(other)]
        ref = _branch_ref(self.branch_name)
        tx_data = _parse_tx(tx_data) if tx_data is not None else None
        async with self._branch.lock:
            while True:
                raw = await self.store.get_ref(ref)
                if raw is None:
                    raise NoSuchBranch(self.branch_name)
                ours = decode_heads(raw, self.branch_name)
                heads = await join_heads(self.database, [*ours, *theirs])
                # a strict merge with conflicts, or bad resolution data, fails before
                # anything is written (computed on nodes that never reach the store)
                if len(heads) > 1 and (strategy == "strict" or tx_data is not None):
                    probe = await self._dry_merge(heads, strict=strategy == "strict")
                else:
                    probe = await self.database.db_at(heads[0])
                if tx_data is not None:
                    await with_tx(probe, tx_data, tx_meta)
                db, found = await merge_heads(self.database, heads)
                fast_forward = len(heads) == 1 and heads != ours
                if heads == ours and len(ours) == 1:
                    break  # already contains it
                self._forget_head(self.branch_name)
                if await self.store.cas_ref(ref, raw, encode_heads([db.commit_id])):
                    break
            self._db = db
        _notify(self.url)
        report = MergeReport(db, found, fast_forward, None)
        if tx_data is not None:
            tx_report = await self.transact(tx_data, tx_meta)
            report = MergeReport(tx_report.db_after, found, fast_forward, tx_report)
        return report

    async def _dry_merge(self, heads: list[bytes], strict: bool) -> DB:
        """The merge of ``heads`` computed without writing anything (MergeConflict if
        ``strict`` and it has conflicts)."""
        spec = Database(
            self.store, _SpeculativeNodes(self.database.nodes), self.database.flexibility
        )
        spec._commits = dict(self.database._commits)
        spec._schemas = dict(self.database._schemas)
        db, _ = await merge_heads(spec, heads, strict=strict)
        return db

    def watch(self, callback: Callable[[], None]) -> Any:
        """Call ``callback()`` (no arguments, must not block) whenever a branch of this
        database changes through any connection of this process: transactions, merges,
        heads received by sync. Returns a key for :meth:`unwatch`."""
        key = object()
        _WATCHERS.setdefault(self.url, {})[key] = callback
        return key

    def unwatch(self, key: Any) -> None:
        watchers = _WATCHERS.get(self.url)
        if watchers is not None:
            watchers.pop(key, None)
            if not watchers:
                del _WATCHERS[self.url]

    async def branch_heads(self) -> dict[str, list[bytes]]:
        """Every branch and its head set."""
        out = {}
        for name, raw in (await self.store.list_refs()).items():
            if name.startswith(BRANCH_PREFIX) and raw is not None:
                branch = name[len(BRANCH_PREFIX) :]
                out[branch] = decode_heads(raw, branch)
        return out

    async def add_heads(self, branch: str, heads: Iterable[bytes]) -> list[bytes]:
        """Join commits (present in the store with everything under them) into the head
        set of ``branch``, creating the branch if needed, and merge the heads. Sync uses
        this to publish what it received. Returns the branch's heads afterwards."""
        self._check_open()
        ref = _branch_ref(branch)
        heads = list(heads)
        for h in heads:
            await self.database.commit(h)  # NoSuchCommit if absent
        state = self._branch if branch == self.branch_name else _branch_state(self.url, branch)
        async with state.lock:
            while True:
                raw = await self.store.get_ref(ref)
                old = decode_heads(raw, branch) if raw is not None else []
                joined = await join_heads(self.database, [*old, *heads])
                if joined == sorted(old):
                    break
                new_raw = encode_heads(joined)
                state.raw = None
                if await self.store.cas_ref(ref, raw, new_raw):
                    if len(joined) > 1:
                        db = await self._settle(new_raw, branch)
                        joined = [db.commit_id]
                    break
            if branch == self.branch_name and joined != [self._db.commit_id]:
                self._db = await self._db_of_heads(joined)
        _notify(self.url)
        return joined

    def _publish(self, report: TxReport) -> None:
        _notify(self.url)
        # the transaction is durable already: a failing listener must not hide that or keep
        # the report from the others, so its error is logged, not raised
        for callback in list(self._listeners.values()):
            try:
                callback(report)
            except Exception:
                _log.exception("transaction listener %r failed", callback)
        for stream in list(self._streams):
            try:
                stream.send_nowait(report)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._streams.remove(stream)

    def listen(self, callback: Callable[[TxReport], Any], key: Any = None) -> Any:
        """Call ``callback(report)`` after every transaction of this connection; returns the
        key for :meth:`unlisten`."""
        key = key if key is not None else object()
        self._listeners[key] = callback
        return key

    def unlisten(self, key: Any) -> None:
        self._listeners.pop(key, None)

    async def reports(self) -> AsyncIterator[TxReport]:
        """``async for report in conn.reports()``: every later transaction's report."""
        send, receive = anyio.create_memory_object_stream[TxReport](math.inf)
        self._streams.append(send)
        try:
            async with receive:
                async for report in receive:
                    yield report
        finally:
            if send in self._streams:
                self._streams.remove(send)
            send.close()

    # -- branches ----------------------------------------------------------------------------

    async def branches(self) -> list[str]:
        refs = await self.store.list_refs()
        return sorted(n[len(BRANCH_PREFIX) :] for n in refs if n.startswith(BRANCH_PREFIX))

    async def _resolve_commit(self, from_: Any) -> bytes:
        if from_ is None:
            return self._db.commit_id
        if isinstance(from_, DB):
            return from_.commit_id
        if isinstance(from_, bytes):
            await self.database.commit(from_)  # raises NoSuchCommit
            return from_
        if isinstance(from_, str):
            heads = await self._heads(from_)
            if len(heads) != 1:
                return (await self._db_of_heads(heads)).commit_id
            return heads[0]
        raise BranchError(f"cannot make a branch from {from_!r}")

    async def branch(self, name: str, from_: Any = None) -> None:
        """Create branch ``name`` at ``from_`` (a commit id, a branch name, a DB; default:
        this connection's current commit). Raises BranchExists."""
        commit = await self._resolve_commit(from_)
        self._forget_head(name)
        if not await self.store.cas_ref(_branch_ref(name), None, encode_heads([commit])):
            raise BranchExists(name)
        _notify(self.url)

    async def delete_branch(self, name: str) -> None:
        if name == self.branch_name:
            raise BranchError(f"cannot delete the branch this connection is on ({name!r})")
        ref = _branch_ref(name)
        raw = await self.store.get_ref(ref)
        if raw is None:
            raise NoSuchBranch(name)
        self._forget_head(name)
        if not await self.store.cas_ref(ref, raw, None):
            raise BranchError(f"branch {name!r} changed while deleting it; try again")

    async def reset_branch(self, name: str, commit: Any) -> None:
        """Force branch ``name`` to ``commit`` (a commit id, branch name or DB)."""
        target = await self._resolve_commit(commit)
        ref = _branch_ref(name)
        self._forget_head(name)
        while True:
            raw = await self.store.get_ref(ref)
            if raw is None:
                raise NoSuchBranch(name)
            if await self.store.cas_ref(ref, raw, encode_heads([target])):
                break
        if name == self.branch_name:
            self._db = await self.database.db_at(target)
        _notify(self.url)

    def _forget_head(self, name: str) -> None:
        """The head remembered for branch ``name`` is about to be stale."""
        if name == self.branch_name:
            self._branch.raw = None
        state = _BRANCH_STATES.get((self.url, name))
        if state is not None:
            state.raw = None

    async def parent_commit_ids(self, commit: bytes | None = None) -> tuple[bytes, ...]:
        c = await self.database.commit(commit if commit is not None else self.commit_id)
        return c.parents

    async def commit_as_db(self, commit: bytes) -> DB:
        return await self.database.db_at(commit)

    async def branch_as_db(self, name: str) -> DB:
        heads = await self._heads(name)
        return await self._db_of_heads(heads)

    async def branch_history(self, name: str | None = None) -> list[bytes]:
        """Every commit of the branch, newest first (by stamp), the genesis commit last."""
        heads = await self._heads(name or self.branch_name)
        seen: set[bytes] = set()
        order: list[tuple[Stamp, bytes]] = []
        frontier = list(heads)
        while frontier:
            nxt: list[bytes] = []
            for address in frontier:
                if address in seen:
                    continue
                seen.add(address)
                c = await self.database.commit(address)
                order.append((c.stamp, address))
                nxt.extend(c.parents)
            frontier = nxt
        order.sort(reverse=True)
        return [a for _, a in order]

    # -- lifecycle ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"connection to {self.url} is closed")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for stream in self._streams:
            stream.close()
        self._streams.clear()
        if self._owns_store:
            await self.store.aclose()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def write_commit(
    database: Database,
    db_before: DB,
    result: TxResult,
    stamp: Stamp,
    replica_id: int,
    *,
    flush: bool = True,
) -> DB:
    """Write the indexes and the commit of one transaction (one batch of nodes); return the
    DB of the new commit. The branch ref is not moved here. With ``flush=False`` the new
    nodes stay in the write buffer of ``database.nodes``: the caller makes them durable
    (before or together with the ref that names the commit)."""
    nodes = database.nodes
    roots = dict(db_before.commit.roots)
    tags = await retraction_tags(Tree(nodes, roots["eavt"]), result.datoms, result.value_keys)
    edits = index_edit_lists(result.datoms, db_before.schema, stamp, result.value_keys, tags)
    work = {name: (roots[name], keys, vals) for name, (keys, vals) in edits.items() if keys}
    # keys built sorted and distinct by index_edit_lists: no need to check them again
    roots.update(await edit_trees(nodes, work, checked=True))
    schema_addr = db_before.commit.schema
    if result.schema_changed:
        data = encode(schema_body(result.schema))
        schema_addr = address_of(data)
        nodes.add_raw(schema_addr, data)
        database.remember_schema(schema_addr, result.schema)
    parents = [db_before.commit_id]
    gen = db_before.commit.gen + 1
    body = commit_body(parents, roots, schema_addr, stamp, replica_id, gen)
    address, data = encode_commit(body)
    nodes.add_raw(address, data)
    if flush:
        await nodes.flush()
    commit = Commit(address, tuple(parents), body["roots"], schema_addr, stamp, replica_id, gen)
    database.remember_commit(commit)
    return DB(database, commit, result.schema if result.schema_changed else db_before.schema)


async def retraction_tags(
    eavt: Tree, datoms: list[Datom], value_keys: list[bytes] | None
) -> dict[int, bytes]:
    """For each retraction among ``datoms`` (by position), the stamps of the assertions it
    removes: the current eavt value of its datom."""
    tags: dict[int, bytes] = {}
    for i, d in enumerate(datoms):
        if not d.added:
            vk = value_keys[i] if value_keys is not None else encode_value(d.v)
            tag = await eavt.get(eid_bytes(d.e) + attr_bytes(d.a) + vk)
            if tag:
                tags[i] = tag
    return tags


class _Connecting:
    """``await connect(...)`` or ``async with connect(...) as conn``."""

    def __init__(self, url: str, branch: str, create: bool, schema: Any, options: dict[str, Any]):
        self._args = (url, branch, create, schema, options)
        self._conn: Connection | None = None

    async def _open(self) -> Connection:
        url, branch, create, schema, options = self._args
        cache_bytes = options.pop("cache_bytes", 64 << 20)
        flexibility = options.pop("schema_flexibility", "write")
        tree_config = options.pop("tree_config", None)
        on_race = options.pop("on_race", "retry")
        if on_race not in ("retry", "merge"):
            raise TxDataError("on_race must be 'retry' or 'merge'", on_race)
        if options:
            raise TxDataError(f"unknown connect option(s) {sorted(options)}", None)
        store = await open_store(url)
        try:
            if create and await store.get_ref(CONFIG_REF) is None:
                await _create_in(store, url, flexibility, tree_config)
            conn = await _connect_store(store, url, branch, True, cache_bytes)
            conn.on_race = on_race
        except BaseException:
            await store.aclose()
            raise
        if schema:
            await conn.transact(schema)
        return conn

    def __await__(self) -> Generator[Any, None, Connection]:
        return self._open().__await__()

    async def __aenter__(self) -> Connection:
        self._conn = await self._open()
        return self._conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._conn is not None:
            await self._conn.aclose()


def connect(
    url: str, branch: str = "main", create: bool = False, schema: Any = None, **options: Any
) -> _Connecting:
    """Connect to branch ``branch`` of the database at ``url``: ``conn = await connect(...)``
    or ``async with connect(...) as conn``. ``create=True`` creates the database if absent;
    ``schema`` (tx data) is transacted on connecting. Options: ``cache_bytes``,
    ``schema_flexibility`` (for a database being created), ``on_race``.

    ``on_race`` says what a transaction does when another writer (another process on the
    same store) moved the branch between its read and its commit: ``"retry"`` (default)
    computes it again on the new head, so one store's history stays linear and every
    transaction sees the one before it, as in Datomic; ``"merge"`` keeps the commit as it
    is, adds it as a second head and merges the heads (docs/conflicts.md), so a transaction
    is never computed twice and concurrent writers never wait on each other. Transactions
    with ``db/cas`` or ``db.fn/call`` always retry: their effect depends on what they read."""
    return _Connecting(url, branch, create, schema, options)


async def diff(db_a: DB, db_b: DB) -> Diff:
    """Datoms in ``db_b`` and not ``db_a`` (added) and the reverse (retracted), from a tree
    diff of the eavt indexes: O(d log n) for d differences."""
    from store.tree import diff as tree_diff

    added: list[Datom] = []
    retracted: list[Datom] = []
    ta = Tree(db_a.database.nodes, db_a.commit.roots["eavt"])
    tb = Tree(db_b.database.nodes, db_b.commit.roots["eavt"])
    async for batch in tree_diff(ta, tb):
        for key, old, new in batch:
            if old is not None:
                retracted.append(decode_eavt(key, old, False))
            if new is not None:
                added.append(decode_eavt(key, new, True))
    return Diff(tuple(added), tuple(retracted))


async def with_tx(db: DB, tx_data: Any, tx_meta: Mapping[str, Any] | None = None) -> TxReport:
    """Apply ``tx_data`` to ``db`` speculatively: the returned report's ``db_after`` is a
    full DB value, but nothing is written to the store."""
    tx_data = _parse_tx(tx_data)
    spec_nodes = _SpeculativeNodes(db.database.nodes)
    database = Database(db.database.store, spec_nodes, db.database.flexibility)
    database._commits = db.database._commits
    database._schemas = db.database._schemas
    base = DB(database, db.commit, db.schema)
    replica_id = new_replica_id()
    counter = iter(range(1, 1 << 62))

    def allocate() -> int:
        return replica_id << 64 | next(counter)

    tx = allocate()
    stamp = db.stamp.next(tx, int(time.time() * 1000))
    instant = _dt.datetime.fromtimestamp(stamp.wall_ms / 1000, _dt.UTC)
    result = await compute_tx(
        base, tx_data, tx=tx, instant=instant, allocate=allocate, tx_meta=tx_meta
    )
    db_after = await write_commit(database, base, result, stamp, replica_id)
    return TxReport(db, db_after, tuple(result.datoms), result.tempids, tx_meta, tx)


class _SpeculativeNodes(Nodes):
    """Nodes whose writes never reach the store: they stay buffered (and readable)."""

    def __init__(self, base: Nodes) -> None:
        super().__init__(base.store, base.config, cache_bytes=base.cache_bytes)
        self._base = base

    def peek(self, address: bytes) -> Any:
        return super().peek(address) or self._base.peek(address)

    async def load(self, address: bytes) -> Any:
        node = self.peek(address)
        if node is not None:
            return node
        return await super().load(address)

    async def flush(self, *, defer: bool = False) -> None:
        return None

    async def maybe_flush(self) -> None:
        return None


async def load_entities(conn: Connection, entities: Iterable[Any], batch_size: int = 10_000) -> int:
    """Transact a large iterable of entity maps/operations in batches of ``batch_size`` (memory
    stays bounded by one batch). Returns the number of items transacted."""
    if batch_size < 1:
        raise TxDataError("batch_size must be positive", batch_size)
    count = 0
    batch: list[Any] = []
    for item in entities:
        batch.append(item)
        if len(batch) >= batch_size:
            await conn.transact(batch)
            count += len(batch)
            batch = []
    if batch:
        await conn.transact(batch)
        count += len(batch)
    return count


__all__ = [
    "Connection",
    "Diff",
    "MergeConflict",
    "MergeReport",
    "TxReport",
    "connect",
    "create_database",
    "database_exists",
    "delete_database",
    "diff",
    "load_entities",
    "with_tx",
    "write_commit",
]
