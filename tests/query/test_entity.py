"""The entity API (``replica.Entity``, ``db.entity(e)``), after DataScript's
test/datascript/test/entity.cljc, on the memory and the file store.

DataScript's entity is lazy and synchronous; ours reads with ``await ent.get(attr)`` and
``await ent.touch()``, and is a read-only mapping once touched (``ent[attr]``, ``in``, ``keys``).
Values: one value for cardinality one, a frozenset for cardinality many, refs as Entity; the
reverse ``ns/_attr`` is one Entity for a component attribute, else a frozenset.
"""

from __future__ import annotations

from typing import Any

import pytest

import replica
from replica import Entity, ReplicaError
from tests.query.conftest import MakeConn

SCHEMA = [
    {"db/ident": "name", "db/valueType": "db.type/string", "db/unique": "db.unique/identity"},
    {"db/ident": "age", "db/valueType": "db.type/long"},
    {"db/ident": "aka", "db/valueType": "db.type/string", "db/cardinality": "db.cardinality/many"},
    {"db/ident": "father", "db/valueType": "db.type/ref"},
    {"db/ident": "child", "db/valueType": "db.type/ref", "db/cardinality": "db.cardinality/many"},
    {
        "db/ident": "part",
        "db/valueType": "db.type/ref",
        "db/cardinality": "db.cardinality/many",
        "db/isComponent": True,
    },
    {"db/ident": "spec", "db/valueType": "db.type/ref", "db/isComponent": True},
]

DATA: list[Any] = [
    {"db/id": 1, "name": "Ivan", "age": 19, "aka": ["X", "Y"], "child": [2, 3]},
    {"db/id": 2, "name": "Petr", "father": 1},
    {"db/id": 3, "name": "Oleg", "father": 1},
    {"db/id": 10, "name": "Part A", "part": [11, 12], "spec": 13},
    {"db/id": 11, "name": "Part A.A", "part": [14]},
    {"db/id": 12, "name": "Part A.B"},
    {"db/id": 13, "name": "Spec"},
    {"db/id": 14, "name": "Part A.A.A"},
]


async def setup(make_conn: MakeConn) -> tuple[replica.Connection, replica.DB]:
    conn = await make_conn(SCHEMA)
    await conn.transact(DATA)
    return conn, conn.db


async def test_get(make_conn: MakeConn) -> None:
    _, db = await setup(make_conn)
    ivan = db.entity(1)
    assert ivan.db is db and ivan.eid == 1
    assert await ivan.get("name") == "Ivan"
    assert await ivan.get(":age") == 19
    aka = await ivan.get("aka")
    assert aka == {"X", "Y"} and isinstance(aka, frozenset)
    children = await ivan.get("child")
    assert isinstance(children, frozenset)
    assert children == {Entity(db, 2), Entity(db, 3)}
    assert {await c.get("name") for c in children} == {"Petr", "Oleg"}
    assert await ivan.get("father") is None
    assert await ivan.get("father", "none") == "none"
    assert await ivan.get("db/id") == 1
    petr = db.entity(2)
    father = await petr.get("father")
    assert isinstance(father, Entity) and father == ivan and father.eid == 1
    assert await father.get("name") == "Ivan"
    # a navigated entity is an entity of the same DB
    assert father.db == db


async def test_reverse(make_conn: MakeConn) -> None:
    _, db = await setup(make_conn)
    ivan = db.entity(1)
    sons = await ivan.get("_father")
    assert isinstance(sons, frozenset) and sons == {Entity(db, 2), Entity(db, 3)}
    assert await db.entity(2).get("_child") == {ivan}
    # the reverse of a component attribute is the one owner
    assert await db.entity(11).get("_part") == Entity(db, 10)
    assert await db.entity(13).get("_spec") == Entity(db, 10)
    assert await db.entity(10).get("_part") is None
    assert await db.entity(10).get("_part", "nobody") == "nobody"
    # not a ref attribute, unknown attribute: nothing
    assert await ivan.get("_name") is None
    assert await ivan.get("_nothing", 0) == 0


async def test_touch(make_conn: MakeConn) -> None:
    _, db = await setup(make_conn)
    ivan = db.entity(1)
    assert not ivan.touched
    got = await ivan.touch()
    assert got == {
        "name": "Ivan",
        "age": 19,
        "aka": frozenset({"X", "Y"}),
        "child": frozenset({Entity(db, 2), Entity(db, 3)}),
    }
    assert ivan.touched
    got["name"] = "changed"  # a copy
    assert ivan["name"] == "Ivan"
    assert await db.entity(999).touch() == {}


