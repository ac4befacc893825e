r"""EDN reader and writer: the one EDN <-> Python mapping (DESIGN.md section 2).

Everything a Datahike user writes in EDN (schema, transaction data, queries, pull patterns) can
be given either as an EDN string, read with :func:`loads`, or directly as the Python data that
:func:`loads` returns. :func:`dumps` is the inverse. Storage and wire never use EDN (they use
CBOR); this module is only for people and for data copied from Clojure.

The mapping
===========

===================================  ========================  ================================
EDN                                  Python                    written back by ``dumps`` as
===================================  ========================  ================================
``nil``                              ``None``                  ``nil``
``true`` / ``false``                 ``bool``                  ``true`` / ``false``
``42``, ``-7``, ``+7``, ``42N``      ``int`` (any size)        ``42``
``1.5``, ``1e10``, ``1.``            ``float``                 ``1.5``, ``1e+10`` (always with
                                                               a ``.`` or an exponent)
``##Inf``, ``##-Inf``, ``##NaN``     ``float`` inf, -inf, nan  ``##Inf``, ``##-Inf``, ``##NaN``
``1.50M``, ``2M``                    ``decimal.Decimal``       ``1.50M`` (exponent kept)
``"a\tb"``                           ``str``                   ``"a\tb"``
``\a``, ``\newline``, ``\u00e9``     ``str`` of length 1       a string: ``"a"``
``:name``, ``:ns/name``              ``Keyword("ns/name")``    ``:ns/name``
``?x``, ``_``, ``$``, ``db.fn/f``    ``Symbol("?x")`` ...      ``?x`` (bare)
``[a b]``                            ``list``                  ``[a b]``
``(a b)``                            ``tuple``                 ``(a b)``
``{k v, k2 v2}``                     ``dict`` (order kept)     ``{k v, k2 v2}``
``#{a b}``                           ``frozenset``             ``#{a b}`` (from ``set`` too),
                                                               elements sorted by their text
``#inst "1985-04-12T23:20:50.52Z"``  ``datetime.datetime``,    ``#inst "...Z"`` in UTC, with 3
                                     aware, in UTC             fraction digits, or 6 if the
                                                               microseconds need them
``#uuid "f81d4fae-..."``             ``uuid.UUID``             ``#uuid "f81d4fae-..."``
===================================  ========================  ================================

Keyword and Symbol (:mod:`query.types`) are ``str`` subclasses, so ``Keyword("person/name")``
*is* the string ``"person/name"`` wherever Python data is accepted.

Reading
-------

* Whitespace includes commas; ``;`` starts a comment to the end of the line; ``#_ form``
  discards the next form (and may appear anywhere a form may, also after the one form that
  :func:`loads` accepts).
* Strings accept the escapes ``\t \r \n \b \f \\ \" \uXXXX``; any other escape is an error.
  ``\uXXXX`` pairs that form a UTF-16 surrogate pair are combined into one character, as in
  Clojure. Strings may contain raw newlines.
* Characters: ``\c`` for any one non-blank character, ``\newline \space \tab \return
  \formfeed \backspace``, ``\uXXXX``. Python has no character type: a character reads as a
  one-character ``str`` and is written back as a string.
* Numbers follow EDN: no leading zeros (``007`` is an error, not octal), no hex or radix
  forms, ``N`` only on integers, ``M`` makes a ``Decimal``. ``1.`` reads as ``1.0`` (as in
  Clojure); ``1e400`` reads as ``inf``. Integers are limited to Python's integer-string
  conversion limit (4300 digits by default): a longer literal is an error, not a hang.
* Symbols: letters, digits and ``. * + ! - _ ? $ % & = < > ' # :``; not starting with a digit,
  ``#``, ``:`` or ``'``; a leading ``-``, ``+`` or ``.`` is not followed by a digit; at most
  one ``/`` between a non-empty namespace and name, or ``/`` alone. ``nil``, ``true`` and
  ``false`` are not symbols.
* Keywords: ``:`` then a symbol-like name, which (as Clojure's reader accepts) may also start
  with a digit, ``-`` or ``.`` followed by a digit: ``:1``, ``:-1``. ``:`` alone, ``::x``
  (auto-resolved keywords need a Clojure namespace) and ``:a/b/c`` are errors.
* ``#inst`` takes an RFC 3339 timestamp, or a prefix of one as Clojure does (``"2020"``,
  ``"2020-01-01"``, ``"2020-01-01T10:00"``), offset ``Z`` or ``+hh:mm`` (UTC if absent). It
  reads as an aware ``datetime`` converted to UTC; fraction digits past the sixth (nanoseconds)
  are truncated to microseconds.
* ``#uuid`` takes the canonical 8-4-4-4-12 hex form.
* Any other tag (``#foo/bar x``) is an error, even after ``#_``.
* **Map keys and set elements must be hashable**: a vector or map there (``{[1 2] :x}``,
  ``#{{}}``) is rejected with an :class:`EDNError`, never silently converted. (Datahike users
  write lookup refs as vectors only as map *values*, which is fine.) Keys that Python considers
  equal are duplicates: ``{1 :a, 1.0 :b}``, ``#{1 true}`` and ``{:a 1, "a" 2}`` (a Keyword is
  a str) are errors, like ``{:a 1, :a 2}``.
* Nesting deeper than :data:`MAX_DEPTH` collections is an error (never a RecursionError).

Every reading error is an :class:`EDNError` with ``position`` (0-based character offset) and
1-based ``line`` and ``column``, and a message that names what was found and where.

Writing
-------

:func:`dumps` writes the form shown in the table, deterministically: maps keep their insertion
order, set elements are sorted by their EDN text (set iteration order depends on the per-process
string hash). Strings escape ``"``, ``\``, ``\n``, ``\t``, ``\r`` and other control characters
(as ``\uXXXX``); everything else is written as is. Anything outside the table is an
:class:`EDNError` (with ``position`` None): bytes, naive datetimes, dates, NaN or infinite
Decimals, keywords or symbols whose text is not a valid EDN name (``Keyword("a b")``,
``Symbol("nil")``), values nested deeper than :data:`MAX_DEPTH` or cyclic.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from query.types import Keyword, Symbol
from store.errors import ReplicaError

__all__ = ["MAX_DEPTH", "EDNError", "dumps", "loads", "loads_all"]

MAX_DEPTH = 200
"""The deepest nesting of collections :func:`loads` and :func:`dumps` accept."""


class EDNError(ReplicaError, ValueError):
    """Text is not valid EDN of the kind we read, or a value has no EDN form.

    ``position`` is the 0-based character offset of the problem in the text, ``line`` and
    ``column`` are 1-based; all three are None for errors of :func:`dumps`.
    """

    def __init__(
        self,
        message: str,
        position: int | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message)
        self.position = position
        self.line = line
        self.column = column


# ---------------------------------------------------------------------------------------------
# The tokenizer: one compiled regex. Every match starts with the whitespace and comments before
# a token, then exactly one named alternative matches (the last ones catch every error), so the
# reader dispatches on ``Match.lastgroup`` and never calls a function per character.

_DELIM = r"""(?=[\s,;"()\[\]{}\\]|\Z)"""
_TOKEN_CHARS = r"""[^\s,;"()\[\]{}\\]"""
_SC = r"[\w.*+!\-?$%&=<>'#:]"  # a symbol constituent other than '/'
_SEG = rf"(?:[+\-.](?![0-9])|[^\W\d]|[*!?$%&=<>]){_SC}*"  # a symbol's namespace or name
_SYM = rf"(?:/|{_SEG}(?:/{_SEG})?)"
_KSEG = rf"[\w.*+!\-?$%&=<>]{_SC}*"  # a keyword's namespace or name
_KW = rf"{_KSEG}(?:/{_KSEG})?"

_TOKEN_RE = re.compile(
    r"[\s,]*(?:;[^\n]*[\s,]*)*"
    r"(?:"
    rf":(?P<kw>{_KW}){_DELIM}"
    r'|"(?P<str>[^"\\]*(?:\\(?s:.)[^"\\]*)*)"'
    r"|(?P<open>[\[({])"
    r"|(?P<close>[\])}])"
    rf"|(?P<int>[+-]?(?:0|[1-9][0-9]*)N?){_DELIM}"
    rf"|(?P<float>[+-]?(?:0|[1-9][0-9]*)(?:\.[0-9]*(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+)){_DELIM}"
    rf"|(?P<dec>[+-]?(?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?M){_DELIM}"
    rf"|(?P<sym>{_SYM}){_DELIM}"
    r"|(?P<set>\#\{)"
    r"|(?P<discard>\#_)"
    rf"|\#\#(?P<special>Inf|-Inf|NaN){_DELIM}"
    rf"|\#(?P<tag>[^\W\d_]{_SC}*(?:/{_SEG})?){_DELIM}"
    r"|\\(?P<char>newline|space|tab|return|formfeed|backspace|u[0-9a-fA-F]{4}|\S)"
    rf"{_DELIM}"
    r"|(?P<eof>\Z)"
    r'|(?P<unterminated>")'
    rf"|(?P<bad>\\?{_TOKEN_CHARS}+|(?s:.))"
    r")"
)

_SYMBOL_RE = re.compile(_SYM)
_KEYWORD_RE = re.compile(_KW)
_SNIPPET_RE = re.compile(rf"\\?{_TOKEN_CHARS}+|(?s:.)")
_ESCAPE_IN_STRING_RE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|((?s:.)))")

_STRING_ESCAPES = {"t": "\t", "r": "\r", "n": "\n", "b": "\b", "f": "\f", "\\": "\\", '"': '"'}
_CHAR_NAMES = {
    "newline": "\n",
    "space": " ",
    "tab": "\t",
    "return": "\r",
    "formfeed": "\f",
    "backspace": "\b",
}
_SPECIAL_SYMBOLS: dict[str, Any] = {"nil": None, "true": True, "false": False}
_PREFIX_LENGTHS = {"kw": 1, "str": 1, "special": 2, "tag": 1, "char": 1}  # before the group
_SPECIAL_FLOATS = {"Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}

# frame kinds on the reader's stack: collections first (the value < _TAG test relies on it)
_VECTOR, _LIST, _MAP, _SET, _TAG, _DISCARD = range(6)
_OPENERS = {"[": _VECTOR, "(": _LIST, "{": _MAP}
_CLOSERS = ("]", ")", "}", "}")
_KIND_NAMES = ("vector", "list", "map", "set")

_INST_RE = re.compile(
    r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})"
    r"(?:[Tt]([0-9]{2})(?::([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?)?)?)?)?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))?"
)
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def _error(text: str, position: int, what: str, detail: str = "") -> EDNError:
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    message = f"EDN: {what} at line {line}, column {column}{detail}"
    return EDNError(message, position, line, column)


