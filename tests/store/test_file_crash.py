"""Crash safety of the file store under SIGKILL (DESIGN.md section 3, "Durability").

A writer subprocess (_file_crash_writer.py) loops: put a batch of random nodes plus a manifest
node naming them, acknowledge, move the ref ``head`` to the manifest, acknowledge. The test kills
it with SIGKILL at random moments (sometimes before it finished opening, i.e. during the repair
of the previous crash), then reopens the store in this process and checks:

* every acknowledged batch is fully present and every node reads back as bytes that hash to
  its address (the test hashes them itself too: nothing returns wrong bytes);
* ``head`` is the last acknowledged ref value or the manifest acknowledged right after it
  (the kill may land between the ref update and its acknowledgement), and the manifest it
  names is complete;
* reopening scanned at most one segment's worth of bytes (the repair is bounded).

Set REPLICA_CRASH_SEED to replay a run; the seed is printed (and shown on failure).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from store.codec import ADDRESS_LENGTH, address_of
from store.file import FileStore

WRITER = str(Path(__file__).with_name("_file_crash_writer.py"))
ROUNDS = 40
WAIT = 60.0  # timeout of every wait on the child
SEGMENT_SIZES = (48 * 1024, 512 * 1024, 32 * 1024 * 1024)
MAX_BATCH = 41 * (4096 + 64) + 64  # the writer's largest put_many, with record overheads
BIG_NODE = 8 * 1024 * 1024  # the largest node of a writer started with BIG=1


async def check_manifest(store: FileStore, manifest: bytes, context: str) -> None:
    data = await store.get(manifest)
    assert address_of(data) == manifest, f"{context}: manifest {manifest.hex()} wrong bytes"
    assert data and len(data) % ADDRESS_LENGTH == 0, f"{context}: bad manifest {manifest.hex()}"
    addresses = [data[i : i + ADDRESS_LENGTH] for i in range(0, len(data), ADDRESS_LENGTH)]
    assert await store.missing(addresses) == set(), f"{context}: nodes of {manifest.hex()} lost"
    got = await store.get_many(addresses)
    assert set(got) == set(addresses)
    for address, node in got.items():
        assert address_of(node) == address, f"{context}: node {address.hex()} wrong bytes"


async def run_writer(
    url: str, seed: int, segment_size: int, big: bool, rng: random.Random, context: str
) -> list[tuple[str, bytes]]:
    """Start the writer, SIGKILL it at a random moment; its acknowledgements, in order."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, WRITER, url, str(seed), str(segment_size), "1" if big else "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    head = b""
    try:
        if not big and rng.random() < 0.15:
            # Anywhere from start-up through opening (the repair of the last crash) onwards.
            await asyncio.sleep(rng.uniform(0.0, 0.5))
        else:
            head = await asyncio.wait_for(proc.stdout.readline(), WAIT)
            assert head == b"ready\n", f"{context}: writer said {head!r}"
            # A big first batch takes a while to hash and write: aim inside its write.
            await asyncio.sleep(rng.uniform(0.0, 0.06 if big else 0.25))
        proc.send_signal(signal.SIGKILL)
        out, err = await asyncio.wait_for(proc.communicate(), WAIT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), WAIT)
    assert proc.returncode == -signal.SIGKILL, (
        f"{context}: the writer exited by itself ({proc.returncode}): {err.decode(errors='replace')}"
    )
    acks: list[tuple[str, bytes]] = []
    text = (head + out).decode()
    for line in text.split("\n")[:-1]:  # the last piece is an unterminated line, or empty
        kind, _, value = line.partition(" ")
        assert kind in ("ready", "B", "R"), f"{context}: writer said {line!r}"
        if kind != "ready":
            acks.append((kind, bytes.fromhex(value)))
    return acks


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    seed = int(os.environ.get("REPLICA_CRASH_SEED", random.randrange(2**32)))
    print(f"crash test seed {seed} (REPLICA_CRASH_SEED={seed} replays it)")
    rng = random.Random(seed)
    url = "file://" + str(tmp_path / "store")
    acknowledged: list[bytes] = []  # every manifest whose batch was acknowledged
    head: bytes | None = None  # the ref as verified after the previous kill
    repairs = torn = scanned_max = 0

    for round_ in range(ROUNDS):
        context = f"seed {seed} round {round_}"
        segment_size = rng.choice(SEGMENT_SIZES)
        big = rng.random() < 0.3
        acks = await run_writer(url, rng.randrange(2**32), segment_size, big, rng, context)
        kinds = [kind for kind, _ in acks]
        assert kinds == ["B", "R"] * (len(kinds) // 2) + ["B"] * (len(kinds) % 2), context
        new = [manifest for kind, manifest in acks if kind == "B"]
        acknowledged.extend(new)
        # The ref is the last acknowledged value, or the next manifest if the kill landed
        # after the swap but before its acknowledgement.
        updates = [manifest for kind, manifest in acks if kind == "R"]
        allowed = {updates[-1] if updates else head}
        if len(new) > len(updates):
            allowed.add(new[-1])

        store = await FileStore.open(url)
        try:
            stats = dict(store.stats)
            repairs += stats["segments_repaired"]
            torn += stats["torn_tails"]
            scanned_max = max(scanned_max, stats["scanned_bytes"])
            bound = segment_size + MAX_BATCH + (BIG_NODE if big else 0)
            assert stats["scanned_bytes"] <= bound, f"{context}: {stats}"
            current = await store.get_ref("head")
            assert current in allowed, f"{context}: head {current!r} not in {allowed}"
            assert await store.list_refs() == ({} if current is None else {"head": current})
            older = acknowledged[: -len(new)] if new else acknowledged
            sample = rng.sample(older, min(8, len(older)))
            for manifest in [*new, *sample, *([current] if current else [])]:
                await check_manifest(store, manifest, context)
            head = current
        finally:
            await store.aclose()

    print(
        f"{ROUNDS} kills, {len(acknowledged)} acknowledged batches, {repairs} repairs, "
        f"{torn} torn tails, at most {scanned_max} bytes scanned by a reopen"
    )
    assert len(acknowledged) > ROUNDS, f"seed {seed}: the writer hardly wrote anything"
    assert repairs > 0, f"seed {seed}: no kill ever left a segment to repair"
    store = await FileStore.open(url)
    try:
        for manifest in acknowledged:
            await check_manifest(store, manifest, f"seed {seed} final")
        assert await store.get_ref("head") == head
    finally:
        await store.aclose()
