"""The writer that test_file_crash.py runs as a subprocess and SIGKILLs at random moments.

Usage: ``python _file_crash_writer.py URL SEED SEGMENT_SIZE BIG``. Loops forever:

1. put a batch of random nodes and a *manifest* node (the concatenated addresses of the batch),
   in one ``put_many`` or in two (nodes first, then the manifest); then print ``B <manifest>``;
2. move the ref ``head`` from its previous value to the manifest with ``cas_ref``; then print
   ``R <manifest>``.

With BIG=1 the first batch also holds one node of several MiB, so that a kill soon after
``ready`` is likely to land inside its write (a torn tail).

Every printed line acknowledges a step that has returned, so the test may rely on it after the
kill. ``ready`` is printed once the store is open (after any repair of earlier crashes).
"""

from __future__ import annotations

import asyncio
import random
import sys

from store.codec import address_of
from store.file import FileStore


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(url: str, seed: int, segment_size: int, big: bool) -> None:
    rng = random.Random(seed)
    store = await FileStore.open(url, segment_size=segment_size)
    head = await store.get_ref("head")
    say("ready")
    while True:
        nodes = {}
        for _ in range(rng.randint(10, 40)):
            data = rng.randbytes(rng.randint(300, 4096))
            nodes[address_of(data)] = data
        if big:
            data = rng.randbytes(rng.randint(4, 8) * 1024 * 1024)
            nodes[address_of(data)] = data
            big = False
        manifest = b"".join(nodes)
        manifest_address = address_of(manifest)
        if rng.random() < 0.5:
            await store.put_many({**nodes, manifest_address: manifest})
        else:
            await store.put_many(nodes)
            await store.put_many({manifest_address: manifest})
        say(f"B {manifest_address.hex()}")
        if not await store.cas_ref("head", head, manifest_address):
            say("E cas_ref lost a race nobody else runs")
            return
        head = manifest_address
        say(f"R {manifest_address.hex()}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"))
