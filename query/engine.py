"""The Datalog evaluator: plan, then hash-join relations (DESIGN.md section 6).

A query runs against a *context*: the inputs bound by ``:in`` (sources, the rule set, and
relations for the bound variables) and a list of relations, each a set of variables and a list
of row tuples. Variables that have met in a clause live in the same relation; relations that
never share a variable stay apart until the find spec needs them together (DataScript's
approach, which avoids building Cartesian products early).

Clauses of a conjunction are not run in the written order. At each step the planner picks,
from the clauses whose inputs are bound:

1. predicates and function expressions (cheap filters first);
2. ``not`` / ``not-join`` whose variables are bound;
3. the data pattern with the smallest estimated result, where the estimate comes from the
   index (subtree counts, O(log n)) for the pattern's constants, or from the number of distinct
   values of a bound variable in the entity (or value) position, whichever is cheaper: a bound
   entity variable reads only those entities' datoms (``search_es``), a bound value variable
   only those values (AVET);
4. ``or`` / ``or-join`` and rule calls.

A range predicate on the value of a pattern whose attribute is constant (``[?e :age ?a]
[(> ?a 30)]``) turns that pattern into an AVET range scan. Everything else is plain
synchronous Python: the evaluator awaits only at the source's index seeks.

Rules: a rule that does not call itself (directly or through others) is expanded in place like
an ``or-join``. A recursive rule called with bound arguments is evaluated top down from their
values (magic-set style, ``Evaluator._demand_fixpoint``), so its body may use what only the
caller binds; called with nothing bound, it is computed bottom up. Both iterate semi-naively
(each round joins only the facts new in the previous round) to a fixpoint, then join the
result with the call.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cmp_to_key
from operator import itemgetter
from typing import Any

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
    FindScalar,
    FindTuple,
    Function,
    Not,
    Or,
    Pattern,
    Placeholder,
    Predicate,
    Query,
    RuleBranch,
    RuleCall,
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
from query.errors import InsufficientBindings, QueryError
from query.gcpause import gc_paused
from query.source import DatomSource, datom_source_of

__all__ = ["Plan", "explain", "q"]

Row = tuple[Any, ...]

# -- relations ---------------------------------------------------------------------------------


class Rel:
    """Rows over named variables. ``rows`` may hold duplicates only transiently."""

    __slots__ = ("rows", "vars")

    def __init__(self, vars: tuple[str, ...], rows: list[Row]) -> None:
        self.vars = vars
        self.rows = rows

    def __repr__(self) -> str:
        return f"Rel({self.vars}, {len(self.rows)} rows)"

    def col(self, var: str) -> int:
        return self.vars.index(var)

    def project(self, vars: Sequence[str]) -> list[Row]:
        idx = [self.vars.index(v) for v in vars]
        if idx == list(range(len(self.vars))):
            return self.rows
        if len(idx) == 1:
            i = idx[0]
            return [(r[i],) for r in self.rows]
        get = itemgetter(*idx)
        return [get(r) for r in self.rows] if idx else [() for _ in self.rows]

    def distinct(self, var: str) -> set[Any]:
        i = self.vars.index(var)
        return {r[i] for r in self.rows}


def _getter(idx: Sequence[int]) -> Callable[[Row], Row]:
    if not idx:
        return lambda r: ()
    if len(idx) == 1:
        i = idx[0]
        return lambda r: (r[i],)
    return itemgetter(*idx)


def join(a: Rel, b: Rel) -> Rel:
    """Natural hash join (a Cartesian product when no variable is shared)."""
    common = [v for v in a.vars if v in b.vars]
    extra = [i for i, v in enumerate(b.vars) if v not in a.vars]
    out_vars = a.vars + tuple(b.vars[i] for i in extra)
    if not common:
        return Rel(out_vars, [ra + tuple(rb[i] for i in extra) for ra in a.rows for rb in b.rows])
    if len(common) == 1:
        return _join1(a, b, a.vars.index(common[0]), b.vars.index(common[0]), extra, out_vars)
    if len(a.rows) > len(b.rows):  # build on the smaller side
        build, probe, build_is_a = b, a, False
    else:
        build, probe, build_is_a = a, b, True
    bkey = _getter([build.vars.index(v) for v in common])
    pkey = _getter([probe.vars.index(v) for v in common])
    table: dict[Row, list[Row]] = {}
    for r in build.rows:
        k = bkey(r)
        got = table.get(k)
        if got is None:
            table[k] = [r]
        else:
            got.append(r)
    rows: list[Row] = []
    add = rows.append
    if build_is_a:
        if extra:
            xget = _getter(extra)
            for rb in probe.rows:
                match = table.get(pkey(rb))
                if match:
                    x = xget(rb)
                    for ra in match:
                        add(ra + x)
        else:
            seen: set[Row] = set()
            for rb in probe.rows:
                k = pkey(rb)
                if k in table and k not in seen:
                    seen.add(k)
                    rows.extend(table[k])
    else:
        xget = _getter(extra)
        for ra in probe.rows:
            match = table.get(pkey(ra))
            if match:
                for rb in match:
                    add(ra + xget(rb))
    return Rel(out_vars, rows)


def _join1(a: Rel, b: Rel, ia: int, ib: int, extra: list[int], out_vars: tuple[str, ...]) -> Rel:
    """``join`` on one shared variable (the common case), without key tuples."""
    rows: list[Row] = []
    add = rows.append
    if not extra:  # every variable of b is in a: keep a's rows that b has
        keys = {rb[ib] for rb in b.rows}
        return Rel(out_vars, [ra for ra in a.rows if ra[ia] in keys])
    single = len(extra) == 1
    x = extra[0]
    xget = _getter(extra)
    if len(b.rows) <= len(a.rows):
        table: dict[Any, list[Any]] = {}
        for rb in b.rows:
            k = rb[ib]
            val = (rb[x],) if single else xget(rb)
            got = table.get(k)
            if got is None:
                table[k] = [val]
            else:
                got.append(val)
        for ra in a.rows:
            match = table.get(ra[ia])
            if match is not None:
                for val in match:
                    add(ra + val)
    else:
        atable: dict[Any, list[Row]] = {}
        for ra in a.rows:
            k = ra[ia]
            got = atable.get(k)
            if got is None:
                atable[k] = [ra]
            else:
                got.append(ra)
        for rb in b.rows:
            amatch = atable.get(rb[ib])
            if amatch is not None:
                val = (rb[x],) if single else xget(rb)
                for ra in amatch:
                    add(ra + val)
    return Rel(out_vars, rows)


# -- sources -----------------------------------------------------------------------------------


def _is_collection(x: Any) -> bool:
    return isinstance(x, list | tuple | set | frozenset)


def _coll_rows(coll: Any, n: int, consts: dict[int, Any]) -> list[Row]:
    """Tuples of a collection source matching a pattern of ``n`` terms."""
    out: list[Row] = []
    for t in coll:
        if not isinstance(t, list | tuple):
            raise QueryError("a collection source must hold tuples", t)
        if len(t) < n:
            continue
        if all(t[i] == c for i, c in consts.items()):
            out.append(tuple(t))
    return out


# -- context -----------------------------------------------------------------------------------


@dataclass
class Stats:
    """What the evaluator did, for ``explain`` and ``q(..., stats=...)``."""

    steps: list[dict[str, Any]] = field(default_factory=list)

    def add(self, **kw: Any) -> None:
        self.steps.append(kw)


class Ctx:
    __slots__ = (
        "default",
        "demand",
        "depth",
        "eid_vars",
        "estimates",
        "fresh",
        "rels",
        "rule_rels",
        "rules",
        "sources",
        "stats",
    )

    def __init__(
        self,
        sources: dict[str, Any],
        rules: Mapping[str, tuple[RuleBranch, ...]],
        stats: Stats | None,
        fresh: itertools.count[int],
    ) -> None:
        self.sources = sources
        self.rules = rules
        self.rels: list[Rel] = []
        self.stats = stats
        self.depth = 0
        self.rule_rels: dict[str, Rel] = {}  # recursive rule name -> relation in use
        self.fresh = fresh
        self.eid_vars: set[str] = set()  # variables known to hold entity ids
        self.default = "$"
        # index estimates of the query's patterns, shared by every sub-evaluation
        self.estimates: dict[tuple[Any, ...], int] = {}
        # inside a demand-driven evaluation of a recursive group: its state, and the id of
        # the call clause that reads only the facts new in the last round (or None)
        self.demand: tuple[_Demand, int | None] | None = None

    def child(self) -> Ctx:
        c = Ctx(self.sources, self.rules, self.stats, self.fresh)
        c.depth = self.depth + 1
        c.default = self.default
        c.rule_rels = self.rule_rels
        c.demand = self.demand  # a recursive call inside or / and reads the same state
        c.estimates = self.estimates
        return c

    def bound(self) -> set[str]:
        return {v for r in self.rels for v in r.vars}

    def rel_of(self, var: str) -> Rel | None:
        for r in self.rels:
            if var in r.vars:
                return r
        return None

    def add(self, rel: Rel) -> None:
        """Join ``rel`` into the context, merging relations that share variables."""
        keep = []
        for r in self.rels:
            if any(v in rel.vars for v in r.vars):
                rel = join(r, rel)
            else:
                keep.append(r)
        keep.append(rel)
        self.rels = keep

    def collapse(self, vars: Iterable[str]) -> Rel:
        """One relation holding all of ``vars`` (joining, or multiplying, as needed)."""
        want = set(vars)
        hit = [r for r in self.rels if want & set(r.vars)]
        rest = [r for r in self.rels if not (want & set(r.vars))]
        if not hit:
            rel = Rel((), [()])
        else:
            rel = hit[0]
            for r in hit[1:]:
                rel = join(rel, r)
        self.rels = [*rest, rel]
        return rel

    def is_empty(self) -> bool:
        return any(not r.rows for r in self.rels)

    def source(self, src: SrcVar | None) -> Any:
        # a pattern without a source reads the default one, which ($2 not ...) / ($2 or ...)
        # change for their clauses; an explicitly written $ still means the query's $
        name = self.default if src is None or src is DEFAULT_SRC else src.name
        try:
            return self.sources[name]
        except KeyError:
            raise QueryError("unknown data source (not in :in)", Var(name)) from None


# -- clause variables --------------------------------------------------------------------------


def _inputs_of(c: Clause) -> set[str]:
    """Variables that must be bound before a predicate/function runs."""
    if isinstance(c, Predicate | Function):
        return set(call_vars(c.fn, c.args))
    return set()


# -- bindings ----------------------------------------------------------------------------------


def bind_value(b: Binding, value: Any, form: Any) -> Rel:
    """A relation from binding ``value`` to the binding form ``b``."""
    if isinstance(b, BindScalar):
        if isinstance(value, list):  # a lookup ref or vector: rows must be hashable
            value = tuple(value)
        return Rel((b.var.name,), [(value,)])
    if isinstance(b, BindIgnore):
        return Rel((), [()])
    if isinstance(b, BindTuple):
        if not isinstance(value, list | tuple):
            raise QueryError("Cannot bind value to a tuple form (not a sequence)", value)
        if len(value) < len(b.items):
            raise QueryError(
                f"Cannot bind value: not enough elements for {len(b.items)} variables", value
            )
        rel = Rel((), [()])
        for item, v in zip(b.items, value, strict=False):
            rel = join(rel, bind_value(item, v, form))
        return rel
    if isinstance(b, BindColl):
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
            raise QueryError("Cannot bind value to a collection form (not a collection)", value)
        vars_ = tuple(dict.fromkeys(binding_vars(b.item)))
        rows: list[Row] = []
        for item in value:
            sub = bind_value(b.item, item, form)
            rows.extend(sub.project(vars_))
        return Rel(vars_, rows)
    raise QueryError("unknown binding form", form)


# -- evaluation --------------------------------------------------------------------------------

_NONE = object()  # "no single value"
_RANGE_OPS = {"<": ("hi", False), "<=": ("hi", True), ">": ("lo", False), ">=": ("lo", True)}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_RANGE_TYPES = {
    "db.type/long": int,
    "db.type/bigint": int,
    "db.type/string": str,
    "db.type/double": float,
}


class Evaluator:
    """Runs the clauses of one conjunction in a context."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.last_how = ""
        self.last_estimate: float | None = None
        self._estimates = ctx.estimates

    async def run(self, clauses: Sequence[Clause], keep: Iterable[str] | None = None) -> None:
        """Run ``clauses``. With ``keep`` (the variables the caller needs afterwards), a
        variable that no remaining clause mentions is projected away as soon as it is dead, and
        the rows deduplicated (relations are sets)."""
        ctx = self.ctx
        pending = list(clauses)
        keep_set = None if keep is None else set(keep)
        while pending:
            if ctx.is_empty():
                # no rows: the result is empty whatever remains (still check the clauses)
                for c in pending:
                    self._check_resolvable(c)
                return
            bound = ctx.bound()
            clause = await self._pick(pending, bound)
            pending.remove(clause)
            await self.step(clause, pending)
            if keep_set is not None:
                self._project_dead(keep_set, pending)

    def _project_dead(self, keep: set[str], pending: list[Clause]) -> None:
        ctx = self.ctx
        if not any(v not in keep for r in ctx.rels for v in r.vars):
            return
        live = keep.union(*(clause_vars(c) for c in pending))
        rels = []
        for r in ctx.rels:
            if all(v in live for v in r.vars):
                rels.append(r)
                continue
            vars_ = tuple(v for v in r.vars if v in live)
            if not vars_:
                rels.append(Rel((), [()] if r.rows else []))
            else:
                rels.append(Rel(vars_, _distinct(r.project(vars_))))
        ctx.rels = rels

    def _check_resolvable(self, c: Clause) -> None:
        if isinstance(c, Predicate | Function):
            from query.builtins import DB_FUNCTIONS, resolve_function

            if c.fn not in DB_FUNCTIONS and c.fn != "q" and not c.fn.startswith("?"):
                resolve_function(c.fn)
        elif isinstance(c, RuleCall) and c.name not in self.ctx.rules:
            raise QueryError("unknown rule", c.name)

    async def _pick(self, pending: list[Clause], bound: set[str]) -> Clause:
        others_vars: dict[int, set[str]] = {}

        def others(i: int) -> set[str]:
            if i not in others_vars:
                others_vars[i] = set().union(
                    *(clause_vars(c) for j, c in enumerate(pending) if j != i)
                )
            return others_vars[i]

        # 1. filters and functions whose inputs are bound
        for c in pending:
            if isinstance(c, Predicate) and _inputs_of(c) <= bound:
                return c
        for c in pending:
            if isinstance(c, Function) and _inputs_of(c) <= bound:
                return c
        # 2. not whose joined variables are bound
        for i, c in enumerate(pending):
            if isinstance(c, Not):
                vs = clause_vars(c)
                if c.vars is not None:
                    if vs <= bound:
                        return c
                elif (vs & others(i)) <= bound:
                    return c
        # 3. the cheapest pattern
        best: tuple[float, int] | None = None
        best_clause: Clause | None = None
        for i, c in enumerate(pending):
            if isinstance(c, Pattern):
                cost = await self._cost(c, bound)
                if best is None or (cost, i) < best:
                    best, best_clause = (cost, i), c
        if best_clause is not None and best is not None:
            self.last_estimate = best[0]
            return best_clause
        # 4. or / rule calls with their required variables bound
        for c in pending:
            if isinstance(c, Or) and {v.name for v in c.required} <= bound:
                return c
            if isinstance(c, RuleCall) and self._call_ready(c, bound):
                return c
        for c in pending:
            if isinstance(c, And):
                return c
        # nothing can run: say what is missing
        c = pending[0]
        for c in pending:
            missing = sorted((_inputs_of(c) or clause_vars(c)) - bound)
            if isinstance(c, Or):
                missing = sorted({v.name for v in c.required} - bound)
            if isinstance(c, Not) and c.vars is not None:
                missing = sorted(clause_vars(c) - bound)
            if missing:
                raise InsufficientBindings(
                    f"Insufficient bindings: {', '.join(missing)} not bound in", c
                )
        raise QueryError("cannot evaluate clause", c)

    def _call_ready(self, c: RuleCall, bound: set[str]) -> bool:
        """Whether the rule's required (bracketed) arguments are bound or constant."""
        branches = self.ctx.rules.get(c.name)
        if not branches:
            return True  # let the call report the unknown rule
        need = c.args[: len(branches[0].required)]
        return all(not isinstance(t, Var) or t.name in bound for t in need)

    # -- cost ------------------------------------------------------------------------------

    async def _estimate(self, src: DatomSource, e: Any, a: Any, v: Any) -> int:
        key = (id(src), e, a, v if not isinstance(v, list) else tuple(v))
        try:
            return self._estimates[key]
        except (KeyError, TypeError):
            pass
        try:
            n = await src.estimate(e, a, v)
        except (QueryError, TypeError):
            n = 1 << 30
        try:
            self._estimates[key] = n
        except TypeError:
            pass
        return n

    async def _cost(self, c: Pattern, bound: set[str]) -> float:
        src = self.ctx.source(c.src)
        if _is_collection(src):
            return float(len(src)) if hasattr(src, "__len__") else 1e9
        terms = list(c.terms) + [Placeholder()] * (5 - len(c.terms))
        e, a, v = terms[0], terms[1], terms[2]
        ec = e.value if isinstance(e, Const) else None
        ac = a.value if isinstance(a, Const) else None
        vc = v.value if isinstance(v, Const) else None
        if ec is not None and not isinstance(ec, int):
            return 1.0  # a lookup ref or ident names one entity
        base = await self._estimate(src, ec, ac, vc if not isinstance(vc, list | tuple) else None)
        cost = float(base)
        if isinstance(ac, str):
            if isinstance(e, Var) and e.name in bound and ec is None:
                rel = self.ctx.rel_of(e.name)
                k = len(rel.rows) if rel is not None else 0
                cost = min(cost, k * 1.5 + 1)
            if isinstance(v, Var) and v.name in bound:
                rel = self.ctx.rel_of(v.name)
                k = len(rel.rows) if rel is not None else 0
                cost = min(cost, k * 4.0 + 1)
        if not any(isinstance(t, Var) and t.name in bound for t in terms) and bound:
            cost *= 1.2  # prefer clauses connected to what is bound
        return cost

    # -- steps -----------------------------------------------------------------------------

    async def step(self, c: Clause, pending: list[Clause]) -> None:
        self.last_how = ""
        estimate, self.last_estimate = self.last_estimate, None
        if isinstance(c, Pattern):
            await self.pattern(c, pending)
        elif isinstance(c, Predicate):
            await self.predicate(c)
        elif isinstance(c, Function):
            await self.function(c)
        elif isinstance(c, Not):
            await self.not_(c)
        elif isinstance(c, Or):
            await self.or_(c)
        elif isinstance(c, And):
            await self.run(c.clauses)
        elif isinstance(c, RuleCall):
            await self.rule_call(c)
        else:
            raise QueryError("unknown clause", c)
        stats = self.ctx.stats
        if stats is not None:
            rows = sum(len(r.rows) for r in self.ctx.rels)
            stats.add(
                clause=c,
                depth=self.ctx.depth,
                estimate=estimate,
                how=self.last_how,
                rows_after=rows,
            )

    async def _resolve_e(self, src: DatomSource, x: Any) -> int | None:
        if isinstance(x, int) and not isinstance(x, bool):
            return x
        if x is None:
            return None
        return await src.entid(x)

    async def pattern(self, c: Pattern, pending: list[Clause]) -> None:
        ctx = self.ctx
        src = ctx.source(c.src)
        terms = c.terms
        n = len(terms)
        bound = ctx.bound()
        if _is_collection(src):
            if not _is_collection(src):
                raise QueryError("a data source must be a database or a collection", c)
            consts = {i: t.value for i, t in enumerate(terms) if isinstance(t, Const)}
            for i, t in enumerate(terms):
                if isinstance(t, Var) and t.name in bound:
                    rel = ctx.rel_of(t.name)
                    if rel is not None and len(rel.distinct(t.name)) == 1:
                        consts[i] = rel.rows[0][rel.col(t.name)]
            ctx.add(_pattern_rel(terms, _coll_rows(src, n, consts)))
            return
        # bound entity positions holding lookup refs or idents: join through a hidden column
        # of their entity ids in this source (the variable keeps the value it was given)
        shadows: list[str] = []
        ac0 = terms[1].value if n > 1 and isinstance(terms[1], Const) else None
        info0 = src.attr(ac0) if isinstance(ac0, str) else None
        positions = [0] + ([2] if n > 2 and info0 is not None and info0.ref else [])
        for pos in positions:
            t = terms[pos]
            if not isinstance(t, Var) or t.name not in bound or t.name in ctx.eid_vars:
                continue
            rel0 = ctx.rel_of(t.name)
            assert rel0 is not None
            vals = rel0.distinct(t.name)
            if all(type(x) is int for x in vals):
                ctx.eid_vars.add(t.name)
                continue
            mapping = []
            for x in vals:
                if isinstance(x, list | tuple):  # a lookup ref must name an entity
                    mapping.append((x, await self._entid_strict(src, x)))
                    continue
                try:  # anything else that names no entity matches nothing (DataScript #214)
                    eid = x if type(x) is int else await src.entid(x)
                except QueryError:
                    eid = None
                if eid is not None:
                    mapping.append((x, eid))
            shadow = f"{t.name}\x00e{next(ctx.fresh)}"
            ctx.add(Rel((t.name, shadow), mapping))
            ctx.eid_vars.add(shadow)
            terms = (*terms[:pos], Var(shadow), *terms[pos + 1 :])
            shadows.append(shadow)
        await self._db_pattern(c, src, terms, pending)
        if shadows:
            self._drop_vars(shadows)

    async def _entid_strict(self, src: DatomSource, x: Any) -> int:
        if type(x) is int:
            return x
        eid = await src.entid(x)
        if eid is None:
            raise QueryError("Nothing found for entity id", x)
        return eid

    async def _db_pattern(
        self, c: Pattern, src: DatomSource, terms: Sequence[Term], pending: list[Clause]
    ) -> None:
        ctx = self.ctx
        n = len(terms)
        bound = ctx.bound()
        padded: list[Term] = [*terms, *([Placeholder()] * (5 - n))]
        e, a, v, tx, added = padded
        ec: Any = e.value if isinstance(e, Const) else None
        ac: Any = a.value if isinstance(a, Const) else None
        vc: Any = v.value if isinstance(v, Const) else None
        txc: Any = tx.value if isinstance(tx, Const) else None
        if ec is not None:
            ec = await self._entid_strict(src, ec)
        if txc is not None:
            txc = await self._resolve_e(src, txc)
        if ac is not None and not isinstance(ac, str):
            ac = await self._resolve_attr(src, ac)
            if ac is None:
                ctx.add(_pattern_rel(terms, []))
                return
        info = src.attr(ac) if ac is not None else None
        if vc is not None and info is not None and info.ref:
            vc = await self._entid_strict(src, vc)
        rows: Sequence[Row] | None = None
        how = "scan"
        if ac is None and isinstance(a, Var) and a.name in bound:
            arel = ctx.rel_of(a.name)
            attrs = arel.distinct(a.name) if arel is not None else set()
            if len(attrs) <= 64 and all(isinstance(x, str) for x in attrs):
                found_a: list[Row] = []
                for attr in attrs:
                    ai = src.attr(attr)
                    val = vc
                    if val is not None and ai is not None and ai.ref:
                        val = await self._resolve_e(src, val)
                        if val is None:
                            continue
                    found_a.extend(await src.search(ec, attr, val, txc))
                rows = found_a
                how = f"per-attribute({len(attrs)})"
        if ac is not None and ec is None:
            if isinstance(e, Var) and e.name in bound:
                rel = ctx.rel_of(e.name)
                assert rel is not None
                k = len(rel.rows)
                est = await self._estimate(src, None, ac, None)
                if vc is not None:
                    est = await self._estimate(src, None, ac, vc)
                if k * 1.5 < est:
                    es = list(rel.distinct(e.name))
                    by_e = await src.search_es(ac, es) if es else {}
                    done = self._extend(rel, e.name, padded, by_e, vc)
                    if done is not None:
                        ctx.rels = [done if x is rel else x for x in ctx.rels]
                        self.last_how = f"search_es({len(es)}) joined in place"
                        ctx.eid_vars.add(e.name)
                        if isinstance(v, Var) and info is not None and info.ref:
                            ctx.eid_vars.add(v.name)
                        return
                    empty: tuple[Row, ...] = ()
                    rows = [d for x in es for d in by_e.get(x, empty)]
                    if vc is not None:
                        tv = type(vc)
                        rows = [r for r in rows if r[2] == vc and type(r[2]) is tv]
                    how = f"search_es({len(es)})"
            if rows is None and vc is None and isinstance(v, Var) and v.name in bound:
                rel = ctx.rel_of(v.name)
                assert rel is not None
                vals = rel.distinct(v.name)
                est = await self._estimate(src, None, ac, None)
                if len(vals) * 4 < est:
                    found: list[Row] = []
                    for val in vals:
                        found.extend(await src.search(None, ac, val, txc))
                    rows = found
                    how = f"lookup_v({len(vals)})"
            if rows is None and vc is None and isinstance(v, Var) and v.name not in bound:
                rng = self._range_for(v.name, info, pending)
                if rng is not None:
                    rows = await src.search_range(ac, *rng)
                    how = "range"
        if rows is None:
            rows = await src.search(ec, ac, vc, txc)
        if isinstance(added, Const):
            want = bool(added.value)
            rows = [r for r in rows if r[4] is want]
        if txc is not None and how != "scan":
            rows = [r for r in rows if r[3] == txc]
        self.last_how = f"{how}: {len(rows)} datoms"
        if isinstance(e, Var):
            ctx.eid_vars.add(e.name)
        if isinstance(v, Var) and info is not None and info.ref:
            ctx.eid_vars.add(v.name)
        ctx.add(_pattern_rel(terms, rows))

    def _extend(
        self, rel: Rel, evar: str, terms: Sequence[Term], by_e: Mapping[int, Any], vc: Any
    ) -> Rel | None:
        """Join a pattern ``[?e :a v tx added]`` whose ``?e`` is bound in ``rel`` straight into
        ``rel`` from the entities' datoms (an index nested-loop join, no hash table). None when
        the pattern's shape needs the general path."""
        checks: list[tuple[int, Any]] = []
        if vc is not None:
            checks.append((2, vc))
        if isinstance(terms[4], Const):
            checks.append((4, bool(terms[4].value)))
        new_pos: list[int] = []
        new_vars: list[str] = []
        eq: list[tuple[int, int]] = []
        seen = {evar}
        bound = self.ctx.bound()
        for pos in (2, 3, 4):
            t = terms[pos]
            if isinstance(t, Var):
                if t.name in seen:
                    return None
                seen.add(t.name)
                if t.name in rel.vars:
                    eq.append((pos, rel.col(t.name)))
                elif t.name in bound:
                    return None
                else:
                    new_pos.append(pos)
                    new_vars.append(t.name)
        ie = rel.col(evar)
        get = by_e.get
        out: list[Row] = []
        add = out.append
        if not checks and not eq and len(new_pos) == 1:
            p = new_pos[0]
            for r in rel.rows:
                ds = get(r[ie])
                if ds:
                    for d in ds:
                        add((*r, d[p]))
            return Rel((*rel.vars, new_vars[0]), out)

        if not new_pos and not eq and len(checks) == 1 and checks[0][0] == 2:
            tv = type(vc)
            for r in rel.rows:
                ds = get(r[ie])
                if ds:
                    for d in ds:
                        x = d[2]
                        if x == vc and type(x) is tv:
                            add(r)
                            break
            return Rel(rel.vars, out)

        def ok(d: Row, r: Row) -> bool:
            for p, val in checks:
                x = d[p]
                if x != val or type(x) is not type(val):
                    return False
            return all(d[p] == r[c] for p, c in eq)

        if not new_pos:
            return Rel(rel.vars, [r for r in rel.rows if any(ok(d, r) for d in get(r[ie], ()))])
        xget = _getter(new_pos)
        for r in rel.rows:
            for d in get(r[ie], ()):
                if ok(d, r):
                    add(r + xget(d))
        return Rel(rel.vars + tuple(new_vars), out)

    async def _resolve_attr(self, src: DatomSource, a: Any) -> str | None:
        """An attribute given by entity id (or lookup ref): its ident."""
        eid = await self._resolve_e(src, a)
        if eid is None:
            return None
        rows = await src.search(eid, "db/ident")
        return str(rows[0][2]) if rows else None

    def _range_for(self, var: str, info: Any, pending: list[Clause]) -> tuple[Any, ...] | None:
        """AVET range bounds on ``var`` from comparison predicates with constants."""
        if info is None or info.value_type not in _RANGE_TYPES:
            return None
        kind = _RANGE_TYPES[info.value_type]
        lo: Any = None
        hi: Any = None
        lo_inc = hi_inc = True
        for c in pending:
            if not isinstance(c, Predicate) or c.fn not in _RANGE_OPS or len(c.args) != 2:
                continue
            x, y = c.args
            op = c.fn
            xc, yc = self._single_value(x), self._single_value(y)
            if isinstance(x, Var) and x.name == var and yc is not _NONE:
                const = yc
            elif isinstance(y, Var) and y.name == var and xc is not _NONE:
                const, op = xc, _FLIP[op]
            else:
                continue
            if type(const) is not kind:
                continue
            side, inc = _RANGE_OPS[op]
            if side == "lo":
                if lo is None or const > lo or (const == lo and not inc):
                    lo, lo_inc = const, inc
            elif hi is None or const < hi or (const == hi and not inc):
                hi, hi_inc = const, inc
        if lo is None and hi is None:
            return None
        return (lo, hi, lo_inc, hi_inc)

    def _single_value(self, x: Any) -> Any:
        """A constant's value, or the one value of a variable bound to exactly one (an :in
        scalar); ``_NONE`` otherwise."""
        if isinstance(x, Const):
            return x.value
        if isinstance(x, Var):
            rel = self.ctx.rel_of(x.name)
            if rel is not None and len(rel.rows) == 1:
                return rel.rows[0][rel.col(x.name)]
        return _NONE

    # -- predicates and functions ----------------------------------------------------------

    def _args_getter(self, rel: Rel, args: Sequence[Any]) -> Callable[[Row], list[Any]]:
        parts: list[tuple[bool, Any]] = []
        for x in args:
            if isinstance(x, Var):
                parts.append((True, rel.col(x.name)))
            elif isinstance(x, Const):
                parts.append((False, x.value))
            elif isinstance(x, SrcVar):
                parts.append((False, self.ctx.source(x)))
            else:
                raise QueryError("bad function argument", x)
        if all(is_var for is_var, _ in parts):
            idx = [i for _, i in parts]
            return lambda r: [r[i] for i in idx]
        return lambda r: [r[i] if is_var else i for is_var, i in parts]

    def _function(self, name: str, c: Clause) -> Callable[..., Any]:
        """A built-in or registered function by name, or the function an input variable
        holds (``:in ?f`` then ``[(?f ?x)]``)."""
        from query.builtins import resolve_function

        if not name.startswith("?"):
            return resolve_function(name)
        return _var_function(self.ctx, name, c, resolve_function)

    async def predicate(self, c: Predicate) -> None:
        from query.builtins import DB_FUNCTIONS

        ctx = self.ctx
        vars_ = term_vars(c.args)
        unbound = [v for v in vars_ if v not in ctx.bound()]
        if unbound:
            raise InsufficientBindings(
                f"Insufficient bindings: {', '.join(unbound)} not bound in", c
            )
        rel = ctx.collapse(vars_)
        get = self._args_getter(rel, c.args)
        if c.fn in DB_FUNCTIONS:
            afn = DB_FUNCTIONS[c.fn]
            keep = []
            for r in rel.rows:
                if _truthy(await _call_async(c, afn, get(r))):
                    keep.append(r)
            rel.rows = keep
            return
        fn = self._function(c.fn, c)
        fast = _fast_compare(c, rel)
        if fast is not None:
            rel.rows = [r for r in rel.rows if fast(r)]
            return
        rel.rows = [r for r in rel.rows if _truthy(_call(c, fn, get(r)))]

    async def function(self, c: Function) -> None:
        from query.builtins import DB_FUNCTIONS

        ctx = self.ctx
        vars_ = term_vars(c.args)
        unbound = [v for v in vars_ if v not in ctx.bound()]
        if unbound:
            raise InsufficientBindings(
                f"Insufficient bindings: {', '.join(unbound)} not bound in", c
            )
        rel = ctx.collapse(vars_)
        get = self._args_getter(rel, c.args)
        out_vars = tuple(dict.fromkeys(binding_vars(c.binding)))
        results: list[tuple[Row, Any]] = []
        if c.fn == "q":
            for r in rel.rows:
                args = get(r)
                if not args:
                    raise QueryError("q needs a query argument", c)
                results.append((r, await q(args[0], *args[1:])))
        elif c.fn in DB_FUNCTIONS:
            afn = DB_FUNCTIONS[c.fn]
            for r in rel.rows:
                results.append((r, await _call_async(c, afn, get(r))))
        else:
            fn = self._function(c.fn, c)
            for r in rel.rows:
                results.append((r, _call(c, fn, get(r))))
        rows: list[Row] = []
        for r, value in results:
            if value is None:
                continue
            sub = bind_value(c.binding, value, c)
            for s in sub.project(out_vars):
                rows.append(r + s)
        # variables already bound elsewhere: the function's value must agree (a join)
        new = Rel(rel.vars + tuple("\x00" + v for v in out_vars), rows)
        already = [v for v in out_vars if v in rel.vars]
        if already:
            pos = [(rel.col(v), len(rel.vars) + out_vars.index(v)) for v in already]
            new.rows = [r for r in new.rows if all(r[i] == r[j] for i, j in pos)]
        keep_idx = list(range(len(rel.vars))) + [
            len(rel.vars) + k for k, v in enumerate(out_vars) if v not in rel.vars
        ]
        final_vars = rel.vars + tuple(v for v in out_vars if v not in rel.vars)
        getter = _getter(keep_idx)
        result = Rel(final_vars, [getter(r) for r in new.rows])
        ctx.rels = [x for x in ctx.rels if x is not rel]
        ctx.add(result)

    # -- not / or --------------------------------------------------------------------------

    async def not_(self, c: Not) -> None:
        ctx = self.ctx
        bound = ctx.bound()
        inner_vars = set().union(*(clause_vars(x) for x in c.clauses)) if c.clauses else set()
        if c.vars is not None:
            join_vars = [v.name for v in c.vars]
            missing = [v for v in join_vars if v not in bound]
            if missing:
                raise InsufficientBindings(
                    f"Insufficient bindings: {', '.join(missing)} not bound in", c
                )
        else:
            join_vars = sorted(inner_vars & bound)
            if not join_vars:
                raise InsufficientBindings(
                    "Insufficient bindings: none of the variables of not is bound in", c
                )
        rel = ctx.collapse(join_vars)
        sub = ctx.child()
        if c.src is not None:
            ctx.source(c.src)  # must exist
            sub.default = c.src.name
        keys = list(set(rel.project(join_vars)))
        sub.rels = [Rel(tuple(join_vars), keys)]
        await Evaluator(sub).run(c.clauses, join_vars)
        removed = set(sub.collapse(join_vars).project(join_vars)) if not sub.is_empty() else set()
        if removed:
            kget = _getter([rel.col(v) for v in join_vars])
            rel.rows = [r for r in rel.rows if kget(r) not in removed]

    async def or_(self, c: Or) -> None:
        ctx = self.ctx
        bound = ctx.bound()
        if c.vars is not None:
            join_vars = [v.name for v in c.vars]
        else:
            join_vars = sorted(clause_vars(c))
        required = [v.name for v in c.required]
        missing = [v for v in required if v not in bound]
        if missing:
            raise InsufficientBindings(
                f"Insufficient bindings: {', '.join(missing)} not bound in", c
            )
        seed_vars = [v for v in join_vars if v in bound]
        seed: Rel | None = None
        if seed_vars:
            rel = ctx.collapse(seed_vars)
            seed = Rel(tuple(seed_vars), list(set(rel.project(seed_vars))))
        out_rows: set[Row] = set()
        for branch in c.branches:
            sub = ctx.child()
            if c.src is not None:
                ctx.source(c.src)  # must exist
                sub.default = c.src.name
            if seed is not None:
                sub.rels = [Rel(seed.vars, list(seed.rows))]
            clauses = branch.clauses if isinstance(branch, And) else (branch,)
            await Evaluator(sub).run(clauses, join_vars)
            if sub.is_empty():
                continue
            got = sub.collapse(join_vars)
            missing_out = [v for v in join_vars if v not in got.vars]
            if missing_out:
                raise InsufficientBindings(
                    f"Insufficient bindings: {', '.join(missing_out)} not bound by a branch of",
                    c,
                )
            out_rows.update(got.project(join_vars))
        ctx.add(Rel(tuple(join_vars), list(out_rows)))

    # -- rules -----------------------------------------------------------------------------

    async def rule_call(self, c: RuleCall) -> None:
        ctx = self.ctx
        branches = ctx.rules.get(c.name)
        if branches is None:
            raise QueryError("unknown rule", c.name)
        arity = len(branches[0].head)
        if len(c.args) != arity:
            raise QueryError(f"rule {c.name} takes {arity} arguments, got {len(c.args)}", c)
        src = ctx.source(c.src) if c.src is not None else ctx.source(None)
        # the call's arguments as variables of this context
        call_vars: list[str] = []
        made: list[str] = []  # helper variables this call creates (and drops at the end)
        consts: list[tuple[str, Any]] = []
        for t in c.args:
            if isinstance(t, Var):
                call_vars.append(t.name)
            else:
                name = f"?\x00c{next(ctx.fresh)}"
                call_vars.append(name)
                made.append(name)
                if isinstance(t, Const):
                    consts.append((name, t.value))
        head_required = len(branches[0].required)
        bound = ctx.bound() | {n for n, _ in consts}
        missing = [v for v in call_vars[:head_required] if v not in bound]
        if missing:
            raise InsufficientBindings(
                f"Insufficient bindings: {', '.join(missing)} not bound in", c
            )
        for name, value in consts:
            ctx.add(Rel((name,), [(value,)]))
        if c.name in _recursive_rules(ctx.rules):
            demand = ctx.demand
            facts: Iterable[Row]
            if demand is not None and c.name in demand[0].group:
                facts = demand[0].lookup(ctx, c, call_vars, demand[1])
            else:
                facts = await self._recursive_call(c.name, src, call_vars)
            ctx.add(_columns(call_vars, list(facts)))
        else:
            # expand like an or-join over the call's variables
            alts = tuple(And(_rename_branch(b, call_vars, ctx.fresh)) for b in branches)
            sub_or = Or(None, tuple(Var(v) for v in call_vars), (), alts)
            saved, saved_default = ctx.sources, ctx.default
            ctx.sources = {**saved, "$": src}
            ctx.default = "$"
            try:
                await self.or_(sub_or)
            finally:
                ctx.sources, ctx.default = saved, saved_default
        # drop the helper variables of constants and placeholders
        if made:
            self._drop_vars(made)

    def _drop_vars(self, vars_: list[str]) -> None:
        ctx = self.ctx
        new = []
        for r in ctx.rels:
            if any(v in r.vars for v in vars_):
                keep = [i for i, v in enumerate(r.vars) if v not in vars_]
                g = _getter(keep)
                r = Rel(tuple(r.vars[i] for i in keep), [g(x) for x in r.rows])
                if not r.vars:
                    r = Rel((), [()] if r.rows else [])
            new.append(r)
        ctx.rels = new

    async def _recursive_call(self, name: str, src: Any, call_vars: list[str]) -> Iterable[Row]:
        """The facts of recursive rule ``name`` that a call with ``call_vars`` needs: with
        some arguments bound (variables bound here, constants), only those reachable from
        the bound values (:meth:`_demand_fixpoint`); else the whole relation, bottom up, or
        top down from the call (every argument free) when a rule of the group needs
        arguments that only its callers inside the group bind."""
        ctx = self.ctx
        bpos = _demand_positions(ctx, call_vars)
        if f"{name}\x00{id(src)}" in ctx.rule_rels:
            return ctx.rule_rels[f"{name}\x00{id(src)}"].rows  # computed whole already
        group = _rule_group(ctx.rules, name)
        safe = _demand_safe(ctx.rules, group)
        if bpos and safe:
            seed = _seed(ctx, call_vars, bpos)
            return await self._demand_fixpoint(name, src, bpos, seed, group)
        try:
            return (await self._fixpoint(name, src)).rows
        except InsufficientBindings:
            if not safe:
                raise
            for r in group:  # what the failed evaluation published
                ctx.rule_rels.pop(f"{r}\x00{id(src)}", None)
        return await self._demand_fixpoint(name, src, bpos, _seed(ctx, call_vars, bpos), group)

    async def _demand_fixpoint(
        self, name: str, src: Any, bpos: tuple[int, ...], seed: set[Row], group: set[str]
    ) -> set[Row]:
        """Facts of ``name`` (in recursive ``group``) for the call whose arguments at
        ``bpos`` take the values of ``seed``: a demand-driven (magic-set) semi-naive
        evaluation. A *demand* is a rule, the argument positions bound by its caller and
        their values. Each branch of a demanded rule runs with its head variables at those
        positions bound to the demanded values, so its clauses see what the caller bound
        (a predicate or function on a head variable works, and only what is reachable from
        those values is derived); a recursive call inside registers the demand of its own
        bound arguments and reads the facts found so far. Rounds repeat until neither new
        facts nor new demands appear; each round runs a branch on the new demands with
        all facts, and on the older demands with one recursive call reading only the facts
        new in the last round."""
        ctx = self.ctx
        drv = _Demand(group)
        drv.new_demand[(name, bpos)] = set(seed)
        rules = ctx.rules
        while True:
            fresh: dict[tuple[str, tuple[int, ...]], set[Row]] = {}
            for key, tuples in drv.new_demand.items():
                known = drv.demand.setdefault(key, set())
                tuples -= known
                if tuples:
                    fresh[key] = tuples
                    known |= tuples
            drv.new_demand = {}
            if not fresh and not any(drv.delta.values()):
                break
            new: dict[str, set[Row]] = {r: set() for r in group}
            for (rname, b), known in list(drv.demand.items()):
                got = fresh.get((rname, b))
                old = known - got if got else known
                for branch in rules[rname]:
                    if _nested_calls(branch.clauses) & group:
                        # a call inside or / and: naively, every round, on everything so far
                        new[rname] |= await self._demand_branch(branch, b, known, None, drv, src)
                        continue
                    if got:
                        new[rname] |= await self._demand_branch(branch, b, got, None, drv, src)
                    if not old:
                        continue
                    for i, cl in enumerate(branch.clauses):
                        if isinstance(cl, RuleCall) and cl.name in group and drv.delta[cl.name]:
                            new[rname] |= await self._demand_branch(branch, b, old, i, drv, src)
            for r in group:
                new[r] -= drv.facts[r]
                drv.facts[r] |= new[r]
            drv.delta = new
        return drv.facts[name]

    async def _demand_branch(
        self,
        branch: RuleBranch,
        bpos: tuple[int, ...],
        seed: set[Row],
        delta_pos: int | None,
        drv: _Demand,
        src: Any,
    ) -> set[Row]:
        """One branch's facts for the demanded head values ``seed`` (at ``bpos``); the call
        at ``delta_pos`` (if any) reads only the facts new in the last round."""
        ctx = self.ctx
        sub = ctx.child()
        sub.sources = {**ctx.sources, "$": src}
        sub.default = "$"
        head = [v.name for v in branch.head]
        clauses = list(branch.clauses)
        marker: int | None = None
        if delta_pos is not None:
            cl = clauses[delta_pos]
            assert isinstance(cl, RuleCall)
            clauses[delta_pos] = copy = RuleCall(cl.src, cl.name, cl.args)
            marker = id(copy)
        sub.demand = (drv, marker)
        sub.add(_columns([head[i] for i in bpos], list(seed)))
        await Evaluator(sub).run(clauses, head)
        return _rule_rows(sub, head, branch.name)

    async def _fixpoint(self, name: str, src: Any) -> Rel:
        """The full relation of recursive rule ``name`` (and the rules of its cycle)."""
        ctx = self.ctx
        key = f"{name}\x00{id(src)}"
        cache = ctx.rule_rels
        if key in cache:
            return cache[key]
        group = _rule_group(ctx.rules, name)
        full: dict[str, set[Row]] = {r: set() for r in group}
        delta: dict[str, set[Row]] = {r: set() for r in group}
        heads = {r: tuple(v.name for v in ctx.rules[r][0].head) for r in group}

        def publish() -> None:
            # calls nested inside or/not of a branch read the facts found so far
            for r in group:
                cache[f"{r}\x00{id(src)}"] = Rel(heads[r], list(full[r]))

        first = True
        while first or any(delta.values()):
            publish()
            new: dict[str, set[Row]] = {r: set() for r in group}
            for rname in group:
                for branch in ctx.rules[rname]:
                    calls = [
                        i for i, cl in enumerate(branch.clauses)
                        if isinstance(cl, RuleCall) and cl.name in group
                    ]  # fmt: skip
                    nested = _nested_calls(branch.clauses) & group
                    variants: list[int | None]
                    if nested:
                        variants = [None]  # naive: every round, on all facts so far
                    elif first:
                        if calls:
                            continue  # only base branches in round one
                        variants = [None]
                    else:
                        if not calls:
                            continue
                        variants = list(calls)
                    for dpos in variants:
                        rows = await self._eval_branch(branch, group, full, delta, dpos, src)
                        new[rname].update(rows)
            for rname in group:
                new[rname] -= full[rname]
                full[rname] |= new[rname]
            delta = new
            first = False
        publish()
        return cache[key]

    async def _eval_branch(
        self,
        branch: RuleBranch,
        group: set[str],
        full: dict[str, set[Row]],
        delta: dict[str, set[Row]],
        dpos: int | None,
        src: Any,
    ) -> set[Row]:
        ctx = self.ctx
        sub = ctx.child()
        sub.sources = {**ctx.sources, "$": src}
        sub.default = "$"
        clauses: list[Clause] = []
        for i, cl in enumerate(branch.clauses):
            if isinstance(cl, RuleCall) and cl.name in group:
                facts = delta[cl.name] if i == dpos else full[cl.name]
                args: list[str] = []
                consts: list[tuple[int, Any]] = []
                for k, t in enumerate(cl.args):
                    if isinstance(t, Var):
                        args.append(t.name)
                    else:
                        args.append(f"?\x00r{next(ctx.fresh)}")
                        if isinstance(t, Const):
                            consts.append((k, t.value))
                rows = [r for r in facts if all(r[k] == val for k, val in consts)]
                sub.add(_columns(args, rows))
            else:
                clauses.append(cl)
        head = [v.name for v in branch.head]
        await Evaluator(sub).run(clauses, head)
        return _rule_rows(sub, head, branch.name)


