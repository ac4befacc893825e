"""The verbs that talk to peers: serve, sync, clone (sync/peer.py over websockets)."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

import replica
from sync.cli.inputs import UsageError, parse_data, read_text
from sync.cli.output import (
    Progress,
    echo,
    emit_json,
    human_bytes,
    jsonable,
    progress_enabled,
    short,
    table,
    with_progress,
)
from sync.cli.verbs import EXIT_OK, connected
from sync.peer import Permissions, Statistics, connect_peer, serve, single
from sync.protocol import SyncError


def _check_peer_url(url: str) -> None:
    if not re.match(r"^wss?://[^/\s]+", url):
        raise UsageError(f"peer URL {url!r} must be ws://host:port or wss://host:port")


def _client_ssl(args: argparse.Namespace, url: str) -> ssl.SSLContext | None:
    if not url.startswith("wss://"):
        return None
    if args.cacert:
        return ssl.create_default_context(cafile=args.cacert)
    return ssl.create_default_context()


async def _sync(
    args: argparse.Namespace, conn: replica.Connection, url: str, label: str
) -> tuple[Statistics, float]:
    """``sync_once`` (connect, wait until both sides hold the same heads, disconnect), with
    the link's statistics read while it runs for the progress line."""
    _check_peer_url(url)
    progress = Progress(label, enabled=progress_enabled(args), unit="nodes")
    branches = split(args.branches)
    try:
        async with connect_peer(
            conn,
            url,
            token=args.token or None,
            ssl=_client_ssl(args, url),
            branches=branches,
            reconnect=False,
        ) as peer:

            def counter() -> tuple[int, int | None]:
                s = peer.statistics()
                return s.nodes_received + s.nodes_sent, s.bytes_received + s.bytes_sent

            with anyio.fail_after(args.timeout):
                await with_progress(progress, counter, peer.wait_synced())
            stats = peer.statistics()
    except Exception as exc:
        # errors out of the link's task group may come wrapped in exception groups; and
        # websockets' handshake errors (not a websocket server, bad URI) are not SyncErrors
        inner = single(exc)
        if isinstance(inner, TimeoutError):
            raise SyncError(
                f"sync with {url} did not finish within {args.timeout:g} s (--timeout)"
            ) from None
        if isinstance(inner, replica.ReplicaError):
            raise inner from None
        if isinstance(inner, OSError) or type(inner).__module__.startswith("websockets"):
            raise SyncError(f"sync with {url} failed: {inner}") from exc
        raise
    await conn.refresh()
    return stats, progress.elapsed()


