"""Sync over real websockets on 127.0.0.1 (port 0), in one process, on mem:// and file:// stores.

Each test serves one database with ``replica.serve`` and syncs others with
``replica.sync_once`` / ``replica.connect_peer``, then checks what issue 6 asks for: identical
commit ids (the root hash of a database value) and query results on both sides, the bytes and
round trips each sync cost, live push, reconnecting, branch subsets, authentication and
permissions, TLS, and hostile clients speaking raw websockets (each closed with its close code
while the server goes on serving and its store stays as it was).

Every wait is bounded by ``anyio.fail_after``; the module's pytest-timeout bounds the rest.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect

import replica
from replica.datom import TREES
from replica.maintenance import verify
from scenarios._proxy import FaultProxy
from store.codec import address_of, decode, encode
from store.errors import TreeError
from store.tree import Tree, new_nodes
from sync import peer as sync_peer
from sync.missing import RebuildNodes, rebuild
from sync.peer import READ_ONLY, Permissions
from sync.protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_PROTOCOL,
    CLOSE_VERSION,
    PROTOCOL_VERSION,
    Limits,
    PeerClosed,
    SyncError,
)
from tests.sync._peer_proc import SCHEMA, SHARED, snapshot, tx_of
from tests.sync.conftest import OpenDb, Tls

pytestmark = pytest.mark.timeout(60)

WAIT = 20.0  # seconds: bound of every wait for a sync
HOST = "127.0.0.1"
NAMES = "[:find ?n :where [?e :p/name ?n]]"


# -- helpers ----------------------------------------------------------------------------------


def uri_of(server: Any, scheme: str = "ws") -> str:
    return f"{scheme}://{HOST}:{server.port}"


async def fill(conn: replica.Connection, commits: int, per: int, prefix: str = "n") -> None:
    """``commits`` transactions of ``per`` new entities each."""
    for c in range(commits):
        await conn.transact(
            [
                {"p/name": f"{prefix}{c}-{i}", "p/age": c * per + i, "p/bio": f"{prefix} {c} {i}"}
                for i in range(per)
            ]
        )


async def names(conn: replica.Connection) -> set[str]:
    db = await conn.refresh()
    return {n for (n,) in await replica.q(NAMES, db)}


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, seconds: float = WAIT
) -> None:
    """Poll ``check`` until it holds (fails the test after ``seconds``)."""
    try:
        with anyio.fail_after(seconds):
            while True:
                if await check():
                    return
                await anyio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not within {seconds} s: {what}")


async def converged(a: replica.Connection, b: replica.Connection) -> bool:
    da, db = await a.refresh(), await b.refresh()
    return da.commit_id == db.commit_id


async def assert_same(a: replica.Connection, b: replica.Connection) -> dict[str, Any]:
    """Both sides on one commit (root hash), with the same heads and the same query results."""
    da, db = await a.refresh(), await b.refresh()
    assert da.commit_id == db.commit_id
    assert (await a.branch_heads())["main"] == (await b.branch_heads())["main"] == [da.commit_id]
    sa, sb = await snapshot(da), await snapshot(db)
    assert sa == sb
    return sa


async def state_of(conn: replica.Connection) -> tuple[dict[str, bytes], set[bytes]]:
    """Everything a store holds: its refs and its node addresses."""
    return await conn.store.list_refs(), await conn.store.list_addresses()


async def sync(conn: replica.Connection, uri: str, *, seconds: float = WAIT, **kw: Any) -> Any:
    """``replica.sync_once``, bounded."""
    with anyio.fail_after(seconds):
        return await replica.sync_once(conn, uri, **kw)


async def wait_error(peer: Any, seconds: float = 10.0) -> BaseException:
    """The error a ``connect_peer(..., reconnect=False)`` link ended with."""
    with anyio.fail_after(seconds):
        while True:
            error: BaseException | None = peer.error
            if error is not None:
                return error
            await anyio.sleep(0.02)


def close_code(error: BaseException) -> int | None:
    """The close code of a link that ended with ``error`` (a bye or a websocket close)."""
    while error is not None:
        if isinstance(error, PeerClosed):
            return error.code
        if isinstance(error, websockets.ConnectionClosed):
            return error.rcvd.code if error.rcvd is not None else None
        error = error.__cause__  # type: ignore[assignment]
    return None


async def commit_new_nodes(conn: replica.Connection, commit: bytes) -> dict[bytes, int]:
    """The nodes a peer holding ``commit``'s first parent lacks to hold ``commit``: each
    index tree's new nodes (a tree diff), the commit itself and its schema if it changed;
    address -> size in bytes."""
    database = conn.database
    c = await database.commit(commit)
    p = await database.commit(c.parents[0])
    fresh: set[bytes] = {commit}
    if c.schema != p.schema:
        fresh.add(c.schema)
    for name in TREES:
        fresh |= await new_nodes(
            Tree(database.nodes, p.roots[name]), Tree(database.nodes, c.roots[name])
        )
    data = await conn.store.get_many(sorted(fresh))
    return {a: len(d) for a, d in data.items()}


# -- clone, fast-forward, divergence, no-op ---------------------------------------------------


async def test_clone_from_empty(open_db: OpenDb) -> None:
    a = await open_db("a", SCHEMA)
    await fill(a, 6, 40)
    b = await open_db("b")  # created empty: only the genesis commit, shared by every database
    assert await names(b) == set()
    async with replica.serve(a, HOST, 0) as server:
        stats = await sync(b, uri_of(server))
    snap = await assert_same(a, b)
    assert len(snap["rows"]) == 240
    assert await b.branch_history() == await a.branch_history()
    assert stats.nodes_received > 0 and stats.nodes_sent == 0
    assert stats.sessions == 1
    report = await verify(b)  # every node of every commit present and matching its hash
    assert report.commits == len(await a.branch_history())
    # the server saw the same session from its side
    assert server.statistics().nodes_sent == stats.nodes_received


async def _fast_forward(
    open_db: OpenDb,
) -> tuple[replica.Connection, replica.Connection, dict[bytes, int], Any]:
    """A clone, then one small commit on the server synced to it: (server side, client side,
    the commit's new nodes, the second sync's statistics)."""
    a = await open_db("a", SCHEMA)
    await fill(a, 8, 50)
    b = await open_db("b")
    async with replica.serve(a, HOST, 0) as server:
        await sync(b, uri_of(server))
        report = await a.transact([{"p/name": "n3-7", "p/age": 1}, {"p/name": "new", "p/age": 2}])
        fresh = await commit_new_nodes(a, report.db_after.commit_id)
        stats = await sync(b, uri_of(server))
    await assert_same(a, b)
    assert "new" in await names(b)
    return a, b, fresh, stats


async def test_fast_forward_sends_a_small_commit_as_its_edits(open_db: OpenDb) -> None:
    """protocol.md 4.5: the receiver holds the parent, so the commit travels as its trees'
    edits (a delta), and the receiver rebuilds exactly the sender's nodes."""
    _, b, fresh, stats = await _fast_forward(open_db)
    assert await b.store.missing(sorted(fresh)) == set()  # every node of the commit, rebuilt
    await verify(b)  # and each matches its address
    assert stats.nodes_received == 1  # one delta
    assert stats.bytes_received < sum(fresh.values()) / 5, (sum(fresh.values()), stats)
    assert stats.nodes_sent == 0


