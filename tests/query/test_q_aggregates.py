"""Aggregates: count, count-distinct, sum, avg, median, variance, stddev, min/max (and their
``n`` forms), distinct, rand, sample, custom aggregates (an ``:in`` function through
``aggregate``, or registered from Python), ``:with`` and grouping (DESIGN.md section 6).

Follows DataScript's test/datascript/test/query_aggregates.cljc and Datahike's
test/datahike/test/query_aggregates_test.cljc (its aggregate contract table and "Aggregate
with predicate filter"). Semantics: the aggregated values of a group are the bag of the
distinct tuples of the find and ``:with`` variables (so without ``:with`` equal values count
once: "Wrong grouping without :with"); variance and stddev are population statistics.
Aggregates over no rows give no rows (a scalar find gives None), as in DataScript.

Result shapes: a ``set`` of tuples without ``:with``, a ``list`` with ``:with``; rows holding a
vector (``(min 2 ?x)``, ``sample``, a custom aggregate returning a list) cannot be in a Python
set, so those results are expected as lists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import replica
from tests.query._qtable import Bag, Check, K, MakeConn, S, Setup, run
from tests.query._qtable import Db as D

SCHEMA = [
    {"db/ident": "name", "db/valueType": "db.type/string"},
    {"db/ident": "heads", "db/valueType": "db.type/long"},
    {"db/ident": "num/v", "db/valueType": "db.type/long"},
]
DATABASES = {
    "main": Setup(
        SCHEMA,
        [
            (
                "setup",
                [
                    {"db/id": 1, "name": "Cerberus", "heads": 3},
                    {"db/id": 2, "name": "Medusa", "heads": 1},
                    {"db/id": 3, "name": "Cyclops", "heads": 1},
                    {"db/id": 4, "name": "Chimera", "heads": 1},
                    # Datahike "Aggregate with predicate filter"
                    *({"db/id": 10 + v, "num/v": v} for v in range(1, 6)),
                ],
            )
        ],
    )
}
MONSTERS = [["Cerberus", 3], ["Medusa", 1], ["Cyclops", 1], ["Chimera", 1]]
COLORS = [
    [K("red"), 1],
    [K("red"), 2],
    [K("red"), 3],
    [K("red"), 4],
    [K("red"), 5],
    [K("blue"), 7],
    [K("blue"), 8],
]
NUMS = [10, 15, 20, 35, 75]


def sort_reverse(values: list[Any]) -> list[Any]:
    return sorted(values, reverse=True)


def nth_largest(values: list[Any], n: int) -> Any:
    return sorted(values)[-n]


def one(agg: str, values: list[Any], expected: Any, id: str) -> Any:
    """Datahike's contract table: ``[:find (agg ?x) . :in [?x ...]]``."""
    return pytest.param(f"[:find ({agg} ?x) . :in [?x ...]]", [values], expected, id=id)


def _sample_ok(n: int, pool: set[Any]) -> Check:
    def ok(r: Any) -> bool:
        return (
            isinstance(r, list | tuple)
            and len(r) == min(n, len(pool))
            and (len(set(r)) == len(r) and set(r) <= pool)
        )

    return Check(f"{min(n, len(pool))} distinct values of {sorted(pool)}", ok)


def _rand_ok(n: int, pool: set[Any]) -> Check:
    return Check(
        f"{n} values drawn from {sorted(pool)}",
        lambda r: isinstance(r, list | tuple) and len(r) == n and set(r) <= pool,
    )


def _grouped_samples(r: Any) -> bool:
    rows = {row[0]: row[1] for row in r}
    return (
        set(rows) == {"red", "blue"}
        and len(rows["red"]) == 2
        and set(rows["red"]) <= {1, 2, 3, 4, 5}
        and len(set(rows["red"])) == 2
        and sorted(rows["blue"]) == [7, 8]
    )


