"""Sync between separate OS processes, each with its own file store (issue 6, "Must show").

* Three peers (a hub that serves, two edges that connect to it through a :class:`FaultProxy`
  each) write concurrently: new entities of their own and cardinality-one writes of the same
  shared entities. Meanwhile the test cuts and restores each edge's link a few times. Once
  they stop writing and the links are up, every peer ends on one commit id (root hash) with
  identical query results and conflict records.
* A peer cloning a database is SIGKILLed while nodes stream to it (a throttling proxy makes
  the clone last long enough to hit its middle): its store reopens valid, holds the nodes and
  complete commits that arrived, and the next sync completes on the same commit id without
  sending again the commits that had arrived whole.

The children are tests/sync/_peer_proc.py; they print results as JSON lines on stdout. Every
wait on a child is bounded (anyio.fail_after) and every child is killed at teardown.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

import replica
from replica.maintenance import _walk, verify
from scenarios._proxy import FaultProxy
from store.codec import decode
from sync.peer import PENDING_REF
from tests.sync._peer_proc import SCHEMA, SHARED, snapshot

pytestmark = pytest.mark.timeout(90)

PEER = str(Path(__file__).with_name("_peer_proc.py"))
ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START = 30.0  # seconds for a child to start (imports, a clone)


class Child:
    """One _peer_proc.py process: lines to its stdin, lines from its stdout."""

    def __init__(self, name: str, proc: Process, stderr: IO[bytes]) -> None:
        self.name = name
        self.proc = proc
        self._stderr = stderr
        assert proc.stdout is not None
        self._out = BufferedByteReceiveStream(proc.stdout)
        self.lines: list[str] = []

    def stderr(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-3000:]

    async def expect(self, prefix: str, seconds: float) -> str:
        """The rest of the next line starting with ``prefix`` (fails on an error or exit)."""
        try:
            with anyio.fail_after(seconds):
                while True:
                    try:
                        raw = await self._out.receive_until(b"\n", 1 << 24)
                    except (anyio.EndOfStream, anyio.IncompleteRead):
                        pytest.fail(f"{self.name} exited before {prefix!r}:\n{self.stderr()}")
                    line = raw.decode()
                    self.lines.append(line)
                    if line.startswith("error"):
                        pytest.fail(f"{self.name}: {line}\n{self.stderr()}")
                    if line.startswith(prefix):
                        return line[len(prefix) :].strip()
        except TimeoutError:
            pytest.fail(f"{self.name}: no {prefix!r} within {seconds} s\n{self.stderr()}")

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send(line.encode() + b"\n")

    async def report(self) -> dict[str, Any]:
        await self.send("report")
        out: dict[str, Any] = json.loads(await self.expect("report ", 30))
        return out

    async def quit(self) -> None:
        await self.send("quit")
        with anyio.fail_after(20):
            code = await self.proc.wait()
        assert code == 0, f"{self.name} exited with {code}:\n{self.stderr()}"


def _log_file(path: Path) -> IO[bytes]:
    return open(path, "w+b")  # closed by child()


@asynccontextmanager
async def child(name: str, tmp_path: Path, *args: str) -> AsyncIterator[Child]:
    with _log_file(tmp_path / f"{name}.stderr") as err:
        proc = await anyio.open_process(
            [sys.executable, PEER, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            yield Child(name, proc, err)
        finally:
            if proc.returncode is None:
                proc.kill()
            with anyio.move_on_after(10, shield=True):
                await proc.wait()
            await proc.aclose()


# -- three peers, concurrent writers, links cut and restored ---------------------------------

WRITES = 45  # transactions per peer


async def test_three_peers_converge_while_links_are_cut_and_restored(tmp_path: Path) -> None:
    seed = int(os.environ.get("REPLICA_SYNC_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    names = ["hub", "e1", "e2"]
    url = {n: (tmp_path / n).as_uri() for n in names}
    async with child("hub", tmp_path, "hub", url["hub"], "hub", str(WRITES)) as hub:
        port = int(await hub.expect("ready ", START))
        async with (
            FaultProxy(port) as p1,
            FaultProxy(port) as p2,
            child("e1", tmp_path, "edge", url["e1"], "e1", str(WRITES), p1.uri) as e1,
            child("e2", tmp_path, "edge", url["e2"], "e2", str(WRITES), p2.uri) as e2,
        ):
            peers = [hub, e1, e2]
            await e1.expect("ready", START)
            await e2.expect("ready", START)
            for peer in peers:
                await peer.send("go")
            # cut and restore the links while all three write (at least 3 cuts, and on until
            # every peer has written all it writes)
            wrote: list[str] = []

            async def collect(peer: Child) -> None:
                wrote.append(await peer.expect("wrote ", 60))

            async with anyio.create_task_group() as tg:
                for peer in peers:
                    tg.start_soon(collect, peer)
                cycles = 0
                while cycles < 3 or len(wrote) < len(peers):
                    await anyio.sleep(rng.uniform(0.1, 0.3))
                    down = rng.choice([[p1], [p2], [p1, p2]])
                    for proxy in down:
                        await proxy.cut()
                    await anyio.sleep(rng.uniform(0.15, 0.4))
                    for proxy in down:
                        await proxy.restore()
                    cycles += 1
            assert wrote == [str(WRITES)] * 3, f"seed {seed}"
            cuts_while_writing = p1.cuts + p2.cuts
            reports = await _settle(peers, seed)
            assert cuts_while_writing >= 3
            assert p1.accepted >= 2 or p2.accepted >= 2  # some edge had to reconnect
            for peer in peers:
                await peer.quit()

    first = reports[0]
    for name, report in zip(names[1:], reports[1:], strict=True):
        assert report["commit"] == first["commit"], f"{name} (seed {seed})"
        assert report["rows"] == first["rows"], f"{name} (seed {seed})"
        assert report["conflicts"] == first["conflicts"], f"{name} (seed {seed})"
    rows = {n: a for n, a in first["rows"]}
    expected = {f"{n}-{i}" for n in names for i in range(WRITES)} | set(SHARED)
    assert set(rows) == expected, f"seed {seed}"
    assert all(rows[f"{n}-{i}"] == i for n in names for i in range(WRITES))
    # the shared entities were written concurrently: card-one conflicts were recorded (the
    # same ones on every peer, checked above)
    assert any(c[1] == "p/age" for c in first["conflicts"]), f"seed {seed}"
    # and the peers re-open valid, on that commit
    for n in names:
        async with replica.connect(url[n]) as conn:
            assert conn.commit_id.hex() == first["commit"]
            await verify(conn)


async def _settle(peers: list[Child], seed: int, seconds: float = 20.0) -> list[dict[str, Any]]:
    """Ask every peer for its state until all are on one commit id."""
    reports: list[dict[str, Any]] = []
    try:
        with anyio.fail_after(seconds):
            while True:
                reports = [await p.report() for p in peers]
                if len({r["commit"] for r in reports}) == 1:
                    # still one commit a moment later: nothing was in flight
                    await anyio.sleep(0.5)
                    again = [await p.report() for p in peers]
                    if [r["commit"] for r in again] == [r["commit"] for r in reports]:
                        return again
                await anyio.sleep(0.2)
    except TimeoutError:
        commits = {p.name: r["commit"][:16] for p, r in zip(peers, reports, strict=True)}
        stats = {p.name: r["stats"] for p, r in zip(peers, reports, strict=True)}
        logs = "\n".join(f"--- {p.name} stderr ---\n{p.stderr()[-1500:]}" for p in peers)
        pytest.fail(f"no convergence in {seconds} s (seed {seed}): {commits} {stats}\n{logs}")


# -- SIGKILL mid-clone ----------------------------------------------------------------------------


async def _build(conn: replica.Connection, commits: int, per: int) -> None:
    for c in range(commits):
        await conn.transact(
            [
                {"p/name": f"big{c}-{i}", "p/age": i, "p/bio": f"entity {c}/{i} " + "z" * 60}
                for i in range(per)
            ]
        )


async def test_peer_killed_mid_clone_reopens_valid_and_resumes(tmp_path: Path) -> None:
    hub_url = (tmp_path / "hub").as_uri()
    edge_url = (tmp_path / "edge").as_uri()
    async with replica.connect(hub_url, create=True, schema=SCHEMA) as hub:
        await _build(hub, 10, 250)
        commits = len(await hub.branch_history())
        # what a full clone costs, measured on a throwaway in-memory replica
        async with (
            replica.connect(f"mem://kill-ref-{random.randrange(1 << 30)}", create=True) as ref,
            replica.serve(hub, HOST, 0) as server,
        ):
            full = await replica.sync_once(ref, f"ws://{HOST}:{server.port}")
        total = full.bytes_received
        await replica.create_database(edge_url)
        async with replica.connect(edge_url) as edge:
            genesis_nodes = len(await edge.store.list_addresses())

        # 1. clone through a proxy that makes it last ~2 s; SIGKILL the cloning peer midway
        rate = total / 2.0
        async with (
            replica.serve(hub, HOST, 0) as server,
            FaultProxy(server.port, rate=rate, chunk=8192) as proxy,
            child("clone-1", tmp_path, "clone", edge_url, proxy.uri) as victim,
        ):
            with anyio.fail_after(30):
                while True:
                    assert victim.proc.returncode is None, victim.stderr()
                    if proxy.bytes_down >= 0.45 * total:
                        break
                    await anyio.sleep(0.01)
            victim.proc.send_signal(signal.SIGKILL)
            with anyio.fail_after(10):
                assert await victim.proc.wait() == -signal.SIGKILL
            assert proxy.bytes_down < 0.9 * total  # it died with nodes still streaming
            assert not any(line.startswith("synced") for line in victim.lines)

        # 2. its store reopens valid: the branch is as it was or complete, and every commit
        # recorded as received is complete (all its nodes present, each matching its hash)
        async with replica.connect(edge_url) as edge:
            await verify(edge)
            stored = await edge.store.list_addresses()
            assert len(stored) > genesis_nodes + 100, "nothing arrived before the kill"
            raw = await edge.store.get_ref(PENDING_REF)
            pending: list[bytes] = decode(raw) if raw is not None else []
            assert pending, "no commit arrived whole before the kill"
            assert len(pending) < commits
            for commit in pending:
                async for _ in _walk(edge.store, edge.database.nodes, [commit], verify=True):
                    pass

        # 3. the next sync completes, on the same commit id, without sending the commits
        # that had arrived whole again
        async with (
            replica.serve(hub, HOST, 0) as server,
            child("clone-2", tmp_path, "clone", edge_url, f"ws://{HOST}:{server.port}") as again,
        ):
            done = json.loads(await again.expect("synced ", 60))
            with anyio.fail_after(20):
                assert await again.proc.wait() == 0, again.stderr()
        assert done["commit"] == hub.commit_id.hex()
        resumed = done["stats"]
        assert resumed["nodes_received"] <= full.nodes_received - len(pending), (
            resumed,
            full,
            len(pending),
        )
        async with replica.connect(edge_url) as edge:
            assert edge.commit_id == hub.commit_id
            await verify(edge)
            assert await snapshot(edge.db) == await snapshot(hub.db)
