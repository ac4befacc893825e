"""File-store specifics (store/file.py): durability bookkeeping, torn tails, corruption, open
errors, GC, and sharing one directory between OS processes. The behaviour common to every
backend is in test_conformance.py; the SIGKILL loop is in test_file_crash.py."""

from __future__ import annotations

import asyncio
import json
import os
import random
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from store.base import NodeStore, open_store
from store.codec import address_of
from store.errors import CorruptNode, NodeNotFound, StoreError
from store.file import FileStore


def batch(*datas: bytes) -> dict[bytes, bytes]:
    return {address_of(data): data for data in datas}


def random_batch(
    rng: random.Random, count: int, low: int = 100, high: int = 2000
) -> dict[bytes, bytes]:
    return batch(*(rng.randbytes(rng.randint(low, high)) for _ in range(count)))


def url_of(path: Path) -> str:
    return "file://" + str(path)


def segments(root: Path) -> list[Path]:
    return sorted((root / "nodes").glob("*.seg"))


def indexes(root: Path) -> list[Path]:
    return sorted((root / "nodes").glob("*.idx"))


HAS_SYSFS = os.path.isdir("/sys/kernel")


def raises_exactly(cls: type[BaseException]) -> Any:
    return pytest.raises(cls, check=lambda exc: type(exc) is cls)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
async def opened() -> AsyncIterator[list[FileStore]]:
    """Collects the stores a test opens and closes them at the end."""
    stores: list[FileStore] = []
    yield stores
    for one in stores:
        await one.aclose()


async def open_file(root: Path, opened: list[FileStore], **options: Any) -> FileStore:
    store = await FileStore.open(url_of(root), **options)
    opened.append(store)
    return store


async def assert_holds(store: NodeStore, nodes: dict[bytes, bytes]) -> None:
    got = await store.get_many(list(nodes))
    assert got == nodes
    assert all(address_of(data) == address for address, data in got.items())
    assert await store.missing(list(nodes)) == set()


async def assert_lacks(store: NodeStore, nodes: dict[bytes, bytes]) -> None:
    assert await store.missing(list(nodes)) == set(nodes)
    for address in nodes:
        with raises_exactly(NodeNotFound):
            await store.get(address)


# ------------------------------------------------------------------------- layout, reopen


async def test_creates_directory_with_format_file(root: Path, opened: list[FileStore]) -> None:
    store = await open_file(root / "deeper", opened)
    assert isinstance(store, NodeStore)
    assert store.url == url_of(root / "deeper")
    doc = json.loads((root / "deeper" / "FORMAT").read_text())
    assert doc == {"format": "replica-file-store", "version": 1}
    assert (root / "deeper" / "nodes").is_dir() and (root / "deeper" / "refs").is_dir()
    assert segments(root / "deeper") == []  # nothing written yet, no segment either


async def test_open_store_dispatches_to_the_file_store(root: Path) -> None:
    store = await open_store(url_of(root))
    try:
        assert isinstance(store, FileStore)
    finally:
        await store.aclose()


async def test_reopen_sees_everything(root: Path, opened: list[FileStore]) -> None:
    rng = random.Random(1)
    first = await open_file(root, opened)
    batches = [random_batch(rng, rng.randint(1, 30)) for _ in range(10)]
    for nodes in batches:
        await first.put_many(nodes)
    assert await first.cas_ref("main", None, b"head 1") is True
    assert await first.cas_ref("branch/x:y", None, b"head 2") is True
    await first.aclose()

    second = await open_file(root, opened)
    everything = {k: v for nodes in batches for k, v in nodes.items()}
    await assert_holds(second, everything)
    assert await second.list_addresses() == set(everything)
    assert await second.list_refs() == {"main": b"head 1", "branch/x:y": b"head 2"}
    # The closed writer sealed its segment: reopening loads .idx files and scans nothing.
    assert len(indexes(root)) == len(segments(root)) == 1
    assert second.stats["scanned_bytes"] == 0
    assert second.stats["segments_loaded"] == 1


