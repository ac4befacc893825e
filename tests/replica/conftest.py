"""Fixtures for the database tests: every test runs on the memory and the file store.

``db_url`` is a fresh, not yet created database URL (``mem://<unique>`` so that several
connections share it, or ``file://<tmp>/db``); ``s3_db_url`` (opt-in, for a subset) is one on
the local moto server. ``make_conn(schema=None, **options)`` connects with create=True and
closes the connection at teardown.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import replica


@pytest.fixture(params=["mem", "file"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "mem":
        return f"mem://test-{uuid.uuid4().hex}"
    return (tmp_path / "db").as_uri()


@pytest.fixture
def s3_db_url(s3_url: str) -> str:
    return s3_url


MakeConn = Callable[..., Awaitable[replica.Connection]]


@pytest_asyncio.fixture
async def make_conn(db_url: str) -> AsyncIterator[MakeConn]:
    opened: list[replica.Connection] = []

    async def make(schema: Any = None, **options: Any) -> replica.Connection:
        conn = await replica.connect(db_url, create=True, schema=schema, **options)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        await conn.aclose()
