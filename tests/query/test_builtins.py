"""Built-in functions, predicates and aggregates of queries (query/builtins.py).

Expected values follow Clojure / DataScript (``datascript.built-ins``, the cases of
``test/datascript/test/query_fns.cljc`` and ``query_aggregates.cljc``), translated through the
EDN <-> Python mapping, with the deviations documented in the module docstring.
"""

from __future__ import annotations

import itertools
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import cmp_to_key
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from query import builtins
from query.builtins import (
    AGGREGATES,
    DB_FUNCTIONS,
    FUNCTIONS,
    call,
    compare_values,
    register_aggregate,
    register_function,
    resolve_aggregate,
    resolve_function,
    unregister_aggregate,
    unregister_function,
)
from query.errors import QueryError
from query.source import AttrInfo, DatomSource, DatomTuple
from query.types import Keyword, Symbol
from tests.query._fake_source import ListSource

K = Keyword
NAN = float("nan")
INF = float("inf")
T0 = datetime(1970, 1, 1, tzinfo=UTC)


def f(name: str, *args: Any) -> Any:
    return call(name, resolve_function(name), list(args))


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types (1 is not 1.0 nor True), NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- every DataScript name is there ------------------------------------------------------------

DATASCRIPT_QUERY_FNS = """
= == not= != < > <= >= + - * / quot rem mod inc dec max min zero? pos? neg? even? odd? compare
rand rand-int true? false? nil? some? not and or complement identical? identity keyword meta
name namespace type vector list set hash-map array-map count range not-empty empty? contains?
str subs get pr-str print-str println-str prn-str re-find re-matches re-seq re-pattern -differ?
ground clojure.string/blank? clojure.string/includes? clojure.string/starts-with?
clojure.string/ends-with? tuple untuple
""".split()


def test_every_datascript_function_is_defined() -> None:
    assert sorted(FUNCTIONS) == sorted(DATASCRIPT_QUERY_FNS)
    assert set(DB_FUNCTIONS) == {"get-else", "get-some", "missing?"}
    assert set(AGGREGATES) == {
        "count",
        "count-distinct",
        "sum",
        "avg",
        "median",
        "variance",
        "stddev",
        "min",
        "max",
        "distinct",
        "rand",
        "sample",
    }
    for fn in FUNCTIONS.values():
        assert callable(fn)


# -- tables of (function, args, expected) ------------------------------------------------------

