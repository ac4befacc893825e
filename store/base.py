"""The NodeStore contract (docs/format.md section 3) and ``open_store(url)``.

A node store holds two things:

* immutable **nodes**: ``address -> bytes`` where ``address == address_of(bytes)``. Putting a node
  twice is harmless (idempotent); nodes never change, they only appear and (through GC) disappear.
* mutable **refs**: ``name -> bytes``, changed only by :meth:`NodeStore.cas_ref`, the single
  compare-and-set that every higher layer (branch heads) builds on.

Every backend passes the conformance suite in ``tests/store/test_conformance.py``.
Rules every backend keeps:

* ``put_many`` returns only when every node of the batch is durable (for durable backends), and a
  batch costs O(1) syncs, not one per node.
* A ref is never made to point at data the store does not hold: callers put nodes first, then
  ``cas_ref``; the backend makes the nodes durable before the ref.
* Nodes read from an untrusted medium (disk, S3) are checked against their address; a mismatch
  raises :class:`CorruptNode`, never returns wrong bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from store.codec import address_of, is_address
from store.errors import CorruptNode, StoreError

#: Ref names: 1-200 characters of letters, digits and ``._-/:@+=``, not starting with '.'
#: and without '..' (so every backend can map a name to a file or key safely).
_REF_NAME = re.compile(r"^(?!\.)(?!.*\.\.)[A-Za-z0-9._\-/:@+=]{1,200}$")


def check_ref_name(name: object) -> str:
    """Return ``name`` if it is a valid ref name, else raise StoreError naming it."""
    if not isinstance(name, str) or not _REF_NAME.match(name) or name.endswith("/"):
        raise StoreError(f"invalid ref name {name!r}: use 1-200 of [A-Za-z0-9._-/:@+=]")
    return name


def check_address(address: object) -> bytes:
    """Return ``address`` if it is a well-formed address, else raise StoreError."""
    if not is_address(address):
        raise StoreError(f"not a node address: {address!r:.80}")
    assert isinstance(address, bytes)
    return address


def check_ref_value(value: object, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    raise StoreError(f"{what} ref value must be bytes or None, got {type(value).__name__}")


def verify_node(address: bytes, data: bytes) -> bytes:
    """Raise CorruptNode unless ``data`` hashes to ``address``; return ``data``."""
    if address_of(data) != address:
        raise CorruptNode(address, "bytes do not hash to the address")
    return data


def check_batch(nodes: Mapping[bytes, bytes]) -> None:
    """Validate a ``put_many`` batch before anything is written (all or nothing)."""
    for address, data in nodes.items():
        check_address(address)
        if not isinstance(data, bytes):
            raise StoreError(f"node {address.hex()} data must be bytes, got {type(data).__name__}")
        if address_of(data) != address:
            raise CorruptNode(address, "put_many: bytes do not hash to the address")


@runtime_checkable
class NodeStore(Protocol):
    """Async content-addressed node store with compare-and-set refs."""

    #: The URL the store was opened from (credentials removed).
    url: str

    async def get(self, address: bytes) -> bytes:
        """The node's bytes. Raises NodeNotFound if absent, CorruptNode if damaged."""
        ...

    async def get_many(self, addresses: Iterable[bytes]) -> dict[bytes, bytes]:
        """Bytes of every address given. Raises NodeNotFound naming the first absent one."""
        ...

    async def put_many(self, nodes: Mapping[bytes, bytes]) -> None:
        """Store a batch of nodes durably; idempotent. Each address must be ``address_of(data)``
        (checked: CorruptNode otherwise, and nothing of the batch is written)."""
        ...

    async def missing(self, addresses: Iterable[bytes]) -> set[bytes]:
        """Which of ``addresses`` this store lacks."""
        ...

    async def get_ref(self, name: str) -> bytes | None:
        """The ref's current value, or None if it does not exist."""
        ...

    async def cas_ref(self, name: str, expected: bytes | None, new: bytes | None) -> bool:
        """Set ``name`` to ``new`` iff its current value is ``expected`` (None = absent).
        ``new=None`` deletes the ref. Returns False, changing nothing, if the value differed.
        Atomic against concurrent callers, including other processes sharing the store."""
        ...

    async def list_refs(self) -> dict[str, bytes]:
        """Every ref and its value."""
        ...

    async def list_addresses(self) -> set[bytes]:
        """Every node address held (for GC)."""
        ...

    async def delete_many(self, addresses: Iterable[bytes]) -> None:
        """Remove nodes (GC only; the caller has proven them unreachable). Absent ones are
        ignored."""
        ...

    async def aclose(self) -> None:
        """Release resources. Idempotent. Later calls raise StoreClosed."""
        ...


async def open_store(url: str, **options: object) -> NodeStore:
    """Open the node store named by ``url``.

    * ``mem://`` or ``mem://name``: in-memory (a name is shared within the process);
    * ``file:///abs/path``: durable directory store (created if absent);
    * ``s3://bucket/prefix?endpoint_url=http://...&region=...``: S3 or an S3-compatible server.

    Raises StoreError, naming the URL, for an unknown scheme or a store that cannot be opened
    (missing bucket, unwritable directory).
    """
    if not isinstance(url, str):
        raise StoreError(f"store URL must be a string, got {type(url).__name__}")
    scheme = urlsplit(url).scheme
    if scheme == "mem":
        from store.memory import MemoryStore

        return MemoryStore.from_url(url)
    if scheme == "file":
        from store.file import FileStore

        return await FileStore.open(url, **options)
    if scheme == "s3":
        from store.s3 import S3Store

        return await S3Store.open(url, **options)
    raise StoreError(f"unknown store URL scheme {scheme!r} in {url!r}: use mem://, file:// or s3://")