async def test_fast_forward_sends_only_the_new_nodes(
    open_db: OpenDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With deltas off (a commit too big for one), exactly the commit's new nodes."""
    monkeypatch.setattr(sync_peer, "DELTA_EDITS", 0)
    a, _, fresh, stats = await _fast_forward(open_db)
    need = sum(fresh.values())
    whole = sum(len(d) for d in (await a.store.get_many(await a.store.list_addresses())).values())
    assert need < whole / 10  # the commit is small next to the database
    # what went over the wire is those nodes plus a little framing, hello, heads and update
    assert need <= stats.bytes_received <= need + 2048, (need, stats)
    assert len(fresh) <= stats.nodes_received <= len(fresh) + 1, (len(fresh), stats)
    assert stats.nodes_sent == 0
    assert stats.bytes_sent < 2048


async def test_divergent_writes_converge_to_one_root_hash(open_db: OpenDb) -> None:
    a = await open_db("a", SCHEMA)
    await a.transact([{"p/name": f"n{i}", "p/age": i} for i in range(10)])
    b = await open_db("b")
    async with replica.serve(a, HOST, 0) as server:
        await sync(b, uri_of(server))
        base = a.commit_id
        assert b.commit_id == base
        # offline on both sides: distinct entities, and the same card-one attribute of n1
        for i in range(3):
            await a.transact([{"p/name": f"a{i}", "p/age": 100 + i}])
            await b.transact([{"p/name": f"b{i}", "p/age": 200 + i}])
        await a.transact([{"p/name": "n1", "p/age": 1111}])
        await b.transact([{"p/name": "n1", "p/age": 2222}])
        await b.transact([{"p/name": "n2", "p/bio": "only b touched n2"}])
        assert a.commit_id != b.commit_id
        stats = await sync(b, uri_of(server))
    snap = await assert_same(a, b)
    rows = dict(map(tuple, snap["rows"]))
    assert {f"a{i}" for i in range(3)} | {f"b{i}" for i in range(3)} <= set(rows)
    assert stats.nodes_sent > 0 and stats.nodes_received > 0
    # one conflict on n1's p/age, resolved the same way on both sides, visible in conflicts()
    ca, cb = await replica.conflicts(a.db), await replica.conflicts(b.db)
    assert ca == cb
    n1 = await replica.q('[:find ?e . :where [?e :p/name "n1"]]', a.db)
    ages = [c for c in ca if c.attribute == "p/age" and c.entity == n1]
    assert len(ages) == 1, ca
    assert {ages[0].ours, ages[0].theirs} == {1111, 2222}
    assert ages[0].base == 1
    assert rows["n1"] == ages[0].winner
    # the merge commit has both sides' last commits as parents
    assert len(await a.parent_commit_ids()) == 2
    # nothing of the common history was sent back: both sent a few commits' nodes only
    assert stats.nodes_received < 200 and stats.nodes_sent < 200


async def test_divergent_sync_asks_instead_of_resending_a_large_base(open_db: OpenDb) -> None:
    """protocol.md 4.4: 20 commits apart on each side, the samples (1, 4, 16, then past
    the base) leave only genesis as a known common commit; the asks find the base, so each
    side receives the other's new commits, not the base again. (Plus, at most, the other's
    merge commit: both sides merge at once, and each pushes its merge before it learns that
    the other made the same one.)"""
    a = await open_db("a", SCHEMA)
    await a.transact([{"p/name": f"n{i}", "p/age": i} for i in range(6000)])
    b = await open_db("b")
    async with replica.serve(a, HOST, 0) as server:
        await sync(b, uri_of(server))
        fork = a.commit_id
        new_a: dict[bytes, int] = {}
        new_b: dict[bytes, int] = {}
        for i in range(20):
            ra = await a.transact([{"p/name": f"a{i}", "p/age": i}])
            rb = await b.transact([{"p/name": f"b{i}", "p/age": i}])
            new_a |= await commit_new_nodes(a, ra.db_after.commit_id)
            new_b |= await commit_new_nodes(b, rb.db_after.commit_id)
        base = await commit_new_nodes(a, fork)  # what resending the base would cost
        stats = await sync(b, uri_of(server))
    snap = await assert_same(a, b)
    assert {f"a{i}" for i in range(20)} | {f"b{i}" for i in range(20)} <= set(dict(snap["rows"]))
    assert len(base) > 500
    assert stats.nodes_received < len(new_a) + len(base) // 2, (stats, len(new_a), len(base))
    assert stats.nodes_sent < len(new_b) + len(base) // 2, (stats, len(new_b), len(base))
    assert stats.round_trips <= 1 + 3 + 1  # heads, at most 3 asks, the heads after merging


async def test_a_rebuild_stops_at_its_byte_budget(open_db: OpenDb) -> None:
    """A delta's rebuild keeps what it writes in memory, so it has a budget (REBUILD_BYTES):
    past it, TreeError (which the session turns into a 4002 close)."""
    a = await open_db("a", SCHEMA)
    await fill(a, 2, 50)
    head = await a.database.commit(a.commit_id)
    edits: list[list[tuple[bytes, bytes | None]]] = [[] for _ in TREES]
    edits[0].append((b"\x00 a key", b"x" * 64))
    nodes = RebuildNodes(a.database.nodes, a.database.nodes.config, budget=1)
    with pytest.raises(TreeError, match="more than 1 bytes"):
        await rebuild(nodes, head, edits)
    roomy = RebuildNodes(a.database.nodes, a.database.nodes.config)
    roots = await rebuild(roomy, head, edits)
    assert roots["eavt"] != head.roots["eavt"] and roomy.written
    assert await a.store.missing(sorted(roomy.written)) == set(roomy.written)  # nothing stored


async def test_noop_sync_is_one_round_trip_under_1_kib(open_db: OpenDb) -> None:
    a = await open_db("a", SCHEMA)
    for i in range(30):
        await a.transact([{"p/name": f"n{i}", "p/age": i}])
    b = await open_db("b")
    async with replica.serve(a, HOST, 0) as server:
        await sync(b, uri_of(server))
    await assert_same(a, b)
    # a new server, so that its statistics are the no-op session's only
    async with replica.serve(a, HOST, 0) as server:
        stats = await sync(b, uri_of(server))
        with anyio.fail_after(5):  # the server has read all the client sent
            while True:
                theirs = server.statistics()
                if theirs.messages_received >= stats.messages_sent:
                    break
                await anyio.sleep(0.01)
    assert stats.nodes_sent == stats.nodes_received == 0
    assert stats.round_trips == 1, stats
    assert stats.bytes_sent + stats.bytes_received < 1024, stats
    assert theirs.bytes_sent + theirs.bytes_received < 1024, theirs
    await assert_same(a, b)


async def test_a_reader_that_stops_reading_holds_the_sender_to_bounded_buffers(
    open_db: OpenDb,
) -> None:
    """Flow control (issue 6, live mode): a client that asks for a whole clone and then reads
    nothing. The server sends what the socket takes and waits: what it has handed to the
    websocket stays a batch or two plus the socket buffers, far below the database; then the
    client reads, and the same session finishes the stream."""
    a = await open_db("a", SCHEMA)
    for c in range(6):
        await a.transact(
            [{"p/name": f"n{c}-{i}", "p/age": i, "p/bio": f"{c}-{i} " * 40} for i in range(5000)]
        )
    total = sum(len(d) for d in (await a.store.get_many(await a.store.list_addresses())).values())
    assert a.genesis is not None
    async with replica.serve(a, HOST, 0) as server:
        async with ws_connect(uri_of(server), compression=None, max_size=None, max_queue=1) as ws:
            await ws.send(_hello())
            await ws.send(encode(["heads", {"main": [a.genesis]}, [], []]))
            # wait until the server stops sending (its sends block), whatever the speed
            last, still = -1, 0
            with anyio.fail_after(WAIT):
                while still < 5:
                    await anyio.sleep(0.2)
                    sent = server.statistics().bytes_sent
                    still = still + 1 if sent == last else 0
                    last = sent
            queued = last
            with anyio.fail_after(WAIT):  # now read: the stream goes on to its update
                while True:
                    message = decode(await ws.recv())
                    if message[0] == "update":
                        break
            done = server.statistics().bytes_sent
    assert total > 60_000_000, total
    assert queued < total / 3, (queued, total)
    assert done > total, (done, total)


# -- live push, reconnect, topologies ---------------------------------------------------------


async def test_live_push_both_ways_without_reconnecting(open_db: OpenDb) -> None:
    a = await open_db("a", SCHEMA)
    await fill(a, 2, 20)
    b = await open_db("b")
    async with replica.serve(a, HOST, 0) as server, replica.connect_peer(b, uri_of(server)) as peer:
        with anyio.fail_after(WAIT):
            await peer.wait_synced()
        await wait_until(lambda: converged(a, b), "the clone")
        for i in range(3):
            await a.transact([{"p/name": f"from-a-{i}", "p/age": i}])
            await wait_until(lambda i=i: _has(b, f"from-a-{i}"), f"from-a-{i} on b")
            await b.transact([{"p/name": f"from-b-{i}", "p/age": i}])
            await wait_until(lambda i=i: _has(a, f"from-b-{i}"), f"from-b-{i} on a")
        await wait_until(lambda: converged(a, b), "a and b on one commit")
        await assert_same(a, b)
        assert peer.statistics().sessions == 1  # all of it over the first connection
        assert server.statistics().sessions == 1
        assert peer.error is None


async def test_concurrent_writers_on_both_sides_converge(open_db: OpenDb) -> None:
    """Both sides transact at the same time while connected (live push both ways, updates
    crossing on the wire): they converge on one commit, their stores stay valid, and the
    merges stay in proportion to the writes (no merge ping-pong)."""
    a = await open_db("a", SCHEMA)
    await a.transact([{"p/name": s, "p/age": 0} for s in SHARED])
    b = await open_db("b")
    writes = 15
    async with replica.serve(a, HOST, 0) as server, replica.connect_peer(b, uri_of(server)) as peer:
        with anyio.fail_after(WAIT):
            await peer.wait_synced()
        await wait_until(lambda: converged(a, b), "the clone")
        before = len(await a.branch_history())

        async def write(conn: replica.Connection, name: str) -> None:
            for i in range(writes):
                await conn.transact(tx_of(name, i))
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write, a, "a")
            tg.start_soon(write, b, "b")

        async def settled() -> bool:
            if peer.error is not None:
                pytest.fail(f"the link failed: {peer.error!r}")
            return await converged(a, b)

        await wait_until(settled, "a and b on one commit after concurrent writes")
        created = len(await a.branch_history()) - before
        # 2 x writes transactions, and at most one merge per update received
        assert created <= 4 * writes, f"{created} commits for {2 * writes} transactions"
    snap = await assert_same(a, b)
    assert {f"{n}-{i}" for n in "ab" for i in range(writes)} <= {n for n, _ in snap["rows"]}
    await verify(a)
    await verify(b)