CASES: list[tuple[str, tuple[Any, ...], Any]] = [
    # equality: Clojure's =
    ("=", (1,), True),
    ("=", (1, 1), True),
    ("=", (1, 1, 1), True),
    ("=", (1, 1, 2), False),
    ("=", (1, 1.0), False),
    ("=", (1, True), False),
    ("=", (0, False), False),
    ("=", (True, True), True),
    ("=", (None, None), True),
    ("=", (None, False), False),
    ("=", (Decimal("1.0"), Decimal("1.00")), True),
    ("=", (Decimal("1"), 1), False),
    ("=", ("a", "a"), True),
    ("=", (K("a"), "a"), True),  # Keyword is a str (documented deviation)
    ("=", ([1, 2], (1, 2)), True),
    ("=", ([1, 2], [1, 2.0]), False),
    ("=", ({K("a"): [1]}, {K("a"): [1]}), True),
    ("=", ({K("a"): 1}, {K("a"): 1.0}), False),
    ("=", (frozenset({1, 2}), frozenset({2, 1})), True),
    ("=", ([1], frozenset({1})), False),
    ("=", (NAN, 1.0), False),
    ("==", (1, 1.0), True),
    ("==", (1, 1.0, Decimal(1)), True),
    ("==", (1, 2), False),
    ("==", (NAN, NAN), False),
    ("not=", (1, 2), True),
    ("not=", (1, 1), False),
    ("not=", (1, 1.0), True),
    ("!=", (1, 1, 2), True),
    ("!=", ("a", "a"), False),
    # comparisons: DataScript's value-compare, variadic chains
    ("<", (1,), True),
    ("<", (1, 2), True),
    ("<", (2, 1), False),
    ("<", (1, 1), False),
    ("<", (15, 18, 22), True),
    ("<", (15, 18, 18), False),
    ("<", (22, 18, 37), False),
    ("<", (1, 1.5, 2), True),
    ("<", (1, Decimal("1.5"), 2.0), True),
    ("<", ("a", "b"), True),
    ("<", (0, 1), True),
    ("<", ("", 1), False),  # query_fns "compare values of different types"
    ("<=", ("", 1), False),
    ("<=", (1, 1.0), True),
    (">", ("", 1), True),
    (">=", ("", 1), True),
    (">=", (1, 1), True),
    (">=", (3, 2, 2, 1), True),
    (">", (3, 2, 2, 1), False),
    ("<", (None, False, 0, T0, uuid.UUID(int=0), "", K("a"), Symbol("a"), b"", []), True),
    ("<", (K("a/b"), K("a/c"), K("a-/b")), True),
    ("<", (K("b"), K("a/a")), True),  # no namespace first
    ("<", ([1, 2], [0, 0, 0]), True),  # length first
    ("<", ([1, 2], [1, 3]), True),
    ("<", ((1, None), (1, 0)), True),
    ("<", (T0, T0 + timedelta(seconds=1)), True),
    ("<", (-INF, -1, 0.5, INF, NAN), True),
    ("compare", (1, 2), -1),
    ("compare", (2, 1), 1),
    ("compare", (1, 1.0), 0),
    ("compare", ("b", "a"), 1),
    ("compare", (None, 1), -1),
    ("compare", ([1, 2], [1, 2]), 0),
    # arithmetic
    ("+", (), 0),
    ("+", (1,), 1),
    ("+", (1, 2, 3), 6),
    ("+", (1, 2.5), 3.5),
    ("+", (Decimal("1.5"), 1), Decimal("2.5")),
    ("+", (Decimal("1.5"), 1.0), 2.5),
    ("+", (2**63 - 1, 1), 2**63),
    ("-", (5,), -5),
    ("-", (10, 1, 2), 7),
    ("-", (1.5, 1), 0.5),
    ("*", (), 1),
    ("*", (2, 3, 4), 24),
    ("*", (2, 0.5), 1.0),
    ("/", (6, 3), 2),
    ("/", (6, 4), 1.5),
    ("/", (1, 3), 1 / 3),
    ("/", (4,), 0.25),
    ("/", (1,), 1),
    ("/", (12, 2, 3), 2),
    ("/", (1, 3, 1 / 3), 1.0),
    ("/", (6.0, 3), 2.0),
    ("/", (1.0, 0), INF),
    ("/", (-1.0, 0), -INF),
    ("/", (0.0, 0), NAN),
    ("/", (Decimal(1), 4), Decimal("0.25")),
    ("quot", (7, 2), 3),
    ("quot", (-7, 2), -3),
    ("quot", (7, -2), -3),
    ("quot", (-7, -2), 3),
    ("quot", (7.5, 2), 3.0),
    ("quot", (Decimal("-7.5"), 2), Decimal("-3")),
    ("rem", (7, 2), 1),
    ("rem", (-7, 2), -1),
    ("rem", (7, -2), 1),
    ("rem", (-7.5, 2), -1.5),
    ("mod", (7, 2), 1),
    ("mod", (-7, 2), 1),
    ("mod", (7, -2), -1),
    ("mod", (-7, -2), -1),
    ("mod", (-7.5, 2), 0.5),
    ("mod", (6, 3), 0),
    ("inc", (1,), 2),
    ("inc", (1.5,), 2.5),
    ("dec", (1,), 0),
    ("max", (1, 3, 2), 3),
    ("max", (1, 2.5), 2.5),
    ("max", (1, NAN, 3), NAN),
    ("min", (4, 3, 5), 3),
    ("min", (1,), 1),
    ("zero?", (0,), True),
    ("zero?", (0.0,), True),
    ("zero?", (1,), False),
    ("pos?", (1,), True),
    ("pos?", (0,), False),
    ("neg?", (-0.5,), True),
    ("neg?", (0,), False),
    ("even?", (2,), True),
    ("even?", (-3,), False),
    ("odd?", (-3,), True),
    ("odd?", (0,), False),
    # logic
    ("true?", (True,), True),
    ("true?", (1,), False),
    ("false?", (False,), True),
    ("false?", (None,), False),
    ("nil?", (None,), True),
    ("nil?", (False,), False),
    ("some?", (False,), True),
    ("some?", (None,), False),
    ("not", (None,), True),
    ("not", (False,), True),
    ("not", (0,), False),  # only nil and false are falsey
    ("not", ("",), False),
    ("and", (), True),
    ("and", (1, 2), 2),
    ("and", (1, None, 2), None),
    ("and", (1, False, None), False),
    ("or", (), None),
    ("or", (None, 0, 2), 0),
    ("or", (None, False), False),
    ("or", (False, None), None),
    ("identity", (K("x"),), K("x")),
    ("ground", ([K("a"), K("e")],), [K("a"), K("e")]),
    ("untuple", ((1, 2),), (1, 2)),
    ("tuple", (1, K("a"), "s"), (1, K("a"), "s")),
    ("tuple", (), ()),
    # keywords and names
    ("keyword", ("a",), K("a")),
    ("keyword", ("ns", "a"), K("ns/a")),
    ("keyword", (None, "a"), K("a")),
    ("keyword", (K("x/y"),), K("x/y")),
    ("keyword", (None,), None),
    ("keyword", (1,), None),
    ("name", (K("ns/a"),), "a"),
    ("name", (K("a"),), "a"),
    ("name", (Symbol("x/y"),), "y"),
    ("name", ("plain",), "plain"),
    ("name", ("person/name",), "name"),  # a str reads as keyword text (documented)
    ("namespace", (K("ns/a"),), "ns"),
    ("namespace", (K("a"),), None),
    ("namespace", ("person/name",), "person"),
    ("meta", ([1],), None),
    ("type", (1,), int),
    ("type", (K("a"),), Keyword),
    ("type", (None,), None),
    # collections
    ("vector", (), []),
    ("vector", (K("db/add"), -1, K("attr"), 12), [K("db/add"), -1, K("attr"), 12]),
    ("list", (1, 2), (1, 2)),
    ("set", ([1, 2, 2],), frozenset({1, 2})),
    ("set", (None,), frozenset()),
    ("set", ("aba",), frozenset({"a", "b"})),
    ("set", ({K("a"): 1},), frozenset({(K("a"), 1)})),
    (
        "hash-map",
        (K("db/id"), -1, K("age"), 92, K("name"), "Aaron"),
        {K("db/id"): -1, K("age"): 92, K("name"): "Aaron"},
    ),
    ("hash-map", (), {}),
    ("array-map", (K("a"), 1), {K("a"): 1}),
    ("count", ("a",), 1),
    ("count", ("abc",), 3),
    ("count", (None,), 0),
    ("count", ([1, 2],), 2),
    ("count", ({K("a"): 1},), 1),
    ("count", (frozenset({1, 2, 3}),), 3),
    ("count", ((),), 0),
    ("range", (4,), (0, 1, 2, 3)),
    ("range", (2, 5), (2, 3, 4)),
    ("range", (10, 0, -3), (10, 7, 4, 1)),
    ("range", (0, 1, 0.25), (0, 0.25, 0.5, 0.75)),
    ("range", (0,), ()),
    ("range", (5, 2), ()),
    ("not-empty", ([],), None),
    ("not-empty", ("",), None),
    ("not-empty", (None,), None),
    ("not-empty", ([1],), [1]),
    ("empty?", ([],), True),
    ("empty?", (None,), True),
    ("empty?", ("",), True),
    ("empty?", ({K("a"): 1},), False),
    ("contains?", ({K("a"): 1}, K("a")), True),
    ("contains?", ({K("a"): 1}, K("b")), False),
    ("contains?", ({K("a"): 1}, [1]), False),
    ("contains?", (frozenset({1}), 1), True),
    ("contains?", ([K("x"), K("y")], 1), True),  # an index, as in Clojure
    ("contains?", ([K("x"), K("y")], K("x")), False),
    ("contains?", ([K("x")], 2), False),
    ("contains?", ("abc", 2), True),
    ("contains?", (None, 1), False),
    ("get", ({K("a"): 1}, K("a")), 1),
    ("get", ({K("a"): 1}, K("b")), None),
    ("get", ({K("a"): 1}, K("b"), 0), 0),
    ("get", ({K("a"): 1}, [1], 0), 0),
    ("get", ([10, 20], 1), 20),
    ("get", ([10, 20], 2), None),
    ("get", ([10, 20], -1, K("none")), K("none")),
    ("get", ((10, 20), 0), 10),
    ("get", ("abc", 1), "b"),
    ("get", (frozenset({1}), 1), 1),
    ("get", (frozenset({1}), 2, 0), 0),
    ("get", (None, K("a")), None),
    ("get", (5, K("a"), 1), 1),
    # strings
    ("str", (), ""),
    ("str", (None,), ""),
    ("str", ("a", None, "b"), "ab"),
    ("str", (K("ns/name"),), ":ns/name"),
    ("str", (K("a"),), ":a"),
    ("str", (Symbol("x"),), "x"),
    ("str", (1,), "1"),
    ("str", (-12, 3), "-123"),
    ("str", (1.0,), "1.0"),
    ("str", (1.5,), "1.5"),
    ("str", (0.001,), "0.001"),
    ("str", (0.0001,), "1.0E-4"),
    ("str", (1234567.0,), "1234567.0"),
    ("str", (12345678.0,), "1.2345678E7"),
    ("str", (1e10,), "1.0E10"),
    ("str", (-1.5e-5,), "-1.5E-5"),
    ("str", (1e100,), "1.0E100"),
    ("str", (0.0,), "0.0"),
    ("str", (-0.0,), "-0.0"),
    ("str", (INF,), "Infinity"),
    ("str", (-INF,), "-Infinity"),
    ("str", (NAN,), "NaN"),
    ("str", (Decimal("1.50"),), "1.50"),
    ("str", (True, False), "truefalse"),
    ("str", ([1, "a", None, K("k")],), '[1 "a" nil :k]'),
    ("str", ((1, 2.0),), "(1 2.0)"),
    ("str", ({K("a"): 1, K("b"): "x"},), '{:a 1, :b "x"}'),
    ("str", (frozenset({3, 1, 2}),), "#{1 2 3}"),
    ("str", (uuid.UUID(int=1),), "00000000-0000-0000-0000-000000000001"),
    ("str", (T0,), "Thu Jan 01 00:00:00 UTC 1970"),
    (
        "str",
        (datetime(2020, 2, 29, 23, 5, 1, tzinfo=timezone(timedelta(hours=-2))),),
        ("Sun Mar 01 01:05:01 UTC 2020"),
    ),
    ("pr-str", (), ""),
    ("pr-str", (None,), "nil"),
    ("pr-str", ("a",), '"a"'),
    ("pr-str", ('a"b\\c\nd\te',), '"a\\"b\\\\c\\nd\\te"'),
    ("pr-str", ("a", 1, K("b")), '"a" 1 :b'),
    ("pr-str", (1.0, INF, -INF, NAN), "1.0 ##Inf ##-Inf ##NaN"),
    ("pr-str", (Decimal("2.50"),), "2.50M"),
    ("pr-str", (2**63 - 1, 2**63), "9223372036854775807 9223372036854775808N"),
    ("pr-str", (T0 + timedelta(milliseconds=5),), '#inst "1970-01-01T00:00:00.005-00:00"'),
    ("pr-str", (uuid.UUID(int=0),), '#uuid "00000000-0000-0000-0000-000000000000"'),
    ("pr-str", ([["a"]],), '[["a"]]'),
    ("prn-str", ("a", 1), '"a" 1\n'),
    ("print-str", ("a", 1, None), "a 1 nil"),
    ("print-str", (["a", K("b")],), "[a :b]"),
    ("println-str", ("a", "b"), "a b\n"),
    ("subs", ("hello", 1), "ello"),
    ("subs", ("hello", 1, 3), "el"),
    ("subs", ("hello", 5), ""),
    ("subs", ("hello", 0, 5), "hello"),
    ("re-find", (r"\d+", "ab12cd34"), "12"),
    ("re-find", (re.compile(r"\d+"), "ab12cd34"), "12"),
    ("re-find", (r"(\d)(x)?", "ab12"), ["1", "1", None]),
    ("re-find", (r"z", "abc"), None),
    ("re-matches", (r"\d+", "123"), "123"),
    ("re-matches", (r"\d+", "123a"), None),
    ("re-matches", (r"(a)(b)", "ab"), ["ab", "a", "b"]),
    ("re-seq", (r"\d", "a1b2c3"), ("1", "2", "3")),
    ("re-seq", (r"(\w)=(\d)", "a=1 b=2"), (["a=1", "a", "1"], ["b=2", "b", "2"])),
    ("re-seq", (r"z", "abc"), None),
    ("-differ?", (1, 2, 1, 2), False),
    ("-differ?", (1, 2, 1, 3), True),
    ("-differ?", (1, 2, 1), True),  # (take 3/2) is 2 elements, (drop 3/2) 1
    ("-differ?", (), False),
    ("clojure.string/blank?", (None,), True),
    ("clojure.string/blank?", ("",), True),
    ("clojure.string/blank?", (" \t\n",), True),
    ("clojure.string/blank?", (" a ",), False),
    ("clojure.string/includes?", ("hello", "ell"), True),
    ("clojure.string/includes?", ("hello", "elo"), False),
    ("clojure.string/starts-with?", ("hello", "he"), True),
    ("clojure.string/starts-with?", ("hello", "lo"), False),
    ("clojure.string/ends-with?", ("hello", "lo"), True),
    ("clojure.string/ends-with?", ("hello", "he"), False),
]