def _where(text: str, position: int) -> str:
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return f"line {line}, column {column}"


def _snippet(text: str, position: int) -> str:
    """What is found at ``position``, quoted, for an error message."""
    if position >= len(text):
        return "end of input"
    m = _SNIPPET_RE.match(text, position)
    token = m.group() if m else text[position]
    if len(token) > 40:
        token = token[:37] + "..."
    return repr(token)


def _short(value: Any) -> str:
    try:
        text = dumps(value)
    except EDNError:
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _unescape(raw: str, text: str, start: int) -> str:
    """Decode the escapes of a string literal whose contents ``raw`` begin at ``start``."""
    parts: list[str] = []
    last = 0
    surrogates = False
    for m in _ESCAPE_IN_STRING_RE.finditer(raw):
        parts.append(raw[last : m.start()])
        last = m.end()
        hexdigits, ch = m.groups()
        if hexdigits is not None:
            code = int(hexdigits, 16)
            if 0xD800 <= code <= 0xDFFF:
                surrogates = True
            parts.append(chr(code))
        elif ch in _STRING_ESCAPES:
            parts.append(_STRING_ESCAPES[ch])
        elif ch == "u":
            raise _error(
                text, start + m.start(), "invalid \\u escape in a string (needs 4 hex digits)"
            )
        else:
            raise _error(text, start + m.start(), f"invalid escape {m.group()!r} in a string")
    parts.append(raw[last:])
    result = "".join(parts)
    if surrogates:  # combine UTF-16 surrogate pairs written as two \u escapes, keep lone ones
        result = result.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return result


