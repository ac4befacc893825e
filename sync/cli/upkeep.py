"""The maintenance verbs: export, import, gc, verify (replica/maintenance.py), and demo.

The maintenance calls take no progress callback: export, gc and verify read and write only
through ``conn.store``, so their progress is counted by routing that through a
:class:`~sync.cli.output.CountingStore` for the call; import takes the store itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import replica
from replica import maintenance
from sync.cli.inputs import UsageError, file_path, require_db
from sync.cli.output import (
    CountingStore,
    Progress,
    counting_store,
    echo,
    emit_json,
    human_bytes,
    progress_enabled,
    with_progress,
)
from sync.cli.verbs import EXIT_OK, connected


def _file_size(path: str) -> int:
    return Path(path).stat().st_size


def _store_bytes(url: str) -> int | None:
    """The bytes a file store holds (an estimate of an export's size, for its ETA)."""
    path = file_path(url)
    if path is None:
        return None
    try:
        return sum(p.stat().st_size for p in (path / "nodes").glob("*.seg"))
    except OSError:
        return None


async def cmd_export(args: argparse.Namespace) -> int:
    async with connected(args) as conn:
        total = len(await conn.store.list_addresses())
        progress = Progress(
            "export",
            enabled=progress_enabled(args),
            total=total,
            total_bytes=_store_bytes(conn.url),
        )
        with counting_store(conn) as counting:
            count = await with_progress(
                progress, counting.counts, maintenance.export_db(conn, args.file)
            )
        nbytes = counting.bytes
    size = _file_size(args.file)
    seconds = progress.elapsed()
    if args.json:
        emit_json({"file": args.file, "nodes": count, "bytes": size, "seconds": round(seconds, 3)})
    else:
        echo(
            f"exported {count:,} nodes ({human_bytes(nbytes)}) to {args.file} "
            f"({human_bytes(size)}) in {seconds:.1f} s"
        )
    return EXIT_OK


async def cmd_import(args: argparse.Namespace) -> int:
    url = require_db(args)
    try:
        size = _file_size(args.file)
    except FileNotFoundError:
        raise UsageError(f"no export file {args.file!r}") from None
    store = await replica.open_store(url)
    counting = CountingStore(store)
    progress = Progress("import", enabled=progress_enabled(args), total_bytes=size)
    try:
        count = await with_progress(
            progress,
            counting.counts,
            maintenance.import_db(counting, args.file, batch_bytes=1 << 20),
        )
    finally:
        await store.aclose()
    seconds = progress.elapsed()
    if args.json:
        emit_json(
            {
                "file": args.file,
                "db": url,
                "nodes": count,
                "bytes": counting.bytes,
                "seconds": round(seconds, 3),
            }
        )
    else:
        echo(
            f"imported {count:,} nodes ({human_bytes(counting.bytes)}) from {args.file} "
            f"into {url} in {seconds:.1f} s"
        )
    return EXIT_OK


async def cmd_gc(args: argparse.Namespace) -> int:
    if args.grace < 0:
        raise UsageError("--grace must be >= 0 seconds")
    async with connected(args) as conn:
        total = len(await conn.store.list_addresses())
        progress = Progress("gc", enabled=progress_enabled(args), total=total)
        with counting_store(conn) as counting:
            report = await with_progress(
                progress, counting.counts, maintenance.gc(conn, grace_seconds=args.grace)
            )
    if args.json:
        emit_json(report)
    else:
        echo(
            f"gc: {report.reachable:,} nodes reachable, {report.deleted:,} deleted, "
            f"{report.kept_in_grace:,} kept (written during the {args.grace:g} s grace period)"
        )
    return EXIT_OK


async def cmd_verify(args: argparse.Namespace) -> int:
    async with connected(args) as conn:
        names = await conn.branches() if args.all else [args.branch]
        total = len(await conn.store.list_addresses())
        results = []
        for name in names:
            progress = Progress(f"verify {name}", enabled=progress_enabled(args), total=total)
            with counting_store(conn) as counting:
                report = await with_progress(
                    progress, counting.counts, maintenance.verify(conn, name)
                )
            results.append((name, report, progress.elapsed()))
    if args.json:
        emit_json({name: report for name, report, _ in results})
        return EXIT_OK
    for name, report, seconds in results:
        echo(
            f"ok: branch {name}: {report.commits:,} commits, {report.nodes:,} nodes, "
            f"{human_bytes(report.bytes)} verified in {seconds:.1f} s"
        )
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace) -> int:
    from sync.demo import run_demo

    await run_demo(args.dir, readings=args.readings)
    return EXIT_OK
