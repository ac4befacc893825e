"""The merge policy, one table per rule (docs/conflicts.md; DESIGN.md section 5; issue 5).

Every row forks two sides from one base (BASE plus the row's ``base``): side A writes on
``main``, side B on branch ``b``, and every transaction of B is stamped after every
transaction of A (the test waits for the wall clock to pass A's last stamp, and checks it), so
"later" always means B. Then ``conn.merge("b")`` merges the two heads and the row gives, worked
out by hand from the rules:

* ``expect``: the exact current datoms, as ``{(attribute, value)}``, of every entity the row
  is about; IVAN and PETR are checked too when the row does not name them (as their base
  datoms), and the whole database holds nothing else (conflict records, tx instants and the
  schema's attribute entities aside);
* ``conflicts``: the exact conflict records, as :class:`C` rows. A conflict's ``ours`` is the
  value in the first head by address and ``theirs`` the value in the other, so a row gives
  the value on side A and on side B and the test puts them in address order; a row with
  ``pair=True`` (the entity-level rules, whose ``ours``/``theirs`` are entity ids) only says
  which two values the record holds, in either order.

Entities are named by the tempid labels of the base and of the sides (``"ivan"``, ``"za"``);
``Min("za", "zb")`` / ``Max(...)`` is the smaller / larger of the two entity ids (identity
unification keeps the smallest). Every row also checks that the merge is commutative (merging
the heads in the other order gives the same commit), and that ``replica.conflicts`` reads back
what the merge reported.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

import replica
from replica import Keyword, MergeError
from replica.merge import merge_heads
from tests.replica._txtable import Id, MakeConn

SCHEMA: list[dict[str, Any]] = [
    {"db/ident": "p/name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "p/email", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "p/age", "db/valueType": "db.type/long"},
    {"db/ident": "p/nick", "db/valueType": "db.type/string"},
    {
        "db/ident": "p/tag",
        "db/valueType": "db.type/string",
        "db/cardinality": "db.cardinality/many",
    },
    {"db/ident": "p/code", "db/valueType": "db.type/string", "db/unique": "db.unique/value"},
    {"db/ident": "p/friend", "db/valueType": "db.type/ref"},
    {"db/ident": "p/likes", "db/valueType": "db.type/ref", "db/cardinality": "db.cardinality/many"},
    {"db/ident": "p/score", "db/valueType": "db.type/long"},
    {"db/ident": "p/seen", "db/valueType": "db.type/long", "db/noHistory": True},
]
IDENTS = [a["db/ident"] for a in SCHEMA]

BASE: list[Any] = [
    {
        "db/id": "ivan",
        "p/name": "Ivan",
        "p/age": 30,
        "p/nick": "iv",
        "p/tag": ["a", "b"],
        "p/score": 5,
        "p/seen": 1,
    },
    {"db/id": "petr", "p/name": "Petr", "p/age": 40, "p/friend": "ivan"},
]
IVAN = frozenset(
    {
        ("p/name", "Ivan"),
        ("p/age", 30),
        ("p/nick", "iv"),
        ("p/tag", "a"),
        ("p/tag", "b"),
        ("p/score", 5),
        ("p/seen", 1),
    }
)
PETR = frozenset({("p/name", "Petr"), ("p/age", 40), ("p/friend", Id("ivan"))})

IVAN_ID = Id("ivan")
PETR_ID = Id("petr")

LWW = "lww"
RETRACT = "update-wins-over-retraction"
ADD_WINS = "add-wins"
IDENTITY = "unique-identity"
UNIQUE_VALUE = "unique-value"
SCHEMA_LWW = "schema-lww"
NO_HISTORY = "no-history-three-way"
RESOLVER = "resolver"


@dataclass(frozen=True)
class Min:
    """The smaller of the entity ids of two labels."""

    labels: tuple[str, str]

    def __init__(self, *labels: str) -> None:
        object.__setattr__(self, "labels", labels)


@dataclass(frozen=True)
class Max:
    """The larger of the entity ids of two labels."""

    labels: tuple[str, str]

    def __init__(self, *labels: str) -> None:
        object.__setattr__(self, "labels", labels)


@dataclass(frozen=True)
class C:
    """An expected conflict record: the value on side A (``a``) and on side B (``b``)."""

    entity: Any
    attribute: str
    base: Any
    a: Any
    b: Any
    winner: Any
    rule: str
    pair: bool = False  # ours/theirs are entity ids: compare them as an unordered pair


@dataclass
class Case:
    a: list[Any]  # transactions on side A (main), in order
    b: list[Any]  # transactions on side B (branch b), in order, all stamped after A's
    expect: Mapping[Any, frozenset[tuple[str, Any]] | set[tuple[str, Any]]]
    conflicts: list[C] = field(default_factory=list)
    base: list[Any] = field(default_factory=list)  # transactions after BASE, before the fork


def resolve(x: Any, ids: Mapping[str, int]) -> Any:
    """``x`` with labels bound to entity ids (Id, Min, Max), inside collections too."""
    if isinstance(x, Id):
        return ids[x.label]
    if isinstance(x, Min):
        return min(ids[label] for label in x.labels)
    if isinstance(x, Max):
        return max(ids[label] for label in x.labels)
    if isinstance(x, dict):
        return {k: resolve(v, ids) for k, v in x.items()}
    if isinstance(x, list):
        return [resolve(v, ids) for v in x]
    if isinstance(x, tuple):
        return tuple(resolve(v, ids) for v in x)
    if isinstance(x, frozenset | set):
        return frozenset(resolve(v, ids) for v in x)
    return x


def entity_of(key: Any, ids: Mapping[str, int]) -> int:
    return ids[key] if isinstance(key, str) else int(resolve(key, ids))


def tempids(report: replica.TxReport) -> dict[str, int]:
    return {k: v for k, v in report.tempids.items() if isinstance(k, str) and k != "db/current-tx"}


async def wait_past(stamp: replica.Stamp) -> None:
    """Sleep until the wall clock is past ``stamp``'s millisecond: a transaction made now is
    stamped later than ``stamp``."""
    # the clock counts whole milliseconds: sleep past the next one, then make sure
    await anyio.sleep(max(0.0, (stamp.wall_ms + 2) / 1000 - time.time()))
    assert int(time.time() * 1000) > stamp.wall_ms


async def user_datoms(db: replica.DB, skip: set[int]) -> set[tuple[int, str, Any]]:
    """Every current datom but the conflict records, tx instants and entities in ``skip``."""
    return {
        (d.e, d.a, d.v)
        for d in await db.datoms("eavt")
        if not d.a.startswith("conflict/") and d.a != "db/txInstant" and d.e not in skip
    }


@dataclass
class Forked:
    """Two sides forked from one base, not merged yet."""

    conn: replica.Connection  # side A, branch main
    ids: dict[str, int]
    base: bytes  # the base commit
    a_head: bytes
    b_head: bytes
    a_txs: list[int]
    b_txs: list[int]

    @property
    def a_first(self) -> bool:
        """Is side A the first head by address (so the conflicts' "ours")?"""
        return self.a_head < self.b_head


async def fork(make_conn: MakeConn, case: Case) -> Forked:
    conn = await make_conn(SCHEMA)
    ids = tempids(await conn.transact(BASE))
    for ident in IDENTS:
        attr = conn.db.schema.attribute(ident)
        assert attr is not None and attr.eid is not None
        ids["attr:" + ident] = attr.eid
    for tx in case.base:
        ids.update(tempids(await conn.transact(resolve(tx, ids))))
    base = conn.commit_id
    await conn.branch("b")
    a_txs, b_txs = [], []
    for tx in case.a:
        report = await conn.transact(resolve(tx, ids))
        ids.update(tempids(report))
        a_txs.append(report.tx)
    a_stamp = conn.db.stamp
    await wait_past(a_stamp)
    async with replica.connect(conn.url, branch="b") as side:
        for tx in case.b:
            report = await side.transact(resolve(tx, ids))
            ids.update(tempids(report))
            b_txs.append(report.tx)
            assert report.db_after.stamp > a_stamp, "B must be stamped after A"
        b_head = side.commit_id
    return Forked(conn, ids, base, conn.commit_id, b_head, a_txs, b_txs)


def expected_conflicts(f: Forked, rows: list[C]) -> Counter[tuple[Any, ...]]:
    out: Counter[tuple[Any, ...]] = Counter()
    for c in rows:
        a, b = resolve(c.a, f.ids), resolve(c.b, f.ids)
        if c.pair:
            ours_theirs: tuple[Any, ...] = (frozenset({a, b}),)
        else:
            ours_theirs = (a, b) if f.a_first else (b, a)
        out[
            (
                entity_of(c.entity, f.ids),
                c.attribute,
                resolve(c.base, f.ids),
                *ours_theirs,
                resolve(c.winner, f.ids),
                c.rule,
            )
        ] += 1
    return out


def actual_conflicts(found: Any, rows: list[C]) -> Counter[tuple[Any, ...]]:
    pair = {(c.attribute, c.rule) for c in rows if c.pair}
    out: Counter[tuple[Any, ...]] = Counter()
    for c in found:
        if (c.attribute, c.rule) in pair:
            ours_theirs: tuple[Any, ...] = (frozenset({c.ours, c.theirs}),)
        else:
            ours_theirs = (c.ours, c.theirs)
        out[(c.entity, c.attribute, c.base, *ours_theirs, c.winner, c.rule)] += 1
    return out


async def check_case(make_conn: MakeConn, case: Case) -> replica.MergeReport:
    return await check_forked(await fork(make_conn, case), case)


async def check_forked(f: Forked, case: Case) -> replica.MergeReport:
    """Merge b into main and check everything the module docstring lists."""
    conn = f.conn
    report = await conn.merge("b")
    db = report.db
    assert not report.fast_forward
    assert report.tx_report is None
    assert conn.db == db
    assert db.parent_commit_ids == tuple(sorted([f.a_head, f.b_head]))
    assert await conn._heads("main") == [db.commit_id]

    # the datoms
    named = {k for k in case.expect if isinstance(k, str)}
    named |= {label for k in case.expect if isinstance(k, Min | Max) for label in k.labels}
    defaults = {k: v for k, v in (("ivan", IVAN), ("petr", PETR)) if k not in named}
    expect: dict[Any, Any] = {**defaults, **case.expect}
    want: set[tuple[int, str, Any]] = set()
    for key, datoms in expect.items():
        e = entity_of(key, f.ids)
        got = {(d.a, d.v) for d in await db.datoms("eavt", e)}
        bound = {(a, resolve(v, f.ids)) for a, v in datoms}
        assert got == bound, f"entity {key!r}"
        want |= {(e, a, v) for a, v in bound}
    schema_entities = {f.ids["attr:" + i] for i in IDENTS} - {entity_of(k, f.ids) for k in expect}
    assert await user_datoms(db, schema_entities) == want, "datoms nobody expected"

    # the conflicts, as reported and as stored
    assert actual_conflicts(report.conflicts, case.conflicts) == expected_conflicts(
        f, case.conflicts
    )
    assert {c.tx for c in report.conflicts} <= {db.commit.tx}
    stored = await replica.conflicts(db)
    assert Counter(stored) == Counter(report.conflicts)

    # commutative: the other order writes the same commit
    other, _ = await merge_heads(conn.database, [f.b_head, f.a_head])
    assert other.commit_id == db.commit_id
    return report


def table(cases: Mapping[str, Case]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", list(cases.values()), ids=list(cases))


def add(e: Any, a: str, v: Any) -> list[Any]:
    return [["db/add", e, a, v]]


def retract(e: Any, a: str, v: Any) -> list[Any]:
    return [["db/retract", e, a, v]]


def without(datoms: frozenset[tuple[str, Any]], *attrs: str) -> frozenset[tuple[str, Any]]:
    return frozenset(d for d in datoms if d[0] not in attrs)


def with_(
    datoms: frozenset[tuple[str, Any]], *extra: tuple[str, Any]
) -> frozenset[tuple[str, Any]]:
    """``datoms`` with ``extra``, whose cardinality-one attributes replace the old values."""
    replaced = {a for a, _ in extra if a not in ("p/tag", "p/likes")}
    return frozenset({d for d in datoms if d[0] not in replaced} | set(extra))


# -- cardinality one: last writer wins ----------------------------------------------------------

LWW_CASES = {
    "the later write wins": Case(
        [add(IVAN_ID, "p/age", 31)],
        [add(IVAN_ID, "p/age", 32)],
        {"ivan": with_(IVAN, ("p/age", 32))},
        [C("ivan", "p/age", 30, 31, 32, 32, LWW)],
    ),
    "the later write wins even with the smaller value": Case(
        [add(IVAN_ID, "p/age", 35)],
        [add(IVAN_ID, "p/age", 31)],
        {"ivan": with_(IVAN, ("p/age", 31))},
        [C("ivan", "p/age", 30, 35, 31, 31, LWW)],
    ),
    "several writes on the earlier side: the later side's write wins": Case(
        [add(IVAN_ID, "p/age", 31), add(IVAN_ID, "p/age", 33)],
        [add(IVAN_ID, "p/age", 32)],
        {"ivan": with_(IVAN, ("p/age", 32))},
        [C("ivan", "p/age", 30, 33, 32, 32, LWW)],
    ),
    "a ref: the later target wins": Case(
        [add(IVAN_ID, "p/friend", PETR_ID)],
        [add(IVAN_ID, "p/friend", IVAN_ID)],
        {"ivan": with_(IVAN, ("p/friend", IVAN_ID))},
        [C("ivan", "p/friend", None, PETR_ID, IVAN_ID, IVAN_ID, LWW)],
    ),
    "a value set where there was none, on both sides": Case(
        [add(PETR_ID, "p/nick", "pa")],
        [add(PETR_ID, "p/nick", "pb")],
        {"petr": with_(PETR, ("p/nick", "pb"))},
        [C("petr", "p/nick", None, "pa", "pb", "pb", LWW)],
    ),
    "the same value on both sides is no conflict": Case(
        [add(IVAN_ID, "p/age", 31)],
        [add(IVAN_ID, "p/age", 31)],
        {"ivan": with_(IVAN, ("p/age", 31))},
    ),
    "both sides retract: no conflict": Case(
        [retract(IVAN_ID, "p/nick", "iv")],
        [retract(IVAN_ID, "p/nick", "iv")],
        {"ivan": without(IVAN, "p/nick")},
    ),
    "two attributes of one entity, one per side: no conflict": Case(
        [add(IVAN_ID, "p/age", 31)],
        [add(IVAN_ID, "p/nick", "ivo")],
        {"ivan": with_(IVAN, ("p/age", 31), ("p/nick", "ivo"))},
    ),
}


@pytest.mark.timeout(60)
@table(LWW_CASES)
async def test_cardinality_one_last_writer_wins(make_conn: MakeConn, case: Case) -> None:
    await check_case(make_conn, case)


# -- cardinality one: an update wins over a concurrent retraction -------------------------------

RETRACT_CASES = {
    "A retracts, B (later) updates": Case(
        [retract(IVAN_ID, "p/nick", "iv")],
        [add(IVAN_ID, "p/nick", "ivo")],
        {"ivan": with_(IVAN, ("p/nick", "ivo"))},
        [C("ivan", "p/nick", "iv", None, "ivo", "ivo", RETRACT)],
    ),
    "A updates, B (later) retracts": Case(
        [add(IVAN_ID, "p/nick", "ivo")],
        [retract(IVAN_ID, "p/nick", "iv")],
        {"ivan": with_(IVAN, ("p/nick", "ivo"))},
        [C("ivan", "p/nick", "iv", "ivo", None, "ivo", RETRACT)],
    ),
    "A retracts the attribute (db.fn/retractAttribute), B (later) updates": Case(
        [[["db.fn/retractAttribute", IVAN_ID, "p/nick"]]],
        [add(IVAN_ID, "p/nick", "ivo")],
        {"ivan": with_(IVAN, ("p/nick", "ivo"))},
        [C("ivan", "p/nick", "iv", None, "ivo", "ivo", RETRACT)],
    ),
    "A updates twice, B (later) retracts the base value": Case(
        [add(IVAN_ID, "p/age", 31), add(IVAN_ID, "p/age", 33)],
        [retract(IVAN_ID, "p/age", 30)],
        {"ivan": with_(IVAN, ("p/age", 33))},
        [C("ivan", "p/age", 30, 33, None, 33, RETRACT)],
    ),
}


@pytest.mark.timeout(60)
@table(RETRACT_CASES)
async def test_update_wins_over_retraction(make_conn: MakeConn, case: Case) -> None:
    await check_case(make_conn, case)


# -- cardinality many: add-wins set ---------------------------------------------------------------

TAGS_AB = frozenset({"a", "b"})

ADD_WINS_CASES = {
    "A removes an element, B removes and re-adds it: it stays": Case(
        [retract(IVAN_ID, "p/tag", "a")],
        [retract(IVAN_ID, "p/tag", "a"), add(IVAN_ID, "p/tag", "a")],
        {"ivan": IVAN},
        [C("ivan", "p/tag", TAGS_AB, frozenset({"b"}), TAGS_AB, TAGS_AB, ADD_WINS)],
    ),
    "A removes and re-adds an element, B removes it: it stays": Case(
        [retract(IVAN_ID, "p/tag", "a"), add(IVAN_ID, "p/tag", "a")],
        [retract(IVAN_ID, "p/tag", "a")],
        {"ivan": IVAN},
        [C("ivan", "p/tag", TAGS_AB, TAGS_AB, frozenset({"b"}), TAGS_AB, ADD_WINS)],
    ),
    "A adds and removes a new element, B adds it: B's addition stays (no conflict)": Case(
        [add(IVAN_ID, "p/tag", "c"), retract(IVAN_ID, "p/tag", "c")],
        [add(IVAN_ID, "p/tag", "c")],
        {"ivan": IVAN | {("p/tag", "c")}},
    ),
    "A removes one element, B adds another: both happen": Case(
        [retract(IVAN_ID, "p/tag", "a")],
        [add(IVAN_ID, "p/tag", "c")],
        {"ivan": (IVAN - {("p/tag", "a")}) | {("p/tag", "c")}},
    ),
    "A and B remove different elements: both are gone": Case(
        [retract(IVAN_ID, "p/tag", "a")],
        [retract(IVAN_ID, "p/tag", "b")],
        {"ivan": without(IVAN, "p/tag")},
    ),
    "both add the same element: once": Case(
        [add(IVAN_ID, "p/tag", "c")],
        [add(IVAN_ID, "p/tag", "c")],
        {"ivan": IVAN | {("p/tag", "c")}},
    ),
    "refs: A removes a ref, B removes and re-adds it": Case(
        [retract(IVAN_ID, "p/likes", PETR_ID)],
        [retract(IVAN_ID, "p/likes", PETR_ID), add(IVAN_ID, "p/likes", PETR_ID)],
        {"ivan": IVAN | {("p/likes", PETR_ID)}},
        [
            C(
                "ivan",
                "p/likes",
                frozenset({PETR_ID}),
                frozenset(),
                frozenset({PETR_ID}),
                frozenset({PETR_ID}),
                ADD_WINS,
            )
        ],
        base=[add(IVAN_ID, "p/likes", PETR_ID)],
    ),
}


@pytest.mark.timeout(60)
@table(ADD_WINS_CASES)
async def test_cardinality_many_add_wins(make_conn: MakeConn, case: Case) -> None:
    await check_case(make_conn, case)


# -- independent changes --------------------------------------------------------------------------

INDEPENDENT = Case(
    [
        add(IVAN_ID, "p/age", 31),
        add(IVAN_ID, "p/tag", "c"),
        [{"db/id": "anna", "p/name": "Anna", "p/friend": IVAN_ID}],
    ],
    [
        add(PETR_ID, "p/age", 41),
        retract(IVAN_ID, "p/nick", "iv"),
        [{"db/id": "boris", "p/name": "Boris", "p/tag": ["x", "y"]}],
        [*add(PETR_ID, "p/friend", "boris-later"), {"db/id": "boris-later", "p/name": "Bo"}],
    ],
    {
        "ivan": (without(IVAN, "p/nick", "p/age")) | {("p/age", 31), ("p/tag", "c")},
        "petr": {("p/name", "Petr"), ("p/age", 41), ("p/friend", Id("boris-later"))},
        "anna": {("p/name", "Anna"), ("p/friend", IVAN_ID)},
        "boris": {("p/name", "Boris"), ("p/tag", "x"), ("p/tag", "y")},
        "boris-later": {("p/name", "Bo")},
    },
)


@pytest.mark.timeout(60)
async def test_independent_changes_merge_without_conflicts(make_conn: MakeConn) -> None:
    report = await check_case(make_conn, INDEPENDENT)
    assert report.conflicts == ()
    assert await replica.conflicts(report.db) == []
    assert (await replica.q("[:find ?c :where [?c :conflict/rule _]]", report.db)) == set()


# -- db.unique/identity: one entity ---------------------------------------------------------------

ZOE = Min("za", "zb")

IDENTITY_CASES = {
    "two new entities with one identity: one entity with both's attributes, refs repointed": Case(
        [[{"db/id": "za", "p/name": "Zoe", "p/age": 20}, ["db/add", IVAN_ID, "p/likes", "za"]]],
        [
            [
                {"db/id": "zb", "p/name": "Zoe", "p/nick": "z", "p/tag": ["t"]},
                ["db/add", PETR_ID, "p/likes", "zb"],
                ["db/add", PETR_ID, "p/friend", "zb"],
            ]
        ],
        {
            ZOE: {("p/name", "Zoe"), ("p/age", 20), ("p/nick", "z"), ("p/tag", "t")},
            Max("za", "zb"): {("db.merge/into", Min("za", "zb"))},
            "ivan": IVAN | {("p/likes", ZOE)},
            "petr": with_(PETR, ("p/likes", ZOE), ("p/friend", ZOE)),
        },
        [C(ZOE, "p/name", None, Id("za"), Id("zb"), ZOE, IDENTITY, pair=True)],
    ),
    "an existing entity and a new one with its new identity value": Case(
        [add(IVAN_ID, "p/email", "i@x")],
        [[{"db/id": "n", "p/email": "i@x", "p/code": "N"}]],
        {
            Min("ivan", "n"): IVAN | {("p/email", "i@x"), ("p/code", "N")},
            Max("ivan", "n"): {("db.merge/into", Min("ivan", "n"))},
            # petr's ref to ivan follows the survivor (ivan itself, or n)
            "petr": with_(PETR, ("p/friend", Min("ivan", "n"))),
        },
        [
            C(
                Min("ivan", "n"),
                "p/email",
                None,
                IVAN_ID,
                Id("n"),
                Min("ivan", "n"),
                IDENTITY,
                pair=True,
            )
        ],
    ),
    "the unified entity's card-one attribute: the later value, and a record of it": Case(
        [[{"db/id": "za", "p/name": "Zoe", "p/age": 20}]],
        [[{"db/id": "zb", "p/name": "Zoe", "p/age": 25}]],
        {ZOE: {("p/name", "Zoe"), ("p/age", 25)}, Max("za", "zb"): {("db.merge/into", Min("za", "zb"))}},
        [
            C(ZOE, "p/name", None, Id("za"), Id("zb"), ZOE, IDENTITY, pair=True),
            # nothing lost silently: za's 20 lost against zb's 25 by last writer wins
            C(ZOE, "p/age", None, 20, 25, 25, LWW),
        ],
    ),
    "two new entities with one identity and the same unique value: one record": Case(
        [[{"db/id": "za", "p/name": "Zoe", "p/code": "Z"}]],
        [[{"db/id": "zb", "p/name": "Zoe", "p/code": "Z"}]],
        {ZOE: {("p/name", "Zoe"), ("p/code", "Z")}, Max("za", "zb"): {("db.merge/into", Min("za", "zb"))}},
        # one entity holds Z after the unification: no db.unique/value collision to record
        [C(ZOE, "p/name", None, Id("za"), Id("zb"), ZOE, IDENTITY, pair=True)],
    ),
    "two new entities with one identity and different unique values: the later one": Case(
        [[{"db/id": "za", "p/name": "Zoe", "p/code": "Z1"}]],
        [[{"db/id": "zb", "p/name": "Zoe", "p/code": "Z2"}]],
        {ZOE: {("p/name", "Zoe"), ("p/code", "Z2")}, Max("za", "zb"): {("db.merge/into", Min("za", "zb"))}},
        [
            C(ZOE, "p/name", None, Id("za"), Id("zb"), ZOE, IDENTITY, pair=True),
            C(ZOE, "p/code", None, "Z1", "Z2", "Z2", LWW),
        ],
    ),
    "a ref to itself on each side: the survivor refers to itself, not to the loser": Case(
        [[{"db/id": "za", "p/name": "Zoe", "p/likes": "za"}]],
        [[{"db/id": "zb", "p/name": "Zoe", "p/likes": "zb"}]],
        {ZOE: {("p/name", "Zoe"), ("p/likes", ZOE)}, Max("za", "zb"): {("db.merge/into", Min("za", "zb"))}},
        [C(ZOE, "p/name", None, Id("za"), Id("zb"), ZOE, IDENTITY, pair=True)],
    ),
}


@pytest.mark.timeout(60)
@table(IDENTITY_CASES)
async def test_unique_identity_unifies(make_conn: MakeConn, case: Case) -> None:
    await check_case(make_conn, case)


# -- db.unique/value: the earliest assertion keeps the value ----------------------------------

UNIQUE_VALUE_CASES = {
    "A gives ivan a code, B (later) gives petr the same code: ivan keeps it": Case(
        [add(IVAN_ID, "p/code", "X")],
        [add(PETR_ID, "p/code", "X")],
        {"ivan": IVAN | {("p/code", "X")}, "petr": PETR},
        # the record names both holders (entity ids, like an identity collision's) so that
        # the loser can be found without reading history
        [C("ivan", "p/code", None, IVAN_ID, PETR_ID, IVAN_ID, UNIQUE_VALUE, pair=True)],
    ),
    "A gives petr a code, B (later) gives ivan the same code: petr keeps it": Case(
        [add(PETR_ID, "p/code", "X")],
        [add(IVAN_ID, "p/code", "X")],
        {"ivan": IVAN, "petr": PETR | {("p/code", "X")}},
        [C("petr", "p/code", None, PETR_ID, IVAN_ID, PETR_ID, UNIQUE_VALUE, pair=True)],
    ),
}


@pytest.mark.timeout(60)
@table(UNIQUE_VALUE_CASES)
async def test_unique_value_earliest_keeps(make_conn: MakeConn, case: Case) -> None:
    await check_case(make_conn, case)


@pytest.mark.timeout(60)
async def test_unique_value_loser_is_retracted_in_history(make_conn: MakeConn) -> None:
    """The loser's assertion stays in history, retracted by the merge transaction."""
    case = UNIQUE_VALUE_CASES[
        "A gives ivan a code, B (later) gives petr the same code: ivan keeps it"
    ]
    f = await fork(make_conn, case)
    report = await f.conn.merge("b")
    petr = f.ids["petr"]
    hist = {(d.v, d.tx, d.added) for d in await report.db.history.datoms("eavt", petr, "p/code")}
    assert hist == {("X", f.b_txs[0], True), ("X", report.db.commit.tx, False)}


# -- retractEntity against a concurrent update -----------------------------------------------

RETRACT_ENTITY_CASES = {
    "A retracts ivan, B (later) updates his age: ivan keeps only the new age": Case(
        [[["db/retractEntity", IVAN_ID]]],
        [add(IVAN_ID, "p/age", 31)],
        {"ivan": {("p/age", 31)}, "petr": without(PETR, "p/friend")},
        [C("ivan", "p/age", 30, None, 31, 31, RETRACT)],
    ),
    "A updates ivan's age, B (later) retracts ivan: the update still survives": Case(
        [add(IVAN_ID, "p/age", 31)],
        [[["db/retractEntity", IVAN_ID]]],
        {"ivan": {("p/age", 31)}, "petr": without(PETR, "p/friend")},
        [C("ivan", "p/age", 30, 31, None, 31, RETRACT)],
    ),
    "A retracts ivan, B (later) adds a tag: the tag survives, no record (add-wins)": Case(
        [[["db/retractEntity", IVAN_ID]]],
        [add(IVAN_ID, "p/tag", "c")],
        {"ivan": {("p/tag", "c")}, "petr": without(PETR, "p/friend")},
    ),
    "A retracts ivan, B (later) retracts a tag: ivan is gone, no conflict": Case(
        [[["db/retractEntity", IVAN_ID]]],
        [retract(IVAN_ID, "p/tag", "a")],
        {"ivan": set(), "petr": without(PETR, "p/friend")},
    ),
}


@pytest.mark.timeout(60)
@table(RETRACT_ENTITY_CASES)
async def test_retract_entity_against_concurrent_update(make_conn: MakeConn, case: Case) -> None:
    await check_case(make_conn, case)


# -- dangling refs --------------------------------------------------------------------------------

DANGLING_CASES = {
    "A retracts petr, B (later) adds a ref to petr: the ref stays, dangling": Case(
        [[["db/retractEntity", PETR_ID]]],
        [add(IVAN_ID, "p/likes", PETR_ID)],
        {"petr": set(), "ivan": IVAN | {("p/likes", PETR_ID)}},
    ),
    "A adds a ref to petr, B (later) retracts petr: the ref stays, dangling": Case(
        [add(IVAN_ID, "p/friend", PETR_ID)],
        [[["db/retractEntity", PETR_ID]]],
        {"petr": set(), "ivan": IVAN | {("p/friend", PETR_ID)}},
    ),
}


@pytest.mark.timeout(60)
@table(DANGLING_CASES)
async def test_dangling_ref_stays(make_conn: MakeConn, case: Case) -> None:
    f = await fork(make_conn, case)
    report = await check_forked(f, case)
    # the ref is an ordinary datom: a query finds refs to entities without datoms
    dangling = await replica.q(
        """[:find ?e ?a ?v :where [(ground [:p/likes :p/friend]) [?a ...]] [?e ?a ?v]
                                  (not [?v _ _])]""",
        report.db,
    )
    assert dangling == {
        (f.ids["ivan"], Keyword(a), f.ids["petr"]) for a, v in case.expect["ivan"] if v == PETR_ID
    }


# -- schema ----------------------------------------------------------------------------------

COLOR = [{"db/id": "color", "db/ident": "x/color", "db/valueType": "db.type/string"}]
SIZE = [{"db/id": "size", "db/ident": "x/size", "db/valueType": "db.type/long"}]
COLOR_DATOMS = {("db/ident", Keyword("x/color")), ("db/valueType", Keyword("db.type/string"))}
NICK = Id("attr:p/nick")

SCHEMA_CASES = {
    "both sides add different attributes: both exist": Case(
        [COLOR, add(IVAN_ID, "x/color", "red")],
        [SIZE, add(IVAN_ID, "x/size", 3)],
        {
            "color": COLOR_DATOMS,
            "size": {("db/ident", Keyword("x/size")), ("db/valueType", Keyword("db.type/long"))},
            "ivan": IVAN | {("x/color", "red"), ("x/size", 3)},
        },
    ),
    "both sides add the same attribute identically: one attribute entity": Case(
        [
            [{"db/id": "ca", "db/ident": "x/color", "db/valueType": "db.type/string"}],
            add(IVAN_ID, "x/color", "red"),
        ],
        [
            [{"db/id": "cb", "db/ident": "x/color", "db/valueType": "db.type/string"}],
            add(PETR_ID, "x/color", "blue"),
        ],
        {
            Min("ca", "cb"): COLOR_DATOMS,
            Max("ca", "cb"): {("db.merge/into", Min("ca", "cb"))},
            "ivan": IVAN | {("x/color", "red")},
            "petr": PETR | {("x/color", "blue")},
        },
        # db/ident is a unique identity: the two attribute entities unify
        [
            C(
                Min("ca", "cb"),
                "db/ident",
                None,
                Id("ca"),
                Id("cb"),
                Min("ca", "cb"),
                IDENTITY,
                pair=True,
            )
        ],
    ),
    "both sides change one attribute's doc: the later wins (schema-lww)": Case(
        [[{"db/id": ("db/ident", "p/nick"), "db/doc": "by A"}]],
        [[{"db/id": ("db/ident", "p/nick"), "db/doc": "by B"}]],
        {
            "attr:p/nick": {
                ("db/ident", Keyword("p/nick")),
                ("db/valueType", Keyword("db.type/string")),
                ("db/doc", "by B"),
            }
        },
        [C(NICK, "db/doc", None, "by A", "by B", "by B", SCHEMA_LWW)],
    ),
    "A makes p/nick cardinality many and adds a nick, B (later) replaces the nick": Case(
        [
            [{"db/id": ("db/ident", "p/nick"), "db/cardinality": "db.cardinality/many"}],
            add(IVAN_ID, "p/nick", "v2"),
        ],
        [add(IVAN_ID, "p/nick", "ivo")],
        {
            "attr:p/nick": {
                ("db/ident", Keyword("p/nick")),
                ("db/valueType", Keyword("db.type/string")),
                ("db/cardinality", Keyword("db.cardinality/many")),
            },
            # the merged schema says many: iv was retracted by B (it saw it), v2 and ivo stay
            "ivan": without(IVAN, "p/nick") | {("p/nick", "v2"), ("p/nick", "ivo")},
        },
    ),
}


@pytest.mark.timeout(60)
@table(SCHEMA_CASES)
async def test_schema_merges(make_conn: MakeConn, case: Case) -> None:
    report = await check_case(make_conn, case)
    for ident in IDENTS:
        assert report.db.schema.attribute(ident) is not None
    if any(a == "x/color" for datoms in case.expect.values() for a, _ in datoms):
        color = report.db.schema.attribute("x/color")
        assert color is not None and color.value_type == "db.type/string"
        # the attribute's entity is the one holding its ident
        (holder,) = [d.e for d in await report.db.datoms("avet", "db/ident", Keyword("x/color"))]
        assert color.eid == holder


@pytest.mark.timeout(60)
async def test_schema_merge_cardinality_rule_applies(make_conn: MakeConn) -> None:
    case = SCHEMA_CASES[
        "A makes p/nick cardinality many and adds a nick, B (later) replaces the nick"
    ]
    report = await check_case(make_conn, case)
    nick = report.db.schema.attribute("p/nick")
    assert nick is not None and nick.many


@pytest.mark.timeout(60)
async def test_conflicting_definitions_of_one_new_attribute(make_conn: MakeConn) -> None:
    """A adds x/color as a string and gives ivan "red"; B (later) adds x/color as a long and
    gives petr 3. The two attribute entities unify (db/ident is an identity); the definitions
    conflict on db/valueType, which must be recorded, and the merged database must not hold
    a value of the losing type under the winning one."""
    case = Case(
        [
            [{"db/id": "ca", "db/ident": "x/color", "db/valueType": "db.type/string"}],
            add(IVAN_ID, "x/color", "red"),
        ],
        [
            [{"db/id": "cb", "db/ident": "x/color", "db/valueType": "db.type/long"}],
            add(PETR_ID, "x/color", 3),
        ],
        {},
    )
    f = await fork(make_conn, case)
    report = await f.conn.merge("b")
    color = report.db.schema.attribute("x/color")
    assert color is not None
    kinds = {
        (c.attribute, frozenset({str(c.ours).lstrip(":"), str(c.theirs).lstrip(":")}), c.rule)
        for c in report.conflicts
    }
    assert ("db/valueType", frozenset({"db.type/string", "db.type/long"}), SCHEMA_LWW) in kinds
    assert color.value_type is not None
    python_type = {"db.type/string": str, "db.type/long": int}[color.value_type]
    values = [(d.e, d.v) for d in await report.db.datoms("aevt", "x/color")]
    assert all(isinstance(v, python_type) for _, v in values), (color.value_type, values)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "duplicate_first", [True, False], ids=["duplicate head first", "uniqueness head first"]
)
async def test_uniqueness_added_concurrently_with_a_duplicate(
    make_conn: MakeConn, duplicate_first: bool
) -> None:
    """Side U makes p/age a db.unique/value; side D (later) gives petr ivan's age 30. The
    merged schema says unique, so the earliest assertion (ivan's, in the base) keeps 30 and
    petr's is retracted, whichever head sorts first (the test forks until the order it
    wants comes up)."""
    conn = await make_conn(SCHEMA)
    ids = tempids(await conn.transact(BASE))
    base = conn.commit_id
    for k in range(50):
        await conn.branch(f"u{k}", from_=base)
        await conn.branch(f"d{k}", from_=base)
        async with replica.connect(conn.url, branch=f"u{k}") as u:
            await u.transact([{"db/id": ("db/ident", "p/age"), "db/unique": "db.unique/value"}])
            u_head, u_stamp = u.commit_id, u.db.stamp
        await wait_past(u_stamp)
        async with replica.connect(conn.url, branch=f"d{k}") as d:
            await d.transact(add(ids["petr"], "p/age", 30))
            d_head = d.commit_id
        if (d_head < u_head) == duplicate_first:
            break
    else:
        pytest.fail("the wanted head order never came up")
    async with replica.connect(conn.url, branch=f"u{k}") as u:
        report = await u.merge(f"d{k}")
    db = report.db
    age = db.schema.attribute("p/age")
    assert age is not None and age.unique == "db.unique/value"
    holders = {d.e for d in await db.datoms("avet", "p/age", 30)}
    assert holders == {ids["ivan"]}
    assert {d.v for d in await db.datoms("eavt", ids["petr"], "p/age")} == set()
    assert [(c.entity, c.attribute, c.rule) for c in report.conflicts] == [
        (ids["ivan"], "p/age", UNIQUE_VALUE)
    ]


# -- resolvers ------------------------------------------------------------------------------------


def max_resolver(base: Any, ours: Any, theirs: Any) -> Any:
    return max(v for v in (ours, theirs) if v is not None)


@pytest.fixture
def max_at_1() -> Iterator[None]:
    replica.register_resolver("max@1", max_resolver)
    yield
    replica.unregister_resolver("max@1")


OPT_IN = [[{"db/id": ("db/ident", "p/score"), "db.merge/resolver": "max@1"}]]

RESOLVER_CASES = {
    "max@1: the larger value wins although it was written earlier": Case(
        [add(IVAN_ID, "p/score", 9)],
        [add(IVAN_ID, "p/score", 7)],
        {"ivan": with_(IVAN, ("p/score", 9))},
        [C("ivan", "p/score", 5, 9, 7, 9, RESOLVER)],
        base=OPT_IN,
    ),
    "max@1: the larger value wins when it is the later one": Case(
        [add(IVAN_ID, "p/score", 7)],
        [add(IVAN_ID, "p/score", 9)],
        {"ivan": with_(IVAN, ("p/score", 9))},
        [C("ivan", "p/score", 5, 7, 9, 9, RESOLVER)],
        base=OPT_IN,
    ),
    "max@1 against a retraction: the resolver sees None for the retracting side": Case(
        [retract(IVAN_ID, "p/score", 5)],
        [add(IVAN_ID, "p/score", 3)],
        {"ivan": with_(IVAN, ("p/score", 3))},
        [C("ivan", "p/score", 5, None, 3, 3, RESOLVER)],
        base=OPT_IN,
    ),
    "max@1 is not asked when only one side changed": Case(
        [add(IVAN_ID, "p/score", 2)],
        [add(IVAN_ID, "p/age", 31)],
        {"ivan": with_(IVAN, ("p/score", 2), ("p/age", 31))},
        base=OPT_IN,
    ),
    "other attributes keep last writer wins": Case(
        [add(IVAN_ID, "p/age", 35)],
        [add(IVAN_ID, "p/age", 31)],
        {"ivan": with_(IVAN, ("p/age", 31))},
        [C("ivan", "p/age", 30, 35, 31, 31, LWW)],
        base=OPT_IN,
    ),
}


@pytest.mark.timeout(60)
@table(RESOLVER_CASES)
async def test_resolver(make_conn: MakeConn, case: Case, max_at_1: None) -> None:
    report = await check_case(make_conn, case)
    meta = dict(report.db.commit.meta)
    if case.conflicts and case.conflicts[0].rule == RESOLVER:
        # the merge commit records the resolver it used, by name and version
        assert meta == {"resolver/p/score": b"max@1"}
    else:
        assert meta == {}


@pytest.mark.timeout(60)
async def test_missing_resolver_refuses_to_merge(make_conn: MakeConn) -> None:
    case = RESOLVER_CASES["max@1: the larger value wins although it was written earlier"]
    f = await fork(make_conn, case)
    conn = f.conn
    before = await conn.store.get_ref("branches/main")
    with pytest.raises(MergeError, match="max@1"):
        await conn.merge("b")
    assert await conn.store.get_ref("branches/main") == before
    assert conn.commit_id == f.a_head
    # once registered, the same merge goes through
    replica.register_resolver("max@1", max_resolver)
    try:
        report = await conn.merge("b")
    finally:
        replica.unregister_resolver("max@1")
    assert {(d.a, d.v) for d in await report.db.datoms("eavt", f.ids["ivan"], "p/score")} == {
        ("p/score", 9)
    }


@pytest.mark.timeout(60)
async def test_resolver_is_not_needed_without_a_conflict(make_conn: MakeConn) -> None:
    """An attribute that names a resolver merges without it while nothing conflicts."""
    case = RESOLVER_CASES["max@1 is not asked when only one side changed"]
    await check_case(make_conn, case)


# -- db/noHistory: three-way against the merge base -----------------------------------------

NO_HISTORY_CASES = {
    "only A changes: A's value, no conflict": Case(
        [add(IVAN_ID, "p/seen", 2)],
        [add(IVAN_ID, "p/age", 31)],
        {"ivan": with_(IVAN, ("p/seen", 2), ("p/age", 31))},
    ),
    "only B retracts: retracted, no conflict": Case(
        [add(IVAN_ID, "p/age", 31)],
        [retract(IVAN_ID, "p/seen", 1)],
        {"ivan": without(with_(IVAN, ("p/age", 31)), "p/seen")},
    ),
    "both change: the later write wins": Case(
        [add(IVAN_ID, "p/seen", 2)],
        [add(IVAN_ID, "p/seen", 3)],
        {"ivan": with_(IVAN, ("p/seen", 3))},
        [C("ivan", "p/seen", 1, 2, 3, 3, NO_HISTORY)],
    ),
    "both change: the later write wins even if smaller": Case(
        [add(IVAN_ID, "p/seen", 9)],
        [add(IVAN_ID, "p/seen", 2)],
        {"ivan": with_(IVAN, ("p/seen", 2))},
        [C("ivan", "p/seen", 1, 9, 2, 2, NO_HISTORY)],
    ),
    "A retracts, B updates: the update wins": Case(
        [retract(IVAN_ID, "p/seen", 1)],
        [add(IVAN_ID, "p/seen", 3)],
        {"ivan": with_(IVAN, ("p/seen", 3))},
        [C("ivan", "p/seen", 1, None, 3, 3, NO_HISTORY)],
    ),
    "A updates, B (later) retracts: the update wins": Case(
        [add(IVAN_ID, "p/seen", 3)],
        [retract(IVAN_ID, "p/seen", 1)],
        {"ivan": with_(IVAN, ("p/seen", 3))},
        [C("ivan", "p/seen", 1, 3, None, 3, NO_HISTORY)],
    ),
    "both set the same value: no conflict": Case(
        [add(IVAN_ID, "p/seen", 4)],
        [add(IVAN_ID, "p/seen", 4)],
        {"ivan": with_(IVAN, ("p/seen", 4))},
    ),
}


@pytest.mark.timeout(60)
@table(NO_HISTORY_CASES)
async def test_no_history_three_way(make_conn: MakeConn, case: Case) -> None:
    report = await check_case(make_conn, case)
    # never in history
    assert await report.db.history.datoms("aevt", "p/seen") == []


# -- properties of the merge commit -------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_merge_is_commutative_through_the_api(make_conn: MakeConn) -> None:
    """A merging B and B merging A (two pairs of branches at the same heads) write the same
    commit, conflicts and all."""
    case = Case(
        [add(IVAN_ID, "p/age", 31), retract(IVAN_ID, "p/tag", "a")],
        [add(IVAN_ID, "p/age", 32), add(IVAN_ID, "p/tag", "c")],
        {},
    )
    f = await fork(make_conn, case)
    conn = f.conn
    await conn.branch("a2", from_=f.a_head)
    await conn.branch("b2", from_=f.b_head)
    a_into = await conn.merge("b")  # main (A) merges b (B)
    async with replica.connect(conn.url, branch="b2") as b2:
        b_into = await b2.merge("a2")  # a copy of B merges a copy of A
    assert a_into.db.commit_id == b_into.db.commit_id
    assert Counter(a_into.conflicts) == Counter(b_into.conflicts)


@pytest.mark.timeout(60)
async def test_merging_an_ancestor_is_a_no_op(make_conn: MakeConn) -> None:
    case = Case([add(IVAN_ID, "p/age", 31)], [add(IVAN_ID, "p/age", 32)], {})
    f = await fork(make_conn, case)
    conn = f.conn
    # the base (an ancestor of main) and main's own commit
    for other in (f.base, f.a_head, [f.base, f.a_head]):
        report = await conn.merge(other)
        assert not report.fast_forward
        assert report.conflicts == ()
        assert conn.commit_id == f.a_head
        assert report.db.commit_id == f.a_head
    assert await merge_heads(conn.database, [f.a_head, f.base]) == (
        await conn.database.db_at(f.a_head),
        (),
    )
    # main merged into b (an ancestor of b after the merge) fast-forwards b
    merged = await conn.merge("b")
    async with replica.connect(conn.url, branch="b") as side:
        report = await side.merge("main")
        assert report.fast_forward
        assert side.commit_id == merged.db.commit_id
    again = await conn.merge("b")
    assert not again.fast_forward and again.db.commit_id == merged.db.commit_id


@pytest.mark.timeout(60)
async def test_conflicts_are_queryable_with_datalog(make_conn: MakeConn) -> None:
    case = Case(
        [add(IVAN_ID, "p/age", 31), retract(IVAN_ID, "p/nick", "iv")],
        [add(IVAN_ID, "p/age", 32), add(IVAN_ID, "p/nick", "ivo")],
        {},
    )
    f = await fork(make_conn, case)
    report = await f.conn.merge("b")
    rows = await replica.q(
        "[:find ?a ?rule :where [?c :conflict/attribute ?a] [?c :conflict/rule ?rule]]",
        report.db,
    )
    assert rows == {
        (Keyword("p/age"), Keyword("conflict.rule/lww")),
        (Keyword("p/nick"), Keyword("conflict.rule/update-wins-over-retraction")),
    }
    # the example of docs/conflicts.md: what last writer wins decided
    lww = await replica.q(
        """[:find ?e ?a ?ours ?theirs ?winner ?tx
            :where [?c :conflict/rule :conflict.rule/lww] [?c :conflict/entity ?e ?tx]
                   [?c :conflict/attribute ?a] [?c :conflict/ours ?ours]
                   [?c :conflict/theirs ?theirs] [?c :conflict/winner ?winner]]""",
        report.db,
    )
    pair = ("31", "32") if f.a_first else ("32", "31")
    assert lww == {(f.ids["ivan"], Keyword("p/age"), *pair, "32", report.db.commit.tx)}
    # the record's entity is a ref, its values EDN text, its tx the merge transaction
    ivan = f.ids["ivan"]
    detail = await replica.q(
        """[:find ?base ?ours ?theirs ?winner ?tx
            :in $ ?e
            :where [?c :conflict/entity ?e ?tx] [?c :conflict/attribute :p/age]
                   [?c :conflict/base ?base] [?c :conflict/ours ?ours]
                   [?c :conflict/theirs ?theirs] [?c :conflict/winner ?winner]]""",
        report.db,
        ivan,
    )
    ours, theirs = ("31", "32") if f.a_first else ("32", "31")
    assert detail == {("30", ours, theirs, "32", report.db.commit.tx)}
    # conflicts of one entity, through the index on conflict/entity
    mine = await replica.q(
        "[:find [?a ...] :in $ ?e :where [?c :conflict/entity ?e] [?c :conflict/attribute ?a]]",
        report.db,
        ivan,
    )
    assert sorted(mine) == [Keyword("p/age"), Keyword("p/nick")]


# -- composite tuples (docs/conflicts.md, limitations) ------------------------------------------

TUPLE_SCHEMA = [
    {"db/ident": "t/a", "db/valueType": "db.type/string"},
    {"db/ident": "t/b", "db/valueType": "db.type/long"},
    {
        "db/ident": "t/a+b",
        "db/valueType": "db.type/tuple",
        "db/tupleAttrs": ["t/a", "t/b"],
    },
]


@pytest.mark.timeout(60)
async def test_composite_tuple_after_merge(make_conn: MakeConn) -> None:
    """A changes one part of a composite tuple, B (later) the other: the merged parts are
    (A's, B's); the merge recomputes the tuple from them."""
    conn = await make_conn(TUPLE_SCHEMA)
    e = (await conn.transact([{"db/id": "e", "t/a": "x", "t/b": 1}])).tempids["e"]
    await conn.branch("b")
    await conn.transact([["db/add", e, "t/a", "y"]])
    await wait_past(conn.db.stamp)
    async with replica.connect(conn.url, branch="b") as side:
        await side.transact([["db/add", e, "t/b", 2]])
    report = await conn.merge("b")
    got = {(d.a, d.v) for d in await report.db.datoms("eavt", e)}
    assert ("t/a", "y") in got and ("t/b", 2) in got
    assert got == {("t/a", "y"), ("t/b", 2), ("t/a+b", ("y", 2))}
