"""Sync benchmark (issue 6): replication over loopback websockets between file stores, the
server and the client each in an OS process of its own (so each side's peak RSS is its own).

    .venv/bin/python bench/sync_bench.py [--datoms 100000,1000000] [--commits 1000]
                                         [--repeat 3] [--clone-repeat N] [--quick]
                                         [--timeout S] [--stall S] [--json out.json]
                                         [--profile DIR] [--keep]

This process only orchestrates: it starts children (``--role build|server|client``, the same
file) and reads one JSON line from each. Per database size (``--datoms``, comma separated):

* **build** the server's database in a child: entities of 5 datoms (``p/id``, unique identity
  string; ``p/name``, ``p/email`` strings; ``p/age``, ``p/score`` longs), 10,000 entities (50k
  datoms) per transaction, file store under a temporary directory.
* **(a) clone**: a fresh server child serves it; a client child creates an empty database
  and runs ``replica.connect_peer`` until ``wait_synced()`` returns. Seconds = connect to
  synced, in the client (process start and imports excluded); MB/s = bytes the client received
  / seconds (MB = 10^6 bytes); bytes vs. the server's store directory size; ``ru_maxrss`` of
  each side at the end.
* **(c) no-op**: a client child syncs the clone again (nothing to do).
* **(b) fast-forward**: the server child commits one transaction (one new entity of 5
  attributes: 5 user datoms, plus the ``db/txInstant`` datom every transaction adds), then a
  client child syncs the clone. "raw datoms" = for each datom of that transaction's
  ``tx_data`` (the 6 datoms): 16 (entity id) + ``len(attr_bytes(a))`` +
  ``len(encode_value(v))`` + 28 (stamp, which holds the tx id) + 1 (added flag): the bytes of
  one history key, the smallest thing that carries the datom with its transaction.
* **(d) divergent**: copies of the server's store and of the clone each make ``N`` small
  transactions while disconnected (each: a new entity with ``p/id`` and ``p/name``, and a new
  ``p/age`` for an existing entity; the two sides touch disjoint entities), then sync; for ``N`` = 1, ``--commits``/10 and ``--commits`` (history length). Seconds = client
  connect to synced; both sides' commit ids are compared afterwards. Then, on those diverged
  and merged copies (long history), a fast-forward and a no-op again. A sync that moves no
  byte for ``--stall`` seconds (default 120), or exceeds ``--timeout``, is recorded as "not
  synced" with both sides' statistics and the TCP queues of its connection (``ss -tn``); the
  remaining repeats of that case are skipped.

Bytes are the sum of both directions (websocket payloads, as counted by the protocol objects:
``Statistics.bytes_sent + bytes_received`` of the client; the server's figures mirror them).
Round trips are ``Statistics.round_trips`` of the client: the heads messages it sent in the
session (the first, then one per announcement after its branch moved: docs/protocol.md 4.1 and
4.7), at the end of the session and when ``wait_synced()`` returned. Every session is a fresh
connection, so its figures include hello and heads. Figures are medians over ``--repeat``
(min-max beside them); ``--clone-repeat`` (default: ``--repeat``) sets the repeats of clones of
1M datoms or more. ``--profile DIR`` writes a cProfile of every child.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
PER_TX = 10_000
SCHEMA = [
    {"db/ident": "p/id", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "p/name", "db/valueType": "db.type/string"},
    {"db/ident": "p/email", "db/valueType": "db.type/string"},
    {"db/ident": "p/age", "db/valueType": "db.type/long"},
    {"db/ident": "p/score", "db/valueType": "db.type/long"},
]
DATOMS_PER_ENTITY = 5
#: a side's small transactions touch entities k with k % 2 == side (never the same entity)
SIDES = {"server": 0, "client": 1}


def entity(k: int) -> dict[str, Any]:
    return {
        "p/id": f"p{k:09d}",
        "p/name": f"name-{k % 9973}",
        "p/email": f"user{k}@example.org",
        "p/age": k % 90,
        "p/score": (k * 7919) % 100_000,
    }


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def raw_datom_bytes(datoms: Any) -> int:
    from replica.datom import STAMP_LEN, attr_bytes
    from replica.values import encode_value

    return sum(16 + len(attr_bytes(d.a)) + len(encode_value(d.v)) + STAMP_LEN + 1 for d in datoms)


# -- children ---------------------------------------------------------------------------------


async def child_build(spec: dict[str, Any]) -> None:
    import replica

    datoms, path = spec["datoms"], Path(spec["path"])
    entities = datoms // DATOMS_PER_ENTITY
    t0 = time.perf_counter()
    async with replica.connect(path.as_uri(), create=True, schema=SCHEMA) as conn:
        for start in range(0, entities, PER_TX):
            await conn.transact([entity(k) for k in range(start, min(entities, start + PER_TX))])
        commit = conn.commit_id.hex()
    emit(
        {
            "seconds": time.perf_counter() - t0,
            "datoms": entities * DATOMS_PER_ENTITY,
            "transactions": -(-entities // PER_TX),
            "store_bytes": dir_size(path),
            "commit_id": commit,
            "rss_mb": rss_mb(),
        }
    )


async def small_transactions(conn: Any, n: int, side: str, entities: int, salt: int) -> float:
    """``n`` transactions of one entity each (4 datoms with db/txInstant), disjoint per side."""
    parity = SIDES[side]
    t0 = time.perf_counter()
    for i in range(n):
        new = 10_000_000_000 + salt * 1_000_000 + 2 * i + parity  # a fresh p/id
        old = (2 * i + parity) % max(entities, 2)
        await conn.transact(
            [
                {"p/id": f"p{new:09d}", "p/name": f"{side}-{salt}-{i}"},
                {"p/id": f"p{old:09d}", "p/age": 100 + i % 50 + parity * 50},
            ]
        )
    return time.perf_counter() - t0


async def child_server(spec: dict[str, Any]) -> None:
    import anyio

    import replica
    from sync import serve

    path = Path(spec["path"])
    async with replica.connect(path.as_uri()) as conn:
        tx_seconds = 0.0
        if spec.get("pre_txs"):
            tx_seconds = await small_transactions(
                conn, spec["pre_txs"], "server", spec["entities"], spec.get("salt", 0)
            )
        rss_open = rss_mb()
        async with serve(conn, "127.0.0.1", 0) as server:
            emit(
                {
                    "port": server.port,
                    "commit_id": conn.commit_id.hex(),
                    "rss_mb_before_serving": rss_open,
                    "tx_seconds": tx_seconds,
                }
            )
            serial = 0
            while True:
                line = (await anyio.to_thread.run_sync(sys.stdin.readline)).strip()
                if not line or line == "quit":
                    break
                if line == "stats":
                    await conn.refresh()
                    emit(
                        {
                            "stats": _stats_dict(server.statistics()),
                            "commit_id": conn.commit_id.hex(),
                            "rss_mb": rss_mb(),
                        }
                    )
                elif line == "tx5":
                    await conn.refresh()
                    serial += 1
                    k = 20_000_000_000 + spec.get("salt", 0) * 1_000 + serial
                    report = await conn.transact([entity(k)])
                    emit(
                        {
                            "commit_id": conn.commit_id.hex(),
                            "datoms": len(report.tx_data),
                            "user_datoms": sum(1 for d in report.tx_data if d.a != "db/txInstant"),
                            "raw_bytes": raw_datom_bytes(report.tx_data),
                        }
                    )
                else:
                    emit({"error": f"unknown command {line!r}"})


def _stats_dict(s: Any) -> dict[str, int]:
    return {f: getattr(s, f) for f in s.__dataclass_fields__}


async def child_client(spec: dict[str, Any]) -> None:
    import anyio

    import replica
    from sync import connect_peer

    path = Path(spec["path"])
    async with replica.connect(path.as_uri(), create=spec.get("create", False)) as conn:
        tx_seconds = 0.0
        if spec.get("pre_txs"):
            tx_seconds = await small_transactions(
                conn, spec["pre_txs"], "client", spec["entities"], spec.get("salt", 0)
            )
        before = conn.commit_id.hex()
        rss_open = rss_mb()
        t0 = time.perf_counter()
        stalled: dict[str, Any] = {}
        async with connect_peer(conn, spec["uri"], reconnect=False) as peer:
            with anyio.move_on_after(spec.get("timeout", 600)) as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watchdog, peer, spec, stalled, tg.cancel_scope)
                    await peer.wait_synced()
                    tg.cancel_scope.cancel()
            seconds = time.perf_counter() - t0
            at_synced = _stats_dict(peer.statistics())
            timed_out = scope.cancelled_caught or bool(stalled)
            if not timed_out:
                await anyio.sleep(spec.get("settle", 0.3))  # trailing messages of the session
        stats = _stats_dict(peer.statistics())
        await conn.refresh()
        emit(
            {
                "seconds": seconds,
                "stats": stats,
                "stats_at_synced": at_synced,
                "commit_before": before,
                "commit_id": conn.commit_id.hex(),
                "rss_mb_before_sync": rss_open,
                "rss_mb": rss_mb(),
                "tx_seconds": tx_seconds,
                "timed_out": timed_out,
                "stalled": stalled,
            }
        )
    if spec.get("measure_store"):
        emit({"store_bytes": dir_size(path)})


async def watchdog(peer: Any, spec: dict[str, Any], out: dict[str, Any], scope: Any) -> None:
    """Cancel ``scope`` if the session moves no byte for ``stall`` seconds (a stuck sync),
    recording the TCP queues of the connection (``ss``) as evidence."""
    import anyio

    last: tuple[int, int] | None = None
    since = time.perf_counter()
    while True:
        await anyio.sleep(1)
        st = peer.statistics()
        now = (st.bytes_sent, st.bytes_received)
        if now != last:
            last, since = now, time.perf_counter()
        elif time.perf_counter() - since > spec.get("stall", 120):
            port = spec["uri"].rsplit(":", 1)[1]
            try:
                ss = (await anyio.run_process(["ss", "-tn"], check=False)).stdout.decode()
                lines = [x for x in ss.splitlines() if f":{port}" in x]
            except OSError:
                lines = []
            out.update(
                {"no_progress_s": time.perf_counter() - since, "stats": _stats_dict(st),
                 "tcp_queues": lines, "tasks": task_stacks()}
            )  # fmt: skip
            scope.cancel()
            return


def task_stacks() -> list[str]:
    """Where each asyncio task of this process waits: its chain of awaited coroutines."""
    import asyncio

    out = []
    for task in asyncio.all_tasks():
        where: list[str] = []
        coro: Any = task.get_coro()
        while coro is not None and len(where) < 40:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
            if frame is not None:
                name = Path(frame.f_code.co_filename).name
                where.append(f"{name}:{frame.f_code.co_name}:{frame.f_lineno}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
        out.append(" > ".join(where))
    return sorted(out)


def run_child(role: str, spec: dict[str, Any], profile: str | None) -> None:
    import anyio

    fn: Callable[[dict[str, Any]], Any] = {
        "build": child_build,
        "server": child_server,
        "client": child_client,
    }[role]
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        try:
            anyio.run(fn, spec)
        finally:
            prof.disable()
            prof.dump_stats(profile)
    else:
        anyio.run(fn, spec)


# -- orchestration ----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.nprof = 0

    def _cmd(self, role: str, spec: dict[str, Any], label: str) -> list[str]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--role", role]
        cmd += ["--spec", json.dumps(spec)]
        if self.args.profile:
            self.nprof += 1
            Path(self.args.profile).mkdir(parents=True, exist_ok=True)
            cmd += ["--profile-out", str(Path(self.args.profile) / f"{label}-{role}.prof")]
        return cmd

    def run(
        self, role: str, spec: dict[str, Any], label: str, may_time_out: bool = False
    ) -> list[dict[str, Any]]:
        if role == "client":
            spec = {**spec, "timeout": self.args.timeout, "stall": self.args.stall}
        out = subprocess.run(self._cmd(role, spec, label), capture_output=True, text=True, cwd=ROOT)
        if out.stderr.strip():
            print(out.stderr, file=sys.stderr)
        if out.returncode:
            raise RuntimeError(f"{role} child {label} failed (exit {out.returncode}): {spec}")
        results = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
        if results and results[0].get("timed_out") and not may_time_out:
            raise RuntimeError(f"{label}: not synced within {self.args.timeout} s")
        return results

    def start_server(self, spec: dict[str, Any], label: str) -> Server:
        proc = subprocess.Popen(
            self._cmd("server", spec, label),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        return Server(proc)


class Server:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.info = self._read()
        self.uri = f"ws://127.0.0.1:{self.info['port']}"

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server child exited ({self.proc.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, command: str) -> dict[str, Any]:
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(command + "\n")
        stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def code_version() -> dict[str, str]:
    """The commit and the uncommitted changes of the code under test (children import it)."""

    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", *a], capture_output=True, text=True, cwd=ROOT, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "?"

    dirs = ["sync", "replica", "store", "query"]
    diff = git("diff", "HEAD", "--", *dirs)
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": git("status", "--short", "--", *dirs).replace("\n", "; "),
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:12],
    }


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def total_bytes(stats: dict[str, int]) -> int:
    return stats["bytes_sent"] + stats["bytes_received"]


def session_entry(
    runs: list[dict[str, Any]], extra: dict[str, list[float]] | None = None
) -> dict[str, Any]:
    """Medians of client-side session figures over repeats."""
    entry: dict[str, Any] = {
        "repeats": len(runs),
        "seconds": summary([r["seconds"] for r in runs]),
        "bytes": summary([total_bytes(r["stats"]) for r in runs]),
        "bytes_sent": summary([r["stats"]["bytes_sent"] for r in runs]),
        "bytes_received": summary([r["stats"]["bytes_received"] for r in runs]),
        "messages": summary(
            [r["stats"]["messages_sent"] + r["stats"]["messages_received"] for r in runs]
        ),
        "nodes_received": summary([r["stats"]["nodes_received"] for r in runs]),
        "nodes_sent": summary([r["stats"]["nodes_sent"] for r in runs]),
        "round_trips": summary([r["stats"]["round_trips"] for r in runs]),
        "round_trips_at_synced": summary([r["stats_at_synced"]["round_trips"] for r in runs]),
        "client_rss_mb": summary([r["rss_mb"] for r in runs]),
        "runs": [
            {
                "seconds": r["seconds"],
                "bytes": total_bytes(r["stats"]),
                "round_trips": r["stats"]["round_trips"],
                "rss_mb": r["rss_mb"],
            }
            for r in runs
        ],
    }
    for k, v in (extra or {}).items():
        entry[k] = summary(v)
    return entry


def log(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def bench_size(b: Bench, datoms: int, commit_counts: list[int]) -> dict[str, Any]:
    args = b.args
    report: dict[str, Any] = {}
    base = b.tmp / f"base-{datoms}"
    built = b.run("build", {"datoms": datoms, "path": str(base)}, f"build-{datoms}")[0]
    report["build"] = built
    entities = built["datoms"] // DATOMS_PER_ENTITY
    log(f"[{datoms}] built", json.dumps(built))

    # (a) clone from empty, a fresh server process per repeat
    clone_runs: list[dict[str, Any]] = []
    server_rss: list[float] = []
    server_rss_open: list[float] = []
    clone = b.tmp / f"clone-{datoms}"
    reps = args.clone_repeat if args.clone_repeat and datoms >= 1_000_000 else args.repeat
    for r in range(reps):
        target = b.tmp / f"clone-{datoms}-{r}"
        srv = b.start_server({"path": str(base)}, f"clone-{datoms}-{r}")
        try:
            out = b.run(
                "client",
                {"path": str(target), "create": True, "uri": srv.uri, "measure_store": True},
                f"clone-{datoms}-{r}",
            )
            st = srv.ask("stats")
        finally:
            srv.stop()
        run = out[0]
        run["store_bytes"] = out[1]["store_bytes"]
        run["equal"] = run["commit_id"] == st["commit_id"] == built["commit_id"]
        server_rss.append(st["rss_mb"])
        server_rss_open.append(srv.info["rss_mb_before_serving"])
        clone_runs.append(run)
        log(f"[{datoms}] clone {r}", run["seconds"], total_bytes(run["stats"]), run["rss_mb"],
            st["rss_mb"], run["equal"])  # fmt: skip
        if r == reps - 1:
            target.rename(clone)
        else:
            shutil.rmtree(target)
    entry = session_entry(
        clone_runs,
        {
            "mb_per_s": [r["stats"]["bytes_received"] / r["seconds"] / 1e6 for r in clone_runs],
            "server_rss_mb": server_rss,
            "server_rss_mb_before_serving": server_rss_open,
            "client_rss_mb_before_sync": [r["rss_mb_before_sync"] for r in clone_runs],
        },
    )
    entry["server_store_bytes"] = built["store_bytes"]
    entry["client_store_bytes"] = clone_runs[-1]["store_bytes"]
    entry["bytes_over_store"] = entry["bytes"]["median"] / built["store_bytes"]
    entry["all_equal"] = all(r["equal"] for r in clone_runs)
    report["clone"] = entry

    # (c) no-op and (b) fast-forward, one server process, a client process per session
    srv = b.start_server({"path": str(base)}, f"ff-{datoms}")
    noop_runs: list[dict[str, Any]] = []
    ff_runs: list[dict[str, Any]] = []
    raw: list[float] = []
    try:
        for r in range(args.repeat):
            res = b.run("client", {"path": str(clone), "uri": srv.uri}, f"noop-{datoms}-{r}")[0]
            noop_runs.append(res)
            tx = srv.ask("tx5")
            res = b.run("client", {"path": str(clone), "uri": srv.uri}, f"ff-{datoms}-{r}")[0]
            res["equal"] = res["commit_id"] == tx["commit_id"]
            res["raw"] = tx
            raw.append(tx["raw_bytes"])
            ff_runs.append(res)
            log(f"[{datoms}] noop/ff {r}", total_bytes(noop_runs[-1]["stats"]),
                total_bytes(res["stats"]), res["stats"]["round_trips"], tx)  # fmt: skip
        st = srv.ask("stats")
    finally:
        srv.stop()
    report["noop"] = session_entry(noop_runs)
    report["noop"]["all_unchanged"] = all(r["commit_before"] == r["commit_id"] for r in noop_runs)
    ff = session_entry(ff_runs, {"raw_datom_bytes": raw})
    ff["datoms"] = ff_runs[-1]["raw"]["datoms"]
    ff["user_datoms"] = ff_runs[-1]["raw"]["user_datoms"]
    ff["bytes_over_raw"] = ff["bytes"]["median"] / ff["raw_datom_bytes"]["median"]
    ff["all_equal"] = all(r["equal"] for r in ff_runs)
    report["fast_forward"] = ff
    report["server_after_noop_ff"] = st

    # (d) divergent: copies of both sides, N small transactions each while disconnected
    for n in commit_counts:
        runs: list[dict[str, Any]] = []
        after_ff: list[dict[str, Any]] = []
        after_noop: list[dict[str, Any]] = []
        equal: list[bool] = []
        srv_rss: list[float] = []
        srv_bytes: list[float] = []
        timeouts: list[dict[str, Any]] = []
        for r in range(args.repeat):
            sdir, cdir = b.tmp / f"div-s-{datoms}-{n}", b.tmp / f"div-c-{datoms}-{n}"
            shutil.copytree(base, sdir)
            shutil.copytree(clone, cdir)
            label = f"div-{datoms}-{n}-{r}"
            srv = b.start_server(
                {"path": str(sdir), "pre_txs": n, "entities": entities, "salt": r}, label
            )
            try:
                res = b.run(
                    "client",
                    {"path": str(cdir), "uri": srv.uri, "pre_txs": n, "entities": entities,
                     "salt": r},
                    label,
                    may_time_out=True,
                )[0]  # fmt: skip
                st = srv.ask("stats")
                if res["timed_out"]:
                    timeouts.append(
                        {"seconds": res["seconds"], "client": res["stats"], "server": st["stats"],
                         "client_rss_mb": res["rss_mb"], "server_rss_mb": st["rss_mb"],
                         "stalled": res["stalled"]}
                    )  # fmt: skip
                    log(f"[{datoms}] diverged {n} {r}: NOT SYNCED after", res["seconds"], "s",
                        json.dumps(timeouts[-1]))  # fmt: skip
                    break
                res["equal"] = res["commit_id"] == st["commit_id"]
                srv_rss.append(st["rss_mb"])
                srv_bytes.append(total_bytes(st["stats"]))
                runs.append(res)
                equal.append(res["equal"])
                # then a fast-forward and a no-op into this long history
                tx = srv.ask("tx5")
                res2 = b.run("client", {"path": str(cdir), "uri": srv.uri}, label + "-ff")[0]
                res2["equal"] = res2["commit_id"] == tx["commit_id"]
                after_ff.append(res2)
                res3 = b.run("client", {"path": str(cdir), "uri": srv.uri}, label + "-noop")[0]
                after_noop.append(res3)
            finally:
                srv.stop()
                shutil.rmtree(sdir, ignore_errors=True)
                shutil.rmtree(cdir, ignore_errors=True)
            log(f"[{datoms}] diverged {n} {r}", res["seconds"], total_bytes(res["stats"]),
                res["stats"]["round_trips"], res["equal"], "| ff",
                total_bytes(res2["stats"]), res2["stats"]["round_trips"], "| noop",
                total_bytes(res3["stats"]), res3["stats"]["round_trips"])  # fmt: skip
        if timeouts:  # a sync that does not converge: no medians, what happened instead
            report[f"diverged_{n}"] = {"commits_each_side": n, "timeouts": timeouts}
            continue
        d = session_entry(runs, {"server_rss_mb": srv_rss, "server_bytes": srv_bytes})
        d["commits_each_side"] = n
        d["all_equal"] = all(equal)
        d["tx_seconds_client"] = summary([r["tx_seconds"] for r in runs])
        report[f"diverged_{n}"] = d
        f = session_entry(after_ff)
        f["all_equal"] = all(r["equal"] for r in after_ff)
        report[f"fast_forward_after_diverged_{n}"] = f
        report[f"noop_after_diverged_{n}"] = session_entry(after_noop)
    return report


def fmt_bytes(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    if n >= 1e4:
        return f"{n / 1e3:.1f} kB"
    return f"{n:.0f} B"


def med(entry: dict[str, Any], key: str) -> float:
    return float(entry[key]["median"])


def rng(entry: dict[str, Any], key: str, f: Callable[[float], str]) -> str:
    s = entry[key]
    if s["min"] == s["max"]:
        return f(s["median"])
    return f"{f(s['median'])} ({f(s['min'])}-{f(s['max'])})"


def sec(x: float) -> str:
    return f"{x:.2f} s"


def mbytes(x: float) -> str:
    return f"{x:.0f} MB"


def num(x: float) -> str:
    return f"{x:g}"


def rate(x: float) -> str:
    return f"{x:.1f}"


def bytes_trips(e: dict[str, Any]) -> str:
    return f"{rng(e, 'bytes', fmt_bytes)}, {rng(e, 'round_trips', num)}"


def table(report: dict[str, Any]) -> str:
    sizes: dict[str, dict[str, Any]] = report["sizes"]
    rows = ["| figure | " + " | ".join(f"{int(k):,} datoms" for k in sizes) + " |"]
    rows.append("|---|" + "---|" * len(sizes))

    def row(name: str, f: Callable[[dict[str, Any]], str]) -> None:
        rows.append(f"| {name} | " + " | ".join(f(s) for s in sizes.values()) + " |")

    def clone(s: dict[str, Any]) -> dict[str, Any]:
        c: dict[str, Any] = s["clone"]
        return c

    row("server store on disk", lambda s: fmt_bytes(s["build"]["store_bytes"]))
    row("clone: repeats", lambda s: str(clone(s)["repeats"]))
    row("clone: seconds", lambda s: rng(clone(s), "seconds", sec))
    row("clone: MB/s (received / s)", lambda s: rng(clone(s), "mb_per_s", rate))
    row("clone: bytes (both ways)", lambda s: fmt_bytes(med(clone(s), "bytes")))
    row("clone: bytes / server store size", lambda s: f"{clone(s)['bytes_over_store']:.2f}")
    row("clone: nodes received", lambda s: num(med(clone(s), "nodes_received")))
    row(
        "clone: peak RSS client / server",
        lambda s: (
            f"{rng(clone(s), 'client_rss_mb', mbytes)} / {rng(clone(s), 'server_rss_mb', mbytes)}"
        ),
    )
    row(
        "clone: RSS before sync client / server",
        lambda s: (
            f"{med(clone(s), 'client_rss_mb_before_sync'):.0f} / "
            f"{med(clone(s), 'server_rss_mb_before_serving'):.0f} MB"
        ),
    )
    row(
        "clone: round trips; at synced; ids equal",
        lambda s: (
            f"{rng(clone(s), 'round_trips', num)}; "
            f"{rng(clone(s), 'round_trips_at_synced', num)}; {clone(s)['all_equal']}"
        ),
    )
    row("no-op: bytes, round trips", lambda s: bytes_trips(s["noop"]))
    row("no-op: seconds", lambda s: rng(s["noop"], "seconds", sec))
    row("ff 1 commit: bytes, round trips", lambda s: bytes_trips(s["fast_forward"]))
    row(
        "ff: raw datom bytes; bytes / raw",
        lambda s: (
            f"{med(s['fast_forward'], 'raw_datom_bytes'):.0f} B "
            f"({s['fast_forward']['datoms']} datoms); {s['fast_forward']['bytes_over_raw']:.0f}x"
        ),
    )
    row(
        "ff: nodes received; seconds",
        lambda s: (
            f"{med(s['fast_forward'], 'nodes_received'):g}; "
            f"{rng(s['fast_forward'], 'seconds', sec)}"
        ),
    )
    for n in report["commit_counts"]:
        diverged_rows(row, n)
    return "\n".join(rows)


def diverged_rows(row: Callable[[str, Callable[[dict[str, Any]], str]], None], n: int) -> None:
    d, f, z = f"diverged_{n}", f"fast_forward_after_diverged_{n}", f"noop_after_diverged_{n}"

    def failed(s: dict[str, Any]) -> str | None:
        t = s[d].get("timeouts")
        if not t:
            return None
        c = t[0]["client"]
        return (
            f"**not synced in {t[0]['seconds']:.0f} s** ({fmt_bytes(total_bytes(c))} moved, "
            f"{c['nodes_sent']:,} / {c['nodes_received']:,} nodes)"
        )

    def ok(fn: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
        return lambda s: failed(s) or fn(s)

    def after(fn: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
        return lambda s: "-" if failed(s) else fn(s)

    row(f"{n} commits apart: bytes, round trips", ok(lambda s: bytes_trips(s[d])))
    row(
        f"{n} apart: seconds to converge; ids equal",
        after(lambda s: f"{rng(s[d], 'seconds', sec)}; {s[d]['all_equal']}"),
    )
    row(
        f"{n} apart: nodes sent / received (client)",
        after(lambda s: f"{med(s[d], 'nodes_sent'):g} / {med(s[d], 'nodes_received'):g}"),
    )
    row(
        f"{n} apart: peak RSS client / server",
        after(
            lambda s: f"{rng(s[d], 'client_rss_mb', mbytes)} / {rng(s[d], 'server_rss_mb', mbytes)}"
        ),
    )
    row("then ff: bytes, round trips", after(lambda s: bytes_trips(s[f])))
    row("then no-op: bytes, round trips", after(lambda s: bytes_trips(s[z])))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=None, help="3 (--quick: 1)")
    parser.add_argument(
        "--clone-repeat", type=int, default=0, help="repeats of clones of >= 1M datoms"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    parser.add_argument("--datoms", default=None, help="sizes, comma separated")
    parser.add_argument("--commits", type=int, default=None, help="divergence per side")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a sync may take")
    parser.add_argument(
        "--stall", type=float, default=120, help="seconds without a byte moved: stuck"
    )
    parser.add_argument("--json", default=None)
    parser.add_argument("--profile", default=None, help="cProfile each child into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the temporary stores")
    parser.add_argument("--role", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        run_child(args.role, json.loads(args.spec), args.profile_out)
        return
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    default_sizes = "10000,20000" if args.quick else "100000,1000000"
    sizes = [int(x) for x in (args.datoms or default_sizes).split(",")]
    commits = args.commits or (40 if args.quick else 1000)
    counts = sorted({1, max(1, commits // 10), commits})
    report: dict[str, Any] = {"repeat": args.repeat, "commit_counts": counts, "sizes": {}}
    report["code_before"] = code_version()
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="replica-syncbench-", dir="/tmp"))
    try:
        b = Bench(args, tmp)
        for n in sizes:
            report["sizes"][str(n)] = bench_size(b, n, counts)
    finally:
        if args.keep:
            log("stores kept in", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report["wall_seconds"] = time.perf_counter() - t0
    report["code_after"] = code_version()
    if report["code_after"] != report["code_before"]:
        log("WARNING: the code changed during the run", report["code_before"], report["code_after"])
    report["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(table(report))
    print(f"\nwall {report['wall_seconds']:.0f} s; repeats {args.repeat}"
          f" (clones of >= 1M datoms: {args.clone_repeat or args.repeat})")  # fmt: skip


if __name__ == "__main__":
    main()
