"""The README's first command runs and tells the story it promises (a small version)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.timeout(120)
def test_demo_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        [sys.executable, "-m", "replica", "demo", "--items", "5000", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "same root hash: True" in out
    assert "contents intact: True" in out
    assert (tmp_path / "peer-a").is_dir()
