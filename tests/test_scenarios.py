"""The three user scenarios (scenarios/), small versions, each in its own OS processes.

Each scenario asserts its own outcome (convergence on one root hash, every acknowledged
write present, the conflicts recorded); these tests run them as a user would,
``python -m scenarios.NAME``, and check the exit status and the story's last lines.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_scenario(*args: str, seconds: float) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=seconds,
        check=False,
    )
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.timeout(240)
def test_iot_fleet() -> None:
    out = run_scenario("scenarios.iot_fleet", "--edges", "3", "--readings", "30", seconds=230)
    assert "all equal: True" in out
    for i in range(3):
        assert f"dev-{i}: 30 readings" in out


@pytest.mark.timeout(180)
def test_laptops_mesh() -> None:
    out = run_scenario("scenarios.laptops_mesh", seconds=170)
    assert "1 distinct root hash(es)" in out
    assert "unique-identity" in out and "update-wins-over-retraction" in out


@pytest.mark.timeout(180)
def test_desktop_app() -> None:
    out = run_scenario("scenarios.desktop_app", "--notes", "150", seconds=170)
    assert "acknowledged but missing: 0" in out
    assert "killed with SIGKILL" in out
