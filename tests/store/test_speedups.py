"""The optional C extension (store/_speedups.c) returns exactly what its Python twins return.

The Python functions are the definition: ``store.nodes.encode_leaf``/``encode_internal``
(canonical CBOR as cbor2 writes it) and ``store.tree._cut_leaf``/``_cut_internal`` (the
chunker's integer split test over the survival tables). Here: the extension is built and
wired in; the encoders agree with cbor2 at every CBOR head boundary and reject bad input with
Python exceptions; the C chunker agrees with the Python one on the real tables, and at the
exact boundary of its 192-bit test on fake tables (checked against the expected decision
computed here too); table and hash errors surface as exceptions; whole trees built and edited
with and without the extension (in subprocesses) have the same roots.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import store.nodes as nodes_mod
import store.speedups
import store.tree as tree_mod
from store.nodes import TreeConfig
from store.tree import (
    _INTERNAL_ENTRY,
    _LEAF_ENTRY,
    _QUICK_SPAN,
    _cut_internal,
    _cut_leaf,
    _Survival,
    _survival_table,
)

REPO = Path(__file__).resolve().parents[2]

# REPLICA_PURE_PYTHON=1 asks for the Python versions only: nothing native to compare then.
# Without that variable a missing extension is a failure (test_the_extension_is_built), not a
# skip: the install builds it wherever there is a C compiler.
needs_native = pytest.mark.skipif(
    bool(os.environ.get("REPLICA_PURE_PYTHON")), reason="REPLICA_PURE_PYTHON is set"
)


def _native() -> Any:
    native = store.speedups.native
    assert native is not None, "store/_speedups.c is not built (pip install -e . builds it)"
    return native


DEFAULT = TreeConfig()
CONFIGS = [
    DEFAULT,
    TreeConfig(target=64, min_size=16, max_size=256),
    TreeConfig(target=256, min_size=32, max_size=1024),
    TreeConfig(target=300, min_size=100, max_size=1000),
]


# -- 1. built and wired in -----------------------------------------------------------------


@needs_native
def test_the_extension_is_built_and_used() -> None:
    native = _native()
    assert store.speedups.native is not None
    table = _survival_table(DEFAULT.target, DEFAULT.max_size)
    assert isinstance(table.native, native.Chunker)
    assert isinstance(_Survival(64, 256).native, native.Chunker)
    # make_leaf/make_internal encode with the C twins
    assert nodes_mod._encode_leaf is native.encode_leaf
    assert nodes_mod._encode_internal is native.encode_internal


# -- 2. node encoding ----------------------------------------------------------------------

# byte string and array lengths where the CBOR head grows (1, 2, 3, 5 bytes)
BYTE_LENGTHS = [0, 1, 23, 24, 255, 256, 65535, 65536]
LIST_LENGTHS = [0, 1, 23, 24, 255, 256, 300]
COUNTS = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]


@st.composite
def _seeded_byte_lists(draw: st.DrawFn) -> list[bytes]:
    """Up to 300 byte strings, mostly short, with a few of the boundary lengths placed in."""
    n = draw(st.one_of(st.sampled_from(LIST_LENGTHS), st.integers(0, 300)))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    items = [
        rng.randbytes(rng.randint(0, 30) if rng.random() < 0.9 else rng.randint(0, 600))
        for _ in range(n)
    ]
    if n:
        placed = draw(
            st.lists(st.tuples(st.integers(0, n - 1), st.sampled_from(BYTE_LENGTHS)), max_size=3)
        )
        for pos, length in placed:
            items[pos] = rng.randbytes(length)
    return items


byte_lists = st.one_of(st.lists(st.binary(max_size=40), max_size=30), _seeded_byte_lists())


@st.composite
def count_lists(draw: st.DrawFn) -> list[int]:
    n = draw(st.one_of(st.sampled_from(LIST_LENGTHS), st.integers(0, 300)))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    return [
        rng.choice(COUNTS)
        if rng.random() < 0.5
        else rng.getrandbits(rng.choice([5, 8, 16, 33, 64]))
        for _ in range(n)
    ]


@needs_native
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys=byte_lists, values=byte_lists)
def test_encode_leaf_equals_python_and_cbor2(keys: list[bytes], values: list[bytes]) -> None:
    expected = cbor2.dumps([0, keys, values], canonical=True)
    assert nodes_mod.encode_leaf(keys, values) == expected
    assert _native().encode_leaf(keys, values) == expected


@needs_native
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    level=st.integers(1, 64),
    keys=byte_lists,
    children=byte_lists,
    counts=st.one_of(st.lists(st.sampled_from(COUNTS), max_size=30), count_lists()),
)
def test_encode_internal_equals_python_and_cbor2(
    level: int, keys: list[bytes], children: list[bytes], counts: list[int]
) -> None:
    expected = cbor2.dumps([level, keys, children, counts], canonical=True)
    assert nodes_mod.encode_internal(level, keys, children, counts) == expected
    assert _native().encode_internal(level, keys, children, counts) == expected


@needs_native
@pytest.mark.parametrize("length", BYTE_LENGTHS)
@pytest.mark.parametrize("n", LIST_LENGTHS)
def test_encoding_at_every_head_boundary(length: int, n: int) -> None:
    """Every boundary byte length and list length, and every boundary count, for sure."""
    native = _native()
    one = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    keys = [b"%d" % i for i in range(n)]
    if n:
        keys[n // 2] = one
    vals = [one] * min(n, 2) + [b""] * (n - min(n, 2))
    counts = [COUNTS[i % len(COUNTS)] for i in range(n)]
    assert native.encode_leaf(keys, vals) == cbor2.dumps([0, keys, vals], canonical=True)
    for level in (1, 23, 24, 64, 255, 256, 65536, 2**32, 2**64 - 1):
        assert native.encode_internal(level, keys, vals, counts) == cbor2.dumps(
            [level, keys, vals, counts], canonical=True
        )


@needs_native
def test_encoding_heads_are_the_canonical_bytes() -> None:
    """Spelled out, in case cbor2 itself ever changed: the shortest head for each length."""
    native = _native()
    assert native.encode_leaf([], []) == bytes.fromhex("83008080")
    x = b"x"
    # [0, [bytes], []]: the empty values array 0x80 last
    assert native.encode_leaf([x * 23], []) == bytes.fromhex("83008157") + x * 23 + b"\x80"
    assert native.encode_leaf([x * 24], []) == bytes.fromhex("8300815818") + x * 24 + b"\x80"
    assert native.encode_leaf([], [x * 256]) == bytes.fromhex("830080815901") + b"\0" + x * 256
    assert native.encode_leaf([], [x * 65536]) == (bytes.fromhex("830080815a00010000") + x * 65536)
    assert native.encode_internal(1, [], [], [2**32]) == bytes.fromhex(
        "84018080811b0000000100000000"
    )
    assert native.encode_internal(24, [], [], [23, 24]) == bytes.fromhex("841818808082171818")


@needs_native
@pytest.mark.parametrize(
    ("args", "where"),
    [
        (([b"a", "b"], [b"", b""]), "keys[1]"),
        (([b"a"], [None]), "values[0]"),
        (([bytearray(b"a")], [b""]), "keys[0]"),
        (([b"a"], [b"", 7]), "values[1]"),
        ((5, []), None),
        (([], None), None),
        ((), None),
        (([],), None),
        (([], [], []), None),
    ],
)
def test_encode_leaf_rejects_bad_input(args: tuple[Any, ...], where: str | None) -> None:
    with pytest.raises(TypeError) as caught:
        _native().encode_leaf(*args)
    if where is not None:
        assert where in str(caught.value)


@needs_native
@pytest.mark.parametrize(
    ("args", "error", "where"),
    [
        ((1, [b"a"], [b"c"], [-1]), OverflowError, None),
        ((1, [b"a"], [b"c"], [2**64]), OverflowError, None),
        ((1, [b"a", b"b"], [b"c", b"d"], [3, 2**70]), OverflowError, None),
        ((1, [b"a"], [b"c"], ["1"]), TypeError, "counts[0]"),
        ((1, [b"a"], [b"c"], [1.0]), TypeError, "counts[0]"),
        ((1, [b"a"], [b"c"], [None]), TypeError, "counts[0]"),
        ((1, [b"a"], ["c"], [1]), TypeError, "children[0]"),
        ((1, [b"a", 2], [b"c"], [1]), TypeError, "keys[1]"),
        (("1", [b"a"], [b"c"], [1]), TypeError, None),
        ((None, [], [], []), TypeError, None),
        ((-1, [], [], []), OverflowError, None),
        ((2**64, [], [], []), OverflowError, None),
        ((1, 5, [], []), TypeError, None),
        ((1, [], [], None), TypeError, None),
        ((), TypeError, None),
        ((1, [], []), TypeError, None),
        ((1, [], [], [], []), TypeError, None),
    ],
)
def test_encode_internal_rejects_bad_input(
    args: tuple[Any, ...], error: type[Exception], where: str | None
) -> None:
    with pytest.raises(error) as caught:
        _native().encode_internal(*args)
    if where is not None:
        assert where in str(caught.value)


# -- 3. the chunker on the real tables -----------------------------------------------------


@st.composite
def entries(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    """Random keys and values (so random hashes): entry sizes on both sides of _QUICK_SPAN,
    some longer than a whole node. Keys need not be sorted for the chunker."""
    n = draw(st.integers(0, 500))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    kmax = draw(st.sampled_from([0, 8, 40, 150, 400, 2000]))
    vmax = draw(st.sampled_from([0, 10, 100, 300]))
    keys = [rng.randbytes(rng.randint(0, kmax)) for _ in range(n)]
    vals = [rng.randbytes(rng.randint(0, vmax)) for _ in range(n)]
    return keys, vals


def _table(config: TreeConfig, fresh: bool) -> _Survival:
    if not fresh:
        return _survival_table(config.target, config.max_size)
    # filled lazily as the C chunker asks (it runs first below): computed, or unpacked from
    # the shipped bytes for the default configuration
    known = tree_mod._SHIPPED.get((config.target, config.max_size))
    shipped = None if known is None else tree_mod._shipped_table(*known)
    return _Survival(config.target, config.max_size, shipped)


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=st.sampled_from(CONFIGS),
    fresh=st.booleans(),
    kv=entries(),
    data=st.data(),
)
def test_cut_leaf_equals_python(
    config: TreeConfig, fresh: bool, kv: tuple[list[bytes], list[bytes]], data: st.DataObject
) -> None:
    keys, vals = kv
    start = data.draw(st.integers(0, len(keys) + 2), label="start")
    size = data.draw(st.one_of(st.just(0), st.integers(0, config.max_size - 1)), label="size")
    mn, mx = config.min_size, config.max_size
    surv = _table(config, fresh)
    got = surv.native.cut_leaf(keys, vals, start, size, mn, mx)
    assert got == _cut_leaf(keys, vals, start, size, mn, mx, surv)


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=st.sampled_from(CONFIGS),
    fresh=st.booleans(),
    kv=entries(),
    level=st.integers(1, 5),
    count=st.integers(0, 3),
    data=st.data(),
)
def test_cut_internal_equals_python(
    config: TreeConfig,
    fresh: bool,
    kv: tuple[list[bytes], list[bytes]],
    level: int,
    count: int,
    data: st.DataObject,
) -> None:
    keys, _ = kv
    start = data.draw(st.integers(0, len(keys) + 2), label="start")
    size = data.draw(st.one_of(st.just(0), st.integers(0, config.max_size - 1)), label="size")
    mn, mx = config.min_size, config.max_size
    surv = _table(config, fresh)
    got = surv.native.cut_internal(keys, start, size, count, level, mn, mx)
    assert got == _cut_internal(keys, start, size, count, level, mn, mx, surv)


# -- 4. the exact boundary of the split test, on fake tables -------------------------------

TABLE_MAX = 1000  # the fake tables' max_size
S0 = 300  # node size before the entry, in every single-entry case
TOP = 2**64 - 1  # the largest hash


class FakeTable(dict[int, int]):
    """S for the Python chunker: a dict, with the Q table as ``.quick`` (as _Survival has)."""

    def __init__(self, s: Mapping[int, int], q: Mapping[int, int]) -> None:
        super().__init__(s)
        self.quick = dict(q)


def _fake_hash(value: int | Callable[[bytes], int], calls: list[tuple[bytes, int]]) -> Any:
    def fake(key: bytes, seed: int) -> int:
        calls.append((key, seed))
        return value(key) if callable(value) else value

    return fake


def _chunkers(
    monkeypatch: pytest.MonkeyPatch,
    s: Mapping[int, int],
    q: Mapping[int, int],
    hash_value: int | Callable[[bytes], int],
) -> tuple[Any, FakeTable, list[tuple[bytes, int]], list[tuple[bytes, int]]]:
    """A C Chunker and a table for the Python chunker over the same fake S, Q and hash (the
    Python one reads the module's _hash, patched here); both record their hash calls."""
    c_calls: list[tuple[bytes, int]] = []
    py_calls: list[tuple[bytes, int]] = []
    table = FakeTable(s, q)
    chunker = _native().Chunker(
        dict(s),
        dict(q),
        TABLE_MAX,
        _QUICK_SPAN,
        _fake_hash(hash_value, c_calls),
        _LEAF_ENTRY,
        _INTERNAL_ENTRY,
    )
    monkeypatch.setattr(tree_mod, "_hash", _fake_hash(hash_value, py_calls))
    return chunker, table, c_calls, py_calls


def expected_end(hk: int, q: int, before: int, after: int, n: int) -> bool:
    """The split rule, written out independently: the quick bound first (entries of at most
    _QUICK_SPAN bytes stay open when hk >= Q), then: a node with S[s0] == 0 always ends,
    otherwise it ends iff hk < ceil((S[s0] - S[s1]) * 2**64 / S[s0])."""
    if n <= 128 and hk >= q:
        return False
    if before == 0:
        return True
    least_open = -(-((before - after) * 2**64) // before)
    return hk < least_open


@dataclass(frozen=True)
class Case:
    before: int  # S[s0]
    after: int  # S[s1]
    hk: int
    end: bool  # the decision, known by construction
    q: int = 1 << 64  # Q[s0]; 2**64: no hash stays open by the quick bound
    n: int = 200  # entry size in bytes (> _QUICK_SPAN: the exact test only)


def _boundary_cases() -> list[Case]:
    cases: list[Case] = []
    # S[s0] = 2**64, S[s1] = 2**64 - d: the right side is d << 64, the left hk << 64
    for d in (1, 2, 2**32, 2**63, 2**64 - 2, 2**64 - 1):
        after = 2**64 - d
        cases += [Case(2**64, after, d, False), Case(2**64, after, d - 1, True)]
        if d + 1 <= TOP:
            cases.append(Case(2**64, after, d + 1, False))
    cases.append(Case(2**64, 0, TOP, True))  # d = 2**64: every hash ends the node
    cases.append(Case(2**64, 2**64, 0, False))  # d = 0: no hash ends it
    # S[s0] = 2**96 (S[0] of the real tables): equality at D = hk * 2**32
    for hk in (1, 2**32 + 1, 2**63, 2**64 - 2, TOP):
        d = hk << 32
        before = 2**96
        cases += [
            Case(before, before - d, hk, False),  # equal: stays open
            Case(before, before - d, hk - 1, True),
            Case(before, before - d - 1, hk, True),  # right side one 2**64 more
            Case(before, before - d + 1, hk, False),
        ]
        if hk + 1 <= TOP:
            cases.append(Case(before, before - d, hk + 1, False))
    # S[s0] = (2**33 - 1) << 64, just below 2**97: equality at D = hk * (2**33 - 1)
    for hk in (1, 2**63 + 12345, TOP - 1, TOP):
        before = (2**33 - 1) << 64
        d = hk * (2**33 - 1)
        cases += [
            Case(before, before - d, hk, False),
            Case(before, before - d, hk - 1, True),
            Case(before, before - d - 1, hk, True),
            Case(before, before - d + 1, hk, False),
        ]
    # S[s0] near 2**97 - 1, products up to 161 bits: D = floor(hk * S[s0] / 2**64) is the
    # largest right side that stays open, D + 1 ends
    for before in (2**97 - 1, 2**97 - 2**32 - 1, 2**96 + 1, 2**96 - 1, 2**65 + 3, 2**64 + 1):
        for hk in (TOP, TOP - 1, 2**63 + 1, 2**63 - 1, 2**32 + 7, 3, 1):
            d = (hk * before) >> 64
            cases.append(Case(before, before - d, hk, False))
            if d + 1 <= before:
                cases.append(Case(before, before - d - 1, hk, True))
    cases += [Case(2**97 - 1, 2**97 - 1, 0, False), Case(2**97 - 1, 2**97 - 2, 0, True)]
    # S[s0] == 0: every entry ends the node, whatever the hash
    cases += [Case(0, 0, TOP, True), Case(0, 0, 0, True), Case(0, 0, TOP, True, n=100)]
    # ... unless the quick bound keeps it open first (it is tested before S)
    cases += [Case(0, 0, TOP, False, q=TOP, n=100), Case(0, 0, 5, False, q=5, n=100)]
    # the quick bound Q: with S[s1] = 0 the exact test would end the node for every hash
    for q in (1, 2, 2**32, 2**63, TOP):
        cases += [
            Case(2**64, 0, q, False, q=q, n=100),  # hk == Q: stays open
            Case(2**64, 0, q - 1, True, q=q, n=100),  # hk == Q - 1: the exact test ends it
            Case(2**64, 0, q, False, q=q, n=_QUICK_SPAN),  # the span is inclusive
            Case(2**64, 0, q, True, q=q, n=_QUICK_SPAN + 1),  # beyond it Q is not used
        ]
    cases += [
        Case(2**64, 0, TOP, True, q=2**64, n=100),  # Q = 2**64: no hash reaches it
        Case(2**64, 0, 0, False, q=0, n=100),  # Q = 0: every hash stays open
        Case(2**64, 0, 0, True, q=1, n=100),
    ]
    return cases


BOUNDARY_CASES = _boundary_cases()


def test_the_boundary_cases_are_what_they_claim() -> None:
    """The literal expectations agree with the rule written out in expected_end (so neither
    a mistyped case nor a mistyped rule goes unnoticed), and the cases are valid tables."""
    for case in BOUNDARY_CASES:
        assert 0 <= case.after <= case.before < 2**97, case
        assert 0 <= case.hk <= TOP and 0 <= case.q <= 2**64, case
        assert expected_end(case.hk, case.q, case.before, case.after, case.n) == case.end, case
    # both outcomes at each kind of boundary
    assert {c.end for c in BOUNDARY_CASES} == {False, True}
    assert any(c.hk * c.before == (c.before - c.after) << 64 and c.hk for c in BOUNDARY_CASES)


def _leaf_entry(n: int) -> tuple[list[bytes], list[bytes]]:
    # a key and a value of n bytes in all (with the entry overhead)
    k = (n - _LEAF_ENTRY) // 2
    return [b"k" * k], [b"v" * (n - _LEAF_ENTRY - k)]


@needs_native
@pytest.mark.parametrize("case", BOUNDARY_CASES, ids=lambda c: f"{c.hk:#x}")
def test_cut_leaf_exact_boundary(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    s1 = S0 + case.n
    s, q = {S0: case.before, s1: case.after}, {S0: case.q}
    for mn, mx in ((0, TABLE_MAX), (s1, s1 + 1)):  # s1 == mn and s1 == mx - 1: still tested
        chunker, table, c_calls, py_calls = _chunkers(monkeypatch, s, q, case.hk)
        keys, vals = _leaf_entry(case.n)
        got = chunker.cut_leaf(keys, vals, 0, S0, mn, mx)
        assert got == _cut_leaf(keys, vals, 0, S0, mn, mx, cast(_Survival, table))
        assert got == (([1], 0) if case.end else ([], s1))
        assert c_calls == py_calls == [(keys[0], 0)]


@needs_native
@pytest.mark.parametrize("case", BOUNDARY_CASES, ids=lambda c: f"{c.hk:#x}")
@pytest.mark.parametrize("level", [1, 3, 63])
def test_cut_internal_exact_boundary(
    case: Case, level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    s1 = S0 + case.n
    s, q = {S0: case.before, s1: case.after}, {S0: case.q}
    keys = [b"k" * (case.n - _INTERNAL_ENTRY)]
    for mn, mx in ((0, TABLE_MAX), (s1, s1 + 1)):
        for count in (0, 1, 2):
            chunker, table, c_calls, py_calls = _chunkers(monkeypatch, s, q, case.hk)
            got = chunker.cut_internal(keys, 0, S0, count, level, mn, mx)
            want = _cut_internal(keys, 0, S0, count, level, mn, mx, cast(_Survival, table))
            assert got == want
            # a node never ends after its first entry
            ends = case.end and count + 1 > 1
            assert got == (([1], 0, 0) if ends else ([], s1, count + 1))
            assert c_calls == py_calls == [(keys[0], level)]


@needs_native
@pytest.mark.parametrize("kind", ["leaf", "internal"])
def test_min_and_max_size_bound_the_test(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below min_size nothing ends (and nothing is hashed); at max_size everything ends."""
    n = 200
    s1 = S0 + n
    ends = {S0: 2**64, s1: 0}  # the exact test would end the node
    stays = {S0: 2**64, s1: 2**64}  # the exact test would keep it open
    for s, mn, mx, end, hashed in (
        (ends, s1 + 1, TABLE_MAX, False, False),  # s1 == mn - 1
        (ends, s1, TABLE_MAX, True, True),
        (stays, 0, s1, True, False),  # s1 == mx
        (stays, 0, s1 + 1, False, True),
    ):
        chunker, table, c_calls, py_calls = _chunkers(monkeypatch, s, {S0: 2**64}, 12345)
        if kind == "leaf":
            keys, vals = _leaf_entry(n)
            got = chunker.cut_leaf(keys, vals, 0, S0, mn, mx)
            assert got == _cut_leaf(keys, vals, 0, S0, mn, mx, cast(_Survival, table))
            assert got == (([1], 0) if end else ([], s1))
        else:
            keys = [b"k" * (n - _INTERNAL_ENTRY)]
            got = chunker.cut_internal(keys, 0, S0, 1, 2, mn, mx)
            assert got == _cut_internal(keys, 0, S0, 1, 2, mn, mx, cast(_Survival, table))
            assert got == (([1], 0, 0) if end else ([], s1, 2))
        assert c_calls == py_calls
        assert len(c_calls) == hashed


# random extreme tables: S non-increasing below 2**97, Q anything up to 2**64, hashes from
# both ends of the range, over many entries (so every size the loop reaches is looked up)
_BIG = st.one_of(
    st.integers(0, 2**97 - 1),
    st.sampled_from([0, 1, 2**64 - 1, 2**64, 2**64 + 1, 2**96, 2**97 - 1]),
)
_HASHES = st.one_of(st.integers(0, TOP), st.sampled_from([0, 1, 2**63, TOP - 1, TOP]))


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    table_seed=st.integers(0, 2**32 - 1),
    s_top=_BIG,
    hashes=st.lists(_HASHES, min_size=1, max_size=60),
    lengths=st.lists(st.integers(0, 200), min_size=1, max_size=60),
    mn=st.integers(0, 300),
    width=st.integers(1, TABLE_MAX - 300),
    size=st.integers(0, 299),
    level=st.integers(1, 5),
    count=st.integers(0, 2),
    exact_q=st.booleans(),
)
def test_random_fake_tables_agree(
    table_seed: int,
    s_top: int,
    hashes: list[int],
    lengths: list[int],
    mn: int,
    width: int,
    size: int,
    level: int,
    count: int,
    exact_q: bool,
) -> None:
    rng = random.Random(table_seed)
    # S[0] = s_top, then non-increasing steps of random magnitude, ending often at 0
    s: dict[int, int] = {}
    v = s_top
    for i in range(TABLE_MAX + 1):
        s[i] = v
        if v and rng.random() < 0.3:
            v -= min(v, rng.getrandbits(rng.choice([1, 8, 64, 96, 97])))
    if exact_q:  # the real Q rule (ceil of the bound over S[s0]), or random below
        q = {
            i: (1 << 64)
            if s[i] == 0
            else -(-((s[i] - s[min(i + _QUICK_SPAN, TABLE_MAX)]) << 64) // s[i])
            for i in range(TABLE_MAX + 1)
        }
    else:
        q = {i: rng.choice([0, 1, rng.getrandbits(64), TOP, 2**64]) for i in range(TABLE_MAX + 1)}
    keys = [b"%d:" % i + b"k" * lengths[i % len(lengths)] for i in range(len(hashes) * 3)]
    vals = [b"v" * (i % 7) for i in range(len(keys))]
    by_key = dict(zip(keys, hashes * 3, strict=True))
    mx = mn + width
    for kind in ("leaf", "internal"):
        with pytest.MonkeyPatch.context() as monkeypatch:
            chunker, table, c_calls, py_calls = _chunkers(monkeypatch, s, q, by_key.__getitem__)
            if kind == "leaf":
                got = chunker.cut_leaf(keys, vals, 0, size, mn, mx)
                assert got == _cut_leaf(keys, vals, 0, size, mn, mx, cast(_Survival, table))
            else:
                got = chunker.cut_internal(keys, 0, size, count, level, mn, mx)
                want = _cut_internal(keys, 0, size, count, level, mn, mx, cast(_Survival, table))
                assert got == want
            assert c_calls == py_calls


# -- 5. table, hash and argument errors are exceptions -------------------------------------


def _one_entry(
    s: Mapping[int, Any],
    q: Mapping[int, Any],
    hash_fn: Any,
    *,
    n: int = 200,
    max_size: int = TABLE_MAX,
) -> Any:
    """The C chunker's decision on one entry of n bytes after S0 bytes (leaf and internal)."""
    chunker = _native().Chunker(s, q, max_size, _QUICK_SPAN, hash_fn, _LEAF_ENTRY, _INTERNAL_ENTRY)
    keys, vals = _leaf_entry(n)
    return (
        chunker,
        lambda: chunker.cut_leaf(keys, vals, 0, S0, 0, 10**6),
        lambda: chunker.cut_internal([b"k" * (n - _INTERNAL_ENTRY)], 0, S0, 1, 1, 0, 10**6),
    )


def _const(value: Any) -> Callable[[bytes, int], Any]:
    return lambda key, seed: value


@needs_native
@pytest.mark.parametrize(
    ("s", "q", "n", "error"),
    [
        ({S0: "x", S0 + 200: 0}, {}, 200, TypeError),  # S[s0] not an int
        ({S0: 2**64, S0 + 200: 1.0}, {}, 200, TypeError),  # S[s1] not an int
        ({S0: None, S0 + 100: 0}, {S0: 2**64}, 100, TypeError),
        ({S0: 2**64, S0 + 100: 0}, {S0: "7"}, 100, TypeError),  # Q[s0] not an int
        ({S0: 2**64, S0 + 100: 0}, {S0: 7.0}, 100, TypeError),
        ({S0: -1, S0 + 200: 0}, {}, 200, OverflowError),  # negative S
        ({S0: 2**64, S0 + 200: -(2**70)}, {}, 200, OverflowError),
        ({S0: 2**64, S0 + 100: 0}, {S0: -1}, 100, OverflowError),  # negative Q
        ({S0: 2**128, S0 + 200: 0}, {}, 200, OverflowError),  # beyond 128 bits
        ({S0: 2**64, S0 + 100: 0}, {S0: 2**200}, 100, OverflowError),
        ({S0 + 200: 0}, {}, 200, KeyError),  # S[s0] missing from the mapping
        ({S0: 2**64}, {}, 200, KeyError),  # S[s1] missing
        ({S0: 2**64, S0 + 100: 0}, {}, 100, KeyError),  # Q[s0] missing
        ({S0: 5, S0 + 200: 6}, {}, 200, ValueError),  # S increases
    ],
)
def test_bad_table_entries_raise(
    s: dict[int, Any], q: dict[int, Any], n: int, error: type[Exception]
) -> None:
    for call in _one_entry(s, q, _const(2**63), n=n)[1:]:
        with pytest.raises(error):
            call()


@needs_native
def test_a_failed_table_read_is_not_kept() -> None:
    """After an error the chunker reads the entry again (nothing half-cached)."""
    s: dict[int, Any] = {S0: "x", S0 + 200: 0}
    _, leaf, _ = _one_entry(s, {}, _const(5))
    with pytest.raises(TypeError):
        leaf()
    s[S0] = 2**64
    assert leaf() == ([1], 0)


@needs_native
def test_table_entries_are_read_once() -> None:
    reads: list[int] = []

    class Counting(dict[int, int]):
        def __getitem__(self, size: int) -> int:
            reads.append(size)
            return super().__getitem__(size)

    s = Counting({S0: 2**64, S0 + 100: 2**63})
    q = Counting({S0: 2**63})
    _, leaf, internal = _one_entry(s, q, _const(2**62), n=100)
    assert leaf() == ([1], 0)  # 2**62 < Q and 2**62 < 2**63 (= d)
    assert internal() == ([1], 0, 0)
    assert leaf() == ([1], 0)
    assert sorted(reads) == [S0, S0, S0 + 100]  # Q[s0], S[s0], S[s1], each once


@needs_native
@pytest.mark.parametrize(
    ("size", "n", "max_size"),
    [
        (S0, 200, S0 + 199),  # s1 beyond the table
        (S0, 200, S0 - 1),  # s0 beyond the table
        (S0, 100, S0 - 1),  # s0 beyond the table (quick bound read)
    ],
)
def test_sizes_outside_the_table_raise_key_error(size: int, n: int, max_size: int) -> None:
    everything = {i: 2**64 for i in range(-1000, 2000)}  # the mapping has them; C refuses
    chunker = _native().Chunker(
        everything, everything, max_size, _QUICK_SPAN, _const(0), _LEAF_ENTRY, _INTERNAL_ENTRY
    )
    keys, vals = _leaf_entry(n)
    with pytest.raises(KeyError):
        chunker.cut_leaf(keys, vals, 0, size, -(10**6), 10**6)
    with pytest.raises(KeyError):
        chunker.cut_internal([b"k" * (n - _INTERNAL_ENTRY)], 0, size, 1, 1, -(10**6), 10**6)


@needs_native
def test_sizes_outside_a_real_table_raise_key_error_in_both() -> None:
    surv = _survival_table(64, 256)
    keys, vals = [b"k" * 200], [b"v" * 100]  # 302 bytes: beyond max_size 256
    with pytest.raises(KeyError):
        surv.native.cut_leaf(keys, vals, 0, 0, 0, 10**6)
    with pytest.raises(KeyError):
        _cut_leaf(keys, vals, 0, 0, 0, 10**6, surv)


class Boom(Exception):
    pass


def _raising(key: bytes, seed: int) -> int:
    raise Boom(key)


@needs_native
@pytest.mark.parametrize(
    ("hash_fn", "error"),
    [
        (_const("1"), TypeError),
        (_const(1.0), TypeError),
        (_const(None), TypeError),
        (_const(-1), OverflowError),
        (_const(2**64), OverflowError),
        (_raising, Boom),
        (lambda key: 0, TypeError),  # wrong signature
        (None, TypeError),  # not callable
    ],
)
def test_hash_errors_propagate(hash_fn: Any, error: type[Exception]) -> None:
    for call in _one_entry({S0: 2**64, S0 + 200: 0}, {}, hash_fn)[1:]:
        with pytest.raises(error):
            call()


@needs_native
def test_bad_arguments_raise() -> None:
    native = _native()
    surv = _survival_table(64, 256)
    c = surv.native
    with pytest.raises(TypeError):
        c.cut_leaf([b"a"], [b"b"], 0, 0, 16)  # five arguments
    with pytest.raises(TypeError):
        c.cut_leaf((b"a",), [b"b"], 0, 0, 16, 256)  # not a list
    with pytest.raises(TypeError):
        c.cut_leaf([b"a"], [b"b"], "0", 0, 16, 256)
    with pytest.raises(TypeError):
        c.cut_leaf([b"a", "x"], [b"b", b"c"], 0, 0, 0, 256)
    with pytest.raises(TypeError):
        c.cut_leaf([b"a"], [None], 0, 0, 0, 256)
    with pytest.raises(ValueError):
        c.cut_leaf([b"a", b"b"], [b"c"], 0, 0, 0, 256)  # fewer values than keys
    with pytest.raises(ValueError):
        c.cut_leaf([b"a"], [b"b"], -1, 0, 0, 256)
    with pytest.raises(OverflowError):
        c.cut_leaf([b"a"], [b"b"], 2**70, 0, 0, 256)
    with pytest.raises(TypeError):
        c.cut_internal([b"a"], 0, 0, 0, 1, 16)  # six arguments
    with pytest.raises(TypeError):
        c.cut_internal((b"a",), 0, 0, 0, 1, 16, 256)
    with pytest.raises(TypeError):
        c.cut_internal([b"a", 1], 0, 0, 0, 1, 0, 256)
    with pytest.raises(ValueError):
        c.cut_internal([b"a"], -1, 0, 0, 1, 0, 256)
    with pytest.raises(ValueError):
        c.cut_internal([b"a"], 0, 0, 0, -1, 0, 256)
    for level in (63, 64, 100, 2**40):  # no real tree is that tall; still the Python result
        keys = [bytes([i]) * 9 for i in range(40)]
        assert c.cut_internal(keys, 0, 0, 0, level, 0, 256) == _cut_internal(
            keys, 0, 0, 0, level, 0, 256, surv
        )
    # the Chunker itself
    for args in [(), (surv, surv.quick, 256, _QUICK_SPAN, tree_mod._hash, _LEAF_ENTRY)]:
        with pytest.raises(TypeError):
            native.Chunker(*args)
    for max_size, span in ((-1, _QUICK_SPAN), (2**24 + 1, _QUICK_SPAN), (256, -1)):
        with pytest.raises(ValueError):
            native.Chunker(surv, surv.quick, max_size, span, tree_mod._hash, 2, 40)
    with pytest.raises(RuntimeError):
        c.__init__(surv, surv.quick, 256, _QUICK_SPAN, tree_mod._hash, 2, 40)
    # still working after all that
    keys = [b"%d" % i for i in range(200)]
    assert c.cut_leaf(keys, keys, 0, 0, 16, 256) == _cut_leaf(keys, keys, 0, 0, 16, 256, surv)


_CRASH_SCRIPTS = {
    # a Chunker whose __init__ never ran has no tables and no hash
    "uninitialised": """
from store.speedups import native
c = native.Chunker.__new__(native.Chunker)
try:
    c.cut_leaf([b"a"], [b"b"], 0, 0, 0, 256)
except Exception as exc:
    print(type(exc).__name__)
""",
    # a hash that empties the lists the chunker is walking
    "mutating-hash": """
from store.speedups import native
keys = [b"k%d" % i * 50 for i in range(2000)]
vals = [b"v" * 50 for _ in range(2000)]
def h(key, seed):
    keys.clear()
    vals.clear()
    return 5
table = {i: 2**64 for i in range(100001)}
c = native.Chunker(table, table, 100000, 128, h, 2, 40)
try:
    c.cut_leaf(keys, vals, 0, 0, 0, 10**6)
except Exception as exc:
    print(type(exc).__name__)
""",
}


@needs_native
@pytest.mark.parametrize("name", sorted(_CRASH_SCRIPTS))
def test_misuse_does_not_crash_the_interpreter(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CRASH_SCRIPTS[name]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr)


# -- 6. whole trees, with and without the extension ----------------------------------------

_TREES_SCRIPT = """
import asyncio, random
import store.speedups
from store.memory import MemoryStore
from store.nodes import Nodes, TreeConfig
from store.tree import Tree


async def main():
    print(store.speedups.native is None)
    for config in (
        TreeConfig(target=64, min_size=16, max_size=256),
        TreeConfig(target=256, min_size=32, max_size=1024),
        TreeConfig(),
    ):
        rng = random.Random(20240601)
        items = [(b"key%07d" % (10 * i), rng.randbytes(rng.randrange(0, 60))) for i in range(5000)]
        nodes = Nodes(MemoryStore(), config)
        tree = await Tree.build(nodes, items)
        print("build", tree.root.hex())
        batches = [
            # inserts in the middle, some with values longer than the quick span
            [(b"key%07d" % (10 * i + 5), rng.randbytes(rng.choice([3, 40, 200])))
             for i in range(1500, 1900)],
            # deletes, scattered and one run
            [(b"key%07d" % (10 * i), None) for i in range(0, 5000, 7)]
            + [(b"key%07d" % (10 * i), None) for i in range(3000, 3300)],
            # appends after the end
            [(b"key%07d" % (50000 + i), b"appended %d" % i) for i in range(600)],
            # updates, a few huge keys, a delete of the first key, inserts before it
            [(b"key%07d" % (10 * i + 1), rng.randbytes(rng.randrange(0, 90)))
             for i in range(0, 5000, 13)]
            + [(b"key%07d" % (10 * i + 2) + b"x" * 700, b"v") for i in range(100, 110)]
            + [(b"key0000000", None), (b"a", b"first"), (b"b", b"")],
            # a single edit, then a delete of most of the tree
            [(b"key0025005", b"changed")],
            [(b"key%07d" % (10 * i), None) for i in range(100, 4900)],
        ]
        for batch in batches:
            tree = await tree.edit(batch)
            print("edit", tree.root.hex())
        rebuilt = await Tree.build(Nodes(MemoryStore(), config), await tree.items())
        print("rebuilt", rebuilt.root.hex())


asyncio.run(main())
"""


def _run_trees(pure: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "REPLICA_PURE_PYTHON"}
    if pure:
        env["REPLICA_PURE_PYTHON"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", _TREES_SCRIPT],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")


def test_whole_trees_are_the_same_with_and_without_the_extension() -> None:
    pure = _run_trees(pure=True)
    fast = _run_trees(pure=False)
    assert pure[0] == "True"  # really the Python versions only
    assert fast[0] == "False"  # really the extension
    assert len(pure) == len(fast) == 1 + 3 * 8 + 1
    assert pure[1:] == fast[1:]
    assert pure[-1] == ""
    roots = [line.split() for line in fast[1:-1]]
    assert [step for step, _ in roots] == (["build"] + ["edit"] * 6 + ["rebuilt"]) * 3
    # every edit changed the tree; the configurations make different trees
    edited = [root for step, root in roots if step != "rebuilt"]
    assert len(set(edited)) == len(edited)
    for i in range(0, len(roots), 8):  # the edited tree is the tree built from its items
        assert roots[i + 6][1] == roots[i + 7][1]


@needs_native
@pytest.mark.parametrize("size", [-1, 2**40 + 1, 2**63 - 1])
def test_sizes_no_node_has_are_refused(size: int) -> None:
    # (the Python twins would take them; no node is that big, and C sums must not overflow)
    chunker = _survival_table(64, 256).native
    with pytest.raises(ValueError, match="size"):
        chunker.cut_leaf([b"a"], [b""], 0, size, 0, 10)
    with pytest.raises(ValueError, match="size"):
        chunker.cut_internal([b"a"], 0, size, 1, 1, 0, 10)


@needs_native
@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=300)), max_size=80),
    data=st.data(),
)
def test_prefix_size_is_the_sum_the_python_edit_computes(
    items: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    keys = [k for k, _ in items]
    vals = [v for _, v in items]
    start = data.draw(st.integers(0, len(keys)))
    chunker = _survival_table(DEFAULT.target, DEFAULT.max_size).native
    leaf = sum(map(len, keys[:start])) + sum(map(len, vals[:start])) + _LEAF_ENTRY * start
    internal = sum(map(len, keys[:start])) + _INTERNAL_ENTRY * start
    assert chunker.prefix_size(keys, vals, start) == leaf
    assert chunker.prefix_size(keys, None, start) == internal


@needs_native
def test_prefix_size_refuses_bad_input() -> None:
    chunker = _survival_table(DEFAULT.target, DEFAULT.max_size).native
    with pytest.raises(ValueError, match="start"):
        chunker.prefix_size([b"a"], [b"b"], 2)
    with pytest.raises(ValueError, match="start"):
        chunker.prefix_size([b"a"], [], 1)
    with pytest.raises(TypeError, match="values"):
        chunker.prefix_size([b"a"], ["b"], 1)
    with pytest.raises(TypeError, match="keys"):
        chunker.prefix_size([1], None, 1)
    with pytest.raises(RuntimeError, match="not initialised"):
        _native().Chunker.__new__(_native().Chunker).prefix_size([], None, 0)


# -- the file store's index (store/file.py _Table) ---------------------------------------------

_ADDRESSES = st.binary(min_size=33, max_size=33)


def _filled_table(
    batches: list[list[bytes]], use_native: bool, monkeypatch: pytest.MonkeyPatch
) -> Any:
    import store.file as file_mod

    monkeypatch.setattr(file_mod, "native", _native() if use_native else None)
    table = file_mod._Table(capacity=8)  # small: many growths
    for seg_id, batch in enumerate(batches, start=1):
        table.add_entries(seg_id, [(a, 100 + 50 * i, 10) for i, a in enumerate(batch)])
    return table


@needs_native
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(st.lists(_ADDRESSES, max_size=40), max_size=12),
    probes=st.lists(_ADDRESSES, max_size=30),
)
def test_index_table_c_and_python_fill_identical_arrays(
    batches: list[list[bytes]], probes: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = _filled_table(batches, True, monkeypatch)
    py = _filled_table(batches, False, monkeypatch)
    assert c.used == py.used == sum(map(len, batches))
    assert c.arrays[2] == py.arrays[2]
    assert list(c.arrays[0]) == list(py.arrays[0])  # same probing: the same slots
    assert list(c.arrays[1]) == list(py.arrays[1])
    stored = [a for batch in batches for a in batch]
    asked = stored[::3] + probes
    import store.file as file_mod

    monkeypatch.setattr(file_mod, "native", _native())
    native_hits = c.hits(asked)
    monkeypatch.setattr(file_mod, "native", None)
    assert native_hits == py.hits(asked)
    # every stored address is a hit, and find() locates each of its records
    assert set(stored[::3]) <= set(native_hits)
    for seg_id, batch in enumerate(batches, start=1):
        for i, a in enumerate(batch):
            assert (seg_id << file_mod._SEG_SHIFT) | (100 + 50 * i) in c.find(a)


@needs_native
def test_index_table_functions_refuse_bad_input() -> None:
    from array import array

    import store.file as file_mod

    nat = _native()
    tags, locs, mask = file_mod._Table._empty(8)
    good = [(b"\x01" + bytes(32), 5, 1)]
    with pytest.raises(ValueError, match="no room"):
        nat.table_insert_entries(tags, locs, mask, 6, 0, good)  # 7 of 8 slots: over 3/4
    with pytest.raises(TypeError, match=r"entries\[0\]"):
        nat.table_insert_entries(tags, locs, mask, 0, 0, [(b"\x01", 5, 1)])
    with pytest.raises(TypeError, match=r"entries\[1\]"):
        nat.table_insert_entries(tags, locs, mask, 0, 0, [*good, ("x", 5, 1)])
    assert list(tags) == [0] * 8  # a refused batch inserts nothing
    with pytest.raises(ValueError, match="power of two"):
        nat.table_insert_entries(tags, locs, 6, 0, 0, good)
    with pytest.raises(ValueError, match="power of two"):
        nat.table_hits(array("Q", bytes(64)), 7, [])  # u64 tags: wrong item size
    with pytest.raises(TypeError, match=r"addresses\[0\]"):
        nat.table_hits(tags, mask, [b"abc"])
    nat.table_insert_entries(tags, locs, mask, 0, 0, good)
    with pytest.raises(ValueError, match="not empty"):
        nat.table_rehash(tags, locs, tags, locs, mask)
    small_tags, small_locs, small_mask = file_mod._Table._empty(1)
    nat.table_insert_entries(tags, locs, mask, 1, 0, [(b"\x02" + bytes(32), 6, 1)])
    with pytest.raises(ValueError, match="too small"):
        nat.table_rehash(tags, locs, small_tags, small_locs, small_mask)


@needs_native
def test_a_table_and_its_chunker_are_collected() -> None:
    import gc
    import weakref

    table = _Survival(4096, 16384)
    assert table.native is not None
    table.native.cut_leaf([b"k" * 600], [b"v"], 0, 0, 512, 16384)  # reads entries
    gone = weakref.ref(table)
    del table
    gc.collect()
    assert gone() is None  # the table <-> chunker cycle is visible to the GC


def test_configurations_too_large_for_the_c_tables_use_python() -> None:
    big = _Survival(1 << 20, (1 << 20) + 1)
    assert big.native is None
    assert _Survival(4096, 1 << 20).native is not None or store.speedups.native is None


# -- the C edit (store/_speedups.c edit_tree) against Tree._edit_level's Python ------------

_EDIT_CONFIGS = [TreeConfig(target=64, min_size=16, max_size=256), TreeConfig()]


@needs_native
@settings(max_examples=60, deadline=None)
@given(
    config=st.sampled_from(_EDIT_CONFIGS),
    n=st.integers(0, 1500),
    batches=st.lists(
        st.lists(
            st.tuples(st.integers(0, 20000), st.one_of(st.none(), st.binary(max_size=150))),
            max_size=120,
        ),
        min_size=1,
        max_size=4,
    ),
    cold=st.booleans(),
    tiny_cache=st.booleans(),
)
def test_edits_in_c_and_python_give_the_same_trees_and_reads(
    config: TreeConfig,
    n: int,
    batches: list[list[tuple[int, bytes | None]]],
    cold: bool,
    tiny_cache: bool,
) -> None:
    import anyio

    from store.memory import MemoryStore
    from store.nodes import Nodes
    from store.tree import Tree

    surv = _survival_table(config.target, config.max_size)
    chunker = surv.native

    async def run(use_c: bool) -> tuple[list[bytes], list[tuple[int, int]]]:
        surv.native = chunker if use_c else None
        try:
            store = MemoryStore()
            cache = 1 if tiny_cache else 64 << 20  # 1 byte: one node cached at a time
            nodes = Nodes(store, config, cache_bytes=cache)
            tree = await Tree.build(nodes, [(b"k%06d" % (3 * i), b"v%d" % i) for i in range(n)])
            roots, stats = [], []
            for batch in batches:
                if cold:  # every node from the store: the C edit comes back for each
                    nodes = Nodes(store, config, cache_bytes=cache)
                    tree = Tree(nodes, tree.root)
                before = (nodes.stats.reads, nodes.stats.fetches)
                tree = await tree.edit([(b"k%06d" % k, v) for k, v in batch])
                roots.append(tree.root)
                stats.append((nodes.stats.reads - before[0], nodes.stats.fetches - before[1]))
            return roots, stats
        finally:
            surv.native = chunker

    (c_roots, c_stats), (py_roots, py_stats) = anyio.run(run, True), anyio.run(run, False)
    assert c_roots == py_roots
    assert [reads for reads, _ in c_stats] == [reads for reads, _ in py_stats]
    if not tiny_cache:  # (a one-node cache: the C edit holds the few nodes it loaded)
        assert c_stats == py_stats


@needs_native
def test_the_chunker_hashes_through_the_xxhash_library_only_when_it_agrees() -> None:
    import xxhash

    library = xxhash._xxhash.__file__  # type: ignore[attr-defined]
    assert _survival_table(DEFAULT.target, DEFAULT.max_size).native.uses_library()
    assert _Survival(64, 256).native.uses_library()
    nat = _native()
    table = _survival_table(64, 256)
    other = nat.Chunker(table, table.quick, 256, _QUICK_SPAN, _const(7), _LEAF_ENTRY, 40)
    assert not other.use_library(library)  # another hash: the library is not it
    assert not other.uses_library()
    same = nat.Chunker(table, table.quick, 256, _QUICK_SPAN, _hash_fn(), _LEAF_ENTRY, 40)
    assert not same.use_library("/nonexistent/library.so")
    assert same.use_library(library)
    with pytest.raises(TypeError):
        same.use_library(3)
    keys = [b"key %d" % i * 3 for i in range(300)]
    vals = [b"v" * (i % 7) for i in range(300)]
    assert same.cut_leaf(keys, vals, 0, 0, 16, 256) == _cut_leaf(keys, vals, 0, 0, 16, 256, table)
    for level in (1, 2, 63, 64, 2**40):
        assert same.cut_internal(keys, 0, 0, 0, level, 16, 256) == _cut_internal(
            keys, 0, 0, 0, level, 16, 256, table
        )


def _hash_fn() -> Any:
    import xxhash

    return xxhash.xxh3_64_intdigest


# -- whole nodes (store/_speedups.c make_leaf / make_internal) -----------------------------


def _fields(node: Any) -> dict[str, Any]:
    return {name: getattr(node, name) for name in nodes_mod.Node.__slots__}


@needs_native
def test_the_node_makers_are_the_c_twins() -> None:
    assert nodes_mod.make_leaf is _native().make_leaf
    assert nodes_mod.make_internal is _native().make_internal
    assert tree_mod.make_leaf is _native().make_leaf  # type: ignore[attr-defined]


@needs_native
@settings(max_examples=150, deadline=None)
@given(
    entries=st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=3000)), max_size=60),
    counts=st.lists(st.integers(0, 2**64 - 1), max_size=60),
    level=st.integers(1, 70),
)
def test_c_nodes_equal_python_nodes(
    entries: list[tuple[bytes, bytes]], counts: list[int], level: int
) -> None:
    keys = [k for k, _ in entries]
    vals = [v for _, v in entries]
    c_node, c_data = _native().make_leaf(keys, vals)
    py_node, py_data = nodes_mod.make_leaf_py(keys, vals)
    assert c_data == py_data and _fields(c_node) == _fields(py_node)
    assert type(c_node) is nodes_mod.Node
    children = [bytes([i % 256]) * 33 for i in range(len(counts))]
    ikeys = [b"k%d" % i for i in range(len(counts))]
    c_node, c_data = _native().make_internal(level, ikeys, children, counts)
    py_node, py_data = nodes_mod.make_internal_py(level, ikeys, children, counts)
    assert c_data == py_data and _fields(c_node) == _fields(py_node)
    assert c_node.count == sum(counts)  # also beyond 2**64 (many large counts)
    assert c_node.address == b"\x01" + __import__("hashlib").sha256(c_data).digest()