async def test_a_batch_costs_a_constant_number_of_fsyncs(
    root: Path, opened: list[FileStore]
) -> None:
    rng = random.Random(2)
    store = await open_file(root, opened)
    before = store.stats["fsyncs"]
    await store.put_many(random_batch(rng, 500, 50, 300))
    first = store.stats["fsyncs"] - before
    assert 1 <= first <= 3  # the data sync, plus the directory sync of the new segment
    costs = []
    for _ in range(5):
        before = store.stats["fsyncs"]
        await store.put_many(random_batch(rng, 500, 50, 300))
        costs.append(store.stats["fsyncs"] - before)
    assert costs == [1] * 5
    assert store.stats["batches"] == 6
    assert store.stats["nodes_written"] == 3000
    # Putting only what is already there costs nothing.
    again = random_batch(random.Random(2), 500, 50, 300)
    before = store.stats["fsyncs"]
    await store.put_many(again)
    assert store.stats["fsyncs"] == before
    # A ref update is a temporary file sync and a directory sync.
    before = store.stats["fsyncs"]
    assert await store.cas_ref("main", None, b"x") is True
    assert store.stats["fsyncs"] - before == 2


async def test_idempotent_put_does_not_grow_the_segment(
    root: Path, opened: list[FileStore]
) -> None:
    store = await open_file(root, opened)
    nodes = random_batch(random.Random(3), 40)
    await store.put_many(nodes)
    (segment,) = segments(root)
    size = segment.stat().st_size
    await store.put_many(nodes)
    await store.put_many(dict(list(nodes.items())[:10]))
    assert segment.stat().st_size == size
    assert store.stats["batches"] == 1
    # Also from another store object on the directory (after a reopen).
    await store.aclose()
    again = await open_file(root, opened)
    await again.put_many(nodes)
    assert segments(root) == [segment] and segment.stat().st_size == size


async def test_segments_roll_seal_and_reload(root: Path, opened: list[FileStore]) -> None:
    rng = random.Random(4)
    store = await open_file(root, opened, segment_size=16 * 1024)
    everything: dict[bytes, bytes] = {}
    for _ in range(40):
        nodes = random_batch(rng, 3, 500, 1500)
        await store.put_many(nodes)
        everything |= nodes
    assert store.stats["segments_created"] > 3
    assert len(indexes(root)) == len(segments(root)) - 1  # all but the one being written
    await assert_holds(store, everything)
    await store.aclose()
    assert len(indexes(root)) == len(segments(root))

    again = await open_file(root, opened, segment_size=16 * 1024)
    await assert_holds(again, everything)
    assert again.stats["scanned_bytes"] == 0
    assert again.stats["segments_loaded"] == len(segments(root))


async def test_segments_also_roll_by_record_count(root: Path, opened: list[FileStore]) -> None:
    store = await open_file(root, opened, segment_records=10)
    rng = random.Random(13)
    everything: dict[bytes, bytes] = {}
    for _ in range(5):
        nodes = random_batch(rng, 6, 10, 20)
        await store.put_many(nodes)
        everything |= nodes
    assert len(segments(root)) == 3
    await assert_holds(store, everything)


async def test_concurrent_tasks_on_one_store(root: Path, opened: list[FileStore]) -> None:
    store = await open_file(root, opened, segment_size=64 * 1024)
    rng = random.Random(5)
    batches = [random_batch(rng, rng.randint(1, 10)) for _ in range(30)]

    async def writer(nodes: dict[bytes, bytes]) -> None:
        await store.put_many(nodes)
        await assert_holds(store, nodes)

    async with anyio.create_task_group() as tg:
        for nodes in batches:
            tg.start_soon(writer, nodes)
    everything = {k: v for nodes in batches for k, v in nodes.items()}
    assert await store.list_addresses() == set(everything)


async def test_cancelled_put_many_is_all_or_nothing(root: Path, opened: list[FileStore]) -> None:
    store = await open_file(root, opened)
    rng = random.Random(6)
    for delay in (0.0, 0.0005, 0.002, 0.01):
        nodes = random_batch(rng, 200, 1000, 3000)
        with anyio.move_on_after(delay):
            await store.put_many(nodes)
        lacking = await store.missing(list(nodes))
        assert lacking in (set(), set(nodes)), f"partial batch after a cancel at {delay}"
        await store.put_many(nodes)
        await assert_holds(store, nodes)
    await store.aclose()
    again = await open_file(root, opened)
    assert again.stats["scanned_bytes"] == 0


