"""The README's first command (``make demo``): the storage foundation, shown step by step.

Two "peers" share nothing but a file store directory layout: peer A builds a tree, edits it
offline, and we show what a sync would have to ship (only the new nodes), that the edited tree
equals a tree built from scratch with the same content (history independence: one root hash),
and that everything survives closing and reopening the durable store.
Later issues grow this into the real multi-peer replication demo.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import anyio

from store.base import open_store
from store.codec import address_to_str
from store.nodes import Nodes
from store.tree import Tree, diff, new_nodes


def _key(i: int) -> bytes:
    return b"sensor/%06d" % i


def _say(text: str) -> None:
    print(text, flush=True)


async def run_demo(items: int = 100_000, directory: str | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="replica-demo-") as tmp:
        root_dir = Path(await anyio.Path(directory or tmp).absolute())
        url_a = (root_dir / "peer-a").as_uri()
        url_b = (root_dir / "peer-b").as_uri()
        _say(f"replica storage demo: two file stores under {root_dir}\n")

        store_a = await open_store(url_a)
        nodes_a = Nodes(store_a)
        rng = random.Random(7)
        data = {
            _key(i): b"%d.%d C" % (rng.randint(15, 30), rng.randint(0, 9)) for i in range(items)
        }

        t0 = time.perf_counter()
        tree = await Tree.build(nodes_a, sorted(data.items()))
        took = time.perf_counter() - t0
        _say(
            f"1. peer A built a prolly tree of {await tree.count():,} readings in {took:.2f} s: "
            f"{await tree.height()} levels, {len(await tree.reachable()):,} nodes, "
            f"root {address_to_str(tree.root)[:18]}..."
        )

        value = await tree.get(_key(4242 % items))
        _say(f"2. point lookup {_key(4242 % items).decode()} -> {value!r}")

        changes: list[tuple[bytes, bytes | None]]
        changes = [(_key(rng.randrange(items)), b"99.9 C") for _ in range(50)]
        changes += [(_key(items + i), b"20.0 C") for i in range(25)]
        changes += [(_key(rng.randrange(items)), None) for _ in range(25)]
        edited = await tree.edit(changes)
        for key, val in changes:
            if val is None:
                data.pop(key, None)
            else:
                data[key] = val
        _say(
            f"3. peer A edited offline: {len(changes)} changes in one batch -> new root "
            f"{address_to_str(edited.root)[:18]}..., {await edited.count():,} readings"
        )

        added = removed = changed = 0
        async for batch in diff(tree, edited):
            for _, old, new in batch:
                if old is None:
                    added += 1
                elif new is None:
                    removed += 1
                else:
                    changed += 1
        _say(f"4. diff(old, new): {added} added, {removed} removed, {changed} changed")

        ship = await new_nodes(tree, edited)
        size = sum(len(v) for v in (await store_a.get_many(ship)).values())
        _say(
            f"5. a peer holding the old tree needs only {len(ship)} nodes ({size:,} bytes) "
            f"of {len(await edited.reachable()):,} to hold the new one"
        )

        store_b = await open_store(url_b)
        nodes_b = Nodes(store_b)
        await store_b.put_many(await store_a.get_many(await tree.reachable()))
        await store_b.put_many(await store_a.get_many(ship))
        replica_b = Tree(nodes_b, edited.root)
        rebuilt = await Tree.build(nodes_b, sorted(data.items()))
        same = rebuilt.root == replica_b.root == edited.root
        _say(
            f"6. peer B received the old tree + those {len(ship)} nodes, and independently "
            f"rebuilt the same content from scratch: same root hash: {same}"
        )
        if not same:
            raise SystemExit("history independence violated")

        await store_a.cas_ref("branch/main", None, edited.root)
        await store_a.aclose()
        store_a = await open_store(url_a)
        head = await store_a.get_ref("branch/main")
        assert head is not None
        reopened = Tree(Nodes(store_a), head)
        ok = await reopened.items(_key(0), _key(10)) == await edited.items(_key(0), _key(10))
        _say(
            f"7. closed and reopened peer A's store: ref branch/main -> "
            f"{address_to_str(head)[:18]}..., contents intact: {ok}"
        )
        await store_a.aclose()
        await store_b.aclose()
        _say("\ndone: one root hash names one database state, on every peer.")
