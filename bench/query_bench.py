"""Query, pull and rule benchmarks (issue 4), with DataScript-JS in the same run.

    .venv/bin/python bench/query_bench.py [--quick] [--only q1 q4 ...] [--stores mem,file]
                                          [--no-reference] [--json bench/results/query_bench.json]

The same databases and operations as the reference (../shared/bench/datascript/bench.js, run by
Node on DataScript 1.8.1 installed with ``npm install --no-save --prefix bench/.datascript
datascript@1.8.1``) on the same people20k data: db100k (5 attributes of 20k people, entity id =
person id), its ``-idx`` variant (``db/index`` on the 5 attributes), the full people db
(full-name, alias, follows), and the wide / long trees of ``follows`` for rules and recursive
pulls. Methodology as bench.js: warm up, then samples that each run the operation until the
sample time is used up; the figure is the median ms per operation. ``--quick`` uses bench.js's
``QUICK=1`` times (0.2 s warm-up, 3 samples of 0.1 s) on both sides.

The benchmarks run one at a time on every engine back to back (DataScript, then replica on
each store), so that each ratio compares figures taken within seconds of each other, also when
the machine's load changes. Each database is loaded into each store (``mem://`` and a
``file://`` temp dir) when first needed, then opened again by a fresh connection, so the file
figures are those of a warm node cache read from disk, not of the cache the writes left. Every result size is checked against DataScript's; a query whose size differs
is reported as MISMATCH and the exit status is 1. Targets (issue 4): replica/DataScript <= 0.5
on the memory store, <= 0.75 (1.5x that) on the file store.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

import replica

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "people20k.json"
SHARED = ROOT.parent / "shared" / "bench"
DEFAULT_JSON = ROOT / "bench" / "results" / "query_bench.json"
A5 = ["name", "last-name", "sex", "age", "salary"]
TARGET_MEM = 0.5
TARGET_FILE = 0.75

_STR, _LONG, _REF = "db.type/string", "db.type/long", "db.type/ref"
#: every attribute of every benchmark database: (value type, cardinality many)
ATTRS: dict[str, tuple[str, bool]] = {
    "id": (_LONG, False),
    "name": (_STR, False),
    "last-name": (_STR, False),
    "full-name": (_STR, False),
    "alias": (_STR, True),
    "sex": (_STR, False),
    "age": (_LONG, False),
    "salary": (_LONG, False),
    "follows": (_REF, True),
}


def schema(index: bool = False) -> list[dict[str, Any]]:
    """bench.js's SCHEMA (``id`` unique identity, ``follows`` ref many, ``alias`` many) with a
    value type for every attribute; ``index`` adds ``db/index`` on the 5 person attributes
    (bench.js's SCHEMA_IDX)."""
    out: list[dict[str, Any]] = []
    for ident, (value_type, many) in ATTRS.items():
        attr: dict[str, Any] = {
            "db/ident": ident,
            "db/valueType": value_type,
            "db/cardinality": "db.cardinality/many" if many else "db.cardinality/one",
        }
        if ident == "id":
            attr["db/unique"] = "db.unique/identity"
        if index and ident in A5:
            attr["db/index"] = True
        out.append(attr)
    return out


# ------------------------------------------------------------------------------------- data


def people() -> list[dict[str, Any]]:
    if not DATA.exists():
        DATA.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, str(SHARED / "gen_people.py"), "--out", str(DATA)], check=True
        )
    result: list[dict[str, Any]] = json.loads(DATA.read_text())["people"]
    return result


