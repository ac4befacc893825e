"""The fleet demo (sync/demo.py, ``replica demo``) converges and tells the truth about it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.demo import EDGES, run_demo


@pytest.mark.timeout(120)
async def test_fleet_demo_converges(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readings = 30
    shown = await run_demo(str(tmp_path), readings=readings)
    heads = shown["heads"]
    assert set(heads) == {"cloud", *EDGES}
    assert len(set(heads.values())) == 1
    # the only conflict: the same device moved to two places at once
    (c,) = shown["conflicts"]
    assert (c.attribute, c.base, c.rule) == ("device/location", "hall", "lww")
    assert {c.ours, c.theirs} == {"roof", "cellar"}
    assert shown["location"] == c.winner
    assert shown["location_before"] == "hall"
    # add and remove of different tags: both happen
    assert shown["tags"] == ["calibrated"]
    # every reading of every edge arrived
    assert sum(n for _, _, n in shown["averages"]) == readings * len(EDGES)
    out = capsys.readouterr().out
    assert "identical: True" in out
    assert (tmp_path / "cloud").is_dir()