@pytest.mark.parametrize(("name", "args", "expected"), CASES, ids=lambda x: repr(x)[:40])
def test_function(name: str, args: tuple[Any, ...], expected: Any) -> None:
    result = f(name, *args)
    assert same(result, expected), (name, args, result, expected)


ERRORS: list[tuple[str, tuple[Any, ...]]] = [
    ("=", ()),
    ("<", ()),
    ("==", (1, "a")),
    ("+", (1, "a")),
    ("+", (1, True)),
    ("+", (None,)),
    ("-", ()),
    ("-", ("a",)),
    ("*", (2, "a")),
    ("/", ()),
    ("/", (1, 0)),
    ("/", (Decimal(1), 0)),
    ("/", ("a", 2)),
    ("quot", (1, 0)),
    ("quot", (1.0, 0)),
    ("rem", (1, 0)),
    ("mod", (1, 0)),
    ("inc", (None,)),
    ("inc", ("1",)),
    ("dec", (True,)),
    ("max", ()),
    ("max", (1, "a")),
    ("min", ("a", "b")),
    ("zero?", (None,)),
    ("pos?", ("a",)),
    ("even?", (2.0,)),
    ("odd?", (True,)),
    ("odd?", ("1",)),
    ("complement", (1,)),
    ("name", (None,)),
    ("name", (1,)),
    ("namespace", (1,)),
    ("keyword", ("a", 1)),
    ("keyword", ()),
    ("hash-map", (K("a"),)),
    ("count", (1,)),
    ("count", (True,)),
    ("range", ()),
    ("range", (0, 5, 0)),
    ("range", ("a",)),
    ("empty?", (1,)),
    ("contains?", (1, 1)),
    ("subs", ("abc", 4)),
    ("subs", ("abc", -1)),
    ("subs", ("abc", 2, 1)),
    ("subs", ("abc", 0, 4)),
    ("subs", ("abc", 1.0)),
    ("subs", (None, 0)),
    ("re-find", (1, "a")),
    ("re-find", (r"a", None)),
    ("re-find", (r"(", "a")),
    ("re-pattern", (1,)),
    ("clojure.string/blank?", (1,)),
    ("clojure.string/includes?", (None, "a")),
    ("clojure.string/starts-with?", ("a", None)),
    ("not", ()),
    ("identity", (1, 2)),
]


