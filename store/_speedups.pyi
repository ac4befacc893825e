# Types of the optional C extension store/_speedups.c (see store/speedups.py).
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
    def use_library(self, path: str, /) -> bool: ...
    def uses_library(self) -> bool: ...
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

# store/file.py _encode_batch's node records, joined: (records, entries, .idx bytes), or None
# past ``limit`` bytes
def encode_records(
    nodes: list[tuple[bytes, bytes]], start: int, limit: int, /
) -> tuple[bytes, list[tuple[bytes, int, int]], bytes] | None: ...

# every level of store/tree.py Tree._edit over cached nodes: (top refs or None if the tree did
# not change, emitted (node, data) pairs, nodes visited), or the address of a node that is not
# cached
def edit_tree(
    chunker: Chunker,
    lookup: Callable[[bytes], Any] | tuple[dict[bytes, Any], ...],
    make_leaf: Callable[..., tuple[Any, bytes]],
    make_internal: Callable[..., tuple[Any, bytes]],
    root: Any,
    ekeys: list[bytes],
    evals: list[Any],
    mn: int,
    mx: int,
    /,
) -> bytes | tuple[list[tuple[bytes, bytes, int]] | None, list[tuple[Any, bytes]], int]: ...

# store/nodes.py make_leaf / make_internal (after bind_nodes)
def bind_nodes(
    node_type: type, libcrypto_path: str, sha256: Callable[[bytes], bytes], /
) -> bool: ...
def make_leaf(keys: list[bytes], values: list[bytes], /) -> tuple[Any, bytes]: ...
def make_internal(
    level: int, keys: list[bytes], children: list[bytes], counts: list[int], /
) -> tuple[Any, bytes]: ...
