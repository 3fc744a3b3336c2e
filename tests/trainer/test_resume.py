"""Checkpoints and resume: a killed run continues exactly; a crash during a save never loses the previous one."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from _trainer_helpers import (
    assert_same_weights,
    checkpoint_weights,
    latest_weights,
    read_rows,
    tiny_config,
    without_timing,
)
from cegppo.trainer import checkpoint as ckpt
from cegppo.trainer import train

N = 4


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of N steps with a checkpoint every 2 steps."""
    out = tmp_path_factory.mktemp("straight")
    train(tiny_config(out, total_steps=N, save_every=2))
    return out


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(straight: Path, tmp_path: Path) -> None:
    """Stop after step 2 (as if killed), resume to N: same metrics rows and bit-identical final weights."""
    out = tmp_path / "resumed"
    first = train(tiny_config(out, total_steps=N, save_every=2, stop_at_step=2))
    assert [r["step"] for r in first] == [1, 2]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000002"
    second = train(tiny_config(out, total_steps=N, save_every=2, resume=True))
    assert [r["step"] for r in second] == [3, 4]

    assert without_timing(read_rows(out)) == without_timing(read_rows(straight))
    assert_same_weights(latest_weights(out), latest_weights(straight))
    # the optimizer state too (Adam moments and step counts)
    a = ckpt.load_trainer_state(out / "checkpoints" / "step_000004")["optimizer"]["state"]
    b = ckpt.load_trainer_state(straight / "checkpoints" / "step_000004")["optimizer"]["state"]
    assert all(torch.equal(a[i][k], b[i][k]) for i in b for k in b[i])
    # the run is not trivially constant: clipping acted and the weights moved
    rows = read_rows(straight)
    assert max(r["clip_frac"] for r in rows) > 0
    assert not torch.equal(latest_weights(straight)["lm_head.weight"], checkpoint_weights(
        straight / "checkpoints" / "step_000002")["lm_head.weight"])  # fmt: skip


def test_resume_with_metrics_past_the_checkpoint_cuts_them_back(straight: Path, tmp_path: Path) -> None:
    """A run killed between checkpoints logged steps the checkpoint does not hold: resume drops and redoes them."""
    out = tmp_path / "killed"
    train(tiny_config(out, total_steps=N, save_every=2, stop_at_step=3))  # checkpoints at 2 and 3
    (out / "checkpoints" / "latest").write_text("step_000002\n")  # as if killed before step 3's save completed
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "rew')  # and a line cut mid-write
    train(tiny_config(out, total_steps=N, save_every=2, resume=True))
    assert without_timing(read_rows(out)) == without_timing(read_rows(straight))
    assert_same_weights(latest_weights(out), latest_weights(straight))


