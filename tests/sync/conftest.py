"""Fixtures of the sync tests.

* ``store_kind``: every in-process sync test runs on ``mem`` and ``file`` stores.
* ``open_db(name, schema=None)``: connect (create=True) to a fresh database of that kind,
  ``mem://sync-<uuid>-<name>`` or ``file://<tmp>/<name>``; closed at teardown.
* ``tls``: a trustme CA, a server SSL context whose certificate is for 127.0.0.1, and a client
  SSL context that trusts only that CA (once per session: generating keys is not free).

Every test here touches sockets: the default pytest-timeout of pyproject applies, and the
tests bound each wait with ``anyio.fail_after`` themselves.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme

import replica

OpenDb = Callable[..., Awaitable[replica.Connection]]


@pytest.fixture(params=["mem", "file"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def new_url(store_kind: str, tmp_path: Path) -> Callable[[str], str]:
    tag = uuid.uuid4().hex[:12]

    def make(name: str) -> str:
        if store_kind == "mem":
            return f"mem://sync-{tag}-{name}"
        return (tmp_path / name).as_uri()

    return make


@pytest_asyncio.fixture
async def open_db(new_url: Callable[[str], str]) -> AsyncIterator[OpenDb]:
    opened: list[replica.Connection] = []

    async def open_(name: str, schema: Any = None, **options: Any) -> replica.Connection:
        conn = await replica.connect(new_url(name), create=True, schema=schema, **options)
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        await conn.aclose()


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext
    #: a client context that trusts nothing of ours (the system CAs only)
    untrusting: ssl.SSLContext


@pytest.fixture(scope="session")
def tls() -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    other = trustme.CA()
    untrusting = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    other.configure_trust(untrusting)
    return Tls(server, client, untrusting)
