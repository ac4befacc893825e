"""The README's code runs as written (with its file path pointed at a temp dir)."""

from __future__ import annotations

import re
from pathlib import Path

import anyio

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_first_screen_has_the_two_commands() -> None:
    head = README.read_text().splitlines()[:20]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_readme_python_example_runs(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    code = next(b for b in blocks if "/tmp/replica-taste" in b).replace("/tmp/replica-taste", str(tmp_path / "taste"))
    code = code.replace("anyio.run(main)", "")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    anyio.run(namespace["main"])  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "[(b'b', b'2'), (b'c', b'3')]" in out
    assert "new nodes to ship" in out


def test_readme_database_example_runs(capsys) -> None:  # type: ignore[no-untyped-def]
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(b for b in blocks if "replica.connect" in b).replace("anyio.run(main)", "")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    anyio.run(namespace["main"])  # type: ignore[arg-type]
    out = capsys.readouterr().out.split("\n")
    assert out[:5] == ["[16]", "[15]", "3", "16", "[15]"]
    # pull keys are the pattern's keywords (a Keyword is a str: == "person/name")
    assert out[5] == "{Keyword('person/name'): 'Ivan', Keyword('person/age'): 16}"
