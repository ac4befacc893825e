"""The chunker's survival table shipped with the package (store/survival-4096-16384.bin) is
the one its definition gives, and the default configuration reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

import store.tree as tree_mod
from store.nodes import TreeConfig
from store.tree import _Survival, _survival_table, survival_table_bytes

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
