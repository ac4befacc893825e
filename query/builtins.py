"""The built-in functions, predicates and aggregates of Datalog queries (DataScript's).

Names and behaviour follow ``datascript.built-ins`` (``query-fns`` and ``aggregates``), with
Clojure semantics translated to the EDN <-> Python mapping of :mod:`query.edn` (vector ->
``list``, list/seq -> ``tuple``, set -> ``frozenset``, map -> ``dict``, keyword ->
:class:`~query.types.Keyword`).

* :data:`FUNCTIONS` -- plain functions for predicates ``[(pred ?a ?b)]`` and function
  expressions ``[(f ?a) ?b]``.
* :data:`DB_FUNCTIONS` -- ``get-else``, ``get-some``, ``missing?``: coroutines taking a
  :class:`~query.source.DatomSource` first.
* :data:`AGGREGATES` -- ``agg(values, *args)``: ``values`` is the bag of the aggregated
  variable's values in one group, ``args`` the constant arguments written before the variable
  (``(min 3 ?x)`` calls ``AGGREGATES["min"](values, 3)``).
* :func:`register_function` / :func:`register_aggregate` add user functions from Python;
  :func:`resolve_function` / :func:`resolve_aggregate` look names up (registered first).
  Built-in names (and ``q``, ``aggregate``, ``pull``) cannot be registered: a query always
  means the same thing whatever was registered. A registered name may be registered again
  (the new function replaces the old) and removed with :func:`unregister_function` /
  :func:`unregister_aggregate`.
* :func:`compare_values` -- DataScript's ``value-compare``: the order of ``<``, ``>``, ``<=``,
  ``>=``, ``compare``, ``min``/``max`` aggregates and ``:order-by``.
* :func:`call` -- calls a function, turning a Python exception into :class:`QueryError`
  ``"function <name> failed: <reason>"``.

Value order (:func:`compare_values`)
====================================

A total order over every value: a type rank first, then the value within the type::

    nil < boolean < number < instant < uuid < string < keyword < symbol < bytes
        < vector/list (list, tuple) < set < map < anything else

All numbers (``int``, ``float``, ``Decimal``, ``Fraction``; never ``bool``) compare
numerically with each other, as DataScript's ``value-compare`` does (``1`` and ``1.0``
compare equal); NaN is above every other number and equal to itself. The ranks are those of the
database's index order (``replica/values.py``) except that the index keeps ``int``, ``float``
and ``Decimal`` apart. Keywords and symbols compare as Clojure's do: namespace first (no
namespace first of all), then name, so ``:a/b < :a/c < :a-/b`` (the index orders them by their
text). Vectors and lists compare by length first, then element by element (DataScript's
``seq-compare``); sets by size then their sorted elements, maps by size then their sorted
entries (Clojure compares those by hash, which is neither stable nor meaningful). Different
types never raise (in DataScript they are ordered by Java class name; the rank above is ours).

Deviations from DataScript / Clojure
====================================

* ``/`` on integers: exact, so ``(/ 6 3)`` is ``2``; when not divisible the result is a
  ``float`` (``(/ 1 3)`` is ``0.333...``), where Clojure gives the ratio ``1/3``. ``avg``,
  ``median`` and ``variance`` of integers are computed exactly (with fractions) and given the
  same way: an ``int`` when whole, else a ``float``. Dividing a float by zero gives
  ``##Inf``/``##-Inf``/``##NaN`` as on the JVM; an integer or ``Decimal`` by zero fails.
  ``Decimal`` division uses the decimal context (28 digits) where Java fails on a
  non-terminating expansion.
* Integers never overflow (Clojure's ``long`` arithmetic throws past 64 bits).
* ``=`` is Clojure's: ``bool`` is not a number, ``(= 1 1.0)`` is false (integers, floats,
  decimals and ratios are different categories), collections compare deeply with that rule, a
  vector equals a list with the same elements. But a ``Keyword`` equals a ``str`` with the same
  text (``Keyword("a") == "a"``), as everywhere in the Python data mapping (and in joins).
  ``count-distinct`` and ``distinct`` use the same equality at the top level.
* ``compare`` returns -1, 0 or 1 and never raises (it is :func:`compare_values`); Clojure's
  ``compare`` returns e.g. the character difference for strings and throws for unrelated types.
* ``name`` and ``namespace`` read any ``str`` as keyword text (attributes reach queries as plain
  ``str``), so ``(name "a/b")`` is ``"b"`` where Clojure gives ``"a/b"``.
* ``type`` returns the Python type (``None`` for nil, as Clojure); ``meta`` is always ``None``.
* ``set`` of a map gives a frozenset of ``(key, value)`` tuples; ``range`` and ``re-seq`` give
  tuples (seqs), ``vector`` a ``list``, ``list`` and ``tuple`` a ``tuple``, ``hash-map`` and
  ``array-map`` a ``dict``, ``distinct`` a ``frozenset``.
* Regular expressions are Python's :mod:`re` (a pattern string or a compiled pattern), not
  Java's; the syntax differs in corners (possessive quantifiers, ``\\p{...}`` classes).
* ``str`` / ``pr-str`` print like Clojure: ``(str nil)`` is ``""``, keywords ``":ns/name"``,
  floats ``"1.0"`` / ``"1.0E10"`` / ``"Infinity"``, instants through ``str`` as Java's
  ``Date.toString`` in UTC (``"Thu Jan 01 00:00:00 UTC 1970"``) and through ``pr-str`` as
  ``#inst "1970-01-01T00:00:00.000-00:00"``, decimals ``"1.50M"`` in ``pr-str``, big integers
  (past 64 bits) ``"...N"`` in ``pr-str``. Set elements print in :func:`compare_values` order
  (Clojure: hash order). Strings compare by code point (Java: UTF-16 unit).
* ``get-else`` fails on a cardinality-many attribute (as Datomic; DataScript returns one of the
  values). ``get-else``/``get-some``/``missing?`` on a lookup ref that names no entity give the
  default / None / true (DataScript would search every entity). In a history view, only
  assertions count.
* Aggregates over an empty bag (which the engine never passes) give ``None`` instead of
  failing; ``(max 0 ?x)`` is ``[]`` (DataScript returns one element).
"""

