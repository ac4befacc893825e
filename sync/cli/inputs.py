"""Input of the ``replica`` command: store URLs, EDN and JSON data, names of commits.

JSON tx data maps to Python data as docs/cli.md ("JSON input") says: objects are maps whose
keys are attribute idents, and one-key objects tag what JSON lacks (``{"#inst": ...}``).
Commits are named as in git: a branch, ``HEAD``, a unique id prefix, then ``~N`` / ``^N``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import replica
from query import edn
from query.types import Keyword, Symbol
from replica.db import DB
from sync.cli.output import short


class UsageError(Exception):
    """The command line is wrong (exit code 2), found after argparse accepted it."""


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def db_url(text: str) -> str:
    """A store URL from ``--db``: URLs as given, a plain path as ``file://<absolute path>``."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        return text
    return Path(text).expanduser().resolve().as_uri()


def require_db(args: argparse.Namespace) -> str:
    if not args.db:
        raise UsageError("no database given: use --db PATH|URL or set REPLICA_DB")
    return db_url(args.db)


def file_path(url: str) -> Path | None:
    parts = urlsplit(url)
    return Path(unquote(parts.path)) if parts.scheme == "file" else None


def check_exists(url: str) -> None:
    """Opening a file store creates its directory: a mistyped path must not do that."""
    path = file_path(url)
    if path is not None and not path.is_dir():
        raise replica.DatabaseNotFound(url)


def read_text(source: str, what: str) -> tuple[str, str]:
    """The text of ``source`` (a file path, or ``-`` for stdin) and its name for messages."""
    if source == "-":
        if sys.stdin.isatty():  # nothing is piped in: waiting for a typist helps nobody
            raise UsageError(f"no {what} given: name a file, or pipe it on stdin")
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(source).read_text(encoding="utf-8"), source
    except FileNotFoundError:
        raise UsageError(f"no {what} file {source!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise replica.ReplicaError(f"cannot read {what} file {source!r}: {exc}") from exc


_JSON_TAGS = {"#inst", "#uuid", "#keyword", "#symbol", "#tuple", "#lookup", "#bigdec", "#set"}


def from_json(value: Any) -> Any:
    """JSON data as the Python data of tx data (docs/cli.md, "JSON input"): objects are maps
    whose keys are attribute idents, arrays are lists, and one-key objects tag what JSON
    lacks: ``{"#inst": "2024-05-01T10:00:00Z"}``, ``{"#uuid": ...}``, ``{"#keyword": "a/b"}``,
    ``{"#symbol": ...}``, ``{"#bigdec": "1.50"}``, ``{"#set": [...]}``, ``{"#tuple": [...]}``
    and ``{"#lookup": ["person/name", "Ivan"]}`` (a lookup ref)."""
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((tag, inner),) = value.items()
            if tag in _JSON_TAGS:
                return _json_tag(tag, inner)
        return {k: from_json(v) for k, v in value.items()}
    return value


def _json_tag(tag: str, inner: Any) -> Any:
    try:
        if tag == "#inst":
            t = dt.datetime.fromisoformat(str(inner))
            return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)
        if tag == "#uuid":
            return uuid.UUID(str(inner))
        if tag == "#keyword":
            return Keyword(str(inner).lstrip(":"))
        if tag == "#symbol":
            return Symbol(str(inner))
        if tag == "#bigdec":
            return decimal.Decimal(str(inner))
        if isinstance(inner, list):
            items = [from_json(v) for v in inner]
            if tag == "#set":
                return frozenset(items)
            return tuple(items)  # #tuple, #lookup
    except (ValueError, TypeError, decimal.InvalidOperation) as exc:
        raise replica.TxDataError(f"JSON {tag} value {inner!r} is invalid: {exc}", inner) from exc
    raise replica.TxDataError(f"JSON {tag} takes an array", inner)


def parse_data(text: str, name: str, fmt: str = "auto") -> Any:
    """EDN or JSON text as Python data. ``auto``: by the file's extension, else JSON if the
    text is JSON, else EDN."""
    if fmt == "auto":
        suffix = Path(name).suffix.lower()
        fmt = "json" if suffix == ".json" else "edn" if suffix == ".edn" else "auto"
    if fmt in ("json", "auto"):
        try:
            return from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            if fmt == "json":
                raise replica.ReplicaError(
                    f"bad JSON in {name}: {exc.msg} at line {exc.lineno}, column {exc.colno}"
                ) from exc
    try:
        return edn.loads(text)
    except replica.EDNError as exc:
        raise replica.EDNError(f"bad EDN in {name}: {one_line(str(exc))}") from exc


