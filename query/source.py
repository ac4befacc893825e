"""What the query engine and pull need from a database: the datom-source protocol.

The query layer knows nothing of commits, trees or stores (DESIGN.md section 1): a database
value (``replica.DB``) is handed to it through an object implementing :class:`DatomSource`,
which ``replica`` builds (``replica/qsource.py``). Every method that may touch the store is a
coroutine; the evaluator awaits only here ("awaits only at index seeks").

Datoms cross this boundary as plain tuples ``(e, a, v, tx, added)`` (not ``Datom`` objects):
that is what joins consume, and building them is the hot path of every query.

Conventions shared by every method:

* ``None`` for ``e``, ``a``, ``v`` or ``tx`` means "any".
* ``a`` is an attribute ident as a ``str`` (``Keyword`` is a ``str``), without a leading colon.
* ``e`` is an entity id (``int``). Lookup refs and idents are resolved first with
  :meth:`DatomSource.entid`.
* ``v`` is a value as stored; for a ref attribute it is the referenced entity id.
* Results come in index order of the index the source chose: callers must not rely on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["AttrInfo", "DatomSource", "DatomTuple", "datom_source_of"]

DatomTuple = tuple[int, str, Any, int, bool]


@dataclass(frozen=True, slots=True)
class AttrInfo:
    """What the query layer needs to know about one attribute of the schema."""

    ident: str
    ref: bool = False
    many: bool = False
    component: bool = False
    unique: str | None = None
    """``"identity"``, ``"value"`` or None."""
    indexed: bool = True
    """Whether AVET range scans by value are cheap for this attribute."""
    tuple_attrs: tuple[str, ...] | None = None
    """For composite tuple attributes, the attributes it is made of."""
    value_type: str | None = None
    """``"db.type/long"``, ``"db.type/string"``, ... or None when undeclared."""


@runtime_checkable
class DatomSource(Protocol):
    """A database as the query engine and pull see it (one DB value, possibly a view)."""

    @property
    def is_history(self) -> bool:
        """True for a history view: datoms include retractions (``added`` False) and the
        same ``(e, a, v)`` may appear several times with different ``tx``."""
        ...

    def attr(self, a: str) -> AttrInfo | None:
        """The attribute's schema, or None if the schema does not know it (not async: the
        schema is in memory)."""
        ...

    def attrs(self) -> Sequence[str]:
        """Every attribute ident of the schema (for wildcard pull)."""
        ...

    async def search(
        self, e: int | None = None, a: str | None = None, v: Any = None, tx: int | None = None
    ) -> Sequence[DatomTuple]:
        """All datoms matching the given components (None = any). ``v`` for a ref attribute
        is an entity id. A value that cannot belong to ``a`` (wrong type) matches nothing."""
        ...

    async def search_es(self, a: str, es: Sequence[int]) -> Mapping[int, Sequence[DatomTuple]]:
        """The datoms of attribute ``a`` of each entity in ``es`` (distinct, any order), as a
        mapping from entity id to its datoms: the batched form of ``search(e, a)`` for joins
        on a bound entity. The mapping may hold other entities too; an entity of ``es``
        without datoms of ``a`` may be missing from it."""
        ...

    async def search_range(
        self,
        a: str,
        lo: Any = None,
        hi: Any = None,
        lo_inclusive: bool = True,
        hi_inclusive: bool = True,
    ) -> Sequence[DatomTuple]:
        """Datoms of ``a`` with ``lo <= v <= hi`` in value order (None = unbounded; the
        ``*_inclusive`` flags make the bound strict). Values are compared in the database's
        value order, so only values of the bound's own type are returned."""
        ...

    async def estimate(self, e: int | None = None, a: str | None = None, v: Any = None) -> int:
        """An upper bound on ``len(await search(e, a, v))``, cheap (O(log n), no scan)."""
        ...

    async def entid(self, x: Any) -> int | None:
        """The entity id of ``x``: an ``int`` as is, a lookup ref ``[attr value]`` (list or
        tuple) through its unique attribute, a keyword through ``db/ident``; None if no such
        entity. Raises ``QueryError`` if ``x`` cannot name an entity at all."""
        ...


def group_by_attribute(datoms: Iterable[DatomTuple]) -> dict[str, list[DatomTuple]]:
    """The asserted datoms among ``datoms`` (an entity's), by attribute, in their order."""
    grouped: dict[str, list[DatomTuple]] = {}
    for d in datoms:
        if d[4]:
            lst = grouped.get(d[1])
            if lst is None:
                grouped[d[1]] = [d]
            else:
                lst.append(d)
    return grouped


def datom_source_of(x: Any) -> DatomSource | None:
    """The DatomSource of a database-like input (what its ``__datom_source__()`` returns, or
    ``x`` itself), or None for anything else."""
    hook = getattr(x, "__datom_source__", None)
    if hook is not None:
        src = hook()
        return src if isinstance(src, DatomSource) else None
    return x if isinstance(x, DatomSource) else None
