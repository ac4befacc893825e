"""The ``replica`` command (sync/cli.py, docs/cli.md).

Most tests call ``sync.cli.main(argv)`` in this process (fast; stdout/stderr through capsys);
some run ``python -m replica`` as a real subprocess, and the peer tests run ``replica serve``
as one. Every store is a file store under ``tmp_path``. Expected outputs are worked out from
the inputs (datom counts, winners of conflicts, node counts cross-checked between verbs),
not copied from the program.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sync import cli

ROOT = Path(__file__).resolve().parent.parent

SCHEMA_EDN = """
[{:db/ident :person/name :db/valueType :db.type/string :db/unique :db.unique/identity}
 {:db/ident :person/age :db/valueType :db.type/long}
 {:db/ident :person/born :db/valueType :db.type/instant}
 {:db/ident :person/tags :db/valueType :db.type/keyword :db/cardinality :db.cardinality/many}
 {:db/ident :person/friend :db/valueType :db.type/ref}]
"""

PEOPLE_EDN = """
[{:db/id "ivan" :person/name "Ivan" :person/age 15}
 {:db/id "petr" :person/name "Petr" :person/age 30}]
"""

NAMES_AGES = "[:find ?n ?a :where [?e :person/name ?n] [?e :person/age ?a]]"
IVAN_AGE = '[:find ?a . :where [?e :person/name "Ivan"] [?e :person/age ?a]]'


class Run:
    """``sync.cli.main`` in this process: exit code, stdout and stderr of one command."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    def __call__(self, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        if stdin is not None:
            self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = cli.main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str, stdin: str | None = None) -> str:
        code, out, err = self(*argv, stdin=stdin)
        assert code == 0, f"{argv}: exit {code}: {err}"
        assert err == "", err
        return out

    def json(self, *argv: str, stdin: str | None = None) -> Any:
        return json.loads(self.ok(*argv, "--json", stdin=stdin))

    def fails(self, code: int, *argv: str, stdin: str | None = None) -> str:
        """Run a command that must fail with ``code`` and one line on stderr; that line."""
        got, _, err = self(*argv, stdin=stdin)
        assert got == code, f"{argv}: exit {got}, want {code}: {err}"
        lines = err.splitlines()
        assert len(lines) == 1, f"not one line: {err!r}"
        assert "Traceback" not in err
        return lines[0]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REPLICA_DB", "REPLICA_BRANCH", "REPLICA_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    return Run(capsys, monkeypatch)