async def _has(conn: replica.Connection, name: str) -> bool:
    return name in await names(conn)


async def test_reconnect_after_the_server_restarts(open_db: OpenDb) -> None:
    a = await open_db("a", SCHEMA)
    await fill(a, 2, 10)
    b = await open_db("b")
    first = replica.serve(a, HOST, 0)
    server = await first.__aenter__()
    running = True
    try:
        port = server.port
        async with replica.connect_peer(b, uri_of(server)) as peer:
            with anyio.fail_after(WAIT):
                await peer.wait_synced()
            await wait_until(lambda: converged(a, b), "the clone")
            # stop the server (leave its serve context); both sides write while it is down
            running = False
            with anyio.fail_after(10):
                await first.__aexit__(None, None, None)
            await a.transact([{"p/name": "written-while-down-a", "p/age": 1}])
            await b.transact([{"p/name": "written-while-down-b", "p/age": 2}])
            await anyio.sleep(0.3)  # the client tries again meanwhile, and is refused
            assert not await _has(b, "written-while-down-a")
            async with replica.serve(a, HOST, port) as again:  # the SAME port
                assert again.port == port
                await wait_until(lambda: _has(b, "written-while-down-a"), "a's write on b")
                await wait_until(lambda: _has(a, "written-while-down-b"), "b's write on a")
                await wait_until(lambda: converged(a, b), "a and b on one commit")
                assert peer.statistics().sessions == 2
                assert again.statistics().sessions == 1
                with anyio.fail_after(WAIT):
                    await peer.wait_synced()
    finally:
        if running:
            await first.__aexit__(None, None, None)
    await assert_same(a, b)


