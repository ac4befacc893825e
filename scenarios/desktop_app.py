"""Scenario: a local-first desktop app syncing in the background, killed mid-sync.

The app is its own OS process with a file store; it writes notes and syncs them in the
background to a cloud peer. The cloud goes down and the app keeps working; the cloud comes
back, and while the app is catching up it is killed with SIGKILL. Restarted on the same
store, it reopens valid, reconnects, and finishes: the cloud then holds every write the app
had acknowledged, and both hold the same root hash.

    python -m scenarios.desktop_app [--notes 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anyio

import replica
from query import edn
from scenarios._drive import PeerProcess
from sync.peer import serve

SCHEMA = """[{:db/ident :note/id :db/valueType :db.type/long :db/unique :db.unique/identity}
 {:db/ident :note/text :db/valueType :db.type/string}]"""


def say(text: str = "") -> None:
    print(text, flush=True)


async def _write(app: PeerProcess, ids: range, acked: list[int], batch: int = 10) -> None:
    for start in range(ids.start, ids.stop, batch):
        chunk = range(start, min(start + batch, ids.stop))
        rows = " ".join(f'{{:note/id {i} :note/text "note {i} {"x" * 200}"}}' for i in chunk)
        await app.call("transact", tx=f"[{rows}]")
        acked.extend(chunk)  # the app answered: these writes are acknowledged (durable)


async def run(workdir: Path, notes: int = 300) -> dict[str, object]:
    started = time.perf_counter()
    cloud = await replica.connect(
        (workdir / "cloud").as_uri(), create=True, schema=edn.loads(SCHEMA)
    )
    app_url = (workdir / "app").as_uri()
    acked: list[int] = []
    try:
        async with serve(cloud, "127.0.0.1", 0) as server:
            port = server.port
            uri = f"ws://127.0.0.1:{port}"
            app = await PeerProcess.start("app", workdir / "app.log")
            await app.call("open", db=app_url, create=True)
            await app.call("connect", uri=uri)
            await app.call("wait_synced")
            say(f"desktop_app: the app syncs in the background with the cloud at {uri}")
            await _write(app, range(0, notes // 3), acked)
            await app.call("wait_synced")
            say(f"1. {len(acked)} notes written online and synced")
        say("2. the cloud goes down; the app keeps working")
        await _write(app, range(notes // 3, notes), acked)
        say(f"   {len(acked)} notes acknowledged in all, {notes - notes // 3} of them offline")
        async with serve(cloud, "127.0.0.1", port):
            say("3. the cloud is back; the app reconnects and starts catching up ...")
            await anyio.sleep(0.15)
            app.kill()
            await app.process.wait()
            say("   ... and is killed with SIGKILL in the middle of it")
            app = await PeerProcess.start("app", workdir / "app.log")
            opened = await app.call("open", db=app_url)
            checked = await app.call("verify")
            say(
                f"4. restarted: the store reopens valid ({checked['commits']} commits, "
                f"{checked['nodes']} nodes verified)"
            )
            await app.call("connect", uri=uri)
            final = (await app.call("wait_synced", seconds=120))["commit"]
            await cloud.refresh()
            ids = set(await replica.q("[:find [?i ...] :where [_ :note/id ?i]]", cloud.db))
            missing = sorted(set(acked) - ids)
            say(f"5. the cloud holds {len(ids)} notes; acknowledged but missing: {len(missing)}")
            say(f"   app   {final}\n   cloud {cloud.commit_id.hex()}")
            await app.stop()
        say(f"({time.perf_counter() - started:.1f} s)")
        assert not missing, missing[:10]
        assert final == cloud.commit_id.hex(), "app and cloud differ"
        return {"acked": len(acked), "cloud": len(ids), "head": final, "opened": opened}
    finally:
        await cloud.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="replica-desktop-") as tmp:
        anyio.run(run, Path(tmp), args.notes)


if __name__ == "__main__":
    main()