class _Demand:
    """The state of one demand-driven evaluation (``Evaluator._demand_fixpoint``)."""

    __slots__ = ("delta", "demand", "facts", "group", "new_demand")

    def __init__(self, group: set[str]) -> None:
        self.group = group
        self.facts: dict[str, set[Row]] = {r: set() for r in group}
        self.delta: dict[str, set[Row]] = {r: set() for r in group}
        #: (rule, bound argument positions) -> the demanded values of those arguments
        self.demand: dict[tuple[str, tuple[int, ...]], set[Row]] = {}
        self.new_demand: dict[tuple[str, tuple[int, ...]], set[Row]] = {}

    def lookup(self, ctx: Ctx, c: RuleCall, call_vars: list[str], delta_at: int | None) -> set[Row]:
        """A call of a rule of the group from one of its branches: record the demand of its
        bound arguments, and answer with the facts known (the last round's new facts only,
        for the call ``delta_at``)."""
        bpos = _demand_positions(ctx, call_vars)
        key = (c.name, bpos)
        seed = _seed(ctx, call_vars, bpos)
        known = self.demand.get(key)
        if known:
            seed -= known
        if seed:
            self.new_demand.setdefault(key, set()).update(seed)
        return self.delta[c.name] if delta_at == id(c) else self.facts[c.name]