@needs_native
def test_bind_nodes_refuses_a_library_or_hash_that_does_not_agree() -> None:
    nat = _native()
    assert not nat.bind_nodes(nodes_mod.Node, "/nonexistent/libcrypto.so", lambda d: b"")
    path = nodes_mod._libcrypto()
    assert path is not None
    assert not nat.bind_nodes(nodes_mod.Node, path, lambda d: bytes(32))  # another "hash"
    assert nat.bind_nodes(nodes_mod.Node, path, nodes_mod._sha256_digest)  # (as it was)
    with pytest.raises(TypeError):
        nat.make_leaf([b"a"], ["b"])
    with pytest.raises(OverflowError):
        nat.make_internal(1, [b"a"], [b"c" * 33], [-1])


@needs_native
@pytest.mark.timeout(60)
async def test_edits_through_a_nodes_subclass_take_its_own_loads() -> None:
    """A Nodes subclass (sync's rebuilds) reads through its own load(), which the C level
    edit does not call: the Python walk is used, and finds nodes only that load() knows."""
    from store.memory import MemoryStore
    from store.nodes import Node, Nodes
    from store.tree import Tree

    source = Nodes(MemoryStore(), TreeConfig(target=64, min_size=16, max_size=256))
    tree = await Tree.build(source, [(b"k%05d" % i, b"v") for i in range(2000)])
    side = dict(source.store._data.nodes)  # type: ignore[attr-defined]
    assert side

    class SideLoaded(Nodes):
        async def load(self, address: bytes) -> Node:
            node = self.peek(address)
            if node is not None:
                return node
            return nodes_mod.decode_node(address, side[address])

    reader = SideLoaded(MemoryStore(), source.config, cache_bytes=0)  # an empty store
    edited = await Tree(reader, tree.root).edit([(b"k01000", b"new"), (b"zz", b"end")], flush=False)
    expected = await tree.edit([(b"k01000", b"new"), (b"zz", b"end")])
    assert edited.root == expected.root


