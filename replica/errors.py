"""The database layer's errors, all under :class:`ReplicaError` (DESIGN.md section 9).

Facts go on the error as attributes (``UniqueConflict(attribute=, value=, existing=)``) and the
message is built from them; a builtin is mixed in where callers expect one
(``NoSuchBranch`` is a ``LookupError``). DataScript's error tags are the list of kinds:
``:transact/syntax`` -> TxDataError, ``:transact/unique`` -> UniqueConflict,
``:transact/upsert`` -> UpsertConflict, ``:lookup-ref/missing`` -> LookupRefNotFound,
``:transact/cas`` -> CasFailed, ``:schema/validation`` -> SchemaError.
"""

from __future__ import annotations

from typing import Any

from store.errors import (
    CodecError,
    CorruptNode,
    NodeNotFound,
    ReplicaError,
    StoreClosed,
    StoreError,
    TreeError,
)

__all__ = [
    "BranchError",
    "BranchExists",
    "CasFailed",
    "CodecError",
    "CorruptNode",
    "DatabaseExists",
    "DatabaseNotFound",
    "EntityIdError",
    "LookupRefNotFound",
    "NoSuchBranch",
    "NoSuchCommit",
    "NodeNotFound",
    "ReplicaError",
    "SchemaError",
    "StoreClosed",
    "StoreError",
    "TransactionError",
    "TreeError",
    "TxDataError",
    "TxFunctionError",
    "UniqueConflict",
    "UnknownAttribute",
    "UpsertConflict",
    "ValueTypeError",
]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class SchemaError(ReplicaError):
    """An invalid schema definition or a schema change that is not allowed."""

    def __init__(self, message: str, attribute: str | None = None) -> None:
        super().__init__(message)
        self.attribute = attribute


class TransactionError(ReplicaError):
    """A transaction was rejected; nothing of it was written."""


class TxDataError(TransactionError, ValueError):
    """Malformed transaction data (``:transact/syntax``): names the offending item."""

    def __init__(self, message: str, item: Any = None) -> None:
        super().__init__(message)
        self.item = item

    def __str__(self) -> str:
        base = self.args[0]
        return base if self.item is None else f"{base}: {_show(self.item)}"


class UnknownAttribute(TransactionError, KeyError):
    """Schema-on-write: an attribute that is not in the schema."""

    def __init__(self, attribute: Any, item: Any = None) -> None:
        super().__init__(attribute)
        self.attribute = attribute
        self.item = item

    def __str__(self) -> str:
        where = "" if self.item is None else f" in {_show(self.item)}"
        return f"unknown attribute {self.attribute!r}{where}: transact its schema first"


class ValueTypeError(TransactionError, TypeError):
    """A value does not fit the attribute's value type (or cannot be stored at all)."""

    def __init__(
        self, value: Any, value_type: str | None, reason: str = "", attribute: str | None = None
    ) -> None:
        super().__init__(value, value_type, reason)
        self.value = value
        self.value_type = value_type
        self.reason = reason
        self.attribute = attribute

    def __str__(self) -> str:
        where = f" for attribute {self.attribute!r}" if self.attribute else ""
        want = f" (expected {self.value_type})" if self.value_type else ""
        why = f": {self.reason}" if self.reason else ""
        return f"bad value {_show(self.value)}{where}{want}{why}"


class UniqueConflict(TransactionError):
    """``db.unique/value``: another entity already holds this value (``:transact/unique``)."""

    def __init__(self, attribute: str, value: Any, existing: int) -> None:
        super().__init__(attribute, value, existing)
        self.attribute = attribute
        self.value = value
        self.existing = existing

    def __str__(self) -> str:
        return (
            f"unique conflict: {self.attribute} {_show(self.value)} already belongs to "
            f"entity {self.existing}"
        )


class UpsertConflict(TransactionError):
    """An entity upserts to two different existing entities (``:transact/upsert``)."""

    def __init__(self, entity: Any, first: tuple[str, Any, int], second: tuple[str, Any, int]):
        super().__init__(entity, first, second)
        self.entity = entity
        self.first = first
        self.second = second

    def __str__(self) -> str:
        (a1, v1, e1), (a2, v2, e2) = self.first, self.second
        return (
            f"conflicting upsert for {_show(self.entity)}: {a1} {_show(v1)} resolves to "
            f"entity {e1}, but {a2} {_show(v2)} resolves to entity {e2}"
        )


class LookupRefNotFound(TransactionError, LookupError):
    """A lookup ref names no entity (``:lookup-ref/missing``)."""

    def __init__(self, ref: Any) -> None:
        super().__init__(ref)
        self.ref = ref

    def __str__(self) -> str:
        return f"nothing found for lookup ref {_show(self.ref)}"


class EntityIdError(TransactionError, ValueError):
    """An entity id that is neither an existing id, a tempid nor a lookup ref."""

    def __init__(self, entity: Any, reason: str) -> None:
        super().__init__(entity, reason)
        self.entity = entity
        self.reason = reason

    def __str__(self) -> str:
        return f"bad entity id {_show(self.entity)}: {self.reason}"


class CasFailed(TransactionError):
    """``db/cas``: the current value is not the expected one (``:transact/cas``)."""

    def __init__(self, entity: int, attribute: str, expected: Any, current: Any) -> None:
        super().__init__(entity, attribute, expected, current)
        self.entity = entity
        self.attribute = attribute
        self.expected = expected
        self.current = current

    def __str__(self) -> str:
        return (
            f"cas failed on entity {self.entity} {self.attribute}: expected "
            f"{_show(self.expected)}, current value is {_show(self.current)}"
        )


class TxFunctionError(TransactionError):
    """``db.fn/call`` of an unregistered function, or the function failed."""


class BranchError(ReplicaError):
    """A branch operation failed."""


class NoSuchBranch(BranchError, LookupError):
    def __init__(self, branch: str) -> None:
        super().__init__(branch)
        self.branch = branch

    def __str__(self) -> str:
        return f"no branch named {self.branch!r}"


class BranchExists(BranchError):
    def __init__(self, branch: str) -> None:
        super().__init__(branch)
        self.branch = branch

    def __str__(self) -> str:
        return f"branch {self.branch!r} already exists"


class NoSuchCommit(BranchError, LookupError):
    def __init__(self, commit: Any) -> None:
        super().__init__(commit)
        self.commit = commit

    def __str__(self) -> str:
        shown = self.commit.hex() if isinstance(self.commit, bytes) else _show(self.commit)
        return f"no commit {shown} in this database"


class DatabaseNotFound(ReplicaError, LookupError):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url

    def __str__(self) -> str:
        return f"no database at {self.url} (pass create=True to create one)"


class DatabaseExists(ReplicaError):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url

    def __str__(self) -> str:
        return f"a database already exists at {self.url}"
