"""Transaction functions: ``["db.fn/call", name, *args]`` runs a Python function registered on
the connection with ``conn.register_tx_fn(name, fn)`` (DESIGN.md 5; never code from a peer),
after DataScript's test-db-fn (test/datascript/test/transact.cljc).

``fn(db, *args)`` (plain or async) gets the database as it was before the transaction and
returns tx data, which takes the place of the call; it may call functions in turn (to a
bounded depth). Its tempids are the transaction's tempids.

Each row: a transaction, and every p/* datom afterwards as ``(label, attribute, value)``
(setup entities by label, others by name). Errors: an unregistered function, a function that
raises, or returns something that is not tx data, is a TxFunctionError naming the function; a
TransactionError the function raises passes through as it is. Nothing is written.

Where we differ from DataScript: a function sees the database before the transaction, not the
state after the ops before it (DataScript passes the intermediate database); and functions
are called only through ``db.fn/call``, not as operations named by an ident with ``db/fn``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

import replica
from replica import (
    CasFailed,
    LookupRefNotFound,
    ReplicaError,
    TxDataError,
    TxFunctionError,
    UnknownAttribute,
)
from tests.replica._txtable import MakeConn, assert_rejected

SCHEMA = [
    {"db/ident": "p/name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "p/age", "db/valueType": "db.type/long"},
    {"db/ident": "p/birthday", "db/valueType": "db.type/boolean"},
    {"db/ident": "p/seen", "db/valueType": "db.type/long"},
    {"db/ident": "p/friend", "db/valueType": "db.type/ref"},
]
SETUP = [{"db/id": "ivan", "p/name": "Ivan", "p/age": 31}]
IVAN = {("ivan", "p/name", "Ivan"), ("ivan", "p/age", 31)}


async def inc_age(db: replica.DB, name: str) -> list[Any]:
    """Async, reads the database (DataScript's inc-age)."""
    found = await db.datoms("avet", "p/name", name)
    if not found:
        raise ValueError(f"No entity with name: {name}")
    e = found[0].e
    (age,) = [d.v for d in await db.datoms("eavt", e, "p/age")]
    return [{"db/id": e, "p/age": age + 1}, ["db/add", e, "p/birthday", True]]


def seen_age(db: replica.DB, name: str) -> Awaitable[list[Any]]:
    """Records the age the function saw: the database before the transaction."""

    async def run() -> list[Any]:
        e = (await db.datoms("avet", "p/name", name))[0].e
        (age,) = [d.v for d in await db.datoms("eavt", e, "p/age")]
        return [["db/add", e, "p/seen", age]]

    return run()


def forever(db: replica.DB, n: int) -> list[Any]:
    return [["db.fn/call", "forever", n + 1]]


def fail_cas(db: replica.DB) -> list[Any]:
    raise CasFailed(1, "p/age", 1, 2)


FNS: dict[str, Callable[..., Any]] = {
    "inc-age": inc_age,
    "seen-age": seen_age,
    "make": lambda db, name: [{"p/name": name}],
    "make-temp": lambda db, name: [{"db/id": -1, "p/name": name}],
    "make-friend": lambda db, name: [
        {"db/id": "f", "p/name": name},
        ["db/add", ("p/name", "Ivan"), "p/friend", "f"],
    ],
    "twice": lambda db, name: [["db.fn/call", "inc-age", name], ["db.fn/call", "make", name + "2"]],
    "noop": lambda db: [],
    "as-tuple": lambda db, name: ({"p/name": name},),
    "edn-args": lambda db, kw, n: [{"p/name": f"{kw}-{n}"}],
    "forever": forever,
    "boom": lambda db: 1 // 0,
    "five": lambda db: 5,
    "none": lambda db: None,
    "unknown-attr": lambda db: [{"p/nope": 1}],
    "missing-ref": lambda db: [["db/add", ("p/name", "Nobody"), "p/age", 1]],
    "fail-cas": fail_cas,
    "no-args": lambda db: [],
}


async def setup(make_conn: MakeConn) -> tuple[replica.Connection, dict[str, int]]:
    conn = await make_conn(SCHEMA)
    for name, fn in FNS.items():
        conn.register_tx_fn(name, fn)
    ids = {k: v for k, v in (await conn.transact(SETUP)).tempids.items() if k != "db/current-tx"}
    return conn, ids


async def user_datoms(db: replica.DB, names: Mapping[int, str]) -> set[tuple[str, str, Any]]:
    datoms = [d for d in await db.datoms("eavt") if d.a.startswith("p/")]
    by_name = {d.e: d.v for d in datoms if d.a == "p/name"}

    def label(e: int) -> str:
        return names.get(e) or by_name[e]

    return {(label(d.e), d.a, label(d.v) if d.a == "p/friend" else d.v) for d in datoms}


CASES = {
    "a function that reads the database": (
        [["db.fn/call", "inc-age", "Ivan"]],
        {("ivan", "p/name", "Ivan"), ("ivan", "p/age", 32), ("ivan", "p/birthday", True)},
    ),
    "a map without db/id (issue-474)": (
        [["db.fn/call", "make", "Oleg"]],
        IVAN | {("Oleg", "p/name", "Oleg")},
    ),
    "a function's tempid upserts": (
        [["db.fn/call", "make-temp", "Ivan"]],
        IVAN,
    ),
    "a function's tempids are the transaction's": (
        [["db.fn/call", "make-temp", "Vera"], ["db/add", -1, "p/age", 20]],
        IVAN | {("Vera", "p/name", "Vera"), ("Vera", "p/age", 20)},
    ),
    "a function with a lookup ref and a string tempid": (
        [["db.fn/call", "make-friend", "Petr"]],
        IVAN | {("Petr", "p/name", "Petr"), ("ivan", "p/friend", "Petr")},
    ),
    "a function calling functions": (
        [["db.fn/call", "twice", "Ivan"]],
        {
            ("ivan", "p/name", "Ivan"),
            ("ivan", "p/age", 32),
            ("ivan", "p/birthday", True),
            ("Ivan2", "p/name", "Ivan2"),
        },
    ),
    "the function sees the database before the transaction": (
        [["db/add", ("p/name", "Ivan"), "p/age", 40], ["db.fn/call", "seen-age", "Ivan"]],
        {("ivan", "p/name", "Ivan"), ("ivan", "p/age", 40), ("ivan", "p/seen", 31)},
    ),
    "the result takes the place of the call": (
        [["db/add", ("p/name", "Ivan"), "p/age", 40], ["db.fn/call", "inc-age", "Ivan"]],
        {("ivan", "p/name", "Ivan"), ("ivan", "p/age", 32), ("ivan", "p/birthday", True)},
    ),
    "an empty result": ([["db.fn/call", "noop"]], IVAN),
    "a tuple result": ([["db.fn/call", "as-tuple", "Oleg"]], IVAN | {("Oleg", "p/name", "Oleg")}),
    "two calls of one function": (
        [["db.fn/call", "make", "A"], ["db.fn/call", "make", "B"]],
        IVAN | {("A", "p/name", "A"), ("B", "p/name", "B")},
    ),
    "EDN: the name as a keyword, EDN arguments": (
        "[[:db.fn/call :edn-args :x 7]]",
        IVAN | {("x-7", "p/name", "x-7")},
    ),
}


@pytest.mark.parametrize(("tx", "expected"), CASES.values(), ids=CASES.keys())
async def test_tx_fns(make_conn: MakeConn, tx: Any, expected: set[tuple[str, str, Any]]) -> None:
    conn, ids = await setup(make_conn)
    await conn.transact(tx)
    assert await user_datoms(conn.db, {v: k for k, v in ids.items()}) == expected


async def test_tempids_of_a_function_are_reported(make_conn: MakeConn) -> None:
    conn, ids = await setup(make_conn)
    report = await conn.transact([["db.fn/call", "make-temp", "Vera"]])
    vera = (await conn.db.datoms("avet", "p/name", "Vera"))[0].e
    assert report.tempids[-1] == vera
    report = await conn.transact([["db.fn/call", "make-temp", "Ivan"]])
    assert report.tempids[-1] == ids["ivan"]


BAD = {
    "an unregistered function": (
        [["db.fn/call", "nope"]],
        TxFunctionError,
        ("'nope'", "no transaction function"),
    ),
    "the function raises": (
        [["db.fn/call", "inc-age", "Bob"]],
        TxFunctionError,
        ("'inc-age'", "No entity with name: Bob"),
    ),
    "the function raises ZeroDivisionError": (
        [["db.fn/call", "boom"]],
        TxFunctionError,
        ("'boom'", "ZeroDivisionError"),
    ),
    "wrong arguments for the function": (
        [["db.fn/call", "no-args", 1, 2]],
        TxFunctionError,
        ("'no-args'", "TypeError"),
    ),
    "a result that is not tx data": (
        [["db.fn/call", "five"]],
        TxFunctionError,
        ("'five'", "5"),
    ),
    "a None result": (
        [["db.fn/call", "none"]],
        TxFunctionError,
        ("'none'", "None"),
    ),
    "a result with an unknown attribute": (
        [["db.fn/call", "unknown-attr"]],
        UnknownAttribute,
        ("'p/nope'",),
    ),
    "a result with a lookup ref that finds nothing": (
        [["db.fn/call", "missing-ref"]],
        LookupRefNotFound,
        ("'Nobody'",),
    ),
    "a TransactionError passes through": (
        [["db.fn/call", "fail-cas"]],
        CasFailed,
        ("p/age",),
    ),
    "endless recursion": (
        [["db.fn/call", "forever", 0]],
        TxFunctionError,
        ("deeper than", "'forever'"),
    ),
    "a function name that is not a string": (
        [["db.fn/call", 5]],
        TxDataError,
        ("db.fn/call", "5"),
    ),
    "a call without a name": (
        [["db.fn/call"]],
        TxDataError,
        ("db.fn/call",),
    ),
    "a failing call after good data": (
        [{"p/name": "Oleg"}, ["db.fn/call", "boom"]],
        TxFunctionError,
        ("'boom'",),
    ),
}


@pytest.mark.parametrize(("tx", "error", "fragments"), BAD.values(), ids=BAD.keys())
async def test_failing_tx_fns_write_nothing(
    make_conn: MakeConn, tx: Any, error: type[ReplicaError], fragments: tuple[str, ...]
) -> None:
    conn, _ = await setup(make_conn)
    await assert_rejected(conn, tx, error, *fragments)


async def test_the_function_error_keeps_its_cause(make_conn: MakeConn) -> None:
    conn, _ = await setup(make_conn)
    with pytest.raises(TxFunctionError) as info:
        await conn.transact([["db.fn/call", "inc-age", "Bob"]])
    assert isinstance(info.value.__cause__, ValueError)


async def test_functions_are_per_connection(make_conn: MakeConn) -> None:
    """A function is registered on one connection: another connection to the same database
    does not have it (functions are local code, never stored or replicated)."""
    conn, _ = await setup(make_conn)
    other = await replica.connect(conn.url)
    try:
        with pytest.raises(TxFunctionError, match="'make'"):
            await other.transact([["db.fn/call", "make", "Oleg"]])
        other.register_tx_fn("make", FNS["make"])
        await other.transact([["db.fn/call", "make", "Oleg"]])
        assert len(await (await conn.refresh()).datoms("avet", "p/name", "Oleg")) == 1
    finally:
        await other.aclose()


async def test_registering_a_non_callable_is_refused(make_conn: MakeConn) -> None:
    conn, _ = await setup(make_conn)
    with pytest.raises(TxDataError):
        conn.register_tx_fn("x", 5)  # type: ignore[arg-type]