def test_crash_mid_save_keeps_the_previous_checkpoint(
    straight: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save failing during step 4's checkpoint leaves `latest` = step 2, loadable; resume then matches."""
    out = tmp_path / "crash"
    real_save = torch.save

    def failing_save(obj: object, path: object, *a: object, **k: object) -> None:
        if "step_000004" in str(path):
            Path(str(path)).write_bytes(b"half a file")  # a partial write, then the crash
            raise OSError("disk full (simulated)")
        real_save(obj, path, *a, **k)

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(OSError, match="simulated"):
        train(tiny_config(out, total_steps=N, save_every=2))
    monkeypatch.undo()

    root = out / "checkpoints"
    assert (root / "latest").read_text().strip() == "step_000002"
    assert not (root / "step_000004").exists()  # only a hidden temporary folder holds the partial save
    assert ckpt.latest_checkpoint(out) == root / "step_000002"
    ckpt.load_trainer_state(root / "step_000002")  # loadable
    checkpoint_weights(root / "step_000002")

    train(tiny_config(out, total_steps=N, save_every=2, resume=True))
    assert without_timing(read_rows(out)) == without_timing(read_rows(straight))
    assert_same_weights(latest_weights(out), latest_weights(straight))
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp_")]  # the next save cleaned up


def test_resume_without_any_checkpoint_starts_at_step_1(tmp_path: Path) -> None:
    rows = train(tiny_config(tmp_path / "fresh", total_steps=1, resume=True))
    assert [r["step"] for r in rows] == [1]


def test_keep_checkpoints_deletes_the_oldest(tmp_path: Path) -> None:
    out = tmp_path / "keep"
    train(tiny_config(out, total_steps=3, save_every=1, keep_checkpoints=2))
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["latest", "step_000002", "step_000003"]


def test_write_text_atomic_leaves_old_content_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "latest"
    ckpt.write_text_atomic(path, "old\n")

    def boom(*a: object) -> None:
        raise OSError("crash before rename")

    monkeypatch.setattr(ckpt.os, "replace", boom)
    with pytest.raises(OSError):
        ckpt.write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n"


def test_ctrl_c_exits_130_leaving_complete_files(
    straight: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during step 3 (here: in the rollout) exits 130; checkpoint 2 and metrics lines 1-2 are complete,
    and --resume finishes the run exactly."""
    import sys

    from _trainer_helpers import TINY
    from cegppo.trainer._cli import main

    train_module = sys.modules["cegppo.trainer.train"]
    real_generate = train_module.generate
    calls = {"n": 0}

    def interrupted(*a: object, **k: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_generate(*a, **k)

    out = tmp_path / "ctrl_c"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if not isinstance(v, bool)]
    argv = [*flags, "--no-progress", "--no-plots", f"--total-steps={N}", "--save-every=2", "--out", str(out)]
    monkeypatch.setattr(train_module, "generate", interrupted)
    assert main(argv) == 130
    assert "continue with --resume" in capsys.readouterr().err
    monkeypatch.undo()
    assert [r["step"] for r in read_rows(out)] == [1, 2]  # every line complete JSON
    assert ckpt.latest_checkpoint(out) == out / "checkpoints" / "step_000002"
    assert main([*argv, "--resume"]) == 0
    assert without_timing(read_rows(out)) == without_timing(read_rows(straight))
    assert_same_weights(latest_weights(out), latest_weights(straight))


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every file under OUT (relative path -> bytes): what a refused command must leave untouched."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_fresh_run_in_a_used_folder_is_refused_and_changes_nothing(straight: Path, tmp_path: Path) -> None:
    """A typo'd command (no --resume) must not empty a previous run's log: it is refused, naming --out."""
    out = tmp_path / "used"
    shutil.copytree(straight, out)
    before = _snapshot(out)
    with pytest.raises(ValueError, match=r"--out=.*holds a previous run.*--resume.*--overwrite"):
        train(tiny_config(out, total_steps=N, seed=2))
    assert _snapshot(out) == before


def test_overwrite_starts_afresh_and_never_resumes_the_old_run(
    straight: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    out = tmp_path / "reused"
    shutil.copytree(straight, out)

    def killed(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["cegppo.trainer.train"], "generate", killed)
    with pytest.raises(KeyboardInterrupt):  # a fresh run, killed in its first step
        train(tiny_config(out, total_steps=2, seed=1, overwrite=True))
    monkeypatch.undo()
    assert ckpt.latest_checkpoint(out) is None  # the old run's checkpoints went with --overwrite
    assert read_rows(out) == []
    rows = train(tiny_config(out, total_steps=2, seed=1, resume=True))  # nothing to resume: starts at step 1
    assert [r["step"] for r in rows] == [1, 2]
    assert without_timing(rows) == without_timing(read_rows(straight)[:2])


@pytest.mark.parametrize("damage", ["state_missing", "weights_truncated", "state_truncated"])
def test_resume_passes_over_an_incomplete_latest_checkpoint(
    straight: Path, tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`latest` names step 4 but that folder is damaged: resume says why and continues from step 2, exactly."""
    out = tmp_path / damage
    shutil.copytree(straight, out)
    step4 = out / "checkpoints" / "step_000004"
    if damage == "state_missing":
        (step4 / ckpt.STATE_FILE).unlink()
    else:
        path = step4 / (ckpt.WEIGHTS_FILE if damage == "weights_truncated" else ckpt.STATE_FILE)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    rows = train(tiny_config(out, total_steps=N, save_every=2, resume=True))
    assert [r["step"] for r in rows] == [3, 4]
    err = capsys.readouterr().err
    assert "passing over an incomplete checkpoint" in err and "step_000004" in err, err
    assert without_timing(read_rows(out)) == without_timing(read_rows(straight))
    assert_same_weights(latest_weights(out), latest_weights(straight))


def test_resume_with_no_complete_checkpoint_exits_with_an_error_and_changes_nothing(
    straight: Path, tmp_path: Path
) -> None:
    out = tmp_path / "broken"
    shutil.copytree(straight, out)
    for folder in (out / "checkpoints").glob("step_*"):
        (folder / ckpt.STATE_FILE).unlink()
    before = _snapshot(out)
    with pytest.raises(ValueError, match=r"--resume: no complete checkpoint.*trainer_state\.pt is missing"):
        train(tiny_config(out, total_steps=N, save_every=2, resume=True))
    assert _snapshot(out) == before


@pytest.mark.parametrize(
    ("change", "named"),
    [({"seed": 99}, "--seed 1 -> 99"), ({"lr": 0.05}, "--lr 0.01 -> 0.05"), ({"preset": "ppo"}, "--preset")],
)
def test_resume_refuses_changed_settings(straight: Path, tmp_path: Path, change: dict[str, object], named: str) -> None:
    out = tmp_path / "changed"
    shutil.copytree(straight, out)
    before = _snapshot(out)
    with pytest.raises(ValueError, match=re.escape(named) + ".*--allow-config-change"):
        train(tiny_config(out, total_steps=N + 1, save_every=2, resume=True, **change))
    assert _snapshot(out) == before


@pytest.mark.parametrize("change", [{"lr": 0.05}, {"preset": "ppo"}])
def test_resume_accepts_allowed_changes_and_records_overrides(
    straight: Path, tmp_path: Path, change: dict[str, object]
) -> None:
    out = tmp_path / "changed"
    shutil.copytree(straight, out)
    # settings that only decide how long and how visibly the run goes on may change
    rows = train(tiny_config(out, total_steps=N + 1, save_every=5, resume=True, keep_checkpoints=3, tensorboard=True))
    assert [r["step"] for r in rows] == [5]
    # an explicit override continues and records the change, so config.json does not lie
    train(tiny_config(out, total_steps=N + 2, save_every=5, resume=True, allow_config_change=True, **change))
    record = json.loads((out / "config.json").read_text())
    key = next(iter(change))
    assert record[key] == change[key]
    assert record["resume_changes"][-1]["from_checkpoint"] == "step_000005"
    assert key in record["resume_changes"][-1]["changes"]


def test_divergence_stops_before_the_bad_update_keeping_log_and_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A NaN loss at step 3 (as a too-large learning rate produces): the CLI exits 3 naming the step and the last
    checkpoint; metrics.jsonl is strict JSON with steps 1-2; `latest` is step 2 and holds the pre-divergence
    weights, so a resume reproduces the straight run."""
    import sys

    from _trainer_helpers import TINY
    from cegppo.trainer._cli import main

    train_module = sys.modules["cegppo.trainer.train"]
    real = train_module.cg.family_policy_loss  # the loss the trainer calls (CE-GPPO's policy_loss here)
    calls = {"n": 0}
    per_step = TINY["update_epochs"] * TINY["num_minibatches"]

    def poisoned(*a: object, **k: object) -> torch.Tensor:
        calls["n"] += 1
        loss = real(*a, **k)  # type: ignore[arg-type]
        return loss * float("nan") if calls["n"] == 2 * per_step + 1 else loss

    monkeypatch.setattr(train_module.cg, "family_policy_loss", poisoned)
    out = tmp_path / "diverged"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if not isinstance(v, bool)]
    argv = [*flags, "--no-progress", "--no-plots", f"--total-steps={N}", "--save-every=2", "--out", str(out)]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "training diverged at step 3, update 1" in err and "step_000002" in err, err
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line, parse_constant=_refuse)["step"] for line in lines] == [1, 2]
    assert ckpt.latest_checkpoint(out) == out / "checkpoints" / "step_000002"
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0


def _refuse(name: str) -> None:
    raise ValueError(f"metrics.jsonl holds {name}: not strict JSON")


def test_non_finite_settings_are_refused_up_front(tmp_path: Path) -> None:
    for field in ("lr", "entropy_coef", "temperature", "max_grad_norm"):
        with pytest.raises(ValueError, match=f"--{field.replace('_', '-')}=.*finite"):
            train(tiny_config(tmp_path / field, **{field: float("inf")}))
        assert not (tmp_path / field).exists()
