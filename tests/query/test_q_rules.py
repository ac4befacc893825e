"""Rules: simple, with branches, recursive (transitive closure), mutually recursive, with
constants, calling other rules, required variables, over collection sources and databases
(DESIGN.md section 6).

Follows DataScript's test/datascript/test/query_rules.cljc: test-rules (over its ``:follow``
collection), "Specifying db to rule", test-false-arguments (issue-218) and issue-456 (on a
small database). The rows over a database use the same ``:follow`` graph as a ref attribute;
their answers are the transitive closure of that graph, worked out by hand::

    1 -> 2, 2 -> 3, 3 -> 4, 4 -> 6, 2 -> 4, 5 -> 3

Recursive rules called with bound arguments run top down from those values (as DataScript's
do), so a rule body may use a head variable that only the caller binds: a base case
``[(identity ?a) ?b]``, a predicate on an argument, a counter decremented by a function. Those
rows' answers are worked out by hand on the same graph (or on plain numbers).

Rule errors (unknown rule, bad rule variables) are in test_q_errors.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from query.errors import QueryError
from tests.query._qtable import Bag, K, MakeConn, S, Setup, run, run_error
from tests.query._qtable import Db as D

SCHEMA = [
    {"db/ident": "name", "db/valueType": "db.type/string"},
    {"db/ident": "follow", "db/valueType": "db.type/ref", "db/cardinality": "db.cardinality/many"},
    {"db/ident": "attr", "db/valueType": "db.type/boolean"},
    {"db/ident": "item/id", "db/valueType": "db.type/long"},
    {"db/ident": "item/status", "db/valueType": "db.type/string"},
]
DATABASES = {
    "main": Setup(
        SCHEMA,
        [
            (
                "setup",
                [
                    {"db/id": 1, "name": "one", "follow": [2]},
                    {"db/id": 2, "name": "two", "follow": [3, 4]},
                    {"db/id": 3, "name": "three", "follow": [4]},
                    {"db/id": 4, "name": "four", "follow": [6]},
                    {"db/id": 5, "name": "five", "follow": [3]},
                    {"db/id": 6, "name": "six"},
                ],
            )
        ],
    ),
    # test-false-arguments (issue-218)
    "flags": Setup(
        SCHEMA, [("flags", [["db/add", 1, "attr", True], ["db/add", 2, "attr", False]])]
    ),
    # test-rule-performance-on-larger-datasets (issue-456), small
    "items": Setup(
        SCHEMA,
        [
            (
                "items",
                [
                    {"db/id": 10 + i, "item/id": i, "item/status": status}
                    for i, status in enumerate(
                        ["started", "pending", "stopped", "pending", "started", "pending"], 1
                    )
                ],
            )
        ],
    ),
}

FOLLOW = [
    [5, K("follow"), 3],
    [1, K("follow"), 2],
    [2, K("follow"), 3],
    [3, K("follow"), 4],
    [4, K("follow"), 6],
    [2, K("follow"), 4],
]
FOLLOW_RULE = "[[(follow ?x ?y) [?x :follow ?y]]]"
REACH = "[[(reach ?a ?b) [?a :follow ?b]] [(reach ?a ?b) [?a :follow ?t] (reach ?t ?b)]]"
REACH_REQ = "[[(reach [?a] ?b) [?a :follow ?b]] [(reach [?a] ?b) [?a :follow ?t] (reach ?t ?b)]]"
REACH_VIA = (
    "[[(follow ?a ?b) [?a :follow ?b]]"
    " [(reach ?a ?b) (follow ?a ?b)]"
    " [(reach ?a ?b) (follow ?a ?t) (reach ?t ?b)]]"
)
CLOSURE = {
    (1, 2), (1, 3), (1, 4), (1, 6),
    (2, 3), (2, 4), (2, 6),
    (3, 4), (3, 6),
    (4, 6),
    (5, 3), (5, 4), (5, 6),
}  # fmt: skip
SYMMETRIC = "[[(follow ?e1 ?e2) [?e1 :follow ?e2]] [(follow ?e1 ?e2) (follow ?e2 ?e1)]]"
MUTUAL = (
    "[[(f1 ?e1 ?e2) [?e1 :f1 ?e2]]"
    " [(f1 ?e1 ?e2) [?t :f1 ?e2] (f2 ?e1 ?t)]"
    " [(f2 ?e1 ?e2) [?e1 :f2 ?e2]]"
    " [(f2 ?e1 ?e2) [?t :f2 ?e2] (f1 ?e1 ?t)]]"
)
MUTUAL_DATA = [
    [0, K("f1"), 1],
    [1, K("f2"), 2],
    [2, K("f1"), 3],
    [3, K("f2"), 4],
    [4, K("f1"), 5],
    [5, K("f2"), 6],
]


# recursive rules whose bodies need arguments bound by the caller
REACH_SELF = (  # reflexive-transitive closure: ?b is ?a itself, or reached through a follow
    "[[(reach* ?a ?b) [(identity ?a) ?b]] [(reach* ?a ?b) [?a :follow ?t] (reach* ?t ?b)]]"
)
WITHIN = (  # reached through nodes whose ids are at most ?max
    "[[(within ?a ?b ?max) [?a :follow ?b] [(<= ?b ?max)]]"
    " [(within ?a ?b ?max) [?a :follow ?t] [(<= ?t ?max)] (within ?t ?b ?max)]]"
)
HOPS = (  # reached in at most ?n follows
    "[[(hops ?a ?b ?n) [(> ?n 0)] [?a :follow ?b]]"
    " [(hops ?a ?b ?n) [(> ?n 1)] [?a :follow ?t] [(dec ?n) ?m] (hops ?t ?b ?m)]]"
)
DOWN = (  # the numbers below ?n down to 0, no data at all
    "[[(down ?n ?m) [(> ?n 0)] [(dec ?n) ?m]] [(down ?n ?m) [(> ?n 0)] [(dec ?n) ?k] (down ?k ?m)]]"
)
EVEN_ODD = (  # mutual recursion on numbers
    "[[(even ?n) [(= ?n 0)]]"
    " [(even ?n) [(> ?n 0)] [(dec ?n) ?m] (odd ?m)]"
    " [(odd ?n) [(> ?n 0)] [(dec ?n) ?m] (even ?m)]]"
)
LEFT = (  # left recursion: the recursive call comes first
    "[[(anc ?a ?b) [?a :follow ?b]] [(anc ?a ?b) (anc ?a ?t) [?t :follow ?b]]]"
)
REACH_OR = (  # the recursive call inside an `or` of the body, first argument required
    "[[(reach-or [?a] ?b) [?a :follow ?t] (or [(identity ?t) ?b] (reach-or ?t ?b))]]"
)


def even(x: int) -> bool:
    return x % 2 == 0


def always(*_: Any) -> bool:
    return True


ROWS = [
    # -- test-rules, over the :follow collection ---------------------------------------------
    pytest.param(
        "[:find ?e1 ?e2 :in $ % :where (follow ?e1 ?e2)]",
        [FOLLOW, FOLLOW_RULE],
        {(1, 2), (2, 3), (3, 4), (2, 4), (5, 3), (4, 6)},
        id="simple",
    ),
    pytest.param(
        "[:find ?e1 ?e2 :in $ % :where (follow ?e1 ?e2)]",
        [FOLLOW, [[(S("follow"), S("?x"), S("?y")), [S("?x"), K("follow"), S("?y")]]]],
        {(1, 2), (2, 3), (3, 4), (2, 4), (5, 3), (4, 6)},
        id="simple-rules-as-python-data",
    ),
    pytest.param(
        "[:find ?y ?x :in $ % :where [_ _ ?x] (rule ?x ?y) [(even? ?x)]]",
        [FOLLOW, "[[(rule ?a ?b) [?a :follow ?b]]]"],
        {(3, 2), (6, 4), (4, 2)},
        id="joined-with-regular-clauses",
    ),
    pytest.param(
        "[:find ?x :in $ % :where [?e _ _] (rule ?x)]",
        [FOLLOW, "[[(rule ?e) [_ ?e _]]]"],
        {(K("follow"),)},
        id="rule-context-is-isolated",
    ),
    pytest.param(
        "[:find ?e2 :in $ ?e1 % :where (follow ?e1 ?e2)]",
        [
            FOLLOW,
            1,
            "[[(follow ?e2 ?e1) [?e2 :follow ?e1]]"
            " [(follow ?e2 ?e1) [?e2 :follow ?t] [?t :follow ?e1]]]",
        ],
        {(2,), (3,), (4,)},
        id="branches",
    ),
    pytest.param(
        "[:find ?e2 :in $ ?e1 % :where (follow ?e1 ?e2)]",
        [
            FOLLOW,
            1,
            "[[(follow ?e1 ?e2) [?e1 :follow ?e2]]"
            " [(follow ?e1 ?e2) [?e1 :follow ?t] (follow ?t ?e2)]]",
        ],
        {(2,), (3,), (4,), (6,)},
        id="recursive",
    ),
    pytest.param(
        "[:find ?e1 ?e2 :in $ % :where (follow ?e1 ?e2)]",
        [[[1, K("follow"), 2], [2, K("follow"), 3]], SYMMETRIC],
        {(1, 2), (2, 3), (2, 1), (3, 2)},
        id="recursive-symmetric",
    ),
    pytest.param(
        "[:find ?e1 ?e2 :in $ % :where (follow ?e1 ?e2)]",
        [[[1, K("follow"), 2], [2, K("follow"), 3], [3, K("follow"), 1]], SYMMETRIC],
        {(1, 2), (2, 3), (3, 1), (2, 1), (3, 2), (1, 3)},
        id="recursive-symmetric-cycle",
    ),
    pytest.param(
        "[:find ?e1 ?e2 :in $ % :where (f1 ?e1 ?e2)]",
        [MUTUAL_DATA, MUTUAL],
        {(0, 1), (0, 3), (0, 5), (1, 3), (1, 5), (2, 3), (2, 5), (3, 5), (4, 5)},
        id="mutually-recursive",
    ),
    pytest.param(
        "[:find ?x ?y :in $ % ?even :where (match ?even ?x ?y)]",
        [FOLLOW, "[[(match ?pred ?e ?e2) [?e :follow ?e2] [(?pred ?e)] [(?pred ?e2)]]]", even],
        {(4, 6), (2, 4)},
        id="passing-ins-to-rule",
    ),
    pytest.param(
        "[:find ?x ?y :in $ % :where (match ?x ?y)]",
        [FOLLOW, "[[(match ?e ?e2) [?e :follow ?e2] [(even? ?e)] [(even? ?e2)]]]"],
        {(4, 6), (2, 4)},
        id="built-ins-inside-rule",
    ),
    pytest.param(
        '[:find ?p :in $ % ?fn :where (rule ?p ?fn "a") (rule ?p ?fn "b")]',
        [[[1, K("attr"), "a"]], "[[(rule ?p ?fn ?x) [?p :attr ?x] [(?fn ?x)]]]", always],
        set(),  # issue-44 only asserts no error; nothing has both "a" and "b"
        id="calling-rule-twice-issue-44",
    ),
    pytest.param(
        '[:find ?p :in $ % ?fn :where (rule ?p ?fn "a")]',
        [[[1, K("attr"), "a"]], "[[(rule ?p ?fn ?x) [?p :attr ?x] [(?fn ?x)]]]", always],
        {(1,)},
        id="rule-with-function-argument",
    ),
    pytest.param(
        "[:find ?n :in $sexes $ages % :where ($sexes male ?n) ($ages adult ?n)]",
        [
            [["Ivan", K("male")], ["Darya", K("female")], ["Oleg", K("male")], ["Igor", K("male")]],
            [["Ivan", 15], ["Oleg", 66], ["Darya", 32]],
            "[[(male ?x) [?x :male]] [(adult ?y) [?y ?a] [(>= ?a 18)]]]",
        ],
        {("Oleg",)},
        id="specifying-db-to-rule",
    ),
    pytest.param(
        "[:find ?e1 ?e2 :in $ % :where (follow ?e1 ?e2)]",
        [[], FOLLOW_RULE],
        set(),
        id="empty-collection-source",
    ),
    # -- test-false-arguments (issue-218) ----------------------------------------------------
    pytest.param(
        "[:find ?id :in $ % :where (is ?id true)]",
        [D("flags"), "[[(is ?id ?val) [?id :attr ?val]]]"],
        {(1,)},
        id="true-argument",
    ),
    pytest.param(
        "[:find ?id :in $ % :where (is ?id false)]",
        [D("flags"), "[[(is ?id ?val) [?id :attr ?val]]]"],
        {(2,)},
        id="false-argument",
    ),
    # -- issue-456: a rule binding a constant equals the inline clause -----------------------
    pytest.param(
        '[:find ?e :where [?e :item/status ?status] [(ground "pending") ?status]]',
        [D("items")],
        {(12,), (14,), (16,)},
        id="inline-ground",
    ),
    pytest.param(
        "[:find ?e :in $ % :where [?e :item/status ?status] (pending? ?status)]",
        [D("items"), '[[(pending? ?status) [(ground "pending") ?status]]]'],
        {(12,), (14,), (16,)},
        id="rule-ground-issue-456",
    ),
    # -- recursion over a database -----------------------------------------------------------
    pytest.param(
        "[:find ?b :in $ % :where (reach 1 ?b)]",
        [D(), REACH],
        {(2,), (3,), (4,), (6,)},
        id="db-transitive-closure-from-constant",
    ),
    pytest.param(
        "[:find ?a ?b :in $ % :where (reach ?a ?b)]", [D(), REACH], CLOSURE, id="db-closure"
    ),
    pytest.param(
        "[:find ?a :in $ % :where (reach ?a 6)]",
        [D(), REACH],
        {(1,), (2,), (3,), (4,), (5,)},
        id="db-closure-to-constant",
    ),
    pytest.param(
        "[:find ?n :in $ % ?start :where (reach ?start ?b) [?b :name ?n]]",
        [D(), REACH, 5],
        {("three",), ("four",), ("six",)},
        id="db-closure-from-input-joined",
    ),
    pytest.param(
        "[:find ?b :in $ % :where (reach 1 ?b)]",
        [D(), REACH_REQ],
        {(2,), (3,), (4,), (6,)},
        id="required-var-bound-by-constant",
    ),
    pytest.param(
        "[:find ?a ?b :in $ % [?a ...] :where (reach ?a ?b)]",
        [D(), REACH_REQ, [3, 5]],
        {(3, 4), (3, 6), (5, 3), (5, 4), (5, 6)},
        id="required-var-bound-by-input",
    ),
    pytest.param(
        '[:find ?b :in $ % :where [?a :name "two"] (reach ?a ?b)]',
        [D(), REACH_REQ],
        {(3,), (4,), (6,)},
        id="required-var-bound-by-pattern",
    ),
    pytest.param(
        "[:find ?a ?b :in $ % :where (reach ?a ?b)]",
        [D(), REACH_VIA],
        CLOSURE,
        id="rule-calling-rule",
    ),
    pytest.param(
        "[:find ?a ?c :in $ % :where (follow ?a ?b) (follow ?b ?c)]",
        [D(), FOLLOW_RULE],
        {(1, 3), (1, 4), (2, 4), (2, 6), (3, 6), (5, 4)},
        id="same-rule-called-twice-joined",
    ),
    pytest.param(
        "[:find ?x :in $ % :where (reach ?x ?x)]", [D(), REACH], set(), id="no-cycle-in-db"
    ),
    pytest.param(
        "[:find ?x :in $ % :where (reach ?x ?x)]",
        [
            [[1, K("follow"), 2], [2, K("follow"), 3], [3, K("follow"), 1], [4, K("follow"), 1]],
            REACH,
        ],
        {(1,), (2,), (3,)},
        id="cycle-in-collection",
    ),
    pytest.param(
        "[:find (count ?b) . :in $ % :where (reach 1 ?b)]",
        [D(), REACH],
        4,
        id="aggregate-over-rule",
    ),
    pytest.param(
        "[:find [?n ...] :in $ % :where (named-six ?e) [?e :name ?n]]",
        [D(), '[[(named-six ?e) [?e :name "six"]]]'],
        Bag(["six"]),
        id="rule-with-constant-in-body",
    ),
    pytest.param(
        "[:find ?x :in $ % :where (leaf ?x)]",
        [D(), "[[(leaf ?x) [_ :follow ?x] (not [?x :follow _])]]"],
        {(6,)},
        id="rule-with-not",
    ),
    pytest.param(
        "[:find ?x :in $ % :where (root ?x)]",
        [D(), "[[(root ?x) [?x :follow _] (not-join [?x] [_ :follow ?x])]]"],
        {(1,), (5,)},
        id="rule-with-not-join",
    ),
    pytest.param(
        "[:find ?x :in $ % :where (odd-or-six ?x)]",
        [
            D(),
            "[[(odd-or-six ?x) [?x :name ?n]"
            ' (or (and [?x :name ?n] [(odd? ?x)]) (and [?x :name ?n] [(= ?n "six")]))]]',
        ],
        {(1,), (3,), (5,), (6,)},
        id="rule-with-or",
    ),
    pytest.param(
        "[:find ?x :in $ % :where (either ?x)]",
        [D(), '[[(either ?x) [?x :name "one"]] [(either ?x) [?x :name "six"]]]'],
        {(1,), (6,)},
        id="rule-branches-as-union",
    ),
    pytest.param(
        "[:find ?a ?b :in $ % :where (reach ?a ?b) [(> ?a 3)]]",
        [D(), REACH],
        {(4, 6), (5, 3), (5, 4), (5, 6)},
        id="recursive-rule-then-predicate",
    ),
    # -- recursive rules whose bodies need the caller's bindings -----------------------------
    pytest.param(
        "[:find ?b :in $ % ?a :where (reach* ?a ?b)]",
        [D(), REACH_SELF, 2],
        {(2,), (3,), (4,), (6,)},
        id="bound-arg-identity-base-case",
    ),
    pytest.param(
        "[:find ?b :in $ % :where (reach* 4 ?b)]",
        [D(), REACH_SELF],
        {(4,), (6,)},
        id="constant-arg-identity-base-case",
    ),
    pytest.param(
        "[:find ?a ?b :in $ % [?a ...] :where (reach* ?a ?b)]",
        [D(), REACH_SELF, [3, 5]],
        {(3, 3), (3, 4), (3, 6), (5, 5), (5, 3), (5, 4), (5, 6)},
        id="collection-arg-identity-base-case",
    ),
    pytest.param(
        '[:find ?n :in $ % :where [?a :name "five"] (reach* ?a ?b) [?b :name ?n]]',
        [D(), REACH_SELF],
        {("five",), ("three",), ("four",), ("six",)},
        id="pattern-bound-arg-identity-base-case",
    ),
    pytest.param(
        "[:find ?a ?b :in $ % :where [?a :follow 3] (reach* ?a ?b) [(> ?b 3)]]",
        [D(), REACH_SELF],
        {(2, 4), (2, 6), (5, 5), (5, 4), (5, 6)},  # 5 reaches itself
        id="several-bound-values-then-predicate",
    ),
    pytest.param(
        "[:find ?b :in $ % ?a ?max :where (within ?a ?b ?max)]",
        [D(), WITHIN, 1, 4],
        {(2,), (3,), (4,)},  # 4 -> 6 goes above 4
        id="bound-arg-used-by-predicate",
    ),
    pytest.param(
        "[:find ?b :in $ % :where (within 5 ?b 3)]",
        [D(), WITHIN],
        {(3,)},
        id="constant-args-used-by-predicate",
    ),
    pytest.param(
        "[:find ?b :in $ % :where (hops 1 ?b 2)]",
        [D(), HOPS],
        {(2,), (3,), (4,)},
        id="depth-limited-2",
    ),
    pytest.param(
        "[:find ?b :in $ % ?n :where (hops 1 ?b ?n)]",
        [D(), HOPS, 3],
        {(2,), (3,), (4,), (6,)},
        id="depth-limited-3",
    ),
    pytest.param(
        "[:find ?n ?b :in $ % [?n ...] :where (hops 2 ?b ?n)]",
        [D(), HOPS, [0, 1]],
        {(1, 3), (1, 4)},  # 0 hops: nothing
        id="depth-limited-0-and-1",
    ),
    pytest.param(
        "[:find ?m :in $ % ?n :where (down ?n ?m)]",
        [[], DOWN, 3],
        {(2,), (1,), (0,)},
        id="counter-without-data",
    ),
    pytest.param(
        "[:find ?n ?m :in $ % [?n ...] :where (down ?n ?m)]",
        [[], DOWN, [1, 2]],
        {(1, 0), (2, 1), (2, 0)},
        id="counter-several-starts",
    ),
    pytest.param(
        "[:find ?m :in $ % :where (down 0 ?m)]",
        [[], DOWN],
        set(),
        id="counter-at-zero",
    ),
    pytest.param(
        "[:find ?n :in $ % [?n ...] :where (even ?n)]",
        [[], EVEN_ODD, [0, 1, 2, 5, 6]],
        {(0,), (2,), (6,)},
        id="mutual-recursion-on-bound-numbers",
    ),
    pytest.param(
        "[:find ?n :in $ % [?n ...] :where (odd ?n)]",
        [[], EVEN_ODD, [0, 1, 2, 5, 6]],
        {(1,), (5,)},
        id="mutual-recursion-on-bound-numbers-odd",
    ),
    pytest.param(
        "[:find ?a :in $ % :where (anc ?a 4)]",
        [D(), LEFT],
        {(1,), (2,), (3,), (5,)},
        id="left-recursion-bound-second-arg",
    ),
    pytest.param(
        "[:find ?b :in $ % ?a :where (anc ?a ?b)]",
        [D(), LEFT, 1],
        {(2,), (3,), (4,), (6,)},
        id="left-recursion-bound-first-arg",
    ),
    pytest.param(
        "[:find ?b :in $ % :where (reach-or 1 ?b)]",
        [D(), REACH_OR],
        {(2,), (3,), (4,), (6,)},
        id="recursive-call-inside-or",
    ),
    pytest.param(
        "[:find ?a ?b :in $ % [?a ...] :where (reach-or ?a ?b)]",
        [D(), REACH_OR, [4, 6]],
        {(4, 6)},  # 6 follows nobody
        id="recursive-call-inside-or-several",
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


@pytest.mark.parametrize(
    ("query", "inputs", "fragments"),
    [
        pytest.param(
            "[:find ?m :in $ % :where (down ?n ?m)]",
            [[], DOWN],
            ["Insufficient bindings", "?n"],
            id="counter-called-unbound",
        ),
        pytest.param(
            "[:find ?a ?b :in $ % :where (reach* ?a ?b)]",
            [D(), REACH_SELF],
            ["Insufficient bindings", "?a"],
            id="identity-base-case-called-unbound",
        ),
    ],
)
async def test_recursive_rule_needs_bound_args(
    make_conn: MakeConn,
    new_db_url: Callable[[], str],
    query: str,
    inputs: list[Any],
    fragments: list[str],
) -> None:
    """A recursive rule whose body needs an argument bound, called with it unbound: an
    "Insufficient bindings" QueryError (DataScript fails too)."""
    await run_error(make_conn, new_db_url, DATABASES, query, inputs, QueryError, fragments)
