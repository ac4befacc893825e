"""The transacting process of test_crash.py and test_two_writers.py (run as a subprocess).

Usage:

* ``python _tx_writer.py URL loop`` — connect to branch ``main`` of the database at ``URL``,
  find the first ``w/n`` not in it yet (one more than the largest), print ``ready <next>``,
  then transact ``{"w/n": i, "w/v": value_of(i)}`` for ``i = next, next + 1, ...`` forever.
  test_crash.py SIGKILLs it at random moments.
* ``python _tx_writer.py URL range START COUNT`` — connect, print ``ready <START>``, wait for a
  line ``go`` on stdin (so that two writers start transacting at the same moment), transact
  ``START .. START + COUNT - 1``, print ``done <failed cas_ref calls>`` and exit 0.

After each ``await conn.transact(...)`` returns (the transaction is durable and the branch
moved), it prints ``ack <i> <commit id hex> <parent commit id hex>``, flushed: the test may rely
on every printed line after a kill. Any exception is printed as ``error <repr>`` (exit 1).
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from typing import Any

import replica

SCHEMA = [
    {"db/ident": "w/n", "db/valueType": "db.type/long", "db/unique": "db.unique/identity"},
    {"db/ident": "w/v", "db/valueType": "db.type/string"},
]


def value_of(i: int) -> str:
    """The ``w/v`` of ``w/n`` = i: a few to a few hundred characters, so commits differ in size."""
    return f"v{i}:" + "x" * (i * 7919 % 301)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def count_cas_failures(conn: replica.Connection) -> list[int]:
    """Wrap this connection's ``store.cas_ref`` (an instance attribute, nothing else is
    touched) to count the calls that lost a race; the returned list holds the count."""
    failures = [0]
    cas_ref = conn.store.cas_ref

    async def counting(name: str, expected: bytes | None, new: bytes | None) -> bool:
        ok = await cas_ref(name, expected, new)
        if not ok:
            failures[0] += 1
        return ok

    conn.store.cas_ref = counting  # type: ignore[method-assign]
    return failures


async def transact(conn: replica.Connection, i: int) -> None:
    report = await conn.transact([{"w/n": i, "w/v": value_of(i)}])
    parents = report.db_after.parent_commit_ids
    parent = parents[0].hex() if len(parents) == 1 else "-"  # the test flags "-"
    say(f"ack {i} {report.db_after.commit_id.hex()} {parent}")


async def loop(url: str) -> None:
    async with replica.connect(url) as conn:
        present = [d.v async for d in conn.db.datoms("aevt", "w/n")]
        i = max(present, default=-1) + 1
        say(f"ready {i}")
        while True:
            await transact(conn, i)
            i += 1


async def run_range(url: str, start: int, count: int) -> None:
    async with replica.connect(url) as conn:
        failures = count_cas_failures(conn)
        say(f"ready {start}")
        line = await asyncio.to_thread(sys.stdin.readline)
        if line.strip() != "go":
            say(f"error expected 'go', got {line!r}")
            sys.exit(1)
        for i in range(start, start + count):
            await transact(conn, i)
        say(f"done {failures[0]}")


def main(argv: list[str]) -> None:
    url, mode, *rest = argv
    job: Any
    if mode == "loop":
        job = loop(url)
    elif mode == "range":
        job = run_range(url, int(rest[0]), int(rest[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    try:
        asyncio.run(job)
    except Exception as exc:
        say(f"error {exc!r}")
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
