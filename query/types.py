"""Small value types of the data model that Python lacks (DESIGN.md section 2).

``Keyword`` and ``Symbol`` subclass ``str`` so that the one EDN <-> Python mapping holds: the
EDN keyword ``:person/name`` is ``Keyword("person/name")``, which *is* the string
``"person/name"`` wherever Python data is accepted (attribute names, map keys, op names), and
is still recognisable as a keyword where the difference matters (a keyword-typed value).
"""

from __future__ import annotations


class Keyword(str):
    """An EDN keyword, without its leading colon: ``Keyword("person/name")`` is ``:person/name``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Keyword({str.__repr__(self)})"

    @property
    def namespace(self) -> str | None:
        ns, sep, _ = self.rpartition("/")
        return ns if sep and ns else None

    @property
    def name(self) -> str:
        ns, sep, name = self.rpartition("/")
        return name if sep and ns else str(self)


class Symbol(str):
    """An EDN symbol: ``?x``, ``_``, ``$``, ``%``, function names in queries."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Symbol({str.__repr__(self)})"
