"""Imports flow one way: store <- query <- replica <- sync (DESIGN.md section 1).

Reads every module's import statements (not executing them) and fails naming the file and the
forbidden import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RANK = {"store": 0, "query": 1, "replica": 2, "sync": 3}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def test_imports_flow_one_way() -> None:
    bad = []
    checked = 0
    for package, rank in RANK.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            checked += 1
            for name in _imports(path):
                top = name.split(".")[0]
                if top in RANK and RANK[top] > rank:
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert checked > 5
    assert not bad, "imports against the layering: " + "; ".join(bad)


def test_layering_check_detects_violation(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import sync.protocol\nfrom replica import x\n")
    assert _imports(sample) == ["sync.protocol", "replica"]
