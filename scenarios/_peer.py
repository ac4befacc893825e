"""A replica peer in its own OS process, driven by JSON lines on stdin (scenarios only).

Each command is one JSON object with an ``op``; each answer one JSON line on stdout
(``{"ok": ...}`` or ``{"error": "..."}``). Transactions and queries travel as EDN text.

    open        db, create, schema (EDN)          -> {"commit": hex}
    serve       port                              -> {"port": n}
    unserve                                       -> {}
    connect     uri                               -> {}   (a background link; reconnects)
    disconnect                                    -> {}   (drops every link)
    transact    tx (EDN)                          -> {"tx": n, "commit": hex}
    wait_synced seconds                           -> {"commit": hex}
    q           query (EDN), args (EDN list), as_of (commit hex, optional)
                                                  -> {"rows": [...]}  (values as EDN text)
    head                                          -> {"commit": hex, "parents": [...]}
    conflicts                                     -> {"conflicts": [[attr, base, ours, theirs, winner, rule]]}
    verify                                        -> {"commits": n, "nodes": n}
    exit                                          -> exits
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import anyio
from anyio.abc import TaskGroup

import replica
from query import edn
from sync.peer import PeerClient, connect_peer, serve


class _Peer:
    def __init__(self, tg: TaskGroup) -> None:
        self.tg = tg
        self.conn: replica.Connection | None = None
        self.server_scope: anyio.CancelScope | None = None
        self.links: list[tuple[anyio.CancelScope, list[PeerClient]]] = []

    @property
    def c(self) -> replica.Connection:
        assert self.conn is not None, "open first"
        return self.conn

    async def op_open(self, db: str, create: bool = False, schema: str | None = None) -> Any:
        self.conn = await replica.connect(
            db, create=create, schema=edn.loads(schema) if schema else None
        )
        return {"commit": self.c.commit_id.hex()}

    async def op_serve(self, port: int = 0) -> Any:
        ready: list[int] = []
        event = anyio.Event()
        scope = anyio.CancelScope()
        self.server_scope = scope

        async def run() -> None:
            with scope:
                async with serve(self.c, "127.0.0.1", port) as server:
                    ready.append(server.port)
                    event.set()
                    await anyio.sleep_forever()

        self.tg.start_soon(run)
        await event.wait()
        return {"port": ready[0]}

    async def op_unserve(self) -> Any:
        if self.server_scope is not None:
            self.server_scope.cancel()
            self.server_scope = None
            await anyio.sleep(0.05)
        return {}

    async def op_connect(self, uri: str) -> Any:
        scope = anyio.CancelScope()
        holder: list[PeerClient] = []
        event = anyio.Event()

        async def run() -> None:
            with scope:
                async with connect_peer(self.c, uri) as client:
                    holder.append(client)
                    event.set()
                    await anyio.sleep_forever()

        self.tg.start_soon(run)
        await event.wait()
        self.links.append((scope, holder))
        return {}

    async def op_disconnect(self) -> Any:
        for scope, _ in self.links:
            scope.cancel()
        self.links.clear()
        await anyio.sleep(0.05)
        return {}

    async def op_transact(self, tx: str) -> Any:
        report = await self.c.transact(edn.loads(tx))
        return {"tx": report.tx, "commit": self.c.commit_id.hex()}

    async def op_wait_synced(self, seconds: float = 60.0) -> Any:
        with anyio.fail_after(seconds):
            for _, holder in self.links:
                for client in holder:
                    await client.wait_synced()
        await self.c.refresh()
        return {"commit": self.c.commit_id.hex()}

    async def op_q(self, query: str, args: str = "[]", as_of: str | None = None) -> Any:
        await self.c.refresh()
        db = self.c.db
        if as_of:
            db = await self.c.commit_as_db(bytes.fromhex(as_of))
        rows = await replica.q(query, db, *edn.loads(args))
        if isinstance(rows, set | frozenset | list | tuple):
            return {"rows": sorted([edn.dumps(r) for r in rows])}
        return {"rows": edn.dumps(rows)}

    async def op_head(self) -> Any:
        await self.c.refresh()
        return {
            "commit": self.c.commit_id.hex(),
            "parents": [p.hex() for p in self.c.db.parent_commit_ids],
        }

    async def op_conflicts(self) -> Any:
        await self.c.refresh()
        found = await replica.conflicts(self.c.db)
        return {
            "conflicts": [
                [
                    c.attribute,
                    edn.dumps(c.base),
                    edn.dumps(c.ours),
                    edn.dumps(c.theirs),
                    edn.dumps(c.winner),
                    c.rule,
                ]
                for c in found
            ]
        }

    async def op_verify(self) -> Any:
        from replica.maintenance import verify

        report = await verify(self.c)
        return {"commits": report.commits, "nodes": report.nodes}


async def main() -> None:
    stdin = anyio.wrap_file(sys.stdin)
    peer: _Peer | None = None
    async with anyio.create_task_group() as tg:
        peer = _Peer(tg)
        async for line in stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            op = cmd.pop("op")
            if op == "exit":
                break
            try:
                answer = {"ok": await getattr(peer, "op_" + op)(**cmd)}
            except Exception as exc:  # reported to the driver, which decides
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
        tg.cancel_scope.cancel()  # links and server first, then the store
    if peer is not None and peer.conn is not None:
        with contextlib.suppress(Exception):
            await peer.conn.aclose()


if __name__ == "__main__":
    anyio.run(main)