async def test_relay_hub_forwards_between_edges(open_db: OpenDb) -> None:
    hub = await open_db("hub", SCHEMA)
    e1, e2 = await open_db("e1"), await open_db("e2")
    async with (
        replica.serve(hub, HOST, 0) as server,
        replica.connect_peer(e1, uri_of(server)) as p1,
        replica.connect_peer(e2, uri_of(server)) as p2,
    ):
        with anyio.fail_after(WAIT):
            await p1.wait_synced()
            await p2.wait_synced()
        await e1.transact([{"p/name": "from-e1", "p/age": 1}])
        await e2.transact([{"p/name": "from-e2", "p/age": 2}])
        await wait_until(lambda: _has(e2, "from-e1"), "e1's write on e2 (through the hub)")
        await wait_until(lambda: _has(e1, "from-e2"), "e2's write on e1 (through the hub)")
        await wait_until(lambda: _all_converged(hub, e1, e2), "hub and both edges on one commit")
        await assert_same(e1, e2)
        await assert_same(hub, e1)


async def _all_converged(*conns: replica.Connection) -> bool:
    ids = {(await c.refresh()).commit_id for c in conns}
    return len(ids) == 1


async def test_branch_subset_never_receives_other_branches(open_db: OpenDb) -> None:
    a = await open_db("a", SCHEMA)
    await fill(a, 2, 10)
    await a.branch("other")
    async with replica.connect(a.url, branch="other") as other:
        await other.transact([{"p/name": "on-other", "p/age": 1}])
        other_head = other.commit_id
        b = await open_db("b")
        async with (
            replica.serve(a, HOST, 0) as server,
            replica.connect_peer(b, uri_of(server), branches=["main"]) as peer,
        ):
            with anyio.fail_after(WAIT):
                await peer.wait_synced()
            await wait_until(lambda: converged(a, b), "main on b")
            # more on both branches while connected: main arrives, other never does
            await other.transact([{"p/name": "on-other-2", "p/age": 2}])
            await a.transact([{"p/name": "on-main", "p/age": 3}])
            await wait_until(lambda: _has(b, "on-main"), "the new main commit on b")
            await anyio.sleep(0.3)
            assert set(await b.branch_heads()) == {"main"}
            assert await b.store.missing([other_head, other.commit_id]) == {
                other_head,
                other.commit_id,
            }
            # and b's own writes still go to the server's main
            await b.transact([{"p/name": "from-b", "p/age": 4}])
            await wait_until(lambda: _has(a, "from-b"), "b's write on a")
        assert set(await a.branch_heads()) == {"main", "other"}
        assert "on-main" not in {n for (n,) in await replica.q(NAMES, await other.refresh())}