@pytest.mark.parametrize(("name", "args"), ERRORS, ids=lambda x: repr(x)[:40])
def test_function_errors(name: str, args: tuple[Any, ...]) -> None:
    with pytest.raises(QueryError, match=f"function {re.escape(name)} failed") as info:
        f(name, *args)
    assert info.value.form == (Symbol(name), *args)


def test_call_message_and_passthrough() -> None:
    with pytest.raises(QueryError) as info:
        call("subs", FUNCTIONS["subs"], ["abc", 5])
    assert str(info.value).startswith("function subs failed: String index out of range")
    assert str(info.value).endswith('(subs "abc" 5)')

    def raises_query_error() -> None:
        raise QueryError("mine")

    with pytest.raises(QueryError, match=r"^mine$"):
        call("x", raises_query_error, [])

    def raises_empty() -> None:
        raise KeyError

    with pytest.raises(QueryError, match="function y failed: KeyError"):
        call("y", raises_empty, [])


def test_re_pattern() -> None:
    p = f("re-pattern", r"a+")
    assert isinstance(p, re.Pattern)
    assert f("re-pattern", p) is p
    assert f("re-find", p, "baaa") == "aaa"


def test_identical() -> None:
    x = [1]
    assert f("identical?", x, x) is True
    assert f("identical?", x, [1]) is False
    assert f("identical?", None, None) is True


def test_complement() -> None:
    even = f("complement", FUNCTIONS["odd?"])
    assert even(2) is True
    assert even(3) is False
    assert f("complement", lambda: None)() is True
    assert f("complement", lambda: 0)() is False


