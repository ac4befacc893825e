"""A small commit (staged nodes + ref record) is written on the event loop's thread
(``_Core.quick_cas_ref``); anything that could take long or wait for a lock still goes to a
worker thread. Both paths give the same, durable result."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import store.file
from store.codec import address_of
from store.errors import CorruptNode, StoreError
from store.file import INLINE_BYTES, PREFILL_AFTER, FileStore


@pytest.fixture(autouse=True)
def any_disk_is_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inline path also depends on how fast the last fdatasyncs were; a busy machine
    (a CI host) must not change which path these tests take, except where one says so."""
    monkeypatch.setattr(store.file, "INLINE_SYNC_SECONDS", 60.0)


def node(i: int, size: int = 40) -> tuple[bytes, bytes]:
    data = (b"node %d " % i).ljust(size, b"x")
    return address_of(data), data


async def commit(store: FileStore, i: int, size: int = 40) -> bool:
    address, data = node(i, size)
    store.stage({address: data})
    expected = None if i == 1 else b"head %d" % (i - 1)
    return await store.cas_ref("main", expected, b"head %d" % i)


async def opened(tmp_path: Path, **options: object) -> FileStore:
    store = await FileStore.open(tmp_path.as_uri(), **options)
    await store.put_many(dict([node(0)]))  # a segment and a measured fdatasync
    return store


