"""The ``replica`` command (``python -m replica``): a git/Dolt-like CLI (docs/cli.md).

It lives in ``sync/`` because it drives both the database and replication, and imports flow
``store <- query <- replica <- sync`` (``replica/__main__.py`` reaches it by
``importlib.import_module``). Rules the package keeps:

* **Exit codes**: 0 success; 1 an error of the ``ReplicaError`` hierarchy (and unreadable input
  files); 2 a usage error (argparse's, and ours: :class:`UsageError`); 3 a strict merge left
  conflicts unresolved; 130 interrupted. An expected error is one line on stderr,
  ``replica: error: ...``, never a traceback (a traceback means a bug).
* **Output**: tables for people, ``--json`` (one JSON document on stdout) for programs, on
  every verb. Progress goes to stderr, only when stderr is a terminal (``--progress`` /
  ``--no-progress`` force it), as one line rewritten in place; stdout always ends with a
  summary line.
* **Configuration**: ``--db`` (``REPLICA_DB``; a plain path means ``file://<absolute path>``),
  ``--branch`` (``REPLICA_BRANCH``, default ``main``), ``--token`` (``REPLICA_TOKEN``). Global
  options may be given before or after the verb.

Modules: ``app`` (parser, :func:`main`), ``verbs`` (one database: init ... conflicts),
``remote`` (serve, sync, clone), ``upkeep`` (export, import, gc, verify, demo), ``inputs``
(URLs, EDN/JSON, commit names), ``output`` (tables, JSON, progress), ``graph`` (log --graph).
"""

from sync.cli.app import (
    COMMANDS,
    EXIT_CONFLICTS,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    build_parser,
    main,
)
from sync.cli.graph import graph_lines
from sync.cli.inputs import Refs, UnknownRef, UsageError, db_url, from_json, parse_data
from sync.cli.output import CountingStore, Progress, jsonable, render_progress, sort_key, table

__all__ = [
    "COMMANDS",
    "EXIT_CONFLICTS",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CountingStore",
    "Progress",
    "Refs",
    "UnknownRef",
    "UsageError",
    "build_parser",
    "db_url",
    "from_json",
    "graph_lines",
    "jsonable",
    "main",
    "parse_data",
    "render_progress",
    "sort_key",
    "table",
]
