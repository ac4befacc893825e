"""Write benchmarks of the database (issue 3), with DataScript-JS and sqlite3 in the same run.

    .venv/bin/python bench/db_bench.py [--repeat 3] [--quick] [--json out.json]
    .venv/bin/python bench/db_bench.py --phase big-load --datoms 5000000   # memory bound

Reference: DataScript 1.8.1 on Node (../shared/bench/datascript/bench.js, installed with
``npm install --no-save --prefix bench/.datascript datascript@1.8.1``) on the same people20k
data. Figures are medians of ``--repeat`` runs with min/max. Benchmarks that would take minutes
in full (100k single-datom transactions, 20k retractions) run on a prefix and are reported per
transaction next to DataScript's per-transaction figure; the sizes are in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import replica

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "people20k.json"
SHARED = ROOT.parent / "shared" / "bench"
A5 = ["name", "last-name", "sex", "age", "salary"]
SCHEMA = [
    {
        "db/ident": a,
        "db/valueType": "db.type/string" if a in ("name", "last-name", "sex") else "db.type/long",
        "db/cardinality": "db.cardinality/one",
    }
    for a in A5
]


def people() -> list[dict[str, Any]]:
    if not DATA.exists():
        DATA.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, str(SHARED / "gen_people.py"), "--out", str(DATA)], check=True
        )
    result: list[dict[str, Any]] = json.loads(DATA.read_text())["people"]
    return result


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def rss_mb() -> float:
    """Peak resident set size of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float | None:
    """Resident set size now (MB), where /proc tells it."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_datascript(names: list[str], quick: bool) -> dict[str, Any]:
    mods = ROOT / "bench" / ".datascript" / "node_modules"
    if not (mods / "datascript").exists():
        subprocess.run(
            ["npm", "install", "--no-save", "--prefix", str(mods.parent), "datascript@1.8.1"],
            check=True,
            capture_output=True,
        )
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = dict(os.environ, PEOPLE_JSON=str(DATA), NODE_PATH=str(mods), OUT=out.name)
        if quick:
            env["QUICK"] = "1"
        subprocess.run(
            ["node", str(SHARED / "datascript" / "bench.js"), *names],
            check=True,
            env=env,
            capture_output=True,
            timeout=1800,
        )
        result: dict[str, Any] = json.loads(Path(out.name).read_text())["benches"]
        return result


def sqlite_single_row_tx(path: Path, n: int) -> float:
    """Seconds for n single-row INSERT transactions with synchronous=FULL (WAL off)."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("CREATE TABLE datoms (e INTEGER, a TEXT, v, tx INTEGER)")
    t0 = time.perf_counter()
    for i in range(n):
        con.execute("BEGIN")
        con.execute("INSERT INTO datoms VALUES (?, ?, ?, ?)", (i, "age", i % 100, i))
        con.execute("COMMIT")
    took = time.perf_counter() - t0
    con.close()
    return took


async def ours(url: str, ppl: list[dict[str, Any]], which: str, n: int) -> tuple[float, float]:
    """One run of a benchmark on a fresh database; (seconds, transactions)."""
    ents = [{"db/id": p["id"], **{a: p[a] for a in A5}} for p in ppl]
    async with replica.connect(url, create=True, schema=SCHEMA) as conn:
        if which == "add-all":
            t0 = time.perf_counter()
            await conn.transact(ents)
            return time.perf_counter() - t0, 1
        if which == "add-5":
            t0 = time.perf_counter()
            for e in ents[:n]:
                await conn.transact([e])
            return time.perf_counter() - t0, n
        if which == "add-1":
            ops = [["db/add", p["id"], a, p[a]] for p in ppl for a in A5][:n]
            t0 = time.perf_counter()
            for op in ops:
                await conn.transact([op])
            return time.perf_counter() - t0, n
        if which == "retract-5":
            await conn.transact(ents)
            t0 = time.perf_counter()
            for p in ppl[:n]:
                await conn.transact([["db/retractEntity", p["id"]]])
            return time.perf_counter() - t0, n
    raise ValueError(which)


def fresh_url(kind: str, tmp: Path, i: int) -> str:
    if kind == "mem":
        return f"mem://bench-{os.getpid()}-{i}-{time.monotonic_ns()}"
    return (tmp / f"db-{i}-{time.monotonic_ns()}").as_uri()


async def durable(tmp: Path, repeat: int, n: int) -> dict[str, Any]:
    """Durable single-datom transactions on the file store vs sqlite3 synchronous=FULL, run
    alternately in the same process. Sequential: each transact is awaited before the next
    (as sqlite's commits are), so this is latency-bound: one fsync and all the CPU of one
    transaction per transaction, nothing overlapped."""
    report: dict[str, Any] = {}
    ours_s, sq_s = [], []
    for i in range(repeat):
        url = fresh_url("file", tmp, -1 - i)
        async with replica.connect(url, create=True, schema=SCHEMA) as conn:
            stats: dict[str, int] = getattr(conn.store, "stats", {})
            fsyncs = stats.get("fsyncs", 0)
            t0 = time.perf_counter()
            for k in range(n):
                await conn.transact([["db/add", k + 1, "age", k % 100]])
            ours_s.append(time.perf_counter() - t0)
            report["fsyncs_per_single_datom_tx"] = (stats.get("fsyncs", 0) - fsyncs) / n
            report["file_store_bytes_after_single_tx"] = dir_size(Path(url[7:]))
        sq_s.append(sqlite_single_row_tx(tmp / f"sq-{i}-{time.monotonic_ns()}.db", n))
        print(f"durable run {i + 1}: replica {n / ours_s[-1]:.0f} tx/s, sqlite3 "
              f"{n / sq_s[-1]:.0f} tx/s", file=sys.stderr, flush=True)  # fmt: skip
    report["durable_single_datom_tx"] = {
        "transactions": n,
        "replica_tx_per_s": summary([n / s for s in ours_s]),
        "sqlite_full_tx_per_s": summary([n / s for s in sq_s]),
        "ratio_replica_over_sqlite": statistics.median(sq_s) / statistics.median(ours_s),
    }
    return report


