"""``not`` and ``not-join``: plain, with several clauses, nested, with explicit and default
sources (DESIGN.md section 6).

Follows DataScript's test/datascript/test/query_not.cljc: test-not, test-not-join,
test-default-source (its two databases: names in ``$``, ages in ``$2``) and
test-impl-edge-cases, on its database of six entities. Its test-insufficient-bindings rows are
in test_q_errors.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.query._qtable import Bag, K, MakeConn, S, Setup, run
from tests.query._qtable import Db as D

SCHEMA = [
    {"db/ident": "name", "db/valueType": "db.type/string"},
    {"db/ident": "age", "db/valueType": "db.type/long"},
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
    # test-default-source
    "names": Setup(
        SCHEMA, [("names", [["db/add", 1, "name", "Ivan"], ["db/add", 2, "name", "Oleg"]])]
    ),
    "ages": Setup(SCHEMA, [("ages", [["db/add", 1, "age", 10], ["db/add", 2, "age", 20]])]),
}


def coll(where: str) -> str:
    """test-not: ``[:find [?e ...] :where ...]``."""
    return f"[:find [?e ...] :where {where}]"


def two(where: str) -> str:
    """test-default-source: ``[:find [?e ...] :in $ $2 :where ...]``."""
    return f"[:find [?e ...] :in $ $2 :where {where}]"


NAMES_AGES = [D("names"), D("ages")]

ROWS = [
    # -- test-not ----------------------------------------------------------------------------
    pytest.param(coll('[?e :name] (not [?e :name "Ivan"])'), [D()], Bag([3, 4]), id="not"),
    pytest.param(
        coll('[?e :name] (not [?e :name "Ivan"] [?e :age 10])'),
        [D()],
        Bag([2, 3, 4, 6]),
        id="not-two-clauses",
    ),
    pytest.param(
        coll('[?e :name] (not [?e :name "Ivan"]) (not [?e :age 10])'),
        [D()],
        Bag([4]),
        id="two-nots",
    ),
    pytest.param(coll("[?e :name] (not [?e :age])"), [D()], Bag([]), id="full-exclude"),
    pytest.param(
        coll('[?e :name "Ivan"] (not [?e :name "Oleg"])'),
        [D()],
        Bag([1, 2, 5, 6]),
        id="not-intersecting-rels",
    ),
    pytest.param(
        coll('[?e :name] (not [?e :name "Ivan"] [?e :name "Oleg"])'),
        [D()],
        Bag([1, 2, 3, 4, 5, 6]),
        id="exclude-empty-set",
    ),
    pytest.param(
        coll('[?e :name] (not [?e :name "Ivan"] (not [?e :age 10]))'),
        [D()],
        Bag([1, 3, 4, 5]),
        id="nested-not",
    ),
    pytest.param(
        coll("[?e :name ?a] (not [?e :age ?f] [?e :age 10])"),
        [D()],
        Bag([2, 4, 6]),
        id="extra-binding-in-not",
    ),
    pytest.param(
        [
            K("find"),
            [S("?e"), S("...")],
            K("where"),
            [S("?e"), K("name")],
            (S("not"), [S("?e"), K("name"), "Ivan"]),
        ],
        [D()],
        Bag([3, 4]),
        id="not-python-data",
    ),
    pytest.param(coll("[?e :age ?a] (not [(> ?a 15)])"), [D()], Bag([1, 3, 5]), id="not-predicate"),
    pytest.param(
        "[:find [?e ...] :in $ ?n :where [?e :age 10] (not [?e :name ?n])]",
        [D(), "Ivan"],
        Bag([3]),
        id="not-with-input-var",
    ),
    pytest.param(
        "[:find [?e ...] :in $ [?n ...] :where [?e :name] (not [?e :name ?n])]",
        [D(), ["Ivan", "Oleg"]],
        # not removes (?e, ?n) pairs: every ?e keeps the pair with the other name
        Bag([1, 2, 3, 4, 5, 6]),
        id="not-with-input-collection",
    ),
    pytest.param(
        "[:find [?e ...] :in $ $2 :where [?e :age 20] (not [$2 ?e])]",
        [D(), [[2], [4]]],
        Bag([6]),
        id="not-against-collection-source",
    ),
    # -- test-not-join -----------------------------------------------------------------------
    pytest.param(
        '[:find ?e ?a :where [?e :name] [?e :age ?a] (not-join [?e] [?e :name "Oleg"] [?e :age ?a])]',
        [D()],
        {(1, 10), (2, 20), (5, 10), (6, 20)},
        id="not-join",
    ),
    pytest.param(
        "[:find ?e ?a :where [?e :age ?a] [?e :age 10] "
        '(not-join [?e] [?e :name "Oleg"] [?e :age ?a] [?e :age 10])]',
        [D()],
        {(1, 10), (5, 10)},
        id="not-join-inner-var-shadows",
    ),
    pytest.param(
        '[:find ?e ?a :where [?e :age ?a] (not-join [?a] [?e :name "Petr"] [?e :age ?a])]',
        [D()],
        {(1, 10), (2, 20), (3, 10), (4, 20), (5, 10), (6, 20)},
        id="not-join-issue-481",
    ),
    pytest.param(
        '[:find ?e :where [?e :age ?a] (not-join [?a] [?x :name "Oleg"] [?x :age ?a] [(> ?a 15)])]',
        [D()],
        {(1,), (3,), (5,)},
        id="not-join-on-value",
    ),
    pytest.param(
        "[:find ?e ?e2 :where [?e :name ?n] [?e2 :name ?n] [?e :age ?a] [?e2 :age ?a] "
        "(not-join [?e ?e2] [(<= ?e ?e2)])]",
        [D()],
        {(5, 1), (6, 2)},
        id="not-join-two-vars",
    ),
    # -- test-default-source -----------------------------------------------------------------
    pytest.param(two('[?e :name] (not [?e :name "Ivan"])'), NAMES_AGES, Bag([2]), id="inherits-$"),
    pytest.param(two("[?e :name] (not [$2 ?e :age 10])"), NAMES_AGES, Bag([2]), id="references-$2"),
    pytest.param(
        two("[?e :name] ($2 not [?e :age 10])"), NAMES_AGES, Bag([2]), id="changes-default"
    ),
    pytest.param(
        two('[?e :name] ($2 not [$ ?e :name "Ivan"])'),
        NAMES_AGES,
        Bag([2]),
        id="changed-default-references-$",
    ),
    pytest.param(
        two("[?e :name] ($2 not (not [?e :age 10]))"),
        NAMES_AGES,
        Bag([1]),
        id="nested-keeps-changed-default",
    ),
    pytest.param(
        two('[?e :name] ($2 not ($ not [?e :name "Ivan"]))'),
        NAMES_AGES,
        Bag([1]),
        id="nested-overrides-default",
    ),
    pytest.param(
        "[:find [?e ...] :in $ $2 :where [?e :name] ($2 not-join [?e] [?e :age 10])]",
        NAMES_AGES,
        Bag([2]),
        id="not-join-changes-default",
    ),
    # -- test-impl-edge-cases ----------------------------------------------------------------
    pytest.param(
        '[:find ?e :where [?e :name "Oleg"] [?e :age 10] (not [?e :age 20])]',
        [D()],
        {(3,)},
        id="const-minus-empty",
    ),
    pytest.param(
        '[:find ?e :where [?e :name "Oleg"] [?e :age 10] (not [?e :age 10])]',
        [D()],
        set(),
        id="const-minus-const",
    ),
    pytest.param(
        '[:find ?e :where [?e :name "Oleg"] (not [?e :age 10])]',
        [D()],
        {(4,)},
        id="rel-minus-const",
    ),
    pytest.param(
        '[:find ?e ?e2 :where [?e :name "Ivan"] [?e2 :name "Ivan"] (not [?e :age 10] [?e2 :age 20])]',
        [D()],
        {
            (2, 1),
            (6, 5),
            (1, 1),
            (2, 2),
            (5, 5),
            (6, 6),
            (2, 5),
            (1, 5),
            (2, 6),
            (6, 1),
            (5, 1),
            (6, 2),
        },
        id="two-rels-minus-two-rels",
    ),
    pytest.param(
        '[:find ?e ?e2 :where [?e :name "Ivan"] [?e2 :name "Oleg"] (not [?e :age 10] [?e2 :age 20])]',
        [D()],
        {(2, 3), (1, 3), (2, 4), (6, 3), (5, 3), (6, 4)},
        id="two-rels-minus-rel-and-const",
    ),
    pytest.param(
        '[:find ?e ?e2 :where [?e :name "Oleg"] [?e2 :name "Oleg"] (not [?e :age 10] [?e2 :age 20])]',
        [D()],
        {(4, 3), (3, 3), (4, 4)},
        id="two-rels-minus-two-consts",
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