_SEED_LIMIT = 100_000


def _demand_positions(ctx: Ctx, call_vars: list[str]) -> tuple[int, ...]:
    """The positions of a call's arguments bound in ``ctx``, whose values become a demand.
    Bound variables that live in different relations would make the demand their product:
    past ``_SEED_LIMIT`` rows, only the relation binding the most arguments (and one-row
    relations, such as constants) count."""
    rel_of: dict[int, Rel] = {}
    pos_of: dict[int, list[int]] = {}
    for i, v in enumerate(call_vars):
        rel = ctx.rel_of(v)
        if rel is not None:
            rel_of[id(rel)] = rel
            pos_of.setdefault(id(rel), []).append(i)
    size = 1
    for rel in rel_of.values():
        size *= max(len(rel.rows), 1)
    if size > _SEED_LIMIT:
        many = [k for k, rel in rel_of.items() if len(rel.rows) > 1]
        best = max(many, key=lambda k: (len(pos_of[k]), -len(rel_of[k].rows)))
        pos_of = {k: ps for k, ps in pos_of.items() if k == best or k not in many}
    return tuple(sorted(i for ps in pos_of.values() for i in ps))


def _seed(ctx: Ctx, call_vars: list[str], bpos: tuple[int, ...]) -> set[Row]:
    """The distinct values of the call arguments at ``bpos`` (bound in ``ctx``)."""
    if not bpos:
        return {()}
    names = [call_vars[i] for i in bpos]
    return set(ctx.collapse(names).project(names))