ROWS = [
    # -- query_aggregates.cljc test-aggregates -----------------------------------------------
    pytest.param(
        "[:find (sum ?heads) :in [[?monster ?heads]]]",
        [MONSTERS],
        {(4,)},
        id="wrong-grouping-without-with",
    ),
    pytest.param(
        "[:find (sum ?heads) (min ?heads) (max ?heads) (count ?heads) (count-distinct ?heads) "
        ":with ?monster :in [[?monster ?heads]]]",
        [MONSTERS],
        Bag([(6, 1, 3, 4, 2)]),
        id="multiple-aggregates-with",
    ),
    pytest.param(
        "[:find (min ?x) (max ?x) :in [?x ...]]",
        [[K("a-/b"), K("a/b")]],
        {(K("a/b"), K("a-/b"))},
        id="min-max-keywords-use-compare",
    ),
    pytest.param(
        "[:find (min 2 ?x) (max 2 ?x) :in [?x ...]]",
        [[K("a/b"), K("a-/b"), K("a/c")]],
        Bag([([K("a/b"), K("a/c")], [K("a/c"), K("a-/b")])]),
        id="min-max-n-keywords",
    ),
    pytest.param(
        "[:find ?color (max ?amount ?x) (min ?amount ?x) :in [[?color ?x]] ?amount]",
        [COLORS, 3],
        Bag([(K("red"), [3, 4, 5], [1, 2, 3]), (K("blue"), [7, 8], [7, 8])]),
        id="grouping-and-parameter-passing",
    ),
    pytest.param("[:find (avg ?x) :in [?x ...]]", [NUMS], {(31,)}, id="avg"),
    pytest.param("[:find (median ?x) :in [?x ...]]", [NUMS], {(20,)}, id="median"),
    pytest.param("[:find (variance ?x) :in [?x ...]]", [NUMS], {(554,)}, id="variance"),
    one("stddev", NUMS, pytest.approx(23.53720459187964), id="stddev"),
    pytest.param(
        "[:find ?color (aggregate ?agg ?x) :in [[?color ?x]] ?agg]",
        [COLORS, sort_reverse],
        Bag([(K("red"), [5, 4, 3, 2, 1]), (K("blue"), [8, 7])]),
        id="custom-aggregate-from-input",
    ),
    pytest.param(
        "[:find ?color (test-sort-reverse ?x) :in [[?color ?x]]]",
        [COLORS],
        Bag([(K("red"), [5, 4, 3, 2, 1]), (K("blue"), [8, 7])]),
        id="custom-aggregate-registered",
    ),
    pytest.param(
        "[:find ?color (test-nth-largest 2 ?x) :in [[?color ?x]]]",
        [COLORS],
        {(K("red"), 4), (K("blue"), 7)},
        id="custom-aggregate-registered-with-argument",
    ),
    # -- Datahike's aggregate contract -------------------------------------------------------
    one("avg", [1, 2], 1.5, id="avg-fraction"),
    one("variance", [10, 20, 30, 12], 62, id="variance-2"),
    one("variance", [7], 0, id="variance-singleton"),
    one("stddev", [7], 0, id="stddev-singleton"),
    one("median", [1, 2, 3, 4], 2.5, id="median-even-count"),
    one("median", [10, 20, 30, 12], 16, id="median-even-count-unsorted"),
    one("sum", NUMS, 155, id="sum"),
    one("min", NUMS, 10, id="min"),
    one("max", NUMS, 75, id="max"),
    one("count", NUMS, 5, id="count"),
    one("count-distinct", NUMS, 5, id="count-distinct"),
    one("sum", [10, 2.5], 12.5, id="sum-mixed-int-float"),
    one("min", [10, 2.5], 2.5, id="min-mixed-int-float"),
    one("avg", [1, 2, 3.5], pytest.approx(6.5 / 3), id="avg-mixed-int-float"),
    one("min", ["b", "a", "c"], "a", id="min-strings"),
    one("max", ["b", "a", "c"], "c", id="max-strings"),
    one("avg", [1, 1, 4], 2.5, id="avg-over-distinct-values"),  # [?x ...] binds {1, 4}
    one("count", [1, 1, 4], 2, id="count-over-distinct-values"),
    pytest.param("[:find (max 3 ?x) . :in [?x ...]]", [NUMS], [20, 35, 75], id="max-n-ascending"),
    pytest.param("[:find (min 3 ?x) . :in [?x ...]]", [NUMS], [10, 15, 20], id="min-n-ascending"),
    pytest.param(
        "[:find (min 9 ?x) . :in [?x ...]]", [[3, 1, 2]], [1, 2, 3], id="min-n-more-than-values"
    ),
    pytest.param(
        "[:find (distinct ?x) . :in [?x ...]]", [[1, 1, 2]], frozenset({1, 2}), id="distinct"
    ),
    # -- rand / sample: sizes and membership -------------------------------------------------
    pytest.param(
        "[:find (rand ?x) . :in [?x ...]]",
        [[1, 2, 3]],
        Check("one of 1, 2, 3", lambda r: r in (1, 2, 3)),
        id="rand",
    ),
    pytest.param(
        "[:find (rand 5 ?x) . :in [?x ...]]", [[1, 2, 3]], _rand_ok(5, {1, 2, 3}), id="rand-n"
    ),
    pytest.param(
        "[:find (sample 2 ?x) . :in [?x ...]]",
        [[1, 2, 3]],
        _sample_ok(2, {1, 2, 3}),
        id="sample-n",
    ),
    pytest.param(
        "[:find (sample 10 ?x) . :in [?x ...]]",
        [[1, 2, 3]],
        _sample_ok(10, {1, 2, 3}),
        id="sample-more-than-values",
    ),
    pytest.param(
        "[:find ?color (sample 2 ?x) :in [[?color ?x]]]",
        [COLORS],
        Check("a sample of 2 per colour", _grouped_samples),
        id="sample-per-group",
    ),
    # -- over a database ---------------------------------------------------------------------
    pytest.param("[:find (sum ?h) . :where [_ :heads ?h]]", [D()], 4, id="db-sum-without-with"),
    pytest.param("[:find (sum ?h) . :with ?e :where [?e :heads ?h]]", [D()], 6, id="db-sum-with"),
    pytest.param(
        "[:find (sum ?h) :with ?e :where [?e :heads ?h]]", [D()], Bag([(6,)]), id="db-with-list"
    ),
    pytest.param(
        "[:find (count ?h) (count-distinct ?h) :with ?e :where [?e :heads ?h]]",
        [D()],
        Bag([(4, 2)]),
        id="db-count-and-count-distinct-with",
    ),
    pytest.param("[:find (count ?e) . :where [?e :heads]]", [D()], 4, id="db-count-entities"),
    pytest.param(
        "[:find ?h (count ?e) :where [?e :heads ?h]]",
        [D()],
        {(3, 1), (1, 3)},
        id="db-grouping",
    ),
    pytest.param(
        "[:find (count ?e) ?h :where [?e :heads ?h]]",
        [D()],
        {(1, 3), (3, 1)},
        id="db-grouping-aggregate-first",
    ),
    pytest.param(
        "[:find ?h (count ?e) (min ?n) (max ?n) :where [?e :heads ?h] [?e :name ?n]]",
        [D()],
        {(3, 1, "Cerberus", "Cerberus"), (1, 3, "Chimera", "Medusa")},
        id="db-grouping-several-aggregates",
    ),
    pytest.param(
        "[:find (distinct ?h) . :with ?e :where [?e :heads ?h]]",
        [D()],
        frozenset({1, 3}),
        id="db-distinct",
    ),
    pytest.param(
        "[:find (count ?e) . :where [?e :num/v ?v] [(> ?v 2)]]",
        [D()],
        3,
        id="db-count-with-predicate",
    ),
    pytest.param(
        "[:find (sum ?v) . :where [?e :num/v ?v] [(> ?v 2)]]", [D()], 12, id="db-sum-with-predicate"
    ),
    pytest.param(
        "{:find [(count ?e)] :where [[?e :num/v ?v] [(< ?v 3)]]}",
        [D()],
        {(2,)},
        id="db-count-map-form",
    ),
    pytest.param(
        [K("find"), (S("count"), S("?e")), S("."), K("where"), [S("?e"), K("heads"), 1]],
        [D()],
        3,
        id="db-count-python-data",
    ),
    pytest.param(
        "[:find (max ?v) (avg ?v) :in $ ?min :where [_ :num/v ?v] [(>= ?v ?min)]]",
        [D(), 4],
        {(5, 4.5)},
        id="db-aggregates-with-input",
    ),
    pytest.param(
        "[:find ?h (count ?e) :where [?e :heads ?h] [?e :heads 9]]",
        [D()],
        set(),
        id="db-aggregate-over-nothing",
    ),
    pytest.param(
        "[:find (count ?e) :where [?e :heads 9]]", [D()], set(), id="db-count-over-nothing"
    ),
    pytest.param(
        "[:find (count ?e) . :where [?e :heads 9]]",
        [D()],
        None,
        id="db-scalar-count-over-nothing",
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
    replica.register_aggregate("test-sort-reverse", sort_reverse)
    replica.register_aggregate("test-nth-largest", nth_largest)
    await run(make_conn, new_db_url, DATABASES, query, inputs, expected)