@pytest.fixture
def db(tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A database with the schema and Ivan (15) and Petr (30); REPLICA_DB points at it."""
    (tmp_path / "schema.edn").write_text(SCHEMA_EDN)
    (tmp_path / "people.edn").write_text(PEOPLE_EDN)
    path = tmp_path / "db"
    monkeypatch.setenv("REPLICA_DB", str(path))
    run.ok("init", "--schema", str(tmp_path / "schema.edn"))
    run.ok("transact", str(tmp_path / "people.edn"))
    return path


def _table(out: str) -> list[list[str]]:
    """The rows of a table the CLI printed (columns split on 2+ spaces; header and rule
    dropped, and the '(N rows)' note)."""
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("(")]
    rule = next(i for i, ln in enumerate(lines) if set(ln.replace(" ", "")) == {"-"})
    return [re.split(r"\s{2,}", ln.strip()) for ln in lines[rule + 1 :]]


def _query(run: Run, query: str, *extra: str) -> Any:
    return run.json("query", query, *extra)


# -- init, transact, query, pull --------------------------------------------------------------


@pytest.mark.timeout(60)
def test_init_transact_edn_file_and_query(tmp_path: Path, run: Run) -> None:
    (tmp_path / "schema.edn").write_text(SCHEMA_EDN)
    (tmp_path / "people.edn").write_text(PEOPLE_EDN)
    dbdir = tmp_path / "db"
    out = run.ok("--db", str(dbdir), "init", "--schema", str(tmp_path / "schema.edn"))
    assert f"initialized database at {dbdir.as_uri()}" in out
    assert "5 schema attribute(s)" in out
    out = run.ok("--db", str(dbdir), "transact", str(tmp_path / "people.edn"))
    # 2 entities x 2 attributes + the transaction's db/txInstant
    assert re.match(r"tx \d+ on branch main: commit [0-9a-f]{10}, 5 datoms", out)
    tempids = dict(_table(out.split("\n\n", 1)[1]))
    assert set(tempids) == {"ivan", "petr"}
    out = run.ok("--db", str(dbdir), "query", NAMES_AGES)
    assert _table(out) == [["Ivan", "15"], ["Petr", "30"]]
    assert out.rstrip().endswith("(2 rows)")
    assert _query(run, NAMES_AGES, "--db", str(dbdir)) == [["Ivan", 15], ["Petr", 30]]
    # a second init is an error: one line, exit 1
    line = run.fails(1, "--db", str(dbdir), "init")
    assert line == f"replica: error: a database already exists at {dbdir.as_uri()}"


@pytest.mark.timeout(60)
def test_transact_json_from_stdin_with_tags(db: Path, run: Run) -> None:
    data = [
        {
            "db/id": "ann",
            "person/name": "Ann",
            "person/age": 41,
            "person/born": {"#inst": "1983-05-01T10:00:00Z"},
            "person/tags": [{"#keyword": "admin"}, {"#keyword": "ops"}],
            "person/friend": {"#lookup": ["person/name", "Ivan"]},
        }
    ]
    report = run.json("transact", stdin=json.dumps(data))
    # name, age, born, two tags, friend + db/txInstant
    assert report["datoms"] == 7
    ann = report["tempids"]["ann"]
    ivan = _query(run, '[:find ?e . :where [?e :person/name "Ivan"]]')
    pulled = run.json("pull", "[*]", str(ann))
    assert pulled == {
        "db/id": ann,
        "person/name": "Ann",
        "person/age": 41,
        "person/born": "1983-05-01T10:00:00.000Z",
        "person/tags": ["admin", "ops"],
        "person/friend": {"db/id": ivan},
    }
    # the same through a .json file, and inline EDN with --data
    path = db.parent / "more.json"
    path.write_text(json.dumps([["db/add", "x", "person/name", "Xena"]]))
    assert run.json("transact", str(path))["datoms"] == 2
    assert run.json("transact", "--data", '[[:db/add "y" :person/name "Yan"]]')["datoms"] == 2
    names = _query(run, "[:find [?n ...] :where [_ :person/name ?n]]")
    assert sorted(names) == ["Ann", "Ivan", "Petr", "Xena", "Yan"]


@pytest.mark.timeout(60)
def test_transact_edn_from_stdin_and_batches(db: Path, run: Run) -> None:
    out = run.ok("transact", "-", stdin='[{:person/name "Ivan" :person/age 16}]')
    # upsert by the identity: retract 15, assert 16, plus db/txInstant
    assert ", 3 datoms" in out
    assert _query(run, IVAN_AGE) == 16
    before = len(run.json("log"))
    items = "[" + " ".join(f'{{:person/name "p{i}" :person/age {i}}}' for i in range(5)) + "]"
    report = run.json("transact", "--batch", "2", stdin=items)
    assert report["transactions"] == 3 and report["items"] == 5
    assert report["datoms"] == 5 * 2 + 3  # two attributes each, one txInstant per batch
    assert len(run.json("log")) == before + 3


@pytest.mark.timeout(60)
def test_query_inputs_views_and_find_shapes(db: Path, run: Run) -> None:
    first = run.json("transact", "--data", '[{:person/name "Ivan" :person/age 16}]')
    run.ok("transact", "--data", '[{:person/name "Ivan" :person/age 17}]')
    q_in = "[:find ?a . :in $ ?n :where [?e :person/name ?n] [?e :person/age ?a]]"
    assert run.ok("query", q_in, "--in", '"Ivan"').strip() == "17"
    assert run.ok("query", q_in, "--in", '"Petr"').strip() == "30"
    # as of the first of the two transactions (by tx id and by commit), and of a time before
    assert _query(run, IVAN_AGE, "--as-of", str(first["tx"])) == 16
    assert _query(run, IVAN_AGE, "--as-of", first["commit"][2:12]) == 16
    assert _query(run, IVAN_AGE, "--as-of", "HEAD~1") == 16
    assert _query(run, IVAN_AGE, "--as-of", "2001-01-01") is None
    # since the first: only the last transaction's datoms
    assert _query(run, "[:find ?a :where [_ :person/age ?a]]", "--since", "HEAD~1") == [[17]]
    # history: 15 asserted, retracted; 16 asserted, retracted; 17 asserted
    hist = _query(
        run,
        '[:find ?a ?added :where [?e :person/name "Ivan"] [?e :person/age ?a _ ?added]]',
        "--history",
    )
    assert hist == [[15, False], [15, True], [16, False], [16, True], [17, True]]
    # collection, tuple, aggregate, :keys
    assert _query(run, "[:find [?n ...] :where [_ :person/name ?n]]") == ["Ivan", "Petr"]
    assert _query(
        run, "[:find [?n ?a] :where [?e :person/name ?n] [?e :person/age ?a] [(> ?a 20)]]"
    ) == ["Petr", 30]
    out = run.ok("query", "[:find (count ?e) . :where [?e :person/name]]")
    assert out.strip() == "2"
    keyed = _query(
        run, "[:find ?n ?a :keys name age :where [?e :person/name ?n] [?e :person/age ?a]]"
    )
    assert sorted(keyed, key=lambda r: r["name"]) == [
        {"name": "Ivan", "age": 17},
        {"name": "Petr", "age": 30},
    ]
    out = run.ok("query", "[:find ?n (max ?a) :where [?e :person/name ?n] [?e :person/age ?a]]")
    assert out.splitlines()[0].split() == ["?n", "(max", "?a)"]
    # a query from a file
    qfile = db.parent / "q.edn"
    qfile.write_text(NAMES_AGES)
    assert _query(run, str(qfile)) == [["Ivan", 17], ["Petr", 30]]


@pytest.mark.timeout(60)
def test_pull(db: Path, run: Run) -> None:
    run.ok("transact", "--data", '[{:person/name "Ann" :person/friend [:person/name "Ivan"]}]')
    out = run.ok("pull", "[:person/name :person/age]", '[:person/name "Ivan"]')
    assert _table(out) == [["person/name", "Ivan"], ["person/age", "15"]]
    nested = run.json(
        "pull", "[:person/name {:person/friend [:person/name :person/age]}]", '[:person/name "Ann"]'
    )
    assert nested == {
        "person/name": "Ann",
        "person/friend": {"person/name": "Ivan", "person/age": 15},
    }
    assert run.json("pull", "[:person/name]", '[:person/name "Nobody"]') is None


# -- branches, merges, history ----------------------------------------------------------------


def _conflicting_merge(run: Run) -> dict[str, Any]:
    """main and exp both change Ivan's age from 15 (exp to 16, then main to 17), then main
    merges exp: one conflict, last writer (main's 17) wins."""
    run.ok("branch", "exp")
    run.ok("--branch", "exp", "transact", "--data", '[{:person/name "Ivan" :person/age 16}]')
    run.ok("transact", "--data", '[{:person/name "Ivan" :person/age 17}]')
    report: dict[str, Any] = run.json("merge", "exp")
    return report


@pytest.mark.timeout(60)
def test_branch_create_list_delete_reset(db: Path, run: Run) -> None:
    head = run.json("log")[0]["commit"]
    out = run.ok("branch", "exp")
    assert out.strip() == f"created branch exp at {head[2:12]}"
    run.ok("branch", "old", "--from", "HEAD~1")
    listed = {b["name"]: b for b in run.json("branch")}
    assert set(listed) == {"main", "exp", "old"}
    assert listed["main"]["current"] and not listed["exp"]["current"]
    assert listed["exp"]["heads"] == [head]
    assert listed["old"]["heads"] == [run.json("log")[1]["commit"]]
    rows = _table(run.ok("branch"))
    assert ["*", "main", head[2:12]] == rows[1][:3]
    # work on exp, then reset it back to main's head
    run.ok("--branch", "exp", "transact", "--data", '[{:person/name "Zed"}]')
    assert run.json("branch")[0]["heads"] != [head]
    assert run.ok("branch", "--reset", "exp", "main").strip() == f"branch exp reset to {head[2:12]}"
    assert {b["name"]: b["heads"] for b in run.json("branch")}["exp"] == [head]
    assert run.ok("branch", "-d", "old").strip() == "deleted branch old"
    assert [b["name"] for b in run.json("branch")] == ["exp", "main"]
    # errors: one line each
    assert run.fails(1, "branch", "exp") == "replica: error: branch 'exp' already exists"
    assert run.fails(1, "branch", "-d", "nope") == "replica: error: no branch named 'nope'"
    assert "current branch" in run.fails(1, "branch", "-d", "main")
    assert run.fails(2, "branch", "--reset", "exp").startswith("replica branch: error:")


@pytest.mark.timeout(60)
def test_merge_auto_conflicts_log_graph_show(db: Path, run: Run) -> None:
    report = _conflicting_merge(run)
    assert report["merged"] and not report["fast_forward"]
    (c,) = report["conflicts"]
    assert (c["attribute"], c["base"], c["winner"], c["rule"]) == ("person/age", 15, 17, "lww")
    assert {c["ours"], c["theirs"]} == {16, 17}
    assert _query(run, IVAN_AGE) == 17
    # conflicts: table and JSON
    out = run.ok("conflicts")
    (row,) = _table(out.rsplit("\n", 2)[0])
    assert row[2:4] == ["person/age", "15"] and {row[4], row[5]} == {"16", "17"}
    assert row[6:] == ["17", "lww"]
    assert out.strip().endswith("1 conflict(s) recorded on branch main")
    assert run.json("conflicts") == report["conflicts"]
    # log: genesis, schema, people, exp's tx, main's tx, the merge; newest first
    log = run.json("log")
    assert len(log) == 6
    merge = log[0]
    assert merge["merge"] and len(merge["parents"]) == 2 and merge["branches"] == ["main"]
    assert log[-1]["parents"] == [] and log[-1]["tx"] == 0
    assert {e["commit"] for e in log[1:3]} == set(merge["parents"])
    # the merge brings exp's txInstant, the conflict entity (7 conflict/* datoms) and the
    # merge's own txInstant... measured against its first parent, whichever side that is
    assert merge["added"] >= 9
    graph = run.ok("log", "--graph").splitlines()
    drawing = [
        ln[: ln.index(e["short"])].rstrip() if e else ln
        for ln, e in zip(graph[2:], [log[0], None, log[1], log[2], None, *log[3:]], strict=True)
    ]
    # parents are sorted by address: the first parent keeps the merge's lane
    first = log[1]["commit"] == merge["parents"][0]
    sides = ["* |", "| *"] if first else ["| *", "* |"]
    assert drawing == ["*", "|\\", *sides, "|/", "*", "*", "*"], graph
    # show the merge: its conflict and its datoms against the first parent
    out = run.ok("show", merge["short"])
    assert f"commit   {merge['commit']}" in out
    assert "merge    of 2 heads, 1 conflict(s) resolved" in out
    assert "conflicts resolved by this merge: 1" in out
    shown = run.json("show", "HEAD")
    assert shown["conflicts"] == report["conflicts"] and shown["merge"]
    assert len(shown["added"]) == merge["added"]
    # show a plain commit: exactly what its transaction changed (2 people x 2 + txInstant)
    people = run.json("show", log[-3]["short"])
    assert (len(people["added"]), len(people["retracted"]), people["merge"]) == (5, 0, False)
    assert people["parents"] == [log[-2]["commit"]]


@pytest.mark.timeout(60)
def test_show_and_diff_stat(db: Path, run: Run) -> None:
    run.ok("branch", "b")
    run.ok(
        "--branch",
        "b",
        "transact",
        "--data",
        '[{:person/name "Olga" :person/age 33} {:person/name "Ivan" :person/age 20}]',
    )
    run.ok(
        "--branch",
        "b",
        "transact",
        "--data",
        '[[:db/retract [:person/name "Petr"] :person/age 30]]',
    )
    shown = run.json("--branch", "b", "show", "HEAD~1")
    # Olga's name and age, Ivan's new age, the txInstant; Ivan's old age retracted
    assert len(shown["added"]) == 4 and len(shown["retracted"]) == 1
    assert shown["retracted"][0]["v"] == 15
    out = run.ok("diff", "main", "b", "--stat")
    assert _table(out.strip().rsplit("\n", 1)[0]) == [
        ["db/txInstant", "2", "0"],
        ["person/age", "2", "2"],
        ["person/name", "1", "0"],
    ]
    assert out.strip().endswith("5 datom(s) added, 2 retracted, 3 attribute(s)")
    stat = run.json("diff", "main", "b", "--stat")
    assert (stat["added"], stat["retracted"]) == (5, 2)
    full = run.json("diff", "main", "b")
    assert sorted(d["v"] for d in full["retracted"]) == [15, 30]
    assert sorted(d["v"] for d in full["added"] if d["a"] == "person/age") == [20, 33]
    out = run.ok("diff", "main", "b")
    assert out.strip().endswith("5 datom(s) added, 2 retracted")
    assert sum(1 for r in _table(out.strip().rsplit("\n", 1)[0]) if r[0] == "-") == 2
    # the reverse diff swaps the sides
    back = run.json("diff", "b", "main", "--stat")
    assert (back["added"], back["retracted"]) == (2, 5)


@pytest.mark.timeout(60)
def test_strict_merge_exit_code_3(db: Path, run: Run) -> None:
    run.ok("branch", "exp")
    run.ok("--branch", "exp", "transact", "--data", '[{:person/name "Ivan" :person/age 16}]')
    run.ok("transact", "--data", '[{:person/name "Ivan" :person/age 17}]')
    head = run.json("log")[0]["commit"]
    code, out, err = run("merge", "exp", "--strict")
    assert code == 3
    assert err.startswith("replica: error: strict merge of exp into main: 1 unresolved conflict")
    assert len(err.splitlines()) == 1
    (row,) = _table(out)
    assert "person/age" in row and "lww" in row
    # nothing was written
    assert run.json("log")[0]["commit"] == head
    code, out, _ = run("merge", "exp", "--strict", "--json")
    assert code == 3 and json.loads(out)["conflicts"][0]["attribute"] == "person/age"
    # a strict merge without conflicts goes through (a fast-forward here)
    run.ok("branch", "ff")
    run.ok("--branch", "ff", "transact", "--data", '[{:person/name "Zed"}]')
    out = run.ok("merge", "ff", "--strict")
    assert out.startswith("fast-forward main to ")
    assert run.ok("merge", "ff").startswith("already up to date")
    # --tx settles what the automatic rules decided, in the same command
    fix = db.parent / "fix.edn"
    fix.write_text('[{:person/name "Ivan" :person/age 18}]')
    report = run.json("merge", "exp", "--tx", str(fix))
    assert report["tx"] is not None and len(report["conflicts"]) == 1
    assert _query(run, IVAN_AGE) == 18


# -- maintenance ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_export_import_round_trip(db: Path, run: Run, tmp_path: Path) -> None:
    _conflicting_merge(run)
    dump = tmp_path / "db.replica"
    out = run.ok("export", str(dump))
    exported = run.json("export", str(tmp_path / "again.replica"))
    assert re.match(rf"exported {exported['nodes']} nodes \(.*\) to {re.escape(str(dump))}", out)
    copy = tmp_path / "copy"
    imported = run.json("--db", str(copy), "import", str(dump))
    assert imported["nodes"] == exported["nodes"]
    for q in (
        NAMES_AGES,
        "[:find ?a ?v :where [?c :conflict/attribute ?a] [?c :conflict/winner ?v]]",
    ):
        assert _query(run, q, "--db", str(copy)) == _query(run, q)
    assert run.json("--db", str(copy), "log") == run.json("log")
    assert run.json("--db", str(copy), "branch") == run.json("branch")
    # the import target must be empty
    line = run.fails(1, "--db", str(copy), "import", str(dump))
    assert "already holds a database" in line
    line = run.fails(2, "--db", str(tmp_path / "c2"), "import", str(tmp_path / "nope"))
    assert line.startswith("replica import: error: no export file")


@pytest.mark.timeout(60)
def test_gc_and_verify(db: Path, run: Run) -> None:
    # a linear history: genesis, schema, people
    v = run.json("verify")
    assert v["main"]["commits"] == 3
    report = run.json("gc", "--grace", "0")
    assert report == {"reachable": v["main"]["nodes"], "deleted": 0, "kept_in_grace": 0}
    # a branch's own commit becomes garbage once the branch is deleted
    run.ok("branch", "tmp")
    run.ok("--branch", "tmp", "transact", "--data", '[{:person/name "Tmp" :person/age 1}]')
    run.ok("branch", "-d", "tmp")
    out = run.ok("gc", "--grace", "0")
    m = re.match(r"gc: ([\d,]+) nodes reachable, ([\d,]+) deleted, 0 kept", out)
    assert m and int(m[1].replace(",", "")) == v["main"]["nodes"] and int(m[2]) > 0
    out = run.ok("verify")
    assert re.match(rf"ok: branch main: 3 commits, {v['main']['nodes']} nodes, ", out)
    assert _query(run, NAMES_AGES) == [["Ivan", 15], ["Petr", 30]]
    run.ok("branch", "exp")
    assert set(run.json("verify", "--all")) == {"exp", "main"}


@pytest.mark.timeout(60)
def test_progress_only_when_asked(db: Path, run: Run, tmp_path: Path) -> None:
    code, out, err = run("export", str(tmp_path / "a.replica"))
    assert code == 0 and err == ""  # stderr is not a terminal here
    code, out, err = run("export", str(tmp_path / "b.replica"), "--progress")
    assert code == 0 and "\r" in err and "export" in err and out.startswith("exported ")
    assert err.endswith("\r") and err.replace("\r", "").strip() != ""  # cleared at the end


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_errors_are_one_line(db: Path, run: Run, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    line = run.fails(1, "--db", str(missing), "query", NAMES_AGES)
    assert line.startswith(f"replica: error: no database at {missing.as_uri()}")
    assert not missing.exists()  # a mistyped path is not created
    line = run.fails(1, "query", "[:find ?n :where [?e :person/name ?n]")
    assert line.startswith("replica: error: EDN: unexpected end of input")
    line = run.fails(1, "transact", stdin='[{:person/name "x"')
    assert line.startswith("replica: error: bad EDN in <stdin>: ")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"person/name": }]')
    assert run.fails(1, "transact", str(bad)).startswith("replica: error: bad JSON in ")
    line = run.fails(1, "--branch", "nope", "query", NAMES_AGES)
    assert line == "replica: error: no branch named 'nope'"
    assert run.fails(1, "diff", "main", "nope").startswith("replica: error: 'nope' names no branch")
    assert run.fails(1, "show", "abcdef12").startswith("replica: error: 'abcdef12' names no")
    assert "unknown attribute" in run.fails(1, "transact", "--data", '[{:person/nam "x"}]')
    # usage errors: exit 2
    assert run.fails(2, "bogus").startswith("replica: error: argument VERB: invalid choice")
    assert run.fails(2, "query").startswith("replica query: error: the following arguments")
    assert "takes 1 value" in run.fails(
        2, "query", "[:find ?a :in $ ?n :where [?e :person/name ?n] [?e :person/age ?a]]"
    )
    assert "no tx data file" in run.fails(2, "transact", str(tmp_path / "none.edn"))
    assert run.fails(2, "sync", "http://example.com").startswith("replica sync: error: peer URL")
    code, _, err = run("--db", "", "log")
    assert code == 2 and "REPLICA_DB" in err


@pytest.mark.timeout(60)
def test_sync_with_what_is_not_a_peer(db: Path, run: Run) -> None:
    """A server that answers, but not as a websocket peer: one line, exit 1."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(5)
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        line = run.fails(1, "sync", f"ws://127.0.0.1:{port}", "--timeout", "20")
        assert line.startswith("replica: error: ")
        assert line.count(f"ws://127.0.0.1:{port}") == 1  # said once, however it is wrapped
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@pytest.mark.timeout(60)
def test_help_on_every_verb(run: Run) -> None:
    code, out, _ = run("--help")
    assert code == 0 and "examples:" in out
    for verb in cli.COMMANDS:
        code, out, _ = run(verb, "--help")
        assert code == 0, verb
        assert "examples:" in out and f"replica {verb}" in out, verb


@pytest.mark.timeout(60)
def test_global_options_env_and_position(
    db: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    run.ok("branch", "exp")
    run.ok("--branch", "exp", "transact", "--data", '[{:person/name "Ivan" :person/age 99}]')
    monkeypatch.setenv("REPLICA_BRANCH", "exp")
    assert _query(run, IVAN_AGE) == 99
    assert _query(run, IVAN_AGE, "--branch", "main") == 15  # after the verb beats the env
    monkeypatch.delenv("REPLICA_DB")
    url = db.as_uri()
    assert run.json("--db", url, "--branch", "main", "query", IVAN_AGE) == 15
    assert cli.db_url("relative/x") == (Path.cwd() / "relative" / "x").as_uri()
    assert (
        cli.db_url("s3://bucket/p?endpoint_url=http://h:1")
        == "s3://bucket/p?endpoint_url=http://h:1"
    )


# -- pure parts: the graph, progress, JSON input ----------------------------------------------


def _drawn(commits: list[tuple[str, list[str]]]) -> list[str]:
    return [f"{text:<8}{cid or ''}".rstrip() for text, cid in cli.graph_lines(commits)]


def test_graph_linear_and_merge() -> None:
    assert _drawn([("c", ["b"]), ("b", ["a"]), ("a", [])]) == [
        "*       c",
        "*       b",
        "*       a",
    ]
    assert _drawn([("m", ["x", "y"]), ("y", ["a"]), ("x", ["a"]), ("a", [])]) == [
        "*       m",
        "|\\",
        "| *     y",
        "* |     x",
        "|/",
        "*       a",
    ]


def test_graph_octopus_heads_and_crossing() -> None:
    # three heads merged at once (a sync of three peers), git's "*-." drawing
    assert _drawn(
        [("m", ["a", "b", "c"]), ("c", ["g"]), ("b", ["g"]), ("a", ["g"]), ("g", [])]
    ) == [
        "*-.     m",
        "|\\ \\",
        "| | *   c",
        "| * |   b",
        "* | |   a",
        "|/ /",
        "|/",
        "*       g",
    ]
    # two unmerged heads, and a lane that crosses another to join its parent
    assert _drawn([("h1", ["a"]), ("h2", ["b"]), ("h3", ["a"]), ("a", ["b"]), ("b", [])]) == [
        "*       h1",
        "| *     h2",
        "| | *   h3",
        "|_|/",
        "* |     a",
        "|/",
        "*       b",
    ]


def test_render_progress() -> None:
    line = cli.render_progress(
        "import", 50, 2.0, total=200, nbytes=1_000_000, total_bytes=4_000_000
    )
    assert line.startswith("import  [#####...............]  25%  50/200 nodes  1.0 MB")
    assert "25 nodes/s" in line and "500.0 KB/s" in line and "ETA 0:06" in line
    line = cli.render_progress("clone", 1234, 10.0)
    assert line == "clone  1,234 nodes  123 nodes/s  0:10 elapsed"
    stream = io.StringIO()
    p = cli.Progress("x", enabled=True, total=10, stream=stream)
    p.update(5, force=True)
    p.close()
    assert stream.getvalue().startswith("\rx  [##########..........]  50%  5/10 nodes")
    assert stream.getvalue().endswith("\r")
    quiet = io.StringIO()
    q = cli.Progress("x", enabled=False, stream=quiet)
    q.update(5, force=True)
    q.close()
    assert quiet.getvalue() == ""


def test_json_input_mapping() -> None:
    import datetime as dt
    import uuid

    from replica import Keyword

    data = cli.from_json(
        [
            {
                "a/t": {"#inst": "2024-05-01T10:00:00+02:00"},
                "a/u": {"#uuid": str(uuid.UUID(int=1))},
                "a/k": {"#keyword": ":x/y"},
                "a/r": {"#lookup": ["a/id", 1]},
                "a/s": {"#set": [1, 2]},
                "plain": {"x": 1},
            }
        ]
    )
    (m,) = data
    assert m["a/t"] == dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)
    assert m["a/u"] == uuid.UUID(int=1)
    assert m["a/k"] == Keyword("x/y") and isinstance(m["a/k"], Keyword)
    assert m["a/r"] == ("a/id", 1) and m["a/s"] == frozenset({1, 2}) and m["plain"] == {"x": 1}
    assert cli.parse_data("[{:a/b 1}]", "x") == [{Keyword("a/b"): 1}]
    assert cli.parse_data('[["db/add", -1, "a/b", null]]', "x") == [["db/add", -1, "a/b", None]]


# -- real subprocesses ------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICA_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _replica(
    *argv: str, cwd: Path, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replica", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=_env(**env),
    )


@pytest.mark.timeout(120)
def test_subprocess_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "schema.edn").write_text(SCHEMA_EDN)
    p = _replica("--db", "db", "init", "--schema", "schema.edn", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    p = _replica("transact", cwd=tmp_path, stdin=PEOPLE_EDN, REPLICA_DB="db")
    assert p.returncode == 0 and ", 5 datoms" in p.stdout, p.stderr
    p = _replica("query", NAMES_AGES, "--json", cwd=tmp_path, REPLICA_DB=str(tmp_path / "db"))
    assert p.returncode == 0 and json.loads(p.stdout) == [["Ivan", 15], ["Petr", 30]]
    # errors: one line on stderr, the right exit code, no traceback
    for argv, code, start in [
        (("--db", "nowhere", "log"), 1, "replica: error: no database at "),
        (("--db", "db", "query", "[:find"), 1, "replica: error: EDN: "),
        (("--db", "db", "--branch", "nope", "log"), 1, "replica: error: no branch named 'nope'"),
        (("--db", "db", "frobnicate"), 2, "replica: error: argument VERB"),
    ]:
        p = _replica(*argv, cwd=tmp_path)
        assert p.returncode == code, (argv, p.stderr)
        assert p.stderr.startswith(start) and len(p.stderr.splitlines()) == 1, p.stderr
        assert p.stdout == ""


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sel.select(timeout=0.2):
                return proc.stdout.readline()
            if proc.poll() is not None:
                break
    finally:
        sel.close()
    err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
    raise AssertionError(f"replica serve said nothing in {timeout} s: {err}")


@contextlib.contextmanager
def _serving(db: Path, cwd: Path, *extra: str) -> Iterator[str]:
    """``replica serve`` on ``db`` as a subprocess, on a free port: yields its URL; stops it
    with SIGTERM at the end, which must exit 0 with a summary."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "replica", "--db", str(db), "serve", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=_env(),
    )
    try:
        line = _read_line(proc, 30)
        m = re.search(r"on (wss?://127\.0\.0\.1:\d+) \(branches: ", line)
        assert m, line
        yield m[1]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert re.search(r"stopped after \d+ session\(s\)", out), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


