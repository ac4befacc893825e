"""Zeros written ahead of a busy writer's last batch (store/file.py, PREFILL_AFTER), with
the batch that grows the file: batches land inside them, readers and repairs stop at them
as at any torn tail, sealing cuts them off, and a writer killed with SIGKILL (real, in
another process) loses no acknowledged commit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from store.codec import address_of
from store.errors import CorruptNode
from store.file import PREFILL_AFTER, FileStore


def node(i: int) -> tuple[bytes, bytes]:
    data = (b"prefill node %d " % i).ljust(300, b"z")
    return address_of(data), data


def segment_files(root: Path) -> list[Path]:
    return sorted((root / "nodes").glob("*.seg"))


def idx_end(root: Path, segment: Path) -> int:
    raw = (root / "nodes" / (segment.name[:-4] + ".idx")).read_bytes()
    return int.from_bytes(raw[8:16], "big")


async def commit(store: FileStore, i: int) -> None:
    address, data = node(i)
    store.stage({address: data})
    expected = None if i == 0 else b"head %d" % (i - 1)
    assert await store.cas_ref("main", expected, b"head %d" % i)


async def test_a_busy_writer_writes_zeros_ahead_and_seals_without_them(tmp_path: Path) -> None:
    store = await FileStore.open(tmp_path.as_uri())
    try:
        n = PREFILL_AFTER + 40
        fsyncs = store.stats["fsyncs"]
        for i in range(n):
            await commit(store, i)
        writer = store._core.writer
        assert writer is not None
        assert store.stats["prefill_bytes"] > 0
        # the zeros rode with the batches that grew the file: one sync per commit, no more
        assert store.stats["fsyncs"] - fsyncs <= n + 1  # (+1: the nodes/ directory, once)
        assert writer.filled > writer.end
        (segment,) = segment_files(tmp_path)
        assert segment.stat().st_size > writer.end
        # another object reads the live segment, zeros and all
        other = await FileStore.open(tmp_path.as_uri())
        try:
            assert await other.get_ref("main") == b"head %d" % (n - 1)
            assert await other.missing([node(i)[0] for i in range(n)]) == set()
            assert other.stats["torn_tails"] == 0
            # its scan stopped at the zeros instead of reading them all
            assert other.stats["scanned_bytes"] < segment.stat().st_size - writer.end
        finally:
            await other.aclose()
    finally:
        await store.aclose()
    (segment,) = segment_files(tmp_path)
    assert segment.stat().st_size == idx_end(tmp_path, segment)  # sealed: zeros cut off
    again = await FileStore.open(tmp_path.as_uri())
    try:
        assert await again.get_ref("main") == b"head %d" % (n - 1)
        for i in range(n):
            assert await again.get(node(i)[0]) == node(i)[1]
        assert again.stats["scanned_bytes"] == 0
    finally:
        await again.aclose()


async def test_rotation_while_prefilling_keeps_everything(tmp_path: Path) -> None:
    store = await FileStore.open(tmp_path.as_uri(), segment_size=8 * 1024)
    try:
        for i in range(PREFILL_AFTER * 8):
            await commit(store, i)
        assert store.stats["segments_sealed"] >= 3
        assert store.stats["prefill_bytes"] > 0
    finally:
        await store.aclose()
    root = tmp_path
    for segment in segment_files(root):
        assert segment.stat().st_size == idx_end(root, segment)
    again = await FileStore.open(root.as_uri())
    try:
        assert await again.get_ref("main") == b"head %d" % (PREFILL_AFTER * 8 - 1)
        assert await again.missing([node(i)[0] for i in range(PREFILL_AFTER * 8)]) == set()
    finally:
        await again.aclose()


ROOT = Path(__file__).resolve().parents[2]
WRITER = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, sys.argv[2])
    from tests.store.test_file_prefill import node
    from store.file import FileStore

    async def main(url):
        store = await FileStore.open(url)
        head = await store.get_ref("main")
        i = 0 if head is None else int(head.split()[1]) + 1
        print("ready", flush=True)
        while True:
            address, data = node(i)
            store.stage({address: data})
            assert await store.cas_ref("main", head, b"head %d" % i)
            head = b"head %d" % i
            print(i, flush=True)
            i += 1

    asyncio.run(main(sys.argv[1]))
    """
)


