"""The Pull API: a declarative, hierarchical read of entities (Datomic / DataScript ``pull``).

``await pull(db, pattern, eid)`` reads one entity, ``await pull_many(db, pattern, eids)`` several,
through the datom-source protocol (:mod:`query.source`) only. ``db`` is a
:class:`~query.source.DatomSource` or anything with a ``__datom_source__()`` method returning one
(a ``replica.DB``). ``eid`` is an entity id, a lookup ref ``[attr, value]`` (list or tuple) or an
ident keyword; it is resolved with ``DatomSource.entid``.

Patterns
========

A pattern is EDN text (``"[:name {:friend [:name]}]"``) or the same Python data
(``["name", {"friend": ["name"]}]``); either is parsed once into frozen dataclasses
(:class:`PullPattern`, :class:`PullAttr`) and cached. The grammar is DataScript's::

    pattern           = [(attr-spec | map-spec | * )+]
    attr-spec         = attr-name | attr-expr | legacy-limit-expr | legacy-default-expr
    attr-name         = a keyword or string naming an attribute, :db/id, or a reverse :ns/_attr
    attr-expr         = [attr-spec attr-option+]          (a vector or a list)
    attr-option       = :as any-value | :limit (positive-int | nil) | :default any-value
                        | :xform (callable | function-symbol)
    legacy-limit-expr = (limit attr-spec (positive-int | nil))
    legacy-default-expr = (default attr-spec any-value)
    map-spec          = {attr-spec (pattern | recursion-limit)}
    recursion-limit   = positive-int | ...

An EDN map key cannot be a vector (the reader refuses unhashable keys), so an attribute
expression as a map key is written as a list: ``{(:friend :limit 2) [:name]}``, or in Python
``{("friend", "limit", 2): ["name"]}``. Option names may be keywords or plain strings
(``["name", "as", "Name"]``); ``limit`` / ``default`` heads are symbols or plain strings (a
keyword ``:limit`` names an attribute).

Results (DataScript 1.7 semantics)
==================================

* A dict keyed by the attribute as written in the pattern (a ``Keyword`` from EDN text, the
  string given in Python data, or the ``:as`` alias); attributes reached through ``*`` and the
  implicit ``db/id`` are keyed by ``Keyword(ident)``.
* Cardinality-many values and reverse references are lists (in the source's index order), at
  most 1000 of them unless ``:limit`` says otherwise (``:limit nil``: all). The default limit
  applies to every reverse reference that is not a component (DataScript applies it only when
  the forward attribute is cardinality-many); ``:limit`` is accepted on any reverse reference.
* A ref without a sub-pattern gives ``{"db/id": e}``; a component ref (named or through ``*``)
  is pulled recursively with ``[*]``; the reverse of a component attribute is a single value.
* Recursion ``{:friend ...}`` is unbounded, ``{:friend 3}`` bounded. A recursive or
  auto-expanded component entity already seen on the path from the root gives ``{"db/id": e}``;
  past its depth a recursive ref is left out.
* Attributes without a value are left out (unless ``:default``); an entity with nothing to show
  is ``None``, and is left out of its parent's value. ``pull`` of a lookup ref or ident that
  names nothing is ``None``. An entity id is taken as is (DataScript's ``entid``), so
  ``pull(db, "[*]", 999)`` on an absent entity is ``{"db/id": 999}`` and ``[:name]`` is None.
* ``:default`` applies only when the entity has no datom of the attribute; ``:xform`` is applied
  to the value (also to None for an absent forward attribute, keeping a non-None result). An
  ``:xform`` is a Python callable or, as in DataScript, a symbol naming a query function
  (``[:name :xform vector]``; :mod:`query.builtins`, registered functions included); an
  exception it raises becomes a :class:`~query.errors.QueryError`.

Errors: a malformed pattern is a :class:`~query.errors.QueryParseError` naming the offending
form, also for the schema checks (a reverse or map-spec attribute that is not a ref, ``:limit``
on a cardinality-one attribute), which run before anything is read. Pull of a history view is a
:class:`~query.errors.QueryError`.

Evaluation runs breadth-first: every entity of a level (of all the entities of ``pull_many``)
is read with one batched seek per attribute (``search_es``), so a recursion thousands of levels
deep needs no Python recursion, and ``pull_many`` costs few seeks more than one ``pull``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from query.builtins import resolve_function
from query.edn import EDNError, loads
from query.errors import QueryError, QueryParseError
from query.gcpause import gc_paused
from query.source import AttrInfo, DatomSource, DatomTuple, datom_source_of, group_by_attribute
from query.types import Keyword, Symbol

__all__ = [
    "DEFAULT_LIMIT",
    "PullAttr",
    "PullPattern",
    "as_source",
    "parse_pattern",
    "pull",
    "pull_many",
]

DEFAULT_LIMIT: Final = 1000
"""How many values of a cardinality-many attribute (or reverse ref) pull returns by default."""

DB_ID: Final = Keyword("db/id")

_NOTHING: Final = object()


# -- the parsed form -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class PullAttr:
    """One attribute of a pattern. Compared by identity (a recursion counter is kept per
    attribute object, as DataScript keeps one per attribute record)."""

    name: str
    """The attribute ident, without colon; for a reverse ref the *forward* attribute."""
    key: Any
    """The key of the result: the attribute as written, or the ``:as`` alias."""
    reverse: bool = False
    limit: int | None = DEFAULT_LIMIT
    explicit_limit: bool = False
    default: Any = _NOTHING
    xform: Callable[[Any], Any] | Symbol | None = None
    """A callable, or a symbol naming a query function (:mod:`query.builtins`: built-in or
    registered), looked up when the pattern is pulled."""
    pattern: PullPattern | None = None
    """The sub-pattern of a map spec; None: ``[:db/id]`` for refs, ``[*]`` for components."""
    recursive: bool = False
    depth: int | None = None
    """The recursion limit of ``{attr n}``; None with ``recursive`` means unbounded."""
    form: Any = None
    """The spec as written (for error messages)."""
    is_db_id: bool = False
    """Set from ``name`` and ``reverse``: this is ``:db/id``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_db_id", self.name == "db/id" and not self.reverse)

    @property
    def has_default(self) -> bool:
        return self.default is not _NOTHING