@needs_native
async def test_a_cold_large_edit_does_not_start_the_c_level_edit_over_and_over() -> None:
    """Each node the C level edit finds uncached restarts it; after a few, the Python walk
    takes the level over. Counted in nodes made: a cold edit makes no more than a warm one
    (plus the few restarts), where restarting for every miss made hundreds of times more."""
    import random

    from store.memory import MemoryStore
    from store.nodes import Nodes
    from store.tree import Tree

    rng = random.Random(5)
    store = MemoryStore()
    tree = await Tree.build(Nodes(store), [(b"k%07d" % i, b"v%d" % i) for i in range(60_000)])
    edits = sorted({(b"k%07d" % rng.randrange(60_000), b"new") for _ in range(400)})
    made = 0
    real = tree_mod.make_leaf  # type: ignore[attr-defined]

    def counting(keys: list[bytes], values: list[bytes]) -> Any:
        nonlocal made
        made += 1
        return real(keys, values)

    tree_mod.make_leaf = counting  # type: ignore[attr-defined]
    try:
        cold = await Tree(Nodes(store), tree.root).edit(edits)
        cold_made, made = made, 0
        warm_nodes = Nodes(store)
        await Tree(warm_nodes, tree.root).edit(edits)  # loads every node it needs
        made = 0
        warm = await Tree(warm_nodes, tree.root).edit(edits)
        warm_made = made
    finally:
        tree_mod.make_leaf = real  # type: ignore[attr-defined]
    assert cold.root == warm.root
    assert warm_made > 100
    assert cold_made <= warm_made + 5 * 4  # at most a few restarts' worth more


