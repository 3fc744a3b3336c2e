"""Checkpoints and resume: a killed run continues exactly; a crash during a save never loses the previous one."""

from __future__ import annotations

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


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
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


def test_a_fresh_run_in_a_used_folder_does_not_resume_the_old_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    out = tmp_path / "reused"
    train(tiny_config(out, total_steps=2, save_every=1, seed=1))

    def killed(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["cegppo.trainer.train"], "generate", killed)
    with pytest.raises(KeyboardInterrupt):  # a fresh run, killed in its first step
        train(tiny_config(out, total_steps=2, seed=2))
    monkeypatch.undo()
    assert ckpt.latest_checkpoint(out) is None  # not the seed-1 run's step 2
    rows = train(tiny_config(out, total_steps=1, seed=2, resume=True))
    assert [r["step"] for r in rows] == [1]