@pytest.fixture
def server(db: Path, tmp_path: Path) -> Iterator[str]:
    """``replica serve --token s3cret`` on the db fixture's store: its ws:// URL."""
    with _serving(db, tmp_path, "--token", "s3cret") as url:
        yield url


@pytest.mark.timeout(120)
def test_serve_clone_sync(server: str, db: Path, run: Run, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    stats = run.json("clone", server, str(clone), "--token", "s3cret", "--timeout", "30")
    assert stats["db"] == clone.as_uri()
    assert stats["statistics"]["nodes_received"] > 0 and stats["statistics"]["nodes_sent"] == 0
    ours = _query(run, NAMES_AGES)
    assert _query(run, NAMES_AGES, "--db", str(clone)) == ours == [["Ivan", 15], ["Petr", 30]]
    assert run.json("--db", str(clone), "log") == run.json("log")
    # the clone writes offline, the server's side writes too, then one sync: both converge
    run.ok("--db", str(clone), "transact", "--data", '[{:person/name "Zoe" :person/age 7}]')
    run.ok("transact", "--data", '[{:person/name "Ivan" :person/age 16}]')
    out = run.ok("--db", str(clone), "sync", server, "--token", "s3cret", "--timeout", "30")
    assert re.search(r"synced with ws://127\.0\.0\.1:\d+ in [\d.]+ s: \d+ round trip", out)
    rows = _table(out.split("\n\n")[0])
    assert rows[0][0] == "received" and rows[1][0] == "sent" and int(rows[1][1]) > 0
    both = [["Ivan", 16], ["Petr", 30], ["Zoe", 7]]
    assert _query(run, NAMES_AGES, "--db", str(clone)) == both
    assert run.json("--db", str(clone), "branch") == run.json("branch")
    assert _query(run, NAMES_AGES) == both
    # a second sync has nothing to move
    again = run.json("--db", str(clone), "sync", server, "--token", "s3cret", "--timeout", "30")
    assert again["statistics"]["nodes_sent"] == again["statistics"]["nodes_received"] == 0
    # a bad token and an unreachable peer: one line, exit 1; a failed clone leaves nothing
    line = run.fails(1, "--db", str(clone), "sync", server, "--token", "wrong", "--timeout", "30")
    assert line.startswith("replica: error: ") and server in line and "HTTP 401" in line
    line = run.fails(1, "clone", server, str(tmp_path / "c2"), "--timeout", "30")
    assert "HTTP 401" in line and not (tmp_path / "c2").exists()
    line = run.fails(1, "--db", str(clone), "sync", "ws://127.0.0.1:1", "--timeout", "30")
    assert line.startswith("replica: error: ") and "ws://127.0.0.1:1 " in line
    assert run.fails(1, "clone", server, str(clone)).endswith("exists and is not empty")
    # the same two failures from a real subprocess
    for argv in (("sync", server, "--token", "wrong"), ("sync", "ws://127.0.0.1:1")):
        p = _replica("--db", str(clone), *argv, "--timeout", "30", cwd=tmp_path)
        assert p.returncode == 1 and p.stdout == "", p.stderr
        assert p.stderr.startswith("replica: error: ") and "ws://127.0.0.1:" in p.stderr
        assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr


@pytest.mark.timeout(120)
def test_serve_tls_and_branches(db: Path, run: Run, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    run.ok("branch", "private")
    run.ok("branch", "shared")
    run.ok("--branch", "shared", "transact", "--data", '[{:person/name "Sam"}]')
    pem = str(tmp_path / "server.pem")
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"reader": "ro", "writer": {"read": ["*"], "write": ["main"]}}))
    tls = ("--cert", pem, "--key", pem)
    with _serving(db, tmp_path, *tls, "--branches", "main,shared", "--tokens", str(tokens)) as url:
        assert url.startswith("wss://")
        clone = tmp_path / "clone"
        ca = ("--cacert", str(tmp_path / "ca.pem"), "--timeout", "30")
        stats = run.json("clone", url, str(clone), "--token", "reader", *ca)
        # only the branches served
        assert sorted(stats["branches"]) == ["main", "shared"]
        assert _query(run, NAMES_AGES, "--db", str(clone)) == [["Ivan", 15], ["Petr", 30]]
        # a reader may not send its commits; a writer may
        run.ok("--db", str(clone), "transact", "--data", '[{:person/name "Rea" :person/age 5}]')
        line = run.fails(1, "--db", str(clone), "sync", url, "--token", "reader", *ca)
        assert line.startswith("replica: error: ") and "read-only" in line
        run.ok("--db", str(clone), "sync", url, "--token", "writer", *ca)
        assert ["Rea", 5] in _query(run, NAMES_AGES)
        # without the CA the certificate is not trusted: one line, exit 1, nothing left
        line = run.fails(1, "clone", url, str(tmp_path / "c2"), "--token", "reader")
        assert line.startswith("replica: error: ") and url in line and "CERTIFICATE" in line
        assert not (tmp_path / "c2").exists()


@pytest.mark.timeout(60)
def test_clone_two_branches_on_one_commit(db: Path, run: Run, tmp_path: Path) -> None:
    run.ok("branch", "exp")  # main and exp: the same head; "exp" sorts before "main"
    with _serving(db, tmp_path) as url:
        stats = run.json("clone", url, str(tmp_path / "clone"), "--timeout", "5")
    assert sorted(stats["branches"]) == ["exp", "main"]