# -- the C edit of a whole tree (store/_speedups.c edit_tree) and the nodes C makes ------------

_TALL = TreeConfig(target=64, min_size=16, max_size=256)  # ~2 refs an internal node: tall trees
_SHORT = TreeConfig(target=256, min_size=32, max_size=1024)
_LISTS = ("keys", "values", "children", "counts")


class _CountingNative:
    """What store.tree sees as the extension: the real module, with its calls of the C edits
    counted (and those that came back with the address of a node that is not cached)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = {"edit_tree": 0}
        self.missed = {"edit_tree": 0}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def _call(self, name: str, args: tuple[Any, ...]) -> Any:
        self.calls[name] += 1
        out = getattr(self.real, name)(*args)
        if type(out) is bytes:
            self.missed[name] += 1
        return out

    def edit_tree(self, *args: Any) -> Any:
        return self._call("edit_tree", args)


def _counting(monkeypatch: pytest.MonkeyPatch) -> _CountingNative:
    counting = _CountingNative(_native())
    monkeypatch.setattr(tree_mod, "_native", counting)
    return counting


async def _built(config: TreeConfig, n: int) -> tuple[Any, Any]:
    """A MemoryStore and a tree of n items built in it (every node cached in its Nodes)."""
    from store.memory import MemoryStore
    from store.nodes import Nodes
    from store.tree import Tree

    store = MemoryStore()
    items = [(b"k%06d" % (3 * i), b"v%d" % i) for i in range(n)]
    return store, await Tree.build(Nodes(store, config), items)


async def _edit_in_python(tree: Any, edits: list[Any]) -> Any:
    """``tree.edit(edits)`` by the Python walk alone (no C chunker: no C edit either)."""
    config = tree.nodes.config
    surv = _survival_table(config.target, config.max_size)
    chunker = surv.native
    surv.native = None
    try:
        return await tree.edit(edits)
    finally:
        surv.native = chunker


def _untracked(node: Any) -> bool:
    import gc

    return not gc.is_tracked(node) and not any(gc.is_tracked(getattr(node, f)) for f in _LISTS)


@needs_native
def test_c_made_nodes_and_their_lists_are_not_tracked_by_the_cycle_collector() -> None:
    import gc

    assert nodes_mod.make_leaf is _native().make_leaf
    assert nodes_mod.make_internal is _native().make_internal
    keys = [b"k%03d" % i for i in range(50)]
    vals = [b"v" * i for i in range(50)]
    children = [b"\x01" + bytes([i]) * 32 for i in range(50)]
    counts = [i * 1000 + 1 for i in range(50)]
    pairs = [
        (nodes_mod.make_leaf(keys, vals), nodes_mod.make_leaf_py(keys.copy(), vals.copy())),
        (nodes_mod.make_leaf([], []), nodes_mod.make_leaf_py([], [])),
        (
            nodes_mod.make_internal(3, keys, children, counts),
            nodes_mod.make_internal_py(3, keys.copy(), children.copy(), counts.copy()),
        ),
        (
            nodes_mod.make_internal(1, [b"a"], [children[0]], [7]),
            nodes_mod.make_internal_py(1, [b"a"], [children[0]], [7]),
        ),
    ]
    for (c_node, c_data), (py_node, py_data) in pairs:
        assert type(c_node) is nodes_mod.Node
        assert c_data == py_data
        assert _fields(c_node) == _fields(py_node)
        assert _untracked(c_node)
        # the same class made in Python is tracked (with its lists): the C untracks them
        assert gc.is_tracked(py_node)
        assert all(gc.is_tracked(getattr(py_node, f)) for f in _LISTS)
    assert pairs[0][0][0].keys is keys  # (the caller's lists are the node's, as in Python)
    assert pairs[2][0][0].children is children
    # untracked, a node is still freed when its last reference goes, and releases its lists
    mine = [b"a", b"b"]
    before = sys.getrefcount(mine)
    node, _ = nodes_mod.make_leaf(mine, [b"1", b"2"])
    assert sys.getrefcount(mine) == before + 1
    del node
    assert sys.getrefcount(mine) == before


@needs_native
async def test_the_nodes_of_built_and_edited_trees_are_untracked() -> None:
    _, tree = await _built(_TALL, 3000)
    edited = await tree.edit([(b"k%06d" % (3 * i + 1), b"new") for i in range(0, 3000, 40)])
    assert edited.root != tree.root
    cached = list(tree.nodes._cache.values())  # all made in C
    both = await tree.reachable() | await edited.reachable()
    assert {node.address for node in cached} >= both and len(both) > 1000
    assert all(map(_untracked, cached))


_MADE: list[str] = []  # what the node classes below saw happen


class _InitNode(nodes_mod.Node):
    """Not fillable directly: it has an __init__ (bind_nodes must call the class)."""

    __slots__ = ()

    def __init__(self) -> None:
        _MADE.append("init")


class _NewNode(nodes_mod.Node):
    """Not fillable directly: it has a __new__."""

    __slots__ = ()

    def __new__(cls) -> _NewNode:
        _MADE.append("new")
        return super().__new__(cls)


class _SetattrNode(nodes_mod.Node):
    """Not fillable directly: its attributes are set through its own __setattr__."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        _MADE.append(name)
        super().__setattr__(name, value)


