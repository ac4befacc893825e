"""A deliberately naive Datalog evaluator: the reference of ``test_differential.py``.

It knows nothing of ``query/`` but the EDN reader (that independence is its point) and runs a
small subset of the language the slowest obvious way:

* inputs (``:in``, ``[$]`` when absent): ``$`` is a collection of ``(e, a, v)`` tuples, ``%`` a
  rule set (EDN text or data), ``?x`` a scalar;
* ``:find ?a ?b ...`` (relation find only) returns a set of tuples;
* a conjunction is evaluated on a list of substitutions (dicts from variable to value): first its
  generators -- the data patterns in the written order, then the others in the written order,
  except that a rule call (or ``or-join``) waits for the generators binding its required
  variables -- a data pattern ``[e a v]`` (1 to 3 terms) scans every tuple of ``$`` for every
  substitution; ``or`` is the union of its branches; ``or-join`` runs each branch on the
  substitution cut down to the join variables and keeps only those from the result; a rule call
  matches the answers of its *subgoal* (below) -- then its filters, which by then have all their
  variables bound: predicates ``< > <= >= = != not=`` and ``not`` / ``not-join`` (keep the
  substitution when the body has no solution; ``not-join`` cuts the substitution down to its
  variables first);
* rules are answered top down with tables, by naive iteration: a call with the values its
  arguments have at that point (constants, variables already bound) is a subgoal ``(rule,
  bound positions and values)``; a subgoal's answers are the head tuples of every body of the
  rule evaluated from scratch with the head variables at those positions bound to those values,
  calls inside reading the answers of their own subgoals found so far. The query and every
  subgoal are evaluated again and again until a round finds no new subgoal and no new answer.
  So a rule body may use a head variable that only the caller binds (a required ``[?x]`` one),
  as in DataScript. Only positive recursion is sound here (a ``not`` in a rule body may not
  call rules);
* the only concessions to speed: a nested clause (``or``, ``not`` ...) evaluated for many rows
  of a conjunction is evaluated once per distinct binding of its own variables (memo), and a
  pattern's scan for its constants is made once, not once per row.

Values are compared with Python ``==`` and ``<``; queries that compare values of different types
are outside the subset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import Any

from query.edn import loads

__all__ = ["NaiveError", "q"]

# The reader's symbol and keyword types, recovered from the reader itself.
Symbol = type(loads("s"))
Keyword = type(loads(":k"))

Row = dict[str, Any]
Subgoal = tuple[str, tuple[tuple[int, Any], ...]]


class NaiveError(Exception):
    """The query is outside the subset this evaluator understands."""


def _sym(x: Any, name: str | None = None) -> bool:
    return isinstance(x, Symbol) and (name is None or x == name)


def _is_var(x: Any) -> bool:
    return isinstance(x, Symbol) and x.startswith("?")


def _is_blank(x: Any) -> bool:
    return isinstance(x, Symbol) and x == "_"


def _kw(x: Any) -> str | None:
    return str(x) if isinstance(x, Keyword) else None


# -- the query ---------------------------------------------------------------------------------


def _sections(data: Any) -> dict[str, list[Any]]:
    if isinstance(data, Mapping):
        out = {str(k): list(v) for k, v in data.items()}
    elif isinstance(data, list):
        out: dict[str, list[Any]] = {}
        current: str | None = None
        for item in data:
            name = _kw(item)
            if name is not None:
                current = name
                out[current] = []
            elif current is None:
                raise NaiveError(f"query must start with a keyword: {item!r}")
            else:
                out[current].append(item)
    else:
        raise NaiveError(f"not a query: {data!r}")
    unknown = set(out) - {"find", "in", "where"}
    if unknown:
        raise NaiveError(f"unsupported query sections: {sorted(unknown)}")
    return out


def q(query: Any, *inputs: Any) -> set[tuple[Any, ...]]:
    """Run ``query`` (EDN text or the data ``loads`` returns) on ``inputs``: a set of tuples of
    the find variables."""
    data = loads(query) if isinstance(query, str) else query
    sections = _sections(data)
    find = sections.get("find", [])
    if not find or not all(_is_var(x) for x in find):
        raise NaiveError(f"only relation finds of variables are supported: {find!r}")
    in_ = sections.get("in", [Symbol("$")])
    if len(in_) != len(inputs):
        raise NaiveError(f"{len(in_)} inputs declared, {len(inputs)} given")
    datoms: list[tuple[Any, ...]] = []
    rules: Any = None
    start: Row = {}
    for spec, value in zip(in_, inputs, strict=True):
        if _sym(spec, "$"):
            datoms = [tuple(t) for t in value]
        elif _sym(spec, "%"):
            rules = value
        elif _is_var(spec):
            start[str(spec)] = value
        else:
            raise NaiveError(f"unsupported :in item {spec!r}")
    tables = _Tables(_rule_defs(rules) if rules is not None else [], datoms)
    where = sections.get("where", [])
    while True:  # until the query's subgoals are all answered completely
        tables.changed = False
        rows = _conj(where, start, datoms, tables)
        tables.solve()
        if not tables.changed:
            break
    out = set()
    for row in rows:
        try:
            out.add(tuple(row[str(v)] for v in find))
        except KeyError as exc:
            raise NaiveError(f"find variable {exc} is not bound") from None
    return out


# -- rules -------------------------------------------------------------------------------------


def _rule_defs(rules: Any) -> list[tuple[str, list[str], int, list[Any]]]:
    """(name, head variables, how many are required, body) of every rule branch."""
    data = loads(rules) if isinstance(rules, str) else rules
    out = []
    for rule in data:
        head, *body = rule
        name, *args = head
        flat: list[str] = []
        required = 0
        for a in args:  # (name [?required ...] ?other ...)
            if isinstance(a, list):
                required = len(a)
            flat.extend(str(x) for x in (a if isinstance(a, list) else [a]))
        if not all(x.startswith("?") for x in flat):
            raise NaiveError(f"rule head arguments must be variables: {head!r}")
        out.append((str(name), flat, required, body))
    return out


class _Tables:
    """The rules, and the answers found so far for every subgoal met (see the module
    docstring)."""

    def __init__(self, defs: list[tuple[str, list[str], int, list[Any]]], datoms: list[Any]):
        self.defs: dict[str, list[tuple[list[str], list[Any]]]] = {}
        self.required: dict[str, int] = {}
        for name, head, required, body in defs:
            self.defs.setdefault(name, []).append((head, body))
            self.required[name] = required
        self.datoms = datoms
        self.answers: dict[Subgoal, set[tuple[Any, ...]]] = {}
        self.changed = False

    def call(self, name: str, args: list[Any], row: Row) -> set[tuple[Any, ...]]:
        """The answers so far of the subgoal of calling ``name`` with ``args`` in ``row``."""
        if name not in self.defs:
            raise NaiveError(f"unknown rule {name}")
        if any(len(head) != len(args) for head, _ in self.defs[name]):
            raise NaiveError(f"rule {name} called with {len(args)} arguments")
        bound = []
        for i, a in enumerate(args):
            if _is_var(a):
                if str(a) in row:
                    bound.append((i, row[str(a)]))
            elif not _is_blank(a):
                bound.append((i, a))
        goal = (name, tuple(bound))
        if goal not in self.answers:
            self.answers[goal] = set()
            self.changed = True
        return self.answers[goal]

    def solve(self) -> None:
        """Evaluate every subgoal again until nothing new appears."""
        while True:
            before = self.changed
            self.changed = False
            for goal in list(self.answers):
                name, bound = goal
                for head, body in self.defs[name]:
                    # the head variables at the bound positions take the demanded values
                    start = _unify([Symbol(head[i]) for i, _ in bound], [v for _, v in bound], {})
                    if start is None:  # (r ?x ?x) demanded with two different values
                        continue
                    for row in _conj(body, start, self.datoms, self):
                        try:
                            fact = tuple(row[v] for v in head)
                        except KeyError as exc:
                            raise NaiveError(
                                f"rule {name}: head variable {exc} not bound"
                            ) from None
                        if fact not in self.answers[goal]:
                            self.answers[goal].add(fact)
                            self.changed = True
            if not self.changed:
                self.changed = before
                return
            before = True


# -- clauses -----------------------------------------------------------------------------------


def _dedupe(rows: Iterable[Row]) -> list[Row]:
    seen = set()
    out = []
    for row in rows:
        key = tuple(sorted(row.items()))
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def _unify(terms: Iterable[Any], values: Iterable[Any], row: Row) -> Row | None:
    """``row`` extended so that every term equals its value, or None."""
    new = dict(row)
    for t, x in zip(terms, values, strict=True):
        if _is_blank(t):
            continue
        if _is_var(t):
            name = str(t)
            if name in new:
                if new[name] != x:
                    return None
            else:
                new[name] = x
        elif t != x:
            return None
    return new


def _kind(clause: Any) -> str:
    if isinstance(clause, list):
        if clause and isinstance(clause[0], tuple):
            if len(clause) != 1:
                raise NaiveError(f"function bindings are not supported: {clause!r}")
            return "pred"
        return "pattern"
    if isinstance(clause, tuple) and clause and isinstance(clause[0], Symbol):
        head = str(clause[0])
        if head in ("not", "not-join", "or", "or-join", "and"):
            return head
        return "call"
    raise NaiveError(f"unsupported clause {clause!r}")


_FILTERS = ("pred", "not", "not-join")
_NESTED = ("not", "not-join", "or", "or-join")


def _vars_in(form: Any) -> set[str]:
    """Every variable written anywhere in ``form``."""
    if _is_var(form):
        return {str(form)}
    if isinstance(form, list | tuple):
        return set().union(*(_vars_in(x) for x in form))
    return set()


class _Scope:
    """What the clauses of one conjunction see: the datoms, the rule facts, and a memo of the
    nested clauses (``or``, ``not`` ...) already evaluated. A clause reads and binds only its own
    variables, so its answer for a substitution depends only on the substitution cut down to
    them (its join variables for ``or-join`` / ``not-join``); the memo only saves evaluating the
    same thing again for every row of a product."""

    def __init__(self, datoms: list[tuple[Any, ...]], tables: _Tables) -> None:
        self.datoms = datoms
        self.tables = tables
        self.memo: dict[tuple[int, tuple[tuple[str, Any], ...]], Any] = {}
        self.names: dict[int, list[str]] = {}
        self.scanned: dict[int, list[tuple[Any, ...]]] = {}

    def scan(self, pattern: Any) -> list[tuple[Any, ...]]:
        """The datoms that match the constants of ``pattern``: one scan per pattern rather than
        one per row (``_unify`` checks every term again anyway)."""
        if id(pattern) not in self.scanned:
            n = len(pattern)
            consts = [(i, t) for i, t in enumerate(pattern) if not _is_var(t) and not _is_blank(t)]
            self.scanned[id(pattern)] = [
                d for d in self.datoms if len(d) >= n and all(d[i] == t for i, t in consts)
            ]
        return self.scanned[id(pattern)]

    def nested(self, c: Any, row: Row, compute: Any) -> Any:
        if id(c) not in self.names:
            join = _kind(c) in ("or-join", "not-join")  # the others are local to the clause
            self.names[id(c)] = sorted(_join_vars(c[1]) if join else _vars_in(c))
        own = {v: row[v] for v in self.names[id(c)] if v in row}
        key = (id(c), tuple(own.items()))
        if key not in self.memo:
            self.memo[key] = compute(own)
        return self.memo[key]


def _conj(
    clauses: list[Any], row: Row, datoms: list[tuple[Any, ...]], tables: _Tables
) -> list[Row]:
    """Every extension of ``row`` that satisfies all ``clauses``."""
    scope = _Scope(datoms, tables)
    rows = [row]
    for c in _generator_order(clauses, set(row), tables):
        rows = _dedupe(new for r in rows for new in _generate(c, r, scope))
    for c in clauses:
        if _kind(c) in _FILTERS:
            rows = [r for r in rows if _keep(c, r, scope)]
    return rows


def _generator_order(clauses: list[Any], bound: set[str], tables: _Tables) -> list[Any]:
    """The generators of a conjunction in the order they run: data patterns first, then the
    others in the written order, each once its required variables are bound (the first
    waiting one if none is ready)."""
    gens = [c for c in clauses if _kind(c) not in _FILTERS]
    order = [c for c in gens if _kind(c) == "pattern"]
    bound = bound | set().union(*(_vars_in(c) for c in order))
    rest = [c for c in gens if _kind(c) != "pattern"]
    while rest:
        ready = next((c for c in rest if _required(c, tables) <= bound), rest[0])
        rest.remove(ready)
        order.append(ready)
        bound |= _binds(ready)
    return order


def _required(c: Any, tables: _Tables) -> set[str]:
    """Variables a rule call or ``or-join`` needs bound before it runs."""
    kind = _kind(c)
    if kind == "call":
        n = tables.required.get(str(c[0]), 0)
        return {str(a) for a in c[1 : 1 + n] if _is_var(a)}
    if kind == "or-join" and c[1] and isinstance(c[1][0], list):
        return {str(v) for v in c[1][0]}
    return set()


def _binds(c: Any) -> set[str]:
    kind = _kind(c)
    if kind == "or-join":
        return set(_join_vars(c[1]))
    return _vars_in(c)


def _join_vars(spec: Any) -> list[str]:
    if not isinstance(spec, list):
        raise NaiveError(f"join variables must be a vector: {spec!r}")
    out = []
    for x in spec:  # or-join [[?required ...] ?other ...]
        out.extend(str(v) for v in (x if isinstance(x, list) else [x]))
    return out


def _branch(clause: Any) -> list[Any]:
    return list(clause[1:]) if _kind(clause) == "and" else [clause]


def _generate(c: Any, row: Row, scope: _Scope) -> Iterable[Row]:
    kind = _kind(c)
    if kind == "pattern":
        if not 1 <= len(c) <= 3:
            raise NaiveError(f"patterns have 1 to 3 terms here: {c!r}")
        for d in scope.scan(c):
            new = _unify(c, d[: len(c)], row)
            if new is not None:
                yield new
    elif kind == "call":
        for fact in list(scope.tables.call(str(c[0]), list(c[1:]), row)):
            new = _unify(c[1:], fact, row)
            if new is not None:
                yield new
    elif kind in _NESTED:
        for new in scope.nested(c, row, lambda own: _disjunction(c, own, scope)):
            yield {**row, **new}
    else:
        raise NaiveError(f"unsupported clause {c!r}")


def _disjunction(c: Any, row: Row, scope: _Scope) -> list[Row]:
    """``or``: the union of the branches; ``or-join``: the same on the join variables only."""
    out = []
    if _kind(c) == "or":
        for branch in c[1:]:
            out.extend(_conj(_branch(branch), row, scope.datoms, scope.tables))
        return out
    names = _join_vars(c[1])
    inner = {v: row[v] for v in names if v in row}
    for branch in c[2:]:
        for r in _conj(_branch(branch), inner, scope.datoms, scope.tables):
            new = dict(row)
            for v in names:
                if v not in r:
                    raise NaiveError(f"or-join variable {v} not bound by a branch")
                new[v] = r[v]
            out.append(new)
    return out


def _value(arg: Any, row: Row) -> Any:
    if _is_var(arg):
        try:
            return row[str(arg)]
        except KeyError:
            raise NaiveError(f"variable {arg} not bound when a filter runs") from None
    return arg


_COMPARE = {
    "<": lambda x, y: x < y,
    ">": lambda x, y: x > y,
    "<=": lambda x, y: x <= y,
    ">=": lambda x, y: x >= y,
}


def _predicate(name: str, args: list[Any]) -> bool:
    if name in _COMPARE:
        op = _COMPARE[name]
        return all(op(x, y) for x, y in pairwise(args))
    if name == "=":
        return all(x == args[0] for x in args)
    if name in ("!=", "not="):
        return not all(x == args[0] for x in args)
    raise NaiveError(f"unsupported predicate {name}")


def _keep(c: Any, row: Row, scope: _Scope) -> bool:
    kind = _kind(c)
    if kind == "pred":
        call = c[0]
        return _predicate(str(call[0]), [_value(a, row) for a in call[1:]])
    return bool(scope.nested(c, row, lambda own: _negation(c, own, scope)))


def _negation(c: Any, row: Row, scope: _Scope) -> bool:
    """True when the body of the ``not`` / ``not-join`` has no solution."""
    if _kind(c) == "not":
        return not _conj(list(c[1:]), row, scope.datoms, scope.tables)
    names = _join_vars(c[1])
    for v in names:
        if v not in row:
            raise NaiveError(f"not-join variable {v} not bound")
    return not _conj(list(c[2:]), {v: row[v] for v in names}, scope.datoms, scope.tables)