def test_rand() -> None:
    for _ in range(50):
        r = f("rand")
        assert isinstance(r, float)
        assert 0 <= r < 1
        r = f("rand", 10)
        assert 0 <= r < 10
        i = f("rand-int", 5)
        assert type(i) is int
        assert 0 <= i < 5
        j = f("rand-int", -5)
        assert -5 < j <= 0
    assert f("rand-int", 0) == 0


def test_name_types() -> None:
    assert type(f("name", K("a/b"))) is str
    assert type(f("keyword", "a")) is Keyword
    assert type(f("str", K("a"))) is str


# -- registration ------------------------------------------------------------------------------


def test_resolve_unknown() -> None:
    with pytest.raises(QueryError, match="Unknown function: fun") as info:
        resolve_function("fun")
    assert info.value.form == "fun"
    with pytest.raises(QueryError, match="Unknown aggregate: fun"):
        resolve_aggregate("fun")
    assert resolve_function("+") is FUNCTIONS["+"]
    assert resolve_aggregate("sum") is AGGREGATES["sum"]


def test_register_function() -> None:
    def double(x: int) -> int:
        return 2 * x

    register_function("my/double", double)
    try:
        assert resolve_function("my/double") is double
        assert f("my/double", 21) == 42
        register_function("my/double", str)  # a user name may be replaced
        assert resolve_function("my/double") is str
    finally:
        unregister_function("my/double")
    with pytest.raises(QueryError, match="Unknown function"):
        resolve_function("my/double")
    unregister_function("my/double")  # no error


def test_register_aggregate() -> None:
    def sort_reverse(values: list[Any]) -> list[Any]:
        return sorted(values, reverse=True)

    register_aggregate("sort-reverse", sort_reverse)
    try:
        assert resolve_aggregate("sort-reverse")([1, 5, 3]) == [5, 3, 1]
        with pytest.raises(QueryError, match="Unknown function"):
            resolve_function("sort-reverse")  # functions and aggregates are apart
    finally:
        unregister_aggregate("sort-reverse")
    with pytest.raises(QueryError, match="Unknown aggregate"):
        resolve_aggregate("sort-reverse")


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("", abs),
        (None, abs),
        (1, abs),
        ("?f", abs),
        ("$x", abs),
        ("%", abs),
        ("a b", abs),
        ("ok", None),
        ("ok", 42),
        ("+", abs),
        ("str", abs),
        ("get-else", abs),
        ("missing?", abs),
        ("q", abs),
    ],
)
def test_register_function_rejects(name: Any, fn: Any) -> None:
    with pytest.raises(QueryError):
        register_function(name, fn)
    assert "ok" not in builtins._USER_FUNCTIONS


@pytest.mark.parametrize("name", ["sum", "count", "min", "distinct", "aggregate", "pull", ""])
def test_register_aggregate_rejects(name: str) -> None:
    with pytest.raises(QueryError):
        register_aggregate(name, len)


def test_register_aggregate_may_reuse_function_names() -> None:
    # "inc" is a built-in function, not an aggregate: the namespaces are apart
    register_aggregate("inc", len)
    try:
        assert resolve_aggregate("inc") is len
        assert resolve_function("inc") is FUNCTIONS["inc"]
    finally:
        unregister_aggregate("inc")


# -- aggregates --------------------------------------------------------------------------------


def agg(name: str, values: list[Any], *args: Any) -> Any:
    return resolve_aggregate(name)(values, *args)


MONSTER_HEADS = [3, 1, 1, 1]  # Cerberus, Medusa, Cyclops, Chimera (:with ?monster)
AGG_CASES: list[tuple[str, list[Any], tuple[Any, ...], Any]] = [
    ("sum", MONSTER_HEADS, (), 6),
    ("min", MONSTER_HEADS, (), 1),
    ("max", MONSTER_HEADS, (), 3),
    ("count", MONSTER_HEADS, (), 4),
    ("count-distinct", MONSTER_HEADS, (), 2),
    ("count-distinct", [1, 1.0, True, Decimal(1)], (), 4),  # Clojure's = keeps them apart
    ("count-distinct", [[1], [1], (1,), "a", K("a")], (), 2),
    ("count-distinct", [], (), 0),
    ("sum", [], (), 0),
    ("sum", [1, 2.5], (), 3.5),
    ("sum", [Decimal("0.1"), Decimal("0.2")], (), Decimal("0.3")),
    ("avg", [10, 15, 20, 35, 75], (), 31),
    ("avg", [1, 2], (), 1.5),
    ("avg", [1.0, 2.0], (), 1.5),
    ("avg", [Decimal(1), Decimal(2)], (), Decimal("1.5")),
    ("median", [10, 15, 20, 35, 75], (), 20),
    ("median", [75, 10, 35, 20, 15], (), 20),
    ("median", [1, 2, 3, 4], (), 2.5),
    ("median", [4, 1, 3, 3], (), 3),
    ("median", [1.0, 3.0], (), 2.0),
    ("median", ["b", "a", "c"], (), "b"),  # odd count: any comparable values
    ("variance", [10, 15, 20, 35, 75], (), 554),
    ("variance", [1, 2], (), 0.25),
    ("variance", [1, 2, 3, 4], (), 1.25),
    ("variance", [5], (), 0),
    ("variance", [1.0, 3.0], (), 1.0),
    ("stddev", [10, 15, 20, 35, 75], (), 23.53720459187964),
    ("stddev", [2, 4, 4, 4, 5, 5, 7, 9], (), 2.0),
    ("min", [K("a-/b"), K("a/b")], (), K("a/b")),
    ("max", [K("a-/b"), K("a/b")], (), K("a-/b")),
    ("min", [K("a/b"), K("a-/b"), K("a/c")], (2,), [K("a/b"), K("a/c")]),
    ("max", [K("a/b"), K("a-/b"), K("a/c")], (2,), [K("a/c"), K("a-/b")]),
    ("max", [1, 2, 3, 4, 5], (3,), [3, 4, 5]),
    ("min", [1, 2, 3, 4, 5], (3,), [1, 2, 3]),
    ("max", [7, 8], (3,), [7, 8]),
    ("min", [8, 7], (3,), [7, 8]),
    ("min", [3, 1, 3, 1], (3,), [1, 1, 3]),
    ("max", [1, 2], (0,), []),
    ("min", [1, 2], (0,), []),
    ("min", [1, 2], (-1,), []),
    ("min", ["a", 2, None, 1.5], (), None),  # mixed types: value order, nil first
    ("max", ["a", 2, None, 1.5], (), "a"),
    ("max", [1, 1.0], (), 1),  # equal: the first one stays
    ("min", [2.0, 2], (), 2.0),
    ("max", [[1, 2], [3]], (), [1, 2]),  # length first
    ("min", [], (), None),
    ("avg", [], (), None),
    ("median", [], (), None),
    ("variance", [], (), None),
    ("stddev", [], (), None),
    ("distinct", [1, 2, 2, 3], (), frozenset({1, 2, 3})),
    ("distinct", [], (), frozenset()),
]


