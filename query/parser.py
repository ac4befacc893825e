"""The Datalog query and rule parser: EDN text or Python data into :mod:`query.ast` (DESIGN.md 6).

:func:`parse_query` accepts a query as EDN text (read with :func:`query.edn.loads`), as the
vector form ``[Keyword("find"), Symbol("?e"), Keyword("where"), [...]]`` or as the map form
``{Keyword("find"): [...], Keyword("in"): [...], Keyword("where"): [...]}`` (map keys may also
be the plain strings ``"find"`` or ``":find"``). :func:`parse_rules` accepts a rule set, a list
of ``[(name [?required ...] ?var ...) clause ...]`` definitions, the same ways. Both cache their
results (an LRU of :data:`CACHE_SIZE` entries keyed by the text, or by a hashable copy of the
data; data holding unhashable objects is parsed every time).

The grammar is Datomic's and DataScript's, with DataScript's semantics as the reference
(``datascript.parser`` / ``datascript.query``) plus DataScript's ``:offset``, ``:limit`` and an
``:order-by [?var :desc ?other ...]`` (or ``[[?var :desc] ?other]``; direction defaults to
``:asc``). What is a variable is decided by type: only a :class:`~query.types.Symbol` starting
with ``?`` is a variable, ``Symbol("_")`` the placeholder, ``Symbol("$...")`` a source and
``Symbol("%")`` the rule set; any other value, every plain ``str`` included, is a constant.

Representation choices the AST leaves open:

* A predicate or function called through a variable (``[(?f ?x)]``) and DataScript's custom
  aggregate ``(aggregate ?f ?x)`` keep the variable's name as ``fn`` (``"?f"``).
* ``(and ...)`` is kept as :class:`~query.ast.And` only as a branch of ``or`` / ``or-join``;
  anywhere else (top level, inside ``not``, a rule body, another ``and``) its clauses are
  spliced into the enclosing conjunction, which means the same.
* A plain symbol in ``:in`` (``:in $ pattern``, as Datomic allows for pull patterns) is bound
  like ``?pattern``: ``BindScalar(Var("pattern"))``, and ``(pull ?e pattern)`` refers to it as
  ``Var("pattern")``. Elsewhere plain symbols are constants.
* Without ``:in``, the inputs are ``($)`` when ``:where`` has a data pattern (at any depth) or a
  ``not`` / ``or`` / rule call with an explicit source, else ``()`` -- DataScript's default.
* Constants, lookup refs and pull patterns are kept exactly as given; mutable ones (lists,
  dicts, sets) are copied so that the cached parse never shares them with the caller.

Validation (all :class:`~query.errors.QueryParseError`, naming the offending form): unknown
clause shapes, patterns of 0 or more than 5 terms, malformed find specs, bindings, ``:in`` and
``:with`` items, rule heads; find, ``:with``, pull and aggregate variables bound nowhere in
``:where`` or ``:in``; ``:find`` and ``:with`` sharing variables; duplicate ``:in`` / ``:with``
variables; ``:keys``/``:strs``/``:syms`` count or find-spec mismatches; sources used in
``:where`` but not declared in ``:in``; rule calls without ``%`` in ``:in``; unknown query
keywords; non-integer or negative ``:limit`` / ``:offset``; ``:order-by`` variables not in
``:find``. Binding checks are made per conjunction, counting as bound whatever any clause of the
conjunction (or an enclosing one, or ``:in``, or the rule head) can bind -- the planner reorders
clauses, so written order does not matter: predicate and function arguments must be bound,
``not`` must share a variable with the outside and ``not-join``'s variables must all be bound,
``or`` branches must have the same free variables (DataScript's "All clauses in 'or' must use
same set of free vars"), ``or-join``'s required variables must be bound and its other variables
used in every branch. Rule sets: rule names, head variables (distinct), non-empty bodies, and
the same arity for every branch of a rule ("Arity mismatch").

Errors of reading EDN text propagate unchanged as :class:`query.edn.EDNError` (a
``ReplicaError`` and a ``ValueError``, with the position of the problem). No other exception
escapes: anything unexpected from malformed data is wrapped in a ``QueryParseError``.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterable
from decimal import Decimal
from typing import Any, Generic, Literal, NoReturn, TypeVar

from query.ast import (
    DEFAULT_SRC,
    And,
    BindColl,
    BindIgnore,
    Binding,
    BindScalar,
    BindTuple,
    Clause,
    Const,
    FindAggregate,
    FindColl,
    FindElem,
    FindPull,
    FindRel,
    FindScalar,
    FindSpec,
    FindTuple,
    FindVar,
    FnArg,
    Function,
    InputSpec,
    Not,
    Or,
    OrderDir,
    Pattern,
    Placeholder,
    Predicate,
    Query,
    RuleBranch,
    RuleCall,
    Rules,
    RulesVar,
    SrcVar,
    Term,
    Var,
    binding_vars,
    call_vars,
    clause_vars,
    find_elements,
    term_vars,
)
from query.edn import loads
from query.errors import QueryParseError
from query.types import Keyword, Symbol

__all__ = ["CACHE_SIZE", "parse_query", "parse_rules", "query_call"]

CACHE_SIZE = 1000
"""How many parsed queries (and, separately, rule sets) are kept."""

_QUERY_KEYS = ("find", "keys", "strs", "syms", "with", "in", "where", "order-by", "offset", "limit")
_RESERVED = frozenset({"and", "not", "not-join", "or", "or-join"})
_CLAUSE_SHAPES = (
    "expected (data-pattern | pred-expr | fn-expr | rule-expr | not-clause | not-join-clause"
    " | or-clause | or-join-clause)"
)

# -- symbols -----------------------------------------------------------------------------------


def _is_var(x: Any) -> bool:
    return isinstance(x, Symbol) and x.startswith("?")


def _is_src(x: Any) -> bool:
    return isinstance(x, Symbol) and x.startswith("$")


def _is_placeholder(x: Any) -> bool:
    return isinstance(x, Symbol) and x == "_"


def _is_rules_var(x: Any) -> bool:
    return isinstance(x, Symbol) and x == "%"


def _is_plain(x: Any) -> bool:
    """A symbol that is not a variable, source, placeholder or ``%``."""
    return (
        isinstance(x, Symbol) and x != "" and not x.startswith(("?", "$")) and x not in ("_", "%")
    )


def _is_seq(x: Any) -> bool:
    return isinstance(x, list | tuple)


def _is_ellipsis(x: Any) -> bool:
    return x is Ellipsis or (isinstance(x, Symbol) and x == "...")


def _is_call(x: Any) -> bool:
    """``(f arg ...)`` / ``(?f arg ...)``: the call part of a predicate or function clause."""
    return _is_seq(x) and len(x) > 0 and (_is_plain(x[0]) or _is_var(x[0]))


def _own(x: Any) -> Any:
    """Copy a mutable constant so the (cached) AST never aliases the caller's data."""
    if isinstance(x, list | dict | set):
        return copy.deepcopy(x)
    return x