# ----------------------------------------------------------------------- torn tails, damage


def forget_seals(root: Path) -> None:
    """Make every segment look like a crashed writer's: unsealed and unlocked."""
    for index in indexes(root):
        index.unlink()


async def write_three_batches(
    root: Path, opened: list[FileStore]
) -> tuple[list[dict[bytes, bytes]], list[int]]:
    """Three batches in one segment, closed; returns them and the segment size after each."""
    rng = random.Random(7)
    store = await open_file(root, opened)
    batches, sizes = [], []
    for _ in range(3):
        nodes = random_batch(rng, 5, 300, 900)
        await store.put_many(nodes)
        batches.append(nodes)
        (segment,) = segments(root)
        sizes.append(segment.stat().st_size)
    await store.aclose()
    return batches, sizes


@pytest.mark.parametrize(
    "damage",
    ["truncated-mid-batch", "truncated-commit", "zeroed-batch", "zeroed-data",
     "garbage-appended", "record-without-commit", "zeros-appended"],
)  # fmt: skip
async def test_torn_tail_is_ignored_on_reopen(
    root: Path, opened: list[FileStore], damage: str
) -> None:
    batches, sizes = await write_three_batches(root, opened)
    forget_seals(root)
    (segment,) = segments(root)
    raw = bytearray(segment.read_bytes())
    last_lost = damage in ("truncated-mid-batch", "truncated-commit", "zeroed-batch", "zeroed-data")
    if damage == "truncated-mid-batch":
        raw = raw[: (sizes[1] + sizes[2]) // 2]
    elif damage == "truncated-commit":
        raw = raw[: sizes[2] - 1]
    elif damage == "zeroed-batch":  # the file size reached the disk, the data pages did not
        raw[sizes[1] : sizes[2]] = bytes(sizes[2] - sizes[1])
    elif damage == "zeroed-data":  # the headers' page reached the disk, a data page did not
        data = list(batches[2].values())[2]
        start = raw.index(data)
        raw[start : start + len(data)] = bytes(len(data))
    elif damage == "garbage-appended":
        raw += random.Random(8).randbytes(3000)
    elif damage == "record-without-commit":
        data = b"a node whose batch never committed"
        raw += struct.pack(">BI", 0x4E, len(data)) + address_of(data) + data
    else:
        raw += bytes(8192)
    segment.write_bytes(bytes(raw))

    store = await open_file(root, opened)
    await assert_holds(store, batches[0] | batches[1])
    if last_lost:
        await assert_lacks(store, batches[2])
    else:
        await assert_holds(store, batches[2])
    if damage == "record-without-commit":
        await assert_lacks(store, batch(b"a node whose batch never committed"))
    assert store.stats["segments_repaired"] == 1
    expected = batches[0] | batches[1] | ({} if last_lost else batches[2])
    assert await store.list_addresses() == set(expected)
    # A lost batch can simply be written again (to a new segment: the old one is left alone).
    await store.put_many(batches[2])
    await assert_holds(store, batches[2])
    await store.aclose()

    # The repair happened once: it sealed the crashed segment, so this reopen scans nothing.
    again = await open_file(root, opened)
    assert again.stats["scanned_bytes"] == 0 and again.stats["segments_repaired"] == 0
    await assert_holds(again, batches[0] | batches[1] | batches[2])


async def test_dead_segment_with_nothing_valid_is_removed(
    root: Path, opened: list[FileStore]
) -> None:
    _, sizes = await write_three_batches(root, opened)
    forget_seals(root)
    (segment,) = segments(root)
    with segment.open("r+b") as f:
        f.truncate(sizes[0] - 5)  # not even the first batch committed
    store = await open_file(root, opened)
    assert await store.list_addresses() == set()
    assert segments(root) == [] and indexes(root) == []


def flip(path: Path, needle: bytes, at: int = 0) -> None:
    raw = bytearray(path.read_bytes())
    position = raw.index(needle) + at
    raw[position] ^= 0x20
    path.write_bytes(bytes(raw))


async def test_flipped_byte_in_sealed_segment_is_corrupt_node(
    root: Path, opened: list[FileStore]
) -> None:
    batches, _ = await write_three_batches(root, opened)
    (segment,) = segments(root)
    victim, data = next(iter(batches[1].items()))
    flip(segment, data, at=len(data) // 2)
    header_victim, _ = list(batches[2].items())[3]
    flip(segment, header_victim, at=10)  # inside the record header's copy of the address

    store = await open_file(root, opened)
    for address in (victim, header_victim):
        with raises_exactly(CorruptNode) as info:
            await store.get(address)
        assert info.value.address == address
        with raises_exactly(CorruptNode):
            await store.get_many([address])
        assert await store.missing([address]) == set()  # present, but damaged
    healthy = {k: v for nodes in batches for k, v in nodes.items()}
    del healthy[victim], healthy[header_victim]
    await assert_holds(store, healthy)


async def test_flipped_byte_under_an_open_store_is_corrupt_node(
    root: Path, opened: list[FileStore]
) -> None:
    store = await open_file(root, opened)
    nodes = random_batch(random.Random(9), 10)
    await store.put_many(nodes)
    victim, data = next(iter(nodes.items()))
    await assert_holds(store, nodes)
    (segment,) = segments(root)
    flip(segment, data, at=len(data) - 1)
    with raises_exactly(CorruptNode):
        await store.get(victim)
    del nodes[victim]
    await assert_holds(store, nodes)


async def test_damage_in_the_middle_of_an_unsealed_segment_is_corrupt_node(
    root: Path, opened: list[FileStore]
) -> None:
    # A batch that fails its checksum but is followed by a valid batch is on-disk damage, not
    # a torn tail: its nodes stay known, the damaged one reads as CorruptNode, not as absent,
    # and the batches after it are not lost.
    batches, _ = await write_three_batches(root, opened)
    forget_seals(root)
    (segment,) = segments(root)
    victim, data = next(iter(batches[1].items()))
    flip(segment, data, at=3)
    store = await open_file(root, opened)
    with raises_exactly(CorruptNode):
        await store.get(victim)
    healthy = batches[0] | batches[1] | batches[2]
    del healthy[victim]
    await assert_holds(store, healthy)


async def test_damaged_index_file_falls_back_to_a_scan(root: Path, opened: list[FileStore]) -> None:
    batches, _ = await write_three_batches(root, opened)
    (index,) = indexes(root)
    raw = bytearray(index.read_bytes())
    raw[30] ^= 0xFF
    index.write_bytes(bytes(raw))
    store = await open_file(root, opened)
    await assert_holds(store, batches[0] | batches[1] | batches[2])
    assert store.stats["scanned_bytes"] > 0
    await store.aclose()
    again = await open_file(root, opened)  # the scan wrote a good index again
    assert again.stats["scanned_bytes"] == 0
    await assert_holds(again, batches[0] | batches[1] | batches[2])


async def test_damaged_ref_file_is_store_error(root: Path, opened: list[FileStore]) -> None:
    store = await open_file(root, opened)
    assert await store.cas_ref("main", None, b"the value") is True
    (ref,) = (root / "refs").glob("*.ref")
    flip(ref, b"the value")
    with raises_exactly(StoreError) as info:
        await store.get_ref("main")
    assert "damaged" in str(info.value)
    with raises_exactly(StoreError):
        await store.list_refs()
    with raises_exactly(StoreError):
        await store.cas_ref("main", b"the value", b"other")


async def test_leftover_temporary_files_are_cleaned_up(root: Path, opened: list[FileStore]) -> None:
    store = await open_file(root, opened)
    assert await store.cas_ref("main", None, b"v") is True
    await store.aclose()
    (root / "refs" / ".tmp-0123456789abcdef").write_bytes(b"half a ref")
    old = root / "nodes" / ".tmp-0123456789abcdef-000001.seg"
    old.write_bytes(b"half a segment")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    fresh = root / "nodes" / ".tmp-fedcba9876543210-000001.seg"  # maybe a live writer's
    fresh.write_bytes(b"")
    again = await open_file(root, opened)
    assert not (root / "refs" / ".tmp-0123456789abcdef").exists()
    assert not old.exists() and fresh.exists()
    assert await again.list_refs() == {"main": b"v"}
    assert await again.list_addresses() == set()


# ------------------------------------------------------------------------------ open errors


@pytest.mark.parametrize(
    "make", ["regular-file", "under-regular-file", "relative", "host", "query", "sysfs"]
)
async def test_open_errors_are_store_errors_naming_the_path(tmp_path: Path, make: str) -> None:
    occupied = tmp_path / "occupied.txt"
    occupied.write_bytes(b"a regular file")
    if make == "regular-file":
        url, named = url_of(occupied), str(occupied)
    elif make == "under-regular-file":  # fails even for root
        url, named = url_of(occupied / "sub"), str(occupied / "sub")
    elif make == "relative":
        url, named = "file:relative/store", "relative/store"
    elif make == "host":
        url, named = "file://otherhost/abs/store", "otherhost"
    elif make == "query":
        url, named = url_of(tmp_path / "s") + "?segment_size=5", url_of(tmp_path / "s")
    else:
        if not HAS_SYSFS:
            pytest.skip("needs Linux sysfs (a directory even root cannot create entries in)")
        url, named = "file:///sys/replica-test-store", "/sys/replica-test-store"
    for opener in (FileStore.open, open_store):
        with raises_exactly(StoreError) as info:
            await opener(url)
        assert named in str(info.value), str(info.value)


async def test_a_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("someone's file")
    with raises_exactly(StoreError) as info:
        await FileStore.open(url_of(tmp_path))
    assert str(tmp_path) in str(info.value) and "FORMAT" in str(info.value)
    assert os.listdir(tmp_path) == ["mine.txt"]  # nothing written


@pytest.mark.parametrize(
    "content",
    [
        '{"format": "replica-file-store", "version": 2}',
        '{"format": "something-else", "version": 1}',
        "not json",
        "[1]",
    ],
)
async def test_another_format_is_refused(root: Path, opened: list[FileStore], content: str) -> None:
    await (await open_file(root, opened)).aclose()
    (root / "FORMAT").write_text(content)
    with raises_exactly(StoreError) as info:
        await FileStore.open(url_of(root))
    assert str(root) in str(info.value)


async def test_unknown_or_bad_options_are_store_errors(root: Path) -> None:
    with raises_exactly(StoreError):
        await FileStore.open(url_of(root), bogus=1)
    with raises_exactly(StoreError):
        await FileStore.open(url_of(root), segment_size="big")


async def test_an_empty_existing_directory_becomes_a_store(tmp_path: Path) -> None:
    store = await FileStore.open(url_of(tmp_path))
    await store.put_many(batch(b"x"))
    await store.aclose()
    assert (tmp_path / "FORMAT").exists()


# ------------------------------------------------------------------------------------- GC


async def test_gc_removes_every_copy_and_survives_reopen(
    root: Path, opened: list[FileStore]
) -> None:
    rng = random.Random(10)
    a = await open_file(root, opened, segment_size=8 * 1024)
    b = await open_file(root, opened)
    shared = random_batch(rng, 3)
    await a.put_many(shared)
    await b.put_many(shared)  # b had not seen a's copies: a second copy of each, in b's segment
    keep: dict[bytes, bytes] = {}
    drop: dict[bytes, bytes] = dict(shared)
    for i in range(30):
        nodes = random_batch(rng, 4, 300, 1200)
        await a.put_many(nodes)
        (keep if i % 3 else drop).update(nodes)
    await b.aclose()
    segments_before = len(segments(root))
    await a.delete_many(list(drop))
    await assert_lacks(a, drop)
    await assert_holds(a, keep)
    assert await a.list_addresses() == set(keep)
    assert len(indexes(root)) == len(segments(root)) <= segments_before
    recreated = dict(list(drop.items())[:2])
    await a.put_many(recreated)  # GC raced a writer that re-created them
    await a.aclose()

    again = await open_file(root, opened)
    await assert_holds(again, keep | recreated)
    await assert_lacks(again, dict(list(drop.items())[2:]))


async def test_gc_refuses_a_segment_another_writer_is_still_writing(
    root: Path, opened: list[FileStore]
) -> None:
    a = await open_file(root, opened)
    b = await open_file(root, opened)
    nodes = batch(b"written by b")
    await b.put_many(nodes)
    with raises_exactly(StoreError) as info:
        await a.delete_many(list(nodes))
    assert "another process" in str(info.value)
    await assert_holds(a, nodes)
    await b.aclose()
    await a.delete_many(list(nodes))
    await assert_lacks(a, nodes)


async def test_a_reader_follows_gc_done_by_another_store_object(
    root: Path, opened: list[FileStore]
) -> None:
    writer = await open_file(root, opened)
    nodes = random_batch(random.Random(11), 10)
    await writer.put_many(nodes)
    await writer.aclose()
    reader = await open_file(root, opened)
    await assert_holds(reader, nodes)
    gc = await open_file(root, opened)
    doomed = list(nodes)[:4]
    await gc.delete_many(doomed)
    survivors = {k: v for k, v in nodes.items() if k not in doomed}
    await assert_holds(reader, survivors)  # moved to a new segment: the reader finds them
    assert await reader.list_addresses() == set(survivors)
    assert await reader.missing(doomed) == set(doomed)


# -------------------------------------------------------------------- several OS processes

CHILD_TIMEOUT = 60.0

CAS_RACER = """
import asyncio, json, sys
from store.file import FileStore

async def main(url, me, rounds):
    store = await FileStore.open(url)
    print("ready", flush=True)
    sys.stdin.readline()
    won, lost = [], 0
    while True:
        current = await store.get_ref("race")
        done = int(current.split(b":")[0]) if current is not None else 0
        if done >= rounds:
            break
        if await store.cas_ref("race", current, f"{done + 1}:{me}".encode()):
            won.append(done + 1)
        else:
            lost += 1
    await store.aclose()
    print(json.dumps({"won": won, "lost": lost}), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

NODE_WRITER = """
import asyncio, random, sys
from store.codec import address_of
from store.file import FileStore

async def main(url):
    store = await FileStore.open(url)
    print("ready", flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "put":
            count, seed = int(args[0]), int(args[1])
            rng = random.Random(seed)
            datas = [rng.randbytes(rng.randint(100, 3000)) for _ in range(count)]
            await store.put_many({address_of(d): d for d in datas})
            print("put", flush=True)
        elif command == "close":
            await store.aclose()
            print("closed", flush=True)
        elif command == "idle":
            print("idle", flush=True)
            await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1]))