@pytest.mark.parametrize(("name", "values", "args", "expected"), AGG_CASES, ids=repr)
def test_aggregate(name: str, values: list[Any], args: tuple[Any, ...], expected: Any) -> None:
    result = agg(name, list(values), *args)
    assert same(result, expected), (name, values, args, result)


@pytest.mark.parametrize(
    ("name", "values", "args"),
    [
        ("count", [1], (2,)),
        ("sum", [1], (2,)),
        ("min", [1], ("2",)),
        ("min", [1], (True,)),
        ("min", [1], (1, 2)),
        ("max", [1], (1.5,)),
        ("sample", [1], ()),
        ("rand", [1], ("x",)),
        ("distinct", [1], (1,)),
    ],
)
def test_aggregate_bad_args(name: str, values: list[Any], args: tuple[Any, ...]) -> None:
    with pytest.raises(QueryError):
        agg(name, values, *args)


@pytest.mark.parametrize(("name", "values"), [("sum", [1, "a"]), ("avg", ["a", "b"])])
def test_aggregate_non_numbers_raise(name: str, values: list[Any]) -> None:
    with pytest.raises(TypeError):  # the engine wraps it in QueryError
        agg(name, values)


def test_aggregate_median_even_non_numbers_raise() -> None:
    with pytest.raises(TypeError):
        agg("median", ["a", "b"])


def test_aggregate_rand_and_sample() -> None:
    values = [1, 2, 3, 3]
    for _ in range(30):
        assert agg("rand", values) in values
        drawn = agg("rand", values, 5)
        assert isinstance(drawn, list)
        assert len(drawn) == 5
        assert set(drawn) <= {1, 2, 3}
        sample = agg("sample", values, 3)
        assert isinstance(sample, list)
        assert len(sample) == 3
        rest = list(values)
        for x in sample:  # drawn without repetition (of positions)
            rest.remove(x)
    assert sorted(agg("sample", values, 10)) == sorted(values)
    assert agg("sample", values, 0) == []
    assert agg("rand", values, 0) == []
    assert agg("rand", [7]) == 7
    seen = {agg("rand", [1, 2, 3]) for _ in range(200)}
    assert seen == {1, 2, 3}


def test_aggregates_do_not_mutate_values() -> None:
    values = [3, 1, 2]
    for name in ("min", "max", "median", "sample"):
        agg(name, values, *((2,) if name in ("min", "max", "sample") else ()))
        assert values == [3, 1, 2]


# -- functions of a data source ----------------------------------------------------------------


def FakeSource(
    facts: Sequence[tuple[int, str, Any]],
    schema: Mapping[str, AttrInfo] | None = None,
    history: Sequence[DatomTuple] = (),
) -> ListSource:
    """A source over ``(e, a, v)`` facts (all asserted, tx 1), plus raw history rows."""
    return ListSource(schema or {}, [*((e, a, v, 1, True) for e, a, v in facts), *history])


def people() -> ListSource:
    return FakeSource(
        [
            (1, "name", "Ivan"),
            (1, "age", 15),
            (2, "name", "Petr"),
            (2, "age", 22),
            (2, "height", 240),
            (2, "parent", 1),
            (3, "name", "Slava"),
            (3, "age", 37),
            (3, "parent", 2),
            (3, "alias", "S"),
            (3, "alias", "Sl"),
            (4, "db/ident", K("the/four")),
            (4, "height", 100),
        ],
        {
            "name": AttrInfo("name", unique="identity"),
            "parent": AttrInfo("parent", ref=True),
            "alias": AttrInfo("alias", many=True),
            "db/ident": AttrInfo("db/ident", unique="identity"),
        },
    )


def test_fake_source_is_a_datom_source() -> None:
    assert isinstance(people(), DatomSource)


