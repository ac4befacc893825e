"""One sync peer as its own OS process, for test_processes.py (and the shared test data).

Usage (every database is a ``file://`` URL; only 127.0.0.1 is ever bound or dialled):

* ``python _peer_proc.py hub URL NAME WRITES`` — create the database at ``URL`` with
  :data:`SCHEMA` and the :data:`SHARED` entities, serve it on ``127.0.0.1:0`` and print
  ``ready <port>``.
* ``python _peer_proc.py edge URL NAME WRITES URI`` — create an empty database at ``URL``,
  sync with the peer at ``URI`` (``replica.connect_peer``, reconnecting with backoff), and
  once it holds what that peer holds print ``ready``.
* ``python _peer_proc.py clone URL URI`` — ``replica.sync_once`` the database at ``URL``
  (created empty if absent) with the peer at ``URI`` and print ``synced <json>`` (commit id and
  the sync statistics), then exit. test_processes.py SIGKILLs one of these mid-clone.

Hub and edge then obey lines on stdin:

* ``go``: transact ``WRITES`` transactions, one after another with short random pauses, each
  asserting a new entity ``{"p/name": "<NAME>-<i>", "p/age": i}`` and every third one also a
  cardinality-one write ``p/age`` of a :data:`SHARED` entity that the other peers write too;
  print ``wrote <WRITES>`` when done. Sync goes on all the while (live push both ways).
* ``report``: re-read the branch and print ``report <json>`` (:func:`snapshot` plus sync
  statistics); ``quit``: exit 0.

Every line printed is flushed; any error is printed as ``error <repr>`` (exit 1).
"""

from __future__ import annotations

import json
import random
import sys
import traceback
import zlib
from typing import Any

import anyio

import replica

SCHEMA: list[dict[str, Any]] = [
    {"db/ident": "p/name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "p/age", "db/valueType": "db.type/long"},
    {"db/ident": "p/bio", "db/valueType": "db.type/string"},
]
#: entities every peer writes (cardinality-one conflicts)
SHARED = [f"shared-{j}" for j in range(3)]

NAMES_AGES = "[:find ?n ?a :where [?e :p/name ?n] [?e :p/age ?a]]"


async def snapshot(db: replica.DB) -> dict[str, Any]:
    """What two converged peers must agree on: the commit id, the query results (sorted) and
    the conflicts the merges recorded."""
    rows = await replica.q(NAMES_AGES, db)
    conflicts = await replica.conflicts(db)
    return {
        "commit": db.commit_id.hex(),
        "rows": sorted([n, a] for n, a in rows),
        "conflicts": sorted([c.entity, c.attribute, repr(c.winner), c.rule] for c in conflicts),
    }


def shared_age(name: str, i: int) -> int:
    return zlib.crc32(f"{name}/{i}".encode()) % 1_000_000


def tx_of(name: str, i: int) -> list[dict[str, Any]]:
    tx: list[dict[str, Any]] = [{"p/name": f"{name}-{i}", "p/age": i}]
    if i % 3 == 0:
        tx.append({"p/name": SHARED[i // 3 % len(SHARED)], "p/age": shared_age(name, i)})
    return tx


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _stats(stats: Any) -> dict[str, int]:
    return {
        k: getattr(stats, k)
        for k in (
            "bytes_sent",
            "bytes_received",
            "nodes_sent",
            "nodes_received",
            "round_trips",
            "sessions",
        )
    }


async def _write(conn: replica.Connection, name: str, writes: int) -> None:
    rng = random.Random(name)
    for i in range(writes):
        await conn.transact(tx_of(name, i))
        await anyio.sleep(rng.uniform(0.01, 0.05))
    say(f"wrote {writes}")


async def _commands(conn: replica.Connection, name: str, writes: int, stats: Any) -> None:
    stdin = anyio.wrap_file(sys.stdin)
    async with anyio.create_task_group() as tg:
        while True:
            line = (await stdin.readline()).strip()
            if line == "go":
                tg.start_soon(_write, conn, name, writes)
            elif line == "report":
                db = await conn.refresh()
                out = await snapshot(db)
                out["stats"] = _stats(stats())
                say("report " + json.dumps(out))
            elif line in ("quit", ""):  # "" is EOF: the test went away
                tg.cancel_scope.cancel()
                return
            else:
                raise ValueError(f"unknown command {line!r}")


async def hub(url: str, name: str, writes: int) -> None:
    async with replica.connect(url, create=True, schema=SCHEMA) as conn:
        await conn.transact([{"p/name": s, "p/age": 0} for s in SHARED])
        async with replica.serve(conn, "127.0.0.1", 0) as server:
            say(f"ready {server.port}")
            await _commands(conn, name, writes, server.statistics)


async def edge(url: str, name: str, writes: int, uri: str) -> None:
    async with (
        replica.connect(url, create=True) as conn,
        replica.connect_peer(conn, uri) as peer,
    ):
        with anyio.fail_after(30):
            while conn.schema.attribute("p/name") is None:  # the clone has arrived
                await peer.wait_synced()
                await conn.refresh()
                await anyio.sleep(0.01)
        say("ready")
        await _commands(conn, name, writes, peer.statistics)


async def clone(url: str, uri: str) -> None:
    async with replica.connect(url, create=True) as conn:
        stats = await replica.sync_once(conn, uri)
        db = await conn.refresh()
        say("synced " + json.dumps({"commit": db.commit_id.hex(), "stats": _stats(stats)}))


def main(argv: list[str]) -> int:
    try:
        mode = argv[0]
        if mode == "hub":
            anyio.run(hub, argv[1], argv[2], int(argv[3]))
        elif mode == "edge":
            anyio.run(edge, argv[1], argv[2], int(argv[3]), argv[4])
        elif mode == "clone":
            anyio.run(clone, argv[1], argv[2])
        else:
            raise ValueError(f"unknown mode {mode!r}")
    except BaseException as exc:
        say(f"error {exc!r}")
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