async def test_small_commits_are_written_inline_and_durable(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        for i in range(1, 11):
            before = store.stats["fsyncs"]
            assert await commit(store, i)
            assert store.stats["fsyncs"] - before == 1
        assert store.stats["cas_inline"] == 10
    finally:
        await store.aclose()
    again = await FileStore.open(tmp_path.as_uri())
    try:
        assert await again.get_ref("main") == b"head 10"
        for i in range(1, 11):
            assert await again.get(node(i)[0]) == node(i)[1]
    finally:
        await again.aclose()


async def test_inline_commits_let_other_tasks_run(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            for i in range(1, 21):
                assert await commit(store, i)
            tg.cancel_scope.cancel()
        assert store.stats["cas_inline"] >= 10  # (not all: a fill of zeros may be running)
        assert ticks >= 20  # every commit yields to the loop at least once
    finally:
        await store.aclose()


async def test_a_held_refs_lock_sends_the_commit_to_a_worker(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    fd = os.open(tmp_path / "refs" / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: another "process"
        release = threading.Timer(0.2, fcntl.flock, (fd, fcntl.LOCK_UN))
        release.start()
        with anyio.fail_after(30):
            assert await commit(store, 1)
        release.join()
        assert store.stats["cas_inline"] == 0
        assert await store.get_ref("main") == b"head 1"
        assert await commit(store, 2)  # lock free again: inline
        assert store.stats["cas_inline"] == 1
    finally:
        os.close(fd)
        await store.aclose()


async def test_large_commits_and_slow_disks_go_to_a_worker(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        assert await commit(store, 1, size=INLINE_BYTES + 1)
        assert store.stats["cas_inline"] == 0
        store._core.sync_seconds = 120.0  # as if the last fdatasyncs had been slow
        assert await commit(store, 2)
        assert store.stats["cas_inline"] == 0
        assert store._core.sync_seconds < 120.0  # the worker's fdatasync was measured
        store._core.sync_seconds = 0.0
        assert await commit(store, 3)
        assert store.stats["cas_inline"] == 1
        assert await store.get_ref("main") == b"head 3"
    finally:
        await store.aclose()


async def test_a_commit_that_fills_the_segment_goes_to_a_worker(tmp_path: Path) -> None:
    store = await opened(tmp_path, segment_size=4096)
    try:
        for i in range(1, 40):
            assert await commit(store, i, size=300)
        assert 0 < store.stats["cas_inline"] < 39
        assert store.stats["segments_sealed"] >= 2
    finally:
        await store.aclose()
    again = await FileStore.open(tmp_path.as_uri())
    try:
        assert await again.get_ref("main") == b"head 39"
        assert await again.missing([node(i, 300)[0] for i in range(1, 40)]) == set()
    finally:
        await again.aclose()


async def test_another_live_writer_sends_the_commit_to_a_worker(tmp_path: Path) -> None:
    a = await opened(tmp_path)
    b = await FileStore.open(tmp_path.as_uri())
    try:
        await b.put_many(dict([node(100)]))  # b's unsealed segment: a must read it under lock
        assert await commit(a, 1)
        assert a.stats["cas_inline"] == 0
        assert await b.get_ref("main") == b"head 1"
    finally:
        await b.aclose()
        await a.aclose()


async def test_staging_checks_addresses_unless_verified(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        address, _ = node(1)
        with pytest.raises(CorruptNode):
            store.stage({address: b"other bytes"})
        assert await store.missing([address]) == {address}  # nothing was staged
        store.stage(dict([node(2)]), verified=True)
        assert await commit(store, 1) is True  # node(1) staged by commit(); node(2) too
        assert await store.missing([node(2)[0]]) == set()
    finally:
        await store.aclose()


async def test_a_cancellation_during_an_inline_commit_does_not_hide_it(tmp_path: Path) -> None:
    """The inline commit is durable when it returns; a cancellation that arrives meanwhile
    (a deadline that expires during the fdatasync) takes effect after the call returns, as
    on the shielded worker path, so the caller learns that it committed."""
    store = await opened(tmp_path)
    core = store._core
    quick = core.quick_cas_ref
    try:
        with anyio.CancelScope() as scope:

            def quick_then_cancelled(*args: object) -> bool | None:
                done = quick(*args)  # type: ignore[arg-type]
                scope.cancel()  # as if a deadline had expired during the write
                return done

            core.quick_cas_ref = quick_then_cancelled  # type: ignore[method-assign]
            result = await commit(store, 1)
        assert result is True  # returned, not cancelled
        assert scope.cancelled_caught is False
        core.quick_cas_ref = quick  # type: ignore[method-assign]
        assert store.stats["cas_inline"] == 1
        assert await store.get_ref("main") == b"head 1"
    finally:
        await store.aclose()


async def test_an_interrupt_after_the_write_loses_no_commit(tmp_path: Path) -> None:
    """A KeyboardInterrupt on the loop's thread after a commit's fdatasync but before this
    object recorded the batch: the batch is durable (other processes may act on its ref
    record), so the writer reads its segment back before it reads a ref or writes again,
    and nothing is written over it or sealed without it."""
    store = await opened(tmp_path)
    core = store._core
    add_entries = core._add_entries
    try:
        assert await commit(store, 1)

        def interrupted(*args: object) -> None:
            raise KeyboardInterrupt

        core._add_entries = interrupted  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            await commit(store, 2)
        core._add_entries = add_entries  # type: ignore[method-assign]
        other = await FileStore.open(tmp_path.as_uri())
        try:
            assert await other.get_ref("main") == b"head 2"  # durable, and seen
        finally:
            await other.aclose()
        assert await commit(store, 3)  # after commit 2, read back first, not over it
        assert store._core.writer is not None and not store._core.writer.suspect
    finally:
        await store.aclose()
    again = await FileStore.open(tmp_path.as_uri())
    try:
        assert await again.get_ref("main") == b"head 3"
        assert await again.missing([node(i)[0] for i in (1, 2, 3)]) == set()
    finally:
        await again.aclose()


async def test_nodes_in_another_live_writers_segment_are_written_again(tmp_path: Path) -> None:
    """A commit does not skip a node because another live writer's segment holds it: that
    writer may not have synced it yet (this process can read it from the page cache)."""
    a = await opened(tmp_path)
    b = await FileStore.open(tmp_path.as_uri())
    try:
        address, data = node(7)
        await b.put_many({address: data})  # in b's unsealed segment
        assert await a.missing([address]) == set()  # readable here
        before = a.stats["nodes_written"]
        a.stage({address: data})
        assert await a.cas_ref("main", None, b"x")
        assert a.stats["nodes_written"] - before == 1  # written by a too
        await b.aclose()  # b's segment is sealed now: a copy there counts
        address2, data2 = node(8)
        b2 = await FileStore.open(tmp_path.as_uri())
        await b2.put_many({address2: data2})
        await b2.aclose()
        await a.get_ref("main")  # a refresh: b2's sealed segment is indexed
        before = a.stats["nodes_written"]
        a.stage({address2: data2})
        assert await a.cas_ref("main", b"x", b"y")
        assert a.stats["nodes_written"] == before  # skipped: durable elsewhere
    finally:
        await a.aclose()


async def test_a_commit_that_writes_zeros_ahead_is_inline_too(tmp_path: Path) -> None:
    """The batch that grows the file writes ~1 MiB of zeros with it (PREFILL_AFTER), on the
    loop's thread like the others (one ~1 ms write and sync every ~17 commits costs less
    there than two thread hand-offs); the commits after it, inside the zeros, too. All of
    them are readable from a fresh store object afterwards."""
    store = await opened(tmp_path)
    try:
        i = 0
        while store.stats["prefill_bytes"] == 0:
            i += 1
            inline = store.stats["cas_inline"]
            assert await commit(store, i)
            assert i <= PREFILL_AFTER + 1
        assert store.stats["cas_inline"] == inline + 1  # the one that wrote the zeros
        for j in range(i + 1, i + 6):
            assert await commit(store, j)
        assert store.stats["cas_inline"] == inline + 6
    finally:
        await store.aclose()
    again = await FileStore.open(tmp_path.as_uri())
    try:
        assert await again.get_ref("main") == b"head %d" % (i + 5)
        for k in range(1, i + 6):
            address, data = node(k)
            assert await again.get(address) == data
    finally:
        await again.aclose()


async def test_an_oversized_node_is_refused_when_staged_even_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node too large for a record (MAX_NODE_SIZE, 4 GiB, lowered here) is refused by
    stage() itself, also when the caller vouches for its address: staged, it would fail
    every later batch of the store object, closing included."""
    monkeypatch.setattr(store.file, "MAX_NODE_SIZE", 1000)
    store_ = await opened(tmp_path)
    try:
        big = b"x" * 2000
        with pytest.raises(StoreError, match=address_of(big).hex()):
            store_.stage({address_of(big): big}, verified=True)
        assert await commit(store_, 1)  # later commits go on
        assert await commit(store_, 2)
    finally:
        await store_.aclose()
    again = await FileStore.open(tmp_path.as_uri())
    try:
        assert await again.get_ref("main") == b"head 2"
        big = b"x" * 2000
        assert await again.missing([address_of(big)]) == {address_of(big)}
    finally:
        await again.aclose()