from __future__ import annotations

import math
import operator
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from functools import cmp_to_key
from typing import Any

from query.errors import QueryError
from query.source import DatomSource
from query.types import Keyword, Symbol

__all__ = [
    "AGGREGATES",
    "DB_FUNCTIONS",
    "FUNCTIONS",
    "call",
    "compare_values",
    "register_aggregate",
    "register_function",
    "resolve_aggregate",
    "resolve_function",
    "unregister_aggregate",
    "unregister_function",
]


# -- truthiness, numbers -----------------------------------------------------------------------


def _truthy(x: Any) -> bool:
    """Clojure truthiness: only nil and false are false."""
    return x is not None and x is not False


def _is_num(x: Any) -> bool:
    t = type(x)
    if t is int or t is float:
        return True
    if t is bool:
        return False
    return isinstance(x, int | float | Decimal | Fraction)


def _num(x: Any) -> Any:
    if not _is_num(x):
        raise TypeError(f"{_pr(x)} is not a number")
    return x


def _is_nan(x: Any) -> bool:
    if isinstance(x, float):
        return x != x
    if isinstance(x, Decimal):
        return x.is_nan()
    return False


def _coerce(a: Any, b: Any) -> tuple[Any, Any]:
    """Two numbers made operable together (Clojure's contagion: a double wins)."""
    _num(a)
    _num(b)
    if type(a) is type(b):
        return a, b
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, Decimal | Fraction):
            a = float(a)
        if isinstance(b, Decimal | Fraction):
            b = float(b)
        return a, b
    if isinstance(a, Decimal) and isinstance(b, Fraction):
        return a, Decimal(b.numerator) / Decimal(b.denominator)
    if isinstance(b, Decimal) and isinstance(a, Fraction):
        return Decimal(a.numerator) / Decimal(a.denominator), b
    return a, b


def _add(a: Any, b: Any) -> Any:
    a, b = _coerce(a, b)
    return a + b


def _sub(a: Any, b: Any) -> Any:
    a, b = _coerce(a, b)
    return a - b


def _mul(a: Any, b: Any) -> Any:
    a, b = _coerce(a, b)
    return a * b


def _div_exact(a: Any, b: Any) -> Any:
    """Division keeping integers exact (a ``Fraction``); see :func:`_finish`."""
    a, b = _coerce(a, b)
    if isinstance(a, int | Fraction) and isinstance(b, int | Fraction):
        if b == 0:
            raise ZeroDivisionError("Divide by zero")
        return Fraction(a) / Fraction(b)
    if isinstance(a, float) or isinstance(b, float):
        if b == 0:  # the JVM's IEEE division
            if a != a or a == 0:
                return math.nan
            return math.copysign(math.inf, a) * math.copysign(1.0, b)
        return a / b
    if b == 0:
        raise ZeroDivisionError("Divide by zero")
    return a / b


def _finish(x: Any) -> Any:
    """A ``Fraction`` as an ``int`` when whole, else as a ``float``."""
    if isinstance(x, Fraction):
        if x.denominator == 1:
            return x.numerator
        return x.numerator / x.denominator
    return x


# -- the value order ---------------------------------------------------------------------------

_R_NIL = 0
_R_BOOL = 1
_R_NUM = 2
_R_INST = 3
_R_UUID = 4
_R_STR = 5
_R_KEYWORD = 6
_R_SYMBOL = 7
_R_BYTES = 8
_R_SEQ = 9
_R_SET = 10
_R_MAP = 11
_R_OTHER = 12

_RANK_OF_TYPE: dict[type, int] = {
    type(None): _R_NIL,
    bool: _R_BOOL,
    int: _R_NUM,
    float: _R_NUM,
    Decimal: _R_NUM,
    Fraction: _R_NUM,
    datetime: _R_INST,
    uuid.UUID: _R_UUID,
    str: _R_STR,
    Keyword: _R_KEYWORD,
    Symbol: _R_SYMBOL,
    bytes: _R_BYTES,
    bytearray: _R_BYTES,
    list: _R_SEQ,
    tuple: _R_SEQ,
    frozenset: _R_SET,
    set: _R_SET,
    dict: _R_MAP,
}


def _rank(x: Any) -> int:
    r = _RANK_OF_TYPE.get(type(x))
    if r is not None:
        return r
    if isinstance(x, bool):
        return _R_BOOL
    if isinstance(x, int | float | Decimal | Fraction):
        return _R_NUM
    if isinstance(x, datetime):
        return _R_INST
    if isinstance(x, uuid.UUID):
        return _R_UUID
    if isinstance(x, Keyword):
        return _R_KEYWORD
    if isinstance(x, Symbol):
        return _R_SYMBOL
    if isinstance(x, str):
        return _R_STR
    if isinstance(x, bytes | bytearray):
        return _R_BYTES
    if isinstance(x, list | tuple):
        return _R_SEQ
    if isinstance(x, frozenset | set):
        return _R_SET
    if isinstance(x, Mapping):
        return _R_MAP
    return _R_OTHER


def _sign(lt: bool, gt: bool) -> int:
    return -1 if lt else (1 if gt else 0)


