"""The ``replica`` command line: the parser (global options, verbs, help with examples) and
:func:`main`, which runs a verb and turns errors into one line and an exit code."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

import replica
from sync.cli import remote, upkeep, verbs
from sync.cli.inputs import UsageError, one_line
from sync.cli.output import echo_err
from sync.cli.verbs import PROG, StrictConflicts
from sync.peer import single

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFLICTS = 3
EXIT_INTERRUPTED = 130

COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "init": verbs.cmd_init,
    "transact": verbs.cmd_transact,
    "query": verbs.cmd_query,
    "pull": verbs.cmd_pull,
    "log": verbs.cmd_log,
    "show": verbs.cmd_show,
    "diff": verbs.cmd_diff,
    "branch": verbs.cmd_branch,
    "merge": verbs.cmd_merge,
    "conflicts": verbs.cmd_conflicts,
    "serve": remote.cmd_serve,
    "sync": remote.cmd_sync,
    "clone": remote.cmd_clone,
    "import": upkeep.cmd_import,
    "export": upkeep.cmd_export,
    "gc": upkeep.cmd_gc,
    "verify": upkeep.cmd_verify,
    "demo": upkeep.cmd_demo,
}


_EPILOG = """\
examples:
  replica --db ./people init --schema schema.edn
  replica --db ./people transact people.edn
  replica --db ./people query '[:find ?n :where [_ :person/name ?n]]'
  replica --db ./people log --graph
  export REPLICA_DB=./people   # then --db can be left out

A plain path for --db means file://<absolute path>; URLs: file:///abs/path, s3://bucket/prefix,
mem://. Exit codes: 0 ok, 1 error, 2 usage error, 3 strict merge with unresolved conflicts.
See docs/cli.md."""

_VERBS: dict[str, tuple[str, str]] = {
    "init": (
        "create a database (optionally with a schema)",
        """\
examples:
  replica --db ./people init
  replica --db ./people init --schema schema.edn
  replica --db ./people init --schema schema.json --json""",
    ),
    "transact": (
        "transact EDN or JSON tx data from a file or stdin",
        """\
examples:
  replica transact people.edn
  echo '[{:person/name "Ivan" :person/age 15}]' | replica transact
  replica transact --data '[[:db/add "ivan" :person/name "Ivan"]]'
  replica transact people.json          # [{"person/name": "Ivan", "person/age": 15}]
  replica transact --batch 10000 big.edn   # bulk load in several commits, with progress

JSON tags: {"#inst": "2024-05-01T10:00:00Z"}, {"#uuid": "..."}, {"#keyword": "a/b"},
{"#lookup": ["person/name", "Ivan"]}, {"#tuple": [...]}, {"#set": [...]}, {"#bigdec": "1.5"}.""",
    ),
    "query": (
        "run a Datalog query",
        """\
examples:
  replica query '[:find ?n ?a :where [?e :person/name ?n] [?e :person/age ?a]]'
  replica query '[:find ?a . :in $ ?n :where [?e :person/name ?n] [?e :person/age ?a]]' --in '"Ivan"'
  replica query query.edn --as-of 2024-05-01T12:00:00Z --json
  replica query '[:find ?a ?added :where [_ :person/age ?a _ ?added]]' --history
  replica query '[:find (count ?e) . :where [?e :person/name]]' --branch experiment

Time points (--as-of, --since): a tx id, an ISO 8601 time (UTC unless it says otherwise)
or a commit (id prefix, branch name, HEAD~2).""",
    ),
    "pull": (
        "pull an entity by a pattern",
        """\
examples:
  replica pull '[*]' '[:person/name "Ivan"]'
  replica pull '[:person/name {:person/friend [:person/name]}]' 4098508536442177242511488896
  replica pull '[*]' '[:person/name "Ivan"]' --as-of HEAD~1 --json""",
    ),
    "log": (
        "list the commits of a branch, newest first",
        """\
