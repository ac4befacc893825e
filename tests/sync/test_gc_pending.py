"""gc on a store that holds commits sync received but has not published (protocol.md 5.5).

A session cut after the nodes of some commits arrived but before their update leaves those
commits complete, on no branch, and listed in the ``sync/pending`` ref; the next session
announces them, so the sender sends neither them nor anything below them, only the update.
gc must therefore keep them: otherwise that update names commits that are gone and the sync
fails, every time. Runs over real websockets on 127.0.0.1 on the mem and file stores.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import replica
from replica.maintenance import gc, verify
from store.codec import decode
from sync.peer import PENDING_REF
from sync.protocol import SyncProtocol
from tests.sync._peer_proc import SCHEMA
from tests.sync.conftest import OpenDb
from tests.sync.test_peer import HOST, WAIT, assert_same, fill, names, sync, uri_of, wait_until

pytestmark = pytest.mark.timeout(60)


async def test_gc_keeps_received_commits_for_the_next_session(
    open_db: OpenDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await open_db("a", SCHEMA)
    await fill(a, 4, 30)
    b = await open_db("b")
    async with replica.serve(a, HOST, 0) as server:
        await sync(b, uri_of(server))
        await fill(a, 3, 30, prefix="m")
        head = a.db.commit_id

        # a session that streams the new commits but never sends their update (as if cut
        # just before it): b stores them and lists them as pending, its branch stays behind
        def no_update(self: SyncProtocol, branch: str, heads: Any) -> None:
            pass

        monkeypatch.setattr(SyncProtocol, "send_update", no_update)

        async def pending() -> list[bytes]:
            raw = await b.store.get_ref(PENDING_REF)
            return decode(raw) if raw is not None else []

        async def arrived() -> bool:
            return head in await pending()

        async with replica.connect_peer(b, uri_of(server), reconnect=False):
            await wait_until(arrived, "the new commits stored on b")
        monkeypatch.undo()
        assert (await b.branch_heads())["main"] != [head]
        assert not any(n.startswith("m") for n in await names(b))

        with anyio.fail_after(WAIT):
            report = await gc(b, grace_seconds=0)
        assert report.reachable > 0
        assert head in await pending()

        # the next session: a counts the pending commits as held by b and sends the update
        # alone; b publishes them
        stats = await sync(b, uri_of(server))
    assert stats.nodes_received == 0, stats
    await assert_same(a, b)
    assert {f"m{c}-0" for c in range(3)} <= await names(b)
    await verify(b)
    assert await pending() == []  # published: pruned from the list