def _cmp_num(a: Any, b: Any) -> int:
    na, nb = _is_nan(a), _is_nan(b)
    if na or nb:
        return _sign(nb and not na, na and not nb)
    try:
        return _sign(a < b, a > b)
    except TypeError:  # e.g. an exotic mix: compare exactly as fractions
        fa, fb = Fraction(a), Fraction(b)
        return _sign(fa < fb, fa > fb)


def _utc(d: datetime) -> datetime:
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d


def _cmp_named(a: str, b: str) -> int:
    ka, kb = Keyword(a), Keyword(b)
    na, nb = ka.namespace, kb.namespace
    if na != nb:
        if na is None:
            return -1
        if nb is None:
            return 1
        return _sign(na < nb, na > nb)
    ma, mb = ka.name, kb.name
    return _sign(ma < mb, ma > mb)


def _cmp_seq(xs: Sequence[Any], ys: Sequence[Any]) -> int:
    if len(xs) != len(ys):
        return -1 if len(xs) < len(ys) else 1
    for x, y in zip(xs, ys, strict=True):
        c = compare_values(x, y)
        if c:
            return c
    return 0


_value_key = cmp_to_key(lambda a, b: compare_values(a, b))


def _sorted(xs: Iterable[Any]) -> list[Any]:
    return sorted(xs, key=_value_key)


def _cmp_other(a: Any, b: Any) -> int:
    ta, tb = type(a), type(b)
    na = f"{ta.__module__}.{ta.__qualname__}"
    nb = f"{tb.__module__}.{tb.__qualname__}"
    if na != nb:
        return _sign(na < nb, na > nb)
    try:
        if a == b:
            return 0
        return _sign(bool(a < b), bool(a > b)) or _cmp_repr(a, b)
    except Exception:
        return _cmp_repr(a, b)


def _cmp_repr(a: Any, b: Any) -> int:
    ra, rb = repr(a), repr(b)
    return _sign(ra < rb, ra > rb)


def compare_values(a: Any, b: Any) -> int:
    """DataScript's value order: -1, 0 or 1 (see the module docstring). A total order over
    every value, usable as a sort key with ``functools.cmp_to_key``; never raises."""
    ta = type(a)
    if ta is type(b) and (ta is int or ta is str):
        return -1 if a < b else (1 if a > b else 0)
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra == _R_NUM:
        return _cmp_num(a, b)
    if ra == _R_NIL:
        return 0
    if ra in (_R_STR, _R_UUID, _R_BOOL, _R_BYTES):
        return _sign(a < b, a > b)
    if ra == _R_INST:
        ua, ub = _utc(a), _utc(b)
        return _sign(ua < ub, ua > ub)
    if ra == _R_KEYWORD or ra == _R_SYMBOL:
        return _cmp_named(a, b)
    if ra == _R_SEQ:
        return _cmp_seq(a, b)
    if ra == _R_SET:
        if len(a) != len(b):
            return -1 if len(a) < len(b) else 1
        return _cmp_seq(_sorted(a), _sorted(b))
    if ra == _R_MAP:
        if len(a) != len(b):
            return -1 if len(a) < len(b) else 1
        return _cmp_seq(_sorted(a.items()), _sorted(b.items()))
    return _cmp_other(a, b)


# -- equality ----------------------------------------------------------------------------------

_SIMPLE_EQ = frozenset({int, str, float, bool, type(None), Keyword, Symbol, uuid.UUID, datetime})


def _num_kind(x: Any) -> str | None:
    """Clojure's number category for ``=``; None for a non-number (and for bool)."""
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return "i"
    if isinstance(x, float):
        return "f"
    if isinstance(x, Decimal):
        return "d"
    if isinstance(x, Fraction):
        return "i" if x.denominator == 1 else "r"
    return None