@dataclass(frozen=True, slots=True, eq=False)
class PullPattern:
    """A parsed pattern: forward attributes (``db/id`` included), reverse ones, and whether it
    has ``*``. Duplicate keys keep the position of the first spec and the last definition."""

    attrs: tuple[PullAttr, ...]
    reverse: tuple[PullAttr, ...]
    wildcard: bool
    names: frozenset[str]
    """Forward attribute idents named explicitly (``db/id`` excluded)."""
    form: Any = None


_DB_ID_ATTR: Final = PullAttr("db/id", DB_ID, limit=None)
_REF_PATTERN: Final = PullPattern((_DB_ID_ATTR,), (), False, frozenset(), [DB_ID])
_COMPONENT_PATTERN: Final = PullPattern((_DB_ID_ATTR,), (), True, frozenset(), [Symbol("*")])


# -- parsing ---------------------------------------------------------------------------------


def _fail(expected: str, form: Any) -> QueryParseError:
    return QueryParseError(f"Cannot parse pull pattern, expected {expected}", form)


def _is_text(x: Any, *words: str) -> bool:
    """``x`` is one of ``words`` as a symbol or plain string (not a keyword)."""
    return isinstance(x, str) and not isinstance(x, Keyword) and str(x) in words


def _option_name(x: Any) -> str | None:
    if isinstance(x, str) and not isinstance(x, Symbol):
        s = str(x)[1:] if x.startswith(":") else str(x)
        if s in ("as", "limit", "default", "xform"):
            return s
    return None