def edn_arg(text: str, what: str) -> Any:
    try:
        return edn.loads(text)
    except replica.EDNError as exc:
        raise replica.EDNError(f"bad EDN in {what} {text!r}: {one_line(str(exc))}") from exc


def query_text(arg: str, what: str) -> tuple[str, str]:
    """A query or pattern argument: EDN text (starts with ``[`` or ``{``), ``-`` (stdin) or
    a file."""
    if arg.lstrip()[:1] in ("[", "{"):
        return arg, what
    return read_text(arg, what)


def entity_arg(text: str) -> Any:
    """EID of ``pull``: an entity id, a lookup ref ``[:attr value]`` or an ident ``:name``."""
    if re.fullmatch(r"\d+", text.strip()):
        return int(text)
    value = edn_arg(text, "entity")
    if isinstance(value, list):
        return tuple(value)
    return value


class UnknownRef(replica.BranchError, LookupError):
    """A command-line name that is neither a branch nor a commit of this database."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"{self.name!r} names no branch or commit here (see `replica branch`, `replica log`)"


_REF = re.compile(r"(?P<base>[^~^]+)(?P<moves>(?:~\d*|\^\d*)*)")


class Refs:
    """Names of commits on the command line: a branch name (its head), ``HEAD`` (the current
    branch), a commit id or a unique prefix of one (4+ hex digits, as ``log`` shows them,
    after the ``01`` version byte; or all 66), each optionally followed by ``~N`` (N first
    parents back), ``^`` / ``^N`` (first / N-th parent)."""

    def __init__(self, conn: replica.Connection) -> None:
        self.conn = conn
        self._commits: list[bytes] | None = None
        self._branches: list[str] | None = None

    async def branches(self) -> list[str]:
        if self._branches is None:
            self._branches = await self.conn.branches()
        return self._branches

    async def commits(self) -> list[bytes]:
        if self._commits is None:
            seen: dict[bytes, None] = {}
            for name in await self.branches():
                for c in await self.conn.branch_history(name):
                    seen[c] = None
            self._commits = list(seen)
        return self._commits

    async def _base(self, base: str) -> bytes:
        name = self.conn.branch_name if base == "HEAD" else base
        if name in await self.branches():
            return (await self.conn.branch_as_db(name)).commit_id
        text = base.lower()
        if re.fullmatch(r"[0-9a-f]{66}", text):
            address = bytes.fromhex(text)
            try:
                await self.conn.commit_as_db(address)
            except replica.NoSuchCommit:
                raise UnknownRef(base) from None
            return address
        if not re.fullmatch(r"[0-9a-f]{4,64}", text):
            raise UnknownRef(base)
        found = [c for c in await self.commits() if c.hex()[2:].startswith(text)]
        if not found:
            raise UnknownRef(base)
        if len(found) > 1:
            shown = ", ".join(short(c) for c in found[:4])
            raise replica.BranchError(f"commit prefix {base!r} is ambiguous ({shown}, ...)")
        return found[0]

    async def resolve(self, text: str) -> bytes:
        m = _REF.fullmatch(text.strip())
        if not m:
            raise UnknownRef(text)
        commit = await self._base(m["base"])
        for move in re.findall(r"~\d*|\^\d*", m["moves"]):
            steps, which = (
                (int(move[1:] or 1), 0) if move[0] == "~" else (1, int(move[1:] or 1) - 1)
            )
            for _ in range(steps):
                parents = await self.conn.parent_commit_ids(commit)
                if which >= len(parents):
                    raise UnknownRef(text)
                commit = parents[which]
        return commit

    async def db(self, text: str) -> DB:
        """The DB a name stands for (a branch with several heads: their merge)."""
        name = self.conn.branch_name if text == "HEAD" else text
        if name in await self.branches():
            return await self.conn.branch_as_db(name)
        return await self.conn.commit_as_db(await self.resolve(text))

    async def time_point(self, text: str) -> Any:
        """``--as-of``/``--since``: a tx id (digits), an ISO 8601 date or time (UTC unless it
        says otherwise), or a commit name (see the class docstring)."""
        t = text.strip()
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", t):
            try:
                when = dt.datetime.fromisoformat(t)
            except ValueError as exc:
                raise UsageError(f"bad time {text!r}: {exc}") from None
            return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when
        if re.fullmatch(r"\d+", t) and (len(t) >= 20 or int(t) == 0):
            return int(t)
        try:
            return await self.resolve(t)
        except UnknownRef:
            if re.fullmatch(r"\d+", t):
                return int(t)
            raise