def _eq(a: Any, b: Any) -> bool:
    """Clojure's ``=`` (see the module docstring for the Keyword/str exception)."""
    if a is b:
        return True
    ta, tb = type(a), type(b)
    if ta is tb and ta in _SIMPLE_EQ:
        return bool(a == b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    ka, kb = _num_kind(a), _num_kind(b)
    if ka is not None or kb is not None:
        return ka == kb and bool(a == b)
    if a is None or b is None:
        return False
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and str.__eq__(a, b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if len(a) != len(b):
            return False
        for k, v in a.items():
            try:
                if k not in b:
                    return False
            except TypeError:
                return False
            if not _eq(v, b[k]):
                return False
        return True
    if isinstance(a, list | tuple | Mapping) or isinstance(b, list | tuple | Mapping):
        return False
    try:
        return bool(a == b)
    except Exception:
        return False


def _distinct_key(x: Any) -> Any:
    """A hashable key under which values equal by :func:`_eq` collide (TypeError if there is
    none: an unhashable map key or set element)."""
    if isinstance(x, bool):
        return ("b", x)
    kind = _num_kind(x)
    if kind is not None:
        return (kind, x)
    if isinstance(x, list | tuple):
        return ("s", tuple(_distinct_key(v) for v in x))
    if isinstance(x, Mapping):
        return ("m", frozenset((k, _distinct_key(v)) for k, v in x.items()))
    return x


def _distinct(values: Iterable[Any]) -> list[Any]:
    seen: set[Any] = set()
    unhashable: list[Any] = []
    out: list[Any] = []
    for x in values:
        try:
            k = _distinct_key(x)
            if k in seen:
                continue
            seen.add(k)
        except TypeError:
            if any(_eq(x, y) for y in unhashable):
                continue
            unhashable.append(x)
        out.append(x)
    return out


# -- printing ----------------------------------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_STR_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\t": "\\t",
    "\r": "\\r",
    "\f": "\\f",
    "\b": "\\b",
}
_STR_ESCAPE_RE = re.compile(r'["\\\n\t\r\f\b]')
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def _float_text(x: float, readably: bool) -> str:
    """Java's ``Double.toString``: ``1.0``, ``1.0E10``, ``1.5E-5``, ``Infinity``, ``NaN``."""
    if x != x:
        return "##NaN" if readably else "NaN"
    if math.isinf(x):
        if readably:
            return "##Inf" if x > 0 else "##-Inf"
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    if 1e-3 <= abs(x) < 1e7:
        return repr(x)
    d = Decimal(repr(x))
    _, digits, _ = d.as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    mantissa = text[0] + "." + (text[1:] or "0")
    return f"{'-' if x < 0 else ''}{mantissa}E{d.adjusted()}"


def _date_text(d: datetime) -> str:
    """Java's ``Date.toString`` in UTC."""
    u = _utc(d).astimezone(UTC)
    return (
        f"{_DAYS[u.weekday()]} {_MONTHS[u.month - 1]} {u.day:02d} "
        f"{u.hour:02d}:{u.minute:02d}:{u.second:02d} UTC {u.year}"
    )


def _inst_text(d: datetime) -> str:
    u = _utc(d).astimezone(UTC)
    return (
        f'#inst "{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:'
        f'{u.second:02d}.{u.microsecond // 1000:03d}-00:00"'
    )


def _pr(x: Any, readably: bool = True) -> str:
    """Clojure's ``pr`` (``readably``) or ``print`` text of a value."""
    if x is None:
        return "nil"
    if x is True:
        return "true"
    if x is False:
        return "false"
    if isinstance(x, Keyword):
        return ":" + x
    if isinstance(x, Symbol):
        return str.__str__(x)
    if isinstance(x, str):
        if not readably:
            return str.__str__(x)
        return '"' + _STR_ESCAPE_RE.sub(lambda m: _STR_ESCAPES[m.group()], x) + '"'
    if isinstance(x, int):
        text = int.__repr__(x)
        return text + "N" if readably and not _LONG_MIN <= x <= _LONG_MAX else text
    if isinstance(x, float):
        return _float_text(x, readably=True)
    if isinstance(x, Decimal):
        return str(x) + "M" if readably else str(x)
    if isinstance(x, Fraction):
        return f"{x.numerator}/{x.denominator}"
    if isinstance(x, datetime):
        return _inst_text(x)
    if isinstance(x, uuid.UUID):
        return f'#uuid "{x}"'
    if isinstance(x, list):
        return "[" + " ".join(_pr(v, readably) for v in x) + "]"
    if isinstance(x, tuple):
        return "(" + " ".join(_pr(v, readably) for v in x) + ")"
    if isinstance(x, frozenset | set):
        return "#{" + " ".join(_pr(v, readably) for v in _sorted(x)) + "}"
    if isinstance(x, Mapping):
        entries = (f"{_pr(k, readably)} {_pr(v, readably)}" for k, v in x.items())
        return "{" + ", ".join(entries) + "}"
    return repr(x)


def _str1(x: Any) -> str:
    """Clojure's ``str`` of one value."""
    if x is None:
        return ""
    if type(x) is str:
        return x
    if isinstance(x, float):
        return _float_text(x, readably=False)
    if isinstance(x, Decimal):
        return str(x)
    if isinstance(x, int) and not isinstance(x, bool):
        return int.__repr__(x)
    if isinstance(x, datetime):
        return _date_text(x)
    if isinstance(x, uuid.UUID):
        return str(x)
    if isinstance(x, Keyword | Symbol) or isinstance(x, bool):
        return _pr(x)
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, list | tuple | frozenset | set | Mapping | Fraction):
        return _pr(x)
    return str(x)


# -- the functions -----------------------------------------------------------------------------


def _arity(name: str, args: tuple[Any, ...], least: int) -> None:
    if len(args) < least:
        raise TypeError(f"wrong number of arguments ({len(args)}) passed to {name}")


def _fn_eq(*xs: Any) -> bool:
    _arity("=", xs, 1)
    return all(_eq(xs[i], xs[i + 1]) for i in range(len(xs) - 1))


def _fn_not_eq(*xs: Any) -> bool:
    return not _fn_eq(*xs)


def _fn_num_eq(*xs: Any) -> bool:
    _arity("==", xs, 1)
    for x in xs:
        _num(x)
    return all(_cmp_num(xs[i], xs[i + 1]) == 0 and not _is_nan(xs[i]) for i in range(len(xs) - 1))


def _chain(name: str, ok: Callable[[int], bool]) -> Callable[..., bool]:
    def compare(*xs: Any) -> bool:
        _arity(name, xs, 1)
        return all(ok(compare_values(xs[i], xs[i + 1])) for i in range(len(xs) - 1))

    compare.__name__ = name
    return compare


def _fn_add(*xs: Any) -> Any:
    acc: Any = 0
    for x in xs:
        acc = _add(acc, x)
    return acc


def _fn_mul(*xs: Any) -> Any:
    acc: Any = 1
    for x in xs:
        acc = _mul(acc, x)
    return acc


def _fn_sub(*xs: Any) -> Any:
    _arity("-", xs, 1)
    if len(xs) == 1:
        return -_num(xs[0])
    acc = xs[0]
    for x in xs[1:]:
        acc = _sub(acc, x)
    return acc


def _fn_div(*xs: Any) -> Any:
    _arity("/", xs, 1)
    if len(xs) == 1:
        return _finish(_div_exact(1, xs[0]))
    acc = xs[0]
    for x in xs[1:]:
        acc = _div_exact(acc, x)
    return _finish(acc)


