"""Acknowledged transactions survive SIGKILL of the transacting process (file store).

A writer subprocess (_tx_writer.py, mode ``loop``) connects to a ``file://`` database and
transacts ``{"w/n": i, "w/v": value_of(i)}`` for i = 0, 1, 2, ... (continuing from the largest
``w/n`` in the database), printing ``ack i <commit> <parent>`` after each ``transact`` returns.
The test SIGKILLs it at random moments: mostly a random number of acknowledgements plus a few
milliseconds into its loop (inside some transaction: computing, writing nodes, moving the
branch, printing), sometimes before it has even finished starting (importing, opening the
store, repairing the segment of the previous kill). After every kill it reopens the database
with ``replica.connect`` and checks:

* the ``w/n`` present are exactly 0..k-1, with k the number acknowledged so far, or k + 1 (the
  transaction in flight may have moved the branch before its ack was printed): no acknowledged
  transaction lost, no gap, no duplicate; every ``w/v`` is the one written with its ``w/n``;
* the branch head is a complete commit: ``maintenance.verify`` re-reads every node of every
  commit of the branch and checks its hash;
* the branch is one linear chain genesis <- schema tx <- tx of w/n 0 <- w/n 1 <- ...: every
  commit has exactly one parent, ``branch_history`` lists that chain, the commit each ack
  named sits at its place in the chain, and the commit at the place of w/n = i is the
  transaction whose datoms assert it.

Set REPLICA_CRASH_SEED to replay a run's kill schedule; the seed is printed (and in every
assertion message).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

import replica
from replica.maintenance import verify
from store.nodes import TreeConfig
from tests.replica._tx_writer import SCHEMA, value_of

WRITER = str(Path(__file__).with_name("_tx_writer.py"))
ROUNDS = 30
WAIT = 60.0  # timeout of every wait on the child
MAX_ACKS = 15  # a kill in the loop comes after 0..MAX_ACKS acknowledgements (and a bit)
# Nodes a quarter of the default size: each commit writes several per index, trees grow levels.
TREES = TreeConfig(target=1024, min_size=256, max_size=4096)

Ack = tuple[int, str, str]  # w/n, commit id hex, parent commit id hex


async def run_writer(
    url: str, rng: random.Random, context: str, stats: Counter[str], startup: list[float]
) -> tuple[int | None, list[Ack]]:
    """Start the writer, SIGKILL it at a random moment; the number it said it starts at (None
    if killed before) and its acknowledgements, in order. ``startup`` collects how long the
    writer took to say ``ready`` (early kills aim inside that time, whatever the machine)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, WRITER, url, "loop",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = b""
    try:
        if rng.random() < 0.15:
            # Anywhere in start-up: imports, opening the store (the repair of the last kill),
            # reading where to continue, the first transactions.
            stats["early kills"] += 1
            await asyncio.sleep(rng.uniform(0.0, 1.2 * max(startup, default=0.3)))
        else:
            stats["loop kills"] += 1
            for _ in range(1 + rng.randint(0, MAX_ACKS)):  # "ready", then acks
                line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
                seen += line
                if not line.endswith(b"\n") or line.startswith(b"error"):
                    break  # it died (the assertions below say why)
                if line.startswith(b"ready"):
                    startup.append(loop.time() - started)
            await asyncio.sleep(rng.uniform(0.0, 0.012))
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        out, err = await asyncio.wait_for(proc.communicate(), WAIT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), WAIT)
    text = (seen + out).decode()
    assert proc.returncode == -signal.SIGKILL, (
        f"{context}: the writer exited by itself ({proc.returncode}):\n{text}\n"
        f"{err.decode(errors='replace')}"
    )
    ready: int | None = None
    acks: list[Ack] = []
    for line in text.split("\n")[:-1]:  # the last piece is an unterminated line, or empty
        kind, *fields = line.split(" ")
        if kind == "ready" and len(fields) == 1 and ready is None and not acks:
            ready = int(fields[0])
        elif kind == "ack" and len(fields) == 3 and ready is not None:
            acks.append((int(fields[0]), fields[1], fields[2]))
        else:
            raise AssertionError(f"{context}: the writer said {line!r}")
    return ready, acks