def _demand_safe(rules: Mapping[str, tuple[RuleBranch, ...]], group: set[str]) -> bool:
    """Whether a demand-driven evaluation applies to ``group``: no rule of it is called from
    inside a ``not`` of a branch (negation through recursion is left to the bottom-up
    evaluation)."""

    def negated(cs: Iterable[Clause], inside: bool) -> bool:
        for c in cs:
            if isinstance(c, RuleCall):
                if inside and c.name in group:
                    return True
            elif isinstance(c, Not):
                if negated(c.clauses, True):
                    return True
            elif isinstance(c, And):
                if negated(c.clauses, inside):
                    return True
            elif isinstance(c, Or) and negated(c.branches, inside):
                return True
        return False

    return not any(negated(b.clauses, False) for r in group for b in rules[r])


def _truthy(x: Any) -> bool:
    """Clojure truth: only nil and false are false (0 and "" are true)."""
    return x is not None and x is not False


def _frozen(x: Any) -> Any:
    if isinstance(x, list | tuple):
        return tuple(_frozen(y) for y in x)
    if isinstance(x, dict):
        return frozenset((_frozen(k), _frozen(v)) for k, v in x.items())
    if isinstance(x, set):
        return frozenset(_frozen(y) for y in x)
    return x


def _distinct(rows: list[Row]) -> list[Row]:
    """Rows without duplicates, also when some hold unhashable values (lists, dicts)."""
    try:
        return list(set(rows))
    except TypeError:
        seen: set[Any] = set()
        out = []
        for r in rows:
            k = _frozen(r)
            if k not in seen:
                seen.add(k)
                out.append(r)
        return out


