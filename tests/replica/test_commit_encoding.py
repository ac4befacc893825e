"""Commit bodies are canonical CBOR: replica/commit.py encodes them with their maps rebuilt
in canonical key order (cbor2 without its canonical sort); the bytes must be exactly those
of cbor2's canonical mode, the definition (docs/format.md), for every body commit_body
makes."""

from __future__ import annotations

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from replica.commit import commit_body, decode_commit, encode_commit
from replica.datom import TREES, Stamp
from store.codec import address_of

addresses = st.binary(min_size=32, max_size=32).map(lambda b: b"\x01" + b)


@settings(max_examples=300, deadline=None)
@given(
    parents=st.lists(addresses, max_size=4, unique=True),
    roots=st.lists(addresses, min_size=len(TREES), max_size=len(TREES)),
    schema=addresses,
    wall=st.integers(0, 2**63 - 1),
    counter=st.integers(0, 2**32),
    tx=st.integers(0, 2**128 - 1),
    replica=st.integers(0, 2**64 - 1),
    gen=st.integers(0, 2**63 - 1),
    meta=st.lists(st.tuples(st.text(max_size=30), st.binary(max_size=40)), max_size=3),
)
def test_commit_bytes_are_cbor2_canonical(
    parents: list[bytes],
    roots: list[bytes],
    schema: bytes,
    wall: int,
    counter: int,
    tx: int,
    replica: int,
    gen: int,
    meta: list[tuple[str, bytes]],
) -> None:
    body = commit_body(
        parents, dict(zip(TREES, roots, strict=True)), schema, Stamp(wall, counter, tx),
        replica, gen, meta,
    )  # fmt: skip
    address, data = encode_commit(body)
    assert data == cbor2.dumps(body, canonical=True)
    assert address == address_of(data)
    commit = decode_commit(address, data)
    assert commit.parents == tuple(sorted(parents))
    assert commit.roots == dict(zip(TREES, roots, strict=True))
    assert (commit.stamp.wall_ms, commit.stamp.counter, commit.gen) == (wall, counter, gen)


def test_a_body_of_other_keys_is_still_canonical() -> None:
    """Not a body commit_body makes (a key more): encoded by cbor2's canonical mode."""
    body = commit_body([], dict.fromkeys(TREES, b"\x01" + bytes(32)), b"\x01" + bytes(32),
                       Stamp(1, 2, 3), 4, 5)  # fmt: skip
    body["extra"] = 1
    assert encode_commit(body)[1] == cbor2.dumps(body, canonical=True)
