"""Find specs: relation, collection ``[?x ...]``, scalar ``?x .``, tuple ``[?x ?y]``,
``:keys``/``:strs``/``:syms``, ``:with``, ``:order-by``/``:offset``/``:limit`` and pull in
``:find`` (DESIGN.md section 6).

Follows DataScript's test/datascript/test/query_find_specs.cljc (its database), plus
query_return_map.cljc (``:keys``/``:strs``/``:syms``), query_aggregates.cljc ("with") and
query_pull.cljc (test-basics, test-var-pattern). ``:order-by``/``:offset``/``:limit`` follow
Datalevin/Datahike (DataScript has none): order by the listed find variables (``:asc`` by
default), then skip ``:offset`` rows and keep at most ``:limit``; the result is then a list.

Result shapes (the brief's API): relation -> ``set`` of tuples, a ``list`` with ``:with``,
``:order-by``, ``:offset``, ``:limit`` or pull; collection -> ``list``; scalar -> value or
None; tuple -> tuple or None; ``:keys`` & co -> a list of dicts (a dict for a tuple find).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from replica import Keyword, Symbol
from tests.query._qtable import Bag, Check, K, MakeConn, OneOf, S, Seq, Setup, run
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
                    {"db/id": 1, "name": "Petr", "age": 44},
                    {"db/id": 2, "name": "Ivan", "age": 25},
                    {"db/id": 3, "name": "Sergey", "age": 11},
                ],
            )
        ],
    )
}
PEOPLE = "[?e :name ?name] [?e :age ?age]"
MONSTERS = [["Medusa", 1], ["Cyclops", 1], ["Chimera", 1]]
PAIRS = [[1, "b"], [1, "a"], [0, "z"], [2, "a"]]


def keys_of(kind: type) -> Check:
    return Check(
        f"dict keys of type {kind.__name__}",
        lambda r: bool(r) and all(type(k) is kind for row in r for k in row),
    )


ROWS = [
    # -- query_find_specs.cljc test-find-specs -----------------------------------------------
    pytest.param(
        "[:find [?name ...] :where [_ :name ?name]]",
        [D()],
        Bag(["Ivan", "Petr", "Sergey"]),
        id="collection",
    ),
    pytest.param(
        "[:find [?name ?age] :where [1 :name ?name] [1 :age ?age]]",
        [D()],
        ("Petr", 44),
        id="tuple",
    ),
    pytest.param("[:find ?name . :where [1 :name ?name]]", [D()], "Petr", id="scalar"),
    pytest.param(
        f"[:find [?name ?age] :where {PEOPLE}]",
        [D()],
        OneOf([("Petr", 44), ("Ivan", 25), ("Sergey", 11)]),
        id="tuple-multiple-results-get-cut",
    ),
    pytest.param(
        "[:find ?name . :where [_ :name ?name]]",
        [D()],
        OneOf(["Ivan", "Petr", "Sergey"]),
        id="scalar-multiple-results-get-cut",
    ),
    pytest.param(
        "[:find [(count ?name) ...] :where [_ :name ?name]]",
        [D()],
        Seq([3]),
        id="aggregate-in-collection",
    ),
    pytest.param(
        "[:find [(count ?name)] :where [_ :name ?name]]", [D()], (3,), id="aggregate-in-tuple"
    ),
    pytest.param(
        "[:find (count ?name) . :where [_ :name ?name]]", [D()], 3, id="aggregate-in-scalar"
    ),
    # -- shapes of results -------------------------------------------------------------------
    pytest.param(
        f"[:find ?name ?age :where {PEOPLE}]",
        [D()],
        {("Petr", 44), ("Ivan", 25), ("Sergey", 11)},
        id="relation",
    ),
    pytest.param(
        "[:find ?name . :where [?e :name ?name] [?e :age 99]]", [D()], None, id="scalar-none"
    ),
    pytest.param(
        "[:find [?name ?age] :where [?e :name ?name] [?e :age ?age] [?e :age 99]]",
        [D()],
        None,
        id="tuple-none",
    ),
    pytest.param(
        "[:find [?name ...] :where [?e :name ?name] [?e :age 99]]",
        [D()],
        Seq([]),
        id="collection-empty",
    ),
    pytest.param(
        "[:find ?name ?age :where [?e :name ?name] [?e :age ?age] [?e :age 99]]",
        [D()],
        set(),
        id="relation-empty",
    ),
    pytest.param(
        "[:find [?x ...] :in [?x ...]]", [[1, 1, 2]], Bag([1, 2]), id="collection-is-distinct"
    ),
    pytest.param("[:find ?x :in [?x ...]]", [[1, 1, 2]], {(1,), (2,)}, id="relation-is-distinct"),
    pytest.param(
        [K("find"), [S("?name"), S("...")], K("where"), [S("_"), K("name"), S("?name")]],
        [D()],
        Bag(["Ivan", "Petr", "Sergey"]),
        id="collection-python-data",
    ),
    pytest.param(
        [K("find"), S("?name"), S("."), K("where"), [1, K("name"), S("?name")]],
        [D()],
        "Petr",
        id="scalar-python-data",
    ),
    pytest.param(
        {
            K("find"): [[S("?name"), S("?age")]],
            K("where"): [[1, "name", S("?name")], [1, "age", S("?age")]],
        },
        [D()],
        ("Petr", 44),
        id="tuple-python-data-map-form",
    ),
    # -- :keys / :strs / :syms (query_return_map.cljc) ---------------------------------------
    pytest.param(
        f"[:find ?name ?age :keys n a :where {PEOPLE}]",
        [D()],
        Bag([{"n": "Petr", "a": 44}, {"n": "Ivan", "a": 25}, {"n": "Sergey", "a": 11}]),
        id="keys",
    ),
    pytest.param(
        f"[:find ?name ?age :syms n a :where {PEOPLE}]",
        [D()],
        Bag([{"n": "Petr", "a": 44}, {"n": "Ivan", "a": 25}, {"n": "Sergey", "a": 11}]),
        id="syms",
    ),
    pytest.param(
        f"[:find ?name ?age :strs n a :where {PEOPLE}]",
        [D()],
        Bag([{"n": "Petr", "a": 44}, {"n": "Ivan", "a": 25}, {"n": "Sergey", "a": 11}]),
        id="strs",
    ),
    pytest.param(
        f"[:find ?name ?age :keys n a :where {PEOPLE}]", [D()], keys_of(Keyword), id="keys-type"
    ),
    pytest.param(
        f"[:find ?name ?age :syms n a :where {PEOPLE}]", [D()], keys_of(Symbol), id="syms-type"
    ),
    pytest.param(
        f"[:find ?name ?age :strs n a :where {PEOPLE}]", [D()], keys_of(str), id="strs-type"
    ),
    pytest.param(
        '[:find [?name ?age] :keys n a :where [?e :name ?name] [(= ?name "Ivan")] [?e :age ?age]]',
        [D()],
        {"n": "Ivan", "a": 25},
        id="keys-tuple",
    ),
    pytest.param(
        "{:find [?name ?age] :keys [n a] :where [[?e :name ?name] [?e :age ?age] [(< ?age 20)]]}",
        [D()],
        Seq([{"n": "Sergey", "a": 11}]),
        id="keys-map-form",
    ),
    pytest.param(
        "[:find ?name ?age :keys n a :where [?e :name ?name] [?e :age ?age] [?e :age 99]]",
        [D()],
        Seq([]),
        id="keys-empty",
    ),
    # -- :with (query_aggregates.cljc "with") ------------------------------------------------
    pytest.param(
        "[:find ?heads :with ?monster :in [[?monster ?heads]]]",
        [MONSTERS],
        Bag([(1,), (1,), (1,)]),
        id="with-keeps-duplicates",
    ),
    pytest.param(
        "[:find ?heads :in [[?monster ?heads]]]",
        [MONSTERS],
        {(1,)},
        id="without-with-distinct",
    ),
    pytest.param(
        "[:find ?age :with ?e :where [?e :age ?age]]",
        [D()],
        Bag([(44,), (25,), (11,)]),
        id="with-on-db",
    ),
    pytest.param(
        "[:find ?heads :with ?monster ?heads2 :in [[?monster ?heads ?heads2]]]",
        [[["Medusa", 1, 1], ["Medusa", 1, 2], ["Cyclops", 1, 1]]],
        Bag([(1,), (1,), (1,)]),
        id="with-two-vars",
    ),
    # -- :order-by / :offset / :limit --------------------------------------------------------
    pytest.param(
        f"[:find ?name ?age :order-by [?age] :where {PEOPLE}]",
        [D()],
        Seq([("Sergey", 11), ("Ivan", 25), ("Petr", 44)]),
        id="order-by",
    ),
    pytest.param(
        f"[:find ?name ?age :order-by [?age :desc] :where {PEOPLE}]",
        [D()],
        Seq([("Petr", 44), ("Ivan", 25), ("Sergey", 11)]),
        id="order-by-desc",
    ),
    pytest.param(
        f"[:find ?name ?age :order-by [?name :asc] :where {PEOPLE}]",
        [D()],
        Seq([("Ivan", 25), ("Petr", 44), ("Sergey", 11)]),
        id="order-by-string-asc",
    ),
    pytest.param(
        "[:find ?a ?b :order-by [?a ?b :desc] :in [[?a ?b]]]",
        [PAIRS],
        Seq([(0, "z"), (1, "b"), (1, "a"), (2, "a")]),
        id="order-by-two-vars",
    ),
    pytest.param(
        "[:find ?a ?b :order-by [?b ?a :desc] :in [[?a ?b]]]",
        [PAIRS],
        Seq([(2, "a"), (1, "a"), (1, "b"), (0, "z")]),
        id="order-by-second-column-first",
    ),
    pytest.param(
        f"[:find ?name ?age :order-by [?age] :limit 2 :where {PEOPLE}]",
        [D()],
        Seq([("Sergey", 11), ("Ivan", 25)]),
        id="order-by-limit",
    ),
    pytest.param(
        f"[:find ?name ?age :order-by [?age] :offset 1 :where {PEOPLE}]",
        [D()],
        Seq([("Ivan", 25), ("Petr", 44)]),
        id="order-by-offset",
    ),
    pytest.param(
        f"[:find ?name ?age :order-by [?age] :offset 1 :limit 1 :where {PEOPLE}]",
        [D()],
        Seq([("Ivan", 25)]),
        id="order-by-offset-limit",
    ),
    pytest.param(
        f"[:find ?name ?age :order-by [?age] :offset 5 :where {PEOPLE}]",
        [D()],
        Seq([]),
        id="offset-past-the-end",
    ),
    pytest.param(
        f"[:find ?name ?age :order-by [?age] :limit 10 :where {PEOPLE}]",
        [D()],
        Seq([("Sergey", 11), ("Ivan", 25), ("Petr", 44)]),
        id="limit-past-the-end",
    ),
    pytest.param(
        f"[:find ?name ?age :limit 2 :where {PEOPLE}]",
        [D()],
        Check(
            "a list of 2 distinct rows of the 3",
            lambda r: (
                isinstance(r, list)
                and len(set(r)) == 2
                and set(r) <= {("Petr", 44), ("Ivan", 25), ("Sergey", 11)}
            ),
        ),
        id="limit-without-order",
    ),
    pytest.param(
        "[:find [?name ...] :order-by [?name :desc] :where [_ :name ?name]]",
        [D()],
        Seq(["Sergey", "Petr", "Ivan"]),
        id="collection-order-by",
    ),
    pytest.param(
        f"[:find ?name ?age :keys n a :order-by [?age] :where {PEOPLE}]",
        [D()],
        Seq([{"n": "Sergey", "a": 11}, {"n": "Ivan", "a": 25}, {"n": "Petr", "a": 44}]),
        id="keys-order-by",
    ),
    pytest.param(
        f"{{:find [?name ?age] :order-by [?age :desc] :limit 1 :where [{PEOPLE}]}}",
        [D()],
        Seq([("Petr", 44)]),
        id="order-by-map-form",
    ),
    # -- pull in :find (query_pull.cljc) -----------------------------------------------------
    pytest.param(
        "[:find (pull ?e [:name]) :where [?e :age ?a] [(>= ?a 18)]]",
        [D()],
        Bag([({"name": "Ivan"},), ({"name": "Petr"},)]),
        id="pull",
    ),
    pytest.param(
        "[:find (pull ?e [*]) :where [?e :age ?a] [(>= ?a 18)]]",
        [D()],
        Bag(
            [
                ({"db/id": 2, "age": 25, "name": "Ivan"},),
                ({"db/id": 1, "age": 44, "name": "Petr"},),
            ]
        ),
        id="pull-wildcard",
    ),
    pytest.param(
        "[:find ?e (pull ?e [:name]) :where [?e :age ?a] [(>= ?a 18)]]",
        [D()],
        Bag([(2, {"name": "Ivan"}), (1, {"name": "Petr"})]),
        id="pull-with-var",
    ),
    pytest.param(
        "[:find ?e (pull ?e [:name]) ?a :where [?e :age ?a] [(>= ?a 18)]]",
        [D()],
        Bag([(2, {"name": "Ivan"}, 25), (1, {"name": "Petr"}, 44)]),
        id="pull-between-vars",
    ),
    pytest.param(
        "[:find (pull ?e ?pattern) :in $ ?pattern :where [?e :age ?a] [(>= ?a 18)]]",
        [D(), [K("name")]],
        Bag([({"name": "Ivan"},), ({"name": "Petr"},)]),
        id="pull-pattern-from-input",
    ),
    pytest.param(
        "[:find [(pull ?e [:name]) ...] :where [?e :age ?a] [(>= ?a 18)]]",
        [D()],
        Bag([{"name": "Ivan"}, {"name": "Petr"}]),
        id="pull-in-collection",
    ),
    pytest.param(
        '[:find (pull ?e [:name :age]) . :where [?e :name "Sergey"]]',
        [D()],
        {"name": "Sergey", "age": 11},
        id="pull-in-scalar",
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
