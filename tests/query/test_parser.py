"""The Datalog parser (query/parser.py, DESIGN.md section 6).

Valid queries are compared with ASTs written by hand from the Datomic/DataScript grammar;
invalid ones must raise QueryParseError with a message fragment (DataScript's wording where
DataScript has one). Hypothesis checks that generated valid queries parse to the AST they were
generated from, that EDN text and Python data parse alike, and that arbitrary data never makes
the parser raise anything but QueryParseError.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from query import parser as parser_module
from query.ast import (
    DEFAULT_SRC,
    And,
    BindColl,
    BindIgnore,
    BindScalar,
    BindTuple,
    Clause,
    Const,
    FindAggregate,
    FindColl,
    FindPull,
    FindRel,
    FindScalar,
    FindSpec,
    FindTuple,
    FindVar,
    Function,
    InputSpec,
    Not,
    Or,
    Pattern,
    Placeholder,
    Predicate,
    Query,
    RuleBranch,
    RuleCall,
    Rules,
    RulesVar,
    SrcVar,
    Var,
)
from query.edn import EDNError, dumps, loads
from query.errors import QueryError, QueryParseError
from query.parser import parse_query, parse_rules
from query.types import Keyword, Symbol

K = Keyword
S = Symbol
PH = Placeholder()


def v(name: str) -> Var:
    return Var(name)


def c(value: Any) -> Const:
    return Const(value)


def pat(*terms: Any, src: str = "$") -> Pattern:
    return Pattern(SrcVar(src), tuple(terms))


def fv(name: str) -> FindVar:
    return FindVar(Var(name))


def bs(name: str) -> BindScalar:
    return BindScalar(Var(name))


def rel(*names: str) -> FindRel:
    return FindRel(tuple(fv(n) for n in names))


def Q(
    find: FindSpec,
    where: list[Clause],
    inputs: tuple[InputSpec, ...] = (DEFAULT_SRC,),
    **kw: Any,
) -> Query:
    return Query(
        find=find,
        keys=kw.get("keys"),
        with_=kw.get("with_", ()),
        inputs=inputs,
        where=tuple(where),
        order_by=kw.get("order_by", ()),
        offset=kw.get("offset"),
        limit=kw.get("limit"),
    )


E_NAME_N = pat(v("?e"), c(K("name")), v("?n"))

# -- valid queries -----------------------------------------------------------------------------

VALID: list[tuple[str, str, Query]] = [
    # find specs
    ("relation", "[:find ?e ?n :where [?e :name ?n]]", Q(rel("?e", "?n"), [E_NAME_N])),
    (
        "collection",
        "[:find [?n ...] :where [_ :name ?n]]",
        Q(FindColl(fv("?n")), [pat(PH, c(K("name")), v("?n"))]),
    ),
    (
        "scalar",
        "[:find ?n . :where [1 :name ?n]]",
        Q(FindScalar(fv("?n")), [pat(c(1), c(K("name")), v("?n"))]),
    ),
    (
        "tuple",
        "[:find [?e ?n] :where [?e :name ?n]]",
        Q(FindTuple((fv("?e"), fv("?n"))), [E_NAME_N]),
    ),
    ("one-tuple", "[:find [?e] :where [?e]]", Q(FindTuple((fv("?e"),)), [pat(v("?e"))])),
    (
        "aggregates",
        "[:find ?n (count ?e) (count-distinct ?e) (max 3 ?e) (max ?k ?e) (my-agg ?e)"
        " :in $ ?k :where [?e :name ?n]]",
        Q(
            FindRel(
                (
                    fv("?n"),
                    FindAggregate("count", (), v("?e")),
                    FindAggregate("count-distinct", (), v("?e")),
                    FindAggregate("max", (c(3),), v("?e")),
                    FindAggregate("max", (v("?k"),), v("?e")),
                    FindAggregate("my-agg", (), v("?e")),
                )
            ),
            [E_NAME_N],
            (DEFAULT_SRC, bs("?k")),
        ),
    ),
    (
        "aggregate in coll, scalar and tuple",
        "[:find [(count ?e) ?n] :where [?e :name ?n]]",
        Q(FindTuple((FindAggregate("count", (), v("?e")), fv("?n"))), [E_NAME_N]),
    ),
    (
        "aggregate scalar",
        "[:find (count ?e) . :where [?e :name ?n]]",
        Q(FindScalar(FindAggregate("count", (), v("?e"))), [E_NAME_N]),
    ),
    (
        "aggregate coll",
        "[:find [(sum ?n) ...] :where [?e :name ?n]]",
        Q(FindColl(FindAggregate("sum", (), v("?n"))), [E_NAME_N]),
    ),
    (
        "custom aggregate through a variable",
        "[:find (aggregate ?f ?e) :in $ ?f :where [?e :name]]",
        Q(
            FindRel((FindAggregate("?f", (), v("?e")),)),
            [pat(v("?e"), c(K("name")))],
            (DEFAULT_SRC, bs("?f")),
        ),
    ),
    (
        "pull",
        "[:find (pull ?e [*]) (pull $2 ?e [:name {:friend [:name]}]) :in $ $2 :where [?e :name]]",
        Q(
            FindRel(
                (
                    FindPull(DEFAULT_SRC, v("?e"), [S("*")]),
                    FindPull(SrcVar("$2"), v("?e"), [K("name"), {K("friend"): [K("name")]}]),
                )
            ),
            [pat(v("?e"), c(K("name")))],
            (DEFAULT_SRC, SrcVar("$2")),
        ),
    ),
    (
        "pull pattern from an input variable",
        "[:find (pull ?e ?p) :in $ ?p :where [?e :name]]",
        Q(
            FindRel((FindPull(DEFAULT_SRC, v("?e"), v("?p")),)),
            [pat(v("?e"), c(K("name")))],
            (DEFAULT_SRC, bs("?p")),
        ),
    ),
    (
        "pull pattern from a plain-symbol input",
        "[:find [(pull ?e pattern) ...] :in $ pattern :where [?e :name]]",
        Q(
            FindColl(FindPull(DEFAULT_SRC, v("?e"), v("pattern"))),
            [pat(v("?e"), c(K("name")))],
            (DEFAULT_SRC, bs("pattern")),
        ),
    ),
    # return maps
    (
        ":keys",
        "[:find ?e ?n :keys e name :where [?e :name ?n]]",
        Q(rel("?e", "?n"), [E_NAME_N], keys=("keys", ("e", "name"))),
    ),
    (
        ":strs",
        "[:find ?e ?n :strs e name :where [?e :name ?n]]",
        Q(rel("?e", "?n"), [E_NAME_N], keys=("strs", ("e", "name"))),
    ),
    (
        ":syms with a tuple find",
        "[:find [?e ?n] :syms e name :where [?e :name ?n]]",
        Q(FindTuple((fv("?e"), fv("?n"))), [E_NAME_N], keys=("syms", ("e", "name"))),
    ),
    (
        ":with",
        "[:find (sum ?age) :with ?e :where [?e :age ?age]]",
        Q(
            FindRel((FindAggregate("sum", (), v("?age")),)),
            [pat(v("?e"), c(K("age")), v("?age"))],
            with_=(v("?e"),),
        ),
    ),
    # :in
    (
        "every kind of input",
        "[:find ?e :in $ $hist % ?x [?t ...] [?a ?b] [[?c ?d]] [_ ?g] [[_ [?h ...]] ...] _"
        " :where [?e :a ?x]]",
        Q(
            rel("?e"),
            [pat(v("?e"), c(K("a")), v("?x"))],
            (
                DEFAULT_SRC,
                SrcVar("$hist"),
                RulesVar(),
                bs("?x"),
                BindColl(bs("?t")),
                BindTuple((bs("?a"), bs("?b"))),
                BindColl(BindTuple((bs("?c"), bs("?d")))),
                BindTuple((BindIgnore(), bs("?g"))),
                BindColl(BindTuple((BindIgnore(), BindColl(bs("?h"))))),
                BindIgnore(),
            ),
        ),
    ),
    (
        "find var bound only by :in",
        "[:find ?x :in ?x]",
        Q(rel("?x"), [], (bs("?x"),)),
    ),
    # data patterns
    (
        "pattern terms",
        '[:find ?e ?v ?tx :where [?e :a ?v ?tx true] [$2 ?e :b "s"] [?e :c nil] [?e :d foo]'
        ' [?e :f $x] [[:email "a@b"] :friend ?e] [?e] :in $ $2]',
        Q(
            rel("?e", "?v", "?tx"),
            [
                pat(v("?e"), c(K("a")), v("?v"), v("?tx"), c(True)),
                pat(v("?e"), c(K("b")), c("s"), src="$2"),
                pat(v("?e"), c(K("c")), c(None)),
                pat(v("?e"), c(K("d")), c(S("foo"))),
                pat(v("?e"), c(K("f")), c(S("$x"))),
                pat(c([K("email"), "a@b"]), c(K("friend")), v("?e")),
                pat(v("?e")),
            ],
            (DEFAULT_SRC, SrcVar("$2")),
        ),
    ),
    (
        "explicit $ source",
        "[:find ?e :where [$ ?e :a]]",
        Q(rel("?e"), [pat(v("?e"), c(K("a")))]),
    ),
    # predicates and functions
    (
        "predicates and functions",
        "[:find ?e ?s ?t ?u ?w ?age :in $ ?pred :where [?e :name ?n] [(> ?n 1)] [(?pred ?n)] [(rand-ok?)]"
        ' [(str ?n "x") ?s] [(f ?n) [?t ?u]] [(g ?n) [?w ...]] [(h) [[?x ?y]]] [(k ?n) _]'
        " [(get-else $ ?e :age 0) ?age]]",
        Q(
            rel("?e", "?s", "?t", "?u", "?w", "?age"),
            [
                E_NAME_N,
                Predicate(">", (v("?n"), c(1))),
                Predicate("?pred", (v("?n"),)),
                Predicate("rand-ok?", ()),
                Function("str", (v("?n"), c("x")), bs("?s")),
                Function("f", (v("?n"),), BindTuple((bs("?t"), bs("?u")))),
                Function("g", (v("?n"),), BindColl(bs("?w"))),
                Function("h", (), BindColl(BindTuple((bs("?x"), bs("?y"))))),
                Function("k", (v("?n"),), BindIgnore()),
                Function("get-else", (DEFAULT_SRC, v("?e"), c(K("age")), c(0)), bs("?age")),
            ],
            (DEFAULT_SRC, bs("?pred")),
        ),
    ),
    (
        "no pattern: no default source",
        "[:find ?x :where [(ground 1) ?x]]",
        Q(rel("?x"), [Function("ground", (c(1),), bs("?x"))], ()),
    ),
    # rule calls
    (
        "rule calls",
        '[:find ?a ?b :in $ $2 % :where (anc ?a ?b) ($2 anc ?a _) (anc ?a "x") (anc ?a thing)]',
        Q(
            rel("?a", "?b"),
            [
                RuleCall(None, "anc", (v("?a"), v("?b"))),
                RuleCall(SrcVar("$2"), "anc", (v("?a"), PH)),
                RuleCall(None, "anc", (v("?a"), c("x"))),
                RuleCall(None, "anc", (v("?a"), c(S("thing")))),
            ],
            (DEFAULT_SRC, SrcVar("$2"), RulesVar()),
        ),
    ),
    # not / not-join
    (
        "not and not-join",
        "[:find ?e :in $ $2 :where [?e :name ?n] (not [?e :age 10]) ($2 not [?e :x ?y] [?y :z 1])"
        " (not-join [?e] [?e :friend ?f] [?f :name ?n2]) ($2 not-join [?n] [_ :alias ?n])]",
        Q(
            rel("?e"),
            [
                E_NAME_N,
                Not(None, None, (pat(v("?e"), c(K("age")), c(10)),)),
                Not(
                    SrcVar("$2"),
                    None,
                    (pat(v("?e"), c(K("x")), v("?y")), pat(v("?y"), c(K("z")), c(1))),
                ),
                Not(
                    None,
                    (v("?e"),),
                    (pat(v("?e"), c(K("friend")), v("?f")), pat(v("?f"), c(K("name")), v("?n2"))),
                ),
                Not(SrcVar("$2"), (v("?n"),), (pat(PH, c(K("alias")), v("?n")),)),
            ],
            (DEFAULT_SRC, SrcVar("$2")),
        ),
    ),
    # or / or-join / and
    (
        "or with and branches",
        '[:find ?e :where (or [?e :name "Oleg"] (and [?e :age ?a] [(> ?a 10)]) [?e :age 10])'
        " [?e :age ?a]]",
        Q(
            rel("?e"),
            [
                Or(
                    None,
                    None,
                    (),
                    (
                        pat(v("?e"), c(K("name")), c("Oleg")),
                        And((pat(v("?e"), c(K("age")), v("?a")), Predicate(">", (v("?a"), c(10))))),
                        pat(v("?e"), c(K("age")), c(10)),
                    ),
                ),
                pat(v("?e"), c(K("age")), v("?a")),
            ],
        ),
    ),
    (
        "or-join with required variables and a source",
        "[:find ?e ?x :in $ $2 :where [?e :name] ($2 or-join [[?e] ?x] [?e :a ?x] (and [?e :b ?y]"
        " [?y :c ?x]))]",
        Q(
            rel("?e", "?x"),
            [
                pat(v("?e"), c(K("name"))),
                Or(
                    SrcVar("$2"),
                    (v("?e"), v("?x")),
                    (v("?e"),),
                    (
                        pat(v("?e"), c(K("a")), v("?x")),
                        And((pat(v("?e"), c(K("b")), v("?y")), pat(v("?y"), c(K("c")), v("?x")))),
                    ),
                ),
            ],
            (DEFAULT_SRC, SrcVar("$2")),
        ),
    ),
    (
        "or-join without required variables",
        "[:find ?e :where (or-join [?e] [?e :name ?n] (and [?e :age ?a] [?e :name ?n]))]",
        Q(
            rel("?e"),
            [
                Or(
                    None,
                    (v("?e"),),
                    (),
                    (
                        pat(v("?e"), c(K("name")), v("?n")),
                        And(
                            (
                                pat(v("?e"), c(K("age")), v("?a")),
                                pat(v("?e"), c(K("name")), v("?n")),
                            )
                        ),
                    ),
                ),
            ],
        ),
    ),
    (
        "or whose branches differ only in bound variables",
        "[:find ?e :where [?e :name ?n] (or [?e :a 1] [?e :b ?n])]",
        Q(
            rel("?e"),
            [
                E_NAME_N,
                Or(
                    None,
                    None,
                    (),
                    (pat(v("?e"), c(K("a")), c(1)), pat(v("?e"), c(K("b")), v("?n"))),
                ),
            ],
        ),
    ),
    (
        "and outside or is spliced in",
        "[:find ?e :where (and [?e :a] [?e :b]) (not (and [?e :c] [?e :d]))]",
        Q(
            rel("?e"),
            [
                pat(v("?e"), c(K("a"))),
                pat(v("?e"), c(K("b"))),
                Not(None, None, (pat(v("?e"), c(K("c"))), pat(v("?e"), c(K("d"))))),
            ],
        ),
    ),
    (
        "binding checks ignore clause order",
        '[:find ?e :where (not [?e :name "Ivan"]) [(> ?a 1)] [?e :name] [?e :age ?a]]',
        Q(
            rel("?e"),
            [
                Not(None, None, (pat(v("?e"), c(K("name")), c("Ivan")),)),
                Predicate(">", (v("?a"), c(1))),
                pat(v("?e"), c(K("name"))),
                pat(v("?e"), c(K("age")), v("?a")),
            ],
        ),
    ),
    # :order-by, :limit, :offset
    (
        "order-by flat",
        "[:find ?n ?a :order-by [?a :desc ?n] :limit 10 :offset 5 :where [?e :name ?n] [?e :age ?a]]",
        Q(
            rel("?n", "?a"),
            [E_NAME_N, pat(v("?e"), c(K("age")), v("?a"))],
            order_by=((v("?a"), "desc"), (v("?n"), "asc")),
            limit=10,
            offset=5,
        ),
    ),
    (
        "order-by nested",
        "[:find ?n ?a ?e :order-by [[?a :desc] [?n] ?e] :where [?e :name ?n] [?e :age ?a]]",
        Q(
            rel("?n", "?a", "?e"),
            [E_NAME_N, pat(v("?e"), c(K("age")), v("?a"))],
            order_by=((v("?a"), "desc"), (v("?n"), "asc"), (v("?e"), "asc")),
        ),
    ),
    (
        "order-by unbracketed",
        "[:find ?n ?a :order-by ?a :desc ?n :asc :limit 0 :where [?e :name ?n] [?e :age ?a]]",
        Q(
            rel("?n", "?a"),
            [E_NAME_N, pat(v("?e"), c(K("age")), v("?a"))],
            order_by=((v("?a"), "desc"), (v("?n"), "asc")),
            limit=0,
        ),
    ),
    # the map form
    (
        "map form",
        "{:find [?e ?n] :keys [e n] :in [$ ?x] :with [?a] :where [[?e :name ?n] [?e :age ?a]"
        " [(> ?a ?x)]] :limit 3 :offset 1 :order-by [?n :desc]}",
        Q(
            rel("?e", "?n"),
            [E_NAME_N, pat(v("?e"), c(K("age")), v("?a")), Predicate(">", (v("?a"), v("?x")))],
            (DEFAULT_SRC, bs("?x")),
            keys=("keys", ("e", "n")),
            with_=(v("?a"),),
            limit=3,
            offset=1,
            order_by=((v("?n"), "desc"),),
        ),
    ),
    (
        "map form scalar",
        "{:find [?e .] :where [[?e :name]]}",
        Q(FindScalar(fv("?e")), [pat(v("?e"), c(K("name")))]),
    ),
    (
        "comments and discards",
        "[:find ?e ; a comment\n #_ ?ignored :where [?e :name]]",
        Q(rel("?e"), [pat(v("?e"), c(K("name")))]),
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in VALID], ids=[n for n, _, _ in VALID]
)
def test_valid_queries(text: str, expected: Query) -> None:
    assert parse_query(text) == expected


def test_python_data_vector_and_map_forms() -> None:
    where = [[S("?e"), K("name"), S("?n")]]
    expected = Q(rel("?e", "?n"), [E_NAME_N])
    assert parse_query([K("find"), S("?e"), S("?n"), K("where"), *where]) == expected
    assert parse_query({K("find"): [S("?e"), S("?n")], K("where"): where}) == expected
    assert parse_query({"find": [S("?e"), S("?n")], ":where": where}) == expected
    assert parse_query({":find": (S("?e"), S("?n")), "where": tuple(where)}) == expected
    # ":find" as a plain string in the vector form too
    assert parse_query([":find", S("?e"), S("?n"), ":where", *where]) == expected


def test_python_ellipsis_and_tuples() -> None:
    q = [
        K("find"),
        [S("?n"), ...],
        K("in"),
        S("$"),
        [S("?x"), ...],
        K("where"),
        [S("?e"), K("name"), S("?n")],
        [(S(">"), S("?n"), S("?x"))],
        [(S("f"), S("?n")), [S("?y"), ...]],
    ]
    assert parse_query(q) == Q(
        FindColl(fv("?n")),
        [
            E_NAME_N,
            Predicate(">", (v("?n"), v("?x"))),
            Function("f", (v("?n"),), BindColl(bs("?y"))),
        ],
        (DEFAULT_SRC, BindColl(bs("?x"))),
    )


def test_plain_strings_are_constants() -> None:
    q = [K("find"), S("?e"), K("where"), [S("?e"), "name", "?n"], [S("?e"), "_", "$x"]]
    parsed = parse_query(q)
    assert parsed.where == (
        pat(v("?e"), c("name"), c("?n")),
        pat(v("?e"), c("_"), c("$x")),
    )
    # "?n" is not a variable, so finding it is an error
    with pytest.raises(QueryParseError, match="find element"):
        parse_query([K("find"), "?n", K("where"), [S("?e"), "name", "?n"]])


def test_constants_keep_their_type() -> None:
    parsed = parse_query('[:find ?e :where [?e :a "s"] [?e :b sym] [?e "c" 1.5]]')
    values = [t.value for clause in parsed.where for t in clause.terms if isinstance(t, Const)]  # type: ignore[union-attr]
    assert [type(x) for x in values] == [Keyword, str, Keyword, Symbol, str, float]


def test_var_names_and_fn_names_are_plain_strings() -> None:
    parsed = parse_query("[:find ?e :where [?e :a ?v] [(> ?v 1)]]")
    pattern, pred = parsed.where
    assert isinstance(pattern, Pattern) and isinstance(pred, Predicate)
    assert type(pattern.terms[0].name) is str  # type: ignore[union-attr]
    assert type(pred.fn) is str


def test_edn_text_and_python_data_agree() -> None:
    for _, text, _expected in VALID:
        assert parse_query(loads(text)) == parse_query(text)


def test_query_instance_is_returned_as_is() -> None:
    parsed = parse_query("[:find ?e :where [?e]]")
    assert parse_query(parsed) is parsed


# -- invalid queries ---------------------------------------------------------------------------

INVALID: list[tuple[Any, str]] = [
    # unknown / unbound variables
    ("[:find ?e :where [?x]]", "Query for unknown vars: [?e]"),
    ("[:find ?e :with ?f :where [?e]]", "Query for unknown vars: [?f]"),
    ("[:find ?e ?x ?t :in ?x :where [?e]]", "Query for unknown vars: [?t]"),
    ("[:find ?e :where [?x] (not [?x :a ?e])]", "Query for unknown vars: [?e]"),
    ("[:find (max ?n ?e) :where [?e]]", "Query for unknown vars: [?n]"),
    ("[:find (pull ?e ?p) :where [?e]]", "Query for unknown vars: [?p]"),
    ("[:find (pull ?e pattern) :where [?e]]", "Query for unknown vars: [pattern]"),
    ("[:find (aggregate ?f ?e) :where [?e]]", "Query for unknown vars: [?f]"),
    (
        "[:find ?x ?e :with ?y ?e :where [?x ?e ?y]]",
        ":find and :with should not use same variables",
    ),
    ("[:find ?e :in $ $ ?x :where [?e]]", "Vars used in :in should be distinct"),
    ("[:find ?e :in ?x $ ?x :where [?e]]", "Vars used in :in should be distinct"),
    ("[:find ?e :in $ % ?x % :where [?e]]", "Vars used in :in should be distinct"),
    ("[:find ?n :with ?e ?f ?e :where [?e ?f ?n]]", "Vars used in :with should be distinct"),
    ("[:find ?x :where [$1 ?x]]", "Where uses unknown source vars: [$1]"),
    ("[:find ?x :in $1 :where [$2 ?x]]", "Where uses unknown source vars: [$2]"),
    ("[:find ?x :where [?x] [(zero? $2 ?x)]]", "Where uses unknown source vars: [$2]"),
    ("[:find ?x :in $2 :where [$2 ?x] [(zero? $ ?x)]]", "Where uses unknown source vars: [$]"),
    ("[:find ?e :where [?e] ($3 not [?e :a])]", "Where uses unknown source vars: [$3]"),
    ("[:find (pull $x ?e [*]) :where [?e]]", "Where uses unknown source vars: [$x]"),
    ("[:find ?e :where (rule ?e)]", "Missing rules var '%' in :in"),
    ("[:find ?e :where [?e] (not (rule ?e))]", "Missing rules var '%' in :in"),
    # binding checks
    ("[:find ?x :where [(zero? ?x)]]", "Insufficient bindings: #{?x} not bound in"),
    ("[:find ?y :where [(inc ?x) ?y]]", "Insufficient bindings: #{?x} not bound in"),
    ("[:find ?e :where [?e] [(?f ?e)]]", "Insufficient bindings: #{?f} not bound in"),
    ('[:find ?e :where [?e :name] (not [?a :name "Ivan"])]', "none of #{?a} is bound"),
    ("[:find ?e :where [?e :name] (not [?e :a ?x]) (not [?x :b])]", "none of #{?x} is bound"),
    (
        "[:find ?e :where [?e :name] (not-join [?x] [?x :b])]",
        "Insufficient bindings: #{?x} not bound",
    ),
    (
        "[:find ?e :where [?e :name] (not-join [?e] [?e :a ?x] [(> ?x ?y)]) [?e :b ?y]]",
        "Insufficient bindings: #{?y} not bound",
    ),
    ("[:find ?e :where [?e] (not [_ :a])]", "Join variables should not be empty"),
    ("[:find ?e :where [?e] (not-join [] [?e])]", "Join variables should not be empty"),
    ("[:find ?e :where [?e] (or [_ :a])]", "Join variables should not be empty"),
    (
        "[:find ?e :where (or [?e :name _] [?e :age ?a])]",
        "All clauses in 'or' must use same set of free vars, had [#{?e} #{?a ?e}]",
    ),
    ("[:find ?e :where (or [?e :a ?x] [?e :b ?y])]", "All clauses in 'or' must use same set"),
    (
        "[:find ?e :where [?e :a] (or-join [?e ?x] [?e :b ?x] [?e :c])]",
        "All clauses in 'or' must use same set of free vars, had #{?x} not bound in",
    ),
    (
        '[:find ?e :where (or-join [[?e]] [?e :name "Ivan"])]',
        "Insufficient bindings: #{?e} not bound in",
    ),
    (
        "[:find ?e :where [?e :a ?x] (or-join [?e] [?e :b] [(> ?x 1)])]",
        "Insufficient bindings: #{?x} not bound in",
    ),
    # clause shapes
    ("[:find ?e :where []]", "Pattern could not be empty"),
    ("[:find ?e :where [$]]", "Pattern could not be empty"),
    ("[:find ?e :where [?e :a 1 2 true :x]]", "more than 5 terms"),
    ("[:find ?e :where [?e] ?e]", "Cannot parse clause"),
    ("[:find ?e :where [?e] {:a 1}]", "Cannot parse clause"),
    ("[:find ?e :where [?e] 42]", "Cannot parse clause"),
    ("[:find ?e :where [?e] [(f ?e) ?x ?y]]", "Cannot parse clause"),
    ("[:find ?e :where [?e] [$ (f ?e)]]", "cannot have a source"),
    ("[:find ?e :where [?e] (or (and) [?e :a])]", "Cannot parse 'and' clause"),
    ("[:find ?e :where [?e] ($ and [?e :a])]", "'and' cannot have a source"),
    ("[:find ?e :where [?e] (not)]", "Cannot parse 'not' clause"),
    ("[:find ?e :where [?e] (not-join [?e])]", "Cannot parse 'not-join' clause"),
    ("[:find ?e :where [?e] (not-join ?e [?e])]", "Cannot parse 'not-join' clause"),
    ("[:find ?e :where [?e] (not-join [:a] [?e])]", "Cannot parse not-join variable"),
    ("[:find ?e :where [?e] (or)]", "Cannot parse 'or' clause"),
    ("[:find ?e :where [?e] (or-join [?e])]", "Cannot parse 'or-join' clause"),
    ("[:find ?e :where [?e] (or-join [] [?e])]", "Cannot parse rule-vars"),
    ("[:find ?e :where [?e] (or-join ?e [?e])]", "Cannot parse rule-vars"),
    ("[:find ?e :where [?e] (or-join [?e ?e] [?e])]", "Rule variables should be distinct"),
    ("[:find ?e :where [?e] (or-join [:a] [?e])]", "Cannot parse var, expected symbol starting"),
    ("[:find ?e :in $ % :where [?e] (friends)]", "rule-expr requires at least one argument"),
    ("[:find ?e :where [?e] [(f ?e) :x]]", "Cannot parse binding"),
    ("[:find ?e :where [?e] [(f ?e) []]]", "Tuple binding cannot be empty"),
    ("{:find [?e] :where [?e]}", "Cannot parse clause"),
    ("{:find [?e] :where 1}", ":where expects a vector"),
    # :limit / :offset / :order-by
    ("[:find ?e :limit -1 :where [?e]]", ":limit must not be negative"),
    ("[:find ?e :offset -2 :where [?e]]", ":offset must not be negative"),
    ("[:find ?e :limit 1.5 :where [?e]]", ":limit must be an integer"),
    ("[:find ?e :limit true :where [?e]]", ":limit must be an integer"),
    ('[:find ?e :offset "1" :where [?e]]', ":offset must be an integer"),
    ("[:find ?e :limit 1 2 :where [?e]]", ":limit expects one value"),
    ("[:find ?e :limit :where [?e]]", ":limit expects one value"),
    ("[:find ?e :order-by ?x :where [?e :a ?x]]", ":order-by variable is not in :find"),
    ("[:find ?n (count ?e) :order-by ?e :where [?e :a ?n]]", ":order-by variable is not in :find"),
    ("[:find ?e :order-by [?e :up] :where [?e]]", ":order-by expects"),
    ("[:find ?e :order-by [[?e :desc :asc]] :where [?e]]", ":order-by expects"),
    ("[:find ?e :order-by [1] :where [?e]]", ":order-by expects"),
    ("[:find ?e :order-by [] :where [?e]]", ":order-by expects"),
    ("[:find ?e :order-by [?e ?e] :where [?e]]", ":order-by variables should be distinct"),
    # return maps
    ("[:find ?a ?b :keys x y z :where [?a ?b]]", "Count of :keys must match count of :find"),
    ("[:find ?a ?b :syms x :where [?a ?b]]", "Count of :syms must match count of :find"),
    ("[:find ?a ?b :strs x :where [?a ?b]]", "Count of :strs must match count of :find"),
    ("[:find [?a ?b] :keys x :where [?a ?b]]", "Count of :keys must match count of :find"),
    ("[:find [?a ...] :keys x :where [?a]]", ":keys does not work with collection :find"),
    ("[:find ?a . :keys x :where [?a]]", ":keys does not work with single-scalar :find"),
    ("[:find ?a ?b :keys x y :strs z w :where [?a ?b]]", "Only one of :keys/:syms/:strs"),
    ("[:find ?a :keys :where [?a]]", "Cannot parse :keys"),
    ("[:find ?a :keys 1 :where [?a]]", "Cannot parse :keys"),
    # structure, keywords, find, in, with
    ("[:find ?e :foo 1 :where [?e]]", "Unknown query keyword: :foo"),
    ("{:find [?e] :foo [] :where [[?e]]}", "Unknown query keyword: :foo"),
    ({K("find"): [S("?e")], 1: [], K("where"): [[S("?e")]]}, "Unknown query keyword: 1"),
    ({"find": [S("?e")], ":find": [S("?e")]}, "Duplicate query keyword :find"),
    ("[:where [?e]]", "Query has no :find"),
    ("[?e :find ?e :where [?e]]", "Query should start with a keyword"),
    ("42", "Query should be a vector or a map"),
    ('"[:find ?e]"', "Query should be a vector or a map"),
    (None, "Query should be a vector or a map"),
    ("[:find :where [?e]]", "Cannot parse :find"),
    ("[:find [] :where [?e]]", "Cannot parse :find"),
    ("{:find ?e :where [[?e]]}", ":find expects a vector"),
    ("[:find 1 :where [?e]]", "Cannot parse find element"),
    ("[:find _ :where [?e]]", "Cannot parse find element"),
    ("[:find ?e . ?f :where [?e ?f]]", "Cannot parse find element"),
    ("[:find (pull ?e) :where [?e]]", "Cannot parse pull expression"),
    ("[:find (pull 1 ?e [*]) :where [?e]]", "Cannot parse pull expression"),
    ("[:find (pull ?e ?x [*]) :where [?e]]", "Cannot parse pull expression"),
    ("[:find (pull $ 1 [*]) :where [?e]]", "Cannot parse pull expression"),
    ("[:find (pull ?e $) :where [?e]]", "Cannot parse pull expression"),
    ("[:find (count) :where [?e]]", "Cannot parse aggregate"),
    ("[:find (max ?e 3) :where [?e]]", "last argument of an aggregate must be a variable"),
    ("[:find (max $ ?e) :where [?e]]", "Cannot use $ as an aggregate argument"),
    ("[:find (aggregate 1 ?e) :where [?e]]", "Cannot parse custom aggregate call"),
    ("[:find (aggregate ?f) :where [?e]]", "Cannot parse custom aggregate call"),
    ("{:find [?e] :in [$ :x] :where [[?e]]}", "Cannot parse :in"),
    ("{:find [?e] :in [$ 1] :where [[?e]]}", "Cannot parse :in"),
    ("[:find ?e :in $ [?a :b] :where [?e]]", "Cannot parse binding"),
    ("[:find ?e :in $ [?a $] :where [?e]]", "Cannot parse binding"),
    ("[:find ?e :in $ [] :where [?e]]", "Tuple binding cannot be empty"),
    ("[:find ?e :in $ [[?a ...]] :where [?e]]", "Cannot parse binding"),
    ("[:find ?e :with _ :where [?e]]", "Cannot parse :with clause"),
    ("{:find [?e] :in $ :where [[?e]]}", ":in expects a vector"),
]


@pytest.mark.parametrize(("query", "fragment"), INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_queries(query: Any, fragment: str) -> None:
    with pytest.raises(QueryParseError) as info:
        parse_query(query)
    assert fragment in str(info.value)
    assert isinstance(info.value, QueryError) and isinstance(info.value, ValueError)


def test_error_names_the_offending_form() -> None:
    with pytest.raises(QueryParseError) as info:
        parse_query("[:find ?e :where [?e :name] (not [?a :name 1])]")
    assert info.value.form == (S("not"), [S("?a"), K("name"), 1])
    assert str(info.value).endswith("(not [?a :name 1])")
    with pytest.raises(QueryParseError) as info:
        parse_query("[:find ?e :where [?e :name] [?e :a 1 2 3 4]]")
    assert info.value.form == [S("?e"), K("a"), 1, 2, 3, 4]


def test_edn_errors_propagate() -> None:
    with pytest.raises(EDNError) as info:
        parse_query("[:find ?e :where [?e")
    assert info.value.position is not None
    with pytest.raises(EDNError):
        parse_rules("[[(r ?x) [?x]]")


def test_no_raw_python_exception_escapes() -> None:
    class Weird:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("boom")

        __hash__ = None  # type: ignore[assignment]

    for bad in (
        [K("find"), S("?e"), K("where"), [S("?e"), K("a"), Weird()]],
        {K("find"): [S("?e")], K("where"): [[S("?e"), Weird()]]},
        [K("find"), (S("pull"), S("?e"), [Weird()]), K("where"), [S("?e")]],
    ):
        try:
            parse_query(bad)
        except QueryParseError:
            pass
    deep: Any = [S("?e")]
    for _ in range(5000):
        deep = (S("not"), deep)
    with pytest.raises(QueryParseError, match="nested too deeply"):
        parse_query([K("find"), S("?e"), K("where"), [S("?e")], deep])


# -- caching -----------------------------------------------------------------------------------


def test_text_cache_returns_the_same_object() -> None:
    text = "[:find ?e :where [?e :cache-test]]"
    assert parse_query(text) is parse_query(text)


def test_data_cache_tells_types_apart() -> None:
    a = parse_query([K("find"), S("?e"), K("where"), [S("?e"), K("a"), 1]])
    b = parse_query([K("find"), S("?e"), K("where"), [S("?e"), "a", True]])
    c_ = parse_query([K("find"), S("?e"), K("where"), [S("?e"), K("a"), 1]])
    assert a is c_
    assert type(b.where[0].terms[1].value) is str  # type: ignore[union-attr]
    assert type(b.where[0].terms[2].value) is bool  # type: ignore[union-attr]
    d = parse_query([K("find"), S("?e"), K("where"), [S("?e"), K("a"), 1.0]])
    assert type(d.where[0].terms[2].value) is float  # type: ignore[union-attr]


def test_cached_ast_does_not_alias_caller_data() -> None:
    pattern: list[Any] = [K("name")]
    ref: list[Any] = [K("email"), "x@y"]
    q = [K("find"), (S("pull"), S("?e"), pattern), K("where"), [ref, K("friend"), S("?e")]]
    parsed = parse_query(q)
    pattern.append(K("age"))
    ref[1] = "changed"
    el = parsed.find.elements[0]  # type: ignore[union-attr]
    assert el.pattern == [K("name")]
    assert parsed.where[0].terms[0] == Const([K("email"), "x@y"])  # type: ignore[union-attr]
    assert parse_query(q) != parsed  # a different query now


def test_unhashable_data_is_parsed_without_cache() -> None:
    class Opaque:
        __hash__ = None  # type: ignore[assignment]

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Opaque)

    q = [K("find"), S("?e"), K("where"), [S("?e"), K("a"), Opaque()]]
    assert parse_query(q) == parse_query(q)


def test_cache_is_bounded() -> None:
    for i in range(parser_module.CACHE_SIZE + 50):
        parse_query(f"[:find ?e :where [?e :bounded {i}]]")
    assert len(parser_module._QUERIES) <= parser_module.CACHE_SIZE


# -- rules -------------------------------------------------------------------------------------


def test_rules() -> None:
    rules = parse_rules(
        """[[(anc ?a ?b) [?a :parent ?b]]
            [(anc ?a ?b) [?a :parent ?x] (anc ?x ?b)]
            [(named [?e] ?n) [?e :name ?n] (not [?e :hidden true])]
            [(sib ?a ?b) (or-join [?a ?b] (and [?a :parent ?p] [?b :parent ?p]) [?a :twin ?b])
                         [(not= ?a ?b)]]]"""
    )
    assert list(rules.rules) == ["anc", "named", "sib"]
    assert rules.rules["anc"] == (
        RuleBranch("anc", (), (v("?a"), v("?b")), (pat(v("?a"), c(K("parent")), v("?b")),)),
        RuleBranch(
            "anc",
            (),
            (v("?a"), v("?b")),
            (pat(v("?a"), c(K("parent")), v("?x")), RuleCall(None, "anc", (v("?x"), v("?b")))),
        ),
    )
    named = rules.rules["named"][0]
    assert named.required == (v("?e"),) and named.vars == (v("?n"),)
    assert named.head == (v("?e"), v("?n"))
    assert named.clauses[1] == Not(None, None, (pat(v("?e"), c(K("hidden")), c(True)),))
    sib = rules.rules["sib"][0]
    assert isinstance(sib.clauses[0], Or) and isinstance(sib.clauses[0].branches[0], And)
    assert isinstance(hash(rules), int)


def test_rules_required_only_and_python_data() -> None:
    data = [[(S("r"), [S("?x")]), [S("?x"), K("a")]]]
    rules = parse_rules(data)
    assert rules == Rules({"r": (RuleBranch("r", (v("?x"),), (), (pat(v("?x"), c(K("a"))),)),)})
    assert parse_rules(dumps(data)) == rules
    assert parse_rules(rules) is rules
    assert parse_rules([]) == Rules({})


INVALID_RULES: list[tuple[Any, str]] = [
    ("[[(rule) [_]]]", "Cannot parse rule-vars"),
    ("[[(rule []) [_]]]", "Cannot parse rule-vars"),
    ("[[(rule ?x ?y ?x) [?x ?y]]]", "Rule variables should be distinct"),
    ("[[(rule [?x ?y] ?z ?x) [?x ?y ?z]]]", "Rule variables should be distinct"),
    ("[[(rule ?x)]]", "Rule branch should have clauses"),
    ("[[(rule ?x) [?x]] [(rule ?x ?y) [?x ?y]]]", "Arity mismatch for rule 'rule'"),
    ("[[(rule ?x) [?x]] [(rule [?x]) [?x]]]", "Arity mismatch"),
    (
        "[[(rule $e1 ?e2) [?e1 :ref ?e2]]]",
        "Cannot parse var, expected symbol starting with ?, got: $e1",
    ),
    ("[[(rule :a) [?x]]]", "Cannot parse var"),
    ("[[(?rule ?x) [?x]]]", "Cannot parse rule name"),
    ("[[(not ?x) [?x]]]", "Cannot parse rule name"),
    ('[[("r" ?x) [?x]]]', "Cannot parse rule name"),
    ("[[?x [?x]]]", "Cannot parse rule head"),
    ("[[() [?x]]]", "Cannot parse rule head"),
    ("[(rule ?x) [?x]]", "Cannot parse rule head"),
    ("[[]]", "Cannot parse rule"),
    ("[1]", "Cannot parse rule"),
    ("42", "Rules should be a vector"),
    ("{}", "Rules should be a vector"),
    ("[[(rule ?x) [(> ?y 1)]]]", "Insufficient bindings: #{?y} not bound"),
    ("[[(rule ?x) (not [?y :a])]]", "Insufficient bindings: none of #{?y} is bound"),
    ("[[(rule ?x) [?x] (or [?x :a ?y] [?x :b])]]", "All clauses in 'or' must use same set"),
    ("[[(rule ?x) [?x] ?x]]", "Cannot parse clause"),
]


@pytest.mark.parametrize(
    ("rules", "fragment"), INVALID_RULES, ids=[str(i) for i in range(len(INVALID_RULES))]
)
def test_invalid_rules(rules: Any, fragment: str) -> None:
    with pytest.raises(QueryParseError) as info:
        parse_rules(rules)
    assert fragment in str(info.value)


# -- properties --------------------------------------------------------------------------------

VARS = ["?a", "?b", "?c", "?d", "?e"]
ATTRS = [K("name"), K("age"), K("friend"), K("person/email")]
CONSTS = st.one_of(
    st.integers(-1000, 1000),
    st.text(max_size=5),
    st.sampled_from(ATTRS),
    st.booleans(),
    st.none(),
)


@st.composite
def queries(draw: st.DrawFn) -> tuple[Any, Query]:
    """A valid query as Python data (vector or map form) and the AST it must parse to."""
    data_where: list[Any] = []
    where: list[Clause] = []
    bound: list[str] = []

    def add_var(name: str) -> None:
        if name not in bound:
            bound.append(name)

    # data patterns: each has at least one variable; the first introduces the first variable
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 5))
        forms: list[Any] = []
        terms: list[Any] = []
        for i in range(n):
            kind = draw(st.sampled_from(["var", "var", "const", "_"]))
            if i == 0 or kind == "var":
                name = draw(st.sampled_from(VARS))
                forms.append(S(name))
                terms.append(Var(name))
            elif kind == "_":
                forms.append(S("_"))
                terms.append(Placeholder())
            else:
                value = draw(CONSTS)
                forms.append(value)
                terms.append(Const(value))
        src = draw(st.sampled_from([None, "$", "$2"]))
        data_where.append(([S(src)] if src else []) + forms)
        where.append(Pattern(SrcVar(src or "$"), tuple(terms)))
        for t in terms:
            if isinstance(t, Var):
                add_var(t.name)
    # a predicate, a function, a not and an or over bound variables
    x = draw(st.sampled_from(bound))
    if draw(st.booleans()):
        k = draw(st.integers(0, 9))
        data_where.append([(S("<"), S(x), k)])
        where.append(Predicate("<", (Var(x), Const(k))))
    if draw(st.booleans()):
        data_where.append([(S("str"), S(x), "!"), S("?out")])
        where.append(Function("str", (Var(x), Const("!")), BindScalar(Var("?out"))))
        add_var("?out")
    if draw(st.booleans()):
        data_where.append((S("not"), [S(x), K("hidden"), True]))
        where.append(
            Not(None, None, (Pattern(DEFAULT_SRC, (Var(x), Const(K("hidden")), Const(True))),))
        )
    if draw(st.booleans()):
        data_where.append((S("or"), [S(x), K("a"), S("?o")], [S(x), K("b"), S("?o")]))
        where.append(
            Or(
                None,
                None,
                (),
                (
                    Pattern(DEFAULT_SRC, (Var(x), Const(K("a")), Var("?o"))),
                    Pattern(DEFAULT_SRC, (Var(x), Const(K("b")), Var("?o"))),
                ),
            )
        )
        add_var("?o")
    # find
    chosen = draw(st.lists(st.sampled_from(bound), min_size=1, max_size=3, unique=True))
    shape = draw(st.sampled_from(["rel", "coll", "scalar", "tuple", "agg"]))
    find_forms: list[Any]
    find: FindSpec
    if shape == "rel":
        find_forms = [S(n) for n in chosen]
        find = FindRel(tuple(FindVar(Var(n)) for n in chosen))
    elif shape == "coll":
        find_forms = [[S(chosen[0]), S("...")]]
        find = FindColl(FindVar(Var(chosen[0])))
    elif shape == "scalar":
        find_forms = [S(chosen[0]), S(".")]
        find = FindScalar(FindVar(Var(chosen[0])))
    elif shape == "tuple":
        find_forms = [[S(n) for n in chosen]]
        find = FindTuple(tuple(FindVar(Var(n)) for n in chosen))
    else:
        find_forms = [S(chosen[0]), (S("count"), S(chosen[-1]))]
        find = FindRel((FindVar(Var(chosen[0])), FindAggregate("count", (), Var(chosen[-1]))))
    sections: dict[str, Any] = {"find": find_forms}
    srcs = sorted({p.src.name for p in where if isinstance(p, Pattern)} | {"$"})
    inputs: tuple[InputSpec, ...] = tuple(SrcVar(s) for s in srcs)
    if srcs != ["$"] or draw(st.booleans()):
        sections["in"] = [S(s) for s in srcs]
    else:
        inputs = (DEFAULT_SRC,)
    sections["where"] = data_where
    find_vars = {
        el.var.name
        for el in (find.elements if isinstance(find, FindRel | FindTuple) else (find.element,))
    }
    with_candidates = [n for n in bound if n not in find_vars]
    with_: tuple[Var, ...] = ()
    if with_candidates and draw(st.booleans()):
        sections["with"] = [S(with_candidates[0])]
        with_ = (Var(with_candidates[0]),)
    limit = draw(st.none() | st.integers(0, 100))
    if limit is not None:
        sections["limit"] = limit
    keys = None
    if shape in ("rel", "tuple") and draw(st.booleans()):
        names = [n[1:] for n in chosen]
        sections["keys"] = [S(n) for n in names]
        keys = ("keys", tuple(names))
    expected = Query(
        find=find, keys=keys, with_=with_, inputs=inputs, where=tuple(where), limit=limit
    )
    if draw(st.booleans()):
        data: Any = {K(k): val for k, val in sections.items()}
    else:
        data = []
        for k, val in sections.items():
            data.append(K(k))
            if k == "limit":
                data.append(val)
            else:
                data.extend(val)
    return data, expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries())
def test_generated_queries_parse_to_their_ast(case: tuple[Any, Query]) -> None:
    data, expected = case
    assert parse_query(data) == expected
    assert parse_query(dumps(data)) == expected


LEAVES = st.one_of(
    st.sampled_from(
        [
            S("?x"),
            S("?y"),
            S("_"),
            S("$"),
            S("$2"),
            S("%"),
            S("..."),
            S("."),
            S("not"),
            S("or"),
            S("or-join"),
            S("not-join"),
            S("and"),
            S("pull"),
            S("count"),
            S("aggregate"),
            S("f"),
            K("find"),
            K("where"),
            K("in"),
            K("with"),
            K("keys"),
            K("limit"),
            K("order-by"),
            K("desc"),
            K("a"),
        ]
    ),
    st.integers(-3, 3),
    st.text(max_size=3),
    st.none(),
    st.just(...),
)
FORMS = st.recursive(
    LEAVES,
    lambda kids: (
        st.lists(kids, max_size=5)
        | st.lists(kids, max_size=5).map(tuple)
        | st.dictionaries(LEAVES.filter(lambda x: x is not ...), kids, max_size=3)
    ),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FORMS, st.booleans())
def test_arbitrary_data_raises_only_query_parse_errors(form: Any, wrap: bool) -> None:
    # EDN text that is not valid EDN raises EDNError (documented); everything else only
    # QueryParseError
    allowed: tuple[type[Exception], ...] = (
        (QueryParseError, EDNError) if type(form) is str else (QueryParseError,)
    )
    q = [K("find"), S("?x"), K("where"), form] if wrap else form
    try:
        parse_query(q)
    except allowed:
        pass
    try:
        parse_rules([form] if wrap else form)
    except allowed:
        pass
