"""Generic fixtures for the query tests: databases on the memory and the file store.

* ``db_url``: a fresh, not yet created database URL (``mem://<unique>`` or
  ``file://<tmp>/db``); tests that take it (or ``make_conn``) run once per store.
* ``new_db_url()``: another fresh URL of the same kind as ``db_url``, for tests that need
  several databases.
* ``make_conn(schema=None, url=None, **options)``: connects to ``url`` (default ``db_url``)
  with create=True; every connection is closed at teardown.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import replica

MakeConn = Callable[..., Awaitable[replica.Connection]]


@pytest.fixture(params=["mem", "file"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "mem":
        return f"mem://test-{uuid.uuid4().hex}"
    return (tmp_path / "db").as_uri()


@pytest.fixture
def new_db_url(db_url: str, tmp_path: Path) -> Callable[[], str]:
    def new() -> str:
        if db_url.startswith("mem://"):
            return f"mem://test-{uuid.uuid4().hex}"
        return (tmp_path / f"db-{uuid.uuid4().hex[:12]}").as_uri()

    return new


@pytest_asyncio.fixture
async def make_conn(db_url: str) -> AsyncIterator[MakeConn]:
    opened: list[replica.Connection] = []

    async def make(
        schema: Any = None, url: str | None = None, **options: Any
    ) -> replica.Connection:
        conn = await replica.connect(url or db_url, create=True, schema=schema, **options)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        await conn.aclose()