def _fn_quot(a: Any, b: Any) -> Any:
    a, b = _coerce(a, b)
    if b == 0:
        raise ZeroDivisionError("Divide by zero")
    if isinstance(a, int) and isinstance(b, int):
        q = abs(a) // abs(b)
        return q if (a < 0) == (b < 0) else -q
    if isinstance(a, float) or isinstance(b, float):
        r = a / b
        return float(math.trunc(r)) if math.isfinite(r) else r
    if isinstance(a, Decimal):
        return a // b  # Decimal's // truncates toward zero
    return math.trunc(Fraction(a) / Fraction(b))


def _fn_rem(a: Any, b: Any) -> Any:
    a, b = _coerce(a, b)
    if b == 0:
        raise ZeroDivisionError("Divide by zero")
    if isinstance(a, float) or isinstance(b, float):
        return math.fmod(a, b)
    if isinstance(a, Decimal):
        return a % b  # Decimal's % has the dividend's sign
    return a - b * _fn_quot(a, b)


def _fn_mod(a: Any, b: Any) -> Any:
    m = _fn_rem(a, b)
    if m == 0 or (a > 0) == (b > 0):
        return m
    return _add(m, b)


def _fn_inc(x: Any) -> Any:
    return _add(x, 1)


def _fn_dec(x: Any) -> Any:
    return _sub(x, 1)


def _fn_max(*xs: Any) -> Any:
    _arity("max", xs, 1)
    best = _num(xs[0])
    for x in xs[1:]:
        _num(x)
        if _is_nan(best) or _is_nan(x):
            best = x if _is_nan(x) else best
        elif x > best:
            best = x
    return best


def _fn_min(*xs: Any) -> Any:
    _arity("min", xs, 1)
    best = _num(xs[0])
    for x in xs[1:]:
        _num(x)
        if _is_nan(best) or _is_nan(x):
            best = x if _is_nan(x) else best
        elif x < best:
            best = x
    return best


def _integer(x: Any) -> int:
    if isinstance(x, Fraction) and x.denominator == 1:
        return x.numerator
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"Argument must be an integer: {_pr(x)}")
    return x


def _fn_rand(n: Any = 1) -> float:
    return random.random() * float(_num(n))


def _fn_rand_int(n: Any) -> int:
    return math.trunc(random.random() * float(_num(n)))


def _fn_and(*xs: Any) -> Any:
    result: Any = True
    for x in xs:
        if not _truthy(x):
            return x
        result = x
    return result


def _fn_or(*xs: Any) -> Any:
    result: Any = None
    for x in xs:
        if _truthy(x):
            return x
        result = x
    return result


def _fn_complement(f: Any) -> Callable[..., bool]:
    if not callable(f):
        raise TypeError(f"{_pr(f)} is not a function")

    def complemented(*xs: Any) -> bool:
        return not _truthy(f(*xs))

    return complemented


def _fn_keyword(*xs: Any) -> Keyword | None:
    if len(xs) == 1:
        x = xs[0]
        if isinstance(x, Keyword):
            return x
        return Keyword(x) if isinstance(x, str) else None
    if len(xs) == 2:
        ns, name = xs
        if not isinstance(name, str) or (ns is not None and not isinstance(ns, str)):
            raise TypeError("keyword takes strings")
        return Keyword(name if ns is None else f"{ns}/{name}")
    raise TypeError(f"wrong number of arguments ({len(xs)}) passed to keyword")


def _fn_name(x: Any) -> str:
    if isinstance(x, str):
        return Keyword(x).name
    raise TypeError(f"Doesn't support name: {_pr(x)}")


def _fn_namespace(x: Any) -> str | None:
    if isinstance(x, str):
        return Keyword(x).namespace
    raise TypeError(f"Doesn't support namespace: {_pr(x)}")


def _fn_type(x: Any) -> type | None:
    return None if x is None else type(x)


def _fn_set(coll: Any) -> frozenset[Any]:
    if coll is None:
        return frozenset()
    if isinstance(coll, Mapping):
        return frozenset(coll.items())
    return frozenset(coll)


def _fn_hash_map(*xs: Any) -> dict[Any, Any]:
    if len(xs) % 2:
        raise ValueError(f"No value supplied for key: {_pr(xs[-1])}")
    return {xs[i]: xs[i + 1] for i in range(0, len(xs), 2)}


def _fn_count(x: Any) -> int:
    if x is None:
        return 0
    if isinstance(x, str | bytes | bytearray | list | tuple | frozenset | set | Mapping):
        return len(x)
    raise TypeError(f"count not supported on this type: {type(x).__name__}")


def _fn_range(*xs: Any) -> tuple[Any, ...]:
    if len(xs) == 1:
        start, end, step = 0, xs[0], 1
    elif len(xs) == 2:
        start, end, step = xs[0], xs[1], 1
    elif len(xs) == 3:
        start, end, step = xs
    else:
        raise TypeError(f"wrong number of arguments ({len(xs)}) passed to range")
    for v in (start, end, step):
        _num(v)
    if step == 0:
        raise ValueError("range step must not be zero")
    if type(start) is int and type(end) is int and type(step) is int:
        return tuple(range(start, end, step))
    out: list[Any] = []
    n = start
    while (n < end) if step > 0 else (n > end):
        out.append(n)
        n = _add(n, step)
    return tuple(out)


def _fn_not_empty(x: Any) -> Any:
    return None if _fn_count(x) == 0 else x


def _fn_empty(x: Any) -> bool:
    return _fn_count(x) == 0


