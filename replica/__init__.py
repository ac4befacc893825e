"""replica: an immutable, versioned Datalog database for Python that replicates.

This module is the front door: it only re-exports. ``import replica`` is all a user needs; the
layers are ``store`` (bytes and trees), ``query`` (Datalog), ``replica`` (the database) and
``sync`` (replication). What exists so far is the storage foundation.
"""

from __future__ import annotations

from store.base import NodeStore, open_store
from store.errors import (
    CodecError,
    CorruptNode,
    NodeNotFound,
    ReplicaError,
    StoreClosed,
    StoreError,
    TreeError,
)
from store.nodes import Nodes, TreeConfig
from store.tree import Tree, new_nodes

__version__ = "0.1.0"

__all__ = [
    "CodecError",
    "CorruptNode",
    "NodeNotFound",
    "NodeStore",
    "Nodes",
    "ReplicaError",
    "StoreClosed",
    "StoreError",
    "Tree",
    "TreeConfig",
    "TreeError",
    "__version__",
    "new_nodes",
    "open_store",
]
