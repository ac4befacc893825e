"""``python -m replica`` / the ``replica`` command: the CLI lives in ``sync/cli/``.

The CLI drives both the database and replication, so it sits in the top layer (``sync``);
imports flow ``store <- query <- replica <- sync`` (tests/test_layering.py), hence the
import by name here instead of a static ``import sync``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``replica`` command (docs/cli.md); returns its exit code."""
    cli = importlib.import_module("sync.cli")
    code: int = cli.main(argv)
    return code


if __name__ == "__main__":
    sys.exit(main())