def split(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [b.strip() for b in text.split(",") if b.strip()]


def _stats_report(
    url: str, stats: Statistics, seconds: float, heads: Mapping[str, list[bytes]]
) -> None:
    echo(
        table(
            ["", "nodes", "bytes", "messages"],
            [
                (
                    "received",
                    stats.nodes_received,
                    human_bytes(stats.bytes_received),
                    stats.messages_received,
                ),
                ("sent", stats.nodes_sent, human_bytes(stats.bytes_sent), stats.messages_sent),
            ],
            numeric=[False, True, True, True],
        )
    )
    echo()
    echo(
        table(
            ["branch", "head"],
            [(n, " ".join(short(h) for h in hs)) for n, hs in sorted(heads.items())],
            numeric=[False, False],
        )
    )
    echo(
        f"synced with {url} in {seconds:.1f} s: {stats.round_trips} round trip(s), "
        f"{stats.nodes_received:,} nodes received, {stats.nodes_sent:,} sent"
    )


def _stats_json(
    url: str, stats: Statistics, seconds: float, heads: Mapping[str, list[bytes]], **extra: Any
) -> None:
    emit_json(
        {
            "peer": url,
            "seconds": round(seconds, 3),
            "statistics": stats,
            "branches": dict(sorted(heads.items())),
            **extra,
        }
    )


async def cmd_sync(args: argparse.Namespace) -> int:
    async with connected(args) as conn:
        stats, seconds = await _sync(args, conn, args.url, "sync")
        heads = await conn.branch_heads()
    if args.json:
        _stats_json(args.url, stats, seconds, heads)
    else:
        _stats_report(args.url, stats, seconds, heads)
    return EXIT_OK


async def cmd_clone(args: argparse.Namespace) -> int:
    _check_peer_url(args.url)
    target, created = _clone_target(args.dir)
    url = target.as_uri()
    ok = False
    try:
        await replica.create_database(url)
        async with replica.connect(url) as conn:
            stats, seconds = await _sync(args, conn, args.url, "clone")
            heads = await conn.branch_heads()
        ok = True
    finally:
        if not ok:
            _remove_clone(target, created)
    if args.json:
        _stats_json(args.url, stats, seconds, heads, db=url)
    else:
        _stats_report(args.url, stats, seconds, heads)
        echo(f"cloned {args.url} into {target} (use --db {target})")
    return EXIT_OK


def _clone_target(text: str) -> tuple[Path, bool]:
    """The directory to clone into (absent or empty) and whether clone creates it."""
    target = Path(text).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise replica.ReplicaError(f"cannot clone into {text}: it exists and is not empty")
    return target, not target.exists()


def _remove_clone(target: Path, created: bool) -> None:
    """Undo a failed clone: the directory if clone created it, else what it put in it."""
    if created:
        shutil.rmtree(target, ignore_errors=True)
        return
    for child in target.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _load_tokens(path: str) -> dict[str, Permissions]:
    """``--tokens FILE``: JSON or EDN, token -> ``"rw"`` | ``"ro"`` | ``{"read": [branches],
    "write": [branches]}`` (``"*"``: every branch)."""
    text, name = read_text(path, "tokens")
    data = parse_data(text, name)
    if not isinstance(data, dict) or not data:
        raise UsageError(
            f'{path}: tokens file must map each token to "rw", "ro" or '
            '{"read": [...], "write": [...]}'
        )
    out = {}
    for token, perm in data.items():
        if perm in ("rw", "read-write"):
            out[str(token)] = Permissions()
        elif perm in ("ro", "read-only", "read"):
            out[str(token)] = Permissions(write=frozenset())
        elif isinstance(perm, dict):
            read = perm.get("read") or ["*"]
            write = perm.get("write") or []
            if not isinstance(read, list) or not isinstance(write, list):
                raise UsageError(f"{path}: read and write take lists of branch names")
            out[str(token)] = Permissions(frozenset(map(str, read)), frozenset(map(str, write)))
        else:
            raise UsageError(f"{path}: bad permissions {perm!r} for a token")
    return out


async def cmd_serve(args: argparse.Namespace) -> int:
    if args.token and args.tokens:
        raise UsageError("serve: --token and --tokens exclude each other")
    if bool(args.cert) != bool(args.key):
        raise UsageError("serve: TLS needs both --cert and --key")
    tokens = _load_tokens(args.tokens) if args.tokens else None
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.cert, args.key)
        except (OSError, ssl.SSLError) as exc:
            raise replica.ReplicaError(f"cannot load --cert/--key: {exc}") from exc
    branches = split(args.branches)
    scheme = "wss" if context else "ws"
    auth = "token" if args.token else f"{len(tokens)} tokens" if tokens else "none"
    async with connected(args) as conn, contextlib.AsyncExitStack() as stack:
        # the signal handlers go in first: a SIGTERM right after the "serving" line must
        # stop the server cleanly, not kill the process
        signals = stack.enter_context(anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM))
        try:
            server = await stack.enter_async_context(
                serve(
                    conn,
                    args.host,
                    args.port,
                    token=args.token or None,
                    tokens=tokens,
                    ssl=context,
                    branches=branches,
                )
            )
        except OSError as exc:
            raise replica.ReplicaError(
                f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
            ) from exc
        address = f"{scheme}://{args.host}:{server.port}"
        shown = ", ".join(branches) if branches else "all"
        if args.json:
            echo(
                json.dumps(
                    {
                        "serving": conn.url,
                        "url": address,
                        "branches": branches or "all",
                        "auth": auth,
                    }
                )
            )
        else:
            echo(
                f"serving {conn.url} on {address} (branches: {shown}; auth: {auth}); Ctrl-C to stop"
            )
        sys.stdout.flush()
        async for _ in signals:
            break
    stats = server.statistics()
    if args.json:
        echo(json.dumps({"stopped": True, "statistics": jsonable(stats)}))
    else:
        echo(
            f"stopped after {stats.sessions} session(s): {stats.nodes_received:,} nodes "
            f"received, {stats.nodes_sent:,} sent"
        )
    return EXIT_OK