def _fmt_set(names: Iterable[str]) -> str:
    return "#{" + " ".join(sorted(set(names))) + "}"


def _fmt_vec(names: Iterable[str]) -> str:
    return "[" + " ".join(names) + "]"


def _distinct(names: list[str]) -> bool:
    return len(set(names)) == len(names)


# -- variables of parsed clauses ---------------------------------------------------------------


def _input_vars(spec: InputSpec) -> list[str]:
    if isinstance(spec, SrcVar | RulesVar):
        return []
    return binding_vars(spec)


def _binds(c: Clause) -> set[str]:
    """The variables a clause can bind (predicates and ``not`` bind nothing)."""
    if isinstance(c, Pattern):
        return set(term_vars(c.terms))
    if isinstance(c, Function):
        return set(binding_vars(c.binding))
    if isinstance(c, RuleCall):
        return set(term_vars(c.args))
    if isinstance(c, Or):
        if c.vars is not None:
            return {v.name for v in c.vars}
        return set().union(*(_binds(x) for x in c.branches))
    if isinstance(c, And):
        return set().union(*(_binds(x) for x in c.clauses))
    return set()


# -- the parser --------------------------------------------------------------------------------


class _Parser:
    """One parse: remembers the raw form of every clause (for error messages), the explicit
    sources and rule calls met in clauses, and whether the clauses read the default source."""

    def __init__(self) -> None:
        self.forms: dict[int, tuple[Any, Any]] = {}  # id(node) -> (node, raw form)
        self.sources: list[tuple[str, Any]] = []
        self.rule_calls: list[Any] = []
        self.reads_source = False

    @staticmethod
    def fail(message: str, form: Any = None) -> NoReturn:
        raise QueryParseError(message, form)

    def form_of(self, node: Any) -> Any:
        entry = self.forms.get(id(node))
        return entry[1] if entry is not None and entry[0] is node else node

    # -- terms, bindings -----------------------------------------------------------------------

    def term(self, x: Any) -> Term:
        if _is_var(x):
            return Var(str(x))
        if _is_placeholder(x):
            return Placeholder()
        return Const(_own(x))

    def fn_arg(self, x: Any, form: Any) -> FnArg:
        if _is_var(x):
            return Var(str(x))
        if _is_src(x):
            self.sources.append((str(x), form))
            return SrcVar(str(x))
        return Const(_own(x))

    def var(self, x: Any, what: str) -> Var:
        if not _is_var(x):
            self.fail(f"Cannot parse {what}, expected symbol starting with ?, got", x)
        return Var(str(x))

    def binding(self, form: Any) -> Binding:
        if _is_var(form):
            return BindScalar(Var(str(form)))
        if _is_placeholder(form):
            return BindIgnore()
        if _is_seq(form):
            if len(form) == 2 and _is_ellipsis(form[1]):
                return BindColl(self.binding(form[0]))
            if len(form) == 1 and _is_seq(form[0]):
                return BindColl(self.bind_tuple(form[0]))
            return self.bind_tuple(form)
        self.fail(
            "Cannot parse binding, expected (bind-scalar | bind-tuple | bind-coll | bind-rel)",
            form,
        )

    def bind_tuple(self, form: Any) -> BindTuple:
        if not _is_seq(form) or len(form) == 0:
            self.fail("Tuple binding cannot be empty", form)
        return BindTuple(tuple(self.binding(x) for x in form))

    def join_vars(self, form: Any, owner: Any) -> tuple[tuple[Var, ...], tuple[Var, ...]]:
        """``[?a ?b]`` or ``[[?req ...] ?other ...]`` (rule heads, ``or-join``):
        ``(required, others)``."""
        if not _is_seq(form):
            self.fail(
                "Cannot parse rule-vars, expected [ variable+ | ([ variable+ ] variable*) ]", owner
            )
        items = list(form)
        req_forms: list[Any] = []
        if items and _is_seq(items[0]):
            req_forms, items = list(items[0]), items[1:]
        required = tuple(self.var(x, "var") for x in req_forms)
        others = tuple(self.var(x, "var") for x in items)
        if not required and not others:
            self.fail(
                "Cannot parse rule-vars, expected [ variable+ | ([ variable+ ] variable*) ]", owner
            )
        if not _distinct([v.name for v in required + others]):
            self.fail("Rule variables should be distinct", owner)
        return required, others

    # -- clauses -------------------------------------------------------------------------------

    def clauses(self, forms: Any, owner: Any) -> tuple[Clause, ...]:
        """A conjunction; ``(and ...)`` items are spliced in."""
        if not _is_seq(forms):
            self.fail("Cannot parse clauses, expected [clause+]", owner)
        out: list[Clause] = []
        for f in forms:
            c = self.clause(f)
            if isinstance(c, And):
                out.extend(c.clauses)
            else:
                out.append(c)
        return tuple(out)

    def clause(self, form: Any) -> Clause:
        if not _is_seq(form):
            self.fail(f"Cannot parse clause, {_CLAUSE_SHAPES}", form)
        items = list(form)
        src: SrcVar | None = None
        if items and _is_src(items[0]):
            src = SrcVar(str(items[0]))
            items = items[1:]
        if not items:
            self.fail("Pattern could not be empty", form)
        head = items[0]
        node: Clause
        if isinstance(head, Symbol) and head in _RESERVED:
            node = self.special(str(head), src, items, form)
        elif _is_plain(head):
            args = items[1:]
            if not args:
                self.fail("rule-expr requires at least one argument", form)
            self.rule_calls.append(form)
            node = RuleCall(src, str(head), tuple(self.term(a) for a in args))
        elif _is_call(head):
            if src is not None:
                self.fail("A predicate or function expression cannot have a source", form)
            fn = str(head[0])
            fargs = tuple(self.fn_arg(a, form) for a in list(head)[1:])
            if len(items) == 1:
                node = Predicate(fn, fargs)
            elif len(items) == 2:
                node = Function(fn, fargs, self.binding(items[1]))
            else:
                self.fail(
                    "Cannot parse clause, expected [(pred arg ...)] or [(fn arg ...) binding]",
                    form,
                )
        else:
            if len(items) > 5:
                self.fail("Pattern has more than 5 terms, expected [src-var? e a v tx added]", form)
            self.reads_source = True
            node = Pattern(src or DEFAULT_SRC, tuple(self.term(t) for t in items))
        if src is not None:
            self.sources.append((src.name, form))
            self.reads_source = True
        self.forms[id(node)] = (node, form)
        return node

    def special(self, name: str, src: SrcVar | None, items: list[Any], form: Any) -> Clause:
        if name == "and":
            if src is not None:
                self.fail("'and' cannot have a source", form)
            if len(items) < 2:
                self.fail("Cannot parse 'and' clause, expected [ 'and' clause+ ]", form)
            return And(self.clauses(items[1:], form))
        if name == "not":
            if len(items) < 2:
                self.fail("Cannot parse 'not' clause, expected [ src-var? 'not' clause+ ]", form)
            body = self.clauses(items[1:], form)
            node = Not(src, None, body)
            if not clause_vars(node):
                self.fail("Join variables should not be empty", form)
            return node
        if name == "not-join":
            if len(items) < 3 or not _is_seq(items[1]):
                self.fail(
                    "Cannot parse 'not-join' clause, expected "
                    "[ src-var? 'not-join' [variable+] clause+ ]",
                    form,
                )
            nvars = tuple(self.var(x, "not-join variable") for x in items[1])
            if not nvars:
                self.fail("Join variables should not be empty", form)
            if not _distinct([v.name for v in nvars]):
                self.fail("Join variables should be distinct", form)
            return Not(src, nvars, self.clauses(items[2:], form))
        if name == "or":
            if len(items) < 2:
                self.fail("Cannot parse 'or' clause, expected [ src-var? 'or' clause+ ]", form)
            node_or = Or(src, None, (), tuple(self.clause(b) for b in items[1:]))
            if not clause_vars(node_or):
                self.fail("Join variables should not be empty", form)
            return node_or
        # or-join
        if len(items) < 3:
            self.fail(
                "Cannot parse 'or-join' clause, expected [ src-var? 'or-join' [variable+] clause+ ]",
                form,
            )
        required, others = self.join_vars(items[1], form)
        return Or(src, required + others, required, tuple(self.clause(b) for b in items[2:]))

    # -- binding checks ------------------------------------------------------------------------

    def check_conjunction(self, clauses: tuple[Clause, ...], outer: frozenset[str]) -> None:
        """Check the clauses of one conjunction, given the variables the outside can bind."""
        binds = [_binds(c) for c in clauses]
        counts = Counter(v for b in binds for v in b)
        scope = outer | frozenset(counts)
        for c, own in zip(clauses, binds, strict=True):
            if isinstance(c, Predicate | Function):
                missing = [v for v in call_vars(c.fn, c.args) if v not in scope]
                if missing:
                    self.fail(
                        f"Insufficient bindings: {_fmt_set(missing)} not bound in",
                        self.form_of(c),
                    )
            elif isinstance(c, Not):
                if c.vars is None:
                    inner = clause_vars(c)
                    if not inner & scope:
                        self.fail(
                            f"Insufficient bindings: none of {_fmt_set(inner)} is bound in",
                            self.form_of(c),
                        )
                    self.check_conjunction(c.clauses, scope)
                else:
                    missing = [v.name for v in c.vars if v.name not in scope]
                    if missing:
                        self.fail(
                            f"Insufficient bindings: {_fmt_set(missing)} not bound in",
                            self.form_of(c),
                        )
                    self.check_conjunction(c.clauses, frozenset(v.name for v in c.vars))
            elif isinstance(c, Or):
                others = outer | frozenset(v for v, n in counts.items() if n - (v in own) > 0)
                self.check_or(c, others)
            elif isinstance(c, And):  # only reachable for hand-built input
                self.check_conjunction(c.clauses, scope)

    def check_or(self, c: Or, others: frozenset[str]) -> None:
        form = self.form_of(c)
        if c.vars is None:
            free = [clause_vars(b) - others for b in c.branches]
            if any(f != free[0] for f in free):
                shown = " ".join(_fmt_set(f) for f in free)
                self.fail(
                    f"All clauses in 'or' must use same set of free vars, had [{shown}] in", form
                )
            for b in c.branches:
                self.check_branch(b, others)
            return
        missing_req = [v.name for v in c.required if v.name not in others]
        if missing_req:
            self.fail(f"Insufficient bindings: {_fmt_set(missing_req)} not bound in", form)
        declared = frozenset(v.name for v in c.vars)
        free_decl = [v.name for v in c.vars if v.name not in others]
        for b in c.branches:
            absent = [v for v in free_decl if v not in clause_vars(b)]
            if absent:
                self.fail(
                    "All clauses in 'or' must use same set of free vars, had "
                    f"{_fmt_set(absent)} not bound in",
                    self.form_of(b),
                )
        for b in c.branches:
            self.check_branch(b, others & declared)

    def check_branch(self, branch: Clause, outer: frozenset[str]) -> None:
        body = branch.clauses if isinstance(branch, And) else (branch,)
        self.check_conjunction(body, outer)

    # -- find ----------------------------------------------------------------------------------

    def find(self, items: list[Any], form: Any) -> FindSpec:
        if not items:
            self.fail(
                "Cannot parse :find, expected (find-rel | find-coll | find-tuple | find-scalar)",
                form,
            )
        if len(items) == 2 and isinstance(items[1], Symbol) and items[1] == ".":
            return FindScalar(self.find_elem(items[0]))
        if len(items) == 1 and _is_seq(items[0]) and not _is_plain_head(items[0]):
            inner = list(items[0])
            if len(inner) == 2 and _is_ellipsis(inner[1]):
                return FindColl(self.find_elem(inner[0]))
            if not inner:
                self.fail("Cannot parse :find, a find tuple cannot be empty", form)
            return FindTuple(tuple(self.find_elem(x) for x in inner))
        return FindRel(tuple(self.find_elem(x) for x in items))

    def find_elem(self, x: Any) -> FindElem:
        if _is_var(x):
            return FindVar(Var(str(x)))
        if _is_plain_head(x):
            items = list(x)
            name = str(items[0])
            if name == "pull":
                return self.pull(items, x)
            if name == "aggregate":
                if len(items) < 3 or not _is_var(items[1]):
                    self.fail(
                        "Cannot parse custom aggregate call, expect (aggregate ?fn fn-arg* ?var)", x
                    )
                return self.aggregate(str(items[1]), items[2:], x)
            if len(items) < 2:
                self.fail("Cannot parse aggregate, expected (aggregate-fn fn-arg* ?var)", x)
            return self.aggregate(name, items[1:], x)
        self.fail(
            "Cannot parse find element, expected (variable | pull-expr | aggregate | "
            "custom-aggregate)",
            x,
        )

    def aggregate(self, fn: str, args: list[Any], form: Any) -> FindAggregate:
        if not _is_var(args[-1]):
            self.fail("The last argument of an aggregate must be a variable", form)
        leading: list[Var | Const] = []
        for a in args[:-1]:
            if _is_var(a):
                leading.append(Var(str(a)))
            elif isinstance(a, Symbol) and not _is_plain(a):
                self.fail(f"Cannot use {a} as an aggregate argument in", form)
            else:
                leading.append(Const(_own(a)))
        return FindAggregate(fn, tuple(leading), Var(str(args[-1])))

    def pull(self, items: list[Any], form: Any) -> FindPull:
        if len(items) not in (3, 4) or (len(items) == 4 and not _is_src(items[1])):
            self.fail(
                "Cannot parse pull expression, expect (pull src-var? variable "
                "(constant | variable | plain-symbol))",
                form,
            )
        src = SrcVar(str(items[1])) if len(items) == 4 else DEFAULT_SRC
        var, pattern = items[-2], items[-1]
        if not _is_var(var):
            self.fail("Cannot parse pull expression, expected a variable to pull", form)
        if len(items) == 4:
            self.sources.append((src.name, form))
        pat: Any
        if _is_var(pattern) or _is_plain(pattern):
            pat = Var(str(pattern))
        elif isinstance(pattern, Symbol):
            self.fail("Cannot parse pull expression, bad pattern", form)
        else:
            pat = _own(pattern)
        return FindPull(src, Var(str(var)), pat)

    # -- the query -----------------------------------------------------------------------------

    def query(self, q: Any) -> Query:
        sec = self.sections(q)
        if "find" not in sec:
            self.fail("Query has no :find", q)
        find = self.find(self.seq_value(sec, "find"), q)
        elements = find_elements(find)

        keys = self.return_map(sec, find, q)

        with_: tuple[Var, ...] = ()
        if "with" in sec:
            wforms = self.seq_value(sec, "with")
            if not all(_is_var(x) for x in wforms):
                self.fail("Cannot parse :with clause, expected [ variable+ ]", wforms)
            with_ = tuple(Var(str(x)) for x in wforms)
            if not _distinct([v.name for v in with_]):
                self.fail("Vars used in :with should be distinct", wforms)

        where = self.clauses(self.seq_value(sec, "where") if "where" in sec else [], q)

        inputs: tuple[InputSpec, ...]
        if "in" in sec:
            inputs = tuple(self.input(x) for x in self.seq_value(sec, "in"))
        else:
            inputs = (DEFAULT_SRC,) if self.reads_source else ()
        in_vars = [v for spec in inputs for v in _input_vars(spec)]
        in_srcs = [s.name for s in inputs if isinstance(s, SrcVar)]
        n_rules = sum(isinstance(s, RulesVar) for s in inputs)
        if not _distinct(in_vars) or not _distinct(in_srcs) or n_rules > 1:
            self.fail("Vars used in :in should be distinct", sec.get("in"))

        unknown_srcs = [name for name, _ in self.sources if name not in in_srcs]
        if unknown_srcs:
            self.fail(
                f"Where uses unknown source vars: {_fmt_vec(dict.fromkeys(unknown_srcs))}",
                next(f for name, f in self.sources if name == unknown_srcs[0]),
            )
        if self.rule_calls and not n_rules:
            self.fail("Missing rules var '%' in :in", self.rule_calls[0])

        self.check_conjunction(where, frozenset(in_vars))
        known = frozenset(in_vars).union(*(_binds(c) for c in where))
        self.check_elements(elements, with_, known)

        order_by = self.order_by(sec, elements, q) if "order-by" in sec else ()
        return Query(
            find=find,
            keys=keys,
            with_=with_,
            inputs=inputs,
            where=where,
            order_by=order_by,
            offset=self.count(sec, "offset"),
            limit=self.count(sec, "limit"),
        )

    def sections(self, q: Any) -> dict[str, Any]:
        """Normalize the vector or map form into ``{section name: value}``."""
        if isinstance(q, dict):
            out: dict[str, Any] = {}
            for k, v in q.items():
                name = _key_name(k)
                if name is None or name not in _QUERY_KEYS:
                    self.fail("Unknown query keyword", k)
                if name in out:
                    self.fail(f"Duplicate query keyword :{name}", q)
                out[name] = v
            return out
        if not _is_seq(q):
            self.fail("Query should be a vector or a map", q)
        parts: dict[str, list[Any]] = {}
        key: str | None = None
        for item in q:
            name = _key_name(item) if isinstance(item, Keyword) or _colon_str(item) else None
            if name is not None and not (key == "order-by" and name in ("asc", "desc")):
                if name not in _QUERY_KEYS:
                    self.fail("Unknown query keyword", item)
                key = name
                parts.setdefault(key, [])
                continue
            if key is None:
                self.fail("Query should start with a keyword such as :find", q)
            parts[key].append(item)
        vec: dict[str, Any] = {}
        for name, values in parts.items():
            if name in ("limit", "offset"):
                if len(values) != 1:
                    self.fail(f":{name} expects one value", values)
                vec[name] = values[0]
            elif name == "order-by" and len(values) == 1 and _is_seq(values[0]):
                vec[name] = values[0]
            else:
                vec[name] = values
        return vec

    def seq_value(self, sec: dict[str, Any], name: str) -> list[Any]:
        v = sec[name]
        if not _is_seq(v):
            self.fail(f":{name} expects a vector", v)
        return list(v)

    def input(self, x: Any) -> InputSpec:
        if _is_src(x):
            return SrcVar(str(x))
        if _is_rules_var(x):
            return RulesVar()
        if _is_plain(x):
            return BindScalar(Var(str(x)))
        if not (_is_var(x) or _is_placeholder(x) or _is_seq(x)):
            self.fail(
                "Cannot parse :in, expected (src-var | % | plain-symbol | bind-scalar | "
                "bind-tuple | bind-coll | bind-rel)",
                x,
            )
        return self.binding(x)

    def return_map(
        self, sec: dict[str, Any], find: FindSpec, q: Any
    ) -> tuple[Literal["keys", "strs", "syms"], tuple[str, ...]] | None:
        present = [k for k in ("keys", "strs", "syms") if k in sec]
        if not present:
            return None
        if len(present) > 1:
            self.fail("Only one of :keys/:syms/:strs must be present", q)
        kind = present[0]
        names = self.seq_value(sec, kind)
        if not names or not all(isinstance(n, str) for n in names):
            self.fail(f"Cannot parse :{kind}, expected symbols", names)
        if isinstance(find, FindScalar):
            self.fail(f":{kind} does not work with single-scalar :find", q)
        if isinstance(find, FindColl):
            self.fail(f":{kind} does not work with collection :find", q)
        if len(names) != len(find_elements(find)):
            self.fail(f"Count of :{kind} must match count of :find", names)
        lit: Literal["keys", "strs", "syms"] = (
            "keys" if kind == "keys" else "strs" if kind == "strs" else "syms"
        )
        return lit, tuple(str(n) for n in names)

    def check_elements(
        self, elements: tuple[FindElem, ...], with_: tuple[Var, ...], known: frozenset[str]
    ) -> None:
        used: list[str] = []
        for el in elements:
            if isinstance(el, FindAggregate):
                if el.fn.startswith("?"):
                    used.append(el.fn)
                used.extend(a.name for a in el.args if isinstance(a, Var))
            if isinstance(el, FindPull) and isinstance(el.pattern, Var):
                used.append(el.pattern.name)
            used.append(el.var.name)
        used.extend(v.name for v in with_)
        unknown = [v for v in dict.fromkeys(used) if v not in known]
        if unknown:
            self.fail("Query for unknown vars", [Symbol(v) for v in unknown])
        find_vars = {el.var.name for el in elements}
        shared = [v.name for v in with_ if v.name in find_vars]
        if shared:
            self.fail(":find and :with should not use same variables", [Symbol(v) for v in shared])

    def order_by(
        self, sec: dict[str, Any], elements: tuple[FindElem, ...], q: Any
    ) -> tuple[tuple[Var, OrderDir], ...]:
        spec = sec["order-by"]
        items = list(spec) if _is_seq(spec) else [spec]
        usage = ":order-by expects [?var :asc|:desc ...] or [[?var :asc|:desc] ...]"
        out: list[tuple[Var, OrderDir]] = []
        i = 0
        while i < len(items):
            x = items[i]
            i += 1
            direction: Any = "asc"
            if _is_var(x):
                var = x
                if i < len(items) and _direction(items[i]) is not None:
                    direction = items[i]
                    i += 1
            elif _is_seq(x) and len(x) in (1, 2) and _is_var(x[0]):
                var = x[0]
                if len(x) == 2:
                    direction = x[1]
            else:
                self.fail(usage, spec)
            d = _direction(direction)
            if d is None:
                self.fail(usage, spec)
            out.append((Var(str(var)), d))
        if not out:
            self.fail(usage, spec)
        orderable = {el.var.name for el in elements if not isinstance(el, FindAggregate)}
        for v, _ in out:
            if v.name not in orderable:
                self.fail(":order-by variable is not in :find", Symbol(v.name))
        if not _distinct([v.name for v, _ in out]):
            self.fail(":order-by variables should be distinct", spec)
        return tuple(out)

    def count(self, sec: dict[str, Any], name: str) -> int | None:
        v = sec.get(name)
        if v is None:
            return None
        if not isinstance(v, int) or isinstance(v, bool):
            self.fail(f":{name} must be an integer", v)
        if v < 0:
            self.fail(f":{name} must not be negative", v)
        return v

    # -- rules ---------------------------------------------------------------------------------

    def rules(self, data: Any) -> Rules:
        if not _is_seq(data):
            self.fail("Rules should be a vector of rule definitions [rule-head clause+]", data)
        grouped: dict[str, list[RuleBranch]] = {}
        for form in data:
            b = self.rule_branch(form)
            grouped.setdefault(b.name, []).append(b)
        for name, branches in grouped.items():
            first = branches[0]
            for b in branches[1:]:
                if (len(b.required), len(b.vars)) != (len(first.required), len(first.vars)):
                    self.fail(
                        f"Arity mismatch for rule '{name}': {_head_text(first)} vs. "
                        f"{_head_text(b)}",
                        Symbol(name),
                    )
        return Rules({name: tuple(bs) for name, bs in grouped.items()})

    def rule_branch(self, form: Any) -> RuleBranch:
        if not _is_seq(form) or not form:
            self.fail("Cannot parse rule, expected [rule-head clause+]", form)
        head = form[0]
        if not _is_seq(head) or not head:
            self.fail("Cannot parse rule head, expected (rule-name rule-vars)", form)
        name = head[0]
        if not _is_plain(name) or name in _RESERVED:
            self.fail("Cannot parse rule name, expected plain-symbol", form)
        required, others = self.join_vars(list(head)[1:], form)
        body = self.clauses(list(form)[1:], form)
        if not body:
            self.fail("Rule branch should have clauses", form)
        self.check_conjunction(body, frozenset(v.name for v in required + others))
        return RuleBranch(str(name), required, others, body)


