"""Ref records in segments (store/file.py): ``stage`` + ``cas_ref`` writes a commit's nodes and
the ref update as one batch with one sync, and every reader agrees with the ref files.

A ref's value is the newer (by version) of its ref file and its newest record in an unsealed
segment; a writer copies its records into the ref files before it seals its segment, and the
repair of a crashed writer's segment does the same before sealing it.
"""

from __future__ import annotations

import os
from pathlib import Path

from store.codec import address_of
from store.file import FileStore


def node(i: int) -> tuple[bytes, bytes]:
    data = b"node %d " % i + b"x" * (i % 50)
    return address_of(data), data


async def test_staged_nodes_and_ref_cost_one_sync(tmp_path: Path) -> None:
    store = await FileStore.open(tmp_path.as_uri())
    try:
        await store.put_many(dict([node(0)]))  # the segment exists: no directory sync below
        for i in range(1, 6):
            address, data = node(i)
            store.stage({address: data})
            assert await store.get(address) == data  # readable before it is durable
            before = store.stats["fsyncs"]
            expected = None if i == 1 else b"head %d" % (i - 1)
            assert await store.cas_ref("main", expected, b"head %d" % i) is True
            assert store.stats["fsyncs"] - before == 1
        assert await store.get_ref("main") == b"head 5"
        assert await store.list_refs() == {"main": b"head 5"}
        # a lost race still writes the staged nodes (callers treat them as stored)
        address, data = node(99)
        store.stage({address: data})
        assert await store.cas_ref("main", b"stale", b"other") is False
        assert await store.missing([address]) == set()
        assert await store.get_ref("main") == b"head 5"
    finally:
        await store.aclose()
    again = await FileStore.open(tmp_path.as_uri())
    try:
        assert await again.get_ref("main") == b"head 5"
        assert await again.get(node(5)[0]) == node(5)[1]
    finally:
        await again.aclose()


async def test_two_objects_see_each_others_records_and_files(tmp_path: Path) -> None:
    a = await FileStore.open(tmp_path.as_uri())
    b = await FileStore.open(tmp_path.as_uri())
    try:
        a.stage(dict([node(1)]))
        assert await a.cas_ref("main", None, b"1") is True  # a record in a's segment
        assert await b.get_ref("main") == b"1"
        assert await b.cas_ref("main", b"1", b"2") is True  # a ref file, newer
        assert await a.get_ref("main") == b"2"
        a.stage(dict([node(2)]))
        assert await a.cas_ref("main", b"1", b"3") is False
        assert await a.cas_ref("main", b"2", b"3") is True  # a record, newer than the file
        b.stage(dict([node(3)]))
        assert await b.cas_ref("main", b"3", b"4") is True  # a record in b's segment
        assert await a.list_refs() == {"main": b"4"} == await b.list_refs()
        # deleting a ref that a segment holds a record of leaves a deleted marker
        assert await a.cas_ref("main", b"4", None) is True
        assert await b.get_ref("main") is None
        assert await b.list_refs() == {}
        assert await b.cas_ref("main", None, b"5") is True
        assert await a.get_ref("main") == b"5"
    finally:
        await a.aclose()
        await b.aclose()
    again = await FileStore.open(tmp_path.as_uri())
    try:
        assert await again.list_refs() == {"main": b"5"}
    finally:
        await again.aclose()


async def test_sealing_copies_records_into_ref_files(tmp_path: Path) -> None:
    store = await FileStore.open(tmp_path.as_uri(), segment_records=3)
    try:
        for i in range(10):  # several segments: each sealed one hands its refs over
            store.stage(dict([node(i)]))
            expected = None if i == 0 else b"%d" % (i - 1)
            assert await store.cas_ref("main", expected, b"%d" % i) is True
            assert await store.get_ref("main") == b"%d" % i
        assert store.stats["segments_sealed"] >= 2
    finally:
        await store.aclose()
    assert len(list((tmp_path / "refs").glob("*.ref"))) == 1
    again = await FileStore.open(tmp_path.as_uri())
    try:
        assert await again.get_ref("main") == b"9"
        assert again.stats["scanned_bytes"] == 0  # every segment was sealed
    finally:
        await again.aclose()


async def test_a_crashed_writers_records_survive_its_repair(tmp_path: Path) -> None:
    store = await FileStore.open(tmp_path.as_uri())
    for i in range(3):
        store.stage(dict([node(i)]))
        assert await store.cas_ref("main", None if i == 0 else b"%d" % (i - 1), b"%d" % i)
    assert await store.cas_ref("other", None, b"file") is True
    store._core.close()  # as if killed: the segment is neither sealed nor its refs copied
    reader = await FileStore.open(tmp_path.as_uri())
    try:
        assert reader.stats["segments_repaired"] == 1
        assert await reader.list_refs() == {"main": b"2", "other": b"file"}
        assert await reader.get(node(2)[0]) == node(2)[1]
    finally:
        await reader.aclose()
    again = await FileStore.open(tmp_path.as_uri())
    try:
        assert await again.get_ref("main") == b"2"
        assert again.stats["scanned_bytes"] == 0
    finally:
        await again.aclose()


async def test_kept_ref_files_follow_every_replacement(tmp_path: Path) -> None:
    """A store object keeps the ref files it read open and re-reads one only when its path
    names another file; ref files replaced many times over (same size, within one clock
    tick) or deleted are always seen, and closing releases every kept file."""
    fds_before = open_fds()
    a = await FileStore.open(tmp_path.as_uri())
    b = await FileStore.open(tmp_path.as_uri())
    try:
        value: bytes | None = None
        for i in range(60):
            writer, reader = (a, b) if i % 2 else (b, a)
            new = b"v%03d" % i  # same length every time
            assert await writer.cas_ref("main", value, new) is True
            assert await reader.get_ref("main") == new
            assert await reader.cas_ref("main", value, b"stale") is False
            value = new
        assert await a.cas_ref("main", value, None) is True  # deleted
        assert await b.get_ref("main") is None
        assert await b.cas_ref("main", None, b"again") is True
        assert await a.get_ref("main") == b"again"
        for i in range(100):  # more names than the object keeps open
            assert await a.cas_ref(f"r{i}", None, b"x") is True
        assert await b.list_refs() == {"main": b"again", **{f"r{i}": b"x" for i in range(100)}}
    finally:
        await a.aclose()
        await b.aclose()
    if fds_before is not None:
        assert open_fds() == fds_before


def open_fds() -> int | None:
    """How many file descriptors this process has open (None where /proc cannot tell)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None
