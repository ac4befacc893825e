"""Shared pieces of the query table tests (tests/query/test_q_*.py), after DataScript's tests.

Each test file declares its databases (``DATABASES``: a name -> :class:`Setup`), then a table of
``pytest.param(query, inputs, expected, id=...)`` rows run by :func:`run`:

* ``inputs`` are the arguments of ``replica.q`` after the query. A :class:`Db` marker stands for
  one of the file's databases (built on the store under test only when a row uses it; the
  first one at ``db_url``, the others at fresh URLs of the same kind), optionally seen through
  views (``Db("main", "history")``, ``Db("main", "as_of:t1")``). A :class:`Tx` marker stands
  for the tx id of a labelled setup transaction (tx ids are 128-bit and random).
* ``expected`` says both the value and the shape of the result (see :func:`check`): a ``set``
  (a relation: the result must be a ``set`` of tuples; a ``frozenset`` is a plain value), :class:`Bag` (a ``list``, order
  ignored, duplicates counted), :class:`Seq` (a ``list`` in this order), :class:`OneOf` (any of
  these values), :class:`Check` (a predicate, for random results), or any other value (scalar
  or tuple finds; ``None`` for no result; ``pytest.approx`` for floats).

Values compare as the EDN <-> Python mapping says they should: a ``Keyword`` equals the plain
``str`` (so expected values may use either); inside values, vectors and lists (``list`` /
``tuple``) compare alike, as do ``set`` and ``frozenset``; but ``True`` never equals ``1``.

Expected values come from DataScript's (or Datahike's) test expectations, translated; they were
never produced by running replica's engine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

import replica
from replica import Keyword, Symbol

__all__ = [
    "Bag",
    "Check",
    "Db",
    "K",
    "MakeConn",
    "OneOf",
    "S",
    "Seq",
    "Setup",
    "Tx",
    "check",
    "run",
    "run_error",
]

K = Keyword
"""``K("name")`` is the EDN keyword ``:name`` (in Python-data queries and inputs)."""
S = Symbol
"""``S("?e")`` is the EDN symbol ``?e`` (variables, ``_``, ``$``, function names)."""

MakeConn = Callable[..., Awaitable[replica.Connection]]


@dataclass(frozen=True)
class Setup:
    """A database of a test file: its schema and its setup transactions ``(label, tx_data)``,
    transacted in order. ``options`` go to ``replica.connect`` (e.g. schema_flexibility)."""

    schema: Any
    txs: Sequence[tuple[str, Any]]
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Db:
    """The DB value of the file's database ``name``, through ``views`` applied left to right:
    ``"history"``, ``"as_of:<tx label>"``, ``"since:<tx label>"``."""

    name: str = "main"
    views: tuple[str, ...] = ()

    def __init__(self, name: str = "main", *views: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "views", tuple(views))


@dataclass(frozen=True)
class Tx:
    """The tx id of the setup transaction labelled ``label``."""

    label: str


class Bag:
    """A ``list`` result whose order does not matter (a bag: duplicates count)."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = list(items)

    def __repr__(self) -> str:
        return f"Bag({self.items!r})"


