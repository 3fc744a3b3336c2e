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
    argv = ["sweep", "--grid", "0,0; dapo", "--seeds", "1,2", *flags, "--total-steps", "2", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    runs = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("warm_start"))
    assert runs == ["bl0_bh0_s1", "bl0_bh0_s2", "dapo_s1", "dapo_s2"]
    config = {run: json.loads((out / run / "config.json").read_text()) for run in runs}
    assert config["bl0_bh0_s1"]["cegppo"]["beta_low"] == config["bl0_bh0_s1"]["cegppo"]["beta_high"] == 0.0
    assert config["dapo_s1"]["cegppo"]["eps_high"] == 0.28 and config["dapo_s1"]["preset"] == "dapo"
    for run in runs:
        assert [r["step"] for r in read_rows(out / run)] == [1, 2]
        # every grid point of a seed starts from that seed's one warm start
        assert config[run]["warm_start_dir"] == str(out / f"warm_start_s{run[-1]}")
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("warm_start")) == ["warm_start_s1", "warm_start_s2"]
    # same seed, same warm start and first rollout whatever the setting; different seeds, different prompts
    assert read_rows(out / "bl0_bh0_s1")[0]["reward"] == read_rows(out / "dapo_s1")[0]["reward"]
    assert read_rows(out / "bl0_bh0_s1")[0]["entropy"] == read_rows(out / "dapo_s1")[0]["entropy"]
    assert read_rows(out / "bl0_bh0_s1")[0]["entropy"] != read_rows(out / "bl0_bh0_s2")[0]["entropy"]

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["β_low=0, β_high=0", "dapo (β 0/0, ε 0.2/0.28)"]
    first = [read_rows(out / f"bl0_bh0_s{s}")[0]["reward"] for s in (1, 2)]
    assert summary["β_low=0, β_high=0"]["reward"]["first"] == pytest.approx(sum(first) / 2)
    assert summary["β_low=0, β_high=0"]["reward"]["first_per_seed"] == pytest.approx(first)
    assert summary["β_low=0, β_high=0"]["reward"]["first_sd"] == pytest.approx(abs(first[0] - first[1]) / 2**0.5)
    table = (out / "summary.md").read_text()
    assert table.count("\n") == 4 and "dapo (β 0/0, ε 0.2/0.28)" in table
    for png in ("sweep.png", "sweep_dH.png", "sweep_reward.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

    # a second call skips the finished runs (no training: the metrics files are untouched)
    before = {run: (out / run / "metrics.jsonl").stat().st_mtime_ns for run in runs}
    capsys.readouterr()
    assert main(argv) == 0
    assert "sweep: " not in capsys.readouterr().out
    assert before == {run: (out / run / "metrics.jsonl").stat().st_mtime_ns for run in runs}


def test_compare_runs_ppo_and_the_preset_on_one_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if not isinstance(v, bool)]
    assert main(["compare", *flags, "--preset", "gppo", "--seed", "3", "--no-progress", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["gppo_s3", "ppo_s3", "warm_start_s3"]
    assert list(json.loads((out / "summary.json").read_text())) == ["ppo (β 0/0, ε 0.2/0.2)", "gppo (β 1/1, ε 0.2/0.2)"]
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "compare done" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "message"),
    [("0,0;1", "neither 'beta_low,beta_high' nor a preset"), ("-1,0", ">= 0"), (";", "empty"), ("ppo;nope", "nope")],
)
def test_parse_grid_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_grid(text)
    grid = parse_grid("0,0; 0.5,1; ce_gppo_7b;")
    assert [p.name for p in grid] == ["bl0_bh0", "bl0.5_bh1", "ce_gppo_7b"]
    assert dict(grid[1].overrides) == {"beta_low": 0.5, "beta_high": 1.0}
    # a preset point clears the base config's single-value overrides, so the preset is what runs
    assert dict(grid[2].overrides) == {"preset": "ce_gppo_7b", "eps_low": None, "eps_high": None,
                                       "beta_low": None, "beta_high": None, "dual_clip": None}  # fmt: skip
