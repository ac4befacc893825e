"""Errors of the query layer, under :class:`replica.ReplicaError` (DESIGN.md section 9).

``QueryParseError`` is raised for a malformed query, rule set or pull pattern and names the
offending form; ``QueryError`` for a well-formed query that cannot be run (unbound variable in a
predicate, unknown function, wrong arity, insufficient bindings, bad input).
"""

from __future__ import annotations

from typing import Any

from store.errors import ReplicaError

__all__ = ["InsufficientBindings", "QueryError", "QueryParseError"]


def _show(form: Any) -> str:
    from query.edn import dumps

    try:
        text = dumps(form)
    except Exception:  # a Python object with no EDN form
        text = repr(form)
    return text if len(text) <= 200 else text[:197] + "..."


class QueryError(ReplicaError):
    """A query could not be evaluated. ``form`` is the offending clause or value (or None)."""

    def __init__(self, message: str, form: Any = None) -> None:
        self.message = message
        self.form = form
        super().__init__(message if form is None else f"{message}: {_show(form)}")


class InsufficientBindings(QueryError):
    """A clause needs a variable bound that nothing bound before it (a predicate or function
    argument, a ``not`` / ``or-join`` / rule variable that must be bound)."""


class QueryParseError(QueryError, ValueError):
    """A query, rule set or pull pattern is malformed. ``form`` is the offending form."""