def _build_map(items: list[Any], text: str, start: int) -> dict[Any, Any]:
    if len(items) % 2:
        raise _error(
            text,
            start,
            "map with an odd number of forms",
            f" (a key without a value: {_short(items[-1])})",
        )
    it = iter(items)
    try:
        result = dict(zip(it, it, strict=True))
    except TypeError:
        for key in items[::2]:
            try:
                hash(key)
            except TypeError:
                raise _error(
                    text,
                    start,
                    f"unhashable map key {_short(key)} in the map",
                    " (vectors and maps cannot be keys in Python; use a list (...) instead)",
                ) from None
        raise  # pragma: no cover - dict() failed for another reason
    if len(result) * 2 != len(items):
        seen: set[Any] = set()
        for key in items[::2]:
            if key in seen:
                raise _error(text, start, f"duplicate key {_short(key)} in the map")
            seen.add(key)
    return result


def _build_set(items: list[Any], text: str, start: int) -> frozenset[Any]:
    try:
        result = frozenset(items)
    except TypeError:
        for item in items:
            try:
                hash(item)
            except TypeError:
                raise _error(
                    text,
                    start,
                    f"unhashable element {_short(item)} in the set",
                    " (vectors and maps cannot be set elements in Python; use a list (...))",
                ) from None
        raise  # pragma: no cover
    if len(result) != len(items):
        seen: set[Any] = set()
        for item in items:
            if item in seen:
                raise _error(text, start, f"duplicate element {_short(item)} in the set")
            seen.add(item)
    return result


