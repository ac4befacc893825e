"""Garbage collection, export/import and verification of a database's store.

All three walk the same graph: refs (branches, and the commit lists of :data:`ROOT_LIST_REFS`)
-> head commits -> parent commits -> each commit's schema node and index tree roots -> tree
nodes. Walks keep one ``seen`` set across commits, so the shared subtrees of consecutive commits
are visited once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from replica.connection import BRANCH_PREFIX, CONFIG_REF, Connection, decode_heads
from replica.errors import ReplicaError
from store.base import NodeStore
from store.codec import address_of, decode, encode, is_address
from store.errors import CodecError, CorruptNode, StoreError
from store.nodes import Nodes, decode_node

EXPORT_FORMAT = 1
_MAGIC = "replica-export"

#: the ref where sync lists the complete commits it received but has not published yet
#: (docs/protocol.md 5.5; ``sync.peer`` uses this name)
PENDING_REF = "sync/pending"
#: refs besides the branches whose value is a CBOR array of commit addresses (read with
#: :func:`decode_commit_list`) that gc keeps, with everything under them, and export copies.
#: Named here rather than registered by sync because gc runs in processes that never import
#: sync (``replica gc``, a script): what keeps a node alive must not depend on what is loaded.
ROOT_LIST_REFS: tuple[str, ...] = (PENDING_REF,)


def decode_commit_list(raw: bytes | None) -> list[bytes]:
    """The addresses in a commit-list ref value; anything else in it is ignored (an absent
    or corrupt list is empty: it is a hint between sessions, not a branch)."""
    if raw is None:
        return []
    try:
        value = decode(raw)
    except CodecError:
        return []
    if not isinstance(value, list):
        return []
    return [a for a in value if is_address(a)]


@dataclass(frozen=True, slots=True)
class GcReport:
    reachable: int
    deleted: int
    kept_in_grace: int


@dataclass(frozen=True, slots=True)
class VerifyReport:
    commits: int
    nodes: int
    bytes: int


async def _walk(
    store: NodeStore, nodes: Nodes, heads: list[bytes], verify: bool = False
) -> AsyncIterator[tuple[bytes, bytes]]:
    """Every node reachable from ``heads`` (commit addresses), as ``(address, bytes)``,
    each once. With ``verify``, bytes are re-checked against their address here too."""
    from replica.commit import decode_commit

    seen: set[bytes] = set()
    commits = list(heads)
    while commits:
        address = commits.pop()
        if address in seen:
            continue
        seen.add(address)
        data = await store.get(address)
        if verify and address_of(data) != address:
            raise CorruptNode(address, "bytes do not hash to the address")
        yield address, data
        commit = decode_commit(address, data)
        commits.extend(commit.parents)
        if commit.schema not in seen:
            seen.add(commit.schema)
            sdata = await store.get(commit.schema)
            if verify and address_of(sdata) != commit.schema:
                raise CorruptNode(commit.schema, "bytes do not hash to the address")
            yield commit.schema, sdata
        frontier = [r for r in commit.roots.values() if r not in seen]
        while frontier:
            frontier = list(dict.fromkeys(a for a in frontier if a not in seen))
            if not frontier:
                break
            seen.update(frontier)
            batch = await store.get_many(frontier)
            nxt: list[bytes] = []
            for a in frontier:
                blob = batch[a]
                if verify and address_of(blob) != a:
                    raise CorruptNode(a, "bytes do not hash to the address")
                yield a, blob
                node = nodes.peek(a) or decode_node(a, blob)
                nxt.extend(c for c in node.children if c not in seen)
            frontier = nxt


async def _all_heads(store: NodeStore) -> list[bytes]:
    """The commits gc keeps and export copies: every branch's heads, and the commits listed
    in :data:`ROOT_LIST_REFS` that are in the store (an entry may name a commit an older gc,
    which did not keep these lists, deleted: it protects nothing and must not stop gc)."""
    heads: list[bytes] = []
    listed: list[bytes] = []
    for name, value in (await store.list_refs()).items():
        if name.startswith(BRANCH_PREFIX):
            heads.extend(decode_heads(value, name[len(BRANCH_PREFIX) :]))
        elif name in ROOT_LIST_REFS:
            listed.extend(decode_commit_list(value))
    if listed:
        listed = list(dict.fromkeys(listed))
        absent = await store.missing(listed)
        heads.extend(a for a in listed if a not in absent)
    return heads


async def _mark(conn: Connection) -> set[bytes]:
    marked: set[bytes] = set()
    async for address, _ in _walk(conn.store, conn.database.nodes, await _all_heads(conn.store)):
        marked.add(address)
    return marked


async def gc(conn: Connection, *, grace_seconds: float = 60.0) -> GcReport:
    """Delete every node unreachable from every branch and from the commits listed in the
    refs of :data:`ROOT_LIST_REFS`: sync's pending commits, received complete but not yet
    published, stay on no branch for as long as the link is down, and the next session tells
    the peer we hold them (so it never resends them); they must outlive any grace period.
    Nodes that exist when gc starts but are unreachable are deleted only after
    ``grace_seconds`` and only if a second marking still finds them unreachable, so a writer
    that put its nodes but has not moved its branch yet (in flight for less than the grace
    period) loses nothing. Nodes written after gc started are never candidates."""
    if grace_seconds < 0:
        raise ReplicaError("grace_seconds must be >= 0")
    candidates = await conn.store.list_addresses()
    marked = await _mark(conn)
    candidates -= marked
    if candidates and grace_seconds:
        await anyio.sleep(grace_seconds)
    if candidates:
        marked = await _mark(conn)
    doomed = candidates - marked
    await conn.store.delete_many(doomed)
    return GcReport(
        reachable=len(marked), deleted=len(doomed), kept_in_grace=len(candidates) - len(doomed)
    )


async def verify(conn: Connection, branch: str | None = None) -> VerifyReport:
    """Walk every commit of ``branch`` (default: the connection's) and every node under
    them, re-reading each from the store and checking its hash. Raises CorruptNode or
    NodeNotFound naming the first bad node."""
    raw = await conn.store.get_ref(BRANCH_PREFIX + (branch or conn.branch_name))
    if raw is None:
        from replica.errors import NoSuchBranch

        raise NoSuchBranch(branch or conn.branch_name)
    heads = decode_heads(raw, branch or conn.branch_name)
    commits = nodes = size = 0
    fresh = Nodes(conn.store, conn.database.nodes.config, cache_bytes=1)
    async for address, data in _walk(conn.store, fresh, heads, verify=True):
        nodes += 1
        size += len(data)
        try:
            body = decode(data)
        except CodecError as exc:
            raise CorruptNode(address, str(exc)) from exc
        if isinstance(body, dict) and body.get("kind") == "commit":
            commits += 1
        elif isinstance(body, list):
            decode_node(address, data)  # structural check of tree nodes
    return VerifyReport(commits=commits, nodes=nodes, bytes=size)


def _frame(value: Any) -> bytes:
    data = encode(value)
    return len(data).to_bytes(4, "big") + data


async def export_db(conn: Connection, path: str | Path) -> int:
    """Write the whole database (every branch, all history, the commits listed in
    :data:`ROOT_LIST_REFS`, so no exported ref names a node left out) to ``path``. The file is a
    sequence of frames (4-byte big-endian length + canonical CBOR): first the header
    ``{"kind": "replica-export", "format": 1, "refs": {name: value}}``, then
    ``[address, bytes]`` for every reachable node. Returns the number of nodes."""
    refs = await conn.store.list_refs()
    header = {"kind": _MAGIC, "format": EXPORT_FORMAT, "refs": refs}
    count = 0
    async with await anyio.open_file(path, "wb") as out:
        await out.write(_frame(header))
        async for address, data in _walk(
            conn.store, conn.database.nodes, await _all_heads(conn.store)
        ):
            await out.write(_frame([address, data]))
            count += 1
    return count


async def _frames(path: str | Path) -> AsyncIterator[Any]:
    async with await anyio.open_file(path, "rb") as f:
        while True:
            head = await f.read(4)
            if not head:
                return
            if len(head) < 4:
                raise ReplicaError(f"{path}: truncated frame header")
            size = int.from_bytes(head, "big")
            body = await f.read(size)
            if len(body) < size:
                raise ReplicaError(f"{path}: truncated frame ({len(body)} of {size} bytes)")
            try:
                yield decode(body)
            except CodecError as exc:
                raise ReplicaError(f"{path}: corrupt frame: {exc}") from exc


async def import_db(store: NodeStore, path: str | Path, *, batch_bytes: int = 8 << 20) -> int:
    """Load an export into ``store`` (which must hold no database): nodes first, in batches
    (each verified against its address by the store), then the refs, the config last so the
    database appears only when complete. Returns the node count."""
    if await store.get_ref(CONFIG_REF) is not None:
        raise ReplicaError(f"{store.url} already holds a database; import needs an empty store")
    frames = _frames(path)
    header = await anext(frames, None)
    if not isinstance(header, dict) or header.get("kind") != _MAGIC:
        raise ReplicaError(f"{path} is not a replica export")
    if header.get("format") != EXPORT_FORMAT:
        raise ReplicaError(f"{path} has export format {header.get('format')!r}")
    count = size = 0
    batch: dict[bytes, bytes] = {}
    async for item in frames:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes)):
            raise ReplicaError(f"{path}: malformed node record after {count} nodes")
        batch[item[0]] = item[1]
        size += len(item[1])
        count += 1
        if size >= batch_bytes:
            await store.put_many(batch)
            batch, size = {}, 0
    if batch:
        await store.put_many(batch)
    refs = header["refs"]
    for name in sorted(refs, key=lambda n: n == CONFIG_REF):  # config last
        if not await store.cas_ref(name, None, refs[name]):
            raise StoreError(f"ref {name!r} appeared during import")
    return count
