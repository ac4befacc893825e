"""The EDN reader and writer (replica/edn.py, DESIGN.md section 2): the mapping row by row,
Datahike-style examples, errors with positions, the depth bound, and a hypothesis round trip.

Values are compared with :func:`same`, which is ``==`` plus the type of every nested value
(``==`` alone hides Keyword vs str, tuple vs list, bool vs int, float vs int, Decimal('1.50')
vs Decimal('1.5'), -0.0 vs 0.0).
"""

from __future__ import annotations

import enum
import math
import os
import subprocess
import sys
import uuid
from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replica.edn import MAX_DEPTH, EDNError, dumps, loads, loads_all
from replica.types import Keyword, Symbol
from store.errors import ReplicaError

K = Keyword
S = Symbol


def same(a: Any, b: Any) -> bool:
    """``a == b`` with the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        if a != b:
            return False
        b_keys = {k: k for k in b}
        return all(same(k, b_keys[k]) and same(v, b[k]) for k, v in a.items())
    if isinstance(a, frozenset):
        if a != b:
            return False
        b_items = {x: x for x in b}
        return all(same(x, b_items[x]) for x in a)
    if isinstance(a, float):
        return repr(a) == repr(b)  # nan == nan, -0.0 != 0.0
    if isinstance(a, Decimal):
        return str(a) == str(b)  # the exponent too: 1.50 is not 1.5
    if isinstance(a, datetime):
        return bool(a == b and a.utcoffset() == b.utcoffset())
    return bool(a == b)


def test_same_sees_what_eq_hides() -> None:
    assert not same("a", K("a")) and not same(K("a"), S("a"))
    assert not same([1], (1,)) and not same(True, 1) and not same(1.0, 1)
    assert not same(Decimal("1.50"), Decimal("1.5")) and not same(-0.0, 0.0)
    assert not same({K("a"): 1}, {"a": 1}) and not same(frozenset({K("a")}), frozenset({"a"}))
    assert same(math.nan, math.nan) and same([{K("a"): (1, K("b"))}], [{K("a"): (1, K("b"))}])


# ---------------------------------------------------------------------------------------------
# The mapping, row by row: (EDN text, the Python value read)

BIG = 123456789012345678901234567890123456789

SCALARS: list[tuple[str, Any]] = [
    ("nil", None),
    ("true", True),
    ("false", False),
    # integers
    ("0", 0),
    ("42", 42),
    ("-7", -7),
    ("+7", 7),
    ("-0", 0),
    ("42N", 42),
    ("0N", 0),
    (str(BIG), BIG),
    (f"-{BIG}N", -BIG),
    # floats
    ("1.5", 1.5),
    ("-1.5", -1.5),
    ("+1.5", 1.5),
    ("0.0", 0.0),
    ("-0.0", -0.0),
    ("1.", 1.0),
    ("1e10", 1e10),
    ("1E-3", 0.001),
    ("1.5e+3", 1500.0),
    ("2.5E2", 250.0),
    ("1e400", math.inf),
    ("##Inf", math.inf),
    ("##-Inf", -math.inf),
    ("##NaN", math.nan),
    # decimals
    ("1.5M", Decimal("1.5")),
    ("2M", Decimal("2")),
    ("1.50M", Decimal("1.50")),
    ("-1e-3M", Decimal("-0.001")),
    ("1E+2M", Decimal("1E+2")),
    # strings
    ('""', ""),
    ('"abc"', "abc"),
    ('"a\\tb\\rc\\nd"', "a\tb\rc\nd"),
    ('"q\\"q"', 'q"q'),
    ('"back\\\\slash"', "back\\slash"),
    ('"\\b\\f"', "\b\f"),
    ('"\\u00e9\\u00E9"', "éé"),
    ('"\\uD83D\\uDE00"', "😀"),  # a UTF-16 surrogate pair, combined as in Clojure
    ('"raw\nnewline"', "raw\nnewline"),
    ('"é 😀 ; , [ ] { } # :"', "é 😀 ; , [ ] { } # :"),
    # characters
    ("\\a", "a"),
    ("\\newline", "\n"),
    ("\\space", " "),
    ("\\tab", "\t"),
    ("\\return", "\r"),
    ("\\formfeed", "\f"),
    ("\\backspace", "\b"),
    ("\\u00e9", "é"),
    ("\\u", "u"),
    ("\\\\", "\\"),
    ('\\"', '"'),
    ("\\(", "("),
    ("\\é", "é"),
    # keywords
    (":name", K("name")),
    (":ns/name", K("ns/name")),
    (":person/name", K("person/name")),
    (":db.type/string", K("db.type/string")),
    (":db.cardinality/one", K("db.cardinality/one")),
    (":person/_friend", K("person/_friend")),
    (":db.fn/retractAttribute", K("db.fn/retractAttribute")),
    (":a-b?/c*d!", K("a-b?/c*d!")),
    (":a#b:c", K("a#b:c")),
    (":1", K("1")),
    (":-1", K("-1")),
    (":é/ß", K("é/ß")),
    # symbols
    ("?x", S("?x")),
    ("?e-1", S("?e-1")),
    ("_", S("_")),
    ("$", S("$")),
    ("$src", S("$src")),
    ("%", S("%")),
    ("...", S("...")),
    ("<", S("<")),
    (">=", S(">=")),
    ("+", S("+")),
    ("-", S("-")),
    ("*", S("*")),
    (".", S(".")),
    ("/", S("/")),
    ("not=", S("not=")),
    ("db.fn/call", S("db.fn/call")),
    ("clojure.core/str", S("clojure.core/str")),
    ("-a", S("-a")),
    ("+a1", S("+a1")),
    ("a'", S("a'")),
    ("a#", S("a#")),
    ("nil?", S("nil?")),
    ("truex", S("truex")),
    # tagged
    ('#inst "1985-04-12T23:20:50.52Z"', datetime(1985, 4, 12, 23, 20, 50, 520000, tzinfo=UTC)),
    ('#inst "1985-04-12T19:20:50.52-04:00"', datetime(1985, 4, 12, 23, 20, 50, 520000, tzinfo=UTC)),
    ('#inst "1985-04-13T01:20:50+02:00"', datetime(1985, 4, 12, 23, 20, 50, tzinfo=UTC)),
    ('#inst "2020-01-01"', datetime(2020, 1, 1, tzinfo=UTC)),
    ('#inst "2020"', datetime(2020, 1, 1, tzinfo=UTC)),
    ('#inst "2020-02"', datetime(2020, 2, 1, tzinfo=UTC)),
    ('#inst "2020-02-03T04:05"', datetime(2020, 2, 3, 4, 5, tzinfo=UTC)),
    ('#inst "2020-02-03t04:05:06z"', datetime(2020, 2, 3, 4, 5, 6, tzinfo=UTC)),
    ('#inst "2020-01-01T00:00:00.123456789Z"', datetime(2020, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
    ('#inst "0001-01-01T00:00:00Z"', datetime(1, 1, 1, tzinfo=UTC)),
    ('#inst"2020"', datetime(2020, 1, 1, tzinfo=UTC)),
    (
        '#uuid "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"',
        uuid.UUID("f81d4fae-7dec-11d0-a765-00a0c91e6bf6"),
    ),
    (
        '#uuid "F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6"',
        uuid.UUID("f81d4fae-7dec-11d0-a765-00a0c91e6bf6"),
    ),
]

COLLECTIONS: list[tuple[str, Any]] = [
    ("[]", []),
    ("()", ()),
    ("{}", {}),
    ("#{}", frozenset()),
    ("[1 2 3]", [1, 2, 3]),
    ("(1 2 3)", (1, 2, 3)),
    ("[1 [2 (3 [])]]", [1, [2, (3, [])]]),
    ("{:a 1 :b 2}", {K("a"): 1, K("b"): 2}),
    ("{:a 1, :b 2}", {K("a"): 1, K("b"): 2}),
    ("{,,:a,,1,,}", {K("a"): 1}),
    ("[1,2,,3]", [1, 2, 3]),
    ("#{:a :b}", frozenset({K("a"), K("b")})),
    ("#{1 (2)}", frozenset({1, (2,)})),
    (
        '{nil 1, true 2, "s" 3, (1 2) 4, #{1} 5, 1.5 6, :k 7, sym 8, #{(1 #{2})} 9}',
        {
            None: 1,
            True: 2,
            "s": 3,
            (1, 2): 4,
            frozenset({1}): 5,
            1.5: 6,
            K("k"): 7,
            S("sym"): 8,
            frozenset({(1, frozenset({2}))}): 9,
        },
    ),
    ("{:a [1 2] :b {:c #{}}}", {K("a"): [1, 2], K("b"): {K("c"): frozenset()}}),
    (
        '[#inst "2020" #uuid "00000000-0000-0000-0000-000000000000"]',
        [datetime(2020, 1, 1, tzinfo=UTC), uuid.UUID(int=0)],
    ),
    # delimiters need no whitespace around them
    ('[:a"b"c(1)\\d[2]]', [K("a"), "b", S("c"), (1,), "d", [2]]),
    ('{:a"x"}', {K("a"): "x"}),
    # whitespace, comments, discard
    ("  \n\t 1 \n", 1),
    ("; a comment\n1 ; another", 1),
    ("[1 ; comment ] not closed here\n 2]", [1, 2]),
    ("#_ 1 2", 2),
    ("#_1 2", 2),
    ("2 #_ 3", 2),
    ("[1 #_ 2 3]", [1, 3]),
    ("[1 #_ [2 [3]] 4]", [1, 4]),
    ("#_ #_ 1 2 3", 3),
    ('[#_ #inst "2020" 1]', [1]),
    ("{:a #_ :b 1}", {K("a"): 1}),
    ("[#_ #{1 2}]", []),
]


@pytest.mark.parametrize(("text", "expected"), SCALARS + COLLECTIONS)
def test_reads(text: str, expected: Any) -> None:
    value = loads(text)
    assert same(value, expected), (value, expected)
    if not (isinstance(expected, float) and math.isnan(expected)):
        assert value == expected


@pytest.mark.parametrize(("text", "expected"), SCALARS + COLLECTIONS)
def test_table_rows_round_trip(text: str, expected: Any) -> None:
    assert same(loads(dumps(expected)), expected)


def test_keywords_and_symbols_are_strings() -> None:
    kw = loads(":person/name")
    assert isinstance(kw, Keyword) and kw == "person/name"
    assert kw.namespace == "person" and kw.name == "name"
    sym = loads("?x")
    assert isinstance(sym, Symbol) and sym == "?x"
    entity = loads('{:person/name "Ivan"}')
    assert entity["person/name"] == "Ivan"  # a plain str looks a Keyword key up


# ---------------------------------------------------------------------------------------------
# Datomic/Datahike-style examples


def test_schema() -> None:
    text = """
    [{:db/ident       :person/name
      :db/valueType   :db.type/string
      :db/cardinality :db.cardinality/one}]
    """
    expected = [
        {
            K("db/ident"): K("person/name"),
            K("db/valueType"): K("db.type/string"),
            K("db/cardinality"): K("db.cardinality/one"),
        }
    ]
    value = loads(text)
    assert same(value, expected)
    assert list(value[0]) == ["db/ident", "db/valueType", "db/cardinality"]  # order kept


def test_tx_data() -> None:
    text = '[[:db/add -1 :person/name "Ivan"] {:db/id "t" :person/friend [:person/name "Oleg"]}]'
    expected = [
        [K("db/add"), -1, K("person/name"), "Ivan"],
        {K("db/id"): "t", K("person/friend"): [K("person/name"), "Oleg"]},
    ]
    assert same(loads(text), expected)


def test_query() -> None:
    text = """[:find ?e ?n
               :in $ ?min
               :where [?e :person/age ?a]
                      [(> ?a ?min)]
                      [?e :person/name ?n]]"""
    expected = [
        K("find"), S("?e"), S("?n"),
        K("in"), S("$"), S("?min"),
        K("where"),
        [S("?e"), K("person/age"), S("?a")],
        [(S(">"), S("?a"), S("?min"))],
        [S("?e"), K("person/name"), S("?n")],
    ]  # fmt: skip
    assert same(loads(text), expected)


def test_query_with_rules_and_sources() -> None:
    text = """[:find [?n ...] :in $src % :where ($src ancestor ?a ?b) [(ground 1) _]
               [(db.fn/call ?f) ?x] [(str ?n "!") ?m]]"""
    expected = [
        K("find"), [S("?n"), S("...")],
        K("in"), S("$src"), S("%"),
        K("where"),
        (S("$src"), S("ancestor"), S("?a"), S("?b")),
        [(S("ground"), 1), S("_")],
        [(S("db.fn/call"), S("?f")), S("?x")],
        [(S("str"), S("?n"), "!"), S("?m")],
    ]  # fmt: skip
    assert same(loads(text), expected)


def test_pull_pattern() -> None:
    text = "[:person/name {:person/friend [*]} (:person/age :default 0)]"
    expected = [
        K("person/name"),
        {K("person/friend"): [S("*")]},
        (K("person/age"), K("default"), 0),
    ]
    assert same(loads(text), expected)


def test_loads_all() -> None:
    assert loads_all("") == []
    assert loads_all("  ; nothing\n #_ 1 ") == []
    assert same(loads_all("1 :a [2] (3) ; c\n #_ 4 nil"), [1, K("a"), [2], (3,), None])
    assert same(
        loads_all('[:db/add -1 :a 1]\n[:db/add -2 :a "x"]'),
        [[K("db/add"), -1, K("a"), 1], [K("db/add"), -2, K("a"), "x"]],
    )


def test_large_input_reads() -> None:
    entity = '{:db/id %d :person/name "Ivan %d" :person/friend [:person/name "Oleg"] :x 1.5}'
    text = "[" + "\n".join(entity % (-i, i) for i in range(5000)) + "]"
    value = loads(text)
    assert len(value) == 5000
    assert same(value[4999][K("person/friend")], [K("person/name"), "Oleg"])
    assert loads(dumps(value)) == value


# ---------------------------------------------------------------------------------------------
# Writing: exact text for each type


WRITES: list[tuple[Any, str]] = [
    (None, "nil"),
    (True, "true"),
    (False, "false"),
    (0, "0"),
    (-42, "-42"),
    (BIG, str(BIG)),
    (1.0, "1.0"),
    (-0.0, "-0.0"),
    (1.5, "1.5"),
    (1e16, "1e+16"),
    (1e-05, "1e-05"),
    (math.inf, "##Inf"),
    (-math.inf, "##-Inf"),
    (math.nan, "##NaN"),
    (Decimal("1.5"), "1.5M"),
    (Decimal("1.50"), "1.50M"),
    (Decimal("2"), "2M"),
    (Decimal("1E+2"), "1E+2M"),
    ("", '""'),
    ("abc", '"abc"'),
    ('a"b\\c\nd\te\rf', '"a\\"b\\\\c\\nd\\te\\rf"'),
    ("\x00\x1f\x7f", '"\\u0000\\u001f\\u007f"'),
    ("é😀", '"é😀"'),
    (K("a"), ":a"),
    (K("person/name"), ":person/name"),
    (S("?x"), "?x"),
    (S("db.fn/call"), "db.fn/call"),
    (S("/"), "/"),
    ([], "[]"),
    ((), "()"),
    ({}, "{}"),
    (frozenset(), "#{}"),
    (set(), "#{}"),
    ([1, [2, (3,)]], "[1 [2 (3)]]"),
    ({K("a"): 1, K("b"): [K("c")]}, "{:a 1, :b [:c]}"),
    ({K("b"): 1, K("a"): 2}, "{:b 1, :a 2}"),  # insertion order
    (frozenset({K("b"), K("a"), 3}), "#{3 :a :b}"),  # sorted by text
    ({3, 1, 2}, "#{1 2 3}"),
    (datetime(1985, 4, 12, 23, 20, 50, 520000, tzinfo=UTC), '#inst "1985-04-12T23:20:50.520Z"'),
    (datetime(2020, 1, 1, tzinfo=UTC), '#inst "2020-01-01T00:00:00.000Z"'),
    (datetime(2020, 1, 1, 0, 0, 0, 123456, tzinfo=UTC), '#inst "2020-01-01T00:00:00.123456Z"'),
    (datetime(1, 1, 1, tzinfo=UTC), '#inst "0001-01-01T00:00:00.000Z"'),
    (
        datetime(1985, 4, 12, 19, 20, 50, tzinfo=timezone(timedelta(hours=-4))),
        '#inst "1985-04-12T23:20:50.000Z"',
    ),
    (
        uuid.UUID("F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6"),
        '#uuid "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"',
    ),
]


@pytest.mark.parametrize(("value", "text"), WRITES)
def test_writes(value: Any, text: str) -> None:
    assert dumps(value) == text
    back = loads(text)
    if isinstance(value, set):
        value = frozenset(value)
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
    assert same(back, value)


class Color(enum.IntEnum):
    RED = 1


def test_writes_subclasses_as_their_base_type() -> None:
    assert dumps(Color.RED) == "1"
    assert dumps(OrderedDict([(K("a"), 1)])) == "{:a 1}"

    class Name(str):
        pass

    assert dumps(Name("x")) == '"x"'


def test_set_output_does_not_depend_on_the_hash_seed() -> None:
    code = (
        "from replica.edn import dumps; from replica.types import Keyword as K;"
        "print(dumps(frozenset([K('a%d' % i) for i in range(30)] + ['s%d' % i for i in range(30)])))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


# ---------------------------------------------------------------------------------------------
# Reading errors: (text, the position reported)

READ_ERRORS: list[tuple[str, int]] = [
    # unterminated and mismatched collections
    ("(", 1),
    ("[1 2", 4),
    ("{:a 1", 5),
    ("#{1", 3),
    ("[[1]", 4),
    (")", 0),
    ("]", 0),
    ("}", 0),
    ("[1 2)", 4),
    ("(]", 1),
    ("{)", 1),
    ("#{]", 2),
    ("[1 2]]", 5),
    # strings and escapes
    ('"abc', 0),
    ('[1 "abc]', 3),
    ('"a\\qb"', 2),
    ('"\\u12"', 1),
    ('"\\x41"', 1),
    ('"a\\', 0),
    # numbers
    ("007", 0),
    ("01.5", 0),
    ("1a", 0),
    ("1.5N", 0),
    ("1NM", 0),
    ("0x1F", 0),
    ("2r101", 0),
    ("1.2.3", 0),
    ("1e", 0),
    (".5", 0),
    ("+1a", 0),
    ("[1 -2x]", 3),
    # keywords and symbols
    (":", 0),
    (": a", 0),
    ("::x", 0),
    (":a/b/c", 0),
    (":a/", 0),
    (":/", 0),
    (":a@b", 0),
    ("a/b/c", 0),
    ("a/", 0),
    ("/a", 0),
    ("'a", 0),
    ("@x", 0),
    ("^x", 0),
    ("~x", 0),
    ("`x", 0),
    # characters
    ("\\abc", 0),
    ("\\", 0),
    ("\\ ", 0),
    ("\\u12", 0),
    # tags and dispatch
    ("#foo/bar 1", 0),
    ("#foo 1", 0),
    ("[1 #unknown 2]", 3),
    ("#_ #foo 1", 3),
    ("#!x", 0),
    ("##Foo", 0),
    ("##inf", 0),
    ("#", 0),
    ("#inst 1", 0),
    ("#inst :a", 0),
    ('#inst "not a date"', 0),
    ('#inst "2020-13-01"', 0),
    ('#inst "2020-02-30"', 0),
    ('#inst "2020-01-01T25:00:00Z"', 0),
    ('#inst "2020-01-01T00:00:60Z"', 0),
    ('#inst "2020-01-01T00:00:00+24:00"', 0),
    ('#inst "2020-01-01T00:00:00+01:60"', 0),
    ('#inst "20200101"', 0),
    ('#inst "0001-01-01T00:00:00+01:00"', 0),
    ('#inst "2020-01-01 10:00:00Z"', 0),
    ('#uuid "xyz"', 0),
    ('#uuid "f81d4fae7dec11d0a76500a0c91e6bf6"', 0),
    ('#uuid "{f81d4fae-7dec-11d0-a765-00a0c91e6bf6}"', 0),
    ("#uuid 1", 0),
    ("[#inst]", 6),
    ("#inst", 5),
    # discard with nothing to discard
    ("#_", 2),
    ("[#_]", 3),
    ("1 #_", 4),
    # maps and sets
    ("{1}", 0),
    ("{:a 1 :b}", 0),
    ("{:a 1 :a 2}", 0),
    ("[{:a 1, :a 2}]", 1),
    ("#{1 1}", 0),
    ("#{:a :a}", 0),
    ("{[1] 2}", 0),
    ("{{} 2}", 0),
    ("{(1 [2]) 3}", 0),
    ("#{[1]}", 0),
    ("#{{}}", 0),
    ("#{(1 {})}", 0),
    # keys equal in Python are duplicates
    ("{1 :a 1.0 :b}", 0),
    ("{1 :a true :b}", 0),
    ("#{1 true}", 0),
    ('{:a 1 "a" 2}', 0),
    ('#{:a a "a"}', 0),
    # not exactly one form
    ("", 0),
    ("   ", 3),
    ("  ; only a comment\n", 19),
    ("#_ 1", 4),
    ("1 2", 2),
    ("[1] [2]", 4),
    ("{} )", 3),
    ('"a" "b"', 4),
    ("nil x", 4),
    (":a :b", 3),
]


@pytest.mark.parametrize(("text", "position"), READ_ERRORS)
def test_read_errors(text: str, position: int) -> None:
    with pytest.raises(EDNError) as info:
        loads(text)
    error = info.value
    assert error.position == position, str(error)
    assert error.line == text.count("\n", 0, position) + 1
    assert error.line is not None and error.column is not None
    assert error.column == position - (text.rfind("\n", 0, position) + 1) + 1
    message = str(error)
    assert message.startswith("EDN: ")
    assert f"at line {error.line}, column {error.column}" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[1\n  )", "unexpected ')' at line 2, column 3"),
        ("[1\n  )", "vector opened at line 1, column 1"),
        ("(", "end of input"),
        ("(", "list opened at line 1, column 1 is not closed"),
        ('"abc', "unterminated string"),
        ("007", "invalid number '007'"),
        ("::x", "invalid keyword '::x'"),
        (":", "invalid keyword ':'"),
        ('"\\q"', "invalid escape '\\\\q'"),
        ("#foo/bar 1", "unknown tag #foo/bar"),
        ("{:a 1 :a 2}", "duplicate key :a"),
        ("#{1 1}", "duplicate element 1"),
        ("{[1 2] :x}", "unhashable map key [1 2]"),
        ("{1}", "odd number of forms"),
        ("1 2", "unexpected '2' after the form"),
        ("\\abc", "invalid character literal"),
        ('#inst "x"', "invalid #inst 'x'"),
        ("", "no form"),
    ],
)
def test_error_messages(text: str, fragment: str) -> None:
    with pytest.raises(EDNError) as info:
        loads(text)
    assert fragment in str(info.value)


def test_loads_all_errors() -> None:
    with pytest.raises(EDNError) as info:
        loads_all("1 2 )")
    assert info.value.position == 4
    with pytest.raises(EDNError):
        loads_all("[1")


def test_error_hierarchy() -> None:
    assert issubclass(EDNError, ReplicaError)
    assert issubclass(EDNError, ValueError)
    with pytest.raises(ValueError):
        loads(")")


def test_rejects_non_text() -> None:
    with pytest.raises(TypeError):
        loads(b"1")  # type: ignore[arg-type]


def test_too_long_integer_is_an_error_not_a_hang() -> None:
    with pytest.raises(EDNError) as info:
        loads("1" * 100_000)
    assert info.value.position == 0


# ---------------------------------------------------------------------------------------------
# The depth bound


@pytest.mark.parametrize(
    ("open_", "empty", "close"),
    [("[", "[]", "]"), ("(", "()", ")"), ("#{", "#{}", "}"), ("{:a ", "{}", "}")],
)
def test_depth_bound(open_: str, empty: str, close: str) -> None:
    deepest = open_ * (MAX_DEPTH - 1) + empty + close * (MAX_DEPTH - 1)
    value = loads(deepest)
    for _ in range(MAX_DEPTH - 1):
        value = next(iter(value.values())) if isinstance(value, dict) else next(iter(value))
    assert same(value, loads(empty))
    too_deep = open_ * MAX_DEPTH + empty + close * MAX_DEPTH
    with pytest.raises(EDNError) as info:
        loads(too_deep)
    assert info.value.position == len(open_) * MAX_DEPTH
    assert "nesting deeper than 200" in str(info.value)


def test_very_deep_input_is_an_error_not_a_recursion_error() -> None:
    with pytest.raises(EDNError):
        loads("[" * 100_000)
    with pytest.raises(EDNError):
        loads_all("(" * 100_000 + ")" * 100_000)


def test_dumps_depth_bound_and_cycles() -> None:
    value: Any = []
    for _ in range(MAX_DEPTH - 1):
        value = [value]  # MAX_DEPTH lists, the innermost empty
    assert loads(dumps(value)) == value
    with pytest.raises(EDNError):
        dumps([value])
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(EDNError):
        dumps(cyclic)
    cyclic_map: dict[str, Any] = {}
    cyclic_map["a"] = cyclic_map
    with pytest.raises(EDNError):
        dumps(cyclic_map)


# ---------------------------------------------------------------------------------------------
# Writing errors


@pytest.mark.parametrize(
    "value",
    [
        b"bytes",
        bytearray(b"x"),
        object(),
        1j,
        datetime(2020, 1, 1),  # naive
        date(2020, 1, 1),
        Decimal("NaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        K(""),
        K("a b"),
        K(":a"),
        K("a/b/c"),
        K("a/"),
        K("/"),
        S(""),
        S("nil"),
        S("true"),
        S("false"),
        S("1a"),
        S("-1"),
        S("a b"),
        S(":a"),
        S("a/b/c"),
        [1, object()],
        {K("a"): b"x"},
        {b"k": 1},
        frozenset({b"x"}),
        (1, 2, {3j}),
    ],
    ids=repr,
)
def test_write_errors(value: Any) -> None:
    with pytest.raises(EDNError) as info:
        dumps(value)
    assert info.value.position is None
    assert str(info.value).startswith("EDN: ")


# ---------------------------------------------------------------------------------------------
# Round trip of generated values

_START = "abcxyzABCXYZ_*!?$%&=<>éЖ中"
_CHARS = _START + "0123456789.+-'#:"


def _segment(start: str) -> st.SearchStrategy[str]:
    return st.builds(
        lambda first, rest: first + rest,
        st.sampled_from(start),
        st.text(_CHARS, max_size=6),
    ).filter(lambda s: not (s[0] in "+-." and len(s) > 1 and s[1].isdigit()))


def _names(start: str) -> st.SearchStrategy[str]:
    segment = _segment(start)
    return segment | st.builds(lambda ns, name: f"{ns}/{name}", segment, segment)


_symbols = (
    _names(_START + "+-.").filter(lambda s: s not in ("nil", "true", "false"))
    | st.sampled_from(["?x", "_", "$", "$src", "%", "...", "<", "+", ".", "/", "db.fn/call"])
).map(Symbol)

_keywords = (_names(_START + "+-.0123456789") | st.sampled_from(["1", "-1", "db/id"])).map(Keyword)

_strings = st.text() | st.text('"\\\n\r\t\x00\x1f\x7f a;,{}[]()#:/é😀\u2028')

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=False)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | _strings
    | _keywords
    | _symbols
    | st.datetimes(timezones=st.just(UTC))
    | st.uuids()
)

_hashables = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.frozensets(inner, max_size=4),
    max_leaves=8,
)

_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(_hashables, inner, max_size=5)
        | st.frozensets(_hashables, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_round_trip(value: Any) -> None:
    text = dumps(value)
    back = loads(text)
    assert same(back, value), (text, back, value)
    assert dumps(back) == text  # deterministic
    assert same(loads_all(text + "\n" + text), [value, value])


@settings(max_examples=200, deadline=None)
@given(_symbols)
def test_symbols_round_trip(value: Symbol) -> None:
    assert same(loads(dumps(value)), value)
    assert same(loads(f"[{dumps(value)}]"), [value])


@settings(max_examples=200, deadline=None)
@given(_keywords)
def test_keywords_round_trip(value: Keyword) -> None:
    assert same(loads(dumps(value)), value)
    assert same(loads(f"{{{dumps(value)} 1}}"), {value: 1})


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(
        timezones=st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-1439, 1439))
    )
)
def test_datetimes_with_offsets_round_trip_as_utc(value: datetime) -> None:
    try:
        expected = value.astimezone(UTC)
    except OverflowError:
        with pytest.raises(EDNError):
            dumps(value)
        return
    assert same(loads(dumps(value)), expected)


@settings(max_examples=200, deadline=None)
@given(_strings)
def test_strings_round_trip_inside_collections(value: str) -> None:
    assert same(loads(dumps([value, {value: (value,)}])), [value, {value: (value,)}])
