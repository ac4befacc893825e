"""The Pull API (query/pull.py), after DataScript's test/datascript/test/pull_api.cljc.

Every table row is ``(dataset, pattern, entity, expected)``: the expected values are
DataScript's answers for the same data (translated to Python: keyword keys compare equal to
their strings, vectors are lists, nil is None). Each row runs on three databases holding the same
datoms: a plain in-test DatomSource over a list of tuples (``FakeSource``), and a real replica
database on the memory store and on the file store.

Where we differ from DataScript (documented in query/pull.py): an attribute expression as a map
key is a list/tuple (EDN map keys cannot be vectors in our reader), ``:xform`` takes a Python
callable, the default limit of 1000 applies to every non-component reverse ref, and pulling a
history view is an error.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import pytest_asyncio

import replica
from query.errors import QueryError, QueryParseError
from query.pull import DEFAULT_LIMIT, as_source, parse_pattern, pull, pull_many
from query.source import AttrInfo, DatomSource
from query.types import Keyword, Symbol
from tests.query._fake_source import ListSource

Datom3 = tuple[int, str, Any]
Schema = list[dict[str, Any]]


def _attr(ident: str, vt: str = "db.type/string", **more: Any) -> dict[str, Any]:
    return {"db/ident": ident, "db/valueType": vt, **more}


MANY = {"db/cardinality": "db.cardinality/many"}
REF = "db.type/ref"

# DataScript's test-schema
SCHEMA: Schema = [
    _attr("name", **{"db/unique": "db.unique/identity"}),
    _attr("aka", **MANY),
    _attr("child", REF, **MANY),
    _attr("friend", REF, **MANY),
    _attr("enemy", REF, **MANY),
    _attr("father", REF),
    _attr("part", REF, **MANY, **{"db/isComponent": True}),
    _attr("spec", REF, **{"db/isComponent": True}),
]

# DataScript's test-datoms
BASE: list[Datom3] = [
    (1, "name", "Petr"),
    (1, "aka", "Devil"),
    (1, "aka", "Tupen"),
    (2, "name", "David"),
    (3, "name", "Thomas"),
    (4, "name", "Lucy"),
    (5, "name", "Elizabeth"),
    (6, "name", "Matthew"),
    (7, "name", "Eunan"),
    (8, "name", "Kerri"),
    (9, "name", "Rebecca"),
    (1, "child", 2),
    (1, "child", 3),
    (2, "father", 1),
    (3, "father", 1),
    (6, "father", 3),
    (10, "name", "Part A"),
    (11, "name", "Part A.A"),
    (10, "part", 11),
    (12, "name", "Part A.A.A"),
    (11, "part", 12),
    (13, "name", "Part A.A.A.A"),
    (12, "part", 13),
    (14, "name", "Part A.A.A.B"),
    (12, "part", 14),
    (15, "name", "Part A.B"),
    (10, "part", 15),
    (16, "name", "Part A.B.A"),
    (15, "part", 16),
    (17, "name", "Part A.B.A.A"),
    (16, "part", 17),
    (18, "name", "Part A.B.A.B"),
    (16, "part", 18),
]

CHAIN: list[Datom3] = [(4, "friend", 5), (5, "friend", 6), (6, "friend", 7), (7, "friend", 8)]
HATE: list[Datom3] = [(4, "enemy", 6), (5, "enemy", 7), (6, "enemy", 8), (7, "enemy", 4)]
ONE_REFS: Schema = [_attr("name"), _attr("friend", REF), _attr("enemy", REF)]

DATASETS: dict[str, tuple[Schema, list[Datom3]]] = {
    "base": (SCHEMA, BASE),
    # test-pull-limit
    "limit": (
        SCHEMA,
        [*BASE, (4, "friend", 5), (4, "friend", 6), (4, "friend", 7), (4, "friend", 8)]
        + [(8, "aka", f"aka-{i}") for i in range(2000)],
    ),
    # test-pull-component-attr: a component cycle
    "recpart": (SCHEMA, [*BASE, (12, "part", 10)]),
    # test-pull-recursion
    "recursion": (SCHEMA, [*BASE, *CHAIN, *HATE]),
    "cycle": (SCHEMA, [*BASE, *CHAIN, *HATE, (8, "friend", 4)]),
    "seen": (
        ONE_REFS,
        [(1, "name", "1"), (1, "friend", 2), (1, "enemy", 2), (2, "name", "2")],
    ),
    # test-dual-recursion
    "dual": (
        ONE_REFS,
        [
            (1, "friend", 2),
            (2, "enemy", 3),
            (3, "friend", 4),
            (4, "enemy", 5),
            (5, "friend", 6),
            (6, "enemy", 7),
        ],
    ),
    "dual-parts": (
        [_attr("part", REF), _attr("spec", REF)],
        [(1, "part", 2), (2, "part", 3), (3, "part", 1), (1, "spec", 2), (2, "spec", 1)],
    ),
    # test-component-reverse (issue-430)
    "component-reverse": (
        [_attr("name"), _attr("ref", REF, **{"db/isComponent": True})],
        [(1, "name", "1"), (1, "ref", 2), (2, "name", "2"), (2, "ref", 3), (3, "name", "3")],
    ),
}


# -- the databases ---------------------------------------------------------------------------


def FakeSource(schema: Schema, datoms: Iterable[Datom3]) -> ListSource:
    """The in-memory reference source for the pull tests (logs calls, to check batching)."""
    infos = {
        s["db/ident"]: AttrInfo(
            s["db/ident"],
            ref=s.get("db/valueType") == REF,
            many=s.get("db/cardinality") == "db.cardinality/many",
            component=bool(s.get("db/isComponent")),
            unique=s["db/unique"].rpartition("/")[2] if "db/unique" in s else None,
        )
        for s in schema
    }
    return ListSource(infos, ((e, a, v, 100, True) for e, a, v in datoms))


MakeDB = Callable[[Schema, list[Datom3]], Awaitable[Any]]


@pytest_asyncio.fixture(params=["fake", "mem", "file"])
async def make_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeDB]:
    """``await make_db(schema, datoms)``: a database holding ``datoms`` (entity ids as given):
    a FakeSource, or a replica DB on the memory or the file store."""
    opened: list[replica.Connection] = []
    kind = request.param

    async def make(schema: Schema, datoms: list[Datom3]) -> Any:
        if kind == "fake":
            return FakeSource(schema, datoms)
        n = len(opened)
        url = f"mem://test-{uuid4().hex}" if kind == "mem" else (tmp_path / f"db{n}").as_uri()
        conn = await replica.connect(url, create=True, schema=schema)
        opened.append(conn)
        if datoms:
            await conn.transact([["db/add", e, a, v] for e, a, v in datoms])
        return conn.db

    yield make
    for conn in opened:
        await conn.aclose()


async def dataset(make_db: MakeDB, name: str) -> Any:
    schema, datoms = DATASETS[name]
    return await make_db(schema, datoms)


# -- expected values -------------------------------------------------------------------------

PARTS: dict[str, Any] = {
    "name": "Part A",
    "part": [
        {
            "db/id": 11,
            "name": "Part A.A",
            "part": [
                {
                    "db/id": 12,
                    "name": "Part A.A.A",
                    "part": [
                        {"db/id": 13, "name": "Part A.A.A.A"},
                        {"db/id": 14, "name": "Part A.A.A.B"},
                    ],
                }
            ],
        },
        {
            "db/id": 15,
            "name": "Part A.B",
            "part": [
                {
                    "db/id": 16,
                    "name": "Part A.B.A",
                    "part": [
                        {"db/id": 17, "name": "Part A.B.A.A"},
                        {"db/id": 18, "name": "Part A.B.A.B"},
                    ],
                }
            ],
        },
    ],
}


def _rpart() -> dict[str, Any]:
    """DataScript's ``rpart``: 12 -> 10 closes a component cycle; 10 is expanded once more
    under 12 (the root is not 'seen'), then 11, already on the path, is only an id."""
    out = copy.deepcopy(PARTS)
    again = {
        "db/id": 10,
        "name": "Part A",
        "part": [{"db/id": 11}, copy.deepcopy(PARTS["part"][1])],
    }
    p12 = out["part"][0]["part"][0]
    p12["part"] = [again, *p12["part"]]
    return out


FRIENDS: dict[str, Any] = {
    "db/id": 4,
    "name": "Lucy",
    "friend": [
        {
            "db/id": 5,
            "name": "Elizabeth",
            "friend": [
                {
                    "db/id": 6,
                    "name": "Matthew",
                    "friend": [
                        {"db/id": 7, "name": "Eunan", "friend": [{"db/id": 8, "name": "Kerri"}]}
                    ],
                }
            ],
        }
    ],
}

ENEMIES: dict[str, Any] = {
    "db/id": 4,
    "name": "Lucy",
    "friend": [
        {
            "db/id": 5,
            "name": "Elizabeth",
            "friend": [{"db/id": 6, "name": "Matthew", "enemy": [{"db/id": 8, "name": "Kerri"}]}],
            "enemy": [
                {
                    "db/id": 7,
                    "name": "Eunan",
                    "friend": [{"db/id": 8, "name": "Kerri"}],
                    "enemy": [{"db/id": 4, "name": "Lucy", "friend": [{"db/id": 5}]}],
                }
            ],
        }
    ],
    "enemy": [
        {
            "db/id": 6,
            "name": "Matthew",
            "friend": [
                {
                    "db/id": 7,
                    "name": "Eunan",
                    "friend": [{"db/id": 8, "name": "Kerri"}],
                    "enemy": [
                        {
                            "db/id": 4,
                            "name": "Lucy",
                            "enemy": [{"db/id": 6}],
                            "friend": [
                                {
                                    "db/id": 5,
                                    "name": "Elizabeth",
                                    "enemy": [{"db/id": 7}],
                                    "friend": [{"db/id": 6}],
                                }
                            ],
                        }
                    ],
                }
            ],
            "enemy": [{"db/id": 8, "name": "Kerri"}],
        }
    ],
}


def _cycle_friends() -> dict[str, Any]:
    out = copy.deepcopy(FRIENDS)
    node = out
    for _ in range(4):
        node = node["friend"][0]
    node["friend"] = [{"db/id": 4, "name": "Lucy", "friend": [{"db/id": 5}]}]
    return out


PETR_WILD = {"db/id": 1, "name": "Petr", "aka": ["Devil", "Tupen"],
             "child": [{"db/id": 2}, {"db/id": 3}]}  # fmt: skip
DEFAULTS = '[[:name :default "[name]"] [:aka :default "[aka]"] {(:child :default "[child]") ...}]'

ROWS: list[Any] = [
    # test-pull-attr-spec
    ("base", "[:name :aka]", 1, {"name": "Petr", "aka": ["Devil", "Tupen"]}),
    ("base", "[:name :father :db/id]", 6, {"name": "Matthew", "father": {"db/id": 3}, "db/id": 6}),
    # test-pull-reverse-attr-spec
    ("base", "[:name :_child]", 2, {"name": "David", "_child": [{"db/id": 1}]}),
    ("base", "[:name {:_child [:name]}]", 2, {"name": "David", "_child": [{"name": "Petr"}]}),
    ("base", "[:name :_father]", 3, {"name": "Thomas", "_father": [{"db/id": 6}]}),
    ("base", "[:name :_father]", 1, {"name": "Petr", "_father": [{"db/id": 2}, {"db/id": 3}]}),
    ("base", "[:name {:_father [:name]}]", 3, {"name": "Thomas", "_father": [{"name": "Matthew"}]}),
    ("base", "[:name {:_father [:name]}]", 1,
     {"name": "Petr", "_father": [{"name": "David"}, {"name": "Thomas"}]}),
    ("base", "[:name :_father :_child]", 1,
     {"name": "Petr", "_father": [{"db/id": 2}, {"db/id": 3}]}),
    # test-pull-component-attr
    ("base", "[:name :part]", 10, PARTS),
    ("base", "[:name :_part]", 11, {"name": "Part A.A", "_part": {"db/id": 10}}),
    ("base", "[:name {:_part [:name]}]", 11, {"name": "Part A.A", "_part": {"name": "Part A"}}),
    ("recpart", "[:name :part]", 10, _rpart()),
    ("base", "[:name {:_part ...}]", 14,
     {"name": "Part A.A.A.B", "_part": {"name": "Part A.A.A",
                                        "_part": {"name": "Part A.A", "_part": {"name": "Part A"}}}}),
    ("base", "[:name {:_part 2}]", 14,
     {"name": "Part A.A.A.B", "_part": {"name": "Part A.A.A", "_part": {"name": "Part A.A"}}}),
    # test-pull-wildcard
    ("base", "[*]", 1, PETR_WILD),
    ("base", "[* :_child]", 2,
     {"db/id": 2, "name": "David", "_child": [{"db/id": 1}], "father": {"db/id": 1}}),
    ("base", "[:name *]", 1, PETR_WILD),
    ("base", "[:aka :name *]", 1, PETR_WILD),
    ("base", "[:aka :child :name *]", 1, PETR_WILD),
    ("base", "[[:aka :as :alias] [:name :as :first-name] *]", 1,
     {"alias": ["Devil", "Tupen"], "child": [{"db/id": 2}, {"db/id": 3}],
      "first-name": "Petr", "db/id": 1}),
    ("base", "[* {:child ...}]", 1,
     {"db/id": 1, "name": "Petr", "aka": ["Devil", "Tupen"],
      "child": [{"db/id": 2, "father": {"db/id": 1}, "name": "David"},
                {"db/id": 3, "father": {"db/id": 1}, "name": "Thomas"}]}),
    # test-pull-limit
    ("limit", "[:name {(limit :friend 2) [:name]}]", 4,
     {"name": "Lucy", "friend": [{"name": "Elizabeth"}, {"name": "Matthew"}]}),
    ("limit", "[:name {(:friend :limit 2) [:name]}]", 4,
     {"name": "Lucy", "friend": [{"name": "Elizabeth"}, {"name": "Matthew"}]}),
    ("limit", "[:name (limit :friend 1)]", 4, {"name": "Lucy", "friend": [{"db/id": 5}]}),
    ("limit", "[:name [:_father :limit 1]]", 1, {"name": "Petr", "_father": [{"db/id": 2}]}),
    # test-pull-default
    ("base", "[:foo]", 1, None),
    ("base", '[(default :foo "bar")]', 1, {"foo": "bar"}),
    ("base", '[[:foo :default "bar"]]', 1, {"foo": "bar"}),
    ("base", "[[:foo :default false]]", 1, {"foo": False}),
    ("base", "[[:foo :as :bar :default false]]", 1, {"bar": False}),
    ("base", DEFAULTS, 1,
     {"name": "Petr", "aka": ["Devil", "Tupen"],
      "child": [{"name": "David", "aka": "[aka]", "child": "[child]"},
                {"name": "Thomas", "aka": "[aka]", "child": "[child]"}]}),
    ("base", DEFAULTS, 2, {"name": "David", "aka": "[aka]", "child": "[child]"}),
    ("base", "[:db/id [:child :default 1]]", 2, {"child": 1, "db/id": 2}),
    ("base", "[:db/id [:_child :default 2]]", 1, {"_child": 2, "db/id": 1}),
    # test-pull-as, test-pull-attr-with-opts
    ("base", '[[:name :as "Name"] [:aka :as :alias]]', 1,
     {"Name": "Petr", "alias": ["Devil", "Tupen"]}),
    ("base", '[[:x :as "Name" :default "Nothing"]]', 1, {"Name": "Nothing"}),
    # test-pull-map
    ("base", "[:name {:father [:name]}]", 6, {"name": "Matthew", "father": {"name": "Thomas"}}),
    ("base", "[:name {:child [:name]}]", 1,
     {"name": "Petr", "child": [{"name": "David"}, {"name": "Thomas"}]}),
    ("base", "[:name {:father [:name]}]", 1, {"name": "Petr"}),
    ("base", "[:name {:child [:foo]}]", 1, {"name": "Petr"}),
    ("base", "[:name {:part [:name]}]", 10,
     {"name": "Part A", "part": [{"name": "Part A.A"}, {"name": "Part A.B"}]}),
    ("base", "[:name {:part 1}]", 10,
     {"name": "Part A", "part": [{"name": "Part A.A"}, {"name": "Part A.B"}]}),
    # test-pull-recursion
    ("recursion", "[:db/id :name {:friend ...}]", 4, FRIENDS),
    ("recursion", "[:db/id :name {:friend 2 :enemy 2}]", 4, ENEMIES),
    ("recursion", "[:db/id {:_friend ...}]", 8,
     {"db/id": 8, "_friend": [{"db/id": 7, "_friend": [
         {"db/id": 6, "_friend": [{"db/id": 5, "_friend": [{"db/id": 4}]}]}]}]}),
    ("recursion", "[:db/id {:_friend 2}]", 8,
     {"db/id": 8, "_friend": [{"db/id": 7, "_friend": [{"db/id": 6}]}]}),
    ("cycle", "[:db/id :name {:friend ...}]", 4, _cycle_friends()),
    ("seen", "[:name {:friend [:name], :enemy [:name]}]", 1,
     {"name": "1", "friend": {"name": "2"}, "enemy": {"name": "2"}}),
    # test-dual-recursion
    ("dual", "[:db/id {:friend ...}]", 1, {"db/id": 1, "friend": {"db/id": 2}}),
    ("dual", "[:db/id {:friend 1 :enemy 1}]", 1,
     {"db/id": 1, "friend": {"db/id": 2, "enemy": {"db/id": 3}}}),
    ("dual", "[:db/id {:friend 2 :enemy 1}]", 1,
     {"db/id": 1, "friend": {"db/id": 2, "enemy": {"db/id": 3, "friend": {"db/id": 4}}}}),
    ("dual", "[:db/id {:friend 2 :enemy 2}]", 1,
     {"db/id": 1, "friend": {"db/id": 2, "enemy": {"db/id": 3, "friend": {
         "db/id": 4, "enemy": {"db/id": 5}}}}}),
    ("dual-parts", "[:db/id {:part ...} {:spec ...}]", 1,
     {"db/id": 1,
      "spec": {"db/id": 2,
               "spec": {"db/id": 1, "spec": {"db/id": 2}, "part": {"db/id": 2}},
               "part": {"db/id": 3, "part": {"db/id": 1, "spec": {"db/id": 2},
                                             "part": {"db/id": 2}}}},
      "part": {"db/id": 2,
               "spec": {"db/id": 1, "spec": {"db/id": 2}, "part": {"db/id": 2}},
               "part": {"db/id": 3, "part": {"db/id": 1, "spec": {"db/id": 2},
                                             "part": {"db/id": 2}}}}}),
    # test-component-reverse (issue-430)
    ("component-reverse", "[:name {:ref [:name {:ref [:name {:_ref [:name]}]}]}]", 1,
     {"name": "1", "ref": {"name": "2", "ref": {"name": "3", "_ref": {"name": "2"}}}}),
    # test-lookup-ref-pull
    ("base", "[:name :aka]", ["name", "Petr"], {"name": "Petr", "aka": ["Devil", "Tupen"]}),
    ("base", "[:name :aka]", ("name", "Petr"), {"name": "Petr", "aka": ["Devil", "Tupen"]}),
    ("base", "[:name :aka]", ["name", "NotInDatabase"], None),
    ("base", "[*]", ["name", "No such name"], None),
    # not in DataScript's tests, DataScript's behaviour: an id is taken as is
    ("base", "[*]", 999, {"db/id": 999}),
    ("base", "[:name]", 999, None),
    ("base", "[:db/id]", 1, {"db/id": 1}),
    ("base", "[]", 1, None),
    # refs through * are {:db/id}, components through * are pulled whole
    ("base", "[*]", 11,
     {"db/id": 11, "name": "Part A.A", "part": [copy.deepcopy(PARTS["part"][0]["part"][0])]}),
    ("base", "[[:db/id :as :id] :name]", 6, {"id": 6, "name": "Matthew"}),
]  # fmt: skip


def _row_id(row: Any) -> str:
    return f"{row[0]}:{row[1]}@{row[2]}"


@pytest.mark.parametrize("row", ROWS, ids=[_row_id(r) for r in ROWS])
async def test_pull_table(make_db: MakeDB, row: Any) -> None:
    name, pattern, eid, expected = row
    db = await dataset(make_db, name)
    assert await pull(db, pattern, eid) == expected


def vector(x: Any) -> list[Any]:
    return [x]


# Python-data patterns (xform needs a callable; attribute expressions as map keys are tuples)
DATA_ROWS: list[Any] = [
    # test-xform
    ("base", [["db/id", "xform", vector], ["name", "xform", vector], ["aka", "xform", vector],
              {("child", "xform", vector): "..."}], 1,
     {"db/id": [1], "name": ["Petr"], "aka": [["Devil", "Tupen"]],
      "child": [[{"db/id": [2], "name": ["David"], "aka": [None], "child": [None]},
                 {"db/id": [3], "name": ["Thomas"], "aka": [None], "child": [None]}]]}),
    ("base", ["name", {("father", "xform", lambda m: m["name"]): ["*"]}], 2,
     {"name": "David", "father": "Petr"}),
    ("base", ["name", {("_father", "xform", lambda ms: [m["name"] for m in ms]): ["name"]}], 1,
     {"name": "Petr", "_father": ["David", "Thomas"]}),
    ("base", ["name", {("_part", "xform", lambda m: m["name"]): ["name"]}], 11,
     {"name": "Part A.A", "_part": "Part A"}),
    ("base", [["normal", "xform", vector], ["aka", "xform", vector],
              {("child", "xform", vector): "..."}], 2,
     {"normal": [None], "aka": [None], "child": [None]}),
    ("base", [["unknown", "default", "[unknown]", "xform", vector]], 1,
     {"unknown": "[unknown]"}),
    # xform symbols name query functions, as in DataScript
    ("base", "[[:name :xform vector] [:aka :xform count] [:db/id :xform str]]", 1,
     {"name": ["Petr"], "aka": 2, "db/id": "1"}),
    ("base", "[{(:father :xform vector) [:name]}]", 2, {"father": [{"name": "Petr"}]}),
    # plain strings, keywords and symbols in Python data
    ("base", ["name", {"child": ["name"]}], 1,
     {"name": "Petr", "child": [{"name": "David"}, {"name": "Thomas"}]}),
    ("base", [":name", [":aka", ":as", "nick"]], 1, {":name": "Petr", "nick": ["Devil", "Tupen"]}),
    ("base", [(Symbol("limit"), "aka", 1)], 1, {"aka": ["Devil"]}),
    ("base", [("limit", "aka", 1), ("default", "x", 0)], 1, {"aka": ["Devil"], "x": 0}),
    ("base", [Symbol("*")], 1, PETR_WILD),
    ("base", ["name", {("limit", "child", 1): [Keyword("name")]}], 1,
     {"name": "Petr", "child": [{"name": "David"}]}),
    ("base", ("name", ["aka", "limit", None]), 1, {"name": "Petr", "aka": ["Devil", "Tupen"]}),
    ("recursion", ["name", {"friend": Symbol("...")}], 6,
     {"name": "Matthew", "friend": [{"name": "Eunan", "friend": [{"name": "Kerri"}]}]}),
]  # fmt: skip


@pytest.mark.parametrize("row", DATA_ROWS, ids=[f"{r[0]}:{i}" for i, r in enumerate(DATA_ROWS)])
async def test_pull_python_data(make_db: MakeDB, row: Any) -> None:
    name, pattern, eid, expected = row
    db = await dataset(make_db, name)
    assert await pull(db, pattern, eid) == expected


async def test_pull_limits(make_db: MakeDB) -> None:
    """test-pull-limit: 2000 values, 1000 by default, :limit up or down, nil for all."""
    db = await dataset(make_db, "limit")

    async def count(pattern: str) -> int:
        got = await pull(db, pattern, 8)
        assert got is not None
        return len(got["aka"])

    assert await count("[:aka]") == DEFAULT_LIMIT == 1000
    assert await count("[(limit :aka 500)]") == 500
    assert await count("[[:aka :limit 500]]") == 500
    assert await count("[(limit :aka 1500)]") == 1500
    assert await count("[(limit :aka nil)]") == 2000
    assert await count("[[:aka :limit nil]]") == 2000
    got = await pull(db, "[*]", 8)
    assert got is not None and len(got["aka"]) == 1000
    values = (await pull(db, "[(limit :aka nil)]", 8) or {})["aka"]
    assert sorted(values) == sorted(f"aka-{i}" for i in range(2000))


async def test_pull_many(make_db: MakeDB) -> None:
    db = await dataset(make_db, "base")
    assert await pull_many(db, "[:name]", [1, 5, 7, 9]) == [
        {"name": "Petr"},
        {"name": "Elizabeth"},
        {"name": "Eunan"},
        {"name": "Rebecca"},
    ]
    lookups = [["name", "Elizabeth"], ["name", "Petr"], ["name", "Eunan"], ["name", "Rebecca"],
               ["name", "Unknown"]]  # fmt: skip
    assert await pull_many(db, "[:aka]", lookups) == [
        None,
        {"aka": ["Devil", "Tupen"]},
        None,
        None,
        None,
    ]
    assert await pull_many(db, "[:name]", []) == []
    # the same entity twice: equal, independent results
    a, b = await pull_many(db, "[:name {:child [:name]}]", [1, ("name", "Petr")])
    assert a == b == {"name": "Petr", "child": [{"name": "David"}, {"name": "Thomas"}]}
    assert a is not b and a is not None and b is not None and a["child"] is not b["child"]
    # pull_many agrees with pull, row by row
    pattern = "[* {:_father [:name]} {:part 1}]"
    eids = list(range(1, 19))
    assert await pull_many(db, pattern, eids) == [await pull(db, pattern, e) for e in eids]


async def test_deep_recursion(make_db: MakeDB) -> None:
    """test-deep-recursion: a chain of 2900 friends, pulled with ``...``."""
    start, depth = 100, 3000
    datoms = [*BASE, (start, "name", f"Person-{start}")]
    for i in range(start + 1, depth):
        datoms += [(i, "name", f"Person-{i}"), (i - 1, "friend", i)]
    db = await make_db(SCHEMA, datoms)
    pulled = await pull(db, "[:name {:friend ...}]", start)
    node = pulled
    for _ in range(depth - start - 1):
        assert node is not None
        node = node["friend"][0]
    assert node == {"name": f"Person-{depth - 1}"}


async def test_ident(make_db: MakeDB) -> None:
    db = await make_db(SCHEMA, [(20, "db/ident", Keyword("boss")), (20, "name", "Boss")])
    assert await pull(db, "[:name]", Keyword("boss")) == {"name": "Boss"}
    assert await pull(db, "[:name]", Keyword("nobody")) is None


async def test_keys_as_written(make_db: MakeDB) -> None:
    """Keys are the attributes as the pattern wrote them: Keyword from EDN text, the str given
    in Python data, the alias; wildcard attributes and implicit ids are Keywords."""
    db = await dataset(make_db, "base")
    got = await pull(db, "[:name {:father [:name]}]", 6)
    assert got is not None
    assert all(type(k) is Keyword for k in got) and type(next(iter(got["father"]))) is Keyword
    got = await pull(db, ["name", "father"], 6)
    assert got is not None
    assert [type(k) for k in got] == [str, str]
    assert [type(k) for k in got["father"]] == [Keyword]  # the implicit {:db/id e}
    got = await pull(db, ["*"], 6)
    assert got is not None and {type(k) for k in got} == {Keyword}
    got = await pull(db, [["name", "as", 7]], 6)
    assert got == {7: "Matthew"}


async def test_replica_views(make_conn: Any) -> None:
    """test-pull-other-dbs: a filtered DB; also as_of, and pull through ``replica.DB``."""
    conn = await make_conn(SCHEMA)
    report = await conn.transact([["db/add", e, a, v] for e, a, v in BASE])
    await conn.transact([["db/add", 1, "aka", "Pierre"], ["db/retract", 1, "aka", "Devil"]])
    db = conn.db
    assert await pull(db, "[:name :aka]", 1) == {"name": "Petr", "aka": ["Pierre", "Tupen"]}
    filtered = db.filter(lambda _db, d: d.v != "Tupen")
    assert await pull(filtered, "[:name :aka]", 1) == {"name": "Petr", "aka": ["Pierre"]}
    old = db.as_of(report.tx)
    assert await pull(old, "[:name :aka]", 1) == {"name": "Petr", "aka": ["Devil", "Tupen"]}
    assert await pull_many(old, "[:name {:_father [:name]}]", [1, 3]) == [
        {"name": "Petr", "_father": [{"name": "David"}, {"name": "Thomas"}]},
        {"name": "Thomas", "_father": [{"name": "Matthew"}]},
    ]
    with pytest.raises(QueryError, match="history"):
        await pull(db.history, "[*]", 1)


# -- errors ----------------------------------------------------------------------------------

BAD: list[Any] = [
    ("{:name [:x]}", "pattern to be a vector"),
    (":name", "pattern to be a vector"),
    ("[1]", "attr-name | attr-expr | map-spec | *"),
    ("[name]", "attr-name | attr-expr | map-spec | *"),
    ("[[:name :as]]", "even number of options"),
    ("[[:name :foo 1]]", "one of :as, :limit, :default, :xform"),
    ("[(limit :aka 0)]", "positive-number | nil"),
    ("[(limit :aka -1)]", "positive-number | nil"),
    ('[(limit :aka "2")]', "positive-number | nil"),
    ("[(limit :aka)]", "(limit attr-name"),
    ("[(default :aka)]", "(default attr-name"),
    ("[(limit 1 2)]", "(limit attr-name"),
    ("[[]]", "non-empty"),
    ("[(foo :aka 1)]", "[attr-name attr-option+]"),
    ("[{:friend 0}]", "positive-number | ..."),
    ("[{:friend :x}]", "pattern or recursion limit"),
    ("[{1 [:name]}]", "as a map-spec key"),
    ("[{:friend [1]}]", "attr-name | attr-expr | map-spec | *"),
    ("[[:name :as [1]]]", "hashable"),
    ("[[:name :xform 1]]", "callable or a function symbol"),
    ("[[:name :xform no-such-fn]]", "cannot resolve the :xform function"),
    ("[:name", "Cannot parse pull pattern"),
    # schema checks
    ("[(limit :name 2)]", "cardinality/many"),
    ("[[:father :limit 2]]", "cardinality/many"),
    ("[:_name]", "reverse attribute having :db.type/ref"),
    ("[:_nothing]", "reverse attribute having :db.type/ref"),
    ("[{:name [:x]}]", "having :db.type/ref in a map spec"),
    ("[{:name ...}]", "having :db.type/ref in a map spec"),
    ("[{:db/id [:x]}]", "having :db.type/ref"),
    ("[{:child [(limit :name 2)]}]", "cardinality/many"),
]


@pytest.mark.parametrize(("pattern", "message"), BAD, ids=[b[0] for b in BAD])
async def test_malformed_patterns(make_db: MakeDB, pattern: str, message: str) -> None:
    db = await dataset(make_db, "base")
    with pytest.raises(QueryParseError) as info:
        await pull(db, pattern, 1)
    assert message in str(info.value)
    with pytest.raises(QueryParseError):
        await pull_many(db, pattern, [1, 2])


def test_parse_errors_name_the_form() -> None:
    with pytest.raises(QueryParseError) as info:
        parse_pattern("[:name [:aka :limit 0]]")
    assert "[:aka :limit 0]" in str(info.value)
    assert info.value.form == [Keyword("aka"), Keyword("limit"), 0]


async def test_bad_sources_and_ids() -> None:
    src = FakeSource(SCHEMA, BASE)
    with pytest.raises(QueryError, match="DatomSource"):
        await pull(object(), "[*]", 1)
    with pytest.raises(QueryError, match="DatomSource"):
        await pull({"name": "x"}, "[*]", 1)
    with pytest.raises(QueryError):
        await pull(src, "[*]", 1.5)
    with pytest.raises(QueryError):
        await pull(src, "[*]", ["aka", "Devil"])  # not a unique attribute

    class Wrapper:
        def __datom_source__(self) -> DatomSource:
            return src

    assert as_source(Wrapper()) is src
    assert as_source(src) is src
    assert await pull(Wrapper(), "[:name]", 1) == {"name": "Petr"}


def test_parse_cache() -> None:
    text = "[:name {:friend [:name]} (limit :aka 2)]"
    assert parse_pattern(text) is parse_pattern(text)
    data = ["name", {"friend": ["name"]}]
    assert parse_pattern(data) is parse_pattern(copy.deepcopy(data))
    # Keyword and str patterns differ in the keys they give: not the same parse
    kw = parse_pattern([Keyword("name")])
    st = parse_pattern(["name"])
    assert kw is not st and type(kw.attrs[0].key) is Keyword and type(st.attrs[0].key) is str
    # the caller's data is not kept: changing it later changes nothing
    mine: list[Any] = ["name", ["aka", "default", []]]
    parsed = parse_pattern(mine)
    mine[1][2].append(1)
    assert parsed.attrs[1].default == []


def test_parsed_form() -> None:
    p = parse_pattern('[:name [:name :as "N"] * {:friend 2} :_child (limit :aka nil)]')
    assert p.wildcard
    assert [a.key for a in p.attrs] == ["db/id", "name", "N", "friend", "aka"]
    assert [a.name for a in p.attrs] == ["db/id", "name", "name", "friend", "aka"]
    assert [(a.name, a.key) for a in p.reverse] == [("child", "_child")]
    friend = p.attrs[3]
    assert friend.recursive and friend.depth == 2
    aka = p.attrs[4]
    assert aka.limit is None and aka.explicit_limit
    # a later spec with the same key replaces the earlier one, in its place
    q = parse_pattern("[:name :aka (limit :name 1)]")
    assert [a.key for a in q.attrs] == ["name", "aka"] and q.attrs[0].limit == 1


async def test_xform_failure() -> None:
    src = FakeSource(SCHEMA, BASE)

    def boom(_: Any) -> Any:
        raise ValueError("no")

    with pytest.raises(QueryError, match="xform") as info:
        await pull(src, [["name", "xform", boom]], 1)
    assert isinstance(info.value.__cause__, ValueError)


async def test_default_values_are_not_shared() -> None:
    src = FakeSource(SCHEMA, BASE)
    pattern: list[Any] = [["x", "default", []]]
    first = await pull(src, pattern, 1)
    assert first == {"x": []}
    first["x"].append(1)
    assert await pull(src, pattern, 1) == {"x": []}


async def test_pull_many_is_batched() -> None:
    """pull_many reads each level of the pattern with one seek per attribute, not one per
    entity: 30 entities, 2 levels, 3 attributes."""
    datoms = list(BASE)
    for i in range(100, 130):
        datoms += [(i, "name", f"n{i}"), (i, "friend", i + 1), (i, "aka", f"a{i}")]
    datoms.append((130, "aka", "no name"))  # 129's friend: nothing to show, left out
    src = FakeSource(SCHEMA, datoms)
    pattern = "[:name :aka {:friend [:name]}]"
    got = await pull_many(src, pattern, list(range(100, 130)))
    assert got[0] == {"name": "n100", "aka": ["a100"], "friend": [{"name": "n101"}]}
    assert got[-1] == {"name": "n129", "aka": ["a129"]}
    assert len(src.calls) <= 4, src.calls
    single = FakeSource(SCHEMA, datoms)
    for e in range(100, 130):
        assert await pull(single, pattern, e) == got[e - 100]