"""


def seeded_batch(count: int, seed: int) -> dict[bytes, bytes]:
    rng = random.Random(seed)
    return batch(*(rng.randbytes(rng.randint(100, 3000)) for _ in range(count)))


class Child:
    """A python subprocess speaking lines on stdin/stdout, with a timeout on every wait."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, code: str, *args: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await asyncio.wait_for(self.proc.stdin.drain(), CHILD_TIMEOUT)

    async def line(self) -> str:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), CHILD_TIMEOUT)
        if not raw:
            err = await asyncio.wait_for(self.proc.stderr.read(), CHILD_TIMEOUT)
            raise AssertionError(f"child exited early: {err.decode(errors='replace')}")
        return raw.decode().strip()

    async def ask(self, line: str) -> str:
        await self.send(line)
        return await self.line()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()  # SIGKILL
        await asyncio.wait_for(self.proc.wait(), CHILD_TIMEOUT)


@pytest.mark.timeout(120)
async def test_two_processes_racing_cas_ref_each_round_has_one_winner(root: Path) -> None:
    rounds = 150
    await (await FileStore.open(url_of(root))).aclose()
    racers = [await Child.start(CAS_RACER, url_of(root), me, str(rounds)) for me in "AB"]
    try:
        for racer in racers:
            assert await racer.line() == "ready"
        for racer in racers:
            await racer.send("go")
        results = [json.loads(await racer.line()) for racer in racers]
    finally:
        for racer in racers:
            await racer.kill()
    won_a, won_b = (set(result["won"]) for result in results)
    assert len(won_a) == len(results[0]["won"]) and len(won_b) == len(results[1]["won"])
    assert not won_a & won_b, f"rounds won twice: {sorted(won_a & won_b)}"
    assert won_a | won_b == set(range(1, rounds + 1))
    assert results[0]["lost"] + results[1]["lost"] > 0, "the processes never actually raced"
    store = await FileStore.open(url_of(root))
    try:
        winner = "A" if rounds in won_a else "B"
        assert await store.get_ref("race") == f"{rounds}:{winner}".encode()
    finally:
        await store.aclose()


