"""The command line: a smoke run writes every output; bad input fails before anything is written."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _trainer_helpers import TINY, read_rows
from cegppo._progress import DEFAULT_INTERVAL, LogBar
from cegppo.trainer import METRICS
from cegppo.trainer._cli import main
from cegppo.trainer.config import TrainConfig, field_docs, parse_args
from cegppo.trainer.metrics import progress_bar

REPO = Path(__file__).resolve().parents[2]


def _flags(**kw: object) -> list[str]:
    """CLI flags of keyword arguments (bools as --x / --no-x)."""
    out: list[str] = []
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + k.replace("_", "-"))
        else:
            out += [flag, str(v)]
    return out


# A progress line in a log (cegppo._progress.LogBar): "warm start: 3/4 (75%), ..." or "cegppo-train: 2/3 (66%), ...".
PROGRESS_LINE = re.compile(r"^(warm start|cegppo-train): (\d+)/(\d+) \(\d+%\)")


def _progress_lines(err: str) -> dict[str, list[str]]:
    """The progress lines of stderr by bar ("warm start", "cegppo-train")."""
    bars: dict[str, list[str]] = {}
    for line in err.splitlines():
        m = PROGRESS_LINE.match(line)
        if m:
            bars.setdefault(m.group(1), []).append(line)
    return bars


def test_smoke_run_through_the_cli_writes_every_output(tmp_path: Path) -> None:
    """`python -m cegppo.trainer` (a real subprocess) trains 3 steps and leaves metrics, config, checkpoint, plots.

    Its stderr is a pipe, as in a CI log: progress comes as plain lines, a few per phase, never a redrawn bar."""
    out = tmp_path / "run"
    flags = _flags(**{**TINY, "plots": True, "save_every": 2, "progress": True}, out=out)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "cegppo.trainer", *flags], capture_output=True, text=True, env=env, timeout=300
    )
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr, "a progress bar redrawn into a log"
    bars = _progress_lines(proc.stderr)
    assert set(bars) == {"warm start", "cegppo-train"}, proc.stderr
    totals = {"warm start": TINY["warm_start_steps"], "cegppo-train": TINY["total_steps"]}
    for name, lines in bars.items():
        assert lines[-1].startswith(f"{name}: {totals[name]}/{totals[name]} (100%)"), lines  # the log ends with it
        # at most one line per interval (the whole run is an upper bound of each phase), the first and the last
        assert len(lines) <= 2 + seconds / DEFAULT_INTERVAL, (len(lines), seconds, lines)
    assert "done: step 3" in proc.stdout
    # the end of the run tells the story: accuracy and entropy first -> last, phase times, where the plots are
    for text in ("accuracy", "entropy", "time: warm start", "RL", "dynamics.png"):
        assert text in proc.stdout, text
    assert "deprecated" not in proc.stderr, proc.stderr  # a first run is clean (no transformers deprecation)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["warm_start_reused"] is False
    assert summary["accuracy"]["first"] == read_rows(out)[0]["accuracy"]

    rows = read_rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert set(row) == set(METRICS), set(row) ^ set(METRICS)
        # numbers, or null for the old-probability metrics of a region without tokens
        assert all(isinstance(v, (int, float)) or (v is None and k.endswith("_old_prob")) for k, v in row.items())
        if row["clip_high_frac"] > 0:  # ratio > 1 + eps_high needs pi_old < 1 / (1 + eps_high)
            assert 0 < row["clip_high_old_prob"] < 1 / 1.2
        if row["clip_low_frac"] > 0:
            assert 0 < row["clip_low_old_prob"] <= 1
        fractions = row["clip_low_frac"] + row["clip_high_frac"] + row["dual_clip_frac"] + row["inside_frac"]
        assert fractions == pytest.approx(1.0, abs=1e-6)
        dh = row["dH_clip_low"] + row["dH_clip_high"] + row["dH_dual_clip"] + row["dH_inside"]
        assert row["dH_total"] == pytest.approx(dh, rel=1e-9, abs=1e-12)
        assert 0.0 <= row["reward"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0

    config = json.loads((out / "config.json").read_text())
    assert config["total_steps"] == 3 and config["hidden_size"] == 16
    assert config["cegppo"]["beta_low"] == 0.5 and config["cegppo"]["beta_high"] == 1.0  # ce_gppo_1p5b

    ckpts = out / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step_000003"
    assert sorted(p.name for p in ckpts.iterdir() if p.name.startswith("step_")) == ["step_000002", "step_000003"]
    for name in ("model.safetensors", "config.json", "tokenizer.json", "trainer_state.pt"):
        assert (ckpts / "step_000003" / name).is_file(), name
    for name in ("dynamics", "reward", "entropy", "regions", "entropy_change"):
        png = out / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_no_progress_silences_the_progress_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = _flags(**{**TINY, "total_steps": 2, "progress": False}, out=tmp_path / "run")
    assert main(flags) == 0
    err = capsys.readouterr().err
    assert _progress_lines(err) == {} and "\r" not in err, err


def test_the_progress_display_is_a_bar_on_a_terminal_and_lines_in_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = progress_bar(5, "cegppo-train")
    assert type(bar).__module__.startswith("tqdm")  # redrawn in place: right on a terminal
    bar.close()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress_bar(5, "cegppo-train"), LogBar)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import cegppo

    for argv in (["--version"], ["sweep", "--version"], ["--lr", "1e-3", "--version"]):
        assert main(argv) == 0
        assert capsys.readouterr().out == f"cegppo-train {cegppo.__version__}\n"


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--total-steps", "0"], "--total-steps"),
        (["--group-size", "1"], "--group-size"),
        (["--prompts-per-step", "6", "--num-minibatches", "4"], "--prompts-per-step"),
        (["--preset", "nope"], "--preset"),
        (["--advantage", "gae"], "--advantage"),
        (["--agg", "mean"], "--agg"),
        (["--temperature", "0"], "--temperature"),
        (["--num-heads", "3"], "--num-heads"),
        (["--beta-low", "-1"], "beta_low"),
        (["--eps-low", "1.5"], "eps_low"),
        (["--dual-clip", "0.5"], "dual_clip"),
        (["--dual-clip", "ten"], "--dual-clip"),
        (["--model", "/nonexistent/model"], "--model"),
        (["--dataset", "/nonexistent/data.jsonl"], "--dataset"),
        (["--dtype", "float16"], "--dtype"),
        (["--device", "banana"], "--device"),
        (["--device", "cuda:7"], "--device"),
        (["--hidden-size", "12", "--num-heads", "4"], "--num-heads"),
        (["--entropy-coef", "-1"], "--entropy-coef"),
        (["--entropy-coef", "nan"], "--entropy-coef"),
        (["--lr", "inf"], "--lr"),
        (["--carry-drop", "1.5"], "--carry-drop"),
        (["--reward", "digits"], "--reward"),
        (["--warm-start-steps", "-1"], "--warm-start-steps"),
        (["--resume", "--overwrite"], "--overwrite"),
    ],
)
def test_bad_input_exits_2_naming_the_field_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], field: str
) -> None:
    out = tmp_path / "never"
    assert main([*flags, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cegppo-train: error:") and field in err, err
    assert not out.exists()


@pytest.mark.parametrize("where", ["a_file", "under_a_file", "proc"])
def test_an_unusable_out_exits_2_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = {"a_file": blocker, "under_a_file": blocker / "run", "proc": Path("/proc/cegppo-run")}[where]
    assert main(["--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cegppo-train: error: --out=") and "\n" == err[-1] and err.count("\n") == 1, err
    assert blocker.read_text() == "not a folder" and sorted(tmp_path.iterdir()) == [blocker]


def test_malformed_dataset_line_is_named_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "1+1=", "answer": "2"}\n\n{"prompt": "2+2=", "answr": 4}\n')
    out = tmp_path / "never"
    assert main(["--dataset", str(data), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{data}:3: missing key 'answer'" in err, err
    assert not out.exists()


def test_every_config_field_has_a_one_line_doc_and_a_flag() -> None:
    import dataclasses

    docs = field_docs()
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert sorted(docs) == sorted(names)
    assert all(doc and "\n" not in doc for doc in docs.values())
    cfg = parse_args(["--no-progress", "--tensorboard", "--lr", "0.5", "--dual-clip", "none", "--stop-at-step", "2"])
    assert (cfg.progress, cfg.tensorboard, cfg.lr, cfg.dual_clip, cfg.stop_at_step) == (False, True, 0.5, "none", 2)
    assert parse_args([]) == TrainConfig()


def test_metrics_table_documents_every_key() -> None:
    assert all(isinstance(v, str) and v for v in METRICS.values())
    assert {"reward", "accuracy", "entropy", "clip_low_frac", "clip_high_frac", "approx_kl", "grad_norm"} <= set(METRICS)
    assert {"response_length", "tokens_per_s", "dH_clip_low", "dH_clip_high"} <= set(METRICS)


def test_sweep_and_compare_take_their_own_flags_beside_every_training_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from cegppo.trainer import sweep

    calls: list[tuple[TrainConfig, list[object], list[int]]] = []
    monkeypatch.setattr(sweep, "run_sweep", lambda cfg, grid, seeds: calls.append((cfg, grid, seeds)) or {})
    assert main(["sweep", "--grid", "0,1;ppo", "--seeds", "2,3", "--lr", "1e-3", "--no-progress"]) == 0
    assert main(["compare", "--preset", "gppo", "--seed", "5", "--dual-clip", "none"]) == 0
    (cfg, grid, seeds), (cmp_cfg, cmp_grid, cmp_seeds) = calls
    assert (seeds, len(grid), cfg.lr, cfg.progress) == ([2, 3], 2, 1e-3, False)
    assert (cfg.out, cfg.save_every, cfg.plots) == ("runs/sweep", 0, False)  # the sweep's own defaults
    assert (cmp_seeds, len(cmp_grid), cmp_cfg.out, cmp_cfg.dual_clip) == ([5], 2, "runs/compare", "none")
    assert main(["sweep", "--seeds", "x"]) == 2  # a bad --seeds is named, not a traceback


def test_a_bad_flag_value_exits_2_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--lr", "fast"])
    assert exc.value.code == 2
    assert "--lr" in capsys.readouterr().err
