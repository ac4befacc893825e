"""Prolly tree and node store benchmark (issue 2). Not a test: prints figures, asserts nothing.

    .venv/bin/python bench/tree_bench.py [--items 1000000] [--repeat 5] [--json out.json]

Each figure is the median of ``--repeat`` runs (min and max beside it). Builds run in a fresh
subprocess each so that their peak RSS is their own. Targets (issue 2, this 2-core machine):
1M build in memory < 10 s with RSS < 500 MB; warm point lookup < 20 us; range scan > 1M
entries/s; 100-key diff < 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from store.base import open_store
from store.nodes import Nodes
from store.tree import Tree, diff, new_nodes


def key(i: int) -> bytes:
    return b"k%09d" % i


def value(i: int) -> bytes:
    return b"v%07d-%04d" % (i, i % 9973)


def items(n: int) -> Any:
    return ((key(i), value(i)) for i in range(n))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


async def build_once(url: str, n: int) -> dict[str, float]:
    """Runs in a subprocess: one build, its time, peak RSS, node count and fsyncs."""
    store = await open_store(url)
    nodes = Nodes(store)
    t0 = time.perf_counter()
    tree = await Tree.build(nodes, items(n))
    took = time.perf_counter() - t0
    stats = getattr(store, "stats", {})
    out = {
        "seconds": took,
        "rss_mb": rss_mb(),
        "nodes": float(nodes.stats.writes),
        "height": float(await tree.height()),
        "fsyncs": float(stats.get("fsyncs", 0)),
    }
    await store.aclose()
    return out


def run_build_subprocess(url: str, n: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--phase", "build", "--url", url, "--items", str(n)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t0)
    return samples


async def in_process(n: int, repeat: int, report: dict[str, Any]) -> None:
    rng = random.Random(1)
    store = await open_store("mem://")
    nodes = Nodes(store, cache_bytes=1 << 30)
    tree = await Tree.build(nodes, items(n))

    probe = [key(rng.randrange(n)) for _ in range(20_000)]
    for k in probe:  # warm the cache
        await tree.get(k)

    async def lookups() -> None:
        for k in probe:
            await tree.get(k)

    s = await timed(lookups, repeat)
    report["warm_point_lookup_us"] = summary([x / len(probe) * 1e6 for x in s])

    async def scan_all() -> None:
        count = 0
        async for batch in tree.scan():
            count += len(batch)
        assert count == n

    s = await timed(scan_all, repeat)
    report["range_scan_entries_per_s"] = summary([n / x for x in s])

    async def scan_back() -> None:
        count = 0
        async for batch in tree.scan(reverse=True):
            count += len(batch)
        assert count == n

    s = await timed(scan_back, repeat)
    report["reverse_scan_entries_per_s"] = summary([n / x for x in s])

    edit_samples, written = [], []
    for r in range(repeat):
        edits = [(key(rng.randrange(n)), b"edited-%d" % r) for _ in range(1000)]
        nodes.stats.reset()
        t0 = time.perf_counter()
        await tree.edit(edits)
        edit_samples.append(time.perf_counter() - t0)
        written.append(nodes.stats.writes)
    report["edit_1000_keys_ms"] = summary([x * 1e3 for x in edit_samples])
    report["edit_1000_keys_nodes_written"] = summary([float(w) for w in written])

    other = await tree.edit([(key(rng.randrange(n)), b"changed") for _ in range(100)])
    reads: list[float] = []

    async def diff_100() -> None:
        nodes.stats.reset()
        changes = 0
        async for batch in diff(tree, other):
            changes += len(batch)
        assert changes == 100, changes
        reads.append(nodes.stats.reads)

    s = await timed(diff_100, repeat)
    report["diff_100_keys_ms"] = summary([x * 1e3 for x in s])
    report["diff_100_keys_nodes_read"] = summary(reads)
    nn = await new_nodes(tree, other)
    report["new_nodes_for_100_keys"] = len(nn)
    report["tree_nodes_total"] = len(await tree.reachable())
    await store.aclose()


async def file_batches(repeat: int, report: dict[str, Any]) -> None:
    """Durable batch writes on the file store: 100 nodes of ~4 KiB per batch."""
    with tempfile.TemporaryDirectory(prefix="replica-bench-") as tmp:
        store = await open_store(Path(tmp, "s").as_uri())
        rng = random.Random(2)
        from store.codec import address_of

        per_batch, batches = 100, 50
        samples, fsyncs = [], []
        for _ in range(repeat):
            payload = [
                {address_of(d): d for d in (rng.randbytes(4096) for _ in range(per_batch))}
                for _ in range(batches)
            ]
            before = dict(getattr(store, "stats", {}))
            t0 = time.perf_counter()
            for batch in payload:
                await store.put_many(batch)
            samples.append(time.perf_counter() - t0)
            after = getattr(store, "stats", {})
            fsyncs.append((after.get("fsyncs", 0) - before.get("fsyncs", 0)) / batches)
        report["file_durable_batches_per_s"] = summary([batches / x for x in samples])
        report["file_durable_nodes_per_s"] = summary([batches * per_batch / x for x in samples])
        report["file_fsyncs_per_batch"] = summary(fsyncs)
        await store.aclose()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"items": args.items, "repeat": args.repeat}
    mem = [run_build_subprocess("mem://", args.items) for _ in range(args.repeat)]
    report["build_memory_s"] = summary([r["seconds"] for r in mem])
    report["build_memory_peak_rss_mb"] = summary([r["rss_mb"] for r in mem])
    report["tree_height"] = mem[0]["height"]
    with tempfile.TemporaryDirectory(prefix="replica-bench-") as tmp:
        files = []
        for i in range(args.repeat):
            url = Path(tmp, f"b{i}").as_uri()
            files.append(run_build_subprocess(url, args.items))
    report["build_file_s"] = summary([r["seconds"] for r in files])
    report["build_file_peak_rss_mb"] = summary([r["rss_mb"] for r in files])
    report["build_file_fsyncs"] = summary([r["fsyncs"] for r in files])
    await in_process(args.items, args.repeat, report)
    await file_batches(args.repeat, report)
    report["bench_process_peak_rss_mb"] = rss_mb()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument("--phase", default="all", choices=["all", "build"])
    parser.add_argument("--url", default="mem://")
    args = parser.parse_args()
    if args.phase == "build":
        print(json.dumps(anyio.run(build_once, args.url, args.items)))
        return
    report = anyio.run(main_async, args)
    report["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
