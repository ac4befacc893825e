"""The verbs that read and write one database: init, transact, query, pull, log, show, diff,
branch, merge, conflicts."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import replica
from query.ast import FindAggregate, FindColl, FindPull, FindScalar, FindTuple, FindVar, SrcVar
from query.parser import parse_query
from query.types import Keyword
from replica.datom import Datom
from replica.db import DB
from sync.cli.graph import graph_lines
from sync.cli.inputs import (
    Refs,
    UsageError,
    check_exists,
    edn_arg,
    entity_arg,
    parse_data,
    query_text,
    read_text,
    require_db,
)
from sync.cli.output import (
    Progress,
    cell,
    echo,
    echo_err,
    emit_json,
    iso,
    progress_enabled,
    rows_note,
    short,
    sort_key,
    table,
    time_text,
)

EXIT_OK = 0
PROG = "replica"


class StrictConflicts(Exception):
    """A strict merge found conflicts (exit code 3); they are already reported."""


@contextlib.asynccontextmanager
async def connected(
    args: argparse.Namespace, branch: str | None = None
) -> AsyncIterator[replica.Connection]:
    url = require_db(args)
    check_exists(url)
    async with replica.connect(url, branch=branch or args.branch) as conn:
        yield conn


async def view(refs: Refs, db: DB, args: argparse.Namespace) -> DB:
    if getattr(args, "as_of", None):
        db = db.as_of(await refs.time_point(args.as_of))
    if getattr(args, "since", None):
        db = db.since(await refs.time_point(args.since))
    if getattr(args, "history", False):
        db = db.history
    return db


async def datom_counts(conn: replica.Connection, db: DB) -> tuple[int, int]:
    parents = db.parent_commit_ids
    if not parents:
        return 0, 0
    d = await replica.diff(await conn.commit_as_db(parents[0]), db)
    return len(d.added), len(d.retracted)


async def decorations(conn: replica.Connection) -> dict[bytes, list[str]]:
    marks: dict[bytes, list[str]] = {}
    for name, heads in sorted((await conn.branch_heads()).items()):
        for h in heads:
            marks.setdefault(h, []).append(name)
    return marks


def datom_rows(added: Iterable[Datom], retracted: Iterable[Datom]) -> list[Datom]:
    both = [*retracted, *added]
    both.sort(key=lambda d: (d.e, d.a, d.added, sort_key(d.v)))
    return both


def datom_table(datoms: Sequence[Datom]) -> str:
    rows = [("+" if d.added else "-", d.e, d.a, d.v, d.tx) for d in datoms]
    return table(["op", "e", "a", "v", "tx"], rows, numeric=[False, True, False, False, True])


def conflict_rows(conflicts: Sequence[replica.Conflict]) -> list[tuple[Any, ...]]:
    return [
        (c.tx, c.entity, c.attribute, c.base, c.ours, c.theirs, c.winner, c.rule) for c in conflicts
    ]


def conflict_table(conflicts: Sequence[replica.Conflict]) -> str:
    headers = ["merge tx", "entity", "attribute", "base", "ours", "theirs", "winner", "rule"]
    return table(headers, conflict_rows(conflicts), numeric=[True, True] + [False] * 6)


async def cmd_init(args: argparse.Namespace) -> int:
    url = require_db(args)
    schema = None
    if args.schema:
        text, name = read_text(args.schema, "schema")
        schema = parse_data(text, name, args.format)
    flexibility = "read" if args.schema_on_read else "write"
    await replica.create_database(url, schema=schema, schema_flexibility=flexibility)
    async with replica.connect(url) as conn:
        attrs = len(conn.schema.user_attributes())
        commit = conn.commit_id
    if args.json:
        emit_json({"db": url, "branch": "main", "commit": commit, "schema_attributes": attrs})
    else:
        echo(
            f"initialized database at {url}: branch main, {attrs} schema attribute(s), "
            f"commit {short(commit)}"
        )
    return EXIT_OK


def _batches(data: Any, size: int) -> list[Any]:
    if not isinstance(data, list | tuple):
        raise replica.TxDataError("tx data must be a vector (list) of operations or maps", data)
    return [list(data[i : i + size]) for i in range(0, len(data), size)] or [[]]


async def cmd_transact(args: argparse.Namespace) -> int:
    if args.data is not None and args.file not in (None, "-"):
        raise UsageError("give tx data as FILE or as --data TEXT, not both")
    if args.data is not None:
        text, name = args.data, "--data"
    else:
        text, name = read_text(args.file or "-", "tx data")
    data = parse_data(text, name, args.format)
    meta = edn_arg(args.meta, "--meta") if args.meta else None
    if meta is not None and not isinstance(meta, dict):
        raise UsageError("--meta takes an EDN map, e.g. '{:tx/source \"import\"}'")
    async with connected(args) as conn:
        if args.batch:
            return await _transact_batches(args, conn, data, meta)
        report = await conn.transact(data, meta)
    tempids = {k: v for k, v in report.tempids.items() if k != "db/current-tx"}
    commit = report.db_after.commit_id
    if args.json:
        emit_json(
            {
                "tx": report.tx,
                "commit": commit,
                "branch": args.branch,
                "datoms": len(report.tx_data),
                "tempids": {str(k): v for k, v in tempids.items()},
            }
        )
        return EXIT_OK
    echo(
        f"tx {report.tx} on branch {args.branch}: commit {short(commit)}, "
        f"{len(report.tx_data)} datoms"
    )
    if tempids:
        echo()
        rows = sorted(((cell(k), v) for k, v in tempids.items()), key=lambda r: r[0])
        echo(table(["tempid", "entity"], rows, numeric=[False, True]))
    return EXIT_OK


async def _transact_batches(
    args: argparse.Namespace, conn: replica.Connection, data: Any, meta: Any
) -> int:
    batches = _batches(data, args.batch)
    items = sum(len(b) for b in batches)
    progress = Progress("transact", enabled=progress_enabled(args), unit="items", total=items)
    done = datoms = 0
    for batch in batches:
        report = await conn.transact(batch, meta)
        done += len(batch)
        datoms += len(report.tx_data)
        progress.update(done)
    progress.close()
    seconds = progress.elapsed()
    commit = conn.commit_id
    if args.json:
        emit_json(
            {
                "transactions": len(batches),
                "items": items,
                "datoms": datoms,
                "commit": commit,
                "branch": args.branch,
                "seconds": round(seconds, 3),
            }
        )
    else:
        echo(
            f"{len(batches)} transaction(s) of up to {args.batch} items on branch "
            f"{args.branch}: {items:,} items, {datoms:,} datoms in {seconds:.1f} s, "
            f"commit {short(commit)}"
        )
    return EXIT_OK


def _find_labels(parsed: Any) -> list[str]:
    if parsed.keys is not None:
        return list(parsed.keys[1])
    find = parsed.find
    elements = find.elements if hasattr(find, "elements") else (find.element,)
    labels = []
    for el in elements:
        if isinstance(el, FindVar):
            labels.append(el.var.name)
        elif isinstance(el, FindAggregate):
            args = [a.name if hasattr(a, "name") else cell(a.value) for a in el.args]
            labels.append(f"({' '.join([el.fn, *args, el.var.name])})")
        elif isinstance(el, FindPull):
            labels.append(f"(pull {el.var.name})")
        else:  # pragma: no cover - every find element kind is above
            labels.append(str(el))
    return labels


def _row_key(row: Any) -> tuple[Any, ...]:
    if isinstance(row, Mapping):
        return sort_key([row[k] for k in row])
    return sort_key(row)


async def cmd_query(args: argparse.Namespace) -> int:
    text, _ = query_text(args.query, "query")
    parsed = parse_query(text)
    given = [edn_arg(t, "--in") for t in args.inputs or []]
    specs = parsed.inputs
    wanted = sum(1 for s in specs if not isinstance(s, SrcVar))
    if wanted != len(given):
        raise UsageError(
            f"the query's :in takes {wanted} value(s) besides its database(s); "
            f"--in gave {len(given)}"
        )
    async with connected(args) as conn:
        db = await view(Refs(conn), conn.db, args)
        values = iter(given)
        inputs = [db if isinstance(s, SrcVar) else next(values) for s in specs]
        result = await replica.q(parsed, *inputs)
    if isinstance(result, set | frozenset):
        result = sorted(result, key=sort_key)
    elif (
        isinstance(result, list) and not parsed.order_by and not isinstance(parsed.find, FindTuple)
    ):
        # without :order-by the engine's order means nothing: show a stable one
        result = sorted(result, key=_row_key)
    if args.json:
        emit_json(result)
        return EXIT_OK
    labels = _find_labels(parsed)
    find = parsed.find
    if isinstance(find, FindScalar):
        echo(cell(result))
        return EXIT_OK
    if parsed.keys is not None:
        rows = [[r.get(Keyword(k), r.get(k)) for k in parsed.keys[1]] for r in result]
    elif isinstance(find, FindColl):
        rows = [[v] for v in result]
    elif isinstance(find, FindTuple):
        rows = [list(result)] if result is not None else []
    else:
        rows = [list(r) for r in result]
    echo(table(labels, rows))
    echo(rows_note(len(rows)))
    return EXIT_OK


async def cmd_pull(args: argparse.Namespace) -> int:
    text, name = query_text(args.pattern, "pull pattern")
    pattern = edn_arg(text, name)
    eid = entity_arg(args.eid)
    async with connected(args) as conn:
        db = await view(Refs(conn), conn.db, args)
        result = await replica.pull(db, pattern, eid)
    if args.json:
        emit_json(result)
    elif result is None:
        echo("(nothing)")
    else:
        rows = [(str(k), v) for k, v in result.items()]
        echo(table(["attribute", "value"], rows, numeric=[False, False]))
    return EXIT_OK


async def cmd_log(args: argparse.Namespace) -> int:
    async with connected(args) as conn:
        history = await conn.branch_history(args.branch)
        if args.limit is not None:
            history = history[: args.limit]
        marks = await decorations(conn)
        entries = []
        for address in history:
            db = await conn.commit_as_db(address)
            added, retracted = await datom_counts(conn, db)
            entries.append((address, db, added, retracted))
    drawing: dict[bytes, str] = {}
    lines: list[tuple[str, bytes | None]] = []
    if args.graph:
        lines = graph_lines([(a, db.parent_commit_ids) for a, db, _, _ in entries])
        for text, cid in lines:
            if cid is not None:
                drawing[cid] = text
    if args.json:
        emit_json(
            [
                {
                    "commit": a,
                    "short": short(a),
                    "tx": db.stamp.tx,
                    "time": iso(db.stamp.wall_ms),
                    "parents": list(db.parent_commit_ids),
                    "merge": len(db.parent_commit_ids) > 1,
                    "added": added,
                    "retracted": retracted,
                    "branches": marks.get(a, []),
                    **({"graph": drawing.get(a, "")} if args.graph else {}),
                }
                for a, db, added, retracted in entries
            ]
        )
        return EXIT_OK
    headers = ["commit", "time (UTC)", "tx", "parents", "+datoms", "-datoms", "branches"]
    rows = [
        (
            short(a),
            time_text(db.stamp.wall_ms),
            db.stamp.tx,
            " ".join(short(p) for p in db.parent_commit_ids) or "-",
            f"+{added}",
            f"-{retracted}",
            ", ".join(marks.get(a, [])),
        )
        for a, db, added, retracted in entries
    ]
    numeric = [False, False, True, False, True, True, False]
    if not args.graph:
        echo(table(headers, rows, numeric=numeric))
        return EXIT_OK
    body = table(headers, rows, numeric=numeric).split("\n")
    width = max((len(t) for t, _ in lines), default=0) + 2
    echo(" " * width + body[0])
    echo(" " * width + body[1])
    by_commit = {a: body[2 + i] for i, (a, _, _, _) in enumerate(entries)}
    for text, cid in lines:
        echo((text.ljust(width) + by_commit[cid]) if cid is not None else text)
    return EXIT_OK


async def cmd_show(args: argparse.Namespace) -> int:
    async with connected(args) as conn:
        refs = Refs(conn)
        address = await refs.resolve(args.commit)
        db = await conn.commit_as_db(address)
        parents = db.parent_commit_ids
        base = await conn.commit_as_db(parents[0]) if parents else db
        d = await replica.diff(base, db)
        marks = (await decorations(conn)).get(address, [])
        found: list[replica.Conflict] = []
        if len(parents) > 1:
            found = [c for c in await replica.conflicts(db) if c.tx == db.stamp.tx]
    datoms = datom_rows(d.added, d.retracted)
    if args.json:
        emit_json(
            {
                "commit": address,
                "tx": db.stamp.tx,
                "time": iso(db.stamp.wall_ms),
                "parents": list(parents),
                "merge": len(parents) > 1,
                "branches": marks,
                "added": list(d.added),
                "retracted": list(d.retracted),
                "conflicts": found,
            }
        )
        return EXIT_OK
    echo(f"commit   {address.hex()}")
    echo(f"tx       {db.stamp.tx}")
    when = time_text(db.stamp.wall_ms, ms=True)
    echo(f"time     {when} UTC" if db.stamp.wall_ms > 0 else "time     -")
    echo(f"parents  {' '.join(short(p) for p in parents) or '- (the genesis commit)'}")
    if marks:
        echo(f"branches {', '.join(marks)}")
    if len(parents) > 1:
        echo(f"merge    of {len(parents)} heads, {len(found)} conflict(s) resolved")
    echo()
    vs = f" vs first parent {short(parents[0])}" if parents else ""
    echo(f"datoms: +{len(d.added)} -{len(d.retracted)}{vs}")
    if datoms:
        echo(datom_table(datoms))
    if found:
        echo()
        echo(f"conflicts resolved by this merge: {len(found)}")
        echo(conflict_table(found))
    return EXIT_OK


async def cmd_diff(args: argparse.Namespace) -> int:
    async with connected(args) as conn:
        refs = Refs(conn)
        a = await refs.db(args.a)
        b = await refs.db(args.b)
        d = await replica.diff(a, b)
    if args.stat:
        per: dict[str, list[int]] = {}
        for datom in d.added:
            per.setdefault(datom.a, [0, 0])[0] += 1
        for datom in d.retracted:
            per.setdefault(datom.a, [0, 0])[1] += 1
        if args.json:
            emit_json(
                {
                    "added": len(d.added),
                    "retracted": len(d.retracted),
                    "attributes": {
                        k: {"added": v[0], "retracted": v[1]} for k, v in sorted(per.items())
                    },
                }
            )
            return EXIT_OK
        rows = [(k, v[0], v[1]) for k, v in sorted(per.items())]
        echo(table(["attribute", "added", "retracted"], rows, numeric=[False, True, True]))
        echo(
            f"{len(d.added)} datom(s) added, {len(d.retracted)} retracted, {len(per)} attribute(s)"
        )
        return EXIT_OK
    if args.json:
        emit_json({"added": list(d.added), "retracted": list(d.retracted)})
        return EXIT_OK
    datoms = datom_rows(d.added, d.retracted)
    if datoms:
        echo(datom_table(datoms))
    echo(f"{len(d.added)} datom(s) added, {len(d.retracted)} retracted")
    return EXIT_OK


async def cmd_branch(args: argparse.Namespace) -> int:
    if args.delete and args.reset:
        raise UsageError("branch: -d and --reset exclude each other")
    if (args.delete or args.reset) and not args.name:
        raise UsageError("branch: -d and --reset need a branch NAME")
    if args.reset and not args.target:
        raise UsageError("branch --reset NAME COMMIT: which commit?")
    if args.target and not args.reset:
        raise UsageError("branch NAME takes no second argument (use --from X, or --reset)")
    if args.from_ and (args.delete or args.reset or not args.name):
        raise UsageError("--from goes with creating a branch: branch NAME --from X")
    if args.delete and args.name == args.branch:
        other = "main" if args.name != "main" else None
        hint = f" (use --branch {other})" if other else " (use --branch to choose another)"
        raise replica.BranchError(f"cannot delete {args.name!r}: it is the current branch{hint}")
    async with connected(args) as conn:
        refs = Refs(conn)
        if args.delete:
            await conn.delete_branch(args.name)
            return done(args, {"deleted": args.name}, f"deleted branch {args.name}")
        if args.reset:
            commit = await refs.resolve(args.target)
            await conn.reset_branch(args.name, commit)
            return done(
                args,
                {"reset": args.name, "commit": commit},
                f"branch {args.name} reset to {short(commit)}",
            )
        if args.name:
            commit = await refs.resolve(args.from_) if args.from_ else conn.commit_id
            await conn.branch(args.name, commit)
            return done(
                args,
                {"created": args.name, "commit": commit},
                f"created branch {args.name} at {short(commit)}",
            )
        heads = await conn.branch_heads()
        rows = []
        for name, hs in sorted(heads.items()):
            tip = await conn.commit_as_db(max(hs)) if len(hs) == 1 else None
            rows.append((name, hs, tip))
    if args.json:
        emit_json(
            [
                {
                    "name": n,
                    "current": n == args.branch,
                    "heads": hs,
                    "time": iso(tip.stamp.wall_ms) if tip is not None else None,
                }
                for n, hs, tip in rows
            ]
        )
        return EXIT_OK
    echo(
        table(
            ["", "branch", "head", "time (UTC)"],
            [
                (
                    "*" if n == args.branch else "",
                    n,
                    " ".join(short(h) for h in hs),
                    time_text(tip.stamp.wall_ms)
                    if tip is not None
                    else f"{len(hs)} heads, unmerged",
                )
                for n, hs, tip in rows
            ],
            numeric=[False] * 4,
        )
    )
    return EXIT_OK


def done(args: argparse.Namespace, data: Any, text: str) -> int:
    if args.json:
        emit_json(data)
    else:
        echo(text)
    return EXIT_OK


async def cmd_merge(args: argparse.Namespace) -> int:
    tx_data = None
    if args.tx:
        text, name = read_text(args.tx, "tx data")
        tx_data = parse_data(text, name, args.format)
    async with connected(args) as conn:
        refs = Refs(conn)
        if args.other in await refs.branches():
            other: Any = args.other
        else:
            other = await refs.resolve(args.other)
        before = conn.commit_id
        try:
            report = await conn.merge(other, tx_data, strategy="strict" if args.strict else "auto")
        except replica.MergeConflict as exc:
            if args.json:
                emit_json({"merged": False, "conflicts": list(exc.conflicts)})
            else:
                echo(conflict_table(exc.conflicts))
            echo_err(
                f"{PROG}: error: strict merge of {args.other} into {args.branch}: "
                f"{len(exc.conflicts)} unresolved conflict(s); nothing was written "
                f"(resolve them with --tx FILE on an automatic merge, or merge without --strict)"
            )
            raise StrictConflicts() from exc
    commit = report.db.commit_id
    if args.json:
        emit_json(
            {
                "merged": True,
                "commit": commit,
                "fast_forward": report.fast_forward,
                "up_to_date": commit == before,
                "conflicts": list(report.conflicts),
                "tx": report.tx_report.tx if report.tx_report else None,
            }
        )
        return EXIT_OK
    if commit == before:
        echo(f"already up to date: {args.branch} contains {args.other}")
    elif report.fast_forward and report.tx_report is None:
        echo(f"fast-forward {args.branch} to {short(commit)}")
    else:
        how = "fast-forward" if report.fast_forward else "merge commit"
        echo(
            f"merged {args.other} into {args.branch}: {how} {short(commit)}, "
            f"{len(report.conflicts)} conflict(s) resolved"
        )
        if report.tx_report is not None:
            echo(
                f"then transacted --tx: tx {report.tx_report.tx}, "
                f"{len(report.tx_report.tx_data)} datoms"
            )
    if report.conflicts:
        echo(conflict_table(report.conflicts))
    return EXIT_OK


async def cmd_conflicts(args: argparse.Namespace) -> int:
    async with connected(args) as conn:
        db = await view(Refs(conn), conn.db, args)
        found = await replica.conflicts(db)
    if args.json:
        emit_json(found)
        return EXIT_OK
    if found:
        echo(conflict_table(found))
    echo(f"{len(found)} conflict(s) recorded on branch {args.branch}")
    return EXIT_OK