def _var_function(
    ctx: Ctx, name: str, form: Any, resolve: Callable[[str], Callable[..., Any]]
) -> Callable[..., Any]:
    rel = ctx.rel_of(name)
    values = rel.distinct(name) if rel is not None else set()
    if len(values) != 1:
        raise QueryError(f"{name} must be bound to one function", form)
    value = next(iter(values))
    if isinstance(value, str):
        return resolve(value)
    if not callable(value):
        raise QueryError(f"{name} is not a function", value)
    return value  # type: ignore[no-any-return]


def _columns(names: Sequence[str | None], rows: Sequence[Row]) -> Rel:
    """A relation from ``rows`` whose column ``i`` is variable ``names[i]`` (None: not kept).
    A name given twice keeps only the rows where those columns are equal."""
    first: dict[str, int] = {}
    same: list[tuple[int, int]] = []
    for i, n in enumerate(names):
        if n is None:
            continue
        if n in first:
            same.append((first[n], i))
        else:
            first[n] = i
    if same:
        rows = [r for r in rows if all(r[i] == r[j] for i, j in same)]
    idx = list(first.values())
    if not idx:
        return Rel((), [()] if rows else [])
    if idx == list(range(len(names))) and rows and len(rows[0]) == len(names):
        return Rel(tuple(first), list(rows))  # every column kept as is
    if len(idx) == 1:
        k = idx[0]
        return Rel(tuple(first), [(r[k],) for r in rows])
    get = itemgetter(*idx)
    return Rel(tuple(first), [get(r) for r in rows])


