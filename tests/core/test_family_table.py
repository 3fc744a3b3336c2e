"""tools/family_table.py: the family table of docs/experiments.md comes from the runs' metrics.jsonl, paired by seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repo_tools import load_tool

table = load_tool("family_table.py")

KEYS = ("accuracy", "pass_at_g", "entropy", "clip_low_frac", "clip_high_frac", "grad_weight_abs_mean", "ratio_max")


def _rows(n: int, scale: float) -> list[dict[str, float]]:
    """n metrics rows whose every key at step s is scale * s (so window means are easy to tell), half the groups
    with signal but at step 1, which has none."""
    return [{"step": s, **{k: scale * s for k in KEYS}, "groups_with_signal": 0.5 * (s > 1)} for s in range(1, n + 1)]


def _write_runs(root: Path, scales: dict[str, tuple[float, float]], n: int = 12) -> None:
    for name, per_seed in scales.items():
        for seed, scale in zip((1, 2), per_seed, strict=True):
            (root / f"{name}_s{seed}").mkdir(parents=True)
            lines = "".join(json.dumps(r) + "\n" for r in _rows(n, scale))
            (root / f"{name}_s{seed}" / "metrics.jsonl").write_text(lines)


def test_run_figures_are_window_and_whole_run_means() -> None:
    fig = table.run_figures(_rows(12, 1.0), window=10)
    assert fig["accuracy_first"] == pytest.approx(5.5)  # steps 1-10
    assert fig["accuracy_last"] == pytest.approx(7.5)  # steps 3-12
    assert fig["entropy_all"] == pytest.approx(6.5) and fig["grad_weight_abs_mean_all"] == pytest.approx(6.5)
    # |F| per token with a gradient: steps 2-12 (step 1 has no group with signal), each s / 0.5
    assert fig["signal_weight_all"] == pytest.approx(2 * 7.0)
    with pytest.raises(ValueError, match="fewer than the window"):
        table.run_figures(_rows(9, 1.0), window=10)


def test_main_prints_both_tables_and_writes_the_per_seed_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_runs(tmp_path, {"ppo": (1.0, 1.0), "sapo": (2.0, 3.0)})
    out_json = tmp_path / "family.json"
    assert table.main([str(tmp_path), "--rows", "ppo; sapo", "--seeds", "1,2", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    # sapo's last-10 accuracy is 2 * 7.5 and 3 * 7.5: mean 18.75, sd 5.303; minus ppo's 7.5 per seed
    assert "| sapo | 13.750 ± 3.889 -> 18.750 ± 5.303 |" in text
    assert "| sapo | +7.500 / +15.000 (+11.250 ± 5.303) |" in text
    record = json.loads(out_json.read_text())
    assert record["seeds"] == [1, 2] and record["rows"]["sapo"]["2"]["entropy_all"] == pytest.approx(19.5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rows", "ppo;gspo", "--seeds", "1,2"], "gspo_s1, gspo_s2"),
        (["--rows", "sapo", "--seeds", "1,2"], "--baseline='ppo'"),
        (["--rows", "ppo", "--seeds", "1,x"], "--seeds='1,x'"),
    ],
)
def test_bad_arguments_and_missing_runs_exit_2_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    _write_runs(tmp_path, {"ppo": (1.0, 1.0), "sapo": (2.0, 3.0)})
    with pytest.raises(SystemExit) as exit_info:
        table.main([str(tmp_path), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
