"""Fixtures that run one test against every NodeStore backend (DESIGN.md section 3).

A test asking for ``store``, ``store_url`` or ``reopen`` runs three times, ids ``mem``, ``file``
and ``s3``; all three fixtures share the one ``backend`` parameter, so a test using several of
them sees one backend. ``-k mem`` runs only the in-memory variant.

* ``store``: an open store on a fresh, empty location, closed after the test. For ``mem`` it
  is the anonymous ``mem://`` store, which ``reopen`` cannot reach: a test needing two objects
  on shared data opens both with ``reopen``.
* ``store_url``: the URL of a fresh location, for tests that open, close and reopen. For ``mem``
  it is a uniquely named ``mem://`` store, so separate store objects share the data.
* ``reopen``: ``await reopen()`` opens one more independent store object on ``store_url``;
  every object it opened is closed after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from store.base import NodeStore, open_store

BACKENDS = ("mem", "file", "s3")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "mem":
        return f"mem://conformance-{uuid.uuid4().hex}"
    if backend == "file":
        return "file://" + str(tmp_path / "store")
    # tests/conftest.py: a fresh bucket on the local moto server. Resolved here, in a sync
    # fixture, so pytest-asyncio runs the async s3_url fixture outside any running event loop.
    return str(request.getfixturevalue("s3_url"))


@pytest_asyncio.fixture
async def store(backend: str, store_url: str) -> AsyncIterator[NodeStore]:
    # mem: the anonymous store, the one most tests of higher layers use.
    opened = await open_store("mem://" if backend == "mem" else store_url)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest_asyncio.fixture
async def reopen(store_url: str) -> AsyncIterator[Callable[[], Awaitable[NodeStore]]]:
    opened: list[NodeStore] = []

    async def open_another() -> NodeStore:
        another = await open_store(store_url)
        opened.append(another)
        return another

    try:
        yield open_another
    finally:
        for one in opened:
            await one.aclose()