def _pattern_rel(terms: Sequence[Term], rows: Sequence[Row]) -> Rel:
    """The relation of a pattern's variables from the tuples it matched."""
    return _columns([t.name if isinstance(t, Var) else None for t in terms], rows)


def _rename_branch(
    branch: RuleBranch, call_vars: Sequence[str], fresh: itertools.count[int]
) -> tuple[Clause, ...]:
    """A rule branch's clauses with head variables renamed to the caller's and every other
    variable made fresh (so expansions never capture each other's variables)."""
    mapping = {h.name: cv for h, cv in zip(branch.head, call_vars, strict=True)}
    tag = next(fresh)

    def var(v: Var) -> Var:
        if v.name not in mapping:
            mapping[v.name] = f"{v.name}\x00{tag}"
        return Var(mapping[v.name])

    def term(t: Any) -> Any:
        return var(t) if isinstance(t, Var) else t

    def fname(name: str) -> str:  # a function held in a variable follows the renaming
        return var(Var(name)).name if name.startswith("?") else name

    def binding(b: Binding) -> Binding:
        if isinstance(b, BindScalar):
            return BindScalar(var(b.var))
        if isinstance(b, BindTuple):
            return BindTuple(tuple(binding(x) for x in b.items))
        if isinstance(b, BindColl):
            return BindColl(binding(b.item))
        return b

    def clause(c: Clause) -> Clause:
        if isinstance(c, Pattern):
            return Pattern(c.src, tuple(term(t) for t in c.terms))
        if isinstance(c, Predicate):
            return Predicate(fname(c.fn), tuple(term(t) for t in c.args))
        if isinstance(c, Function):
            return Function(fname(c.fn), tuple(term(t) for t in c.args), binding(c.binding))
        if isinstance(c, RuleCall):
            return RuleCall(c.src, c.name, tuple(term(t) for t in c.args))
        if isinstance(c, And):
            return And(tuple(clause(x) for x in c.clauses))
        if isinstance(c, Not):
            vs = None if c.vars is None else tuple(var(v) for v in c.vars)
            return Not(c.src, vs, tuple(clause(x) for x in c.clauses))
        if isinstance(c, Or):
            vs = None if c.vars is None else tuple(var(v) for v in c.vars)
            return Or(c.src, vs, tuple(var(v) for v in c.required),
                      tuple(clause(x) for x in c.branches))  # fmt: skip
        raise QueryError("unknown clause", c)

    return tuple(clause(c) for c in branch.clauses)