def _fn_contains(coll: Any, k: Any) -> bool:
    if coll is None:
        return False
    if isinstance(coll, Mapping | frozenset | set):
        try:
            return k in coll
        except TypeError:  # an unhashable key is in no map
            return False
    if isinstance(coll, list | tuple | str):
        return isinstance(k, int) and not isinstance(k, bool) and 0 <= k < len(coll)
    raise TypeError(f"contains? not supported on type: {type(coll).__name__}")


def _fn_get(coll: Any, k: Any, default: Any = None) -> Any:
    if isinstance(coll, Mapping):
        try:
            return coll.get(k, default)
        except TypeError:
            return default
    if isinstance(coll, frozenset | set):
        try:
            return k if k in coll else default
        except TypeError:
            return default
    if isinstance(coll, list | tuple | str):
        if isinstance(k, int) and not isinstance(k, bool) and 0 <= k < len(coll):
            return coll[k]
    return default


def _fn_str(*xs: Any) -> str:
    return "".join(_str1(x) for x in xs)


def _fn_pr_str(*xs: Any) -> str:
    return " ".join(_pr(x) for x in xs)


def _fn_prn_str(*xs: Any) -> str:
    return _fn_pr_str(*xs) + "\n"


def _fn_print_str(*xs: Any) -> str:
    return " ".join(_pr(x, readably=False) for x in xs)


def _fn_println_str(*xs: Any) -> str:
    return _fn_print_str(*xs) + "\n"


def _string(x: Any) -> str:
    if not isinstance(x, str):
        raise TypeError(f"{_pr(x)} is not a string")
    return x


def _fn_subs(s: Any, start: Any, end: Any = None) -> str:
    text = _string(s)
    lo = _integer(start)
    hi = len(text) if end is None else _integer(end)
    if lo < 0 or hi > len(text) or lo > hi:
        raise IndexError(f"String index out of range: begin {lo}, end {hi}, length {len(text)}")
    return text[lo:hi]


def _pattern(p: Any) -> re.Pattern[str]:
    if isinstance(p, re.Pattern):
        return p
    if isinstance(p, str):
        return re.compile(p)
    raise TypeError(f"{_pr(p)} is not a regular expression")


def _match_value(m: re.Match[str]) -> Any:
    if m.re.groups == 0:
        return m.group(0)
    return [m.group(0), *m.groups()]


def _fn_re_find(p: Any, s: Any) -> Any:
    m = _pattern(p).search(_string(s))
    return None if m is None else _match_value(m)


def _fn_re_matches(p: Any, s: Any) -> Any:
    m = _pattern(p).fullmatch(_string(s))
    return None if m is None else _match_value(m)


def _fn_re_seq(p: Any, s: Any) -> tuple[Any, ...] | None:
    found = tuple(_match_value(m) for m in _pattern(p).finditer(_string(s)))
    return found or None


def _fn_differ(*xs: Any) -> bool:
    half = (len(xs) + 1) // 2
    return not _eq(list(xs[:half]), list(xs[half:]))


def _fn_blank(s: Any) -> bool:
    return s is None or _string(s).strip() == ""


def _fn_includes(s: Any, sub: Any) -> bool:
    return _string(sub) in _string(s)


def _fn_starts_with(s: Any, prefix: Any) -> bool:
    return _string(s).startswith(_string(prefix))


def _fn_ends_with(s: Any, suffix: Any) -> bool:
    return _string(s).endswith(_string(suffix))


def _identity(x: Any) -> Any:
    return x


def _one_num(name: str, test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def check(x: Any) -> bool:
        return test(_num(x))

    check.__name__ = name
    return check


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "=": _fn_eq,
    "==": _fn_num_eq,
    "not=": _fn_not_eq,
    "!=": _fn_not_eq,
    "<": _chain("<", lambda c: c < 0),
    ">": _chain(">", lambda c: c > 0),
    "<=": _chain("<=", lambda c: c <= 0),
    ">=": _chain(">=", lambda c: c >= 0),
    "+": _fn_add,
    "-": _fn_sub,
    "*": _fn_mul,
    "/": _fn_div,
    "quot": _fn_quot,
    "rem": _fn_rem,
    "mod": _fn_mod,
    "inc": _fn_inc,
    "dec": _fn_dec,
    "max": _fn_max,
    "min": _fn_min,
    "zero?": _one_num("zero?", lambda x: x == 0),
    "pos?": _one_num("pos?", lambda x: x > 0),
    "neg?": _one_num("neg?", lambda x: x < 0),
    "even?": lambda x: _integer(x) % 2 == 0,
    "odd?": lambda x: _integer(x) % 2 == 1,
    "compare": compare_values,
    "rand": _fn_rand,
    "rand-int": _fn_rand_int,
    "true?": lambda x: x is True,
    "false?": lambda x: x is False,
    "nil?": lambda x: x is None,
    "some?": lambda x: x is not None,
    "not": lambda x: not _truthy(x),
    "and": _fn_and,
    "or": _fn_or,
    "complement": _fn_complement,
    "identical?": operator.is_,
    "identity": _identity,
    "keyword": _fn_keyword,
    "meta": lambda x: None,
    "name": _fn_name,
    "namespace": _fn_namespace,
    "type": _fn_type,
    "vector": lambda *xs: list(xs),
    "list": lambda *xs: tuple(xs),
    "set": _fn_set,
    "hash-map": _fn_hash_map,
    "array-map": _fn_hash_map,
    "count": _fn_count,
    "range": _fn_range,
    "not-empty": _fn_not_empty,
    "empty?": _fn_empty,
    "contains?": _fn_contains,
    "str": _fn_str,
    "subs": _fn_subs,
    "get": _fn_get,
    "pr-str": _fn_pr_str,
    "print-str": _fn_print_str,
    "println-str": _fn_println_str,
    "prn-str": _fn_prn_str,
    "re-find": _fn_re_find,
    "re-matches": _fn_re_matches,
    "re-seq": _fn_re_seq,
    "re-pattern": _pattern,
    "-differ?": _fn_differ,
    "ground": _identity,
    "clojure.string/blank?": _fn_blank,
    "clojure.string/includes?": _fn_includes,
    "clojure.string/starts-with?": _fn_starts_with,
    "clojure.string/ends-with?": _fn_ends_with,
    "tuple": lambda *xs: tuple(xs),
    "untuple": _identity,
}
"""The built-in functions and predicates, by their name in queries."""


