"""Queries over time: ``db.history`` (retractions included, the added position telling which),
``db.as_of(tx)``, ``db.since(tx)``, their combinations, and several of them as sources of one
query (DESIGN.md sections 5 and 6).

DataScript keeps no history; this follows Datahike's test/datahike/test/time_variance_test.cljc
(test-base-history, test-as-of-db, test-since-db, upsert-history) and Datomic's documented
semantics: ``as_of(t)`` is the database as of transaction ``t``; ``since(t)`` holds the current
datoms asserted by transactions after ``t``; ``history`` holds every assertion and retraction,
each with its tx; the transaction entity carries ``:db/txInstant`` in its own transaction.

Three setup transactions (ids ``Tx("t1")``...; entity ids as in the rows)::

    t1: Alice (1) age 25, Bob (2) age 35
    t2: Alice's age -> 30 (25 retracted), Bob renamed "Robert" ("Bob" retracted)
    t3: Alice retracted entirely (name "Alice", age 30), Carol (3) age 40 added
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.query._qtable import Db as D
from tests.query._qtable import MakeConn, Setup, Tx, run

SCHEMA = [
    {"db/ident": "name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "age", "db/valueType": "db.type/long"},
]
DATABASES = {
    "main": Setup(
        SCHEMA,
        [
            (
                "t1",
                [{"db/id": 1, "name": "Alice", "age": 25}, {"db/id": 2, "name": "Bob", "age": 35}],
            ),
            ("t2", [{"db/id": 1, "age": 30}, {"db/id": 2, "name": "Robert"}]),
            ("t3", [["db/retractEntity", 1], {"db/id": 3, "name": "Carol", "age": 40}]),
        ],
    )
}
NAME_AGE = "[:find ?n ?a :where [?e :name ?n] [?e :age ?a]]"
NAMES = "[:find ?n :where [_ :name ?n]]"
AGES_OF_1 = "[:find ?a :where [1 :age ?a]]"
ADDED_OF_1 = "[:find ?a ?added :where [1 :age ?a _ ?added]]"
T1, T2, T3 = Tx("t1"), Tx("t2"), Tx("t3")
HIST = D("main", "history")

ROWS = [
    # -- current, as-of ----------------------------------------------------------------------
    pytest.param(NAME_AGE, [D()], {("Robert", 35), ("Carol", 40)}, id="current"),
    pytest.param(NAME_AGE, [D("main", "as_of:t1")], {("Alice", 25), ("Bob", 35)}, id="as-of-t1"),
    pytest.param(NAME_AGE, [D("main", "as_of:t2")], {("Alice", 30), ("Robert", 35)}, id="as-of-t2"),
    pytest.param(
        NAME_AGE, [D("main", "as_of:t3")], {("Robert", 35), ("Carol", 40)}, id="as-of-last-tx"
    ),
    pytest.param(
        '[:find ?e . :where [?e :name "Alice"]]', [D("main", "as_of:t2")], 1, id="as-of-scalar"
    ),
    pytest.param(
        '[:find ?e . :where [?e :name "Alice"]]', [D()], None, id="retracted-entity-is-gone"
    ),
    pytest.param(ADDED_OF_1, [D("main", "as_of:t2")], {(30, True)}, id="as-of-has-only-assertions"),
    pytest.param(
        "[:find ?a :in $ ?e :where [?e :age ?a]]",
        [D("main", "as_of:t1"), ("name", "Alice")],
        {(25,)},
        id="as-of-lookup-ref",  # Datahike test-as-of-db "use transaction ID"
    ),
    pytest.param(
        "[:find ?a :in $ ?e :where [?e :age ?a]]",
        [D(), ("name", "Robert")],
        {(35,)},
        id="current-lookup-ref",
    ),
    # -- since -------------------------------------------------------------------------------
    pytest.param(NAMES, [D("main", "since:t1")], {("Robert",), ("Carol",)}, id="since-t1"),
    pytest.param(
        "[:find ?e ?n ?a :where [?e :name ?n] [?e :age ?a]]",
        [D("main", "since:t1")],
        {(3, "Carol", 40)},  # Robert's age is from t1: not in the since view
        id="since-t1-join",
    ),
    pytest.param(NAMES, [D("main", "since:t2")], {("Carol",)}, id="since-t2"),
    pytest.param(NAMES, [D("main", "since:t3")], set(), id="since-last-tx-is-empty"),
    pytest.param(
        "[:find ?a :where [?e :age ?a]]", [D("main", "since:t1")], {(40,)}, id="since-t1-ages"
    ),
    # -- history -----------------------------------------------------------------------------
    pytest.param(
        NAMES,
        [HIST],
        {("Alice",), ("Bob",), ("Robert",), ("Carol",)},
        id="history-every-value",
    ),
    pytest.param(AGES_OF_1, [HIST], {(25,), (30,)}, id="history-values-of-retracted-entity"),
    pytest.param(
        ADDED_OF_1,
        [HIST],
        {(25, True), (25, False), (30, True), (30, False)},
        id="history-added",
    ),
    pytest.param(
        "[:find ?a ?tx ?added :where [1 :age ?a ?tx ?added]]",
        [HIST],
        {(25, T1, True), (25, T2, False), (30, T2, True), (30, T3, False)},
        id="history-tx-and-added",  # Datahike upsert-history
    ),
    pytest.param(
        "[:find ?n ?a :where [?r :age ?a _ false] [?r :name ?n _ false]]",
        [HIST],
        {("Alice", 25), ("Alice", 30)},
        id="history-retracted-values",  # Datahike "find retracted values"
    ),
    pytest.param(
        '[:find ?tx :where [2 :name "Bob" ?tx false]]',
        [HIST],
        {(T2,)},
        id="history-tx-of-retraction",
    ),
    pytest.param(
        '[:find ?tx ?added :where [1 :name "Alice" ?tx ?added]]',
        [HIST],
        {(T1, True), (T3, False)},
        id="history-assert-and-retract-tx",
    ),
    pytest.param(
        "[:find ?e ?n ?tx :where [?e :name ?n ?tx true]]",
        [HIST],
        {(1, "Alice", T1), (2, "Bob", T1), (2, "Robert", T2), (3, "Carol", T3)},
        id="history-assertions",
    ),
    pytest.param(
        "[:find ?a ?op :where [1 :age ?a ?t ?op] [?t :db/txInstant _]]",
        [HIST],
        {(25, True), (25, False), (30, True), (30, False)},
        id="history-joined-with-tx-entity",  # Datahike "find source transaction ..."
    ),
    pytest.param(
        "[:find ?e :in $ ?tx :where [?e _ _ ?tx]]",
        [HIST, T2],
        {(1,), (2,), (T2,)},  # the tx entity's :db/txInstant is in its own tx
        id="history-everything-of-one-tx",
    ),
    pytest.param(
        "[:find ?n :in $ ?e :where [?e :name ?n]]",
        [HIST, ("name", "Robert")],
        {("Bob",), ("Robert",)},
        id="history-lookup-ref",  # Datahike "historical values"
    ),
    pytest.param(
        "[:find (count ?a) . :where [_ :age ?a _ true]]", [HIST], 4, id="history-count-values"
    ),
    pytest.param(
        "[:find (count ?a) . :with ?tx ?added :where [1 :age ?a ?tx ?added]]",
        [HIST],
        4,
        id="history-count-with",
    ),
    # -- views combined ----------------------------------------------------------------------
    pytest.param(AGES_OF_1, [D("main", "as_of:t1", "history")], {(25,)}, id="as-of-then-history"),
    pytest.param(AGES_OF_1, [D("main", "history", "as_of:t1")], {(25,)}, id="history-then-as-of"),
    pytest.param(AGES_OF_1, [D("main", "since:t2", "history")], {(30,)}, id="since-then-history"),
    pytest.param(AGES_OF_1, [D("main", "history", "since:t2")], {(30,)}, id="history-then-since"),
    pytest.param(
        ADDED_OF_1,
        [D("main", "history", "as_of:t2")],
        {(25, True), (25, False), (30, True)},
        id="history-as-of-added",
    ),
    # -- several views as sources ------------------------------------------------------------
    pytest.param(
        '[:find ?old :in $ $h :where [$ ?e :name "Robert"] [$h ?e :name ?old]]',
        [D(), HIST],
        {("Bob",), ("Robert",)},
        id="current-joined-with-history",
    ),
    pytest.param(
        "[:find ?e ?n :in $ $then :where [$then ?e :name ?n] (not [$ ?e :name ?n])]",
        [D(), D("main", "as_of:t1")],
        {(1, "Alice"), (2, "Bob")},
        id="names-gone-since-t1",
    ),
    pytest.param(
        "[:find ?n ?before ?after :in $before $after "
        ":where [$after ?e :name ?n] [$before ?e :age ?before] [$after ?e :age ?after]]",
        [D("main", "as_of:t1"), D("main", "as_of:t2")],
        {("Alice", 25, 30), ("Robert", 35, 35)},
        id="two-as-of-views",
    ),
    # -- the tx position on the current database ---------------------------------------------
    pytest.param(
        "[:find ?tx :where [_ :name _ ?tx]]", [D()], {(T2,), (T3,)}, id="current-name-txs"
    ),
    pytest.param(
        "[:find ?e :in $ ?tx :where [?tx :db/txInstant _] [?e :age _ ?tx]]",
        [D(), T1],
        {(2,)},
        id="current-datoms-of-t1",
    ),
]


@pytest.mark.parametrize(("query", "inputs", "expected"), ROWS)
async def test_q(
    make_conn: MakeConn,
    new_db_url: Callable[[], str],
    query: Any,
    inputs: list[Any],
    expected: Any,
) -> None:
    await run(make_conn, new_db_url, DATABASES, query, inputs, expected)
