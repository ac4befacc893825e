"""The README's first command (``replica demo``) runs as a user would and tells its story."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(120)
def test_demo_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "replica", "demo", "--readings", "40", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "identical: True" in out
    assert "device/location" in out and "(lww)" in out
    for peer in ("cloud", "edge-north", "edge-south", "edge-east"):
        assert (tmp_path / peer).is_dir()
