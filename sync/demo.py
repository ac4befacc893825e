"""``replica demo`` (the README's first command): a small fleet of devices, offline and back.

A cloud peer and three edge peers, each with its own durable file store in a temporary
directory, talking real websockets on 127.0.0.1. The edges clone the cloud, go offline,
record sensor readings and edit shared data (two of them rename the same device at once,
one tags a device while another removes that tag), come back one by one and sync. Every
peer ends on the same commit (root hash); the conflicts the merge settled are listed from
the ``conflict/*`` datoms; a Datalog aggregate and an as-of query answer questions locally.
"""

from __future__ import annotations

import datetime as dt
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import replica
from sync.peer import Statistics, connect_peer, serve

SCHEMA = [
    {"db/ident": "device/id", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "device/location", "db/valueType": "db.type/string"},
    {
        "db/ident": "device/tags",
        "db/valueType": "db.type/keyword",
        "db/cardinality": "db.cardinality/many",
    },
    {"db/ident": "reading/device", "db/valueType": "db.type/ref"},
    {"db/ident": "reading/at", "db/valueType": "db.type/instant"},
    {"db/ident": "reading/celsius", "db/valueType": "db.type/double"},
]

EDGES = ("edge-north", "edge-south", "edge-east")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _short(commit: bytes) -> str:
    return commit.hex()[2:12]


async def _sync(conn: replica.Connection, uri: str) -> Statistics:
    async with connect_peer(conn, uri) as peer:
        with anyio.fail_after(60):
            await peer.wait_synced()
        await conn.refresh()
        return peer.statistics()


async def _graph(conn: replica.Connection, limit: int = 14) -> list[str]:
    """A compact drawing of the newest commits: merges show their parents."""
    lines = []
    for address in (await conn.branch_history())[:limit]:
        c = await conn.database.commit(address)
        if len(c.parents) > 1:
            parents = " + ".join(_short(p) for p in c.parents)
            lines.append(f"  *   {_short(address)}  merge of {parents}")
        elif c.parents:
            when = dt.datetime.fromtimestamp(c.stamp.wall_ms / 1000, dt.UTC).strftime("%H:%M:%S")
            lines.append(f"  *   {_short(address)}  tx by replica {c.replica:016x}  {when}")
        else:
            lines.append(f"  *   {_short(address)}  genesis")
    return lines


async def run_demo(directory: str | None = None, readings: int = 200) -> dict[str, Any]:
    """Run the story; returns what it showed (tests check it)."""
    started = time.perf_counter()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="replica-demo-") as tmp:
        root = Path(directory or tmp)
        _say(f"replica demo: one cloud peer and {len(EDGES)} edge devices, stores in {root}")
        cloud_url = (root / "cloud").as_uri()
        cloud = await replica.connect(cloud_url, create=True, schema=SCHEMA)
        await cloud.transact(
            [
                {"device/id": f"sensor-{i}", "device/location": "hall", "device/tags": ["new"]}
                for i in range(3)
            ]
        )
        async with serve(cloud, "127.0.0.1", 0) as server:
            uri = f"ws://127.0.0.1:{server.port}"
            _say(f"\n1. the cloud serves its database on {uri}; each edge clones it")
            edges = []
            for name in EDGES:
                conn = await replica.connect((root / name).as_uri(), create=True)
                stats = await _sync(conn, uri)
                edges.append(conn)
                _say(
                    f"   {name}: cloned {stats.nodes_received} nodes, "
                    f"{stats.bytes_received:,} bytes, commit {_short(conn.commit_id)}"
                )

            _say("\n2. the edges go offline and keep working")
            base = edges[0].db
            t0 = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.UTC)
            for k, (name, conn) in enumerate(zip(EDGES, edges, strict=True)):
                tx = [
                    {
                        "reading/device": ("device/id", f"sensor-{i % 3}"),
                        "reading/at": t0 + dt.timedelta(minutes=i),
                        "reading/celsius": round(18 + 4 * k + rng.random() * 3, 2),
                    }
                    for i in range(readings)
                ]
                await conn.transact(tx)
                _say(f"   {name}: recorded {readings} readings")
            await edges[0].transact([{"device/id": "sensor-0", "device/location": "roof"}])
            await edges[1].transact([{"device/id": "sensor-0", "device/location": "cellar"}])
            _say(
                "   edge-north moves sensor-0 to the roof; edge-south, at the same time, "
                "to the cellar"
            )
            await edges[1].transact([{"device/id": "sensor-1", "device/tags": ["calibrated"]}])
            await edges[2].transact(
                [["db/retract", ("device/id", "sensor-1"), "device/tags", "new"]]
            )
            _say("   edge-south tags sensor-1 :calibrated; edge-east removes its :new tag")

            _say("\n3. back online, one by one: each sync merges the heads automatically")
            for name, conn in zip(EDGES, edges, strict=True):
                stats = await _sync(conn, uri)
                _say(
                    f"   {name}: sent {stats.nodes_sent} nodes, received "
                    f"{stats.nodes_received}, {stats.round_trips} round trips"
                )
            for conn in edges:  # a second pass: everyone picks up the others' writes
                await _sync(conn, uri)
            await cloud.refresh()

            _say("\n4. the commit graph on the cloud (newest first)")
            for line in await _graph(cloud):
                _say(line)

            found = await replica.conflicts(cloud.db)
            _say(f"\n5. conflicts the merges settled ({len(found)}), read from conflict/* datoms")
            for c in found:
                _say(
                    f"   {c.attribute} of entity ...{c.entity % 10**6:06d}: base {c.base!r}, "
                    f"{c.ours!r} vs {c.theirs!r} -> {c.winner!r} ({c.rule})"
                )

            rows = await replica.q(
                """[:find ?id (avg ?c) (count ?r)
                    :where [?d :device/id ?id] [?r :reading/device ?d] [?r :reading/celsius ?c]]""",
                cloud.db,
            )
            _say("\n6. a Datalog query on the cloud: average temperature per device")
            for device, avg, n in sorted(rows):
                _say(f"   {device}: {avg:.2f} C over {n} readings")
            where = await replica.q(
                '[:find ?loc . :where [?d :device/id "sensor-0"] [?d :device/location ?loc]]',
                cloud.db,
            )
            before = await replica.q(
                '[:find ?loc . :where [?d :device/id "sensor-0"] [?d :device/location ?loc]]',
                cloud.db.as_of(base.max_tx),
            )
            tags = await replica.q(
                '[:find [?t ...] :where [?d :device/id "sensor-1"] [?d :device/tags ?t]]',
                cloud.db,
            )
            _say(f"   sensor-0 is in the {where} now; as of the clone it was in the {before}")
            _say(f"   sensor-1 tags now: {sorted(str(t) for t in tags)}")

            heads = {
                "cloud": cloud.commit_id,
                **{n: c.commit_id for n, c in zip(EDGES, edges, strict=True)},
            }
            same = len(set(heads.values())) == 1
            _say("\n7. every peer holds the same database, provably: one root hash")
            for name, commit in heads.items():
                _say(f"   {name:<11} {commit.hex()}")
            _say(f"   identical: {same}   ({time.perf_counter() - started:.1f} s)")
            for conn in edges:
                await conn.aclose()
        await cloud.aclose()
        if not same:
            raise replica.ReplicaError("the peers did not converge")
        return {
            "heads": heads,
            "conflicts": found,
            "averages": sorted(rows),
            "location": where,
            "location_before": before,
            "tags": sorted(str(t) for t in tags),
        }
