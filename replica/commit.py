"""Commits: one node per transaction naming the index roots it produced (docs/datoms.md).

A commit is a canonical CBOR map stored as a node (its address is its id)::

    {"format": 1, "kind": "commit",
     "parents": [sorted parent commit addresses],
     "roots": {"eavt": addr, "aevt": addr, "avet": addr, "vaet": addr,
               "heavt": addr, "haevt": addr, "log": addr},
     "schema": address of the schema node,
     "tx": 16-byte tx id, "hlc": [wall_ms, counter], "replica": 8-byte replica id,
     "gen": generation number (0 for genesis, else 1 + the largest parent's),
     "meta": [[key, value bytes], ...]}    # merge commits: the resolvers they used

The genesis commit of every database is the same (no parents, empty trees, tx 0, clock 0,
replica 0), so two peers that create a database independently share its root commit and can
sync and merge later. A schema node is ``{"kind": "schema", "attributes": [sorted maps]}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from replica.datom import TREES, Stamp, eid_bytes
from replica.schema import Attribute, Schema, attribute_from_entity
from store.codec import address_of, decode, encode_trusted, is_address
from store.errors import CodecError, CorruptNode

COMMIT_FORMAT = 2


@dataclass(frozen=True, slots=True)
class Commit:
    address: bytes
    parents: tuple[bytes, ...]
    roots: Mapping[str, bytes]
    schema: bytes
    stamp: Stamp
    replica: int
    gen: int = 0
    meta: tuple[tuple[str, bytes], ...] = ()

    @property
    def tx(self) -> int:
        return self.stamp.tx


def commit_body(
    parents: list[bytes],
    roots: Mapping[str, bytes],
    schema: bytes,
    stamp: Stamp,
    replica: int,
    gen: int,
    meta: list[tuple[str, bytes]] | None = None,
) -> dict[str, Any]:
    return {
        "format": COMMIT_FORMAT,
        "kind": "commit",
        "parents": sorted(parents),
        "roots": {name: roots[name] for name in TREES},
        "schema": schema,
        "tx": eid_bytes(stamp.tx),
        "hlc": [stamp.wall_ms, stamp.counter],
        "replica": replica.to_bytes(8, "big"),
        "gen": gen,
        "meta": [list(m) for m in (meta or [])],
    }


def _canonical_order(keys: Iterable[str]) -> tuple[str, ...]:
    """``keys`` in the order canonical CBOR puts map keys: shorter encodings first, then
    bytewise (cbor2's ``canonical=True``)."""
    return tuple(sorted(keys, key=lambda k: (len(e := encode_trusted(k)), e)))


_BODY_KEYS = _canonical_order(
    ("format", "kind", "parents", "roots", "schema", "tx", "hlc", "replica", "gen", "meta")
)
_ROOT_KEYS = _canonical_order(TREES)
_BODY_SET, _ROOT_SET = frozenset(_BODY_KEYS), frozenset(_ROOT_KEYS)


def encode_commit(body: dict[str, Any]) -> tuple[bytes, bytes]:
    """The address and bytes of a commit body made by :func:`commit_body`: canonical CBOR.
    Its maps are rebuilt with their keys in canonical order and encoded as they are (the
    same bytes as cbor2's canonical mode, which sorts every map itself, for a body without
    floats, as commit bodies are); no type walk: every field is ours."""
    roots = body["roots"]
    if body.keys() == _BODY_SET and roots.keys() == _ROOT_SET:
        ordered = {key: body[key] for key in _BODY_KEYS}
        ordered["roots"] = {key: roots[key] for key in _ROOT_KEYS}
        data = cbor2.dumps(ordered)
    else:
        data = encode_trusted(body)
    return address_of(data), data


def decode_commit(address: bytes, data: bytes) -> Commit:
    try:
        body = decode(data)
        if not isinstance(body, dict) or body.get("kind") != "commit":
            raise CorruptNode(address, "not a commit")
        if body.get("format") != COMMIT_FORMAT:
            raise CorruptNode(address, f"unknown commit format {body.get('format')!r}")
        parents = tuple(body["parents"])
        roots = dict(body["roots"])
        if (
            not all(is_address(p) for p in parents)
            or set(roots) != set(TREES)
            or not all(is_address(r) for r in roots.values())
            or not is_address(body["schema"])
        ):
            raise CorruptNode(address, "commit parents/roots/schema malformed")
        wall, counter = body["hlc"]
        if not (type(wall) is int and type(counter) is int and type(body["gen"]) is int):
            raise CorruptNode(address, "commit clock/generation malformed")
        if not isinstance(body["tx"], bytes) or not isinstance(body["replica"], bytes):
            raise CorruptNode(address, "commit tx/replica malformed")
        tx = int.from_bytes(body["tx"], "big")
        return Commit(
            address=address,
            parents=parents,
            roots=roots,
            schema=body["schema"],
            stamp=Stamp(wall, counter, tx),
            replica=int.from_bytes(body["replica"], "big"),
            gen=int(body["gen"]),
            meta=tuple((m[0], m[1]) for m in body["meta"]),
        )
    except (KeyError, TypeError, ValueError, CodecError) as exc:
        if isinstance(exc, CorruptNode):
            raise
        raise CorruptNode(address, f"malformed commit: {exc}") from exc


def schema_body(schema: Schema) -> dict[str, Any]:
    attrs = []
    for a in schema.user_attributes():
        # Keyword values become plain strings, tuples of keywords lists of strings
        m: dict[str, Any] = {
            k: [str(x) for x in v] if isinstance(v, tuple) else str(v) if isinstance(v, str) else v
            for k, v in a.to_map().items()
        }
        m["eid"] = eid_bytes(a.eid or 0)
        attrs.append(m)
    return {"kind": "schema", "attributes": attrs}


def decode_schema(address: bytes, data: bytes, flexibility: str) -> Schema:
    try:
        body = decode(data)
        attrs: dict[str, Attribute] = {}
        for m in body["attributes"]:
            eid = int.from_bytes(m.pop("eid"), "big")
            a = attribute_from_entity(m, eid)
            if a is not None:
                attrs[a.ident] = a
        return Schema(attrs, flexibility)
    except (KeyError, TypeError, ValueError, CodecError) as exc:
        raise CorruptNode(address, f"malformed schema node: {exc}") from exc