# -- functions of a data source ----------------------------------------------------------------


def _check_source(name: str, src: Any) -> None:
    if not hasattr(src, "search") or not hasattr(src, "entid"):
        raise QueryError(f"{name} needs a database as its first argument", src)


async def _entity(src: DatomSource, e: Any) -> int | None:
    if type(e) is int:
        return e
    return await src.entid(e)


async def _first_value(src: DatomSource, e: int, a: str) -> tuple[bool, Any]:
    for d in await src.search(e=e, a=a):
        if d[4]:
            return True, d[2]
    return False, None


async def _get_else(src: DatomSource, e: Any, a: Any, default: Any) -> Any:
    _check_source("get-else", src)
    if default is None:
        raise QueryError("get-else: nil default value is not supported", a)
    info = src.attr(a)
    if info is not None and info.many:
        raise QueryError("get-else: cardinality-many attributes are not supported", a)
    eid = await _entity(src, e)
    if eid is None:
        return default
    found, v = await _first_value(src, eid, a)
    return v if found else default


async def _get_some(src: DatomSource, e: Any, *attrs: Any) -> tuple[Keyword, Any] | None:
    _check_source("get-some", src)
    eid = await _entity(src, e)
    if eid is None:
        return None
    for a in attrs:
        found, v = await _first_value(src, eid, a)
        if found:
            return (a if isinstance(a, Keyword) else Keyword(a)), v
    return None


def _reverse_attr(a: str) -> str | None:
    """``ns/_name`` -> ``ns/name`` (a reverse reference), else None."""
    ns, sep, name = a.rpartition("/")
    if name.startswith("_") and len(name) > 1:
        return f"{ns}{sep}{name[1:]}"
    return None


async def _missing(src: DatomSource, e: Any, a: Any) -> bool:
    _check_source("missing?", src)
    eid = await _entity(src, e)
    if eid is None:
        return True
    forward = _reverse_attr(a) if src.attr(a) is None else None
    if forward is not None:
        return not any(d[4] for d in await src.search(a=forward, v=eid))
    found, _ = await _first_value(src, eid, a)
    return not found


DB_FUNCTIONS: dict[str, Callable[..., Awaitable[Any]]] = {
    "get-else": _get_else,
    "get-some": _get_some,
    "missing?": _missing,
}
"""Functions of a data source: ``await f(src, e, *args)``. ``e`` is an entity id or anything
:meth:`DatomSource.entid` resolves (a lookup ref, an ident).

* ``get-else $ e attr default``: the value of the cardinality-one ``attr``, else ``default``
  (which must not be nil).
* ``get-some $ e attr...``: ``(attr, value)`` for the first attribute that has a value, else
  None.
* ``missing? $ e attr``: true when ``e`` has no value of ``attr``; ``:ns/_attr`` asks whether no
  entity refers to ``e`` through ``:ns/attr``.
"""


# -- aggregates --------------------------------------------------------------------------------


def _count_arg(name: str, args: tuple[Any, ...]) -> int | None:
    if not args:
        return None
    if len(args) > 1:
        raise QueryError(f"aggregate {name} takes at most one argument before the variable", args)
    n = args[0]
    if isinstance(n, bool) or not isinstance(n, int):
        raise QueryError(f"aggregate {name}: the count must be an integer", n)
    return max(n, 0)


def _no_args(name: str, args: tuple[Any, ...]) -> None:
    if args:
        raise QueryError(f"aggregate {name} takes no argument before the variable", args)


def _agg_count(values: list[Any], *args: Any) -> int:
    _no_args("count", args)
    return len(values)


def _agg_count_distinct(values: list[Any], *args: Any) -> int:
    _no_args("count-distinct", args)
    return len(_distinct(values))


def _sum(values: Iterable[Any]) -> Any:
    acc: Any = 0
    for x in values:
        acc = _add(acc, x)
    return acc


def _agg_sum(values: list[Any], *args: Any) -> Any:
    _no_args("sum", args)
    return _sum(values)


def _mean(values: list[Any]) -> Any:
    return _div_exact(_sum(values), len(values))


def _agg_avg(values: list[Any], *args: Any) -> Any:
    _no_args("avg", args)
    return _finish(_mean(values)) if values else None


def _agg_median(values: list[Any], *args: Any) -> Any:
    _no_args("median", args)
    if not values:
        return None
    terms = _sorted(values)
    mid = len(terms) >> 1
    if len(terms) % 2:
        return terms[mid]
    return _finish(_div_exact(_add(terms[mid - 1], terms[mid]), 2))


def _variance(values: list[Any]) -> Any:
    mean = _mean(values)
    total: Any = 0
    for x in values:
        delta = _sub(x, mean)
        total = _add(total, _mul(delta, delta))
    return _div_exact(total, len(values))


def _agg_variance(values: list[Any], *args: Any) -> Any:
    _no_args("variance", args)
    return _finish(_variance(values)) if values else None


def _agg_stddev(values: list[Any], *args: Any) -> float | None:
    _no_args("stddev", args)
    return math.sqrt(float(_variance(values))) if values else None