def _read_inst(value: str, text: str, start: int) -> datetime:
    m = _INST_RE.fullmatch(value)
    if m is None:
        raise _error(text, start, f"invalid #inst {value!r} (expected an RFC 3339 timestamp)")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = m.groups()
    micro = int((fraction + "000000")[:6]) if fraction else 0
    try:
        result = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=UTC,
        )
        if sign is not None:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            if int(off_m) >= 60 or offset >= timedelta(hours=24):
                raise ValueError("offset out of range")
            result = result.replace(tzinfo=timezone(offset if sign == "+" else -offset))
            result = result.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise _error(text, start, f"invalid #inst {value!r} ({exc})") from None
    return result


def _apply_tag(tag: str, value: Any, text: str, start: int) -> Any:
    if type(value) is not str:
        raise _error(text, start, f"#{tag} expects a string, found {_short(value)}")
    if tag == "inst":
        return _read_inst(value, text, start)
    if _UUID_RE.fullmatch(value) is None:
        raise _error(text, start, f"invalid #uuid {value!r} (expected 8-4-4-4-12 hex digits)")
    return uuid.UUID(value)


def _read(text: str, single: bool) -> list[Any]:
    if not isinstance(text, str):
        raise TypeError(f"EDN text must be a str, not {type(text).__name__}")
    match = _TOKEN_RE.match
    results: list[Any] = []
    stack: list[list[Any]] = []  # frames: [kind, items (collections) or tag name, start]
    keywords: dict[str, Keyword] = {}
    depth = 0
    pos = 0
    value: Any
    while True:
        m = match(text, pos)
        assert m is not None  # the last alternatives match anything
        kind = m.lastgroup
        pos = m.end()
        if not stack and single and results and kind != "eof" and kind != "discard":
            start = m.start(kind) - _PREFIX_LENGTHS.get(kind, 0)  # type: ignore[arg-type]
            raise _error(text, start, f"unexpected {_snippet(text, start)} after the form")
        if kind == "kw":
            token = m["kw"]
            value = keywords.get(token)
            if value is None:
                value = keywords[token] = Keyword(token)
        elif kind == "str":
            value = m["str"]
            if "\\" in value:
                value = _unescape(value, text, m.start("str"))
        elif kind == "open":
            depth += 1
            if depth > MAX_DEPTH:
                raise _error(text, m.start("open"), f"nesting deeper than {MAX_DEPTH}")
            stack.append([_OPENERS[m["open"]], [], m.start("open")])
            continue
        elif kind == "close":
            closer = m["close"]
            start = m.start("close")
            if not stack:
                raise _error(text, start, f"unexpected {closer!r}", " (nothing is open)")
            frame = stack[-1]
            frame_kind = frame[0]
            if frame_kind >= _TAG:
                prefix = "#_" if frame_kind == _DISCARD else f"#{frame[1]}"
                raise _error(
                    text,
                    start,
                    f"unexpected {closer!r}",
                    f" (expected a form after the {prefix} at {_where(text, frame[2])})",
                )
            if _CLOSERS[frame_kind] != closer:
                raise _error(
                    text,
                    start,
                    f"unexpected {closer!r}",
                    f" (the {_KIND_NAMES[frame_kind]} opened at {_where(text, frame[2])} "
                    f"is closed by {_CLOSERS[frame_kind]!r})",
                )
            stack.pop()
            depth -= 1
            items = frame[1]
            if frame_kind == _VECTOR:
                value = items
            elif frame_kind == _LIST:
                value = tuple(items)
            elif frame_kind == _MAP:
                value = _build_map(items, text, frame[2])
            else:
                value = _build_set(items, text, frame[2])
        elif kind == "int":
            token = m["int"]
            try:
                value = int(token[:-1] if token[-1] == "N" else token)
            except ValueError as exc:  # longer than sys.get_int_max_str_digits()
                raise _error(text, m.start("int"), "integer too large", f" ({exc})") from None
        elif kind == "sym":
            token = m["sym"]
            value = _SPECIAL_SYMBOLS[token] if token in _SPECIAL_SYMBOLS else Symbol(token)
        elif kind == "float":
            value = float(m["float"])
        elif kind == "dec":
            try:
                value = Decimal(m["dec"][:-1])
            except InvalidOperation:  # pragma: no cover - the regex admits only valid ones
                raise _error(text, m.start("dec"), f"invalid number {m['dec']!r}") from None
        elif kind == "set":
            depth += 1
            if depth > MAX_DEPTH:
                raise _error(text, m.start("set"), f"nesting deeper than {MAX_DEPTH}")
            stack.append([_SET, [], m.start("set")])
            continue
        elif kind == "char":
            token = m["char"]
            if len(token) == 1:
                value = token
            elif token in _CHAR_NAMES:
                value = _CHAR_NAMES[token]
            else:
                value = chr(int(token[1:], 16))
        elif kind == "special":
            value = _SPECIAL_FLOATS[m["special"]]
        elif kind == "tag":
            tag = m["tag"]
            if tag != "inst" and tag != "uuid":
                raise _error(
                    text,
                    m.start("tag") - 1,
                    f"unknown tag #{tag}",
                    " (only #inst and #uuid are read)",
                )
            stack.append([_TAG, tag, m.start("tag") - 1])
            continue
        elif kind == "discard":
            stack.append([_DISCARD, None, m.start("discard")])
            continue
        elif kind == "eof":
            if stack:
                frame = stack[-1]
                if frame[0] >= _TAG:
                    prefix = "#_" if frame[0] == _DISCARD else f"#{frame[1]}"
                    detail = f" (expected a form after the {prefix} at {_where(text, frame[2])})"
                else:
                    detail = (
                        f" (the {_KIND_NAMES[frame[0]]} opened at {_where(text, frame[2])} "
                        f"is not closed)"
                    )
                raise _error(text, pos, "unexpected end of input", detail)
            break
        elif kind == "unterminated":
            raise _error(text, m.start("unterminated"), "unterminated string")
        else:
            start = m.start("bad")
            token = m["bad"]
            first = token[0]
            if first == ":":
                what = "invalid keyword"
            elif first in "0123456789" or (
                first in "+-." and len(token) > 1 and token[1] in "0123456789"
            ):
                what = "invalid number"
            elif first == "\\":
                what = "invalid character literal"
            elif first == "#":
                what = "invalid dispatch"
            else:
                what = "unexpected"
            raise _error(text, start, f"{what} {_snippet(text, start)}")

        # deliver the value: to the innermost collection, through pending tags and discards
        while stack:
            frame = stack[-1]
            if frame[0] < _TAG:
                frame[1].append(value)
                break
            stack.pop()
            if frame[0] == _DISCARD:
                break
            value = _apply_tag(frame[1], value, text, frame[2])
        else:
            results.append(value)

    if single and not results:
        raise _error(text, len(text), "no form", " (expected exactly one EDN form)")
    return results