_REC_CACHE: dict[int, tuple[Mapping[str, Any], frozenset[str]]] = {}


def _calls(rules: Mapping[str, tuple[RuleBranch, ...]], name: str) -> set[str]:
    out: set[str] = set()

    def walk(cs: Iterable[Clause]) -> None:
        for c in cs:
            if isinstance(c, RuleCall):
                out.add(c.name)
            elif isinstance(c, And):
                walk(c.clauses)
            elif isinstance(c, Not):
                walk(c.clauses)
            elif isinstance(c, Or):
                walk(c.branches)

    for b in rules.get(name, ()):
        walk(b.clauses)
    return out


def _nested_calls(clauses: Iterable[Clause]) -> set[str]:
    """Rules called from inside or/not/and of ``clauses`` (not at their top level)."""
    out: set[str] = set()

    def walk(cs: Iterable[Clause], inner: bool) -> None:
        for c in cs:
            if isinstance(c, RuleCall):
                if inner:
                    out.add(c.name)
            elif isinstance(c, And | Not):
                walk(c.clauses, True)
            elif isinstance(c, Or):
                walk(c.branches, True)

    walk(clauses, False)
    return out


def _reach(rules: Mapping[str, tuple[RuleBranch, ...]], name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        n = todo.pop()
        for m in _calls(rules, n):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def _recursive_rules(rules: Mapping[str, tuple[RuleBranch, ...]]) -> frozenset[str]:
    got = _REC_CACHE.get(id(rules))
    if got is not None and got[0] is rules:
        return got[1]
    rec = frozenset(n for n in rules if n in _reach(rules, n))
    if len(_REC_CACHE) > 256:
        _REC_CACHE.clear()
    _REC_CACHE[id(rules)] = (rules, rec)
    return rec


def _rule_group(rules: Mapping[str, tuple[RuleBranch, ...]], name: str) -> set[str]:
    """The rules in ``name``'s recursive cycle (its strongly connected component)."""
    reach = _reach(rules, name)
    return {m for m in reach | {name} if name in _reach(rules, m)} | {name}


def _call(c: Clause, fn: Callable[..., Any], args: list[Any]) -> Any:
    try:
        return fn(*args)
    except QueryError:
        raise
    except Exception as exc:
        raise QueryError(f"function {getattr(c, 'fn', '?')} failed: {exc}", c) from exc


async def _call_async(c: Clause, fn: Callable[..., Any], args: list[Any]) -> Any:
    try:
        return await fn(*args)
    except QueryError:
        raise
    except Exception as exc:
        raise QueryError(f"function {getattr(c, 'fn', '?')} failed: {exc}", c) from exc


_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda x, y: x < y,
    ">": lambda x, y: x > y,
    "<=": lambda x, y: x <= y,
    ">=": lambda x, y: x >= y,
}


def _fast_compare(c: Predicate, rel: Rel) -> Callable[[Row], bool] | None:
    """A comparison of a variable with a number, when every value is a plain number: the
    generic builtin's cross-type rules cannot apply, so compare natively."""
    if c.fn not in _PY_OPS or len(c.args) != 2:
        return None
    x, y = c.args

    def single(t: Any) -> Any:
        if isinstance(t, Const):
            return t.value
        if isinstance(t, Var) and rel.rows:
            j = rel.col(t.name)
            first = rel.rows[0][j]
            if all(r[j] == first for r in rel.rows):
                return first
        return _NONE

    if isinstance(x, Var) and (k := single(y)) is not _NONE:
        i, flip = rel.col(x.name), False
    elif isinstance(y, Var) and (k := single(x)) is not _NONE:
        i, flip = rel.col(y.name), True
    else:
        return None
    if type(k) not in (int, float):
        return None
    if not all(type(r[i]) in (int, float) for r in rel.rows):
        return None
    op = _PY_OPS[c.fn]
    if flip:
        return lambda r: op(k, r[i])
    return lambda r: op(r[i], k)


# -- the query ---------------------------------------------------------------------------------


def _elem_var(el: FindElem) -> str:
    return el.var.name


async def _bind_inputs(query: Query, inputs: Sequence[Any], ctx: Ctx) -> None:
    from query.parser import parse_rules

    if len(inputs) != len(query.inputs):
        kind = "Extra inputs passed" if len(inputs) > len(query.inputs) else "Too few inputs passed"
        raise QueryError(
            f"{kind}: the query's :in has {len(query.inputs)} bindings, {len(inputs)} inputs given",
            None,
        )
    for spec, value in zip(query.inputs, inputs, strict=True):
        if isinstance(spec, SrcVar):
            src = datom_source_of(value)
            if src is not None:
                ctx.sources[spec.name] = src
            elif _is_collection(value):
                ctx.sources[spec.name] = value
            else:
                raise QueryError(
                    f"input {spec.name} must be a database or a collection of tuples", value
                )
        elif isinstance(spec, RulesVar):
            ctx.rules = parse_rules(value).rules if value is not None else {}
        else:
            ctx.add(bind_value(spec, value, spec))