# -- authentication and permissions -----------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["no-token", "wrong-token"])
async def test_auth_refused_before_the_upgrade(open_db: OpenDb, token: str | None) -> None:
    a = await open_db("a", SCHEMA)
    await fill(a, 1, 5)
    b = await open_db("b")
    await b.transact(SCHEMA)  # b has something to push too
    before_a, before_b = await state_of(a), await state_of(b)
    async with replica.serve(a, HOST, 0, token="the-right-token") as server:
        async with replica.connect_peer(b, uri_of(server), token=token, reconnect=False) as peer:
            error = await wait_error(peer)
        assert isinstance(error, SyncError)
        assert "401" in str(error)
        assert "the-right-token" not in str(error)
        assert server.statistics().sessions == 0  # no websocket session ever started
        assert server.statistics().bytes_received == 0
        # and a raw websocket client is refused with HTTP 401, before any upgrade
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with ws_connect(uri_of(server), additional_headers=headers, open_timeout=5):
                pass
        assert refused.value.response.status_code == 401
        assert server.statistics().sessions == 0
    assert await state_of(a) == before_a
    assert await state_of(b) == before_b


async def test_sync_once_refused_raises_sync_error(open_db: OpenDb) -> None:
    """``sync_once`` is a plain coroutine: a refused connection raises :class:`SyncError`
    (what ``replica sync`` and any caller catches), not an ExceptionGroup of its task group."""
    a = await open_db("a", SCHEMA)
    b = await open_db("b")
    async with replica.serve(a, HOST, 0, token="the-right-token") as server:
        with pytest.raises(SyncError, match="401"):
            await sync(b, uri_of(server), token="wrong-token")