def _check_limit(value: Any, form: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise _fail("a limit of (positive-number | nil)", form)


def _attr_name(x: str) -> PullAttr:
    name = x[1:] if x.startswith(":") else str(x)
    if not name or name == "/" or any(c.isspace() for c in name):
        raise _fail("an attribute name", x)
    ns, slash, local = name.rpartition("/")
    if local.startswith("_") and len(local) > 1 and name != "db/id":
        forward = f"{ns}/{local[1:]}" if slash else local[1:]
        return PullAttr(forward, x, reverse=True, form=x)
    if name == "db/id":
        return PullAttr(name, x, limit=None, form=x)
    return PullAttr(name, x, form=x)


def _attr_expr(attr: PullAttr, form: Sequence[Any]) -> PullAttr:
    opts = list(form[1:])
    if len(opts) % 2:
        raise _fail("an even number of options in [attr-name attr-option+]", form)
    changes: dict[str, Any] = {"form": form}
    for i in range(0, len(opts), 2):
        key, value = opts[i], opts[i + 1]
        opt = _option_name(key)
        if opt == "as":
            try:
                hash(value)
            except TypeError:
                raise _fail("a hashable value after :as", form) from None
            changes["key"] = value
        elif opt == "limit":
            changes["limit"] = _check_limit(value, form)
            changes["explicit_limit"] = True
        elif opt == "default":
            changes["default"] = value
        elif opt == "xform":
            if not (callable(value) or isinstance(value, Symbol)):
                raise _fail("a callable or a function symbol after :xform", form)
            changes["xform"] = value
        else:
            raise _fail("one of :as, :limit, :default, :xform", form)
    return _replace(attr, changes)


def _replace(attr: PullAttr, changes: Mapping[str, Any]) -> PullAttr:
    fields = {
        "name": attr.name,
        "key": attr.key,
        "reverse": attr.reverse,
        "limit": attr.limit,
        "explicit_limit": attr.explicit_limit,
        "default": attr.default,
        "xform": attr.xform,
        "pattern": attr.pattern,
        "recursive": attr.recursive,
        "depth": attr.depth,
        "form": attr.form,
    }
    fields.update(changes)
    return PullAttr(**fields)


def _attr_spec(x: Any) -> PullAttr | None:
    """An attribute spec, or None if ``x`` is not one (a map, ``*``, a number, ...)."""
    if isinstance(x, str):
        if isinstance(x, Symbol) or _is_text(x, "limit", "default", "*", "..."):
            return None
        return _attr_name(x)
    if isinstance(x, list | tuple):
        if not x:
            raise _fail("a non-empty attribute expression", x)
        head = _attr_spec(x[0])
        if head is not None:
            return _attr_expr(head, x)
        if _is_text(x[0], "limit"):
            if len(x) != 3:
                raise _fail("(limit attr-name (positive-number | nil))", x)
            inner = _attr_spec(x[1])
            if inner is None:
                raise _fail("(limit attr-name (positive-number | nil))", x)
            limit = _check_limit(x[2], x)
            return _replace(inner, {"limit": limit, "explicit_limit": True, "form": x})
        if _is_text(x[0], "default"):
            if len(x) != 3:
                raise _fail("(default attr-name any-value)", x)
            inner = _attr_spec(x[1])
            if inner is None:
                raise _fail("(default attr-name any-value)", x)
            return _replace(inner, {"default": x[2], "form": x})
        raise _fail(
            "[attr-name attr-option+] | (limit attr-name (positive-number | nil)) | "
            "(default attr-name any-value)",
            x,
        )
    return None


def _map_spec(key: Any, value: Any) -> PullAttr:
    attr = _attr_spec(key)
    if attr is None:
        raise _fail("attr-name | attr-expr as a map-spec key", {key: value})
    if attr.is_db_id:
        raise _fail("an attribute having :db.type/ref", key)
    if _is_text(value, "..."):
        return _replace(attr, {"recursive": True, "depth": None})
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise _fail("(positive-number | ...)", {key: value})
        return _replace(attr, {"recursive": True, "depth": value})
    if isinstance(value, list | tuple):
        return _replace(attr, {"pattern": _parse(value)})
    raise _fail("a pattern or recursion limit (positive-number | ...)", {key: value})


def _add(attrs: list[PullAttr], attr: PullAttr) -> None:
    for i, old in enumerate(attrs):
        if old.key == attr.key and type(old.key) is type(attr.key):
            attrs[i] = attr
            return
    attrs.append(attr)


def _parse(form: Any) -> PullPattern:
    if not isinstance(form, list | tuple):
        raise _fail("a pattern to be a vector", form)
    attrs: list[PullAttr] = []
    reverse: list[PullAttr] = []
    wildcard = False
    for spec in form:
        if isinstance(spec, str) and str(spec) in ("*", ":*"):
            wildcard = True
            continue
        if isinstance(spec, dict):
            for k, v in spec.items():
                a = _map_spec(k, v)
                _add(reverse if a.reverse else attrs, a)
            continue
        a0 = _attr_spec(spec)
        if a0 is None:
            raise _fail("attr-name | attr-expr | map-spec | *", spec)
        _add(reverse if a0.reverse else attrs, a0)
    if wildcard and not any(a.is_db_id for a in attrs):
        attrs.insert(0, _DB_ID_ATTR)
    names = frozenset(a.name for a in attrs if not a.is_db_id)
    return PullPattern(tuple(attrs), tuple(reverse), wildcard, names, form)


_CACHE: OrderedDict[Any, PullPattern] = OrderedDict()
_CACHE_SIZE = 1024


def _freeze(x: Any) -> Any:
    """A hashable key for pattern data that tells Keyword, Symbol and str apart."""
    if isinstance(x, list | tuple):
        return (type(x).__name__, tuple(_freeze(i) for i in x))
    if isinstance(x, dict):
        return ("dict", tuple((_freeze(k), _freeze(v)) for k, v in x.items()))
    if isinstance(x, set | frozenset):
        return ("set", frozenset(_freeze(i) for i in x))
    hash(x)
    return (type(x), x)


def parse_pattern(pattern: Any) -> PullPattern:
    """Parse a pull pattern (EDN text or Python data), cached. Raises QueryParseError."""
    if isinstance(pattern, PullPattern):
        return pattern
    try:
        key: Any = ("text", pattern) if type(pattern) is str else _freeze(pattern)
    except TypeError:
        key = None
    if key is not None:
        got = _CACHE.get(key)
        if got is not None:
            _CACHE.move_to_end(key)
            return got
    if isinstance(pattern, str) and not isinstance(pattern, Keyword | Symbol):
        try:
            data = loads(pattern)
        except EDNError as exc:
            raise QueryParseError(f"Cannot parse pull pattern: {exc}", pattern) from exc
    else:
        data = copy.deepcopy(pattern)
    parsed = _parse(data)
    if key is not None:
        _CACHE[key] = parsed
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return parsed


# -- schema checks ---------------------------------------------------------------------------


def _validate(src: DatomSource, pattern: PullPattern) -> None:
    """DataScript's schema-dependent parse checks, over every sub-pattern."""
    todo = [pattern]
    done: set[int] = set()
    while todo:
        p = todo.pop()
        if id(p) in done:
            continue
        done.add(id(p))
        for a in (*p.attrs, *p.reverse):
            if isinstance(a.xform, Symbol):
                try:
                    resolve_function(a.xform)
                except QueryError:
                    raise QueryParseError(
                        "Cannot parse pull pattern, cannot resolve the :xform function", a.xform
                    ) from None
            if a.is_db_id:
                continue
            info = src.attr(a.name)
            is_ref = info is not None and info.ref
            if a.reverse and not is_ref:
                raise _fail("a reverse attribute having :db.type/ref", a.form)
            if (a.pattern is not None or a.recursive) and not is_ref:
                raise _fail("an attribute having :db.type/ref in a map spec", a.form)
            if a.explicit_limit and not a.reverse and not (info is not None and info.many):
                raise _fail("a limit attribute having :db.cardinality/many", a.form)
            if a.pattern is not None:
                todo.append(a.pattern)


# -- evaluation ------------------------------------------------------------------------------


def as_source(db: Any) -> DatomSource:
    """The DatomSource of ``db``: itself, or what its ``__datom_source__()`` returns."""
    src = datom_source_of(db)
    if src is None:
        raise QueryError("pull needs a database or a DatomSource", type(db).__name__)
    return src


_WILD: dict[str, PullAttr] = {}


def _wild_attr(a: str) -> PullAttr:
    got = _WILD.get(a)
    if got is None:
        got = PullAttr(a, Keyword(a))
        if len(_WILD) > 100_000:
            _WILD.clear()
        _WILD[a] = got
    return got


def _xform(attr: PullAttr, v: Any) -> Any:
    fn = attr.xform
    if fn is None:
        return v
    if isinstance(fn, Symbol):
        fn = resolve_function(fn)
    try:
        return fn(v)
    except QueryError:
        raise
    except Exception as exc:
        raise QueryError(f"pull :xform of {attr.key!r} failed: {exc}", attr.form) from exc


_NO_SEEN: frozenset[int] = frozenset()
_NO_LIMITS: dict[int, int] = {}  # never changed: a node's limits are replaced, not updated


class _Node:
    """One entity being pulled with one pattern; ``acc`` is its result, where refs hold
    ``_Ref`` placeholders until the children are finished (bottom-up)."""

    __slots__ = ("acc", "eid", "limits", "pattern", "refs", "seen", "value")

    def __init__(
        self, eid: int, pattern: PullPattern, seen: frozenset[int], limits: dict[int, int]
    ) -> None:
        self.eid = eid
        self.pattern = pattern
        self.seen = seen
        self.limits = limits
        self.acc: dict[Any, Any] = {}
        self.refs = False
        self.value: dict[Any, Any] | None = None


class _Ref:
    """A ref value waiting for its children: one (``many`` False) or a list."""

    __slots__ = ("attr", "items", "many")

    def __init__(self, attr: PullAttr, items: list[_Node | dict[Any, Any] | None], many: bool):
        self.attr = attr
        self.items = items
        self.many = many

    def resolve(self) -> Any:
        vals = [i.value if isinstance(i, _Node) else i for i in self.items]
        if self.many:
            kept = [v for v in vals if v is not None]
            return kept or None
        return vals[0] if vals else None


def _fresh(v: Any) -> Any:
    return copy.deepcopy(v) if isinstance(v, list | dict | set) else v


class _Run:
    def __init__(self, src: DatomSource) -> None:
        self.src = src
        self.info: dict[str, AttrInfo | None] = {}
        self.created: list[_Node] = []
        self._plain: dict[int, bool] = {}
        #: attribute reached through ``*`` -> (its PullAttr, result key, plain)
        self._wild: dict[str, tuple[PullAttr, Any, bool]] = {}
        #: an entity's datoms by attribute, in one seek and cached (``DBSource.entity_attrs``),
        #: if the source has that shortcut
        self._entity_attrs = getattr(src, "entity_attrs", None)

    def plain(self, attr: PullAttr) -> bool:
        """A cardinality-one, non-ref attribute without xform: its value goes in as is."""
        got = self._plain.get(id(attr))
        if got is None:
            info = self.attr(attr.name)
            got = attr.xform is None and not (info is not None and (info.many or info.ref))
            self._plain[id(attr)] = got
        return got

    def attr(self, a: str) -> AttrInfo | None:
        try:
            return self.info[a]
        except KeyError:
            got = self.info[a] = self.src.attr(a)
            return got

    def child(
        self, node: _Node, attr: PullAttr, eid: int, component: bool, out: list[_Node]
    ) -> _Node | dict[Any, Any] | None:
        """DataScript's ``ref-frame``: the entity ``eid`` reached from ``node`` by ``attr``."""
        if attr.pattern is not None:
            sub = attr.pattern
        elif attr.recursive:
            sub = node.pattern
        elif component and not attr.reverse:
            sub = _COMPONENT_PATTERN
        else:
            sub = _REF_PATTERN
        auto = attr.recursive or (component and sub.wildcard)
        if not auto:
            n = _Node(eid, sub, node.seen, node.limits)
        else:
            if eid in node.seen:
                return {DB_ID: eid}
            key = id(attr)
            lim = node.limits.get(key)
            if lim is not None and lim <= 0:
                return None
            limits = node.limits
            if lim is not None:
                limits = {**limits, key: lim - 1}
            elif attr.depth is not None:
                limits = {**limits, key: attr.depth - 1}
            n = _Node(eid, sub, node.seen | {eid}, limits)
        out.append(n)
        return n

    def put(
        self, node: _Node, attr: PullAttr, datoms: Sequence[DatomTuple], out: list[_Node]
    ) -> None:
        """Record forward attribute ``attr`` of ``node`` from its datoms."""
        acc = node.acc
        if not datoms:
            if attr.has_default:
                acc[attr.key] = _fresh(attr.default)
            elif attr.xform is not None:
                v = _xform(attr, None)
                if v is not None:
                    acc[attr.key] = v
            return
        info = self.attr(attr.name)
        many = info is not None and info.many
        ref = info is not None and info.ref
        if many:
            vals = [d[2] for d in datoms]
            if attr.limit is not None and len(vals) > attr.limit:
                vals = vals[: attr.limit]
            if not ref:
                self.set(acc, attr, vals)
                return
            comp = info is not None and info.component
            items = [self.child(node, attr, v, comp, out) for v in vals]
            acc[attr.key] = _Ref(attr, items, True)
            node.refs = True
            return
        v = datoms[0][2]
        if ref:
            comp = info is not None and info.component
            acc[attr.key] = _Ref(attr, [self.child(node, attr, v, comp, out)], False)
            node.refs = True
        else:
            self.set(acc, attr, v)

    @staticmethod
    def set(acc: dict[Any, Any], attr: PullAttr, v: Any) -> None:
        if attr.xform is not None:
            v = _xform(attr, v)
        if v is not None:
            acc[attr.key] = v

    async def level(self, wave: list[_Node]) -> list[_Node]:
        """Read every node of one level; return the nodes of the next."""
        src = self.src
        whole: dict[int, Mapping[str, Sequence[DatomTuple]]] = {}
        # the nodes of each (non-wildcard) pattern: their attributes are read together
        groups: dict[int, tuple[PullPattern, list[int]]] = {}
        entity_attrs = self._entity_attrs
        for n in wave:
            p = n.pattern
            if p.wildcard:
                if n.eid not in whole:
                    if entity_attrs is not None and type(n.eid) is int:
                        whole[n.eid] = await entity_attrs(n.eid)
                        continue
                    whole[n.eid] = group_by_attribute(await src.search(e=n.eid))
            else:
                g = groups.get(id(p))
                if g is None:
                    groups[id(p)] = (p, [n.eid])
                else:
                    g[1].append(n.eid)
        need: dict[str, set[int]] = {}
        for p, es in groups.values():
            for a in p.names:
                got = need.get(a)
                if got is None:
                    need[a] = set(es)
                else:
                    got.update(es)
        by_attr: dict[str, Mapping[int, Sequence[DatomTuple]]] = {}
        for a, ess in need.items():
            if len(ess) == 1:
                (e,) = ess
                by_attr[a] = {e: await src.search(e=e, a=a)}
            else:
                by_attr[a] = await src.search_es(a, sorted(ess))
        # per pattern: (attr, key, its datoms by entity or None for db/id, plain)
        columns: dict[int, list[tuple[PullAttr, Any, Any, bool]]] = {
            key: [
                (attr, attr.key, None if attr.is_db_id else by_attr[attr.name],
                 not attr.is_db_id and self.plain(attr))
                for attr in p.attrs
            ]
            for key, (p, _) in groups.items()
        }  # fmt: skip
        out: list[_Node] = []
        empty: Sequence[DatomTuple] = ()
        for n in wave:
            p = n.pattern
            if p.wildcard:
                mine = whole[n.eid]
                acc = n.acc
                for attr in p.attrs:
                    if attr.is_db_id:
                        self.set(acc, attr, n.eid)
                    else:
                        self.put(n, attr, mine.get(attr.name, empty), out)
                names = p.names
                wild = self._wild
                for a, ds in mine.items():
                    if a in names:
                        continue
                    w = wild.get(a)
                    if w is None:
                        wa = _wild_attr(a)
                        w = wild[a] = (wa, wa.key, self.plain(wa))
                    if w[2] and len(ds) == 1:
                        acc[w[1]] = ds[0][2]  # a plain value, without put's checks
                    else:
                        self.put(n, w[0], ds, out)
            else:
                acc = n.acc
                e = n.eid
                for attr, key, by_e, plain in columns[id(p)]:
                    if by_e is None:
                        self.set(acc, attr, e)
                        continue
                    got = by_e.get(e)
                    if got:
                        if plain:
                            acc[key] = got[0][2]  # the common case, without put's checks
                        else:
                            self.put(n, attr, got, out)
                    else:
                        self.put(n, attr, empty, out)
            for attr in p.reverse:
                await self.put_reverse(n, attr, out)
        return out

    async def put_reverse(self, node: _Node, attr: PullAttr, out: list[_Node]) -> None:
        datoms = await self.src.search(a=attr.name, v=node.eid)
        if not datoms:
            if attr.has_default:
                node.acc[attr.key] = _fresh(attr.default)
            return
        info = self.attr(attr.name)
        comp = info is not None and info.component
        if comp:
            node.acc[attr.key] = _Ref(
                attr, [self.child(node, attr, datoms[0][0], True, out)], False
            )
            node.refs = True
            return
        es = [d[0] for d in datoms]
        if attr.limit is not None and len(es) > attr.limit:
            es = es[: attr.limit]
        node.acc[attr.key] = _Ref(attr, [self.child(node, attr, e, False, out) for e in es], True)
        node.refs = True

    async def run(
        self, pattern: PullPattern, eids: list[int | None]
    ) -> list[dict[Any, Any] | None]:
        roots: list[_Node | None] = []
        wave: list[_Node] = []
        for e in eids:
            if e is None:
                roots.append(None)
            else:
                n = _Node(e, pattern, _NO_SEEN, _NO_LIMITS)
                roots.append(n)
                wave.append(n)
        created = self.created
        while wave:
            created.extend(wave)
            wave = await self.level(wave)
        # children were created after their parents: finish them first
        for n in reversed(created):
            acc = n.acc
            if not n.refs:
                n.value = acc or None
                continue
            for k, v in list(acc.items()):
                if isinstance(v, _Ref):
                    val = v.resolve()
                    if v.attr.xform is not None:
                        val = _xform(v.attr, val)
                    if val is None:
                        del acc[k]
                    else:
                        acc[k] = val
            n.value = acc or None
        return [None if r is None else r.value for r in roots]


async def _prepare(db: Any, pattern: Any) -> tuple[DatomSource, PullPattern]:
    src = as_source(db)
    parsed = parse_pattern(pattern)
    if src.is_history:
        raise QueryError("pull is not supported on a history database")
    _validate(src, parsed)
    return src, parsed


async def pull(db: Any, pattern: Any, eid: Any) -> dict[Any, Any] | None:
    """The entity ``eid`` of ``db`` shaped by ``pattern`` (see the module docstring), or None
    when the lookup ref or ident names nothing or the pattern finds nothing."""
    src, parsed = await _prepare(db, pattern)
    e = await src.entid(eid)
    with gc_paused():
        return (await _Run(src).run(parsed, [e]))[0]


async def pull_many(db: Any, pattern: Any, eids: Iterable[Any]) -> list[dict[Any, Any] | None]:
    """``pull`` of each of ``eids``, in order (None where ``pull`` gives None), batched."""
    src, parsed = await _prepare(db, pattern)
    resolved: list[int | None] = []
    for x in eids:
        resolved.append(x if type(x) is int else await src.entid(x))
    with gc_paused():
        return await _Run(src).run(parsed, resolved)
