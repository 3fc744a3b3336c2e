"""`cegppo-train sweep`: every grid point and seed trains, then plots and a summary; finished runs are skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _trainer_helpers import TINY, read_rows
from cegppo.trainer._cli import main
from cegppo.trainer.sweep import parse_grid


def test_sweep_cli_runs_the_grid_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if not isinstance(v, bool)]
    argv = ["sweep", "--grid", "0,0; 1,1", "--seeds", "1,2", *flags, "--total-steps", "2", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == ["bl0_bh0_s1", "bl0_bh0_s2", "bl1_bh1_s1", "bl1_bh1_s2"]
    for run in runs:
        config = json.loads((out / run / "config.json").read_text())
        assert config["cegppo"]["beta_low"] == config["cegppo"]["beta_high"] == float(run[2])
        assert [r["step"] for r in read_rows(out / run)] == [1, 2]
    # same seed, same first rollout whatever the betas; different seeds, different prompts
    assert read_rows(out / "bl0_bh0_s1")[0]["reward"] == read_rows(out / "bl1_bh1_s1")[0]["reward"]
    assert read_rows(out / "bl0_bh0_s1")[0]["entropy"] != read_rows(out / "bl0_bh0_s2")[0]["entropy"]

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["β_low=0, β_high=0", "β_low=1, β_high=1"]
    assert summary["β_low=0, β_high=0"]["reward"]["first"] == pytest.approx(
        (read_rows(out / "bl0_bh0_s1")[0]["reward"] + read_rows(out / "bl0_bh0_s2")[0]["reward"]) / 2
    )
    table = (out / "summary.md").read_text()
    assert table.count("\n") == 4 and "β_low=1, β_high=1" in table
    for png in ("sweep.png", "sweep_dH.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

    # a second call skips the finished runs (no training: the metrics files are untouched)
    before = {run: (out / run / "metrics.jsonl").stat().st_mtime_ns for run in runs}
    capsys.readouterr()
    assert main(argv) == 0
    assert "sweep: beta_low" not in capsys.readouterr().out
    assert before == {run: (out / run / "metrics.jsonl").stat().st_mtime_ns for run in runs}


@pytest.mark.parametrize(("text", "message"), [("0,0;1", "not 'beta_low,beta_high'"), ("-1,0", ">= 0"), (";", "empty")])
def test_parse_grid_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_grid(text)
    assert parse_grid("0,0; 0.5,1;") == [(0.0, 0.0), (0.5, 1.0)]
