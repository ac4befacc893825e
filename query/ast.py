"""The parsed form of a Datalog query: frozen dataclasses (DESIGN.md section 6).

:func:`query.parser.parse_query` turns an EDN string or the equivalent Python data (vector or
map form) into a :class:`Query`; the planner and evaluator only ever see these classes. Names
follow the Datomic grammar (https://docs.datomic.com/query/query-data-reference.html).

Attribute idents and keywords are kept as given (``Keyword`` is a ``str``); variable names keep
their ``?`` (``Var("?e")``), source names their ``$`` (``SrcVar("$")``, ``SrcVar("$hist")``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

# -- terms -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Var:
    """A logic variable ``?name``."""

    name: str


@dataclass(frozen=True, slots=True)
class Placeholder:
    """``_``: matches anything, binds nothing."""


@dataclass(frozen=True, slots=True)
class Const:
    """A constant: a scalar, a keyword, a lookup ref (a 2-item list/tuple ``[attr value]``)
    or any other EDN value. ``value`` is the Python value exactly as read."""

    value: Any


@dataclass(frozen=True, slots=True)
class SrcVar:
    """A data source: ``$`` (the default) or ``$name``."""

    name: str


@dataclass(frozen=True, slots=True)
class RulesVar:
    """``%``: the rule set input."""


DEFAULT_SRC = SrcVar("$")

Term: TypeAlias = Var | Placeholder | Const
"""A position of a data pattern or a rule call argument."""

FnArg: TypeAlias = Var | Const | SrcVar
"""An argument of a predicate or function expression."""

# -- bindings (of :in inputs and function results) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class BindScalar:
    """``?x``"""

    var: Var


@dataclass(frozen=True, slots=True)
class BindIgnore:
    """``_`` inside a tuple binding."""


@dataclass(frozen=True, slots=True)
class BindTuple:
    """``[?a ?b]`` (each item a binding; ``_`` skips a position)."""

    items: tuple[Binding, ...]


@dataclass(frozen=True, slots=True)
class BindColl:
    """``[?x ...]``; a relation ``[[?a ?b]]`` is ``BindColl(BindTuple(...))``."""

    item: Binding


Binding: TypeAlias = BindScalar | BindIgnore | BindTuple | BindColl

InputSpec: TypeAlias = SrcVar | RulesVar | Binding
"""One item of ``:in``."""

# -- find spec ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FindVar:
    var: Var


@dataclass(frozen=True, slots=True)
class FindAggregate:
    """``(count ?x)``, ``(max 3 ?x)``, ``(count-distinct ?x)``, ``(my-agg ?x)``: ``args`` are the
    leading constant or input-variable arguments (``(max ?n ?x)`` has ``args == (Var("?n"),)``),
    ``var`` the aggregated variable (always last)."""

    fn: str
    args: tuple[Var | Const, ...]
    var: Var


@dataclass(frozen=True, slots=True)
class FindPull:
    """``(pull ?e pattern)`` or ``(pull $src ?e pattern)``; ``pattern`` is either the raw
    pattern data (list, as read) or a ``Var`` naming an ``:in`` input holding the pattern."""

    src: SrcVar
    var: Var
    pattern: Any


FindElem: TypeAlias = FindVar | FindAggregate | FindPull


@dataclass(frozen=True, slots=True)
class FindRel:
    """``:find ?a ?b`` -> a set of tuples."""

    elements: tuple[FindElem, ...]


@dataclass(frozen=True, slots=True)
class FindColl:
    """``:find [?a ...]`` -> a list of values."""

    element: FindElem


@dataclass(frozen=True, slots=True)
class FindScalar:
    """``:find ?a .`` -> one value or None."""

    element: FindElem


@dataclass(frozen=True, slots=True)
class FindTuple:
    """``:find [?a ?b]`` -> one tuple or None."""

    elements: tuple[FindElem, ...]


FindSpec: TypeAlias = FindRel | FindColl | FindScalar | FindTuple

# -- clauses -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pattern:
    """``[$src? e a v tx added]`` with 1 to 5 terms (missing trailing terms are ``_``)."""

    src: SrcVar
    terms: tuple[Term, ...]


@dataclass(frozen=True, slots=True)
class Predicate:
    """``[(pred arg ...)]``: keeps the rows for which ``pred`` is truthy."""

    fn: str
    args: tuple[FnArg, ...]


@dataclass(frozen=True, slots=True)
class Function:
    """``[(fn arg ...) binding]``: binds the result (a None result drops the row)."""

    fn: str
    args: tuple[FnArg, ...]
    binding: Binding


@dataclass(frozen=True, slots=True)
class RuleCall:
    """``($src? rule-name arg ...)``; ``src`` is None when no source was written."""

    src: SrcVar | None
    name: str
    args: tuple[Term, ...]


@dataclass(frozen=True, slots=True)
class And:
    """``(and clause ...)`` (only inside ``or`` / ``or-join``)."""

    clauses: tuple[Clause, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """``($src? not clause ...)``; ``vars`` is None for ``not`` (joins on every variable it
    shares with the outside) and the declared join variables for ``not-join``."""

    src: SrcVar | None
    vars: tuple[Var, ...] | None
    clauses: tuple[Clause, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """``($src? or branch ...)`` / ``($src? or-join [[req ...] other ...] branch ...)``.

    Each branch is one clause or an :class:`And`. ``vars`` is None for plain ``or`` (every
    branch must use the same variables); for ``or-join`` it is all declared variables and
    ``required`` the ones in the inner brackets (must be bound before the clause runs)."""

    src: SrcVar | None
    vars: tuple[Var, ...] | None
    required: tuple[Var, ...]
    branches: tuple[Clause, ...]


Clause: TypeAlias = Pattern | Predicate | Function | RuleCall | And | Not | Or

# -- rules -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleBranch:
    """One definition ``[(name [?req ...] ?x ...) clause ...]``: ``required`` are the
    variables in the bracketed group (must be bound by the caller), ``vars`` the others."""

    name: str
    required: tuple[Var, ...]
    vars: tuple[Var, ...]
    clauses: tuple[Clause, ...]

    @property
    def head(self) -> tuple[Var, ...]:
        return self.required + self.vars


@dataclass(frozen=True, slots=True)
class Rules:
    """A parsed rule set: branches grouped by rule name (in order of first definition)."""

    rules: dict[str, tuple[RuleBranch, ...]]

    def __hash__(self) -> int:  # dict field: hash by content
        return hash(tuple(self.rules.items()))


# -- the query ---------------------------------------------------------------------------------

OrderDir: TypeAlias = Literal["asc", "desc"]


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query.

    ``keys`` is None or ``(kind, names)`` with kind ``"keys"``, ``"strs"`` or ``"syms"``
    (results become dicts). Without ``:in``, ``inputs`` is ``(SrcVar("$"),)`` when a clause reads
    a source, else ``()`` (as in DataScript). ``order_by`` items are
    ``(find var, direction)``; ``offset``/``limit`` are None when absent.
    """

    find: FindSpec
    keys: tuple[Literal["keys", "strs", "syms"], tuple[str, ...]] | None
    with_: tuple[Var, ...]
    inputs: tuple[InputSpec, ...]
    where: tuple[Clause, ...]
    order_by: tuple[tuple[Var, OrderDir], ...] = ()
    offset: int | None = None
    limit: int | None = None