async def _aggregate(query: Query, rel: Rel, elements: tuple[FindElem, ...], ctx: Ctx) -> list[Row]:
    from query.builtins import resolve_aggregate

    find_vars = [_elem_var(el) for el in elements]
    with_vars = [v.name for v in query.with_]
    rows = _distinct(rel.project(find_vars + with_vars))
    group_idx = [i for i, el in enumerate(elements) if not isinstance(el, FindAggregate)]
    groups: dict[Row, list[Row]] = {}
    for r in rows:
        groups.setdefault(tuple(r[i] for i in group_idx), []).append(r)
    out: list[Row] = []
    for key, members in groups.items():
        vals: list[Any] = []
        ki = iter(key)
        for i, el in enumerate(elements):
            if isinstance(el, FindAggregate):
                fn = (
                    _var_function(ctx, el.fn, el, resolve_aggregate)
                    if el.fn.startswith("?")
                    else resolve_aggregate(el.fn)
                )
                args = []
                for a in el.args:
                    if isinstance(a, Var):
                        r0 = ctx.rel_of(a.name)
                        if r0 is None or not r0.rows:
                            raise QueryError("aggregate argument is not bound", a)
                        args.append(r0.rows[0][r0.col(a.name)])
                    else:
                        args.append(a.value)
                column = [m[i] for m in members]
                try:
                    vals.append(fn(column, *args))
                except QueryError:
                    raise
                except Exception as exc:
                    raise QueryError(f"aggregate {el.fn} failed: {exc}", el) from exc
            else:
                vals.append(next(ki))
        out.append(tuple(vals))
    return out


async def _pull_rows(rows: list[Row], elements: tuple[FindElem, ...], ctx: Ctx) -> list[Row]:
    from query.pull import pull_many

    out = [list(r) for r in rows]
    for i, el in enumerate(elements):
        if not isinstance(el, FindPull):
            continue
        src = ctx.source(el.src)
        pattern = el.pattern
        if isinstance(pattern, Var):
            prel = ctx.rel_of(pattern.name)
            if prel is None or not prel.rows:
                raise QueryError("pull pattern input is not bound", pattern)
            pattern = prel.rows[0][prel.col(pattern.name)]
        pulled = await pull_many(src, pattern, [r[i] for r in rows])
        for r, p in zip(out, pulled, strict=True):
            r[i] = p
    return [tuple(r) for r in out]


def _rule_rows(sub: Ctx, head: list[str], rule: str) -> set[Row]:
    """The rows of a rule branch evaluated in ``sub``, projected on ``head``; every head
    variable must be bound (InsufficientBindings otherwise)."""
    if sub.is_empty():
        return set()
    got = sub.collapse(head)
    missing = [v for v in head if v not in got.vars]
    if missing:
        raise InsufficientBindings(
            f"Insufficient bindings: {', '.join(missing)} not bound in rule", rule
        )
    return set(got.project(head))


def _column_key(i: int, cmp: Callable[[Any, Any], int]) -> Callable[[Row], Any]:
    return cmp_to_key(lambda x, y: cmp(x[i], y[i]))


def _order(rows: list[Row], query: Query, elements: tuple[FindElem, ...]) -> list[Row]:
    from query.builtins import compare_values

    names = [el.var.name if not isinstance(el, FindAggregate) else None for el in elements]
    for var, direction in reversed(query.order_by):
        if var.name not in names:
            raise QueryError(":order-by variable is not in :find", var)
        i = names.index(var.name)
        rows.sort(key=_column_key(i, compare_values), reverse=direction == "desc")
    return rows


@dataclass(frozen=True)
class Plan:
    """What ``explain`` returns: the clauses in the order they ran, each with the planner's
    estimate (patterns: index counts, or the bound rows when that is cheaper), how the index was
    read, and the rows after the step."""

    steps: tuple[dict[str, Any], ...]
    result_size: int

    def __str__(self) -> str:
        lines = []
        for s in self.steps:
            how = f" ({s['how']})" if s.get("how") else ""
            est = f" [estimated {s['estimate']:.0f}]" if s.get("estimate") is not None else ""
            lines.append(f"{'  ' * s['depth']}{s['clause']!r}{est}{how} -> {s['rows_after']} rows")
        return "\n".join([*lines, f"result: {self.result_size}"])


async def q(query: Any, *inputs: Any, stats: Stats | None = None) -> Any:
    """Run a Datalog query (EDN string or Python data) against the inputs (DB values,
    collections, scalars, rule sets) and return the result shaped by the find spec.

    ``query`` may also be the map form of a call, ``{:query q :args [inputs] :offset n :limit
    n}`` (Datomic, Datahike; as EDN text or a dict such as ``{"query": q, "args": [db]}``):
    ``:args`` are then the inputs (giving inputs both ways is an error), and ``:offset`` /
    ``:limit`` override the query's own."""
    from query.parser import parse_query, query_call

    call = query_call(query)
    if call is not None:
        query, args, _ = call
        if args is not None:
            if inputs:
                raise QueryError(
                    "a query map with :args takes no other inputs (pass them in :args)", query
                )
            inputs = tuple(args)
    parsed = parse_query(query)
    if call is not None and call[2]:
        parsed = dataclasses.replace(
            parsed,
            offset=call[2].get("offset", parsed.offset),
            limit=call[2].get("limit", parsed.limit),
        )
    ctx = Ctx({}, {}, stats, itertools.count())
    with gc_paused():  # many short row tuples: see query/gcpause.py
        await _bind_inputs(parsed, inputs, ctx)
        await Evaluator(ctx).run(parsed.where, _needed_vars(parsed))
        return await _finish(parsed, ctx)


def _needed_vars(query: Query) -> set[str]:
    """Variables the find spec needs after the where clauses."""
    out = {v.name for v in query.with_}
    for el in find_elements(query.find):
        out.add(el.var.name)
        if isinstance(el, FindAggregate):
            out.update(a.name for a in el.args if isinstance(a, Var))
        if isinstance(el, FindPull) and isinstance(el.pattern, Var):
            out.add(el.pattern.name)
    return out


async def _finish(query: Query, ctx: Ctx) -> Any:
    find = query.find
    elements = find_elements(find)
    needed = [_elem_var(el) for el in elements] + [v.name for v in query.with_]
    if ctx.is_empty():  # evaluation stopped early: some clause matched nothing
        rel = Rel(tuple(needed), [])
    else:
        bound = ctx.bound()
        for v in needed:
            if v not in bound:
                raise QueryError("find variable is not bound by the query", Var(v))
        rel = ctx.collapse(needed)
    if any(isinstance(el, FindAggregate) for el in elements):
        rows = await _aggregate(query, rel, elements, ctx)
        as_list = bool(query.with_)
    elif query.with_:
        rows = [r[: len(elements)] for r in _distinct(rel.project(needed))]
        as_list = True
    else:
        rows = _distinct(rel.project(needed))
        as_list = False
    if any(isinstance(el, FindPull) for el in elements):
        rows = await _pull_rows(rows, elements, ctx)
        as_list = True
    if query.order_by:
        rows = _order(rows, query, elements)
        as_list = True
    if query.offset is not None or query.limit is not None:
        start = query.offset or 0
        rows = rows[start : None if query.limit is None else start + query.limit]
        as_list = True
    if isinstance(find, FindScalar):
        return rows[0][0] if rows else None
    if isinstance(find, FindColl):
        return [r[0] for r in rows]
    if query.keys is not None:
        from query.types import Keyword, Symbol

        kind, names = query.keys
        make: Callable[[str], str] = (
            Keyword if kind == "keys" else Symbol if kind == "syms" else str
        )
        keys = [make(n) for n in names]
        if isinstance(find, FindTuple):
            return dict(zip(keys, rows[0], strict=True)) if rows else None
        return [dict(zip(keys, r, strict=True)) for r in rows]
    if isinstance(find, FindTuple):
        return rows[0] if rows else None
    if as_list:
        return rows
    try:
        return set(rows)
    except TypeError:  # a row holds a list or a dict (vector, hash-map, (min n ?x) ...)
        return rows


async def explain(query: Any, *inputs: Any) -> Plan:
    """Run the query and return the plan it followed: each clause in execution order, how
    each pattern read the index, and the rows after each step (an EXPLAIN ANALYZE)."""
    stats = Stats()
    result = await q(query, *inputs, stats=stats)
    size = len(result) if isinstance(result, list | set | tuple) else int(result is not None)
    return Plan(tuple(stats.steps), size)