async def durable_only(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="replica-dbbench-") as tmpdir:
        report = await durable(Path(tmpdir), args.repeat, 500 if args.quick else 2000)
    report["repeat"] = args.repeat
    return report


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    ppl = people()
    report: dict[str, Any] = {"repeat": args.repeat}
    sizes = {
        "add-all": 20000,
        "add-5": 2000 if args.quick else 20000,
        "add-1": 2000 if args.quick else 10000,
        "retract-5": 1000 if args.quick else 5000,
    }
    report["sizes"] = sizes
    if not args.no_reference:
        ds = run_datascript(list(sizes), args.quick)
        report["datascript_ms"] = {k: v["median_ms"] for k, v in ds.items()}
    ref_total = {"add-all": 1, "add-5": 20000, "add-1": 100000, "retract-5": 20000}
    with tempfile.TemporaryDirectory(prefix="replica-dbbench-") as tmpdir:
        tmp = Path(tmpdir)
        i = 0
        for kind in ("mem", "file"):
            for name, n in sizes.items():
                samples: list[float] = []
                txs = 1.0
                for _ in range(args.repeat):
                    i += 1
                    url = fresh_url(kind, tmp, i)
                    took, txs = await ours(url, ppl, name, n)
                    samples.append(took)
                    if kind == "mem":
                        # a named memory store lives as long as the process: drop it, or
                        # every later run (the file store's too) works beside gigabytes
                        # of dead databases that each full garbage collection walks
                        await replica.delete_database(url)
                entry: dict[str, Any] = {"seconds": summary(samples), "transactions": txs}
                per_tx_ms = statistics.median(samples) / txs * 1000
                entry["per_tx_ms"] = per_tx_ms
                entry["tx_per_s"] = 1000 / per_tx_ms
                if "datascript_ms" in report and name in report["datascript_ms"]:
                    ds_per_tx = report["datascript_ms"][name] / ref_total[name]
                    entry["datascript_per_tx_ms"] = ds_per_tx
                    entry["ratio_vs_datascript"] = per_tx_ms / ds_per_tx
                report[f"{name}/{kind}"] = entry
                print(name, kind, json.dumps(entry), file=sys.stderr, flush=True)
        report.update(await durable(tmp, args.repeat, 500 if args.quick else 2000))
        # store size of db100k on disk
        i += 1
        url = fresh_url("file", tmp, i)
        await ours(url, ppl, "add-all", 1)
        report["db100k_file_store_bytes"] = dir_size(Path(url[7:]))
    report["peak_rss_mb"] = rss_mb()  # of the whole process, every run of every benchmark
    return report


async def big_load(datoms: int, cache_mb: int) -> dict[str, Any]:
    """Load ``datoms`` datoms (entities of 5 attributes, in batches) into a file store with a
    bounded node cache; report peak and current RSS, and the file store's in-memory index
    size, at checkpoints, to show that memory does not grow with the database."""
    entities = datoms // 5
    checkpoints: list[dict[str, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="replica-bigload-") as tmp:
        url = Path(tmp, "db").as_uri()
        async with replica.connect(
            url, create=True, schema=SCHEMA, cache_bytes=cache_mb << 20
        ) as conn:
            batch = 10_000
            t0, c0 = time.perf_counter(), time.process_time()

            def checkpoint(done: int) -> None:
                index = getattr(conn.store, "index_bytes", None)
                checkpoints.append(
                    {
                        "datoms": done,
                        "peak_rss_mb": rss_mb(),
                        "rss_mb": current_rss_mb(),
                        "store_index_mb": None if index is None else index / (1 << 20),
                        "seconds": time.perf_counter() - t0,
                        "cpu_seconds": time.process_time() - c0,
                    }
                )
                print(json.dumps(checkpoints[-1]), file=sys.stderr, flush=True)

            checkpoint(0)  # connected, schema transacted, nothing loaded
            for start in range(0, entities, batch):
                ents = [
                    {"db/id": k + 1, "name": f"n{k}", "last-name": f"l{k % 977}",
                     "sex": "f" if k % 2 else "m", "age": k % 100, "salary": k % 100_000}
                    for k in range(start, min(entities, start + batch))
                ]  # fmt: skip
                await conn.transact(ents)
                done = (start + len(ents)) * 5
                if done % 500_000 == 0 or done == datoms:
                    checkpoint(done)
            size = dir_size(Path(tmp, "db"))
    return {"datoms": datoms, "cache_mb": cache_mb, "checkpoints": checkpoints, "store_bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--no-reference", action="store_true", help="skip DataScript")
    parser.add_argument("--phase", default="writes", choices=["writes", "durable", "big-load"])
    parser.add_argument("--datoms", type=int, default=5_000_000)
    parser.add_argument("--cache-mb", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.phase == "big-load":
        report = anyio.run(big_load, args.datoms, args.cache_mb)
    elif args.phase == "durable":  # only the durable single-datom rows (replica and sqlite3)
        report = anyio.run(durable_only, args)
    else:
        report = anyio.run(main_async, args)
    report["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
