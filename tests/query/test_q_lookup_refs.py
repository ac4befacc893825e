"""Lookup refs ``[attr value]`` in queries: as the entity of a pattern, as the value of a ref
attribute, in ``:in`` (scalar, collection, tuple), against several sources; a lookup ref that
names nothing (DESIGN.md section 6).

Follows DataScript's test/datascript/test/lookup_refs.cljc test-lookup-refs-query (its
databases: ``:name`` unique identity, ``:friend`` a ref) and Datahike's time_variance_test.cljc
("Nothing found for entity id" for an ``:in`` lookup ref that names nothing).

Lookup refs are given as Python tuples (the DESIGN.md mapping); as in DataScript, a variable
bound by ``:in`` to a lookup ref keeps that lookup ref as its value in the results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from replica import QueryError
from tests.query._qtable import Bag, K, MakeConn, S, Setup, run, run_error
from tests.query._qtable import Db as D

SCHEMA = [
    {"db/ident": "name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "id", "db/valueType": "db.type/long"},
    {"db/ident": "age", "db/valueType": "db.type/long"},
    {"db/ident": "friend", "db/valueType": "db.type/ref"},
]
DATABASES = {
    "main": Setup(
        SCHEMA,
        [
            (
                "setup",
                [
                    {"db/id": 1, "id": 1, "name": "Ivan", "age": 11, "friend": 2},
                    {"db/id": 2, "id": 2, "name": "Petr", "age": 22, "friend": 3},
                    {"db/id": 3, "id": 3, "name": "Oleg", "age": 33},
                ],
            )
        ],
    ),
    # the same names on other entity ids
    "db2": Setup(
        SCHEMA,
        [
            (
                "db2",
                [
                    {"db/id": 3, "name": "Ivan", "id": 3},
                    {"db/id": 1, "name": "Petr", "id": 1},
                    {"db/id": 2, "name": "Oleg", "id": 2},
                ],
            )
        ],
    ),
}
IVAN = ("name", "Ivan")
PETR = ("name", "Petr")
OLEG = ("name", "Oleg")

ROWS = [
    # -- test-lookup-refs-query --------------------------------------------------------------
    pytest.param(
        "[:find ?e ?v :in $ ?e :where [?e :age ?v]]",
        [D(), IVAN],
        {(IVAN, 11)},
        id="in-scalar-entity",
    ),
    pytest.param(
        "[:find [?v ...] :in $ [?e ...] :where [?e :age ?v]]",
        [D(), [IVAN, PETR]],
        Bag([11, 22]),
        id="in-collection-entity",
    ),
    pytest.param(
        "[:find [?e ...] :in $ ?v :where [?e :friend ?v]]",
        [D(), PETR],
        Bag([1]),
        id="in-scalar-ref-value",
    ),
    pytest.param(
        "[:find [?e ...] :in $ [?v ...] :where [?e :friend ?v]]",
        [D(), [PETR, OLEG]],
        Bag([1, 2]),
        id="in-collection-ref-value",
    ),
    pytest.param(
        "[:find ?e ?v :in $ ?e ?v :where [?e :friend ?v]]",
        [D(), IVAN, PETR],
        {(IVAN, PETR)},
        id="in-entity-and-ref-value",
    ),
    pytest.param(
        "[:find ?e ?v :in $ [?e ...] [?v ...] :where [?e :friend ?v]]",
        [D(), [IVAN, PETR, OLEG], [IVAN, PETR, OLEG]],
        {(IVAN, PETR), (PETR, OLEG)},
        id="in-two-collections",
    ),
    pytest.param(
        "[:find ?e :in $ [?e ...] :where [?e :friend 3]]",
        [D(), [1, 2, 3, "A"]],
        {(2,)},
        id="in-collection-with-a-non-entity-issue-214",
    ),
    pytest.param(
        "[:find ?e ?e1 ?e2 :in $1 $2 [?e ...] :where [$1 ?e :id ?e1] [$2 ?e :id ?e2]]",
        [D(), D("db2"), [IVAN, PETR, OLEG]],
        {(IVAN, 1, 3), (PETR, 2, 1), (OLEG, 3, 2)},
        id="resolved-per-source",
    ),
    pytest.param(
        '[:find ?v :where [[:name "Ivan"] :friend ?v]]', [D()], {(2,)}, id="inline-entity"
    ),
    pytest.param(
        '[:find ?e :where [?e :friend [:name "Petr"]]]', [D()], {(1,)}, id="inline-ref-value"
    ),
    # -- more uses ---------------------------------------------------------------------------
    pytest.param(
        [K("find"), S("?v"), K("where"), [[K("name"), "Ivan"], K("friend"), S("?v")]],
        [D()],
        {(2,)},
        id="inline-entity-python-data",
    ),
    pytest.param(
        [K("find"), S("?e"), K("where"), [S("?e"), K("friend"), [K("name"), "Petr"]]],
        [D()],
        {(1,)},
        id="inline-ref-value-python-data",
    ),
    pytest.param(
        '[:find ?n :where [[:name "Ivan"] :friend ?f] [?f :friend ?g] [?g :name ?n]]',
        [D()],
        {("Oleg",)},
        id="inline-entity-then-join",
    ),
    pytest.param(
        '[:find ?e :where [?e :name] (not [?e :friend [:name "Petr"]])]',
        [D()],
        {(2,), (3,)},
        id="inline-ref-value-in-not",
    ),
    pytest.param(
        '[:find ?a :where [[:name "Oleg"] :age ?a]]', [D()], {(33,)}, id="inline-entity-value"
    ),
    pytest.param(
        "[:find ?n ?a :in $ ?e :where [?e :friend ?f] [?f :name ?n] [?e :age ?a]]",
        [D(), IVAN],
        {("Petr", 11)},
        id="in-entity-used-twice",
    ),
    pytest.param(
        "[:find ?n :in $ [?f ...] :where [?e :friend ?f] [?e :name ?n]]",
        [D(), [PETR, OLEG]],
        {("Ivan",), ("Petr",)},
        id="in-collection-ref-value-joined",
    ),
    pytest.param(
        "[:find ?a :in $ [?e ?attr] :where [?e ?attr ?a]]",
        [D(), (OLEG, K("age"))],
        {(33,)},
        id="in-tuple-entity-and-attribute",
    ),
    pytest.param(
        '[:find ?e :in $ [?e ...] :where [?e :name "Oleg"]]',
        [D(), [IVAN, OLEG]],
        {(OLEG,)},
        id="in-collection-keeps-lookup-ref",
    ),
    pytest.param(
        "[:find [?v ...] :in $ ?e :where [?e :name ?v]]",
        [D(), ["name", "Petr"]],
        Bag(["Petr"]),
        id="in-lookup-ref-as-list",
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


ERRORS = [
    pytest.param(
        '[:find ?e :where [[:name "Valery"] :friend ?e]]',
        [D()],
        ("nothing found", "Valery"),
        id="inline-entity-names-nothing",  # lookup_refs.cljc
    ),
    pytest.param(
        "[:find ?a :in $ ?e :where [?e :age ?a]]",
        [D(), ("name", "Valery")],
        ("nothing found", "Valery"),
        id="in-entity-names-nothing",  # Datahike time_variance_test.cljc
    ),
]


@pytest.mark.parametrize(("query", "inputs", "fragments"), ERRORS)
async def test_unknown_lookup_ref(
    make_conn: MakeConn,
    new_db_url: Callable[[], str],
    query: Any,
    inputs: list[Any],
    fragments: tuple[str, ...],
) -> None:
    await run_error(make_conn, new_db_url, DATABASES, query, inputs, QueryError, fragments)
