# Types of the optional C extension store/_speedups.c (see store/speedups.py).
from array import array
from collections.abc import Callable, Mapping, Sequence

def encode_leaf(keys: Sequence[bytes], values: Sequence[bytes], /) -> bytes: ...
def encode_internal(
    level: int, keys: Sequence[bytes], children: Sequence[bytes], counts: Sequence[int], /
) -> bytes: ...

class Chunker:
    def __init__(
        self,
        surv: Mapping[int, int],
        quick: Mapping[int, int],
        max_size: int,
        span: int,
        hash: Callable[[bytes, int], int],
        leaf_entry: int,
        internal_entry: int,
        /,
    ) -> None: ...
    def cut_leaf(
        self, keys: list[bytes], vals: list[bytes], start: int, size: int, mn: int, mx: int, /
    ) -> tuple[list[int], int]: ...
    def cut_internal(
        self, keys: list[bytes], start: int, size: int, count: int, level: int, mn: int, mx: int, /
    ) -> tuple[list[int], int, int]: ...
    def prefix_size(self, keys: list[bytes], vals: list[bytes] | None, start: int, /) -> int: ...

# store/file.py _Table (arrays of u32 tags and u64 locations, mask + 1 slots)
def table_insert_entries(
    tags: array[int],
    locs: array[int],
    mask: int,
    used: int,
    base: int,
    entries: list[tuple[bytes, int, int]],
    /,
) -> None: ...
def table_rehash(
    tags: array[int], locs: array[int], new_tags: array[int], new_locs: array[int], new_mask: int, /
) -> None: ...
def table_hits(tags: array[int], mask: int, addresses: Sequence[bytes], /) -> list[bytes]: ...
