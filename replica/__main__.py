"""``python -m replica`` / the ``replica`` command. For now it has one verb, ``demo``."""

from __future__ import annotations

import argparse
import sys

import anyio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="replica",
        description="replica: an immutable, versioned Datalog database that replicates.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    demo = verbs.add_parser(
        "demo",
        help="show the storage layer at work (file store + prolly trees)",
        description="Build, edit, diff and reopen prolly trees on a durable file store in a "
        "temporary directory, printing what happens. Example: replica demo --items 200000",
    )
    demo.add_argument("--items", type=int, default=100_000, help="items in the tree")
    demo.add_argument("--dir", default=None, help="store directory (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.verb == "demo":
        from replica.demo import run_demo

        anyio.run(run_demo, args.items, args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