def _agg_min(values: list[Any], *args: Any) -> Any:
    n = _count_arg("min", args)
    if n is not None:
        return _sorted(values)[:n]
    if not values:
        return None
    best = values[0]
    for x in values[1:]:
        if compare_values(x, best) < 0:
            best = x
    return best


def _agg_max(values: list[Any], *args: Any) -> Any:
    n = _count_arg("max", args)
    if n is not None:
        return _sorted(values)[-n:] if n else []
    if not values:
        return None
    best = values[0]
    for x in values[1:]:
        if compare_values(x, best) > 0:
            best = x
    return best


def _agg_distinct(values: list[Any], *args: Any) -> frozenset[Any]:
    _no_args("distinct", args)
    return frozenset(values)


def _agg_rand(values: list[Any], *args: Any) -> Any:
    n = _count_arg("rand", args)
    if n is None:
        return random.choice(values) if values else None
    return [random.choice(values) for _ in range(n)] if values else []


def _agg_sample(values: list[Any], *args: Any) -> list[Any]:
    n = _count_arg("sample", args)
    if n is None:
        raise QueryError("aggregate sample needs a count: (sample n ?x)")
    return random.sample(values, min(n, len(values)))


AGGREGATES: dict[str, Callable[..., Any]] = {
    "count": _agg_count,
    "count-distinct": _agg_count_distinct,
    "sum": _agg_sum,
    "avg": _agg_avg,
    "median": _agg_median,
    "variance": _agg_variance,
    "stddev": _agg_stddev,
    "min": _agg_min,
    "max": _agg_max,
    "distinct": _agg_distinct,
    "rand": _agg_rand,
    "sample": _agg_sample,
}
"""The built-in aggregates: ``agg(values, *args)`` (see the module docstring).

``min``/``max`` use :func:`compare_values`; ``(min n ?x)`` / ``(max n ?x)`` give the ``n``
smallest / largest values as a list in ascending order. ``avg``, ``median`` (the mean of the two
middle values for an even count), ``variance`` (population) and ``stddev`` follow DataScript.
``distinct`` gives a ``frozenset``; ``(rand ?x)`` one random value, ``(rand n ?x)`` a list of
``n`` drawn with repetition, ``(sample n ?x)`` a list of up to ``n`` drawn without."""


# -- registration and lookup -------------------------------------------------------------------

_USER_FUNCTIONS: dict[str, Callable[..., Any]] = {}
_USER_AGGREGATES: dict[str, Callable[..., Any]] = {}
_RESERVED = frozenset({"q", "aggregate", "pull"})


def _check_registration(kind: str, name: Any, fn: Any, builtins: Mapping[str, Any]) -> None:
    if not isinstance(name, str) or not name:
        raise QueryError(f"{kind} name must be a non-empty string", name)
    if name[0] in "?$%" or any(c.isspace() for c in name):
        raise QueryError(f"{kind} name cannot start with ?, $ or % nor contain spaces", name)
    if not callable(fn):
        raise QueryError(f"{kind} must be callable", name)
    if name in builtins or name in DB_FUNCTIONS or name in _RESERVED:
        raise QueryError(f"cannot register the built-in {kind} name", name)


def register_function(name: str, fn: Callable[..., Any]) -> None:
    """Make ``fn`` callable in queries as ``name`` (``[(name ?a) ?b]``, ``[(name ?a)]``).

    ``fn`` is a plain synchronous function of the argument values; returning None from a
    function expression drops the row. Built-in names cannot be registered (QueryError); a
    registered name may be registered again."""
    _check_registration("function", name, fn, FUNCTIONS)
    _USER_FUNCTIONS[name] = fn


def register_aggregate(name: str, fn: Callable[..., Any]) -> None:
    """Make ``fn`` usable as an aggregate ``(name ?x)`` / ``(name arg... ?x)`` in ``:find``:
    called as ``fn(values, *args)`` with the bag of ``?x`` values of a group. Built-in names
    cannot be registered (QueryError); a registered name may be registered again."""
    _check_registration("aggregate", name, fn, AGGREGATES)
    _USER_AGGREGATES[name] = fn


def unregister_function(name: str) -> None:
    """Forget a registered function (nothing happens for an unknown name)."""
    _USER_FUNCTIONS.pop(name, None)


def unregister_aggregate(name: str) -> None:
    """Forget a registered aggregate (nothing happens for an unknown name)."""
    _USER_AGGREGATES.pop(name, None)


def resolve_function(name: str) -> Callable[..., Any]:
    """The function called ``name`` in a query: registered, then built-in; QueryError
    ``"Unknown function"`` otherwise."""
    fn = _USER_FUNCTIONS.get(name)
    if fn is None:
        fn = FUNCTIONS.get(name)
        if fn is None:
            raise QueryError("Unknown function", Symbol(name))
    return fn


def resolve_aggregate(name: str) -> Callable[..., Any]:
    """The aggregate called ``name``: registered, then built-in; QueryError ``"Unknown
    aggregate"`` otherwise."""
    fn = _USER_AGGREGATES.get(name)
    if fn is None:
        fn = AGGREGATES.get(name)
        if fn is None:
            raise QueryError("Unknown aggregate", Symbol(name))
    return fn


def call(name: str, fn: Callable[..., Any], args: Sequence[Any]) -> Any:
    """``fn(*args)``; a Python exception becomes ``QueryError("function <name> failed:
    <reason>", (name, *args))`` (a QueryError passes through)."""
    try:
        return fn(*args)
    except QueryError:
        raise
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise QueryError(f"function {name} failed: {reason}", (Symbol(name), *args)) from exc