examples:
  replica log
  replica log --graph            # the commit DAG: merges show as |\\ and |/
  replica log -n 5 --branch experiment --json""",
    ),
    "show": (
        "show a commit: its datoms and, for a merge, its conflicts",
        """\
examples:
  replica show HEAD
  replica show 3f2a9c01bd
  replica show main~2 --json""",
    ),
    "diff": (
        "datoms added and retracted between two commits or branches",
        """\
examples:
  replica diff main experiment
  replica diff HEAD~3 HEAD --stat
  replica diff 3f2a9c01bd main --json""",
    ),
    "branch": (
        "list, create, delete or reset branches",
        """\
examples:
  replica branch                         # list (* marks the current branch)
  replica branch experiment              # create at the current branch's head
  replica branch hotfix --from 3f2a9c01bd
  replica branch -d experiment
  replica branch --reset main HEAD~1     # force main to a commit""",
    ),
    "merge": (
        "merge another branch (or commit) into the current branch",
        """\
examples:
  replica merge experiment
  replica merge experiment --strict      # exit code 3 if there are conflicts, nothing written
  replica merge experiment --tx fix.edn  # merge, then transact fix.edn on the result
  replica --branch experiment merge main""",
    ),
    "conflicts": (
        "list the conflicts merges resolved on the current branch",
        """\
examples:
  replica conflicts
  replica conflicts --branch main --json""",
    ),
    "serve": (
        "serve the database to peers over websockets (until Ctrl-C)",
        """\
examples:
  replica serve --port 8765
  replica serve --host 0.0.0.0 --port 8765 --token s3cret
  replica serve --port 8765 --tokens tokens.json --branches main,shared
  replica serve --port 8443 --cert cert.pem --key key.pem    # wss://

tokens.json: {"TOKEN": "rw", "OTHER": "ro", "THIRD": {"read": ["*"], "write": ["main"]}}
Without --token/--tokens anyone who can connect may read and write: bind 127.0.0.1 then.""",
    ),
    "sync": (
        "sync once with a peer: exchange what each side lacks",
        """\
examples:
  replica sync ws://cloud.example:8765 --token s3cret
  replica sync wss://cloud.example:8443 --cacert ca.pem --branches main
  REPLICA_TOKEN=s3cret replica sync ws://127.0.0.1:8765 --json""",
    ),
    "clone": (
        "copy a peer's database into a new file store",
        """\
examples:
  replica clone ws://cloud.example:8765 ./people --token s3cret
  replica --db ./people log""",
    ),
    "import": (
        "load an export file into an empty store",
        """\
examples:
  replica --db ./copy import people.replica""",
    ),
    "export": (
        "write the whole database (all branches, all history) to a file",
        """\
examples:
  replica --db ./people export people.replica""",
    ),
    "gc": (
        "delete nodes no branch can reach",
        """\
examples:
  replica gc                 # waits a 60 s grace period for writers in flight
  replica gc --grace 0       # nobody else is writing""",
    ),
    "verify": (
        "re-read every node of a branch and check its hash",
        """\
examples:
  replica verify
  replica verify --all --json""",
    ),
    "demo": (
        "a cloud peer and three edge devices: offline writes, sync, merge, one root hash",
        """\
examples:
  replica demo
  replica demo --readings 1000 --dir /tmp/replica-demo""",
    ),
}


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (the verb's usage is one ``-h`` away)."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(suppress: bool) -> _Parser:
    """The global options, accepted before and after the verb (after it they default to
    'not given', so the value given before the verb, or the environment's, stands)."""
    p = _Parser(add_help=False)
    d: Callable[[Any], Any] = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument(
        "--db",
        metavar="URL",
        default=d(os.environ.get("REPLICA_DB")),
        help="the database: a path or a store URL (env REPLICA_DB)",
    )
    p.add_argument(
        "--branch",
        metavar="NAME",
        default=d(os.environ.get("REPLICA_BRANCH") or "main"),
        help="the branch to work on (env REPLICA_BRANCH; default main)",
    )
    p.add_argument(
        "--json", action="store_true", default=d(False), help="print JSON instead of tables"
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=d(None),
        help="show progress on stderr (default: when stderr is a terminal)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=d(False),
        help="log what the database and peers do, with tracebacks of logged errors",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="replica: an immutable, versioned Datalog database that replicates.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(False)],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {replica.__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    sub: dict[str, argparse.ArgumentParser] = {}
    common = _common(True)
    for name, (summary, examples) in _VERBS.items():
        sub[name] = verbs.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )

    def fmt(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--format",
            choices=["auto", "edn", "json"],
            default="auto",
            help="input format (default: by extension, else JSON if it parses, else EDN)",
        )

    def views(p: argparse.ArgumentParser, history: bool = True) -> None:
        p.add_argument("--as-of", metavar="T", help="the database as of T (tx id, time, commit)")
        p.add_argument("--since", metavar="T", help="only datoms of transactions after T")
        if history:
            p.add_argument(
                "--history",
                action="store_true",
                help="every assertion and retraction (bind ?added as a 5th term)",
            )

    p = sub["init"]
    p.add_argument("--schema", metavar="FILE", help="schema tx data (EDN or JSON) to transact")
    p.add_argument(
        "--schema-on-read",
        action="store_true",
        help="accept attributes without a schema (Datahike's :schema-flexibility :read)",
    )
    fmt(p)

    p = sub["transact"]
    p.add_argument("file", nargs="?", metavar="FILE", help="tx data file; '-' or absent: stdin")
    p.add_argument("--data", metavar="TEXT", help="tx data given inline instead of FILE")
    p.add_argument("--meta", metavar="EDN", help="tx metadata, an EDN map")
    p.add_argument(
        "--batch",
        type=positive,
        metavar="N",
        help="transact in batches of N items (one commit each; not atomic)",
    )
    fmt(p)

    p = sub["query"]
    p.add_argument("query", metavar="QUERY", help="EDN query text, a file, or '-' (stdin)")
    p.add_argument(
        "--in",
        dest="inputs",
        action="append",
        metavar="EDN",
        help="a value for the query's :in, after its sources (repeat in order)",
    )
    views(p)

    p = sub["pull"]
    p.add_argument("pattern", metavar="PATTERN", help="EDN pull pattern, or a file")
    p.add_argument("eid", metavar="EID", help="entity id, lookup ref [:attr value] or :ident")
    views(p, history=False)

    p = sub["log"]
    p.add_argument("--graph", action="store_true", help="draw the commit DAG")
    p.add_argument("-n", "--limit", type=positive, metavar="N", help="show N commits")

    p = sub["show"]
    p.add_argument(
        "commit",
        metavar="COMMIT",
        nargs="?",
        default="HEAD",
        help="commit id prefix, branch name or HEAD~N (default HEAD)",
    )

    p = sub["diff"]
    p.add_argument("a", metavar="A", help="commit or branch (the old side)")
    p.add_argument("b", metavar="B", help="commit or branch (the new side)")
    p.add_argument("--stat", action="store_true", help="counts per attribute only")

    p = sub["branch"]
    p.add_argument("name", nargs="?", metavar="NAME", help="branch to create, delete or reset")
    p.add_argument("target", nargs="?", metavar="COMMIT", help="with --reset: the commit")
    p.add_argument("--from", dest="from_", metavar="X", help="create NAME at commit/branch X")
    p.add_argument("-d", "--delete", action="store_true", help="delete NAME")
    p.add_argument("--reset", action="store_true", help="force NAME to COMMIT")

    p = sub["merge"]
    p.add_argument("other", metavar="OTHER", help="branch name or commit to merge")
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit code 3, nothing written) if there are conflicts",
    )
    p.add_argument("--tx", metavar="FILE", help="tx data to transact on the merged value")
    fmt(p)

    p = sub["conflicts"]
    p.add_argument("--as-of", metavar="T", help="the conflicts recorded as of T")

    p = sub["serve"]
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free)")
    p.add_argument(
        "--token",
        default=os.environ.get("REPLICA_TOKEN"),
        help="one bearer token giving full access (env REPLICA_TOKEN)",
    )
    p.add_argument("--tokens", metavar="FILE", help="token -> permissions file (JSON or EDN)")
    p.add_argument("--cert", metavar="PEM", help="TLS certificate chain (serve wss://)")
    p.add_argument("--key", metavar="PEM", help="TLS private key")
    p.add_argument("--branches", metavar="A,B", help="serve only these branches")

    for name in ("sync", "clone"):
        p = sub[name]
        p.add_argument("url", metavar="URL", help="the peer, ws://host:port or wss://host:port")
        if name == "clone":
            p.add_argument("dir", metavar="DIR", help="new directory for the file store")
        p.add_argument(
            "--token",
            default=os.environ.get("REPLICA_TOKEN"),
            help="bearer token (env REPLICA_TOKEN)",
        )
        p.add_argument("--cacert", metavar="PEM", help="CA certificate to trust for wss://")
        p.add_argument("--branches", metavar="A,B", help="sync only these branches")
        p.add_argument(
            "--timeout",
            type=float,
            default=300.0,
            metavar="SECONDS",
            help="give up after this long (default 300)",
        )

    sub["import"].add_argument("file", metavar="FILE", help="a file written by export")
    sub["export"].add_argument("file", metavar="FILE", help="the file to write")
    sub["gc"].add_argument(
        "--grace",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="spare unreachable nodes younger than this (default 60)",
    )
    sub["verify"].add_argument("--all", action="store_true", help="every branch")
    sub["demo"].add_argument(
        "--readings", type=positive, default=200, help="readings per edge device (default 200)"
    )
    sub["demo"].add_argument("--dir", default=None, help="store directory (default: a temp dir)")
    return parser


def positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return n


class _OneLine(logging.Formatter):
    """Log records as ``replica: warning: message``: one line, no traceback."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {one_line(record.getMessage())}"


@contextlib.contextmanager
def _logging(verbose: bool, verb: str) -> Any:
    """Library log records go to stderr: warnings as one line each (a server's sessions
    failing must not print tracebacks), everything with tracebacks under ``--verbose``. A
    one-shot ``sync``/``clone`` reports its link's failure as its error line, so the link's
    own log record of it is not shown as well."""
    link = logging.getLogger("replica.sync")
    old_link = link.level
    if verb in ("sync", "clone") and not verbose:
        link.setLevel(logging.CRITICAL)
    handler = logging.StreamHandler(sys.stderr)
    if verbose:
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_OneLine())
    root = logging.getLogger("replica")
    old_level, old_propagate = root.level, root.propagate
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        root.propagate = old_propagate
        link.setLevel(old_link)


def _message(exc: BaseException) -> str:
    if isinstance(exc, replica.DatabaseNotFound):
        return f"no database at {exc.url} (create one with `{PROG} --db ... init`)"
    text = one_line(str(exc)) or type(exc).__name__
    # a wrapped error may repeat its wrapper's words ("sync with X failed: sync with X
    # failed: ..."): say them once
    return re.sub(r"^(.{8,}?: )\1+", r"\1", text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``replica`` command; returns its exit code (docs/cli.md)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help (0) and usage errors (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    command = COMMANDS[args.verb]
    try:
        try:
            with _logging(args.verbose, args.verb):
                return anyio.run(command, args)
        except BaseExceptionGroup as group:
            raise single(group) from None
    except StrictConflicts:
        return EXIT_CONFLICTS
    except UsageError as exc:
        echo_err(f"{PROG} {args.verb}: error: {exc}")
        return EXIT_USAGE
    except replica.ReplicaError as exc:
        echo_err(f"{PROG}: error: {_message(exc)}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        echo_err(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (``replica log | head``): not an error of ours
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
