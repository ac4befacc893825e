"""In-memory node store: ``mem://`` (fresh) or ``mem://name`` (shared by name in this process).

For unit tests and speculative work; nothing survives the process. It is still a full NodeStore:
the conformance suite runs against it like against the durable backends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

import anyio

from store.base import check_address, check_batch, check_ref_name, check_ref_value
from store.errors import NodeNotFound, StoreClosed, StoreError


class _Shared:
    def __init__(self) -> None:
        self.nodes: dict[bytes, bytes] = {}
        self.refs: dict[str, bytes] = {}


_NAMED: dict[str, _Shared] = {}


class MemoryStore:
    """A NodeStore in a dict. ``put_many`` and ``cas_ref`` never suspend, so they are atomic."""

    def __init__(self, url: str = "mem://", shared: _Shared | None = None) -> None:
        self.url = url
        self._data = shared if shared is not None else _Shared()
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        parts = urlsplit(url)
        if parts.scheme != "mem":
            raise StoreError(f"not a mem:// URL: {url!r}")
        name = (parts.netloc + parts.path).strip("/")
        if not name:
            return cls(url)
        shared = _NAMED.setdefault(name, _Shared())
        return cls(url, shared)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"store {self.url} is closed")

    async def get(self, address: bytes) -> bytes:
        self._check_open()
        try:
            return self._data.nodes[address]
        except KeyError:
            check_address(address)
            raise NodeNotFound(address) from None
        finally:
            await anyio.lowlevel.checkpoint()

    async def get_many(self, addresses: Iterable[bytes]) -> dict[bytes, bytes]:
        self._check_open()
        nodes = self._data.nodes
        out: dict[bytes, bytes] = {}
        for address in addresses:
            data = nodes.get(address)
            if data is None:
                check_address(address)
                raise NodeNotFound(address)
            out[address] = data
        await anyio.lowlevel.checkpoint()
        return out

    async def put_many(self, nodes: Mapping[bytes, bytes]) -> None:
        self._check_open()
        check_batch(nodes)
        self._data.nodes.update(nodes)
        await anyio.lowlevel.checkpoint()

    async def missing(self, addresses: Iterable[bytes]) -> set[bytes]:
        self._check_open()
        have = self._data.nodes
        out = {check_address(a) for a in addresses if a not in have}
        await anyio.lowlevel.checkpoint()
        return out

    async def get_ref(self, name: str) -> bytes | None:
        self._check_open()
        check_ref_name(name)
        await anyio.lowlevel.checkpoint()
        return self._data.refs.get(name)

    async def cas_ref(self, name: str, expected: bytes | None, new: bytes | None) -> bool:
        self._check_open()
        check_ref_name(name)
        check_ref_value(expected, "expected")
        check_ref_value(new, "new")
        await anyio.lowlevel.checkpoint()
        refs = self._data.refs
        if refs.get(name) != expected:
            return False
        if new is None:
            refs.pop(name, None)
        else:
            refs[name] = new
        return True

    async def list_refs(self) -> dict[str, bytes]:
        self._check_open()
        await anyio.lowlevel.checkpoint()
        return dict(self._data.refs)

    async def list_addresses(self) -> set[bytes]:
        self._check_open()
        await anyio.lowlevel.checkpoint()
        return set(self._data.nodes)

    async def delete_many(self, addresses: Iterable[bytes]) -> None:
        self._check_open()
        nodes = self._data.nodes
        for address in addresses:
            nodes.pop(address, None)
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self._closed = True
