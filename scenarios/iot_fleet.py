"""Scenario: an IoT fleet. A cloud peer on S3, edge devices offline, links that break.

The cloud's store is S3 (a moto server this scenario starts on 127.0.0.1). Five edge devices
run as separate OS processes with file stores. Each clones the cloud, goes offline, records
sensor readings, and also renames a shared site (a conflict). They come back online in
random order through links that this scenario cuts in the middle of their sync; they
reconnect and catch up. At the end the cloud answers aggregate queries over every device,
and every peer holds the same root hash.

    python -m scenarios.iot_fleet [--edges 5] [--readings 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import tempfile
import time
import uuid
from pathlib import Path

import anyio

import replica
from query import edn
from scenarios._drive import FAKE_AWS_ENV, PeerProcess, start_moto, stop_process
from scenarios._proxy import FaultProxy
from sync.peer import serve

SCHEMA = """[{:db/ident :device/id :db/valueType :db.type/string :db/unique :db.unique/identity}
 {:db/ident :site/id :db/valueType :db.type/string :db/unique :db.unique/identity}
 {:db/ident :site/name :db/valueType :db.type/string}
 {:db/ident :reading/device :db/valueType :db.type/ref}
 {:db/ident :reading/seq :db/valueType :db.type/long}
 {:db/ident :reading/celsius :db/valueType :db.type/double}]"""


def say(text: str = "") -> None:
    print(text, flush=True)


async def create_bucket(endpoint: str) -> str:
    from aiobotocore.session import get_session

    bucket = f"replica-fleet-{uuid.uuid4().hex[:12]}"
    async with get_session().create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1"
    ) as client:
        await client.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/cloud?endpoint_url={endpoint}&region=us-east-1"


async def run(edges: int, readings: int, seed: int, workdir: Path) -> dict[str, object]:
    rng = random.Random(seed)
    os.environ.update(FAKE_AWS_ENV)
    with tempfile.TemporaryFile() as moto_log:
        moto, endpoint = start_moto(moto_log)
        try:
            return await _story(edges, readings, rng, workdir, await create_bucket(endpoint))
        finally:
            stop_process(moto)


async def _story(
    edges: int, readings: int, rng: random.Random, workdir: Path, cloud_url: str
) -> dict[str, object]:
    started = time.perf_counter()
    say(f"iot_fleet: a cloud peer on S3 ({cloud_url.split('?')[0]}) and {edges} edge devices")
    cloud = await replica.connect(cloud_url, create=True, schema=edn.loads(SCHEMA))
    try:
        return await _with_cloud(cloud, edges, readings, rng, workdir, started)
    finally:
        await cloud.aclose()


async def _with_cloud(
    cloud: replica.Connection,
    edges: int,
    readings: int,
    rng: random.Random,
    workdir: Path,
    started: float,
) -> dict[str, object]:
    await cloud.transact([{"site/id": "plant", "site/name": "Plant 1"}])
    async with serve(cloud, "127.0.0.1", 0) as server, contextlib.AsyncExitStack() as stack:
        links = [await stack.enter_async_context(FaultProxy(server.port)) for _ in range(edges)]
        names = [f"edge-{i}" for i in range(edges)]
        procs = [await PeerProcess.start(n, workdir / f"{n}.log") for n in names]
        try:
            say("\n1. every edge clones the cloud, then goes offline")
            for i, p in enumerate(procs):
                await p.call("open", db=(workdir / names[i]).as_uri(), create=True)
                await p.call("connect", uri=f"ws://127.0.0.1:{links[i].port}")
                await p.call("wait_synced")
                await p.call("disconnect")
            say("\n2. offline, each edge records readings and renames the site")
            for i, p in enumerate(procs):
                await p.call("transact", tx=f'[{{:device/id "dev-{i}"}}]')
                for start in range(0, readings, 50):
                    rows = " ".join(
                        f'{{:reading/device [:device/id "dev-{i}"] :reading/seq {k} '
                        f":reading/celsius {20 + rng.random() * 10:.3f}}}"
                        for k in range(start, min(start + 50, readings))
                    )
                    await p.call("transact", tx=f"[{rows}]")
                await p.call(
                    "transact", tx=f'[{{:site/id "plant" :site/name "Plant 1 (edge-{i})"}}]'
                )
                say(f"   {names[i]}: {readings} readings, site renamed")
            order = list(range(edges))
            rng.shuffle(order)
            say(
                f"\n3. online in random order: {', '.join(names[i] for i in order)}; "
                "each link is cut while it syncs"
            )
            for i in order:
                await procs[i].call("connect", uri=f"ws://127.0.0.1:{links[i].port}")
                await anyio.sleep(rng.uniform(0.0, 0.15))
                await links[i].cut()
                say(f"   {names[i]}: link cut mid-sync")
                await anyio.sleep(0.3)
                await links[i].restore()
            say("\n4. links restored; every edge catches up")
            heads = {}
            for _ in range(3):  # until the cloud's merges have reached every edge
                for i, p in enumerate(procs):
                    heads[names[i]] = (await p.call("wait_synced", seconds=120))["commit"]
                await cloud.refresh()
                heads["cloud"] = cloud.commit_id.hex()
                if len(set(heads.values())) == 1:
                    break
                await anyio.sleep(0.5)
            rows = await replica.q(
                """[:find ?id (count ?r) (avg ?c)
                    :where [?d :device/id ?id] [?r :reading/device ?d] [?r :reading/celsius ?c]]""",
                cloud.db,
            )
            say("\n5. the cloud answers over all devices")
            for device, n, avg in sorted(rows):
                say(f"   {device}: {n} readings, average {avg:.2f} C")
            site = await replica.q(
                '[:find ?n . :where [?s :site/id "plant"] [?s :site/name ?n]]', cloud.db
            )
            found = await replica.conflicts(cloud.db)
            say(f"   site name after {len(found)} recorded conflicts: {site!r}")
            say("\n6. root hashes")
            for name, commit in sorted(heads.items()):
                say(f"   {name:<8} {commit}")
            converged = len(set(heads.values())) == 1
            say(f"   all equal: {converged}   ({time.perf_counter() - started:.1f} s)")
            assert converged, "the peers did not converge"
            counts = {device: n for device, n, _ in rows}
            assert counts == {f"dev-{i}": readings for i in range(edges)}, counts
            assert site in {f"Plant 1 (edge-{i})" for i in range(edges)}
            assert any(c.attribute == "site/name" for c in found)
            result: dict[str, object] = {"heads": heads, "counts": counts, "site": site}
        finally:
            for p in procs:
                await p.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=5)
    parser.add_argument("--readings", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="replica-fleet-") as tmp:
        anyio.run(run, args.edges, args.readings, args.seed, Path(tmp))


if __name__ == "__main__":
    main()