@pytest.mark.timeout(120)
async def test_nodes_written_by_another_process_are_readable(
    root: Path, opened: list[FileStore]
) -> None:
    reader = await open_file(root, opened)  # opened before the other process writes anything
    first, second, third = seeded_batch(20, 1), seeded_batch(20, 2), seeded_batch(5, 3)
    writer = await Child.start(NODE_WRITER, url_of(root))
    try:
        assert await writer.line() == "ready"
        assert await reader.missing(list(first)) == set(first)
        assert await writer.ask("put 20 1") == "put"
        # The writer is alive, its segment unsealed and locked: read it as it grows.
        address, data = next(iter(first.items()))
        assert await reader.get(address) == data
        await assert_holds(reader, first)
        assert await writer.ask("put 20 2") == "put"
        assert await reader.missing(list(second)) == set()
        assert await reader.list_addresses() == set(first) | set(second)
        await assert_holds(reader, second)
        assert indexes(root) == []  # nobody sealed a live writer's segment
        assert await writer.ask("put 5 3") == "put"
        assert await writer.ask("idle") == "idle"
        await writer.kill()  # the segment is left unsealed and unlocked
        await assert_holds(reader, third)
        # The next refresh sees that the writer is gone and seals its segment, once.
        assert await reader.list_addresses() == set(first) | set(second) | set(third)
        assert reader.stats["segments_repaired"] == 1
        assert len(indexes(root)) == 1
    finally:
        await writer.kill()

    closer = await Child.start(NODE_WRITER, url_of(root))
    try:
        assert await closer.line() == "ready"
        assert await closer.ask("put 7 4") == "put"
        assert await closer.ask("close") == "closed"
        await assert_holds(reader, seeded_batch(7, 4))
        assert len(indexes(root)) == 2
    finally:
        await closer.kill()
    await reader.put_many(batch(b"and the reader writes too"))
    await assert_holds(reader, batch(b"and the reader writes too"))


