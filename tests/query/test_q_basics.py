"""Data patterns, joins, constants, ``_``, attribute variables, the tx and added positions,
several sources and plain Python collections as sources (DESIGN.md section 6).

Follows DataScript's test/datascript/test/query.cljc (test-joins, test-q-many, test-q-coll,
test-q-in "Named DB" / "DB join with collection", issue-425, issue-462) and
query_pull.cljc test-multiple-sources; the tx/added rows follow Datahike's
time_variance_test.cljc (every transaction entity carries ``:db/txInstant``).

The main database merges DataScript's test-joins and test-q-many databases (``:aka`` only on
entities 1 and 2, which changes none of test-joins' answers). Rows are EDN strings, some
Python data (``K``/``S`` from tests/query/_qtable.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.query._qtable import Db as D
from tests.query._qtable import K, MakeConn, S, Seq, Setup, Tx, run

SCHEMA = [
    {"db/ident": "name", "db/valueType": "db.type/string"},
    {"db/ident": "age", "db/valueType": "db.type/long"},
    {"db/ident": "aka", "db/valueType": "db.type/string", "db/cardinality": "db.cardinality/many"},
]
DATABASES = {
    "main": Setup(
        SCHEMA,
        [
            (
                "setup",
                [
                    {"db/id": 1, "name": "Ivan", "age": 15, "aka": ["ivolga", "pi"]},
                    {"db/id": 2, "name": "Petr", "age": 37, "aka": ["porosenok", "pi"]},
                    {"db/id": 3, "name": "Ivan", "age": 37},
                    {"db/id": 4, "age": 15},
                ],
            )
        ],
    ),
    # query_pull.cljc test-multiple-sources: entity 1 has another name in the other database
    "other": Setup(
        SCHEMA,
        [("other", [{"db/id": 1, "name": "Petr", "age": 25}, {"db/id": 5, "name": "Sergey"}])],
    ),
}

# query.cljc test-q-coll
COLL = [
    [1, K("name"), "Ivan"],
    [1, K("age"), 19],
    [1, K("aka"), "dragon_killer_94"],
    [1, K("aka"), "-=autobot=-"],
]
# query.cljc test-q-coll "Query over long tuples"
LONG = [
    (1, K("name"), "Ivan", 945, K("db/add")),
    (1, K("age"), 39, 999, K("db/retract")),
]
FOLLOW = {(1, K("follow"), 2), (2, K("follow"), 3), (3, K("follow"), 4)}

ROWS = [
    # -- test-joins --------------------------------------------------------------------------
    pytest.param("[:find ?e :where [?e :name]]", [D()], {(1,), (2,), (3,)}, id="pattern-2-terms"),
    pytest.param(
        '[:find ?e ?v :where [?e :name "Ivan"] [?e :age ?v]]',
        [D()],
        {(1, 15), (3, 37)},
        id="join-on-entity",
    ),
    pytest.param(
        "[:find ?e1 ?e2 :where [?e1 :name ?n] [?e2 :name ?n]]",
        [D()],
        {(1, 1), (2, 2), (3, 3), (1, 3), (3, 1)},
        id="join-on-value",
    ),
    pytest.param(
        '[:find ?e ?e2 ?n :where [?e :name "Ivan"] [?e :age ?a] [?e2 :age ?a] [?e2 :name ?n]]',
        [D()],
        {(1, 1, "Ivan"), (3, 3, "Ivan"), (3, 2, "Petr")},
        id="join-chain",
    ),
    pytest.param(
        [
            K("find"),
            S("?e"),
            S("?v"),
            K("where"),
            [S("?e"), K("name"), "Ivan"],
            [S("?e"), K("age"), S("?v")],
        ],
        [D()],
        {(1, 15), (3, 37)},
        id="python-data-join-on-entity",
    ),
    pytest.param(
        {
            K("find"): [S("?e1"), S("?e2")],
            K("where"): [[S("?e1"), "name", S("?n")], [S("?e2"), "name", S("?n")]],
        },
        [D()],
        {(1, 1), (2, 2), (3, 3), (1, 3), (3, 1)},
        id="python-data-map-form-plain-str-attribute",
    ),
    # -- test-q-many -------------------------------------------------------------------------
    pytest.param(
        "[:find ?n1 ?n2 :where [?e1 :aka ?x] [?e2 :aka ?x] [?e1 :name ?n1] [?e2 :name ?n2]]",
        [D()],
        {("Ivan", "Ivan"), ("Petr", "Petr"), ("Ivan", "Petr"), ("Petr", "Ivan")},
        id="cardinality-many-join",
    ),
    pytest.param(
        "[:find ?x :where [1 :aka ?x]]", [D()], {("ivolga",), ("pi",)}, id="cardinality-many-values"
    ),
    # -- constants and _ ---------------------------------------------------------------------
    pytest.param("[:find ?e :where [?e :age 15]]", [D()], {(1,), (4,)}, id="constant-value"),
    pytest.param("[:find ?v :where [1 :name ?v]]", [D()], {("Ivan",)}, id="constant-entity"),
    pytest.param("[:find ?e :where [?e :age _]]", [D()], {(1,), (2,), (3,), (4,)}, id="_-value"),
    pytest.param("[:find ?v :where [_ :age ?v]]", [D()], {(15,), (37,)}, id="_-entity"),
    pytest.param(
        '[:find ?e :where [?e :name "Sergey"]]', [D()], set(), id="constant-matches-nothing"
    ),
    pytest.param(
        '[:find ?e :where [?e :name "Ivan"] [?e :age 99]]', [D()], set(), id="join-to-nothing"
    ),
    pytest.param(
        '[:find ?e1 ?e2 :where [?e1 :name "Petr"] [?e2 :age 15]]',
        [D()],
        {(2, 1), (2, 4)},
        id="unrelated-clauses-cartesian-product",
    ),
    pytest.param(
        '[:find ?e :where [?e :name "Ivan"] [?e :age 37] [?e :name "Ivan"]]',
        [D()],
        {(3,)},
        id="repeated-clause",
    ),
    # -- attribute as a variable (issue-462) -------------------------------------------------
    pytest.param("[:find ?a :where [3 ?a 37]]", [D()], {("age",)}, id="attr-var-e-and-v-const"),
    pytest.param(
        '[:find ?e ?a :where [?e ?a "Petr"]]', [D()], {(2, "name")}, id="attr-var-v-const"
    ),
    pytest.param(
        "[:find ?a ?v :where [3 ?a ?v]]",
        [D()],
        {("name", "Ivan"), ("age", 37)},
        id="attr-var-entity-const",
    ),
    pytest.param(
        "[:find ?e ?a ?v :in $ ?e ?a :where [?e ?a ?v]]",
        [D(), 2, K("age")],
        {(2, "age", 37)},
        id="attr-var-from-input",
    ),
    pytest.param(
        "[:find ?e2 ?a ?v :in $ ?a ?v :where [?e ?a ?v] [?e2 ?a ?v]]",
        [D(), K("age"), 37],
        {(2, "age", 37), (3, "age", 37)},
        id="attr-var-self-join",
    ),
    pytest.param(
        '[:find ?e ?a :where [(ground "Petr") ?v] [?e ?a ?v]]',
        [D()],
        {(2, "name")},
        id="attr-var-value-from-ground",
    ),
    pytest.param(
        "[:find ?a :where [1 ?a]]", [D()], {("name",), ("age",), ("aka",)}, id="attr-var-2-terms"
    ),
    # -- tx and added positions (current database: every datom is an assertion) -------------
    pytest.param(
        '[:find ?e ?tx :where [?e :name "Petr" ?tx]]',
        [D()],
        {(2, Tx("setup"))},
        id="tx-position",
    ),
    pytest.param(
        "[:find ?tx . :where [4 :age 15 ?tx]]", [D()], Tx("setup"), id="tx-position-scalar"
    ),
    pytest.param(
        "[:find ?e :in $ ?tx :where [?e :age _ ?tx]]",
        [D(), Tx("setup")],
        {(1,), (2,), (3,), (4,)},
        id="tx-position-bound-by-input",
    ),
    pytest.param(
        "[:find ?n :where [?e :name ?n ?tx] [?tx :db/txInstant _]]",
        [D()],
        {("Ivan",), ("Petr",)},
        id="tx-joins-its-txInstant",
    ),
    pytest.param(
        "[:find ?e :where [?e :name _ _ true]]",
        [D()],
        {(1,), (2,), (3,)},
        id="added-true",
    ),
    pytest.param("[:find ?e :where [?e :name _ _ false]]", [D()], set(), id="added-false"),
    pytest.param(
        "[:find ?e ?added :where [?e :age 37 _ ?added]]",
        [D()],
        {(2, True), (3, True)},
        id="added-variable",
    ),
    # -- plain Python collections as sources (test-q-coll) -----------------------------------
    pytest.param(
        '[:find ?n ?a :where [?e :aka "dragon_killer_94"] [?e :name ?n] [?e :age ?a]]',
        [COLL],
        {("Ivan", 19)},
        id="coll-list-of-lists",
    ),
    pytest.param(
        '[:find ?n ?a :where [?e :aka "dragon_killer_94"] [?e :name ?n] [?e :age ?a]]',
        [[tuple(d) for d in COLL]],
        {("Ivan", 19)},
        id="coll-list-of-tuples",
    ),
    pytest.param(
        "[:find ?e ?v :where [?e :name ?v]]", [LONG], {(1, "Ivan")}, id="coll-long-tuples"
    ),
    pytest.param(
        "[:find ?e ?a ?v ?t :where [?e ?a ?v ?t :db/retract]]",
        [LONG],
        {(1, "age", 39, 999)},
        id="coll-long-tuples-5th-position",
    ),
    pytest.param(
        "[:find ?x ?z :where [?x :follow ?y] [?y :follow ?z]]",
        [FOLLOW],
        {(1, 3), (2, 4)},
        id="coll-set-of-tuples",
    ),
    pytest.param(
        [K("find"), S("?x"), K("where"), [S("?x"), K("follow"), 2]],
        [FOLLOW],
        {(1,)},
        id="coll-python-data-query",
    ),
    pytest.param(
        "[:find [?e ...] :where [?e :s b]]",
        [[(1, K("s"), S("a")), (2, K("s"), S("b"))]],
        Seq([2]),
        id="coll-symbol-constant-issue-425",
    ),
    pytest.param("[:find ?x :where [?x :follow 9]]", [FOLLOW], set(), id="coll-no-match"),
    pytest.param("[:find ?x :where [?x :follow ?y]]", [[]], set(), id="coll-empty"),
    # -- several sources ---------------------------------------------------------------------
    pytest.param(
        "[:find ?a ?v :in $db ?e :where [$db ?e ?a ?v]]",
        [D(), 3],
        {("name", "Ivan"), ("age", 37)},
        id="named-db",  # query.cljc "Named DB", entity 3 (entity 1 also has :aka here)
    ),
    pytest.param(
        "[:find ?e ?email :in $ $b :where [?e :name ?n] [$b ?n ?email]]",
        [D(), [["Ivan", "ivan@mail.ru"], ["Petr", "petr@gmail.com"]]],
        {(1, "ivan@mail.ru"), (2, "petr@gmail.com"), (3, "ivan@mail.ru")},
        id="db-join-with-collection",
    ),
    pytest.param(
        "[:find ?e ?email :in $1 $2 :where [$1 ?e :name ?n] [$2 ?n ?email]]",
        [D(), {("Ivan", "ivan@mail.ru"), ("Petr", "petr@gmail.com")}],
        {(1, "ivan@mail.ru"), (2, "petr@gmail.com"), (3, "ivan@mail.ru")},
        id="db-join-with-set-$1-$2",
    ),
    pytest.param(
        "[:find ?e ?n2 :in $1 $2 :where [$1 ?e :name ?n] [$2 ?e :name ?n2]]",
        [D(), D("other")],
        {(1, "Petr")},
        id="two-dbs-join-on-entity",
    ),
    pytest.param(
        "[:find ?n :in $1 $2 :where [$1 _ :name ?n] [$2 _ :name ?n]]",
        [D(), D("other")],
        {("Petr",)},
        id="two-dbs-join-on-value",
    ),
    pytest.param(
        '[:find ?e :in $1 $ :where [?e :name "Petr"]]',
        [D(), D("other")],
        {(1,)},
        id="pattern-without-source-reads-$",  # query_pull.cljc "$ is default source"
    ),
    pytest.param(
        "[:find ?e ?a :in $1 $2 :where [$1 ?e :age ?a] [$2 ?e :age ?a]]",
        [D(), D("other")],
        set(),
        id="two-dbs-no-common-datom",
    ),
    pytest.param(
        [
            K("find"),
            S("?e"),
            S("?n2"),
            K("in"),
            S("$1"),
            S("$2"),
            K("where"),
            [S("$1"), S("?e"), K("name"), S("?n")],
            [S("$2"), S("?e"), K("name"), S("?n2")],
        ],
        [D(), D("other")],
        {(1, "Petr")},
        id="two-dbs-python-data",
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