def loads(text: str) -> Any:
    """Read exactly one EDN form from ``text`` (whitespace, comments and ``#_`` around it ok).

    Raises :class:`EDNError` if the text is not valid EDN, holds no form, or holds more than one.
    """
    return _read(text, True)[0]


def loads_all(text: str) -> list[Any]:
    """Read every top-level EDN form of ``text``, in order (an empty list for blank text)."""
    return _read(text, False)


# ---------------------------------------------------------------------------------------------
# The writer

_ESCAPE_RE = re.compile(r'[\x00-\x1f\x7f"\\\ud800-\udfff]')
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    return _ESCAPES.get(ch) or f"\\u{ord(ch):04x}"


def _write_str(value: str) -> str:
    return '"' + _ESCAPE_RE.sub(_escape_char, value) + '"'


def _write_float(value: float) -> str:
    if value != value:
        return "##NaN"
    if value == math.inf:
        return "##Inf"
    if value == -math.inf:
        return "##-Inf"
    return float.__repr__(value)  # shortest round-trip form, always with '.' or 'e'


def _write_datetime(value: datetime) -> str:
    if value.utcoffset() is None:
        raise EDNError(f"EDN: cannot write a naive datetime {value!r} (give it a tzinfo)")
    try:
        u = value.astimezone(UTC)
    except OverflowError as exc:
        raise EDNError(f"EDN: cannot write {value!r} as a UTC #inst ({exc})") from None
    if u.microsecond % 1000:
        fraction = f"{u.microsecond:06d}"
    else:
        fraction = f"{u.microsecond // 1000:03d}"
    return (
        f'#inst "{u.year:04d}-{u.month:02d}-{u.day:02d}'
        f'T{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{fraction}Z"'
    )