class _PropertyNode:
    """Not fillable directly: ``level`` is a property (over another slot), not a slot."""

    __slots__ = ("_level", "address", "children", "count", "counts", "keys", "size", "values")

    @property
    def level(self) -> int:
        return self._level

    @level.setter
    def level(self, value: int) -> None:
        _MADE.append("level")
        self._level = value


class _DictNode(nodes_mod.Node):
    """Object's __new__ and __init__, the slots plain, but a __dict__ (which could hold a
    cycle): called, and tracked."""


class _SlotsNode(nodes_mod.Node):
    """Fillable directly: object's __new__ and __init__, Node's slots, no __dict__."""

    __slots__ = ()


@needs_native
@pytest.mark.parametrize(
    ("cls", "direct", "seen"),
    [
        (_InitNode, False, ["init"]),
        (_NewNode, False, ["new"]),
        (_SetattrNode, False, list(nodes_mod.Node.__slots__)),
        (_PropertyNode, False, ["level"]),
        (_DictNode, False, []),
        (_SlotsNode, True, []),
    ],
    ids=["init", "new", "setattr", "property", "dict", "slots"],
)
async def test_nodes_of_other_classes_get_every_field(
    cls: type, direct: bool, seen: list[str]
) -> None:
    """bind_nodes fills a node's slots directly only for a plain __slots__ class; any other
    class is called and its attributes set, and its nodes are right all the same, in a whole
    tree edit too (which reads them, and the old Nodes, as it can)."""
    import gc

    from store.nodes import Nodes
    from store.tree import Tree

    nat = _native()
    path = nodes_mod._libcrypto()
    assert path is not None
    store, tree = await _built(_SHORT, 3000)  # Nodes, before the binding
    edits: list[tuple[bytes, bytes | None]] = [
        (b"k%06d" % (3 * i + 1), b"new") for i in range(0, 3000, 50)
    ]
    expected = await _edit_in_python(Tree(Nodes(store, _SHORT), tree.root), edits)
    keys = [b"k%03d" % i for i in range(30)]
    vals = [b"v" * i for i in range(30)]
    children = [b"\x01" + bytes([i]) * 32 for i in range(30)]
    counts = list(range(1, 31))
    py_leaf, py_leaf_data = nodes_mod.make_leaf_py(keys, vals)
    py_inner, py_inner_data = nodes_mod.make_internal_py(2, keys, children, counts)
    _MADE.clear()
    assert nat.bind_nodes(cls, path, nodes_mod._sha256_digest)
    try:
        leaf, leaf_data = nat.make_leaf(list(keys), list(vals))
        inner, inner_data = nat.make_internal(2, list(keys), list(children), list(counts))
        made = list(_MADE)
        edited = await tree.edit(edits)  # warm: one edit_tree call, making cls nodes
        new_root = tree.nodes.peek(edited.root)
    finally:
        rebound = nat.bind_nodes(nodes_mod.Node, path, nodes_mod._sha256_digest)
    assert rebound
    assert (leaf_data, inner_data) == (py_leaf_data, py_inner_data)
    assert type(leaf) is cls and type(inner) is cls
    assert _fields(leaf) == _fields(py_leaf)
    assert _fields(inner) == _fields(py_inner)
    assert sorted(made) == sorted(seen * 2)  # the class's own code ran for each node
    assert gc.is_tracked(leaf) is not direct  # (made by calling the class: tracked)
    if direct:
        assert _untracked(leaf) and _untracked(inner)
    if cls is _DictNode:
        cast(Any, leaf).extra = 1  # the __dict__ works
        assert leaf.__dict__ == {"extra": 1}
    assert edited.root == expected.root
    assert type(new_root) is cls
    assert await edited.items() == await expected.items()
    # the real Node again, filled directly
    node, _ = nat.make_leaf([b"a"], [b"b"])
    assert type(node) is nodes_mod.Node and _untracked(node)