async def test_wait_synced_raises_once_the_link_gave_up(open_db: OpenDb) -> None:
    """With the default ``reconnect=True``, a 401 still ends the link for good (the client
    does not retry a refused token): ``wait_synced`` must then raise, not wait forever."""
    a = await open_db("a", SCHEMA)
    b = await open_db("b")
    async with (
        replica.serve(a, HOST, 0, token="the-right-token") as server,
        replica.connect_peer(b, uri_of(server), token="wrong-token") as peer,
    ):
        await wait_error(peer)
        with pytest.raises(SyncError, match="401"):
            with anyio.fail_after(5):
                await peer.wait_synced()


async def test_read_only_peer_pushing_is_closed_forbidden(open_db: OpenDb) -> None:
    a = await open_db("a", SCHEMA)
    await fill(a, 2, 10)
    b = await open_db("b")
    tokens = {"full": Permissions(), "reader": READ_ONLY}
    async with replica.serve(a, HOST, 0, tokens=tokens) as server:
        await sync(b, uri_of(server), token="reader")  # reading is allowed
        await assert_same(a, b)
        await b.transact([{"p/name": "pushed-by-a-reader", "p/age": 1}])
        before = await state_of(a)
        async with replica.connect_peer(b, uri_of(server), token="reader", reconnect=False) as peer:
            error = await wait_error(peer)
        assert close_code(error) == CLOSE_FORBIDDEN, repr(error)
        assert "reader" not in str(error)  # tokens never appear in errors
        # nothing stored on the server: same refs (branch heads), same nodes
        after = await state_of(a)
        assert after[0] == before[0]
        assert after[1] == before[1]
        assert not await _has(a, "pushed-by-a-reader")
        # the server goes on serving a peer that may write
        await sync(b, uri_of(server), token="full")
        await assert_same(a, b)


async def test_peer_writing_a_branch_it_may_not_write_stores_nothing(open_db: OpenDb) -> None:
    a = await open_db("a", SCHEMA)
    await fill(a, 1, 10)
    await a.branch("scratch")
    async with replica.connect(a.url, branch="scratch") as scratch:
        await scratch.transact([{"p/name": "on-scratch", "p/age": 1}])
    b = await open_db("b")
    tokens = {"scratch-writer": Permissions(write=frozenset({"scratch"}))}
    async with replica.serve(a, HOST, 0, tokens=tokens) as server:
        await sync(b, uri_of(server), token="scratch-writer")
        await assert_same(a, b)
        await b.transact([{"p/name": "pushed-to-main", "p/age": 1}])
        before = await state_of(a)
        heads_before = await a.branch_heads()
        async with replica.connect_peer(
            b, uri_of(server), token="scratch-writer", reconnect=False
        ) as peer:
            error = await wait_error(peer)
        assert close_code(error) == CLOSE_FORBIDDEN, repr(error)
        assert await a.branch_heads() == heads_before
        assert not await _has(a, "pushed-to-main")
        # "refused, nothing stored" (issue 6): the refused commit's nodes are not kept either,
        # nor recorded as received (the sync/pending ref)
        refs, addresses = await state_of(a)
        assert addresses - before[1] == set(), f"{len(addresses - before[1])} nodes stored"
        assert refs == before[0]


async def test_new_branch_at_an_existing_commit_reaches_the_peer(open_db: OpenDb) -> None:
    """A branch whose head the peer already has (``branch("x")`` at the current commit) is
    still a branch the peer lacks: it must get an update for it (no nodes needed)."""
    a = await open_db("a", SCHEMA)
    await fill(a, 1, 10)
    await a.branch("release")  # at main's head
    b = await open_db("b")
    async with replica.serve(a, HOST, 0) as server:
        await sync(b, uri_of(server), seconds=5)  # a tiny database: 5 s is plenty
        assert await b.branch_heads() == await a.branch_heads()
        # and live: a branch made while connected
        async with replica.connect_peer(b, uri_of(server)) as peer:
            with anyio.fail_after(5):
                await peer.wait_synced()
            await a.branch("hotfix")
            await wait_until(
                lambda: _branches_equal(a, b), "branch hotfix (at an existing commit) on b", 5
            )


async def _refused(proxy: FaultProxy, count: int) -> bool:
    return proxy.refused >= count


async def _branches_equal(a: replica.Connection, b: replica.Connection) -> bool:
    return await a.branch_heads() == await b.branch_heads()