async def test_sync_access_after_touch(make_conn: MakeConn) -> None:
    _, db = await setup(make_conn)
    ivan = db.entity(1)
    assert ivan["db/id"] == 1 and ivan[":db/id"] == 1
    with pytest.raises(ReplicaError, match=r"await entity\.touch\(\)"):
        ivan["name"]
    with pytest.raises(ReplicaError, match="touch"):
        _ = "name" in ivan
    with pytest.raises(ReplicaError, match="touch"):
        ivan.keys()
    with pytest.raises(ReplicaError, match="touch"):
        len(ivan)
    assert ivan  # truthy even before touch
    await ivan.touch()
    assert ivan["name"] == "Ivan"
    assert ivan["aka"] == {"X", "Y"}
    assert set(ivan.keys()) == {"name", "age", "aka", "child"}
    assert set(ivan) == {"name", "age", "aka", "child"}
    assert len(ivan) == 4
    assert dict(ivan.items())["age"] == 19
    assert 19 in list(ivan.values())
    assert "name" in ivan and "db/id" in ivan and "father" not in ivan
    with pytest.raises(KeyError):
        ivan["father"]
    # reverse attributes are not part of touch: read them with get first
    with pytest.raises(ReplicaError, match=r"await entity\.get\('_father'\)"):
        ivan["_father"]
    await ivan.get("_father")
    assert ivan["_father"] == {Entity(db, 2), Entity(db, 3)}
    assert "_father" in ivan
    await ivan.get("_part")
    assert "_part" not in ivan
    with pytest.raises(KeyError):
        ivan["_part"]


async def test_get_loads_the_entity_once(make_conn: MakeConn) -> None:
    """The first get reads all the entity's own attributes in one seek (they sit together in
    EAVT); later reads are sync. Components are not touched by it."""
    _, db = await setup(make_conn)
    ivan = db.entity(1)
    with pytest.raises(ReplicaError, match="touch"):
        ivan["age"]
    assert await ivan.get("age") == 19
    assert ivan["age"] == 19
    assert ivan["name"] == await db.entity(1).get("name")
    assert not ivan.touched
    with pytest.raises(KeyError):
        ivan["no-such-attribute"]


async def test_touch_components(make_conn: MakeConn) -> None:
    """As in DataScript, touch touches component entities recursively (not other refs)."""
    _, db = await setup(make_conn)
    a = db.entity(10)
    await a.touch()
    parts = a["part"]
    assert {p["name"] for p in parts} == {"Part A.A", "Part A.B"}
    aa = next(p for p in parts if p.eid == 11)
    assert {p["name"] for p in aa["part"]} == {"Part A.A.A"}
    assert a["spec"]["name"] == "Spec"
    ivan = db.entity(1)
    await ivan.touch()
    son = next(iter(ivan["child"]))
    assert not son.touched
    with pytest.raises(ReplicaError):
        son["name"]


async def test_touch_is_one_search(make_conn: MakeConn, monkeypatch: pytest.MonkeyPatch) -> None:
    _, db = await setup(make_conn)
    from replica.qsource import DBSource

    calls: list[Any] = []
    search, entity_datoms = DBSource.search, DBSource.entity_datoms

    async def counting(self: DBSource, *args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return await search(self, *args, **kwargs)

    async def counting_e(self: DBSource, e: int) -> Any:
        calls.append(e)
        return await entity_datoms(self, e)

    monkeypatch.setattr(DBSource, "search", counting)
    monkeypatch.setattr(DBSource, "entity_datoms", counting_e)
    ivan = db.entity(1)
    await ivan.touch()
    assert len(calls) == 1
    await ivan.touch()
    await ivan.get("name")
    await ivan.get("father")  # known absent after touch
    assert len(calls) == 1
    assert ivan["name"] == "Ivan"
    # the same entity read again in the same DB value, by another Entity object: no seek,
    # but the new object is not loaded until it is awaited
    again = db.entity(1)
    with pytest.raises(ReplicaError, match="touch"):
        again["name"]
    assert await again.get("age") == 19 and again["name"] == "Ivan"
    assert not again.touched
    assert len(calls) == 1
    assert await db.entity(2).get("name") == "Petr"
    assert len(calls) == 2


async def test_equality(make_conn: MakeConn) -> None:
    conn, db = await setup(make_conn)
    assert db.entity(1) == Entity(db, 1) and hash(db.entity(1)) == hash(Entity(db, 1))
    assert db.entity(1) != db.entity(2)
    await conn.transact([{"db/id": 1, "age": 20}])
    later = conn.db
    assert later.entity(1) != db.entity(1)
    assert await later.entity(1).get("age") == 20
    assert await db.entity(1).get("age") == 19
    assert len({db.entity(1), Entity(db, 1), later.entity(1)}) == 2


async def test_views(make_conn: MakeConn) -> None:
    conn, db = await setup(make_conn)
    report = await conn.transact([["db/retract", 1, "aka", "X"], {"db/id": 1, "age": 20}])
    now = conn.db
    assert await now.entity(1).get("aka") == {"Y"}
    old = now.as_of(db.max_tx)
    assert await old.entity(1).get("aka") == {"X", "Y"}
    assert (await old.entity(1).touch())["age"] == 19
    filtered = now.filter(lambda _db, d: d.a != "age")
    assert "age" not in await filtered.entity(1).touch()
    assert report.db_after == now