class Seq:
    """A ``list`` result in exactly this order."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = list(items)

    def __repr__(self) -> str:
        return f"Seq({self.items!r})"


class OneOf:
    """Any one of these values (DataScript: "multiple results get cut")."""

    def __init__(self, options: Iterable[Any]) -> None:
        self.options = list(options)

    def __repr__(self) -> str:
        return f"OneOf({self.options!r})"


class Check:
    """A result accepted by a predicate (for rand / sample); ``what`` says what is expected."""

    def __init__(self, what: str, fn: Callable[[Any], bool]) -> None:
        self.what = what
        self.fn = fn

    def __repr__(self) -> str:
        return f"Check({self.what!r})"


# -- comparison --------------------------------------------------------------------------------


def norm(x: Any) -> Any:
    """A hashable form of ``x`` for comparisons: bools apart from ints, list == tuple,
    set == frozenset, dicts by their items; Keyword/Symbol stay equal to str."""
    if isinstance(x, bool):
        return ("\x00bool", x)
    if isinstance(x, list | tuple):
        return ("\x00seq", tuple(norm(i) for i in x))
    if isinstance(x, set | frozenset):
        return ("\x00set", frozenset(norm(i) for i in x))
    if isinstance(x, dict):
        return ("\x00map", frozenset((norm(k), norm(v)) for k, v in x.items()))
    return x


def _bag(items: Iterable[Any]) -> Counter[Any]:
    return Counter(norm(i) for i in items)


def check(result: Any, expected: Any) -> None:
    """Assert that ``result`` has the value and the shape ``expected`` describes."""
    if isinstance(expected, Check):
        assert expected.fn(result), f"expected {expected.what}, got {result!r}"
    elif isinstance(expected, OneOf):
        assert norm(result) in {norm(o) for o in expected.options}, (
            f"expected one of {expected.options!r}, got {result!r}"
        )
    elif isinstance(expected, Bag):
        assert isinstance(result, list), f"expected a list, got {type(result).__name__}: {result!r}"
        assert _bag(result) == _bag(expected.items), f"{result!r} != {expected!r}"
    elif isinstance(expected, Seq):
        assert isinstance(result, list), f"expected a list, got {type(result).__name__}: {result!r}"
        assert [norm(r) for r in result] == [norm(e) for e in expected.items], (
            f"{result!r} != {expected!r}"
        )
    elif type(expected) is set:  # a relation (a frozenset is a value: the distinct aggregate)
        assert isinstance(result, set), f"expected a set, got {type(result).__name__}: {result!r}"
        for row in result:
            assert isinstance(row, tuple), f"a row must be a tuple, got {row!r}"
        assert _bag(result) == _bag(expected), f"{result!r} != {expected!r}"
    elif expected is None:
        assert result is None, f"expected None, got {result!r}"
    elif isinstance(expected, tuple):
        assert isinstance(result, tuple), f"expected a tuple, got {result!r}"
        assert norm(result) == norm(expected), f"{result!r} != {expected!r}"
    elif isinstance(expected, dict):
        assert isinstance(result, dict), f"expected a dict, got {result!r}"
        assert norm(result) == norm(expected), f"{result!r} != {expected!r}"
    elif type(expected).__module__.startswith("_pytest"):  # pytest.approx
        assert result == expected
    else:
        assert norm(result) == norm(expected), f"{result!r} != {expected!r}"


# -- databases and markers ---------------------------------------------------------------------


def _markers(data: Any, kind: type) -> list[Any]:
    out: list[Any] = []
    if isinstance(data, kind):
        out.append(data)
    elif isinstance(data, dict):
        for k, v in data.items():
            out += _markers(k, kind) + _markers(v, kind)
    elif isinstance(data, list | tuple | set | frozenset):
        for x in data:
            out += _markers(x, kind)
    elif isinstance(data, Bag | Seq):
        out += _markers(data.items, kind)
    elif isinstance(data, OneOf):
        out += _markers(data.options, kind)
    return out


async def build(
    make_conn: MakeConn,
    new_db_url: Callable[[], str],
    databases: Mapping[str, Setup],
    names: Iterable[str],
) -> tuple[dict[str, replica.DB], dict[str, int]]:
    """Create the named databases (the first at ``db_url``, the others at fresh URLs), run
    their setup transactions; their DB values by name and the setup tx ids by label."""
    dbs: dict[str, replica.DB] = {}
    txs: dict[str, int] = {}
    for i, name in enumerate(dict.fromkeys(names)):
        setup = databases[name]
        url = None if i == 0 else new_db_url()
        conn = await make_conn(setup.schema, url=url, **dict(setup.options))
        for label, tx_data in setup.txs:
            report = await conn.transact(tx_data)
            txs[label] = report.tx
        dbs[name] = conn.db
    return dbs, txs


def _view(db: replica.DB, view: str, txs: Mapping[str, int]) -> replica.DB:
    if view == "history":
        return db.history
    kind, _, label = view.partition(":")
    if kind == "as_of":
        return db.as_of(txs[label])
    if kind == "since":
        return db.since(txs[label])
    raise ValueError(f"unknown view {view!r}")


def resolve(data: Any, dbs: Mapping[str, replica.DB], txs: Mapping[str, int]) -> Any:
    """``data`` with every Db and Tx marker replaced by its value."""
    if isinstance(data, Db):
        db = dbs[data.name]
        for view in data.views:
            db = _view(db, view, txs)
        return db
    if isinstance(data, Tx):
        return txs[data.label]
    if isinstance(data, dict):
        return {resolve(k, dbs, txs): resolve(v, dbs, txs) for k, v in data.items()}
    if isinstance(data, list):
        return [resolve(x, dbs, txs) for x in data]
    if isinstance(data, tuple):
        return tuple(resolve(x, dbs, txs) for x in data)
    if isinstance(data, set | frozenset):
        return type(data)(resolve(x, dbs, txs) for x in data)
    if isinstance(data, Bag):
        return Bag(resolve(data.items, dbs, txs))
    if isinstance(data, Seq):
        return Seq(resolve(data.items, dbs, txs))
    if isinstance(data, OneOf):
        return OneOf(resolve(data.options, dbs, txs))
    return data


async def _prepare(
    make_conn: MakeConn,
    new_db_url: Callable[[], str],
    databases: Mapping[str, Setup],
    inputs: Sequence[Any],
    also_tx: Any = None,
) -> tuple[dict[str, replica.DB], dict[str, int]]:
    names = [m.name for m in _markers(list(inputs), Db)]
    # Tx markers need the database that made them: with no Db input, build the first one.
    if not names and (_markers(list(inputs), Tx) or _markers(also_tx, Tx)):
        names = [next(iter(databases))]
    return await build(make_conn, new_db_url, databases, names)


async def run(
    make_conn: MakeConn,
    new_db_url: Callable[[], str],
    databases: Mapping[str, Setup],
    query: Any,
    inputs: Sequence[Any],
    expected: Any,
) -> None:
    """Build what the row needs, run ``replica.q(query, *inputs)``, check the result."""
    dbs, txs = await _prepare(make_conn, new_db_url, databases, inputs, expected)
    result = await replica.q(query, *resolve(list(inputs), dbs, txs))
    check(result, resolve(expected, dbs, txs))


async def run_error(
    make_conn: MakeConn,
    new_db_url: Callable[[], str],
    databases: Mapping[str, Setup],
    query: Any,
    inputs: Sequence[Any],
    error: type[Exception],
    fragments: Sequence[str],
) -> Exception:
    """``replica.q(query, *inputs)`` raises ``error`` (or a subclass) whose message holds
    every fragment, compared case-insensitively (DataScript's wording, not its letter case)."""
    dbs, txs = await _prepare(make_conn, new_db_url, databases, inputs)
    with pytest.raises(error) as info:
        await replica.q(query, *resolve(list(inputs), dbs, txs))
    message = str(info.value).lower()
    for fragment in fragments:
        assert fragment.lower() in message, f"{fragment!r} not in {str(info.value)!r}"
    return info.value
