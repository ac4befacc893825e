"""The NodeStore conformance suite: every backend must pass every test here (DESIGN.md section 3).

Each test runs once per backend (ids ``mem``, ``file``, ``s3``; see conftest.py). The contract
is :class:`store.base.NodeStore`; the expectations below are its docstrings, made executable:

* nodes: ``address -> bytes`` with ``address == address_of(bytes)``; ``put_many`` is idempotent
  and all-or-nothing; reads of absent nodes raise NodeNotFound naming the address;
* refs: ``name -> bytes``, changed only by ``cas_ref``, which is atomic against other store
  objects (other processes) on the same location;
* invalid input (a malformed address, non-bytes data or ref value, a bad ref name) is a plain
  StoreError, never a wrong answer or a half-written batch;
* after ``aclose()`` every call raises StoreClosed.

Error assertions use :func:`raises_exactly`: a subclass is a different, wrong answer (a CorruptNode
where the contract says StoreError would send a caller down the wrong recovery path).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest

from store.base import NodeStore
from store.codec import address_of, is_address
from store.errors import CorruptNode, NodeNotFound, StoreClosed, StoreError

Reopen = Callable[[], Awaitable[NodeStore]]


@contextmanager
def raises_exactly(cls: type[BaseException]) -> Iterator[pytest.ExceptionInfo[Any]]:
    """``pytest.raises`` that also rejects subclasses of ``cls``."""
    with pytest.raises(cls) as info:
        yield info
    assert info.type is cls, (
        f"expected exactly {cls.__name__}, got {info.type.__name__}: {info.value}"
    )


def batch(*datas: bytes) -> dict[bytes, bytes]:
    """A valid ``put_many`` batch holding ``datas``."""
    return {address_of(data): data for data in datas}


def blob(size: int, seed: int = 0) -> bytes:
    """``size`` reproducible pseudo-random bytes (every byte value, not just text)."""
    return random.Random(seed).randbytes(size)


ABSENT = address_of(b"never stored anywhere")


# --------------------------------------------------------------------------------------- nodes


async def test_store_is_a_node_store(store: NodeStore, backend: str) -> None:
    assert isinstance(store, NodeStore)
    assert isinstance(store.url, str)
    assert urlsplit(store.url).scheme == backend


async def test_put_many_then_get_round_trips(store: NodeStore) -> None:
    nodes = batch(b"alpha", b"beta", bytes(range(256)), blob(1000))
    await store.put_many(nodes)
    for address, data in nodes.items():
        got = await store.get(address)
        assert got == data
        assert type(got) is bytes


async def test_get_many_returns_every_address_given(store: NodeStore) -> None:
    nodes = batch(*(f"node {i}".encode() for i in range(6)))
    await store.put_many(nodes)
    wanted = list(nodes)[1:5]
    got = await store.get_many(wanted)
    assert got == {address: nodes[address] for address in wanted}
    assert all(type(data) is bytes for data in got.values())
    # Any iterable, consumed once; a repeated address is simply one key.
    again = await store.get_many(iter([wanted[0], wanted[1], wanted[0]]))
    assert again == {wanted[0]: nodes[wanted[0]], wanted[1]: nodes[wanted[1]]}
    assert await store.get_many([]) == {}


async def test_get_of_absent_node_raises_node_not_found(store: NodeStore) -> None:
    await store.put_many(batch(b"present"))
    with raises_exactly(NodeNotFound) as info:
        await store.get(ABSENT)
    assert info.value.address == ABSENT
    assert ABSENT.hex() in str(info.value)
    assert isinstance(info.value, KeyError)
    with pytest.raises(KeyError):  # callers may treat the store like a mapping
        await store.get(ABSENT)


async def test_get_many_with_one_absent_names_it(store: NodeStore) -> None:
    nodes = batch(b"first", b"second")
    await store.put_many(nodes)
    first, second = nodes
    with raises_exactly(NodeNotFound) as info:
        await store.get_many([first, ABSENT, second])
    assert info.value.address == ABSENT
    assert ABSENT.hex() in str(info.value)


MALFORMED_ADDRESSES = [
    pytest.param(b"", id="empty"),
    pytest.param(address_of(b"x")[:-1], id="short"),
    pytest.param(address_of(b"x") + b"\0", id="long"),
    pytest.param(b"\x02" + address_of(b"x")[1:], id="unknown-version"),
    pytest.param(address_of(b"x").hex(), id="hex-str"),
    pytest.param(None, id="None"),
]


@pytest.mark.parametrize("address", MALFORMED_ADDRESSES)
async def test_get_of_malformed_address_is_store_error(store: NodeStore, address: Any) -> None:
    # A malformed address is the caller's mistake, not a node that happens to be absent.
    with raises_exactly(StoreError):
        await store.get(address)
    with raises_exactly(StoreError):
        await store.get_many([address])


async def test_put_many_is_idempotent(store: NodeStore) -> None:
    nodes = batch(b"one", b"two", b"three")
    await store.put_many(nodes)
    await store.put_many(nodes)
    assert await store.list_addresses() == set(nodes)
    # A batch overlapping what is stored adds only the new node.
    more = batch(b"three", b"four")
    await store.put_many(more)
    assert await store.list_addresses() == set(nodes) | set(more)
    assert await store.get_many(list(nodes) + list(more)) == nodes | more


async def test_put_many_of_empty_batch_is_a_no_op(store: NodeStore) -> None:
    await store.put_many({})
    assert await store.list_addresses() == set()


@pytest.mark.parametrize("position", [0, 2, 4], ids=["bad-first", "bad-middle", "bad-last"])
async def test_put_many_with_mismatched_address_writes_nothing(
    store: NodeStore, position: int
) -> None:
    before = batch(b"stored before")
    await store.put_many(before)
    good = list(batch(*(f"good {i}".encode() for i in range(4))).items())
    bad_address = address_of(b"what the address promises")
    items = [*good[:position], (bad_address, b"what the bytes are"), *good[position:]]
    with raises_exactly(CorruptNode) as info:
        await store.put_many(dict(items))
    assert info.value.address == bad_address
    assert bad_address.hex() in str(info.value)
    # All or nothing: not one node of the failed batch, valid or not, was written.
    assert await store.missing([address for address, _ in items]) == {a for a, _ in items}
    assert await store.list_addresses() == set(before)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("text", id="str"),
        pytest.param(bytearray(b"text"), id="bytearray"),
        pytest.param(memoryview(b"text"), id="mview"),
        pytest.param(None, id="None"),
        pytest.param(5, id="int"),
    ],
)
async def test_put_many_rejects_non_bytes_data(store: NodeStore, data: Any) -> None:
    good = batch(b"good one", b"good two")
    bad_address = address_of(b"text")
    with raises_exactly(StoreError) as info:
        await store.put_many({**good, bad_address: data})
    assert bad_address.hex() in str(info.value)
    assert await store.missing([*good, bad_address]) == {*good, bad_address}
    assert await store.list_addresses() == set()


@pytest.mark.parametrize("address", MALFORMED_ADDRESSES)
async def test_put_many_rejects_malformed_address(store: NodeStore, address: Any) -> None:
    good = batch(b"good one", b"good two")
    with raises_exactly(StoreError):
        await store.put_many({**good, address: b"x"})
    assert await store.list_addresses() == set()


async def test_missing_returns_exactly_the_absent_subset(store: NodeStore) -> None:
    nodes = batch(b"have 1", b"have 2")
    absent = set(batch(b"lack 1", b"lack 2"))
    await store.put_many(nodes)
    assert await store.missing([*nodes, *absent]) == absent
    assert await store.missing(list(nodes)) == set()
    assert await store.missing([]) == set()
    assert await store.missing(iter([*absent, *absent, *nodes])) == absent


async def test_list_addresses_and_delete_many(store: NodeStore) -> None:
    assert await store.list_addresses() == set()
    nodes = batch(b"keep 1", b"keep 2", b"drop 1", b"drop 2")
    await store.put_many(nodes)
    assert await store.list_addresses() == set(nodes)
    keep, drop = list(nodes)[:2], list(nodes)[2:]
    await store.delete_many(iter([*drop, ABSENT]))  # any iterable; absent ones are ignored
    assert await store.list_addresses() == set(keep)
    assert await store.missing(list(nodes)) == set(drop)
    with raises_exactly(NodeNotFound) as info:
        await store.get(drop[0])
    assert info.value.address == drop[0]
    assert await store.get_many(keep) == {address: nodes[address] for address in keep}
    # A deleted node can be put again (GC raced a writer that re-created it).
    await store.put_many({drop[0]: nodes[drop[0]]})
    assert await store.get(drop[0]) == nodes[drop[0]]
    assert await store.list_addresses() == {*keep, drop[0]}


async def test_delete_many_of_absent_addresses_is_fine(store: NodeStore) -> None:
    await store.delete_many([ABSENT])
    await store.delete_many([])
    nodes = batch(b"stays")
    await store.put_many(nodes)
    await store.delete_many([ABSENT, address_of(b"also absent")])
    assert await store.list_addresses() == set(nodes)


@pytest.mark.parametrize("size", [100 * 1024, 1024 * 1024], ids=["100KiB", "1MiB"])
async def test_large_nodes_round_trip(store: NodeStore, size: int) -> None:
    nodes = batch(blob(size, seed=1), blob(size, seed=2))
    await store.put_many(nodes)
    for address, data in nodes.items():
        assert await store.get(address) == data
    assert await store.get_many(list(nodes)) == nodes


async def test_empty_node_round_trips(store: NodeStore) -> None:
    empty = address_of(b"")
    assert is_address(empty)
    assert await store.missing([empty]) == {empty}
    await store.put_many({empty: b""})
    assert await store.get(empty) == b""
    assert await store.get_many([empty]) == {empty: b""}
    assert await store.missing([empty]) == set()
    assert await store.list_addresses() == {empty}
    await store.delete_many([empty])
    assert await store.list_addresses() == set()


@pytest.mark.slow
async def test_many_nodes_in_one_batch(store: NodeStore) -> None:
    # More than one S3 listing page (1000 keys) and one DeleteObjects request (1000 keys).
    nodes = batch(*(f"node number {i}".encode() for i in range(1100)))
    await store.put_many(nodes)
    assert await store.list_addresses() == set(nodes)
    assert await store.missing([*nodes, ABSENT]) == {ABSENT}
    assert await store.get_many(list(nodes)) == nodes
    await store.delete_many(list(nodes)[:1050])
    assert await store.list_addresses() == set(list(nodes)[1050:])


@pytest.mark.timeout(60)
async def test_concurrent_put_many_on_one_store(store: NodeStore) -> None:
    datas = [f"shared node {i}".encode() for i in range(40)]

    async def writer(start: int) -> None:
        # Overlapping batches: every node is written by two or three tasks at once.
        await store.put_many(batch(*datas[start : start + 10]))

    async with anyio.create_task_group() as tg:
        for start in range(0, 40, 4):
            tg.start_soon(writer, start)
    expected = batch(*datas)
    assert await store.list_addresses() == set(expected)
    assert await store.get_many(list(expected)) == expected


# ---------------------------------------------------------------------------------------- refs


async def test_get_ref_of_absent_is_none(store: NodeStore) -> None:
    assert await store.get_ref("main") is None
    assert await store.list_refs() == {}


async def test_cas_ref_creates_once(store: NodeStore) -> None:
    assert await store.cas_ref("main", None, b"v1") is True
    got = await store.get_ref("main")
    assert got == b"v1"
    assert type(got) is bytes
    assert await store.cas_ref("main", None, b"v1") is False
    assert await store.cas_ref("main", None, b"v2") is False
    assert await store.get_ref("main") == b"v1"


async def test_cas_ref_moves_from_expected(store: NodeStore) -> None:
    assert await store.cas_ref("main", None, b"v1") is True
    assert await store.cas_ref("main", b"v1", b"v2") is True
    assert await store.get_ref("main") == b"v2"
    assert await store.cas_ref("main", b"v2", b"v2") is True  # setting the same value is a swap
    assert await store.get_ref("main") == b"v2"


async def test_cas_ref_with_stale_expected_changes_nothing(store: NodeStore) -> None:
    assert await store.cas_ref("main", None, b"v1") is True
    assert await store.cas_ref("main", b"v1", b"v2") is True
    assert await store.cas_ref("main", b"v1", b"v3") is False
    assert await store.get_ref("main") == b"v2"
    assert await store.cas_ref("main", b"v1", None) is False  # a stale delete deletes nothing
    assert await store.get_ref("main") == b"v2"
    assert await store.cas_ref("other", b"v2", b"v3") is False  # absent is not b"v2"
    assert await store.get_ref("other") is None
    assert await store.list_refs() == {"main": b"v2"}


async def test_cas_ref_to_none_deletes(store: NodeStore) -> None:
    assert await store.cas_ref("main", None, b"v1") is True
    assert await store.cas_ref("keep", None, b"k") is True
    assert await store.cas_ref("main", b"v1", None) is True
    assert await store.get_ref("main") is None
    assert await store.list_refs() == {"keep": b"k"}
    assert await store.cas_ref("main", b"v1", None) is False  # already gone
    assert await store.cas_ref("main", None, b"v2") is True  # and can be created again
    assert await store.get_ref("main") == b"v2"


async def test_cas_ref_from_absent_to_absent_succeeds(store: NodeStore) -> None:
    # base.py: "Set name to new iff its current value is expected (None = absent)".
    assert await store.cas_ref("ghost", None, None) is True
    assert await store.get_ref("ghost") is None
    assert await store.list_refs() == {}


async def test_list_refs_is_exact(store: NodeStore) -> None:
    refs = {"main": b"m", "dev": b"d", "release": address_of(b"release node")}
    for name, value in refs.items():
        assert await store.cas_ref(name, None, value) is True
    assert await store.cas_ref("temporary", None, b"t") is True
    assert await store.cas_ref("temporary", b"t", None) is True
    await store.put_many(batch(b"a node is not a ref"))
    assert await store.list_refs() == refs


PUNCTUATED_NAMES = [
    "branch/main",
    "remote/origin/feature-1.2",
    "a:b",
    "x-y.z",
    "user@host",
    "a+b=c",
    "UPPER_lower_09",
    "x" * 200,
]


async def test_ref_names_with_punctuation_work(store: NodeStore) -> None:
    refs = {name: f"value of {name}".encode() for name in PUNCTUATED_NAMES}
    for name, value in refs.items():
        assert await store.cas_ref(name, None, value) is True
    for name, value in refs.items():
        assert await store.get_ref(name) == value
    assert await store.list_refs() == refs
    assert await store.cas_ref("branch/main", b"value of branch/main", None) is True
    del refs["branch/main"]
    assert await store.list_refs() == refs


@pytest.mark.parametrize("first", ["parent", "child"])
async def test_ref_names_that_prefix_each_other_coexist(store: NodeStore, first: str) -> None:
    # "main" and "main/feature" are two refs (a file backend cannot make "main" both a file
    # and a directory), created in either order, each deletable without the other.
    names = ["main", "main/feature", "main/feature/x"]
    if first == "child":
        names.reverse()
    for name in names:
        assert await store.cas_ref(name, None, name.encode()) is True
    assert await store.list_refs() == {name: name.encode() for name in names}
    assert await store.cas_ref("main", b"main", None) is True
    assert await store.list_refs() == {n: n.encode() for n in ("main/feature", "main/feature/x")}
    assert await store.cas_ref("main/feature/x", b"main/feature/x", None) is True
    assert await store.list_refs() == {"main/feature": b"main/feature"}


async def test_valid_ref_names_are_distinct_refs(store: NodeStore) -> None:
    # check_ref_name accepts each of these, so each is its own ref: a backend that maps names
    # to paths must not let "a//b" or "a/./b" alias "a/b", nor "/..." escape its directory.
    names = ["a/b", "a//b", "a/./b", "/tmp/replica-conformance-ref", "a/.b", "a.", "a/b."]
    for i, name in enumerate(names):
        assert await store.cas_ref(name, None, bytes([i])) is True, name
    for i, name in enumerate(names):
        assert await store.get_ref(name) == bytes([i]), name
    assert await store.list_refs() == {name: bytes([i]) for i, name in enumerate(names)}


INVALID_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("../x", id="dotdot-slash"),
    pytest.param("a/../b", id="inner-dotdot"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("a b", id="space"),
    pytest.param("x/", id="trailing-slash"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("a\nb", id="newline"),
    pytest.param("caf\u00e9", id="non-ascii"),
    pytest.param("x" * 201, id="201-chars"),
    pytest.param("x" * 300, id="300-chars"),
    pytest.param(None, id="None"),
    pytest.param(b"main", id="bytes"),
    pytest.param(5, id="int"),
]


@pytest.mark.parametrize("name", INVALID_NAMES)
async def test_invalid_ref_names_are_store_errors(store: NodeStore, name: Any) -> None:
    with raises_exactly(StoreError) as info:
        await store.get_ref(name)
    assert repr(name) in str(info.value)
    with raises_exactly(StoreError) as info:
        await store.cas_ref(name, None, b"v")
    assert repr(name) in str(info.value)
    assert await store.list_refs() == {}


BAD_VALUES = [
    pytest.param("text", id="str"),
    pytest.param(bytearray(b"v1"), id="bytearray"),
    pytest.param(memoryview(b"v1"), id="mview"),
    pytest.param(5, id="int"),
]


@pytest.mark.parametrize("value", BAD_VALUES)
async def test_invalid_ref_values_are_store_errors(store: NodeStore, value: Any) -> None:
    with raises_exactly(StoreError):
        await store.cas_ref("fresh", None, value)  # must not create "fresh"
    assert await store.cas_ref("main", None, b"v1") is True
    with raises_exactly(StoreError):
        await store.cas_ref("main", b"v1", value)
    with raises_exactly(StoreError):
        await store.cas_ref("main", value, b"v2")
    assert await store.list_refs() == {"main": b"v1"}


async def test_ref_values_are_arbitrary_bytes(store: NodeStore) -> None:
    # The empty value is a value, not an absent ref.
    assert await store.cas_ref("empty", None, b"") is True
    assert await store.get_ref("empty") == b""
    assert await store.cas_ref("empty", None, b"x") is False
    binary = bytes(range(256)) * 4
    assert await store.cas_ref("binary", None, binary) is True
    assert await store.get_ref("binary") == binary
    assert await store.list_refs() == {"empty": b"", "binary": binary}
    assert await store.cas_ref("empty", b"", None) is True
    assert await store.list_refs() == {"binary": binary}


class _Barrier:
    """Releases the waiters together once ``parties`` of them have arrived."""

    def __init__(self, parties: int) -> None:
        self._left = parties
        self._all_here = anyio.Event()

    async def wait(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._all_here.set()
        await self._all_here.wait()


@pytest.mark.timeout(60)
async def test_two_writers_race_on_one_ref(reopen: Reopen) -> None:
    """Two store objects (as two processes would) read the ref, then both try to swap it from
    what they read: exactly one wins each round. Rounds 3, 7, ... race to delete it, so the
    races cover create (from absent), update, and delete."""
    writers = {"A": await reopen(), "B": await reopen()}
    value: bytes | None = None
    winners: list[bytes | None] = []

    async def race(
        who: str,
        target: bytes | None,
        barrier: _Barrier,
        seen: dict[str, bytes | None],
        won: dict[str, bool],
    ) -> None:
        seen[who] = await writers[who].get_ref("head")
        await barrier.wait()  # both have read before either writes
        won[who] = await writers[who].cas_ref("head", seen[who], target)

    for round_ in range(22):
        barrier = _Barrier(len(writers))
        seen: dict[str, bytes | None] = {}
        won: dict[str, bool] = {}
        targets = {
            who: None if round_ % 4 == 3 else f"round {round_} by {who}".encode() for who in writers
        }
        async with anyio.create_task_group() as tg:
            for who in writers:
                tg.start_soon(race, who, targets[who], barrier, seen, won)

        assert seen == {who: value for who in writers}, f"round {round_}: stale read"
        assert sorted(won.values()) == [False, True], f"round {round_}: {won}"
        value = targets[next(who for who in writers if won[who])]
        winners.append(value)
        for who in writers:
            assert await writers[who].get_ref("head") == value, f"round {round_}"
    final = await writers["A"].get_ref("head")
    assert final == winners[-1] and final is not None


@pytest.mark.timeout(60)
async def test_concurrent_increments_lose_no_update(reopen: Reopen) -> None:
    """Tasks on two store objects each add 1 to a counter ref by read + cas, retrying on
    conflict. If two swaps from one value could both succeed, an increment would be lost."""
    stores = [await reopen(), await reopen()]
    tasks_per_store, increments = 3, 5
    successes = 0

    async def incrementer(one: NodeStore) -> None:
        nonlocal successes
        done = 0
        while done < increments:
            current = await one.get_ref("counter")
            new = str(int(current or b"0") + 1).encode()
            if await one.cas_ref("counter", current, new):
                done += 1
                successes += 1

    async with anyio.create_task_group() as tg:
        for one in stores:
            for _ in range(tasks_per_store):
                tg.start_soon(incrementer, one)
    total = len(stores) * tasks_per_store * increments
    assert successes == total
    assert await stores[0].get_ref("counter") == str(total).encode()


# --------------------------------------------------------------------------- sharing, lifecycle


async def test_writes_are_visible_to_another_store_object(reopen: Reopen) -> None:
    writer, reader = await reopen(), await reopen()
    nodes = batch(b"shared")
    (address,) = nodes
    assert await reader.missing([address]) == {address}  # an answer must not be cached
    assert await reader.get_ref("main") is None
    await writer.put_many(nodes)
    assert await writer.cas_ref("main", None, address) is True
    assert await reader.missing([address]) == set()
    assert await reader.get(address) == nodes[address]
    assert await reader.get_ref("main") == address
    assert await reader.cas_ref("main", None, b"stale") is False
    assert await writer.cas_ref("main", address, b"moved") is True
    assert await reader.get_ref("main") == b"moved"
    assert await reader.list_refs() == {"main": b"moved"}


async def test_data_survives_close_and_reopen(reopen: Reopen) -> None:
    first = await reopen()
    nodes = batch(b"durable 1", b"durable 2", blob(100 * 1024))
    gone = batch(b"deleted before close")
    await first.put_many(nodes | gone)
    await first.delete_many(list(gone))
    assert await first.cas_ref("main", None, b"head") is True
    assert await first.cas_ref("dropped", None, b"x") is True
    assert await first.cas_ref("dropped", b"x", None) is True
    await first.aclose()

    second = await reopen()
    assert await second.list_addresses() == set(nodes)
    assert await second.get_many(list(nodes)) == nodes
    assert await second.missing([*nodes, *gone]) == set(gone)
    assert await second.list_refs() == {"main": b"head"}
    assert await second.cas_ref("main", b"head", b"next") is True


CALLS: dict[str, Callable[[NodeStore], Awaitable[object]]] = {
    "get": lambda s: s.get(address_of(b"stored")),
    "get_many": lambda s: s.get_many([address_of(b"stored")]),
    "put_many": lambda s: s.put_many(batch(b"new")),
    "missing": lambda s: s.missing([address_of(b"stored")]),
    "get_ref": lambda s: s.get_ref("main"),
    "cas_ref": lambda s: s.cas_ref("main", b"v1", b"v2"),
    "list_refs": lambda s: s.list_refs(),
    "list_addresses": lambda s: s.list_addresses(),
    "delete_many": lambda s: s.delete_many([address_of(b"stored")]),
}


@pytest.mark.parametrize("call", list(CALLS))
async def test_calls_after_aclose_raise_store_closed(store: NodeStore, call: str) -> None:
    await store.put_many(batch(b"stored"))
    assert await store.cas_ref("main", None, b"v1") is True
    await store.aclose()
    with raises_exactly(StoreClosed):
        await CALLS[call](store)


async def test_aclose_is_idempotent(store: NodeStore) -> None:
    await store.aclose()
    await store.aclose()
    with raises_exactly(StoreClosed):
        await store.list_refs()


async def test_closing_one_store_object_leaves_another_open(reopen: Reopen) -> None:
    closed, still_open = await reopen(), await reopen()
    await closed.put_many(batch(b"written before close"))
    await closed.aclose()
    assert await still_open.list_addresses() == set(batch(b"written before close"))
    await still_open.put_many(batch(b"written after"))
    assert await still_open.cas_ref("main", None, b"v") is True
