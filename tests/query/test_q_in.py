"""``:in`` bindings: scalar, tuple, collection and relation bindings, ``_`` in bindings, the
``%`` rule set, several inputs, empty collections (DESIGN.md section 6).

Follows DataScript's test/datascript/test/query.cljc (test-q-in, test-bindings,
test-nested-bindings) on its database (entities 1 to 3). Clojure maps given as inputs are
written as lists of ``(key, value)`` pairs (what a Clojure map is as a seq); Clojure functions
given as inputs are Python callables.
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
                    {"db/id": 1, "name": "Ivan", "age": 15},
                    {"db/id": 2, "name": "Petr", "age": 37},
                    {"db/id": 3, "name": "Ivan", "age": 37},
                ],
            )
        ],
    )
}
BY_ATTR = "{:find [?e] :in [$ ?attr ?value] :where [[?e ?attr ?value]]}"
EMAILS = [["Ivan", "ivan@mail.ru"], ["Petr", "petr@gmail.com"]]
EMAIL_ROWS = {(1, "ivan@mail.ru"), (2, "petr@gmail.com"), (3, "ivan@mail.ru")}
NAMES_COLL = [[1, K("name"), "Ivan"], [2, K("name"), "Petr"]]
RULES_EDN = "[[(named ?e ?n) [?e :name ?n]]]"
RULES_DATA = [[(S("named"), S("?e"), S("?n")), [S("?e"), K("name"), S("?n")]]]


def minmax(v: Any) -> list[Any]:
    return [min(v), max(v)]


def int_range(a: int, b: int) -> list[int]:
    return list(range(a, b))


ROWS = [
    # -- test-q-in ---------------------------------------------------------------------------
    pytest.param(BY_ATTR, [D(), K("name"), "Ivan"], {(1,), (3,)}, id="scalars-map-form-name"),
    pytest.param(BY_ATTR, [D(), K("age"), 37], {(2,), (3,)}, id="scalars-map-form-age"),
    pytest.param(BY_ATTR, [D(), "name", "Ivan"], {(1,), (3,)}, id="scalar-attribute-as-plain-str"),
    pytest.param(
        "[:find ?a ?v :in $db ?e :where [$db ?e ?a ?v]]",
        [D(), 1],
        {("name", "Ivan"), ("age", 15)},
        id="named-db",
    ),
    pytest.param(
        "[:find ?e ?email :in $ $b :where [?e :name ?n] [$b ?n ?email]]",
        [D(), EMAILS],
        EMAIL_ROWS,
        id="db-join-with-collection",
    ),
    pytest.param("[:find ?a ?b :in ?a ?b]", [10, 20], {(10, 20)}, id="query-without-db"),
    pytest.param(
        [K("find"), S("?a"), S("?b"), K("in"), S("?a"), S("?b")],
        [10, 20],
        {(10, 20)},
        id="query-without-db-python-data",
    ),
    # -- test-bindings -----------------------------------------------------------------------
    pytest.param(
        "[:find ?e ?email :in $ [[?n ?email]] :where [?e :name ?n]]",
        [D(), EMAILS],
        EMAIL_ROWS,
        id="relation",
    ),
    pytest.param(
        "[:find ?e ?email :in $ [[?n ?email]] :where [?e :name ?n]]",
        [D(), {("Ivan", "ivan@mail.ru"), ("Petr", "petr@gmail.com")}],
        EMAIL_ROWS,
        id="relation-as-set-of-tuples",
    ),
    pytest.param(
        "[:find ?e :in $ [?name ?age] :where [?e :name ?name] [?e :age ?age]]",
        [D(), ["Ivan", 37]],
        {(3,)},
        id="tuple",
    ),
    pytest.param(
        "[:find ?e :in $ [?name ?age] :where [?e :name ?name] [?e :age ?age]]",
        [D(), ("Ivan", 37)],
        {(3,)},
        id="tuple-as-python-tuple",
    ),
    pytest.param(
        "[:find ?attr ?value :in $ ?e [?attr ...] :where [?e ?attr ?value]]",
        [D(), 1, [K("name"), K("age")]],
        {("name", "Ivan"), ("age", 15)},
        id="collection",
    ),
    pytest.param(
        "[:find ?id :in $ [?id ...] :where [?id :age _]]",
        [NAMES_COLL, []],
        set(),
        id="empty-collection",
    ),
    pytest.param(
        "[:find ?id :in $ [[?id]] :where [?id :age _]]",
        [NAMES_COLL, []],
        set(),
        id="empty-relation",
    ),
    pytest.param(
        "[:find ?e :in $ [?n ...] :where [?e :name ?n]]", [D(), []], set(), id="empty-coll-on-db"
    ),
    pytest.param(
        "[:find ?e :in $ [?n ...] :where [?e :name ?n]]",
        [D(), ["Petr", "Oleg"]],
        {(2,)},
        id="collection-partly-matching",
    ),
    pytest.param(
        "[:find ?x ?z :in [?x _ ?z]]",
        [[K("x"), K("y"), K("z")]],
        {(K("x"), K("z"))},
        id="tuple-with-placeholder",
    ),
    pytest.param(
        "[:find ?x ?z :in [[?x _ ?z]]]",
        [[[K("x"), K("y"), K("z")], [K("a"), K("b"), K("c")]]],
        {(K("x"), K("z")), (K("a"), K("c"))},
        id="relation-with-placeholder",
    ),
    pytest.param("[:find ?x :in _ ?x]", [1, 2], {(2,)}, id="ignored-input"),
    pytest.param(
        "[:find ?x :in [_ ?x] [?y ...] :where [(< ?x ?y)]]",
        [[0, 5], [1, 9]],
        {(5,)},
        id="ignored-tuple-item-and-predicate",
    ),
    pytest.param(
        "[:find ?a ?b ?c :in [[?a ?b ?c]]]",
        [{(1, 2, 3), (4, 5, 6)}],
        {(1, 2, 3), (4, 5, 6)},
        id="relation-three-columns",
    ),
    pytest.param(
        "[:find ?k ?v :in [[?k ?v] ...]]",
        [[[K("a"), 1], [K("b"), 2]]],
        {(K("a"), 1), (K("b"), 2)},
        id="collection-of-tuples-is-a-relation",
    ),
    pytest.param("[:find ?x :in ?x]", [(1, 2)], {((1, 2),)}, id="scalar-holding-a-tuple"),
    pytest.param("[:find ?x . :in ?x]", [K("kw")], K("kw"), id="scalar-keyword"),
    # -- test-nested-bindings ----------------------------------------------------------------
    pytest.param(
        "[:find ?k ?v :in [[?k ?v] ...] :where [(> ?v 1)]]",
        [[(K("a"), 1), (K("b"), 2), (K("c"), 3)]],
        {(K("b"), 2), (K("c"), 3)},
        id="map-entries-with-predicate",
    ),
    pytest.param(
        "[:find ?k ?min ?max :in [[?k ?v] ...] ?minmax "
        ":where [(?minmax ?v) [?min ?max]] [(> ?max ?min)]]",
        [[(K("a"), (1, 2, 3, 4)), (K("b"), (5, 6, 7)), (K("c"), (3,))], minmax],
        {(K("a"), 1, 4), (K("b"), 5, 7)},
        id="function-input-with-tuple-result",
    ),
    pytest.param(
        "[:find ?k ?x :in [[?k [?min ?max]] ...] ?range "
        ":where [(?range ?min ?max) [?x ...]] [(even? ?x)]]",
        [[(K("a"), [1, 7]), (K("b"), [2, 4])], int_range],
        {(K("a"), 2), (K("a"), 4), (K("a"), 6), (K("b"), 2)},
        id="nested-tuple-in-collection-and-function-input",
    ),
    # -- several inputs ----------------------------------------------------------------------
    pytest.param(
        "[:find ?e :in $ ?name [?age ...] :where [?e :name ?name] [?e :age ?age]]",
        [D(), "Ivan", [15, 37, 99]],
        {(1,), (3,)},
        id="scalar-and-collection",
    ),
    pytest.param(
        "[:find ?e :in ?n $ :where [?e :name ?n]]", ["Petr", D()], {(2,)}, id="source-not-first"
    ),
    pytest.param(
        "[:find ?e :in $ ?min :where [?e :age ?a] [(> ?a ?min)]]",
        [D(), 20],
        {(2,), (3,)},
        id="input-only-in-predicate",
    ),
    pytest.param(
        "[:find ?e :in $ ?n :where [?e :name ?n] [?e :age 37]]",
        [D(), "Ivan"],
        {(3,)},
        id="input-and-constant",
    ),
    pytest.param(
        '[:find ?e :in $ :where [?e :name "Petr"]]', [D()], {(2,)}, id="explicit-default-source"
    ),
    pytest.param(
        "[:find ?e ?e2 :in $ [?n ...] [?a ...] :where [?e :name ?n] [?e2 :age ?a]]",
        [D(), ["Petr"], [15]],
        {(2, 1)},
        id="two-unrelated-collections",
    ),
    # -- the % rule set ----------------------------------------------------------------------
    pytest.param(
        '[:find ?e :in $ % :where (named ?e "Ivan")]',
        [D(), RULES_EDN],
        {(1,), (3,)},
        id="rules-as-edn-string",
    ),
    pytest.param(
        '[:find ?e :in $ % :where (named ?e "Ivan")]',
        [D(), RULES_DATA],
        {(1,), (3,)},
        id="rules-as-python-data",
    ),
    pytest.param(
        "[:find ?e :in % $ ?n :where (named ?e ?n)]",
        [RULES_EDN, D(), "Petr"],
        {(2,)},
        id="rules-first-then-source-and-scalar",
    ),
    pytest.param(
        "[:find ?n :in $ % [?e ...] :where (named ?e ?n)]",
        [D(), RULES_EDN, [1, 2]],
        {("Ivan",), ("Petr",)},
        id="rules-and-collection",
    ),
    pytest.param(
        "[:find [?n ...] :in $ % :where (named _ ?n)]",
        [D(), RULES_EDN],
        Bag(["Ivan", "Petr"]),
        id="rules-with-placeholder-argument",
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


# -- the map form of a call: {:query q :args [...]} (Datomic, Datahike) --------------------------


async def test_query_call_map(make_conn: MakeConn) -> None:
    """``{:query q :args [inputs]}`` as a Python dict (keyword or plain string keys) or EDN
    text; ``:offset`` / ``:limit`` beside ``:query`` apply to the query (Datahike's
    ``normalize-q-input``). Expected values by hand from the three entities above."""
    import replica
    from query.errors import QueryError, QueryParseError

    conn = await make_conn(SCHEMA)
    await conn.transact(DATABASES["main"].txs[0][1])
    db = conn.db
    by_name = "[:find ?e :in $ ?n :where [?e :name ?n]]"
    assert await replica.q({"query": by_name, "args": [db, "Ivan"]}) == {(1,), (3,)}
    assert await replica.q({K("query"): by_name, K("args"): [db, "Petr"]}) == {(2,)}
    assert await replica.q({":query": by_name, ":args": (db, "Petr")}) == {(2,)}
    # the query as data, in vector or map form
    as_data = [K("find"), S("?e"), K("in"), S("$"), K("where"), [S("?e"), K("age"), 37]]
    assert await replica.q({"query": as_data, "args": [db]}) == {(2,), (3,)}
    assert await replica.q({"query": BY_ATTR, "args": [db, K("age"), 15]}) == {(1,)}
    # without :args, the inputs are the other arguments of q
    assert await replica.q({"query": by_name}, db, "Ivan") == {(1,), (3,)}
    # EDN text holding the whole call (its args are literal values: collections, scalars)
    text = "{:query [:find ?x :in [?x ...] :where [(odd? ?x)]] :args [[1 2 3 4 5]]}"
    assert await replica.q(text) == {(1,), (3,), (5,)}
    # :offset / :limit beside :query (the query's own are overridden)
    ordered = "[:find ?e ?a :where [?e :age ?a] :order-by ?e :limit 1]"
    assert await replica.q({"query": ordered, "args": [db]}) == [(1, 15)]
    assert await replica.q({"query": ordered, "args": [db], "limit": 2}) == [(1, 15), (2, 37)]
    got = await replica.q({"query": ordered, "args": [db], "offset": 1, "limit": 5})
    assert got == [(2, 37), (3, 37)]
    # explain takes it too
    plan = await replica.explain({"query": by_name, "args": [db, "Ivan"]})
    assert plan.result_size == 2
    # errors
    with pytest.raises(QueryError, match=":args"):
        await replica.q({"query": by_name, "args": [db, "Ivan"]}, db)
    with pytest.raises(QueryParseError, match="Unknown key"):
        await replica.q({"query": by_name, "args": [db, "Ivan"], "timeout": 10})
    with pytest.raises(QueryParseError, match="vector"):
        await replica.q({"query": by_name, "args": db})
    with pytest.raises(QueryParseError, match="limit"):
        await replica.q({"query": by_name, "args": [db, "Ivan"], "limit": -1})
    with pytest.raises(QueryParseError, match="Duplicate"):
        await replica.q({"query": by_name, ":query": by_name})
