"""The chunker's survival table shipped with the package (store/survival-4096-16384.bin) is
the one its definition gives, and the default configuration reads it; the chunker's quick
bound (store/tree.py ``_Quick``) never changes a decision."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

import store.tree as tree_mod
from store.nodes import TreeConfig
from store.tree import (
    _QUICK_SPAN,
    _cut_internal,
    _cut_leaf,
    _Survival,
    _survival_table,
    survival_table_bytes,
)

SHIPPED = Path(tree_mod.__file__).parent / "survival-4096-16384.bin"


def test_shipped_table_equals_its_definition() -> None:
    default = TreeConfig()
    assert (default.target, default.max_size) == (4096, 16384)
    assert SHIPPED.read_bytes() == survival_table_bytes(4096, 16384)


def test_default_config_reads_the_shipped_table() -> None:
    table = _survival_table(4096, 16384)
    assert table._shipped is not None
    fresh = _Survival(4096, 16384)  # no shipped bytes: computed from the definition
    for size in (0, 1, 511, 512, 4095, 4096, 9000, 16383, 16384):
        assert table[size] == fresh[size] == fresh.compute(size)
    assert table[0] == 1 << 96


def test_a_damaged_or_absent_shipped_table_is_not_used(tmp_path: Path) -> None:
    name, sha256 = tree_mod._SHIPPED[(4096, 16384)]
    assert tree_mod._shipped_table(name, sha256) == SHIPPED.read_bytes()
    damaged = bytearray(SHIPPED.read_bytes())
    damaged[4096 * 13 + 5] ^= 1
    (tmp_path / name).write_bytes(bytes(damaged))
    assert tree_mod._shipped_table(name, sha256, tmp_path) is None
    assert tree_mod._shipped_table("absent.bin", sha256, tmp_path) is None


def test_other_configs_compute_their_table() -> None:
    table = _survival_table(64, 256)
    assert table._shipped is None
    assert table[64] == table.compute(64)


def test_a_shipped_table_of_the_wrong_size_is_ignored() -> None:
    table = _Survival(4096, 16384, b"\x00" * 100)
    assert table._shipped is None
    assert table[4096] == table.compute(4096)


@pytest.mark.parametrize("size", [-1, 16385, 1.5])
def test_sizes_outside_the_table_raise(size: object) -> None:
    with pytest.raises(KeyError):
        _survival_table(4096, 16384)[size]  # type: ignore[index]


# -- the chunker's quick bound (_Quick) decides exactly as the definition ---------------------


def _reference_cut_leaf(
    keys: list[bytes], vals: list[bytes], size: int, mn: int, mx: int, surv: _Survival
) -> tuple[list[int], int]:
    """The leaf chunker as docs/format.md defines it, with no shortcut."""
    cuts = []
    for i, k in enumerate(keys):
        s1 = size + len(k) + len(vals[i]) + 2
        end = s1 >= mx or (
            s1 >= mn
            and (
                surv[size] == 0
                or xxhash.xxh3_64_intdigest(k, 0) * surv[size] < (surv[size] - surv[s1]) << 64
            )
        )
        if end:
            cuts.append(i + 1)
            size = 0
        else:
            size = s1
    return cuts, size


def _reference_cut_internal(
    keys: list[bytes], level: int, mn: int, mx: int, surv: _Survival
) -> list[int]:
    cuts = []
    size = count = 0
    for i, k in enumerate(keys):
        s1 = size + len(k) + 40
        count += 1
        end = s1 >= mn and (
            s1 >= mx
            or surv[size] == 0
            or xxhash.xxh3_64_intdigest(k, level) * surv[size] < (surv[size] - surv[s1]) << 64
        )
        if end and count > 1:
            cuts.append(i + 1)
            size = count = 0
        else:
            size = s1
    return cuts


@settings(max_examples=200, deadline=None)
@given(
    config=st.sampled_from([(4096, 512, 16384), (64, 16, 256), (300, 100, 1000)]),
    sizes=st.lists(st.tuples(st.integers(1, 200), st.integers(0, 90)), min_size=1, max_size=400),
    seed=st.integers(0, 2**32),
    level=st.integers(1, 5),
)
def test_quick_bound_cuts_exactly_as_the_definition(
    config: tuple[int, int, int], sizes: list[tuple[int, int]], seed: int, level: int
) -> None:
    """Entry sizes on both sides of _QUICK_SPAN (the exact test must take the large ones),
    random key bytes (so random hashes)."""
    target, mn, mx = config
    surv = _survival_table(target, mx)
    rng = random.Random(seed)
    keys = [rng.randbytes(k) for k, _ in sizes]
    vals = [rng.randbytes(v) for _, v in sizes]
    assert _cut_leaf(keys, vals, 0, 0, mn, mx, surv) == _reference_cut_leaf(
        keys, vals, 0, mn, mx, surv
    )
    cuts, _, _ = _cut_internal(keys, 0, 0, 0, level, mn, mx, surv)
    assert cuts == _reference_cut_internal(keys, level, mn, mx, surv)


def test_quick_bound_is_the_least_hash_that_cannot_end_a_node() -> None:
    surv = _survival_table(300, 1000)
    for s0 in (0, 99, 100, 250, 600, 871, 999, 1000):
        q = surv.quick[s0]
        before = surv[s0]
        if before == 0:
            assert q == 1 << 64
            continue
        worst = (before - surv[min(s0 + _QUICK_SPAN, 1000)]) << 64
        assert q * before >= worst  # q cannot end a node of any entry up to the span
        assert q == 0 or (q - 1) * before < worst  # and q - 1 can