def _is_plain_head(x: Any) -> bool:
    return _is_seq(x) and len(x) > 0 and _is_plain(x[0])


def _colon_str(x: Any) -> bool:
    return type(x) is str and x.startswith(":") and x[1:] in _QUERY_KEYS


def _key_name(k: Any) -> str | None:
    if isinstance(k, Keyword):
        return str(k)
    if isinstance(k, str) and not isinstance(k, Symbol):
        return k[1:] if k.startswith(":") else k
    return None


def _direction(x: Any) -> OrderDir | None:
    if isinstance(x, str) and not isinstance(x, Symbol):
        d = x[1:] if x.startswith(":") else x
        if d == "asc":
            return "asc"
        if d == "desc":
            return "desc"
    return None


def _head_text(b: RuleBranch) -> str:
    names = [v.name for v in b.vars]
    if b.required:
        return _fmt_vec([_fmt_vec(v.name for v in b.required), *names])
    return _fmt_vec(names)


# -- caching -----------------------------------------------------------------------------------

T = TypeVar("T")


class _LRU(Generic[T]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> T | None:
        with self._lock:
            try:
                value = self._data.get(key)
                if value is not None:
                    self._data.move_to_end(key)
            except Exception:  # a user object whose __eq__ raises: treat as a miss
                return None
            return value

    def put(self, key: Hashable, value: T) -> None:
        with self._lock:
            try:
                self._data[key] = value
                self._data.move_to_end(key)
            except Exception:
                return
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


_QUERIES: _LRU[Query] = _LRU(CACHE_SIZE)
_RULES: _LRU[Rules] = _LRU(CACHE_SIZE)
_CALLS: _LRU[bool] = _LRU(CACHE_SIZE)  # query text -> whether it is a {:query ...} call map


def _freeze(x: Any) -> Hashable:
    """A hashable key that tells apart everything the parser tells apart (``Keyword("a")``,
    ``Symbol("a")`` and ``"a"``; ``1``, ``1.0`` and ``True``; list and tuple)."""
    if isinstance(x, list):
        return ("L", tuple(_freeze(i) for i in x))
    if isinstance(x, tuple):
        return ("T", tuple(_freeze(i) for i in x))
    if isinstance(x, dict):
        return ("D", tuple((_freeze(k), _freeze(v)) for k, v in x.items()))
    if isinstance(x, set | frozenset):
        return ("S", frozenset(_freeze(i) for i in x))
    if isinstance(x, float):
        return (float, x.hex())
    if isinstance(x, Decimal):
        return (Decimal, str(x))
    hash(x)  # raises TypeError for an unhashable value: no cache key
    return (type(x), x)


def _cache_key(x: Any) -> Hashable | None:
    if type(x) is str:
        return ("text", x)
    try:
        return ("data", _freeze(x))
    except Exception:  # unhashable, too deep, or a user object whose __hash__ raises
        return None


def _guard(what: str, data: Any, fn: Callable[[], T]) -> T:
    """Run a parse, turning anything but a QueryParseError into one."""
    try:
        return fn()
    except QueryParseError:
        raise
    except RecursionError:
        raise QueryParseError(f"{what} is nested too deeply", None) from None
    except Exception as exc:
        raise QueryParseError(f"Cannot parse {what} ({type(exc).__name__}: {exc})", data) from exc


# -- public ------------------------------------------------------------------------------------


def parse_query(q: Any) -> Query:
    """Parse a query (EDN text, or the vector or map form as Python data) into a
    :class:`~query.ast.Query`. A ``Query`` is returned as is. Results are cached.

    Raises :class:`~query.errors.QueryParseError` for a malformed query and
    :class:`~query.edn.EDNError` for text that is not valid EDN."""
    if isinstance(q, Query):
        return q
    key = _cache_key(q)
    if key is not None:
        hit = _QUERIES.get(key)
        if hit is not None:
            return hit
    data = loads(q) if type(q) is str else q
    parsed: Query = _guard("query", data, lambda: _Parser().query(data))
    if key is not None:
        _QUERIES.put(key, parsed)
    return parsed


_CALL_KEYS = ("query", "args", "offset", "limit")


def query_call(q: Any) -> tuple[Any, list[Any] | None, dict[str, int]] | None:
    """The Datomic / Datahike map form of a query *call*, ``{:query q :args [...] :offset n
    :limit n}`` (EDN text, or a Python dict whose keys are keywords or plain strings such as
    ``{"query": ..., "args": [...]}``): ``(q, args or None, {"offset"/"limit": n})``. None for
    anything else (a query in vector or map form has no ``:query`` key).

    Raises :class:`~query.errors.QueryParseError` for an unknown key, ``:args`` that is not a
    vector, or an ``:offset`` / ``:limit`` that is not a non-negative integer."""
    if type(q) is str:
        if not q.lstrip().startswith("{"):
            return None
        if _CALLS.get(q) is False:  # a query in map form, known not to be a call
            return None
        got = _query_call(loads(q))
        _CALLS.put(q, got is not None)
        return got
    return _query_call(q)


def _query_call(data: Any) -> tuple[Any, list[Any] | None, dict[str, int]] | None:
    if not isinstance(data, dict):
        return None
    names = [_key_name(k) for k in data]
    if "query" not in names:
        return None
    found: dict[str, Any] = {}
    for (k, v), name in zip(data.items(), names, strict=True):
        if name not in _CALL_KEYS:
            raise QueryParseError(
                "Unknown key in a query map, expected :query, :args, :offset or :limit", k
            )
        if name in found:
            raise QueryParseError(f"Duplicate key :{name} in a query map", data)
        found[name] = v
    args = found.get("args")
    if args is not None and not _is_seq(args):
        raise QueryParseError(":args of a query map must be a vector of inputs", args)
    extras: dict[str, int] = {}
    for name in ("offset", "limit"):
        if found.get(name) is not None:
            n = _Parser().count(found, name)
            assert n is not None
            extras[name] = n
    return found["query"], None if args is None else list(args), extras


def parse_rules(r: Any) -> Rules:
    """Parse a rule set (EDN text, or a list of ``[(name [?req ...] ?var ...) clause ...]``
    definitions as Python data) into :class:`~query.ast.Rules`. A ``Rules`` is returned as is.
    Results are cached.

    Raises :class:`~query.errors.QueryParseError` for malformed rules and
    :class:`~query.edn.EDNError` for text that is not valid EDN."""
    if isinstance(r, Rules):
        return r
    key = _cache_key(r)
    if key is not None:
        hit = _RULES.get(key)
        if hit is not None:
            return hit
    data = loads(r) if type(r) is str else r
    parsed: Rules = _guard("rules", data, lambda: _Parser().rules(data))
    if key is not None:
        _RULES.put(key, parsed)
    return parsed
