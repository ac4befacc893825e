"""The root of replica's error hierarchy, and the storage layer's errors.

Every error replica raises derives from :class:`ReplicaError`. The root lives here, in the lowest
layer, so that ``store`` (and every layer above it) can raise it without importing upwards;
``replica`` re-exports all of these names. Third-party exceptions (OSError, botocore, cbor2) are
translated at the edge with ``raise ... from exc`` so callers only ever catch our types.
"""

from __future__ import annotations


class ReplicaError(Exception):
    """Base class of every error raised by replica."""


class StoreError(ReplicaError):
    """A node store could not be opened, read or written."""


class StoreClosed(StoreError):
    """The store was used after ``aclose()``."""


class NodeNotFound(StoreError, KeyError):
    """A node the caller asked for is not in the store."""

    def __init__(self, address: bytes) -> None:
        super().__init__(address)
        self.address = address

    def __str__(self) -> str:
        return f"node {self.address.hex()} not found in the store"


class CorruptNode(StoreError):
    """A node's bytes do not hash to its address, or do not decode as a node."""

    def __init__(self, address: bytes, reason: str) -> None:
        super().__init__(address, reason)
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return f"node {self.address.hex()} is corrupt: {self.reason}"


class CodecError(ReplicaError, ValueError):
    """Bytes are not valid canonical CBOR of the kind we accept, or a value cannot be encoded."""


class TreeError(ReplicaError, ValueError):
    """Invalid input to a tree operation (unsorted build input, a key or value not bytes)."""