class Data:
    """The entity lists of bench.js (ents5, entsFull, wideEnts, longEnts) as replica tx data."""

    def __init__(self, ppl: list[dict[str, Any]]) -> None:
        self.people = ppl
        self.by_id = {p["id"]: p for p in ppl}
        self.pull_ids = [p["id"] for p in ppl[:1000]]

    def ents5(self) -> list[dict[str, Any]]:
        return [{"db/id": p["id"], **{a: p[a] for a in A5}} for p in self.people]

    def ents_full(self) -> list[dict[str, Any]]:
        out = []
        for p in self.people:
            e = {"db/id": p["id"], **self.person(p["id"])}
            if "follows" in p:
                e["follows"] = [p["follows"]]
            out.append(e)
        return out

    def person(self, eid: int) -> dict[str, Any]:
        """Tree node attributes borrowed from person ``eid`` (bench.js ``person``). An empty
        alias list is left out: in DataScript it adds no datom either."""
        p = self.by_id[eid]
        out = {a: p[a] for a in ("name", "last-name", "full-name", "sex", "age", "salary")}
        if p["alias"]:
            out["alias"] = list(p["alias"])
        return out

    def wide(self, eid: int, depth: int, width: int, out: list[dict[str, Any]]) -> None:
        """wide-db: node ``eid`` has children ``eid * width + k`` (k < width), ``depth``
        levels (bench.js ``wideEnts``)."""
        if depth > 0:
            children = [eid * width + k for k in range(width)]
            out.append({**self.person(eid), "db/id": eid, "id": eid, "follows": children})
            for c in children:
                self.wide(c, depth - 1, width, out)
        else:
            out.append({**self.person(eid), "db/id": eid})

    def wide_ents(self, depth: int, width: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        self.wide(1, depth, width, out)
        return out

    @staticmethod
    def long_ents(depth: int, width: int) -> list[dict[str, Any]]:
        """long-db: ``width`` chains of length ``depth`` (bench.js ``longEnts``)."""
        out: list[dict[str, Any]] = []
        for x in range(width):
            for y in range(depth):
                frm = x * (depth + 1) + y
                to = frm + 1
                out.append({"db/id": frm + 1, "name": "Ivan", "follows": [to + 1]})
                out.append({"db/id": to + 1, "name": "Ivan"})
        return out

    def entities(self, key: str) -> tuple[list[dict[str, Any]], bool]:
        """Tx data of database ``key`` and whether its schema has ``db/index``."""
        if key == "db100k":
            return self.ents5(), False
        if key == "db100k-idx":
            return self.ents5(), True
        if key == "full":
            return self.ents_full(), False
        kind, _, size = key.partition("-")
        depth, width = (int(n) for n in size.split("x"))
        if kind == "wide":
            return self.wide_ents(depth, width), False
        return self.long_ents(depth, width), False


# ------------------------------------------------------------------------------- benchmarks

Q = {
    "q1": '[:find ?e :where [?e "name" "Ivan"]]',
    "q2": '[:find ?e ?a :where [?e "name" "Ivan"] [?e "age" ?a]]',
    "q2-switch": '[:find ?e ?a :where [?e "age" ?a] [?e "name" "Ivan"]]',
    "q3": '[:find ?e ?a :where [?e "name" "Ivan"] [?e "age" ?a] [?e "sex" "male"]]',
    "q4": '[:find ?e ?l ?a :where [?e "name" "Ivan"] [?e "last-name" ?l] [?e "age" ?a]'
    ' [?e "sex" "male"]]',
    "q5-valjoin": '[:find ?e1 ?l ?a :where [?e "name" "Ivan"] [?e "age" ?a] [?e1 "age" ?a]'
    ' [?e1 "last-name" ?l]]',
    "qpred1": '[:find ?e ?s :where [?e "salary" ?s] [(> ?s 50000)]]',
    "qpred2": '[:find ?e ?s :in $ ?min_s :where [?e "salary" ?s] [(> ?s ?min_s)]]',
}
QARGS: dict[str, list[Any]] = {"qpred2": [50000]}
RULES = '[[(follows ?x ?y) [?x "follows" ?y]] [(follows ?x ?y) [?x "follows" ?t] (follows ?t ?y)]]'
RULE_Q = "[:find ?e ?e2 :in $ % :where (follows ?e ?e2)]"
RULE_DBS = ["wide-3x3", "wide-5x3", "wide-7x3", "wide-4x6", "long-10x3", "long-30x3", "long-30x5"]
PULL_5 = "[:name :last-name :sex :age :salary]"
PULL_WILD = "[*]"
PULL_ONE = "[:name {:follows ...}]"
PULL_MANY = "[:db/id :last-name :alias :sex :age :salary {:follows ...}]"
PULL_WILD_REC = "[* {:follows ...}]"

Op = Callable[[replica.DB], Awaitable[int]]


def to_json(value: Any) -> str:
    """Compact JSON of a pull result, as bench.js's ``JSON.stringify``."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


_DB_ID_ENTRY = re.compile(r'"db/id":\d+,?')


def as_datascript_js(name: str, text: str) -> str:
    """The JSON of a recursive pull as DataScript's JS API gives it for bench.js's pattern.
    Its JS pull keys ``db/id`` as ``":db/id"``, and the string ``":db/id"`` in a pattern names
    an attribute of that name (absent), so bench.js's pull-many shows no entity ids at all."""
    if name == "pull-many":
        return _DB_ID_ENTRY.sub("", text).replace(",}", "}")
    if name == "pull-wildcard":
        return text.replace('"db/id":', '":db/id":')
    return text


@dataclass(frozen=True)
class Bench:
    name: str
    db: str  # which database: db100k, db100k-idx, full, wide-4x5, wide-3x3, long-10x3, ...
    make: Callable[[Data], Op]
    info: str
    #: the result size compared with DataScript's, if not the timed operation's value
    check: Callable[[Data], Op] | None = None


def query_op(text: str, args: list[Any]) -> Callable[[Data], Op]:
    def make(data: Data) -> Op:
        async def op(db: replica.DB) -> int:
            return len(await replica.q(text, db, *args))

        return op

    return make


def pull_many_op(pattern: str) -> Callable[[Data], Op]:
    def make(data: Data) -> Op:
        ids = data.pull_ids

        async def op(db: replica.DB) -> int:
            return len(await replica.pull_many(db, pattern, ids))

        return op

    return make


def pull_one_op(pattern: str, convert_as: str | None = None) -> Callable[[Data], Op]:
    """Recursive pull from entity 1; the length of its JSON (``convert_as``: after converting
    the JSON to what DataScript's JS API shows for benchmark ``convert_as``)."""

    def make(data: Data) -> Op:
        async def op(db: replica.DB) -> int:
            text = to_json(await replica.pull(db, pattern, 1))
            return len(as_datascript_js(convert_as, text) if convert_as else text)

        return op

    return make


def entity_op(data: Data) -> Op:
    ids = data.pull_ids

    async def op(db: replica.DB) -> int:
        n = 0
        for eid in ids:
            ent = db.entity(eid)
            n += await ent.get("age") + len(await ent.get("name"))
        return n

    return op


def rules_op(data: Data) -> Op:
    async def op(db: replica.DB) -> int:
        return len(await replica.q(RULE_Q, db, RULES))

    return op


def benchmarks() -> dict[str, Bench]:
    out: dict[str, Bench] = {}
    for suffix, db in (("", "db100k"), ("-idx", "db100k-idx")):
        for name, text in Q.items():
            info = f"{text} ({'db100k with db/index' if suffix else 'db100k'})"
            out[name + suffix] = Bench(name + suffix, db, query_op(text, QARGS.get(name, [])), info)
    out["pull-1000"] = Bench(
        "pull-1000", "db100k", pull_many_op(PULL_5), "pull_many 1000 entities x 5 attrs (db100k)"
    )
    out["pull-1000-wildcard"] = Bench(
        "pull-1000-wildcard", "full", pull_many_op(PULL_WILD), "pull_many 1000 entities [*] (full)"
    )
    out["pull-1000-entity"] = Bench(
        "pull-1000-entity", "db100k", entity_op, "1000 x db.entity + 2 attribute gets"
    )
    for name, pattern in (
        ("pull-one", PULL_ONE),
        ("pull-many", PULL_MANY),
        ("pull-wildcard", PULL_WILD_REC),
    ):
        info = f"recursive pull {pattern} from the root of wide-db 4x5 (781 entities)"
        op, check = pull_one_op(pattern), pull_one_op(pattern, name)
        out[name] = Bench(name, "wide-4x5", op, info, check=check)
    for key in RULE_DBS:
        info = f"recursive follows closure, {key}"
        out["rules-" + key] = Bench("rules-" + key, key, rules_op, info)
    return out


DEFAULT_ORDER = [
    *Q,
    *(name + "-idx" for name in Q),
    "pull-1000",
    "pull-1000-wildcard",
    "pull-1000-entity",
    "pull-one",
    "pull-many",
    "pull-wildcard",
    *("rules-" + key for key in RULE_DBS),
]


# ---------------------------------------------------------------------------------- harness


@dataclass(frozen=True)
class Timing:
    warmup_ms: float
    sample_ms: float
    samples: int


async def measure(op: Op, db: replica.DB, timing: Timing) -> dict[str, Any]:
    """bench.js ``measure``: warm up, then ``samples`` samples of >= ``sample_ms`` each (at
    least one operation), mean ms per operation in each; the median sample is the figure."""
    now = time.perf_counter
    w0 = now()
    while True:
        await op(db)
        if (now() - w0) * 1000 >= timing.warmup_ms:
            break
    samples: list[float] = []
    for _ in range(timing.samples):
        t0 = now()
        n = 0
        while True:
            await op(db)
            n += 1
            t = now()
            if (t - t0) * 1000 >= timing.sample_ms:
                break
        samples.append((t - t0) * 1000 / n)
    return {
        "median_ms": statistics.median(samples),
        "min_ms": min(samples),
        "max_ms": max(samples),
        "samples_ms": samples,
    }


def run_datascript(names: list[str], quick: bool) -> dict[str, Any]:
    """bench.js on Node for ``names``; its OUT report (``benches`` plus the engine line)."""
    mods = ROOT / "bench" / ".datascript" / "node_modules"
    if not (mods / "datascript").exists():
        subprocess.run(
            ["npm", "install", "--no-save", "--prefix", str(mods.parent), "datascript@1.8.1"],
            check=True,
            capture_output=True,
        )
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = dict(os.environ, PEOPLE_JSON=str(DATA), NODE_PATH=str(mods), OUT=out.name)
        if quick:
            env["QUICK"] = "1"
        proc = subprocess.run(
            ["node", str(SHARED / "datascript" / "bench.js"), *names],
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"DataScript bench.js failed with exit status {proc.returncode}")
        result: dict[str, Any] = json.loads(Path(out.name).read_text())
        return result


def store_url(kind: str, tmp: Path, key: str) -> str:
    if kind == "mem":
        return f"mem://query-bench-{os.getpid()}-{key}-{time.monotonic_ns()}"
    return (tmp / f"{key}-{time.monotonic_ns()}").as_uri()


async def load(url: str, data: Data, key: str) -> tuple[float, int]:
    """Create the database ``key`` at ``url`` in one transaction; (seconds, datoms)."""
    ents, index = data.entities(key)
    async with replica.connect(url, create=True, schema=schema(index)) as conn:
        t0 = time.perf_counter()
        report = await conn.transact(ents)
        return time.perf_counter() - t0, len(report.tx_data)


class StoreRun:
    """The benchmarks on one kind of store: each database a benchmark needs is loaded into a
    ``kind`` store when first needed, then opened again with a fresh connection (so a file
    store is read from disk into a cold node cache, warmed by the warm-up), and closed once no
    later benchmark needs it."""

    def __init__(self, kind: str, data: Data, cache_mb: int, tmp: Path) -> None:
        self.kind = kind
        self.data = data
        self.cache_mb = cache_mb
        self.tmp = tmp
        self.out: dict[str, Any] = {"load": {}, "benches": {}}
        self.conns: dict[str, tuple[str, replica.Connection]] = {}

    async def db(self, key: str) -> replica.DB:
        if key not in self.conns:
            url = store_url(self.kind, self.tmp, key)
            took, datoms = await load(url, self.data, key)
            self.out["load"][key] = {"seconds": took, "tx_datoms": datoms}
            print(
                f"  {self.kind}: loaded {key}: {datoms} datoms (tx included) in {took:.2f} s",
                file=sys.stderr,
            )
            conn = await replica.connect(url, cache_bytes=self.cache_mb << 20)
            self.conns[key] = (url, conn)
        return self.conns[key][1].db

    async def run(self, b: Bench, timing: Timing) -> None:
        op = b.make(self.data)
        db = await self.db(b.db)
        try:
            size = await (b.check(self.data) if b.check else op)(db)
            r = await measure(op, db, timing)
        except Exception as exc:
            self.out["benches"][b.name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"  {self.kind}: {b.name}: ERROR {type(exc).__name__}: {exc}", file=sys.stderr)
            return
        r["result"] = size
        self.out["benches"][b.name] = r
        print(
            f"  {self.kind}: {b.name:<20} {r['median_ms']:10.3f} ms  result={size}",
            file=sys.stderr,
            flush=True,
        )

    async def drop(self, keep: set[str]) -> None:
        """Close the databases not in ``keep``."""
        for key in [k for k in self.conns if k not in keep]:
            url, conn = self.conns.pop(key)
            await conn.aclose()
            if self.kind == "mem":  # named memory stores live as long as the process
                await replica.delete_database(url)


# ------------------------------------------------------------------------------------ table


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def compare(
    selected: list[Bench], stores: dict[str, Any], ds: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per benchmark with ratios and result checks; the list of problems (result
    size mismatches and errors) that make the run fail."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for b in selected:
        row: dict[str, Any] = {"name": b.name, "info": b.info}
        ref = ds.get(b.name)
        ds_ms = ref["median_ms"] if ref else None
        ds_size = ref["result"] if ref else None
        row["datascript_ms"] = ds_ms
        row["datascript_result"] = ds_size
        notes: list[str] = []
        sizes: dict[str, int] = {}
        for kind, rep in stores.items():
            r = rep["benches"].get(b.name, {})
            if "error" in r:
                problems.append(f"{b.name} ({kind}): {r['error']}")
                notes.append(f"ERROR({kind})")
                row[f"{kind}_error"] = r["error"]
                continue
            row[f"{kind}_ms"] = r["median_ms"]
            row[f"{kind}_min_ms"] = r["min_ms"]
            row[f"{kind}_max_ms"] = r["max_ms"]
            row[f"{kind}_result"] = r["result"]
            sizes[kind] = r["result"]
            if ds_ms:
                row[f"ratio_{kind}"] = r["median_ms"] / ds_ms
        if len(set(sizes.values())) > 1:
            problems.append(f"{b.name}: result sizes differ between stores {sizes}")
            notes.append("MISMATCH(stores)")
        for kind, size in sizes.items():
            if ds_size is not None and size != ds_size:
                problems.append(f"{b.name} ({kind}): result {size} != DataScript {ds_size}")
                notes.append(f"MISMATCH({kind})")
        ratios = [(row.get("ratio_mem"), TARGET_MEM), (row.get("ratio_file"), TARGET_FILE)]
        checked = [r <= t for r, t in ratios if r is not None]
        if checked:
            row["target_met"] = all(checked)
        row["notes"] = " ".join(dict.fromkeys(notes))
        rows.append(row)
    return rows, problems


def print_table(rows: list[dict[str, Any]], kinds: list[str]) -> None:
    head = ["benchmark"]
    head += [f"replica {k} ms" for k in kinds]
    head += ["DataScript ms"]
    head += [f"{k}/DS" for k in kinds]
    head += ["result", "DS result", "target", "notes"]
    body: list[list[str]] = []
    for row in rows:
        line = [row["name"]]
        line += [fmt_ms(row.get(f"{k}_ms")) for k in kinds]
        line += [fmt_ms(row.get("datascript_ms"))]
        line += [fmt_ratio(row.get(f"ratio_{k}")) for k in kinds]
        results = {str(row[f"{k}_result"]) for k in kinds if f"{k}_result" in row}
        line += ["/".join(sorted(results)) or "-"]
        ds_result = row.get("datascript_result")
        line += ["-" if ds_result is None else str(ds_result)]
        met = row.get("target_met")
        line += ["-" if met is None else "met" if met else "no"]
        line += [row.get("notes", "")]
        body.append(line)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    numeric = set(range(1, len(head) - 2))

    def render(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    print(render(head))
    print(render(["-" * w for w in widths]))
    for line in body:
        print(render(line))


# ------------------------------------------------------------------------------------- main


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    all_benches = benchmarks()
    names = args.only or DEFAULT_ORDER
    unknown = [n for n in names if n not in all_benches]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {' '.join(DEFAULT_ORDER)}")
    selected = [all_benches[n] for n in names]
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    if not kinds or any(k not in ("mem", "file") for k in kinds):
        raise SystemExit(f"--stores takes mem, file or mem,file (not {args.stores!r})")
    timing = (
        Timing(200, 100, 3) if args.quick else Timing(args.warmup_ms, args.sample_ms, args.samples)
    )
    data = Data(people())
    report: dict[str, Any] = {
        "quick": args.quick,
        "timing": {"warmup_ms": timing.warmup_ms, "sample_ms": timing.sample_ms,
                   "samples": timing.samples},
        "cache_mb": args.cache_mb,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }  # fmt: skip
    ds: dict[str, Any] = {}
    stores: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="replica-querybench-") as tmpdir:
        runs = [StoreRun(kind, data, args.cache_mb, Path(tmpdir)) for kind in kinds]
        try:
            # one benchmark at a time on every engine, back to back: on a machine whose load
            # changes, each ratio compares figures taken within seconds of each other
            for i, b in enumerate(selected):
                print(f"{b.name} ...", file=sys.stderr, flush=True)
                if not args.no_reference:
                    ds_report = run_datascript([b.name], args.quick)
                    ds.update(ds_report["benches"])
                    if "datascript" not in report:
                        report["datascript"] = {
                            k: ds_report.get(k)
                            for k in ("engine", "node", "cpu", "cores", "datoms")
                        }
                    got = ds_report["benches"].get(b.name, {})
                    print(
                        f"  datascript: {b.name:<14} {got.get('median_ms', float('nan')):10.3f}"
                        f" ms  result={got.get('result')}",
                        file=sys.stderr,
                        flush=True,
                    )
                for run in runs:
                    await run.run(b, timing)
                later = {x.db for x in selected[i + 1 :]}
                for run in runs:
                    await run.drop(later)
        finally:
            for run in runs:
                await run.drop(set())
        stores = {run.kind: run.out for run in runs}
    rows, problems = compare(selected, stores, ds)
    report["stores"] = kinds
    report["load"] = {kind: rep["load"] for kind, rep in stores.items()}
    report["benches"] = rows
    report["problems"] = problems
    return report


def print_report(report: dict[str, Any]) -> None:
    timing = report["timing"]
    rows = report["benches"]
    print()
    print(
        f"replica vs {(report.get('datascript') or {}).get('engine', 'DataScript (not run)')}, "
        f"median ms/op ({timing['samples']} samples of >= {timing['sample_ms']:g} ms after "
        f"{timing['warmup_ms']:g} ms warm-up); target: mem/DS <= {TARGET_MEM}, "
        f"file/DS <= {TARGET_FILE}"
    )
    print_table(rows, report["stores"])
    met = [r for r in rows if "target_met" in r]
    if met:
        print(f"\ntarget met by {sum(r['target_met'] for r in met)} of {len(met)} benchmarks")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="bench.js QUICK=1 sampling")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--stores", default="mem,file", help="mem, file or mem,file")
    parser.add_argument("--no-reference", action="store_true", help="skip DataScript")
    parser.add_argument("--warmup-ms", type=float, default=2000)
    parser.add_argument("--sample-ms", type=float, default=1000)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--cache-mb", type=int, default=512, help="node cache per connection")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the report")
    args = parser.parse_args()
    report = anyio.run(main_async, args)
    print_report(report)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report written to {out}")
    if report["problems"]:
        print("\nMISMATCH / ERRORS:", file=sys.stderr)
        for problem in report["problems"]:
            print(f"  {problem}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
