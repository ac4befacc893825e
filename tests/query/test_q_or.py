"""``or`` and ``or-join``: branches, ``and`` inside ``or``, required variables, sources
(DESIGN.md section 6).

Follows DataScript's test/datascript/test/query_or.cljc: test-or, test-or-join (with
issue-348 and the collection-source rows), test-default-source (names in ``$``, ages in
``$2``) and test-const-substitution (issue-468/469, its ``:parent`` database with entity ids
1, 2, 3 for Ivan, Oleg, Petr as DataScript assigns them). Its test-errors rows are in
test_q_errors.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.query._qtable import Db as D
from tests.query._qtable import K, MakeConn, S, Setup, run

SCHEMA = [
    {"db/ident": "name", "db/valueType": "db.type/string"},
    {"db/ident": "age", "db/valueType": "db.type/long"},
    {"db/ident": "parent", "db/valueType": "db.type/ref"},
]
DATABASES = {
    "main": Setup(
        SCHEMA,
        [
            (
                "setup",
                [
                    {"db/id": 1, "name": "Ivan", "age": 10},
                    {"db/id": 2, "name": "Ivan", "age": 20},
                    {"db/id": 3, "name": "Oleg", "age": 10},
                    {"db/id": 4, "name": "Oleg", "age": 20},
                    {"db/id": 5, "name": "Ivan", "age": 10},
                    {"db/id": 6, "name": "Ivan", "age": 20},
                ],
            )
        ],
    ),
    "names": Setup(
        SCHEMA, [("names", [["db/add", 1, "name", "Ivan"], ["db/add", 2, "name", "Oleg"]])]
    ),
    "ages": Setup(SCHEMA, [("ages", [["db/add", 1, "age", 10], ["db/add", 2, "age", 20]])]),
    "family": Setup(
        SCHEMA,
        [
            (
                "family",
                [
                    {"db/id": 1, "name": "Ivan"},
                    {"db/id": 2, "name": "Oleg", "parent": 1},
                    {"db/id": 3, "name": "Petr", "parent": 2},
                ],
            )
        ],
    ),
}


def es(*ids: int) -> set[tuple[int]]:
    return {(e,) for e in ids}


def find_e(where: str) -> str:
    return f"[:find ?e :where {where}]"


def two(where: str) -> str:
    return f"[:find ?e :in $ $2 :where {where}]"


NAMES_AGES = [D("names"), D("ages")]
XS = [[K("a1"), K("b1"), K("c1")], [K("a2"), K("b2"), K("c2")], [K("a3"), K("b3"), K("c3")]]
YS = [[K("a1"), K("b1"), K("d1")], [K("a2"), K("b2*"), K("d2")], [K("a4"), K("b4"), K("c4")]]
FAMILY_Q = (
    "[:find ?name ?x ?y :in $ ?name :where [?x :name ?name] "
    "(or-join [?x ?y] (and [?x :parent ?z] [?z :parent ?y]) {last})]"
)

ROWS = [
    # -- test-or -----------------------------------------------------------------------------
    pytest.param(
        find_e('(or [?e :name "Oleg"] [?e :age 10])'), [D()], es(1, 3, 4, 5), id="intersecting"
    ),
    pytest.param(
        find_e('(or [?e :name "Oleg"] [?e :age 30])'), [D()], es(3, 4), id="one-branch-empty"
    ),
    pytest.param(
        find_e('(or [?e :name "Petr"] [?e :age 30])'), [D()], set(), id="both-branches-empty"
    ),
    pytest.param(
        find_e('[?e :name "Ivan"] (or [?e :name "Oleg"] [?e :age 10])'),
        [D()],
        es(1, 5),
        id="join-with-one-var",
    ),
    pytest.param(
        find_e(
            '[?e :age ?a] (or (and [?e :name "Ivan"] [1 :age ?a]) (and [?e :name "Oleg"] [2 :age ?a]))'
        ),
        [D()],
        es(1, 5, 4),
        id="join-with-two-vars",
    ),
    pytest.param(
        find_e(
            '(or (and [?e :name "Ivan"] [1 :age ?a]) (and [?e :name "Oleg"] [2 :age ?a])) [?e :age ?a]'
        ),
        [D()],
        es(1, 5, 4),
        id="or-introduces-vars",
    ),
    pytest.param(
        find_e(
            '(or (and [?e :name "Ivan"] [1 :age ?a]) (and [2 :age ?a] [?e :name "Oleg"])) [?e :age ?a]'
        ),
        [D()],
        es(1, 5, 4),
        id="or-introduces-vars-in-different-order",
    ),
    pytest.param(
        find_e(
            "(or (and [?e :age 30] [?e :name ?n]) (and [?e :age 20] [?e :name ?n])) "
            '[(ground "Ivan") ?n]'
        ),
        [D()],
        es(2, 6),
        id="one-branch-short-circuits",
    ),
    pytest.param(
        [
            K("find"),
            S("?e"),
            K("where"),
            (S("or"), [S("?e"), K("name"), "Oleg"], [S("?e"), K("age"), 10]),
        ],
        [D()],
        es(1, 3, 4, 5),
        id="or-python-data",
    ),
    pytest.param(
        find_e('(or [?e :name "Oleg"] (and [?e :age 20] [?e :name "Ivan"]) [?e :age 30])'),
        [D()],
        es(2, 3, 4, 6),
        id="three-branches",
    ),
    pytest.param(
        find_e(
            '[?e :age ?a] (or (and [?e :age ?a] [(< ?a 15)]) (and [?e :age ?a] [?e :name "Oleg"]))'
        ),
        [D()],
        es(1, 3, 4, 5),
        id="predicate-branch",
    ),
    pytest.param(
        find_e('(or [?e :name "Oleg"] [?e :name "Oleg"])'), [D()], es(3, 4), id="same-branch-twice"
    ),
    pytest.param(
        find_e('[?e :name "Ivan"] (or [?e :age 10] (not [?e :age 10]))'),
        [D()],
        es(1, 2, 5, 6),
        id="not-inside-or",
    ),
    pytest.param(
        '[:find ?e ?a :where [?e :age ?a] (or [?e :name "Oleg"] [?e :age 10])]',
        [D()],
        {(1, 10), (3, 10), (4, 20), (5, 10)},
        id="or-keeps-outer-vars",
    ),
    # -- test-or-join ------------------------------------------------------------------------
    pytest.param(
        find_e("(or-join [?e] [?e :name ?n] (and [?e :age ?a] [?e :name ?n]))"),
        [D()],
        es(1, 2, 3, 4, 5, 6),
        id="or-join",
    ),
    pytest.param(
        find_e("[?e :name ?a] [?e2 :name ?a] (or-join [?e] (and [?e :age ?a] [?e2 :age ?a]))"),
        [D()],
        es(1, 2, 3, 4, 5, 6),
        id="or-join-inner-vars-are-local",
    ),
    pytest.param(
        find_e(
            "(or-join [?e ?n] (and [?e :age 30] [?e :name ?n]) (and [?e :age 20] [?e :name ?n])) "
            '[(ground "Ivan") ?n]'
        ),
        [D()],
        es(2, 6),
        id="or-join-one-branch-short-circuits",
    ),
    pytest.param(
        '[:find ?e :in $ ?a :where (or [?e :age ?a] [?e :name "Oleg"])]',
        [D(), 10],
        es(1, 3, 4, 5),
        id="or-with-input-issue-348",
    ),
    pytest.param(
        '[:find ?e :in $ ?a :where (or-join [?e ?a] [?e :age ?a] [?e :name "Oleg"])]',
        [D(), 10],
        es(1, 3, 4, 5),
        id="or-join-with-input-issue-348",
    ),
    pytest.param(
        '[:find ?e :in $ ?a :where (or-join [[?a] ?e] [?e :age ?a] [?e :name "Oleg"])]',
        [D(), 10],
        es(1, 3, 4, 5),
        id="or-join-required-var-issue-348",
    ),
    pytest.param(
        [
            K("find"),
            S("?e"),
            K("in"),
            S("$"),
            S("?a"),
            K("where"),
            (
                S("or-join"),
                [[S("?a")], S("?e")],
                [S("?e"), K("age"), S("?a")],
                [S("?e"), K("name"), "Oleg"],
            ),
        ],
        [D(), 10],
        es(1, 3, 4, 5),
        id="or-join-required-var-python-data",
    ),
    pytest.param(
        '[:find ?e :where [?e :age ?a] (or-join [[?a] ?e] [?e :name "Oleg"] (and [(> ?a 15)] [?e :name "Ivan"]))]',
        [D()],
        es(2, 3, 4, 6),
        id="or-join-required-var-bound-by-pattern",
    ),
    pytest.param(
        "[:find ?a ?b ?c :in $xs $ys :where [$xs ?a ?b ?c] (or-join [?a] [$ys ?a ?b ?d])]",
        [XS, YS],
        {(K("a1"), K("b1"), K("c1")), (K("a2"), K("b2"), K("c2"))},
        id="or-join-collections-join-by-declared-var-only",
    ),
    pytest.param(
        "[:find ?a ?c :in $xs $ys :where (or-join [?a ?c] [$xs ?a ?b ?c] [$ys ?a ?c])]",
        [[[K("a1"), K("b1"), K("c1")]], [[K("a2"), K("c2")]]],
        {(K("a1"), K("c1")), (K("a2"), K("c2"))},
        id="or-join-collections-rel-with-hole",
    ),
    # -- test-default-source -----------------------------------------------------------------
    pytest.param(two('[?e :name] (or [?e :name "Ivan"])'), NAMES_AGES, es(1), id="inherits-$"),
    pytest.param(two("[?e :name] (or [$2 ?e :age 10])"), NAMES_AGES, es(1), id="references-$2"),
    pytest.param(two("[?e :name] ($2 or [?e :age 10])"), NAMES_AGES, es(1), id="changes-default"),
    pytest.param(
        two('[?e :name] ($2 or [$ ?e :name "Ivan"])'),
        NAMES_AGES,
        es(1),
        id="changed-default-references-$",
    ),
    pytest.param(
        two("[?e :name] ($2 or (or [?e :age 10]))"),
        NAMES_AGES,
        es(1),
        id="nested-keeps-changed-default",
    ),
    pytest.param(
        two('[?e :name] ($2 or ($ or [?e :name "Ivan"]))'),
        NAMES_AGES,
        es(1),
        id="nested-overrides-default",
    ),
    pytest.param(
        two("[?e :name] ($2 or-join [?e] [?e :age 20])"),
        NAMES_AGES,
        es(2),
        id="or-join-changes-default",
    ),
    # -- test-const-substitution (issue-468, issue-469) --------------------------------------
    pytest.param(
        FAMILY_Q.format(last="[?y :parent ?x]"),
        [D("family"), "Ivan"],
        {("Ivan", 1, 2)},
        id="const-substitution-issue-468",
    ),
    pytest.param(
        FAMILY_Q.format(last="[?x :parent ?y]"),
        [D("family"), "Ivan"],
        set(),
        id="const-substitution-issue-469",
    ),
    pytest.param(
        FAMILY_Q.format(last="[?x :parent ?y]"),
        [D("family"), "Petr"],
        {("Petr", 3, 1), ("Petr", 3, 2)},
        id="const-substitution-both-branches",
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