@needs_native
def test_bind_nodes_refuses_what_is_not_a_class_and_keeps_its_class() -> None:
    nat = _native()
    path = nodes_mod._libcrypto()
    assert path is not None
    try:
        for bad in (nodes_mod.Node(), 5, None):
            with pytest.raises(TypeError, match="class"):
                nat.bind_nodes(bad, path, nodes_mod._sha256_digest)
        node, _ = nat.make_leaf([b"a"], [b"b"])
        assert type(node) is nodes_mod.Node and _untracked(node)
    finally:
        assert nat.bind_nodes(nodes_mod.Node, path, nodes_mod._sha256_digest)


_WARM_BATCHES: list[list[tuple[bytes, bytes | None]]] = [
    [(b"k%06d" % (3 * i + 1), b"new %d" % i) for i in range(400, 700)],  # inserts, one run
    [(b"k%06d" % (3 * i), None) for i in range(0, 3000, 11)],  # scattered deletes
    [(b"z%04d" % i, b"appended") for i in range(50)],  # after the end
    [(b"a", b"first"), (b"k%06d" % 4500, b"x" * 120)],  # before the start; a long value
    [(b"k%06d" % 3003, b"changed")],  # one update
    [(b"k%06d" % (3 * i), None) for i in range(100, 2900)],  # most of the tree
]