REPAIR_WRITER = """
import asyncio, random, sys
from store.codec import address_of
from store.file import FileStore

async def main(url, batches):
    store = await FileStore.open(url, segment_size=32 * 1024)
    rng = random.Random(12)
    for _ in range(batches):
        datas = [rng.randbytes(rng.randint(100, 300)) for _ in range(2)]
        await store.put_many({address_of(d): d for d in datas})
    print("done", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


@pytest.mark.timeout(120)
async def test_reopen_after_a_kill_scans_only_the_unsealed_tail(root: Path) -> None:
    """Thousands of batches written, then SIGKILL: reopening loads the sealed segments' indexes
    and scans only the one segment the dead writer had not sealed (bounded by segment_size)."""
    batches = 1500
    writer = await Child.start(REPAIR_WRITER, url_of(root), str(batches))
    try:
        assert await writer.line() == "done"
    finally:
        await writer.kill()
    rng = random.Random(12)
    everything: dict[bytes, bytes] = {}
    for _ in range(batches):
        everything |= batch(*(rng.randbytes(rng.randint(100, 300)) for _ in range(2)))
    sealed = len(indexes(root))
    assert sealed == len(segments(root)) - 1 and sealed > 10

    started = time.perf_counter()
    store = await FileStore.open(url_of(root))
    elapsed = time.perf_counter() - started
    try:
        print(f"reopen after kill: {elapsed * 1000:.1f} ms, stats {store.stats}")
        assert store.stats["segments_loaded"] == sealed
        assert store.stats["segments_repaired"] == 1
        assert 0 < store.stats["scanned_bytes"] <= 32 * 1024 + 1024
        await assert_holds(store, everything)
    finally:
        await store.aclose()
    again = await FileStore.open(url_of(root))
    try:
        assert again.stats["scanned_bytes"] == 0
        assert await again.list_addresses() == set(everything)
    finally:
        await again.aclose()