def run_and_kill(url: str, acks: int) -> list[int]:
    """Run WRITER until it has acknowledged ``acks`` commits, then SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, str(ROOT)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        seen = [int(proc.stdout.readline()) for _ in range(acks)]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    # what it acknowledged before the kill landed, though not yet read here
    seen += [int(line) for line in proc.stdout.read().split()]
    return seen


@pytest.mark.timeout(120)
@pytest.mark.parametrize("acks", [PREFILL_AFTER + 5, PREFILL_AFTER + 300])
async def test_sigkill_during_prefilled_commits_loses_no_acknowledged_commit(
    tmp_path: Path, acks: int
) -> None:
    url = (tmp_path / "db").as_uri()
    for round_ in range(3):
        seen = await anyio.to_thread.run_sync(run_and_kill, url, acks)
        store = await FileStore.open(url)
        try:
            head = await store.get_ref("main")
            assert head is not None
            last = int(head.split()[1])
            assert last in (seen[-1], seen[-1] + 1), f"round {round_}: {head!r} vs {seen[-1]}"
            assert await store.missing([node(i)[0] for i in range(last + 1)]) == set()
        finally:
            await store.aclose()


def big_batch(seed: int, sizes: list[int]) -> dict[bytes, bytes]:
    rng = random.Random(seed)
    out = {}
    for size in sizes:
        data = rng.randbytes(size)
        out[address_of(data)] = data
    return out


@pytest.mark.parametrize("victim_batch", [0, 1, 2, 3])
async def test_a_scan_in_pieces_finds_what_one_read_would(tmp_path: Path, victim_batch: int) -> None:
    """Scans read a segment in pieces (64 KiB, then doubling). Batches that straddle piece
    ends, one larger than a piece, and damage whose verdict (damage, not a torn tail)
    depends on the batch after it, across a piece end, come out as from one read."""
    sizes = [[9000] * 5, [30000, 25000], [150000], [20000] * 4, [7000] * 3]
    batches = [big_batch(i, s) for i, s in enumerate(sizes)]
    store = await FileStore.open(tmp_path.as_uri())
    try:
        for b in batches:
            await store.put_many(b)
    finally:
        await store.aclose()
    for idx in (tmp_path / "nodes").glob("*.idx"):
        idx.unlink()  # unsealed and unlocked: the next open scans it from its start
    (segment,) = segment_files(tmp_path)
    raw = bytearray(segment.read_bytes())
    victim, data = next(iter(batches[victim_batch].items()))
    at = raw.index(data) + len(data) // 2
    raw[at] ^= 0xFF  # fails its batch's checksum; valid batches follow it
    segment.write_bytes(bytes(raw))
    again = await FileStore.open(tmp_path.as_uri())
    try:
        assert again.stats["segments_repaired"] == 1
        with pytest.raises(CorruptNode):
            await again.get(victim)
        for b in batches:
            for address, data in b.items():
                if address != victim:
                    assert await again.get(address) == data
    finally:
        await again.aclose()


FULL_DISK = textwrap.dedent(
    """
    import asyncio, resource, signal, sys
    sys.path.insert(0, sys.argv[2])
    from tests.store.test_file_prefill import node
    from store.file import PREFILL_AFTER, FileStore

    async def main(url):
        a = await FileStore.open(url)
        b = await FileStore.open(url)  # another object, reading a's live segment
        head = None
        for i in range(PREFILL_AFTER - 1):
            address, data = node(i)
            a.stage({address: data})
            assert await a.cas_ref("main", head, b"head %d" % i)
            head = b"head %d" % i
        # a nearly full disk: room for the next commit (~400 bytes), not for 1 MiB of zeros
        # (a file size limit; SIGXFSZ ignored, so the write fails with EFBIG instead)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        size = a._core.writer.end
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 64 * 1024, resource.RLIM_INFINITY))
        for i in range(PREFILL_AFTER - 1, PREFILL_AFTER + 40):
            address, data = node(i)
            a.stage({address: data})
            assert await a.cas_ref("main", head, b"head %d" % i), i
            head = b"head %d" % i
            assert await b.get_ref("main") == head
        print(a.stats["prefill_bytes"], a._core.writer.prefill_off, flush=True)
        await a.aclose()
        await b.aclose()

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.timeout(120)
async def test_zeros_that_do_not_fit_are_skipped_and_the_commit_goes_on(tmp_path: Path) -> None:
    url = (tmp_path / "db").as_uri()
    done = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-c", FULL_DISK, url, str(ROOT)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
    )
    assert done.returncode == 0, done.stderr
    prefill_bytes, off = done.stdout.split()
    assert (int(prefill_bytes), off) == (0, "True")  # tried once, then no more
    store = await FileStore.open(url)
    try:
        assert await store.get_ref("main") == b"head %d" % (PREFILL_AFTER + 39)
        assert await store.missing([node(i)[0] for i in range(PREFILL_AFTER + 40)]) == set()
    finally:
        await store.aclose()
    for segment in segment_files(tmp_path / "db"):
        assert segment.stat().st_size == idx_end(tmp_path / "db", segment)  # no zeros left