async def test_get_else() -> None:
    src = people()
    get_else = DB_FUNCTIONS["get-else"]
    assert [await get_else(src, e, K("height"), 300) for e in (1, 2, 3)] == [300, 240, 300]
    assert await get_else(src, [K("name"), "Ivan"], K("height"), "Unknown") == "Unknown"
    assert await get_else(src, [K("name"), "Petr"], K("height"), "Unknown") == 240
    assert await get_else(src, K("the/four"), K("height"), 0) == 100
    assert await get_else(src, [K("name"), "Nobody"], K("height"), 7) == 7
    assert await get_else(src, 99, K("height"), 7) == 7
    assert await get_else(src, 2, K("parent"), 0) == 1  # a ref gives the entity id
    assert await get_else(src, 1, K("age"), False) == 15
    with pytest.raises(QueryError, match="get-else: nil default value is not supported"):
        await get_else(src, 1, K("height"), None)
    with pytest.raises(QueryError, match="cardinality-many"):
        await get_else(src, 3, K("alias"), "x")


async def test_get_else_int_entity_skips_entid() -> None:
    src = people()
    await DB_FUNCTIONS["get-else"](src, 1, K("height"), 300)
    assert src.entid_calls == 0


async def test_get_some() -> None:
    src = people()
    get_some = DB_FUNCTIONS["get-some"]
    got = [await get_some(src, e, K("height"), K("age")) for e in (1, 2, 3)]
    assert got == [(K("age"), 15), (K("height"), 240), (K("age"), 37)]
    assert all(type(r) is tuple and type(r[0]) is Keyword for r in got)
    assert await get_some(src, [K("name"), "Petr"], K("weight"), K("age"), K("height")) == (
        K("age"),
        22,
    )
    assert await get_some(src, 1, K("weight")) is None
    assert await get_some(src, 1) is None
    assert await get_some(src, [K("name"), "Nobody"], K("age")) is None
    assert await get_some(src, 1, "age") == (K("age"), 15)  # a plain str attribute too


async def test_missing() -> None:
    src = people()
    missing = DB_FUNCTIONS["missing?"]
    assert [await missing(src, e, K("height")) for e in (1, 2, 3)] == [True, False, True]
    assert await missing(src, [K("name"), "Petr"], K("height")) is False
    assert await missing(src, [K("name"), "Nobody"], K("height")) is True
    assert await missing(src, 3, K("alias")) is False
    # back-ref: no entity has ?e as :parent (query_fns "missing? back-ref")
    assert [await missing(src, e, K("_parent")) for e in (1, 2, 3)] == [False, False, True]


async def test_missing_namespaced_back_ref() -> None:
    src = FakeSource([(1, "p/parent", 2)], {"p/parent": AttrInfo("p/parent", ref=True)})
    missing = DB_FUNCTIONS["missing?"]
    assert await missing(src, 2, K("p/_parent")) is False
    assert await missing(src, 1, K("p/_parent")) is True
    assert await missing(src, 1, K("p/parent")) is False


async def test_missing_attr_named_with_underscore() -> None:
    # a real attribute whose name starts with "_" is not a reverse reference
    src = FakeSource([(1, "x/_y", 5)], {"x/_y": AttrInfo("x/_y")})
    assert await DB_FUNCTIONS["missing?"](src, 1, K("x/_y")) is False
    assert await DB_FUNCTIONS["missing?"](src, 2, K("x/_y")) is True


async def test_history_retractions_do_not_count() -> None:
    src = FakeSource(
        [(1, "age", 30)],
        history=[(1, "height", 180, 1, False), (2, "parent", 1, 1, False)],
    )
    assert await DB_FUNCTIONS["get-else"](src, 1, K("height"), 0) == 0
    assert await DB_FUNCTIONS["get-some"](src, 1, K("height"), K("age")) == (K("age"), 30)
    assert await DB_FUNCTIONS["missing?"](src, 1, K("height")) is True
    assert await DB_FUNCTIONS["missing?"](src, 1, K("_parent")) is True


async def test_collection_source_raises_query_error() -> None:
    for name, args in (("get-else", (K("a"), 0)), ("get-some", (K("a"),)), ("missing?", (K("a"),))):
        with pytest.raises(QueryError, match="needs a database"):
            await DB_FUNCTIONS[name]([(1, "a", 2)], 1, *args)


async def test_bad_entity_raises_query_error() -> None:
    with pytest.raises(QueryError):
        await DB_FUNCTIONS["get-else"](people(), "nonsense", K("age"), 0)


# -- compare_values ----------------------------------------------------------------------------


def test_compare_values_sorts_mixed_values() -> None:
    values: list[Any] = [
        K("b"),
        "b",
        2,
        None,
        1.5,
        True,
        [1],
        frozenset({1}),
        {K("a"): 1},
        Symbol("s"),
        uuid.UUID(int=3),
        T0,
        b"x",
        False,
        Decimal("1.7"),
        K("a/z"),
        "a",
        (0, 0),
    ]
    ordered = sorted(values, key=cmp_to_key(compare_values))
    assert ordered == [
        None,
        False,
        True,
        1.5,
        Decimal("1.7"),
        2,
        T0,
        uuid.UUID(int=3),
        "a",
        "b",
        K("b"),
        K("a/z"),
        Symbol("s"),
        b"x",
        [1],
        (0, 0),
        frozenset({1}),
        {K("a"): 1},
    ]