async def test_branch_without_read_permission_is_never_sent(open_db: OpenDb) -> None:
    a = await open_db("a", SCHEMA)
    await fill(a, 1, 10)
    await a.branch("secret")
    async with replica.connect(a.url, branch="secret") as secret:
        await secret.transact([{"p/name": "classified", "p/age": 7}])
        b = await open_db("b")
        tokens = {"main-only": Permissions(read=frozenset({"main"}))}
        async with (
            replica.serve(a, HOST, 0, tokens=tokens) as server,
            replica.connect_peer(b, uri_of(server), token="main-only") as peer,
        ):
            with anyio.fail_after(WAIT):
                await peer.wait_synced()
            await wait_until(lambda: converged(a, b), "main on b")
            await secret.transact([{"p/name": "classified-2", "p/age": 8}])
            await a.transact([{"p/name": "public", "p/age": 9}])
            await wait_until(lambda: _has(b, "public"), "main's new commit on b")
            await anyio.sleep(0.3)
            assert set(await b.branch_heads()) == {"main"}
            missing = await b.store.missing([secret.commit_id])
            assert missing == {secret.commit_id}
            # none of the secret commits' nodes reached b
            secret_nodes = set(await commit_new_nodes(a, secret.commit_id))
            assert await b.store.missing(sorted(secret_nodes)) == secret_nodes


# -- TLS ---------------------------------------------------------------------------------------


async def test_tls_with_locally_generated_certificates(open_db: OpenDb, tls: Tls) -> None:
    a = await open_db("a", SCHEMA)
    await fill(a, 2, 10)
    b = await open_db("b")
    async with replica.serve(a, HOST, 0, ssl=tls.server, token="t") as server:
        wss = uri_of(server, "wss")
        stats = await sync(b, wss, ssl=tls.client, token="t")
        assert stats.nodes_received > 0
        await assert_same(a, b)
        # live over TLS too
        async with replica.connect_peer(b, wss, ssl=tls.client, token="t") as peer:
            with anyio.fail_after(WAIT):
                await peer.wait_synced()
            await a.transact([{"p/name": "over-tls", "p/age": 1}])
            await wait_until(lambda: _has(b, "over-tls"), "a live push over wss")
        # a client that does not trust the server's CA gets no connection, and no data
        c = await open_db("c")
        before = await state_of(c)
        async with replica.connect_peer(c, wss, ssl=tls.untrusting, reconnect=False) as peer:
            error = await wait_error(peer)
        assert isinstance(error, ssl.SSLError), repr(error)
        assert await state_of(c) == before


async def test_failed_opening_handshake_ends_the_link_cleanly(open_db: OpenDb, tls: Tls) -> None:
    """ws:// to a wss:// server: the server's TLS alert is no HTTP response, the opening
    handshake fails (websockets.InvalidMessage). With ``reconnect=False`` that error is
    recorded on the link and leaving ``connect_peer`` raises nothing."""
    a = await open_db("a", SCHEMA)
    c = await open_db("c")
    before = await state_of(c)
    async with replica.serve(a, HOST, 0, ssl=tls.server) as server:
        async with replica.connect_peer(c, uri_of(server), reconnect=False) as peer:
            error = await wait_error(peer)
        assert isinstance(error, websockets.InvalidHandshake | SyncError), repr(error)
    assert await state_of(c) == before


async def test_client_retries_when_a_handshake_is_cut(open_db: OpenDb) -> None:
    """A link that drops during the opening handshake (the TCP connection is accepted, then
    closed before any HTTP response) is one more lost connection: the client retries with
    backoff like after any other, and syncs once the link is back."""
    a = await open_db("a", SCHEMA)
    await fill(a, 1, 10)
    b = await open_db("b")
    async with replica.serve(a, HOST, 0) as server, FaultProxy(server.port) as proxy:
        await proxy.cut(reset=True)
        async with replica.connect_peer(b, proxy.uri) as peer:
            await wait_until(lambda: _refused(proxy, 2), "two attempts cut during the handshake", 5)
            await proxy.restore()
            await wait_until(lambda: converged(a, b), "the clone once the link is back")
            assert peer.statistics().sessions == 1


# -- hostile clients ----------------------------------------------------------------------------


def _hello(version: int = PROTOCOL_VERSION) -> bytes:
    """A well-formed hello, with the default limits."""
    lim = Limits()
    limits = {
        "max_message": lim.max_message,
        "max_node": lim.max_node,
        "max_nodes": lim.max_nodes,
        "max_heads": lim.max_heads,
    }
    return encode(["hello", version, os.urandom(8), limits, None])


async def _forged_commit(conn: replica.Connection, **changes: Any) -> tuple[bytes, bytes]:
    """The head commit of ``conn`` re-encoded with ``changes`` to its body (a new address)."""
    body = decode(await conn.store.get(conn.commit_id))
    body.update(changes)
    data = encode(body)
    return address_of(data), data


