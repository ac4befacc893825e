"""replica: an immutable, versioned Datalog database for Python that replicates.

This module is the front door: it only re-exports. ``import replica`` is all a user needs; the
layers are ``store`` (bytes and trees), ``query`` (Datalog), ``replica`` (the database) and
``sync`` (replication). What exists so far: the storage foundation, the database (datoms, schema,
transactions, DB values, commits, branches) and Datalog queries.
"""

from __future__ import annotations

from query.builtins import register_aggregate, register_function
from query.edn import EDNError
from query.engine import Plan, explain, q
from query.errors import QueryError, QueryParseError
from query.pull import pull, pull_many
from query.types import Keyword, Symbol
from replica.connection import (
    Connection,
    Diff,
    MergeReport,
    TxReport,
    connect,
    create_database,
    database_exists,
    delete_database,
    diff,
    load_entities,
    with_tx,
)
from replica.datom import Datom, Stamp
from replica.db import DB, DatomIter, Entity
from replica.errors import (
    BranchError,
    BranchExists,
    CasFailed,
    CodecError,
    CorruptNode,
    DatabaseExists,
    DatabaseNotFound,
    EntityIdError,
    LookupRefNotFound,
    NodeNotFound,
    NoSuchBranch,
    NoSuchCommit,
    ReplicaError,
    SchemaError,
    StoreClosed,
    StoreError,
    TransactionError,
    TreeError,
    TxDataError,
    TxFunctionError,
    UniqueConflict,
    UnknownAttribute,
    UpsertConflict,
    ValueTypeError,
)
from replica.merge import (
    Conflict,
    MergeConflict,
    MergeError,
    conflicts,
    register_resolver,
    unregister_resolver,
)
from replica.schema import Attribute, Schema
from store.base import NodeStore, open_store
from store.nodes import Nodes, TreeConfig
from store.tree import Tree, new_nodes

__version__ = "0.1.0"

#: names re-exported from sync/ (which imports replica, so they are loaded on first use)
_FROM_SYNC = frozenset(
    {
        "serve",
        "connect_peer",
        "sync_once",
        "Permissions",
        "Limits",
        "SyncError",
        "LocalProtocolError",
        "RemoteProtocolError",
        "PeerClosed",
    }
)


def __getattr__(name: str) -> object:
    if name in _FROM_SYNC:
        import importlib

        return getattr(importlib.import_module("sync"), name)
    raise AttributeError(f"module 'replica' has no attribute {name!r}")


__all__ = [
    "DB",
    "Attribute",
    "BranchError",
    "BranchExists",
    "CasFailed",
    "CodecError",
    "Conflict",
    "Connection",
    "CorruptNode",
    "DatabaseExists",
    "DatabaseNotFound",
    "Datom",
    "DatomIter",
    "Diff",
    "EDNError",
    "Entity",
    "EntityIdError",
    "Keyword",
    "LookupRefNotFound",
    "MergeConflict",
    "MergeError",
    "MergeReport",
    "NoSuchBranch",
    "NoSuchCommit",
    "NodeNotFound",
    "NodeStore",
    "Nodes",
    "Plan",
    "QueryError",
    "QueryParseError",
    "ReplicaError",
    "Schema",
    "SchemaError",
    "Stamp",
    "StoreClosed",
    "StoreError",
    "Symbol",
    "TransactionError",
    "Tree",
    "TreeConfig",
    "TreeError",
    "TxDataError",
    "TxFunctionError",
    "TxReport",
    "UniqueConflict",
    "UnknownAttribute",
    "UpsertConflict",
    "ValueTypeError",
    "__version__",
    "conflicts",
    "connect",
    "create_database",
    "database_exists",
    "delete_database",
    "diff",
    "explain",
    "load_entities",
    "new_nodes",
    "open_store",
    "pull",
    "pull_many",
    "q",
    "register_aggregate",
    "register_function",
    "register_resolver",
    "unregister_resolver",
    "with_tx",
]
