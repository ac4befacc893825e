"""Shared pieces of the transaction table tests (test_upsert.py, test_lookup_refs.py, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

import replica
from replica import ReplicaError
from tests.replica.conftest import MakeConn

__all__ = ["Id", "MakeConn", "all_datoms", "assert_rejected", "bind"]


@dataclass(frozen=True)
class Id:
    """The id of a setup entity, by its tempid label (ids are 128-bit and random)."""

    label: str


def bind(data: Any, ids: Mapping[str, int]) -> Any:
    """``data`` with every Id replaced by the entity id."""
    if isinstance(data, Id):
        return ids[data.label]
    if isinstance(data, dict):
        return {k: bind(v, ids) for k, v in data.items()}
    if isinstance(data, list):
        return [bind(x, ids) for x in data]
    if isinstance(data, tuple):
        return tuple(bind(x, ids) for x in data)
    if isinstance(data, frozenset):
        return frozenset(bind(x, ids) for x in data)
    return data


async def all_datoms(db: replica.DB) -> set[tuple[int, str, Any]]:
    return {(d.e, d.a, d.v) for d in await db.datoms("eavt")}


async def assert_rejected(
    conn: replica.Connection, tx: Any, error: type[ReplicaError], *fragments: str
) -> ReplicaError:
    """``tx`` fails with exactly ``error``, whose message holds every fragment; the branch,
    the connection's DB, its schema and the datoms are as before. Returns the error."""
    commit, schema, datoms = conn.db.commit_id, conn.db.schema, await all_datoms(conn.db)
    with pytest.raises(ReplicaError) as info:
        await conn.transact(tx)
    assert type(info.value) is error, repr(info.value)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert conn.db.commit_id == commit
    assert (await conn.refresh()).commit_id == commit
    assert conn.db.schema == schema
    assert await all_datoms(conn.db) == datoms
    return info.value