def _write_decimal(value: Decimal) -> str:
    if not value.is_finite():
        raise EDNError(f"EDN: cannot write {value!r} (EDN has no NaN or infinite decimals)")
    return f"{value}M"


def _write(value: Any, out: list[str], depth: int) -> None:
    t = type(value)
    if t is Keyword:
        if _KEYWORD_RE.fullmatch(value) is None:
            raise EDNError(f"EDN: {value!r} is not a valid EDN keyword name")
        out.append(":" + value)
    elif t is str:
        out.append(_write_str(value))
    elif t is int:
        try:
            out.append(int.__repr__(value))
        except ValueError as exc:  # longer than sys.get_int_max_str_digits()
            raise EDNError(f"EDN: integer too large to write ({exc})") from None
    elif t is list or t is tuple:
        if depth >= MAX_DEPTH:
            raise EDNError(f"EDN: value nested deeper than {MAX_DEPTH} (or cyclic)")
        out.append("[" if t is list else "(")
        first = True
        for item in value:
            if first:
                first = False
            else:
                out.append(" ")
            _write(item, out, depth + 1)
        out.append("]" if t is list else ")")
    elif t is dict:
        if depth >= MAX_DEPTH:
            raise EDNError(f"EDN: value nested deeper than {MAX_DEPTH} (or cyclic)")
        out.append("{")
        first = True
        for key, item in value.items():
            if first:
                first = False
            else:
                out.append(", ")
            _write(key, out, depth + 1)
            out.append(" ")
            _write(item, out, depth + 1)
        out.append("}")
    elif value is None:
        out.append("nil")
    elif t is bool:
        out.append("true" if value else "false")
    elif t is Symbol:
        if _SYMBOL_RE.fullmatch(value) is None or value in _SPECIAL_SYMBOLS:
            raise EDNError(f"EDN: {value!r} is not a valid EDN symbol")
        out.append(value)
    elif t is float:
        out.append(_write_float(value))
    elif t is frozenset or t is set:
        if depth >= MAX_DEPTH:
            raise EDNError(f"EDN: value nested deeper than {MAX_DEPTH} (or cyclic)")
        parts = []
        for item in value:
            sub: list[str] = []
            _write(item, sub, depth + 1)
            parts.append("".join(sub))
        parts.sort()
        out.append("#{" + " ".join(parts) + "}")
    elif t is datetime:
        out.append(_write_datetime(value))
    elif t is uuid.UUID:
        out.append(f'#uuid "{value}"')
    elif t is Decimal:
        out.append(_write_decimal(value))
    else:
        _write_subclass(value, out, depth)


def _write_subclass(value: Any, out: list[str], depth: int) -> None:
    """Instances of subclasses of the supported types (IntEnum, OrderedDict, ...)."""
    if isinstance(value, Keyword):
        _write(Keyword(str.__str__(value)), out, depth)
    elif isinstance(value, Symbol):
        _write(Symbol(str.__str__(value)), out, depth)
    elif isinstance(value, str):
        _write(str.__str__(value), out, depth)
    elif isinstance(value, bool):  # pragma: no cover - bool cannot be subclassed
        _write(bool(value), out, depth)
    elif isinstance(value, int):
        _write(int(value), out, depth)
    elif isinstance(value, float):
        _write(float(value), out, depth)
    elif isinstance(value, list):
        _write(list(value), out, depth)
    elif isinstance(value, tuple):
        _write(tuple(value), out, depth)
    elif isinstance(value, dict):
        _write(dict(value), out, depth)
    elif isinstance(value, (set, frozenset)):
        _write(frozenset(value), out, depth)
    elif isinstance(value, datetime):
        out.append(_write_datetime(value))
    elif isinstance(value, uuid.UUID):
        out.append(f'#uuid "{value}"')
    elif isinstance(value, Decimal):
        out.append(_write_decimal(value))
    else:
        raise EDNError(f"EDN: cannot write a value of type {type(value).__name__}: {value!r}")


def dumps(value: Any) -> str:
    """Write ``value`` as EDN text that :func:`loads` reads back as an equal value of the same
    types (see the module's table). Raises :class:`EDNError` for anything outside the mapping.
    """
    out: list[str] = []
    _write(value, out, 0)
    return "".join(out)
