"""The EDN reader and writer, re-exported from :mod:`query.edn` (the query layer reads EDN
queries and must not import ``replica``). The mapping is documented there."""

from query.edn import MAX_DEPTH, EDNError, dumps, loads, loads_all

__all__ = ["MAX_DEPTH", "EDNError", "dumps", "loads", "loads_all"]