async def linear_chain(conn: replica.Connection, context: str) -> list[bytes]:
    """The commits of the branch from its head back to genesis, following parents; fails
    unless every commit but the genesis one has exactly one parent."""
    chain = [conn.commit_id]
    while True:
        parents = await conn.parent_commit_ids(chain[-1])
        if not parents:
            return chain
        assert len(parents) == 1, f"{context}: commit {chain[-1].hex()} has parents {parents}"
        chain.append(parents[0])


async def check_database(
    url: str, acked: int, commits: dict[int, str], context: str, stats: Counter[str]
) -> int:
    """Check everything the module docstring lists; return how many ``w/n`` are present."""
    async with replica.connect(url) as conn:
        for key in ("segments_repaired", "torn_tails"):
            stats[key] += conn.store.stats[key]  # type: ignore[attr-defined]
        db = conn.db
        numbers = {d.e: (d.v, d.tx) async for d in db.datoms("aevt", "w/n")}
        present = sorted(n for n, _ in numbers.values())
        count = len(present)
        expected = list(range(count))
        assert present == expected, (
            f"{context}: w/n present are not 0..{count - 1}: missing "
            f"{sorted(set(expected) - set(present))[:10]}, unexpected "
            f"{sorted(set(present) - set(expected))[:10]} (duplicates: {count - len(set(present))})"
        )
        assert count in (acked, acked + 1), (
            f"{context}: {acked} transactions acknowledged, {count} present"
        )
        stats["unacknowledged tx landed"] += count - acked
        values = {d.e: d.v async for d in db.datoms("aevt", "w/v")}
        assert values == {e: value_of(n) for e, (n, _) in numbers.items()}, f"{context}: w/v"
        for i in {0, acked - 1, count - 1} & set(range(count)):  # through the avet index, too
            found = await db.datoms("avet", "w/n", i)
            assert [d.v for d in found] == [i], f"{context}: avet w/n {i}: {found}"

        report = await verify(conn)
        assert report.commits == count + 2, f"{context}: {report} for {count} transactions"
        chain = await linear_chain(conn, context)
        assert len(chain) == count + 2, f"{context}: {len(chain)} commits for {count} txs"
        assert await conn.branch_history() == chain, f"{context}: branch_history order"
        oldest_first = chain[::-1]  # genesis, the schema transaction, w/n 0, w/n 1, ...
        for i, commit in commits.items():
            assert oldest_first[i + 2].hex() == commit, f"{context}: ack of w/n {i} named {commit}"
        tx_of = {n: tx for n, tx in numbers.values()}
        for n in range(count):
            commit = await conn.database.commit(oldest_first[n + 2])
            assert commit.tx == tx_of[n], f"{context}: the commit at the place of w/n {n}"
        return count


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_acknowledged_transactions_survive_sigkill(tmp_path: Path) -> None:
    seed = int(os.environ.get("REPLICA_CRASH_SEED", random.randrange(2**32)))
    print(f"crash test seed {seed} (REPLICA_CRASH_SEED={seed} replays the kill schedule)")
    rng = random.Random(seed)
    url = (tmp_path / "db").as_uri()
    await replica.create_database(url, schema=SCHEMA, tree_config=TREES)
    commits: dict[int, str] = {}  # w/n -> the commit id its ack named
    present = 0  # w/n 0..present-1 are in the database (checked after the previous kill)
    stats: Counter[str] = Counter()
    startup: list[float] = []

    for round_ in range(ROUNDS):
        context = f"seed {seed} round {round_}"
        ready, acks = await run_writer(url, rng, context, stats, startup)
        if ready is not None:
            assert ready == present, f"{context}: writer continues at {ready}, not {present}"
        numbers = [i for i, _, _ in acks]
        assert numbers == list(range(present, present + len(numbers))), f"{context}: {numbers}"
        for i, commit, parent in acks:
            assert parent == commits.get(i - 1, parent), f"{context}: parent of w/n {i}"
            commits[i] = commit
        stats["acks"] += len(acks)
        present = await check_database(url, present + len(acks), commits, context, stats)

    print(f"seed {seed}: {ROUNDS} kills, {present} transactions in the end, {dict(stats)}")
    assert stats["acks"] > ROUNDS, f"seed {seed}: the writer hardly transacted: {dict(stats)}"
    assert stats["segments_repaired"] > 0, f"seed {seed}: no kill left a segment to repair"