@needs_native
@pytest.mark.parametrize("config", [_TALL, _SHORT], ids=["tall", "short"])
async def test_a_warm_edit_is_one_c_call_for_all_its_levels(
    config: TreeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every node cached: each Tree.edit is one edit_tree call, however many levels the tree
    has; the roots and node reads are the Python walk's."""
    from store.memory import MemoryStore
    from store.nodes import Nodes
    from store.tree import Tree

    counting = _counting(monkeypatch)
    _, c_tree = await _built(config, 3000)
    _, py_tree = await _built(config, 3000)
    assert await c_tree.height() >= 4
    assert counting.calls == {"edit_tree": 0}
    for n, batch in enumerate(_WARM_BATCHES, start=1):
        before = c_tree.root
        c_reads, py_reads = c_tree.nodes.stats.reads, py_tree.nodes.stats.reads
        c_tree = await c_tree.edit(batch)
        assert counting.calls == {"edit_tree": n}
        py_tree = await _edit_in_python(py_tree, batch)
        assert counting.calls == {"edit_tree": n}  # (none in Python)
        assert c_tree.root == py_tree.root != before
        assert c_tree.nodes.stats.reads - c_reads == py_tree.nodes.stats.reads - py_reads
    assert counting.missed == {"edit_tree": 0}
    assert c_tree.nodes.stats.fetches == 0  # nothing was read from the store
    rebuilt = await Tree.build(Nodes(MemoryStore(), config), await c_tree.items())
    assert rebuilt.root == c_tree.root


def _counting_prefetch(monkeypatch: pytest.MonkeyPatch, nodes: Any) -> list[int]:
    """Count Tree._edit's prefetch_paths calls: the fetches each one made."""
    made: list[int] = []
    real = tree_mod.prefetch_paths

    async def counted(tree: Any, keys: list[bytes], limit: int) -> None:
        before = nodes.stats.fetches
        await real(tree, keys, limit)
        made.append(nodes.stats.fetches - before)

    monkeypatch.setattr(tree_mod, "prefetch_paths", counted)
    return made


@needs_native
@pytest.mark.parametrize("budget", [0, 1, None, 100_000], ids=["0", "1", "default", "unbounded"])
async def test_a_cold_edit_meets_at_most_the_budget_of_uncached_nodes_in_c(
    budget: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every node but the root from the store: the first C call that comes back with an
    uncached node's address has the paths of the edit keys fetched (one prefetch), and each
    later one costs a restart, so one Tree.edit takes at most _NATIVE_MISSES of those, then
    the Python walk finishes; same tree, reads, fetches as the Python walk alone."""
    from store.nodes import Nodes
    from store.tree import Tree

    if budget is not None:
        monkeypatch.setattr(tree_mod, "_NATIVE_MISSES", budget)
    limit = tree_mod._NATIVE_MISSES
    store, built = await _built(_SHORT, 20000)
    edits: list[tuple[bytes, bytes | None]] = [
        (b"k%06d" % (3 * i), b"changed %d" % i) for i in range(0, 20000, 97)
    ]
    edits += [(b"k%06d" % (3 * i + 2), b"new") for i in range(50, 20000, 331)]
    edits += [(b"k%06d" % (3 * i), None) for i in range(7, 20000, 433)]
    py_nodes = Nodes(store, _SHORT)
    expected = await _edit_in_python(Tree(py_nodes, built.root), edits)
    needed = py_nodes.stats.fetches - 1  # the nodes the edit reads, but the root
    assert 4 < needed < 100_000  # more than the default budget, less than the unbounded one
    counting = _counting(monkeypatch)
    cold = Nodes(store, _SHORT)
    prefetches = _counting_prefetch(monkeypatch, cold)
    edited = await Tree(cold, built.root).edit(edits)
    assert edited.root == expected.root
    assert (cold.stats.reads, cold.stats.fetches) == (py_nodes.stats.reads, py_nodes.stats.fetches)
    missed = counting.missed["edit_tree"]
    if limit == 0:
        assert counting.calls == {"edit_tree": 0} and prefetches == []
        return
    assert len(prefetches) == 1  # at the first miss
    assert 0 < prefetches[0] <= needed  # nothing the edit does not read
    after = needed - prefetches[0]  # nodes off the keys' paths (a run going on, say)
    assert missed == 1 + min(limit, after)
    # every call but one (the one that finishes, if it is C's) comes back with a miss
    assert missed <= counting.calls["edit_tree"] <= missed + 1
    if limit > after:
        assert counting.calls == {"edit_tree": after + 2}


@needs_native
async def test_a_cold_one_key_edit_is_finished_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """One update that moves no boundary (the key is hashed, and the value keeps its size):
    one node a level to load, all fetched by the prefetch at the first miss (one round trip a
    level), then one call that does the edit."""
    from store.nodes import Nodes
    from store.tree import Tree

    store, built = await _built(_SHORT, 3000)
    height = await built.height()
    assert height >= 3
    edit: list[tuple[bytes, bytes | None]] = [(b"k%06d" % 4500, b"w1500")]  # was v1500
    expected = await _edit_in_python(Tree(Nodes(store, _SHORT), built.root), edit)
    counting = _counting(monkeypatch)
    cold = Nodes(store, _SHORT)
    prefetches = _counting_prefetch(monkeypatch, cold)
    edited = await Tree(cold, built.root).edit(edit)
    assert prefetches == [height - 1]  # the root was loaded before
    assert counting.missed == {"edit_tree": 1}
    assert counting.calls == {"edit_tree": 2}
    assert edited.root == expected.root != built.root
    assert cold.stats.fetches == height
    assert cold.stats.writes == height  # one new node a level
    assert await edited.get(b"k%06d" % 4500) == b"w1500"


@needs_native
async def test_edits_that_change_nothing_give_no_top(monkeypatch: pytest.MonkeyPatch) -> None:
    """No edits: no top, nothing made, nothing visited. Deletes of absent keys and updates to
    the same values: no top either, and only nodes the tree has already are made; Tree.edit
    returns the tree itself, with and without C, and writes nothing."""
    _, tree = await _built(_TALL, 3000)
    nodes = tree.nodes
    root = await nodes.load(tree.root)
    chunker = _survival_table(_TALL.target, _TALL.max_size).native
    mn, mx = _TALL.min_size, _TALL.max_size
    nat = _native()
    head = (chunker, nodes.load_cached, nodes_mod.make_leaf, nodes_mod.make_internal, root)
    assert nat.edit_tree(*head, [], [], mn, mx) == (None, [], 0)
    reachable = await tree.reachable()
    absent = [b"k%06d" % (3 * i + 1) for i in range(0, 3000, 37)] + [b"a", b"zzz"]
    present = [b"k%06d" % (3 * i) for i in range(5, 3000, 41)]
    cases: list[list[tuple[bytes, bytes | None]]] = [
        [(k, None) for k in absent],
        [(k, b"v%d" % (int(k[1:]) // 3)) for k in present],  # the values they have
        sorted([(k, None) for k in absent] + [(k, b"v%d" % (int(k[1:]) // 3)) for k in present]),
        [(b"k%06d" % 4501, None)],
    ]
    counting = _counting(monkeypatch)
    writes = nodes.stats.writes
    for n, case in enumerate(cases, start=1):
        ekeys = [k for k, _ in sorted(case)]
        evals = [v for _, v in sorted(case)]
        top, emitted, visits = nat.edit_tree(*head, ekeys, evals, mn, mx)
        assert top is None
        assert emitted and visits >= await tree.height() - 1
        assert {node.address for node, _ in emitted} <= reachable
        assert await tree.edit(case) is tree
        assert counting.calls == {"edit_tree": n}
        assert await _edit_in_python(tree, case) is tree
        assert nodes.pending_bytes == 0 and nodes.stats.writes == writes


@needs_native
async def test_edit_tree_refuses_bad_arguments() -> None:
    from store.nodes import Node

    nat = _native()
    _, tree = await _built(_TALL, 3000)
    nodes = tree.nodes
    root = await nodes.load(tree.root)
    surv = _survival_table(_TALL.target, _TALL.max_size)
    mn, mx = _TALL.min_size, _TALL.max_size
    ekeys, evals = [b"k000004"], [b"inserted"]  # a new leaf entry: make_internal at level 1 too
    good: tuple[Any, ...] = (
        *(surv.native, nodes.load_cached, nodes_mod.make_leaf, nodes_mod.make_internal, root),
        *(ekeys, evals, mn, mx),
    )

    def but(i: int, value: Any) -> tuple[Any, ...]:
        return (*good[:i], value, *good[i + 1 :])

    def raising(address: bytes) -> Any:
        raise Boom(address)

    bare = Node()  # no fields at all
    negative = Node()
    negative.level = -1
    cases: list[tuple[tuple[Any, ...], type[Exception]]] = [
        ((), TypeError),
        (good[:8], TypeError),
        ((*good, 1), TypeError),
        (but(0, object()), TypeError),  # not a Chunker
        (but(0, None), TypeError),
        (but(0, surv), TypeError),  # the table, not its Chunker
        (but(0, nat.Chunker.__new__(nat.Chunker)), RuntimeError),  # never initialised
        (but(1, None), TypeError),  # load_cached not callable
        (but(1, ({}, [])), TypeError),  # a lookup tuple holding a non-dict
        (but(1, ({child: 5 for child in root.children},)), AttributeError),  # not nodes
        (but(1, raising), Boom),  # its errors propagate
        (but(1, lambda address: 5), AttributeError),  # a "node" without fields
        (but(1, lambda address: root), ValueError),  # every child is the root: too deep
        (but(2, lambda keys, values: 5), TypeError),  # make_leaf not giving (node, data)
        (but(2, lambda keys, values: (object(), b"")), AttributeError),
        (but(3, lambda *args: None), TypeError),  # make_internal not giving (node, data)
        (but(4, None), AttributeError),  # a root that is no node
        (but(4, 5), AttributeError),
        (but(4, bare), AttributeError),
        (but(4, negative), ValueError),
        (but(5, tuple(ekeys)), ValueError),  # the edits: two lists of one length
        (but(6, tuple(evals)), ValueError),
        (but(5, None), ValueError),
        (but(5, [*ekeys, b"k000005"]), ValueError),
        (but(6, []), ValueError),
        (but(5, ["k000004"]), TypeError),  # a key not bytes
        (but(6, [4]), TypeError),  # a value not bytes
        (but(7, "16"), TypeError),  # mn, mx not ints
        (but(7, 16.0), TypeError),
        (but(8, None), TypeError),
        (but(8, 2**70), OverflowError),
    ]
    for args, error in cases:
        with pytest.raises(error):
            nat.edit_tree(*args)
    # a lookup tuple that finds nothing: a miss (the address of a child), not an error
    assert nat.edit_tree(*but(1, ({},))) in root.children
    # still working after all that, and nothing was left half-made in the nodes
    assert nodes.pending_bytes == 0
    top, emitted, _ = nat.edit_tree(*good)
    assert top is not None and emitted
    edited = await tree.edit(list(zip(ekeys, evals, strict=True)))
    assert edited.root == (await _edit_in_python(tree, [(ekeys[0], evals[0])])).root
    assert await edited.get(ekeys[0]) == evals[0]


def _run_script(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


_EDIT_TREE_SETUP = """
import asyncio, gc, os
import store.nodes as nm
from store.memory import MemoryStore
from store.nodes import Nodes, TreeConfig, make_internal, make_leaf
from store.speedups import native
from store.tree import Tree, _survival_table

config = TreeConfig(target=64, min_size=16, max_size=256)
nodes = Nodes(MemoryStore(), config)
tree = asyncio.run(Tree.build(nodes, [(b"k%05d" % i, b"v%d" % i) for i in range(3000)]))
root = nodes.peek(tree.root)
chunker = _survival_table(config.target, config.max_size).native
ekeys = [b"k%05d" % i + b"x" for i in range(0, 3000, 7)]
evals = [b"new" * 20 for _ in ekeys]
"""

_EDIT_CRASH_SCRIPTS = {
    # a make_leaf that runs the cycle collector each time: the C edit holds nodes and lists
    # (untracked ones among them) across it
    "collecting-make-leaf": _EDIT_TREE_SETUP
    + """
def collecting(keys, values):
    gc.collect()
    return make_leaf(keys, values)
got = native.edit_tree(chunker, nodes.load_cached, collecting, make_internal, root,
                       ekeys, evals, 16, 256)
want = native.edit_tree(chunker, nodes.load_cached, make_leaf, make_internal, root,
                        list(ekeys), list(evals), 16, 256)
assert got[0] == want[0] and got[0] is not None
print("same")
""",
    # a load_cached that empties the caller's edit lists while the C edit walks them
    "clearing-load": _EDIT_TREE_SETUP
    + """
def clearing(address):
    ekeys.clear()
    evals.clear()
    return nodes.load_cached(address)
try:
    native.edit_tree(chunker, clearing, make_leaf, make_internal, root, ekeys, evals, 16, 256)
except Exception as exc:
    print(type(exc).__name__)
""",
    # a class whose attributes are the slot descriptors of another, larger class: its slots
    # are not the Node's (filled directly, they would be written beyond the object's end)
    "foreign-slots": """
import os
import store.nodes as nm
from store.speedups import native

class Other:
    __slots__ = tuple("pad%d" % i for i in range(12)) + nm.Node.__slots__

class Fake:
    pass

for name in nm.Node.__slots__:
    setattr(Fake, name, Other.__dict__[name])
try:
    bound = native.bind_nodes(Fake, nm._libcrypto(), nm._sha256_digest)
except Exception as exc:
    print(type(exc).__name__)
    bound = False
if bound:
    try:
        native.make_leaf([b"k"], [b"v"])
    except Exception as exc:  # Other's descriptors refuse a Fake
        print(type(exc).__name__)
    else:
        os._exit(3)  # the slots of Other were written into a Fake
""",
}

@needs_native
@pytest.mark.parametrize("name", sorted(_EDIT_CRASH_SCRIPTS))
def test_edit_tree_and_node_misuse_does_not_crash_the_interpreter(name: str) -> None:
    done = _run_script(_EDIT_CRASH_SCRIPTS[name])
    assert done.returncode == 0, (done.returncode, done.stderr)
