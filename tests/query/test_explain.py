"""``replica.explain``: the plan the evaluator followed, with the planner's estimates.

The data make the right order obvious: 3 of 100 people are named Ivan, everyone has an age.
Whatever order the query is written in, the selective pattern must run first, its estimate must
be the index count (3), and the age pattern must read only those 3 entities.
"""

from __future__ import annotations

import pytest

import replica
from query.ast import Pattern
from tests.query.conftest import MakeConn

SCHEMA = [
    {"db/ident": "name", "db/valueType": "db.type/string"},
    {"db/ident": "age", "db/valueType": "db.type/long"},
]
PEOPLE = [{"db/id": i, "name": "Ivan" if i % 40 == 1 else f"p{i}", "age": i} for i in range(1, 101)]
IVANS = {1, 41, 81}


@pytest.mark.parametrize(
    "query",
    [
        '[:find ?e ?a :where [?e :age ?a] [?e :name "Ivan"]]',
        '[:find ?e ?a :where [?e :name "Ivan"] [?e :age ?a]]',
    ],
    ids=["selective-last", "selective-first"],
)
async def test_selective_pattern_runs_first(make_conn: MakeConn, query: str) -> None:
    conn = await make_conn(SCHEMA)
    await conn.transact(PEOPLE)
    plan = await replica.explain(query, conn.db)
    assert plan.result_size == len(IVANS)
    first, second = plan.steps
    assert isinstance(first["clause"], Pattern) and first["clause"].terms[1].value == "name"
    assert first["estimate"] == len(IVANS)
    assert first["rows_after"] == len(IVANS)
    assert second["clause"].terms[1].value == "age"
    assert second["estimate"] < len(PEOPLE)  # the bound entities, not the whole attribute
    assert "search_es" in second["how"]
    lines = str(plan).splitlines()
    assert "'name'" in lines[0] and "estimated 3" in lines[0]
    assert "'age'" in lines[1]
    assert lines[-1] == f"result: {len(IVANS)}"
    # the same answer as the query itself
    assert await replica.q(query, conn.db) == {(e, e) for e in IVANS}


async def test_range_predicate_becomes_an_index_range(make_conn: MakeConn) -> None:
    conn = await make_conn(SCHEMA)
    await conn.transact(PEOPLE)
    query = "[:find ?e :in $ ?min :where [?e :age ?a] [(> ?a ?min)]]"
    plan = await replica.explain(query, conn.db, 95)
    assert plan.steps[0]["how"].startswith("range")
    assert plan.steps[0]["how"] == "range: 5 datoms"  # ages 96..100 read, not all 100
    assert await replica.q(query, conn.db, 95) == {(e,) for e in range(96, 101)}