# -- variables of forms (shared by the parser's checks and the planner) ------------------------


def term_vars(terms: Iterable[Any]) -> list[str]:
    """Names of the variables among ``terms``, in order."""
    return [t.name for t in terms if isinstance(t, Var)]


def binding_vars(b: Binding) -> list[str]:
    """Names of the variables a binding form binds, in order."""
    if isinstance(b, BindScalar):
        return [b.var.name]
    if isinstance(b, BindTuple):
        return [v for item in b.items for v in binding_vars(item)]
    if isinstance(b, BindColl):
        return binding_vars(b.item)
    return []


def call_vars(fn: str, args: tuple[FnArg, ...]) -> list[str]:
    """Variables a predicate or function needs bound: its arguments, and the function itself
    when it is held in a variable (``[(?f ?x)]``)."""
    return ([fn] if fn.startswith("?") else []) + term_vars(args)


def clause_vars(c: Clause) -> set[str]:
    """Every variable a clause mentions, as DataScript's ``collect-vars`` counts them: a ``not``
    counts its inner variables (``not-join`` and ``or-join`` only their declared ones)."""
    if isinstance(c, Pattern):
        return set(term_vars(c.terms))
    if isinstance(c, Predicate):
        return set(call_vars(c.fn, c.args))
    if isinstance(c, Function):
        return set(call_vars(c.fn, c.args)) | set(binding_vars(c.binding))
    if isinstance(c, RuleCall):
        return set(term_vars(c.args))
    if isinstance(c, Not):
        if c.vars is not None:
            return {v.name for v in c.vars}
        return set().union(*(clause_vars(x) for x in c.clauses))
    if isinstance(c, Or):
        if c.vars is not None:
            return {v.name for v in c.vars}
        return set().union(*(clause_vars(x) for x in c.branches))
    return set().union(*(clause_vars(x) for x in c.clauses))


def find_elements(find: FindSpec) -> tuple[FindElem, ...]:
    """The elements of a find spec, whatever its shape."""
    if isinstance(find, FindRel | FindTuple):
        return find.elements
    return (find.element,)


__all__ = [
    "DEFAULT_SRC",
    "And",
    "BindColl",
    "BindIgnore",
    "BindScalar",
    "BindTuple",
    "Binding",
    "Clause",
    "Const",
    "FindAggregate",
    "FindColl",
    "FindElem",
    "FindPull",
    "FindRel",
    "FindScalar",
    "FindSpec",
    "FindTuple",
    "FindVar",
    "FnArg",
    "Function",
    "InputSpec",
    "Not",
    "Or",
    "Pattern",
    "Placeholder",
    "Predicate",
    "Query",
    "RuleBranch",
    "RuleCall",
    "Rules",
    "RulesVar",
    "SrcVar",
    "Term",
    "Var",
    "binding_vars",
    "call_vars",
    "clause_vars",
    "find_elements",
    "term_vars",
]
