"""Predicates and function expressions: comparisons, arithmetic, strings, regexes, ``get-else``,
``get-some``, ``missing?``, ``ground``, ``tuple``/``untuple``, ``identity``, the binding forms
of function results, functions given as inputs, functions registered from Python, and a nested
``q`` (DESIGN.md section 6).

Follows DataScript's test/datascript/test/query_fns.cljc (test-query-fns on its database,
test-predicates on its four-entity database, issue-180, issue-445, issue-490) and query.cljc
(test-built-in-regex, test-built-in-get, issue-385); the nested ``q`` rows follow Datahike's
query_planner_nested_q_test.clj and query_test.cljc. Built-ins not exercised there (``str``,
``subs``, ``quot``, ``clojure.string/...``) are expected to answer what Clojure's functions of
those names answer. Clojure functions passed as inputs become Python callables; predicates that
read the database through ``$`` (DataScript's ``d/entity``) have no synchronous Python
equivalent and are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import replica
from tests.query._qtable import Bag, K, MakeConn, S, Setup, run
from tests.query._qtable import Db as D

SCHEMA = [
    {"db/ident": "name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "age", "db/valueType": "db.type/long"},
    {"db/ident": "height", "db/valueType": "db.type/long"},
    {"db/ident": "weight", "db/valueType": "db.type/long"},
    {"db/ident": "parent", "db/valueType": "db.type/ref"},
    {"db/ident": "pred", "db/valueType": "db.type/string"},
]
DATABASES = {
    "main": Setup(
        SCHEMA,
        [
            (
                "setup",
                [
                    {"db/id": 1, "name": "Ivan", "age": 15},
                    {"db/id": 2, "name": "Petr", "age": 22, "height": 240, "parent": 1},
                    {"db/id": 3, "name": "Slava", "age": 37, "parent": 2},
                ],
            )
        ],
    ),
    # test-predicates (names are not unique here)
    "people": Setup(
        [
            {"db/ident": "name", "db/valueType": "db.type/string"},
            {"db/ident": "age", "db/valueType": "db.type/long"},
        ],
        [
            (
                "people",
                [
                    {"db/id": 1, "name": "Ivan", "age": 10},
                    {"db/id": 2, "name": "Ivan", "age": 20},
                    {"db/id": 3, "name": "Oleg", "age": 10},
                    {"db/id": 4, "name": "Oleg", "age": 20},
                ],
            )
        ],
    ),
}
MY_VALS = (
    "[[(my-vals ?x) [(identity 1) ?x]]"
    " [(my-vals ?x) [(identity 2) ?x]]"
    " [(my-vals ?x) [(identity 3) ?x]]]"
)
MIXED = [[0], [1], [""]]


def adult(a: int) -> bool:
    return a > 18


def even_or_none(x: int) -> int | None:
    return x if x % 2 == 0 else None


def first(x: Any) -> Any:
    return x[0]


def second(x: Any) -> Any:
    return x[1]


def five() -> int:
    return 5


def py_double(x: int) -> int:
    return x * 2


def py_adult(x: int) -> bool:
    return x >= 18


def py_letters(s: str) -> list[str]:
    return list(s)


def py_none(x: Any) -> None:
    return None


ROWS = [
    # -- test-query-fns ----------------------------------------------------------------------
    pytest.param(
        "[:find ?x :in [?x ...] :where [(> 2 1)]]",
        [[K("a"), K("b"), K("c")]],
        {(K("a"),), (K("b"),), (K("c"),)},
        id="predicate-without-free-vars",
    ),
    pytest.param(
        "[:find ?vowel :where [(ground [:a :e :i :o :u]) [?vowel ...]]]",
        [],
        {(K("a"),), (K("e"),), (K("i"),), (K("o"),), (K("u"),)},
        id="ground-collection",
    ),
    pytest.param(
        "[:find ?e ?age ?height :where [?e :age ?age] [(get-else $ ?e :height 300) ?height]]",
        [D()],
        {(1, 15, 300), (2, 22, 240), (3, 37, 300)},
        id="get-else",
    ),
    pytest.param(
        "[:find ?e ?a ?v :where [?e :name _] [(get-some $ ?e :height :age) [?a ?v]]]",
        [D()],
        {(1, K("age"), 15), (2, K("height"), 240), (3, K("age"), 37)},
        id="get-some",
    ),
    pytest.param(
        "[:find ?e ?age :in $ :where [?e :age ?age] [(missing? $ ?e :height)]]",
        [D()],
        {(1, 15), (3, 37)},
        id="missing?",
    ),
    pytest.param(
        "[:find ?e :in $ :where [?e :age ?age] [(missing? $ ?e :_parent)]]",
        [D()],
        {(3,)},
        id="missing?-reverse-ref",
    ),
    pytest.param(
        "[:find ?e1 ?e2 :where [?e1 :age ?a1] [?e2 :age ?a2] [(< ?a1 18 ?a2)]]",
        [D()],
        {(1, 2), (1, 3)},
        id="less-variadic",
    ),
    pytest.param("[:find ?a1 :where [_ :age ?a1] [(< ?a1 22)]]", [D()], {(15,)}, id="<"),
    pytest.param("[:find ?a1 :where [_ :age ?a1] [(<= ?a1 22)]]", [D()], {(15,), (22,)}, id="<="),
    pytest.param("[:find ?a1 :where [_ :age ?a1] [(> ?a1 22)]]", [D()], {(37,)}, id=">"),
    pytest.param("[:find ?a1 :where [_ :age ?a1] [(>= ?a1 22)]]", [D()], {(22,), (37,)}, id=">="),
    pytest.param("[:find ?e :where [?e] [(< ?e 1)]]", [MIXED], {(0,)}, id="<-different-types"),
    pytest.param(
        "[:find ?e :where [?e] [(<= ?e 1)]]", [MIXED], {(0,), (1,)}, id="<=-different-types"
    ),
    pytest.param("[:find ?e :where [?e] [(> ?e 1)]]", [MIXED], {("",)}, id=">-different-types"),
    pytest.param(
        "[:find ?e :where [?e] [(>= ?e 1)]]", [MIXED], {(1,), ("",)}, id=">=-different-types"
    ),
    pytest.param(
        "[:find ?x ?c :in [?x ...] :where [(count ?x) ?c]]",
        [["a", "abc"]],
        {("a", 1), ("abc", 3)},
        id="count-fn",
    ),
    pytest.param(
        "[:find [?tx-data ...] :where [(ground :db/add) ?op] [(vector ?op -1 :attr 12) ?tx-data]]",
        [],
        Bag([[K("db/add"), -1, K("attr"), 12]]),
        id="vector",
    ),
    pytest.param(
        '[:find [?tx-data ...] :where [(hash-map :db/id -1 :age 92 :name "Aaron") ?tx-data]]',
        [],
        Bag([{K("db/id"): -1, K("age"): 92, K("name"): "Aaron"}]),
        id="hash-map",
    ),
    pytest.param(
        "[:find ?e :in $ ?adult :where [?e :age ?a] [(?adult ?a)]]",
        [D(), adult],
        {(2,), (3,)},
        id="predicate-from-input",
    ),
    pytest.param(
        "[:find ?e1 ?e2 ?e3 :where [?e1 :age ?a1] [?e2 :age ?a2] [?e3 :age ?a3] "
        "[(+ ?a1 ?a2) ?a12] [(= ?a12 ?a3)]]",
        [D()],
        {(1, 2, 3), (2, 1, 3)},
        id="calling-a-function",
    ),
    pytest.param(
        "[:find ?n :where [(identity 1) ?n] [(identity 2) ?n]]",
        [],
        set(),
        id="two-conflicting-function-values",
    ),
    pytest.param(
        "[:find ?n ?x :where [(identity [3 4]) [?n ?x]] [(identity [1 2]) [?n ?x]]]",
        [],
        set(),
        id="destructured-conflicting-function-values",
    ),
    pytest.param(
        "[:find ?n :in $ % :where [(identity 2) ?n] (my-vals ?n)]",
        [D(), MY_VALS],
        {(2,)},
        id="function-then-rule",
    ),
    pytest.param(
        "[:find ?n :in $ % :where (my-vals ?n) [(identity 2) ?n]]",
        [D(), MY_VALS],
        {(2,)},
        id="rule-then-function",
    ),
    pytest.param(
        "[:find ?age :where [_ :age ?age] [(identity 100) ?age]]",
        [D()],
        set(),
        id="relation-then-conflicting-function",
    ),
    pytest.param(
        "[:find ?age :where [(identity 100) ?age] [_ :age ?age]]",
        [D()],
        set(),
        id="function-then-conflicting-relation",
    ),
    pytest.param(
        "[:find ?e :where [?e :age ?a] [(identity 22) ?a]]",
        [D()],
        {(2,)},
        id="function-value-joins-bound-var",
    ),
    pytest.param(
        "[:find ?e ?y :where [?e :salary ?x] [(+ ?x 100) ?y]]",
        [[[0, K("age"), 15], [1, K("age"), 35]]],
        set(),
        id="function-on-empty-relation",
    ),
    pytest.param(
        "[:find ?x :in [?in ...] ?f :where [(?f ?in) ?x]]",
        [[1, 2, 3, 4], even_or_none],
        {(2,), (4,)},
        id="nil-result-drops-the-row",
    ),
    pytest.param(
        "[:find ?a ?c :in ?in :where [(ground ?in) [?a _ ?c]]]",
        [[K("a"), K("b"), K("c")]],
        {(K("a"), K("c"))},
        id="result-binding-tuple-with-placeholder",
    ),
    pytest.param(
        "[:find ?in :in ?in :where [(ground ?in) _]]",
        [K("a")],
        {(K("a"),)},
        id="result-binding-placeholder",
    ),
    pytest.param(
        "[:find ?x ?z :in ?in :where [(ground ?in) [[?x _ ?z] ...]]]",
        [[[K("a"), K("b"), K("c")], [K("d"), K("e"), K("f")]]],
        {(K("a"), K("c")), (K("d"), K("f"))},
        id="result-binding-collection-of-tuples",
    ),
    pytest.param(
        "[:find ?in :in [?in ...] :where [(ground ?in) _]]",
        [[]],
        set(),
        id="result-binding-over-empty-input",
    ),
    pytest.param(
        "[:find ?n ?k :where [(ground [[1 :a] [2 :b]]) [[?n ?k]]]]",
        [],
        {(1, K("a")), (2, K("b"))},
        id="result-binding-relation",
    ),
    pytest.param(
        "[:find ?pair ?x :in $ ?first ?second :where [_ _ ?pair] [(?first ?pair) ?x] "
        "[(?second ?pair) ?x]]",
        [[(1, K("pair"), (K("a"), K("a"))), (2, K("pair"), (K("b"), K("c")))], first, second],
        {((K("a"), K("a")), K("a"))},
        id="function-results-unify-issue-490",
    ),
    pytest.param(
        "[:find ?e ?a :where [_ :pred ?pred] [?e :age ?a] [(?pred ?a)]]",
        [D()],
        set(),
        id="function-var-bound-by-empty-pattern-issue-180",
    ),
    pytest.param(
        "[:find ?name :in $ ?my-fn :where [?e :name ?name] [(?my-fn) ?result] [(< ?result 3)]]",
        [D(), five],
        set(),
        id="join-unrelated-issue-385",
    ),
    pytest.param(
        '[:find ?height . :in $ ?e :where [(get-else $ ?e :height "Unknown") ?height]]',
        [D(), ("name", "Ivan")],
        "Unknown",
        id="get-else-lookup-ref-issue-445",
    ),
    pytest.param(
        "[:find ?e ?a ?v :in $ ?e :where [(get-some $ ?e :weight :age :height) [?a ?v]]]",
        [D(), ("name", "Petr")],
        {(("name", "Petr"), K("age"), 22)},
        id="get-some-lookup-ref-issue-445",
    ),
    # -- query.cljc built-ins ----------------------------------------------------------------
    pytest.param(
        "[:find ?name :in [?name ...] ?key :where [(re-pattern ?key) ?pattern] "
        "[(re-find ?pattern ?name)]]",
        [{"abc", "abcX", "aXb"}, "X"],
        {("abcX",), ("aXb",)},
        id="re-pattern-and-re-find",
    ),
    pytest.param(
        "[:find ?m-value :in [[?k ?m] ...] ?m-key :where [(get ?m ?m-key) ?m-value]]",
        [[(K("a"), {K("b"): 1}), (K("c"), {K("d"): 2})], K("d")],
        {(2,)},
        id="get",
    ),
    pytest.param(
        "[:find [?m ...] :in [[?k ?m] ...] ?m-key :where [(get ?m ?m-key) ?m-value]]",
        [[(K("a"), {K("b"): 1}), (K("c"), {K("d"): 2})], K("d")],
        Bag([{K("d"): 2}]),
        id="get-map-values",
    ),
    # -- test-predicates ---------------------------------------------------------------------
    pytest.param(
        "[:find ?e ?a :where [?e :age ?a] [(> ?a 10)]]",
        [D("people")],
        {(2, 20), (4, 20)},
        id="plain-predicate",
    ),
    pytest.param(
        "[:find ?e ?e2 :where [?e :name] [?e2 :name] [(< ?e ?e2)]]",
        [D("people")],
        {(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)},
        id="join-in-predicate",
    ),
    pytest.param(
        "[:find ?e ?e2 :where [?e :age ?a] [?e2 :age ?a2] [(< ?e ?e2)]]",
        [D("people")],
        {(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)},
        id="join-with-extra-symbols",
    ),
    pytest.param(
        '[:find ?e ?e2 :where [?e :name "Ivan"] [?e2 :name "Oleg"] [(= ?e ?e2)]]',
        [D("people")],
        set(),
        id="predicate-empty-result",
    ),
    pytest.param(
        '[:find ?e :where [?e :name "Ivan"] [?e :age 20] [(= ?e 2)]]',
        [D("people")],
        {(2,)},
        id="predicate-over-const-true",
    ),
    pytest.param(
        '[:find ?e :where [?e :name "Ivan"] [?e :age 20] [(= ?e 1)]]',
        [D("people")],
        set(),
        id="predicate-over-const-false",
    ),
    # -- more built-ins (Clojure semantics) --------------------------------------------------
    pytest.param(
        '[:find ?s . :where [1 :name ?n] [(str ?n "-" 15) ?s]]', [D()], "Ivan-15", id="str"
    ),
    pytest.param("[:find ?s . :where [(str :a/b) ?s]]", [], ":a/b", id="str-of-keyword"),
    pytest.param("[:find ?s . :where [1 :name ?n] [(subs ?n 1) ?s]]", [D()], "van", id="subs-from"),
    pytest.param(
        "[:find ?s . :where [1 :name ?n] [(subs ?n 0 2) ?s]]", [D()], "Iv", id="subs-range"
    ),
    pytest.param(
        '[:find ?n :where [?e :name ?n] [(re-pattern "^[IP]") ?re] [(re-find ?re ?n)]]',
        [D()],
        {("Ivan",), ("Petr",)},
        id="re-find-predicate",
    ),
    pytest.param(
        '[:find ?n ?g :where [?e :name ?n] [(re-pattern "(.)van") ?re] [(re-find ?re ?n) [_ ?g]]]',
        [D()],
        {("Ivan", "I")},
        id="re-find-groups",
    ),
    pytest.param(
        '[:find ?n :where [?e :name ?n] [(re-pattern "P.*") ?re] [(re-matches ?re ?n)]]',
        [D()],
        {("Petr",)},
        id="re-matches",
    ),
    pytest.param(
        '[:find ?n :where [_ :name ?n] [(clojure.string/starts-with? ?n "S")]]',
        [D()],
        {("Slava",)},
        id="starts-with?",
    ),
    pytest.param(
        '[:find ?n :where [_ :name ?n] [(clojure.string/includes? ?n "e")]]',
        [D()],
        {("Petr",)},
        id="includes?",
    ),
    pytest.param(
        '[:find ?n :where [_ :name ?n] [(clojure.string/ends-with? ?n "a")]]',
        [D()],
        {("Slava",)},
        id="ends-with?",
    ),
    pytest.param(
        "[:find ?x :in [?x ...] :where [(clojure.string/blank? ?x)]]",
        [["", " ", "a"]],
        {("",), (" ",)},
        id="blank?",
    ),
    pytest.param(
        "[:find ?e ?d :where [?e :age ?a] [(* ?a 2) ?d] [(< ?a 30)]]",
        [D()],
        {(1, 30), (2, 44)},
        id="multiply",
    ),
    pytest.param(
        "[:find ?x ?y :where [_ :age ?a] [(- ?a 15) ?x] [(inc ?x) ?y] [(= ?a 22)]]",
        [D()],
        {(7, 8)},
        id="minus-and-inc",
    ),
    pytest.param(
        "[:find ?q ?r ?m ?d :where [(quot 37 10) ?q] [(rem -7 3) ?r] [(mod -7 3) ?m] [(dec 0) ?d]]",
        [],
        {(3, -1, 2, -1)},
        id="quot-rem-mod-dec",
    ),
    pytest.param("[:find ?x . :where [(/ 22 2) ?x]]", [], 11, id="divide-exact"),
    pytest.param(
        "[:find ?m ?n :where [1 :age ?a] [(max ?a 20) ?m] [(min ?a 20) ?n]]",
        [D()],
        {(20, 15)},
        id="max-min-functions",
    ),
    pytest.param(
        "[:find ?x :in [?x ...] :where [(odd? ?x)] [(pos? ?x)]]",
        [[-3, -2, 0, 1, 2, 3]],
        {(1,), (3,)},
        id="odd?-pos?",
    ),
    pytest.param(
        "[:find ?x :in [?x ...] :where [(even? ?x)] [(neg? ?x)]]",
        [[-3, -2, 0, 1, 2, 3]],
        {(-2,)},
        id="even?-neg?",
    ),
    pytest.param("[:find ?x :in [?x ...] :where [(zero? ?x)]]", [[-1, 0, 1]], {(0,)}, id="zero?"),
    pytest.param("[:find ?e :where [?e :age ?a] [(not= ?a 15)]]", [D()], {(2,), (3,)}, id="not="),
    pytest.param("[:find ?e :where [?e :age ?a] [(!= ?a 15)]]", [D()], {(2,), (3,)}, id="!="),
    pytest.param("[:find ?e :where [?e :age ?a] [(== ?a 22)]]", [D()], {(2,)}, id="=="),
    pytest.param(
        "[:find ?x :in [?x ...] :where [(true? ?x)]]",
        [[True, False, "x"]],
        {(True,)},
        id="true?",
    ),
    pytest.param(
        "[:find ?x :in [?x ...] :where [(false? ?x)]]",
        [[True, False, "y"]],
        {(False,)},
        id="false?",
    ),
    pytest.param("[:find ?c :where [(compare 1 2) ?c]]", [], {(-1,)}, id="compare"),
    pytest.param(
        '[:find ?k ?n ?ns :where [(keyword "a" "b") ?k] [(name ?k) ?n] [(namespace ?k) ?ns]]',
        [],
        {(K("a/b"), "b", "a")},
        id="keyword-name-namespace",
    ),
    pytest.param("[:find ?x :where [(range 3) [?x ...]]]", [], {(0,), (1,), (2,)}, id="range"),
    pytest.param(
        "[:find ?x :in [?x ...] :where [(contains? #{1 3} ?x)]]",
        [[1, 2, 3]],
        {(1,), (3,)},
        id="contains?",
    ),
    pytest.param(
        "[:find ?x :in [?x ...] :where [(empty? ?x)]]",
        [["", "a"]],
        {("",)},
        id="empty?",
    ),
    pytest.param(
        "[:find ?e :where [?e :name] [(get-else $ ?e :height 0) ?h] [(zero? ?h)]]",
        [D()],
        {(1,), (3,)},
        id="get-else-then-predicate",
    ),
    # -- tuple / untuple ---------------------------------------------------------------------
    pytest.param(
        "[:find [?t ...] :where [?e :name ?n] [?e :age ?a] [(tuple ?n ?a) ?t]]",
        [D()],
        Bag([["Ivan", 15], ["Petr", 22], ["Slava", 37]]),
        id="tuple",
    ),
    pytest.param(
        "[:find ?n2 ?a2 :where [?e :name ?n] [?e :age ?a] [(tuple ?n ?a) ?t] "
        "[(untuple ?t) [?n2 ?a2]]]",
        [D()],
        {("Ivan", 15), ("Petr", 22), ("Slava", 37)},
        id="tuple-untuple-round-trip",
    ),
    pytest.param(
        "[:find ?a ?b :in ?t :where [(untuple ?t) [?a ?b]]]",
        [[1, "x"]],
        {(1, "x")},
        id="untuple-input",
    ),
    # -- registered Python functions ---------------------------------------------------------
    pytest.param(
        "[:find ?e ?d :where [?e :age ?a] [(test-double ?a) ?d]]",
        [D()],
        {(1, 30), (2, 44), (3, 74)},
        id="registered-function",
    ),
    pytest.param(
        "[:find ?e :where [?e :age ?a] [(test-adult? ?a)]]",
        [D()],
        {(2,), (3,)},
        id="registered-predicate",
    ),
    pytest.param(
        "[:find ?c :where [1 :name ?n] [(test-letters ?n) [?c ...]]]",
        [D()],
        {("I",), ("v",), ("a",), ("n",)},
        id="registered-function-collection-binding",
    ),
    pytest.param(
        "[:find ?x :where [?e :age ?a] [(test-none ?a) ?x]]",
        [D()],
        set(),
        id="registered-function-returning-none",
    ),
    pytest.param(
        [
            K("find"),
            S("?e"),
            S("?d"),
            K("where"),
            [S("?e"), K("age"), S("?a")],
            [(S("test-double"), S("?a")), S("?d")],
            [(S(">"), S("?d"), 40)],
        ],
        [D()],
        {(2, 44), (3, 74)},
        id="registered-function-python-data",
    ),
    # -- nested q ----------------------------------------------------------------------------
    pytest.param(
        "[:find ?n . :in $ :where [(q [:find (count ?e) . :where [?e :name]] $) ?n]]",
        [D()],
        3,
        id="nested-q-scalar",
    ),
    pytest.param(
        "[:find ?n ?a :in $ :where [(q [:find ?n ?a :where [?e :name ?n] [?e :age ?a] [(> ?a 20)]] $) "
        "[[?n ?a]]]]",
        [D()],
        {("Petr", 22), ("Slava", 37)},
        id="nested-q-relation",
    ),
    pytest.param(
        "[:find ?r :in $ [?e ...] :where [(q [:find ?n . :in $ ?e :where [?e :name ?n]] $ ?e) ?r]]",
        [D(), [1, 2]],
        {("Ivan",), ("Petr",)},
        id="nested-q-with-outer-input",
    ),
    pytest.param(
        "[:find ?m . :in $a :where [(q [:find ?p :in $x :where [$x ?p :parent _]] $a) ?v] "
        "[(count ?v) ?n] [(= 0 ?n) ?m]]",
        [D()],
        False,  # two entities have a parent: (= 0 2) is false, and false is kept (not nil)
        id="nested-q-counted",
    ),
    pytest.param(
        "[:find ?u ?n :in $ :where [(q [:find ?p :in $x :where [$x ?p :weight _]] $) ?v] "
        '[(count ?v) ?n] [?e :name ?p] [(str ?p "!") ?u]]',
        [D()],
        {("Ivan!", 0), ("Petr!", 0), ("Slava!", 0)},
        id="nested-q-literal-vars-are-local",
    ),
    pytest.param(
        "[:find [?n ...] :in $ :where [(q [:find [?x ...] :in [?x ...]] [1 2 3]) [?n ...]]]",
        [D()],
        Bag([1, 2, 3]),
        id="nested-q-over-a-constant-collection",
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
    replica.register_function("test-double", py_double)
    replica.register_function("test-adult?", py_adult)
    replica.register_function("test-letters", py_letters)
    replica.register_function("test-none", py_none)
    await run(make_conn, new_db_url, DATABASES, query, inputs, expected)
