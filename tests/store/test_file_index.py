"""The file store's in-memory index (store/file.py ``_Table``): a table of 32-bit address
tags and record locations, each hit confirmed by the record header on disk. These tests
check that lookups stay exact (absent addresses, addresses sharing a tag, damaged headers),
across many segments, reopening, other processes' segments and GC, and that the index costs
a few dozen bytes a node instead of a Python dict entry."""

from __future__ import annotations

import functools
import hashlib
import os
import random
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from store import file as file_module
from store.codec import address_of
from store.errors import CorruptNode, NodeNotFound
from store.file import FileStore, _encode_batch, _Table, _tag
from tests.store.test_file_store import (
    NODE_WRITER,
    Child,
    assert_holds,
    batch,
    indexes,
    raises_exactly,
    seeded_batch,
    segments,
    url_of,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


async def open_file(root: Path, opened: list[FileStore], **options: Any) -> FileStore:
    store = await FileStore.open(url_of(root), **options)
    opened.append(store)
    return store


@pytest.fixture
async def opened() -> Any:
    stores: list[FileStore] = []
    yield stores
    for one in stores:
        await one.aclose()


def numbered(first: int, count: int, size: int = 40) -> dict[bytes, bytes]:
    """``count`` distinct nodes, deterministic, ``size`` bytes or so each."""
    return batch(
        *(f"node {i:08d} ".encode().ljust(size, b".") for i in range(first, first + count))
    )


def absent_addresses(count: int) -> list[bytes]:
    return [address_of(f"never stored {i}".encode()) for i in range(count)]


@functools.cache
def sharing_a_tag() -> tuple[bytes, bytes]:
    """Two node datas whose addresses have the same tag (birthday search over 32 bits)."""
    seen: dict[bytes, bytes] = {}
    for i in range(2_000_000):
        data = b"tagged %d" % i
        tag = hashlib.sha256(data).digest()[:4]
        other = seen.setdefault(tag, data)
        if other != data:
            return other, data
    raise AssertionError("no two tags met")  # pragma: no cover - p ~ 0


def flip(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


# ----------------------------------------------------------------------------- the table


def test_table_keeps_every_location_of_a_tag_through_growth() -> None:
    table = _Table(capacity=8)
    rng = random.Random(1)
    expected: dict[int, list[int]] = {}
    tags = [0, 0, 1, 5, 5, 5, 0xFFFFFFFF, *(rng.getrandbits(32) for _ in range(3000))]
    for n, tag in enumerate(tags):
        table.add(n % 7 + 1, [(tag, n)], 1)
        expected.setdefault(tag or 1, []).append(((n % 7 + 1) << 40) | n)
    assert len(table) == len(tags)
    tags_array, _, mask = table.arrays
    assert (mask + 1) * 3 >= len(tags) * 4  # at most 3/4 full
    for tag, locations in expected.items():
        address = b"\x01" + tag.to_bytes(4, "big") + bytes(28)
        assert sorted(table.find(address)) == sorted(locations)
    unknown = next(t for t in range(2, 1000) if t not in expected)
    assert table.find(b"\x01" + unknown.to_bytes(4, "big") + bytes(28)) == []
    assert table.nbytes == (mask + 1) * 12 and len(tags_array) == mask + 1


# ---------------------------------------------------------------------- exact answers


async def test_many_segments_absent_addresses_and_reopen(
    root: Path, opened: list[FileStore]
) -> None:
    store = await open_file(root, opened, segment_records=50)
    everything: dict[bytes, bytes] = {}
    for start in range(0, 3000, 37):
        nodes = numbered(start, 37)
        await store.put_many(nodes)
        everything |= nodes
    assert len(segments(root)) >= 40
    absent = absent_addresses(300)
    await assert_holds(store, everything)
    assert await store.missing([*absent, *everything]) == set(absent)
    for address in absent[:20]:
        with raises_exactly(NodeNotFound):
            await store.get(address)
    with raises_exactly(NodeNotFound):
        await store.get_many([*list(everything)[:5], absent[0]])
    assert len(store._core.table) == len(everything)  # one entry a node: no duplicates
    await store.aclose()

    again = await open_file(root, opened, segment_records=50)
    assert again.stats["scanned_bytes"] == 0
    assert again.stats["segments_loaded"] == len(segments(root)) == len(indexes(root))
    assert len(again._core.table) == len(everything)
    await assert_holds(again, everything)
    assert await again.missing(absent) == set(absent)
    assert await again.list_addresses() == set(everything)
    # writing what is there costs nothing; writing something new still works
    batches = again.stats["batches"]
    await again.put_many(dict(list(everything.items())[::7]))
    assert again.stats["batches"] == batches
    fresh = numbered(10_000, 5)
    await again.put_many(fresh)
    await assert_holds(again, fresh)


async def test_addresses_sharing_a_tag_stay_apart(root: Path, opened: list[FileStore]) -> None:
    first, second = sharing_a_tag()
    a, b = address_of(first), address_of(second)
    assert a != b and _tag(a) == _tag(b)
    store = await open_file(root, opened)
    await store.put_many({a: first})
    # b's only candidate is a's record: absent, not corrupt
    with raises_exactly(NodeNotFound):
        await store.get(b)
    assert await store.missing([a, b]) == {b}
    written = store.stats["nodes_written"]
    await store.put_many({a: first, b: second})  # b is written (the tag did not fool it)
    assert store.stats["nodes_written"] == written + 1
    assert await store.get_many([b, a]) == {a: first, b: second}
    assert await store.missing([a, b]) == set()
    await store.aclose()

    again = await open_file(root, opened)
    assert await again.get_many([a, b]) == {a: first, b: second}
    assert await again.missing([b]) == set()
    await again.aclose()
    # a damaged header of a's record: a is corrupt, b (same tag) still reads
    (segment,) = segments(root)
    raw = segment.read_bytes()
    at = raw.index(a) + 20  # inside the record header's copy of a's address
    flip(segment, at)
    third = await open_file(root, opened)
    with raises_exactly(CorruptNode) as info:
        await third.get(a)
    assert info.value.address == a
    assert await third.get(b) == second
    assert await third.missing([a, b]) == set()  # a is present, but damaged


async def test_absent_address_sharing_a_tag_with_a_damaged_record(
    root: Path, opened: list[FileStore]
) -> None:
    first, second = sharing_a_tag()
    a, b = address_of(first), address_of(second)
    store = await open_file(root, opened)
    await store.put_many({a: first, **numbered(0, 5)})
    await store.aclose()
    (segment,) = segments(root)
    flip(segment, segment.read_bytes().index(a) + 1)
    again = await open_file(root, opened)
    with raises_exactly(NodeNotFound):
        await again.get(b)  # the damaged record is a's (its .idx says so), not b's
    assert await again.missing([b]) == {b}
    with raises_exactly(CorruptNode):
        await again.get(a)


async def test_a_good_copy_is_read_when_another_copy_is_damaged(
    root: Path, opened: list[FileStore]
) -> None:
    nodes = numbered(0, 10, size=300)
    one = await open_file(root, opened)
    two = await open_file(root, opened)
    await one.put_many(nodes)
    await two.put_many(nodes)  # two sees one's live segment only after a refresh: a copy
    await one.aclose()
    await two.aclose()
    if len(segments(root)) != 2:
        pytest.skip("the second writer saw the first copy")  # pragma: no cover
    victim, data = next(iter(nodes.items()))
    first_segment = segments(root)[0]
    flip(first_segment, first_segment.read_bytes().index(data) + 5)
    reader = await open_file(root, opened)
    assert await reader.get(victim) == data
    await assert_holds(reader, nodes)


async def test_reads_during_writes_that_grow_the_table(root: Path, opened: list[FileStore]) -> None:
    store = await open_file(root, opened, segment_records=700)
    written: dict[bytes, bytes] = dict(numbered(0, 100))
    await store.put_many(written)
    capacity = store._core.table.arrays[2] + 1
    errors: list[BaseException] = []

    async def reader() -> None:
        rng = random.Random(5)
        while not done.is_set():
            keys = rng.sample(list(written), 20)
            try:
                got = await store.get_many(keys)
                assert got == {k: written[k] for k in keys}
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                raise

    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(reader)
        for start in range(100, 12_100, 300):
            nodes = numbered(start, 300)
            await store.put_many(nodes)
            written |= nodes
        done.set()
    assert not errors
    assert store._core.table.arrays[2] + 1 >= capacity * 8  # it grew several times
    await assert_holds(store, written)


# ------------------------------------------------------------- other processes, GC


SEALING_WRITER = NODE_WRITER.replace(
    "FileStore.open(url)", "FileStore.open(url, segment_records=25)"
)


@pytest.mark.timeout(120)
async def test_another_process_sealed_segments_are_found(
    root: Path, opened: list[FileStore]
) -> None:
    reader = await open_file(root, opened)
    writer = await Child.start(SEALING_WRITER, url_of(root))
    try:
        assert await writer.line() == "ready"
        for seed in range(1, 9):
            assert await writer.ask(f"put 40 {seed}") == "put"  # rolls every 25 records
        sealed_by_writer = len(indexes(root))
        assert sealed_by_writer >= 7
        written = {k: v for seed in range(1, 9) for k, v in seeded_batch(40, seed).items()}
        absent = absent_addresses(50)
        assert await reader.missing([*absent, *written]) == set(absent)
        await assert_holds(reader, written)
        with raises_exactly(NodeNotFound):
            await reader.get(absent[0])
        assert await writer.ask("close") == "closed"
    finally:
        await writer.kill()
    await assert_holds(reader, written)
    assert await reader.list_addresses() == set(written)  # refreshes: sees the seal
    # the followed live segment was sealed: its entries are not indexed twice
    assert len(reader._core.table) == len(written)

    again = await open_file(root, opened)
    assert again.stats["scanned_bytes"] == 0
    await assert_holds(again, written)
    assert await again.missing(absent) == set(absent)
    assert len(again._core.table) == len(written)


async def test_lookups_after_gc(root: Path, opened: list[FileStore]) -> None:
    store = await open_file(root, opened, segment_records=30)
    nodes = numbered(0, 200)
    for start in range(0, 200, 20):
        await store.put_many(dict(list(nodes.items())[start : start + 20]))
    reader = await open_file(root, opened)
    await assert_holds(reader, nodes)
    doomed = list(nodes)[::3]
    await store.delete_many(doomed)
    kept = {k: v for k, v in nodes.items() if k not in doomed}
    for one in (store, reader):
        await assert_holds(one, kept)
        assert await one.missing(doomed) == set(doomed)
        with raises_exactly(NodeNotFound):
            await one.get(doomed[0])
    assert len(store._core.table) == len(kept)


# ---------------------------------------------------------------------------- memory


async def test_the_index_costs_a_few_dozen_bytes_a_node(
    root: Path, opened: list[FileStore]
) -> None:
    count = 40_000
    store = await open_file(root, opened)
    for start in range(0, count, 5000):
        await store.put_many(numbered(start, 5000, size=20))
    await store.aclose()

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        again = await open_file(root, opened)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(again._core.table) == count
    # ~21 bytes a node in the table (a dict of addresses took ~150), plus fixed overhead
    assert again._core.table.nbytes <= 32 * count
    assert held < 40 * count + 256 * 1024, held
    assert await again.get(address_of(b"node 00012345 ".ljust(20, b"."))) is not None


# ------------------------------------------------------------------ writing a batch


# REPLICA_PURE_PYTHON=1 asks for the Python versions only: nothing native to compare then
# (without it, a missing extension fails these tests, as in tests/store/test_speedups.py).
needs_native = pytest.mark.skipif(
    bool(os.environ.get("REPLICA_PURE_PYTHON")), reason="REPLICA_PURE_PYTHON is set"
)


@needs_native
@settings(max_examples=200, deadline=None)
@given(
    datas=st.lists(st.binary(max_size=600), max_size=12),
    start=st.integers(0, 2**40),
    limit=st.integers(0, 8000),
)
def test_c_node_records_are_the_python_ones(datas: list[bytes], start: int, limit: int) -> None:
    """store/_speedups.c encode_records joins exactly the node records, entries and .idx
    bytes _encode_batch's Python loop makes, or declines (None) past ``limit`` bytes."""
    from store.speedups import native
    assert native is not None, "the C extension is not built"
    nodes = [(address_of(d), d) for d in datas]
    got = native.encode_records(nodes, start, limit)
    size = sum(38 + len(d) for d in datas)
    if size > limit:
        assert got is None
        return
    assert got is not None
    records, entries, idx = got
    pos, want_entries = start, []
    for a, d in nodes:
        want_entries.append((a, pos, len(d)))
        pos += 38 + len(d)
    assert records == b"".join(b"N" + struct.pack(">I", len(d)) + a + d for a, d in nodes)
    assert entries == want_entries
    assert idx == b"".join(struct.pack(">33sQI", *e) for e in want_entries)


@pytest.mark.parametrize(
    "args",
    [
        ([(b"x" * 32, b"data")], 0, 100),  # a short address
        ([(b"x" * 33, "data")], 0, 100),  # data not bytes
        ([[b"x" * 33, b"data"]], 0, 100),  # a list, not a pair
        ([(b"x" * 33, b"data")], -1, 100),  # a negative offset
        ((), 0, 100),  # not a list
    ],
)
@needs_native
def test_c_node_records_refuse_bad_input(args: tuple[Any, ...]) -> None:
    from store.speedups import native
    assert native is not None, "the C extension is not built"
    with pytest.raises((TypeError, ValueError)):
        native.encode_records(*args)


@pytest.mark.parametrize(
    "way",
    ["python", pytest.param("c joined", marks=needs_native),
     pytest.param("c too large to join", marks=needs_native)],
)  # fmt: skip
def test_a_batch_is_written_as_the_format_says(way: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """_encode_batch returns parts (written with pwritev; joined only up to JOIN_BYTES, by the
    C twin of the node records) whose bytes are the version-2 batch of docs/format.md: node
    records, ref records, one commit record; and the entries' .idx bytes."""
    from store.speedups import native

    if way == "python":
        monkeypatch.setattr(file_module, "native", None)
    else:
        assert native is not None, "the C extension is not built"
        if way == "c too large to join":
            monkeypatch.setattr(file_module, "JOIN_BYTES", 300)
    nodes = [(address_of(d), d) for d in (b"one", b"two" * 100, b"")]
    refs: list[tuple[str, int, bytes | None]] = [("branches/main", 7, b"head"), ("gone", 3, None)]
    parts, size, entries, idx = _encode_batch(nodes, 8, refs)
    assert len(parts) == (1 if way == "c joined" else 2 * len(nodes)) + len(refs) + 1
    assert idx == b"".join(struct.pack(">33sQI", *entry) for entry in entries)
    records = b"".join(
        [b"N" + struct.pack(">I", len(d)) + a + d for a, d in nodes]
        + [b"R" + struct.pack(">H", 13) + b"branches/main" + struct.pack(">QI", 7, 4) + b"head"]
        + [b"R" + struct.pack(">H", 4) + b"gone" + struct.pack(">QI", 3, 0xFFFFFFFF)]
    )
    commit = b"C" + struct.pack(">IQQ", 5, len(records), xxhash.xxh3_64_intdigest(records))
    assert b"".join(parts) == records + commit
    assert size == len(records) + len(commit)
    assert entries == [
        (nodes[0][0], 8, 3),
        (nodes[1][0], 8 + 41, 300),
        (nodes[2][0], 8 + 41 + 338, 0),
    ]


def test_short_pwritev_writes_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.pwritev
    calls: list[int] = []

    def short(fd: int, buffers: list[bytes], offset: int) -> int:
        calls.append(len(buffers))
        joined = b"".join(buffers)
        return int(real(fd, [joined[: max(1, len(joined) // 3)]], offset))

    monkeypatch.setattr(os, "pwritev", short)
    monkeypatch.setattr(file_module, "_IOV_MAX", 4)
    parts = [bytes([i]) * (i * 7 % 23 + 1) for i in range(11)]
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        file_module._pwritev_all(fd, parts, 5)
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(5) + b"".join(parts)
    assert calls == [4, 4, 3]
    monkeypatch.delattr(os, "pwritev")  # a platform without pwritev
    fd = os.open(path, os.O_RDWR)
    try:
        file_module._pwritev_all(fd, parts[::-1], 0)
    finally:
        os.close(fd)
    assert path.read_bytes()[: sum(map(len, parts))] == b"".join(parts[::-1])


# ------------------------------------------------------------------ reading a record


async def test_records_longer_than_the_read_ahead(root: Path, opened: list[FileStore]) -> None:
    rng = random.Random(8)
    sizes = [0, 1, file_module._READ_AHEAD - 1, file_module._READ_AHEAD, 20_000, 1 << 20]
    nodes = batch(*(rng.randbytes(size) for size in sizes))
    store = await open_file(root, opened)
    await store.put_many(nodes)
    await assert_holds(store, nodes)
    await store.aclose()
    again = await open_file(root, opened)
    await assert_holds(again, nodes)


async def test_a_truncated_sealed_segment_is_corrupt_not_absent(
    root: Path, opened: list[FileStore]
) -> None:
    rng = random.Random(9)
    small = batch(*(rng.randbytes(100) for _ in range(5)))
    big_data = rng.randbytes(30_000)
    big = address_of(big_data)
    store = await open_file(root, opened)
    await store.put_many(small)
    await store.put_many({big: big_data})
    await store.aclose()
    (segment,) = segments(root)
    raw = segment.read_bytes()
    segment.write_bytes(raw[: raw.index(big_data) + 10_000])  # cut inside the big record
    again = await open_file(root, opened)
    with raises_exactly(CorruptNode) as info:
        await again.get(big)
    assert "truncated" in info.value.reason
    assert await again.missing([big]) == set()  # indexed: present, but damaged
    await assert_holds(again, small)
