"""The README's tours run as written (Python block executed; shell block run line by line)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

TOUR_SCHEMA = """[{:db/ident :task/id :db/valueType :db.type/string :db/unique :db.unique/identity}
 {:db/ident :task/title :db/valueType :db.type/string}
 {:db/ident :task/tags :db/valueType :db.type/keyword :db/cardinality :db.cardinality/many}]"""


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", README.read_text(), re.S)


def test_readme_first_screen_has_the_two_commands() -> None:
    head = README.read_text().splitlines()[:20]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


@pytest.mark.timeout(60)
def test_python_tour_runs(capsys: pytest.CaptureFixture[str]) -> None:
    (code,) = [b for b in _blocks("python") if "replica.connect(" in b]
    namespace: dict[str, object] = {}
    exec(compile(code.replace("anyio.run(main)", ""), "README.md", "exec"), namespace)
    anyio.run(namespace["main"])  # type: ignore[arg-type]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "buy bread"
    assert "buy bread" in out[1] and "home" in out[1]
    assert out[2] == "3"
    assert out[3] == "True"
    assert out[4].startswith("task/title buy bread -> ") and out[4].endswith("(lww)")
    assert out[4].split(" -> ")[1].split(" (")[0] in ("buy oat milk", "buy soy milk")
    assert out[-1] == "buy milk"


@pytest.mark.timeout(180)
def test_cli_tour_runs(tmp_path: Path) -> None:
    (block,) = [b for b in _blocks("sh") if "REPLICA_DB" in b]
    (tmp_path / "tour-schema.edn").write_text(TOUR_SCHEMA)
    env = dict(os.environ)
    outputs = []
    for line in block.strip().splitlines():
        line = line.replace("/tmp/replica-tour", str(tmp_path))
        if line.startswith("export "):
            name, value = line[len("export ") :].split("=", 1)
            env[name] = value
            continue
        argv = shlex.split(line)
        assert argv[0] == "replica", line
        proc = subprocess.run(
            [sys.executable, "-m", "replica", *argv[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        outputs.append(proc.stdout)
    text = "\n".join(outputs)
    assert "buy milk" in text
    assert (tmp_path / "backup.replica").exists()