async def _hostile_messages(kind: str, a: replica.Connection) -> list[bytes | str]:
    junk = os.urandom(64)
    if kind == "garbage":
        return [b"\xff\x00 not CBOR at all \xfe"]
    if kind == "text-frame":
        return ["hello"]
    if kind == "nodes-before-hello":
        return [encode(["nodes", [[address_of(junk), junk]]])]
    if kind == "unknown-tag":
        return [_hello(), encode(["gimme", 1])]
    if kind == "wrong-version":
        return [_hello(version=99)]
    if kind == "node-not-matching-its-hash":
        return [_hello(), encode(["nodes", [[address_of(junk), junk + b"!"]]])]
    if kind == "update-naming-commits-never-sent":
        never = address_of(b"a commit nobody sent")
        return [_hello(), encode(["update", "main", [never]])]
    if kind == "commit-with-unsent-parent":
        addr, data = await _forged_commit(a, parents=[address_of(b"unsent parent")])
        return [_hello(), encode(["nodes", [[addr, data]]])]
    if kind == "commit-stamped-far-ahead":
        wall = int(time.time() * 1000) + 24 * 3600 * 1000
        addr, data = await _forged_commit(a, hlc=[wall, 0])
        return [_hello(), encode(["nodes", [[addr, data]]])]
    if kind.startswith("delta-"):
        parents = [address_of(b"unsent parent")] if kind == "delta-with-unsent-parent" else []
        addr, data = await _forged_commit(
            a, parents=parents if parents or kind.endswith("no-parent") else [a.commit_id]
        )
        edits: list[list[list[bytes]]] = [[] for _ in TREES]
        edits[0].append([b"\x00 a key nobody wrote", b"x"])
        if kind == "delta-with-one-edit-list":
            edits = edits[:1]
        tree = [4096, 512, 16384]
        if kind == "delta-with-other-tree-parameters":
            tree = [1 << 30, 1 << 30, 1 << 31]  # would rewrite whole trees: refused at once
        return [_hello(), encode(["delta", addr, data, tree, edits])]
    if kind == "oversized-message":
        return [_hello(), b"\x00" * (3 << 19)]
    raise AssertionError(kind)


#: kind -> (close code, a word of the close reason)
HOSTILE = {
    "garbage": (CLOSE_PROTOCOL, "CBOR"),
    "text-frame": (CLOSE_PROTOCOL, ""),  # the protocol is binary: any text frame is refused
    "nodes-before-hello": (CLOSE_PROTOCOL, "before hello"),
    "unknown-tag": (CLOSE_PROTOCOL, "unknown message tag"),
    "wrong-version": (CLOSE_VERSION, "version"),
    "node-not-matching-its-hash": (CLOSE_PROTOCOL, "does not match"),
    "update-naming-commits-never-sent": (CLOSE_PROTOCOL, "not sent"),
    "commit-with-unsent-parent": (CLOSE_PROTOCOL, "not sent"),
    "commit-stamped-far-ahead": (CLOSE_PROTOCOL, "ahead"),
    "delta-not-rebuilding-its-trees": (CLOSE_PROTOCOL, "does not rebuild"),
    "delta-with-unsent-parent": (CLOSE_PROTOCOL, "not sent"),
    "delta-of-a-commit-with-no-parent": (CLOSE_PROTOCOL, "no parent"),
    "delta-with-one-edit-list": (CLOSE_PROTOCOL, "1 trees, not"),
    "delta-with-other-tree-parameters": (CLOSE_PROTOCOL, "tree parameters"),
    # websockets' own "message too big", at the server's max_message (1 MiB here)
    "oversized-message": (1009, "exceeds limit"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
async def test_hostile_client_is_closed_and_the_server_goes_on(open_db: OpenDb, kind: str) -> None:
    a = await open_db("a", SCHEMA)
    await fill(a, 2, 10)
    good = await open_db("good")
    late = await open_db("late")
    limits = Limits(max_message=1 << 20)  # a small max_message, for "oversized-message"
    async with (
        replica.serve(a, HOST, 0, limits=limits) as server,
        replica.connect_peer(good, uri_of(server)) as peer,
    ):
        with anyio.fail_after(WAIT):
            await peer.wait_synced()
        await wait_until(lambda: converged(a, good), "the well-behaved client's clone")
        before = await state_of(a)
        messages = await _hostile_messages(kind, a)
        with anyio.fail_after(10):
            async with ws_connect(uri_of(server), compression=None, max_size=None) as ws:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    for message in messages:
                        await ws.send(message)
                    while True:  # the server's hello (and bye) come first, then the close
                        await ws.recv()
        assert closed.value.rcvd is not None, f"no close frame from the server ({kind})"
        code, reason = HOSTILE[kind]
        assert closed.value.rcvd.code == code, (kind, closed.value.rcvd)
        # a clear reason, for the peer's logs
        assert closed.value.rcvd.reason and reason in closed.value.rcvd.reason, closed.value.rcvd
        # the store is as it was: no node, no ref changed
        assert await state_of(a) == before
        # the server goes on serving: the client connected before it still gets live pushes,
        # and a new client still clones
        await a.transact([{"p/name": "after-the-attack", "p/age": 1}])
        await wait_until(lambda: _has(good, "after-the-attack"), "a live push after the attack")
        await sync(late, uri_of(server))
        await assert_same(a, late)
        assert peer.statistics().sessions == 1
