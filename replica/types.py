"""Keyword and Symbol, re-exported from :mod:`query.types` (they live in the query layer, which
reads EDN, so that ``query`` does not import ``replica``)."""

from query.types import Keyword, Symbol

__all__ = ["Keyword", "Symbol"]