def test_compare_values_details() -> None:
    assert compare_values(NAN, NAN) == 0
    assert compare_values(NAN, INF) == 1
    assert compare_values(Decimal("NaN"), NAN) == 0
    assert compare_values(Decimal("NaN"), Decimal("Infinity")) == 1
    assert compare_values(2**100, 1e30) == 1
    assert compare_values(2**53 + 1, float(2**53)) == 1  # exact, not through float
    assert compare_values(Decimal("0.1"), 0.1) == -1  # exact: 0.1 is a little more than 1/10
    assert compare_values(True, 0) == -1  # bool ranks below numbers
    naive = datetime(1970, 1, 1, 0, 0, 1)
    assert compare_values(T0, naive) == -1  # a naive instant is read as UTC
    assert compare_values({1: 2}, {1: 3}) == -1
    assert compare_values({1: 2, 3: 4}, {5: 0}) == 1
    assert compare_values(frozenset({1, 3}), frozenset({2, 3})) == -1

    class Thing:
        pass

    a, b = Thing(), Thing()
    assert compare_values(a, a) == 0
    assert compare_values(a, b) == -compare_values(b, a)
    assert compare_values({1: 2}, a) == -1


# a mix of every kind of value, nested
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**100), max_value=2**100),
    st.floats(allow_nan=True),
    st.decimals(allow_nan=False, allow_infinity=True),
    st.just(Decimal("NaN")),
    st.text(max_size=4),
    st.text(alphabet="ab-/", max_size=4).map(Keyword),
    st.text(alphabet="ab/", max_size=3).map(Symbol),
    st.uuids(),
    st.datetimes(timezones=st.just(UTC)),
    st.binary(max_size=3),
)
_hashables = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.tuples(inner, inner), st.frozensets(inner, max_size=3)),
    max_leaves=6,
)
_values = st.recursive(
    _hashables,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner),
        st.dictionaries(_hashables, inner, max_size=2),
    ),
    max_leaves=8,
)


def _sgn(x: int) -> int:
    return (x > 0) - (x < 0)


@settings(max_examples=300, deadline=None)
@given(_values, _values, _values)
def test_compare_values_is_a_total_order(a: Any, b: Any, c: Any) -> None:
    ab, ba = compare_values(a, b), compare_values(b, a)
    assert ab in (-1, 0, 1)
    assert ab == -ba  # antisymmetric
    assert compare_values(a, a) == 0
    bc, ac = compare_values(b, c), compare_values(a, c)
    if ab <= 0 and bc <= 0:  # transitive
        assert ac <= 0
        if ab < 0 or bc < 0:
            assert ac < 0
    if ab == 0:  # equal values compare alike with everything
        assert _sgn(ac) == _sgn(bc)


@settings(max_examples=200, deadline=None)
@given(st.lists(_values, max_size=8))
def test_sorting_is_consistent_and_min_max_agree(values: list[Any]) -> None:
    key = cmp_to_key(compare_values)
    ordered = sorted(values, key=key)
    for x, y in itertools.pairwise(ordered):
        assert compare_values(x, y) <= 0
    again = sorted(reversed(values), key=key)  # the same order whatever the input order
    assert [compare_values(x, y) for x, y in zip(again, ordered, strict=True)] == [0] * len(values)
    if values:
        lo, hi = agg("min", values), agg("max", values)
        assert compare_values(lo, ordered[0]) == 0
        assert compare_values(hi, ordered[-1]) == 0
        n = len(values) // 2
        assert [
            compare_values(x, y) for x, y in zip(agg("min", values, n), ordered[:n], strict=True)
        ] == [0] * n


@settings(max_examples=100, deadline=None)
@given(_values, _values)
def test_comparison_predicates_agree_with_compare_values(a: Any, b: Any) -> None:
    c = compare_values(a, b)
    assert f("<", a, b) is (c < 0)
    assert f(">", a, b) is (c > 0)
    assert f("<=", a, b) is (c <= 0)
    assert f(">=", a, b) is (c >= 0)
    assert f("compare", a, b) == c


@settings(max_examples=100, deadline=None)
@given(_values, _values)
def test_equality_is_symmetric(a: Any, b: Any) -> None:
    assert f("=", a, b) is f("=", b, a)
    assert f("not=", a, b) is (not f("=", a, b))
    if not (isinstance(a, float) and math.isnan(a)):
        assert f("=", a, a) is True


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-1000, 1000), min_size=1, max_size=20))
def test_integer_statistics_are_exact(xs: list[int]) -> None:
    from fractions import Fraction

    n = len(xs)
    mean = Fraction(sum(xs), n)
    var = Fraction(sum((x - mean) ** 2 for x in xs)) / n
    for name, exact in (("avg", mean), ("variance", var)):
        got = agg(name, xs)
        if exact.denominator == 1:
            assert type(got) is int and got == exact
        else:
            assert type(got) is float and got == float(exact)
    assert agg("stddev", xs) == pytest.approx(math.sqrt(var))
    s = sorted(xs)
    med = s[n // 2] if n % 2 else Fraction(s[n // 2 - 1] + s[n // 2], 2)
    assert agg("median", xs) == med


@settings(max_examples=200, deadline=None)
@given(st.integers(-50, 50), st.integers(-50, 50).filter(bool))
def test_quot_rem_mod_identities(a: int, b: int) -> None:
    q, r, m = f("quot", a, b), f("rem", a, b), f("mod", a, b)
    assert q * b + r == a
    assert abs(r) < abs(b)
    assert r == 0 or (r > 0) == (a > 0)
    assert m == a % b  # Clojure's mod is Python's %
    assert f("quot", float(a), b) == float(q)
    assert f("rem", float(a), b) == float(r)
    assert f("mod", float(a), b) == float(m)
    assert f("/", a, b) == a / b
