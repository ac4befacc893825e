"""gc, export/import and verify (replica/maintenance.py), on the memory and file stores."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import replica
from replica.maintenance import export_db, gc, import_db, verify
from store.base import open_store
from store.codec import address_of, encode
from sync.peer import PENDING_REF

SCHEMA = [
    {"db/ident": "p/name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "p/age", "db/valueType": "db.type/long"},
]


async def _fill(conn: replica.Connection, n: int) -> None:
    for i in range(n):
        await conn.transact([{"p/name": f"n{i}", "p/age": i}])


async def test_gc_deletes_only_unreachable(make_conn) -> None:  # type: ignore[no-untyped-def]
    conn = await make_conn(SCHEMA)
    await _fill(conn, 5)
    keep = conn.db.commit_id
    await conn.branch("side")
    await _fill(conn, 5)
    # main moves back: the last 5 commits are reachable from nothing
    await conn.reset_branch("main", keep)
    before = await conn.store.list_addresses()
    report = await gc(conn, grace_seconds=0)
    after = await conn.store.list_addresses()
    assert report.deleted > 0
    assert after == before - (before - after)
    assert len(after) == report.reachable
    # everything both branches need is still readable
    assert await verify(conn, "main")
    assert await verify(conn, "side")
    names = {d.v async for d in conn.db.datoms("aevt", "p/name")}
    assert names == {f"n{i}" for i in range(5)}


async def test_gc_grace_keeps_nodes_published_during_grace(make_conn) -> None:  # type: ignore[no-untyped-def]
    conn = await make_conn(SCHEMA)
    await _fill(conn, 2)
    # an in-flight writer: its node is stored but no ref points at it yet
    orphan = b"in flight"
    await conn.store.put_many({address_of(orphan): orphan})
    # while the grace period runs (gc cancelled inside it) the unreferenced node survives;
    # a gc whose grace has elapsed deletes it
    with anyio.move_on_after(0.2):
        await gc(conn, grace_seconds=5)
    assert address_of(orphan) in await conn.store.list_addresses()
    report = await gc(conn, grace_seconds=0)
    assert address_of(orphan) not in await conn.store.list_addresses()
    assert report.deleted >= 1


async def _pending_commit(conn: replica.Connection) -> bytes:
    """A commit on no branch, listed in the sync/pending ref: as sync leaves a commit it
    received complete but whose update never came (a cut session, protocol.md 5.5)."""
    await _fill(conn, 3)
    keep = conn.db.commit_id
    await _fill(conn, 3)
    received = conn.db.commit_id
    await conn.reset_branch("main", keep)
    assert await conn.store.cas_ref(PENDING_REF, None, encode([received]))
    return received


async def test_gc_keeps_commits_pending_in_sync(make_conn) -> None:  # type: ignore[no-untyped-def]
    conn = await make_conn(SCHEMA)
    received = await _pending_commit(conn)
    await gc(conn, grace_seconds=0)
    # the next session announces it as held, so the peer will not send it again: all of it
    # must still be here when its update finally publishes it
    await conn.reset_branch("main", received)
    assert (await verify(conn, "main")).commits == 6 + 2  # 6 txs, the schema tx, genesis
    names = {d.v async for d in (await conn.refresh()).datoms("aevt", "p/name")}
    assert names == {f"n{i}" for i in range(3)}


async def test_gc_ignores_stale_and_corrupt_pending_entries(make_conn) -> None:  # type: ignore[no-untyped-def]
    conn = await make_conn(SCHEMA)
    await _fill(conn, 2)
    gone = address_of(b"deleted long ago")
    assert await conn.store.cas_ref(PENDING_REF, None, encode([gone, b"not an address"]))
    report = await gc(conn, grace_seconds=0)
    assert report.reachable > 0
    assert await verify(conn, "main")


async def test_export_keeps_pending_commits(make_conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conn = await make_conn(SCHEMA)
    received = await _pending_commit(conn)
    path = tmp_path / "db.export"
    await export_db(conn, path)
    url = (tmp_path / "imported").as_uri()
    store = await open_store(url)
    await import_db(store, path)
    await store.aclose()
    async with replica.connect(url) as copy:
        assert await copy.store.get_ref(PENDING_REF) == encode([received])
        await copy.reset_branch("main", received)
        assert (await verify(copy, "main")).commits == 6 + 2


async def test_export_import_round_trip(make_conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conn = await make_conn(SCHEMA)
    await _fill(conn, 10)
    await conn.branch("other")
    path = tmp_path / "db.export"
    count = await export_db(conn, path)
    assert count > 10
    url = (tmp_path / "imported").as_uri()
    store = await open_store(url)
    assert await import_db(store, path) == count
    await store.aclose()
    async with replica.connect(url) as copy:
        assert copy.db.commit_id == conn.db.commit_id
        assert await copy.db.datoms("eavt") == await conn.db.datoms("eavt")
        assert await copy.branches() == await conn.branches()
        assert (await verify(copy)).commits == 11 + 1  # 10 txs, the schema tx... and genesis


async def test_import_refuses_a_non_empty_store_and_garbage(make_conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conn = await make_conn(SCHEMA)
    path = tmp_path / "x.export"
    await export_db(conn, path)
    with pytest.raises(replica.ReplicaError, match="already holds a database"):
        await import_db(conn.store, path)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00\x00\x00\x03abc")
    store = await open_store("mem://")
    with pytest.raises(replica.ReplicaError, match=r"corrupt frame|not a replica export"):
        await import_db(store, junk)
    assert await store.list_refs() == {}


async def test_verify_finds_a_corrupt_node(tmp_path: Path) -> None:
    store = await open_store("mem://")
    await store.aclose()
    url = "mem://verify-corrupt"
    async with replica.connect(url, create=True, schema=SCHEMA) as conn:
        await _fill(conn, 3)
        assert (await verify(conn)).nodes > 3
        mem = conn.store
        victim = next(a for a, d in mem._data.nodes.items() if d.startswith(b"\x83\x00"))  # type: ignore[attr-defined]
        mem._data.nodes[victim] = mem._data.nodes[victim] + b"!"  # type: ignore[attr-defined]
        with pytest.raises(replica.CorruptNode) as info:
            await verify(conn)
        assert info.value.address == victim
