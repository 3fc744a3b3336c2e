"""The warm start: the imperfect teacher, and a supervised phase that is deterministic, made once, reused, skipped."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from _trainer_helpers import assert_same_weights, checkpoint_weights, read_rows, tiny_config
from cegppo.trainer import train
from cegppo.trainer.tasks import addition_task, carry_dropping_sum
from cegppo.trainer.train import make_task
from cegppo.trainer.warm_start import LOSS_FILE, SETTINGS_FILE, warm_start


@pytest.mark.parametrize(
    ("a", "b", "drops", "written"),
    [
        (58, 67, [False, False], "125"),  # no slip: the sum
        (58, 67, [True, False], "115"),  # the carry out of the ones is lost: tens digit one too small
        (58, 67, [False, True], "025"),  # the carry out of the tens is lost: no hundreds
        (58, 67, [True, True], "015"),  # every carry lost: digit-wise sums mod 10
        (12, 34, [True, True], "046"),  # no carry to lose: always right
        (9, 1, [True], "00"),  # one digit: the carry is the leading digit
    ],
)
def test_carry_dropping_sum(a: int, b: int, drops: list[bool], written: str) -> None:
    assert carry_dropping_sum(a, b, len(drops), drops) == written


def test_teacher_is_right_without_carries_and_drops_them_at_the_given_rate() -> None:
    pairs = addition_task(2, carry_drop=0.8).teacher(4000, torch.Generator().manual_seed(0))  # type: ignore[misc]
    exact = addition_task(2, carry_drop=0.0).teacher(50, torch.Generator().manual_seed(0))  # type: ignore[misc]
    assert all(int(t) == int(p[:2]) + int(p[3:5]) for p, t in exact)  # drop 0: the true sum
    ones_carry = [(p, t) for p, t in pairs if int(p[1]) + int(p[4]) >= 10 and int(p[0]) + int(p[3]) <= 7]
    no_carry = [(p, t) for p, t in pairs if int(p[1]) + int(p[4]) < 10 and int(p[0]) + int(p[3]) < 9]
    assert all(int(t) == int(p[:2]) + int(p[3:5]) for p, t in no_carry)
    right = sum(int(t) == int(p[:2]) + int(p[3:5]) for p, t in ones_carry) / len(ones_carry)
    assert right == pytest.approx(0.2, abs=0.04)  # the right tens digit keeps about 1 - carry_drop
    assert all(p.endswith("=") and len(p) == 6 and len(t) == 3 for p, t in pairs)  # '07+35=' -> 3 digits


def test_warm_start_is_deterministic_from_the_seed(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "a", warm_start_steps=6)
    task = make_task(cfg)
    a, reused_a = warm_start(cfg, task, progress=False)
    b, reused_b = warm_start(dataclasses.replace(cfg, out=str(tmp_path / "b")), task, progress=False)
    c, _ = warm_start(dataclasses.replace(cfg, out=str(tmp_path / "c"), seed=2), task, progress=False)
    assert not reused_a and not reused_b
    assert_same_weights(checkpoint_weights(a), checkpoint_weights(b))
    assert (a / LOSS_FILE).read_text() == (b / LOSS_FILE).read_text()
    assert not torch.equal(checkpoint_weights(a)["lm_head.weight"], checkpoint_weights(c)["lm_head.weight"])
    record = json.loads((a / SETTINGS_FILE).read_text())
    assert record["settings"]["seed"] == 1 and record["settings"]["steps"] == 6
    assert [json.loads(line)["step"] for line in (a / LOSS_FILE).read_text().splitlines()] == list(range(1, 7))


def test_warm_start_fits_the_teacher(tmp_path: Path) -> None:
    """Not a stub: 80 supervised steps cut the teacher-forced loss well below its start (log 16 = 2.77)."""
    cfg = tiny_config(tmp_path / "fit", warm_start_steps=80, warm_start_batch=32, hidden_size=32)
    folder, _ = warm_start(cfg, make_task(cfg), progress=False)
    losses = [json.loads(line)["loss"] for line in (folder / LOSS_FILE).read_text().splitlines()]
    assert losses[0] > 2.5 and sum(losses[-10:]) / 10 < 0.6 * losses[0], losses[::10]


def test_a_run_starts_from_its_warm_start_and_resume_and_reruns_reuse_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train(tiny_config(out, total_steps=2, save_every=1, stop_at_step=1))
    folder = out / "warm_start"
    made = (folder / LOSS_FILE).stat().st_mtime_ns
    assert json.loads((out / "summary.json").read_text())["warm_start_reused"] is False
    # RL starts from the warm-started weights, not from a random init
    cold = train(tiny_config(tmp_path / "cold", total_steps=1, warm_start_steps=0))
    assert first[0]["entropy"] != cold[0]["entropy"]

    train(tiny_config(out, total_steps=2, save_every=1, resume=True))
    assert (folder / LOSS_FILE).stat().st_mtime_ns == made
    assert json.loads((out / "summary.json").read_text())["warm_start_reused"] is True
    # another run pointed at the same warm start (as every run of a sweep on one seed is) reuses it too
    other = train(tiny_config(tmp_path / "other", total_steps=1, warm_start_dir=str(folder)))
    assert (folder / LOSS_FILE).stat().st_mtime_ns == made
    assert other[0]["entropy"] == first[0]["entropy"]
    assert not (tmp_path / "other" / "warm_start").exists()


def test_a_warm_start_made_with_other_settings_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_config(out, total_steps=1))
    before = (out / "warm_start" / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"--warm-start-dir: .* other settings \(steps: 4 -> 5\)"):
        train(tiny_config(tmp_path / "run2", total_steps=1, warm_start_steps=5, warm_start_dir=str(out / "warm_start")))
    assert (out / "warm_start" / "model.safetensors").read_bytes() == before
    assert not (tmp_path / "run2").exists()


def test_no_warm_start_with_a_model_path_or_without_a_teacher(tmp_path: Path) -> None:
    src = tmp_path / "src"
    train(tiny_config(src, total_steps=1, save_every=1))
    ckpt_folder = src / "checkpoints" / "step_000001"
    train(tiny_config(tmp_path / "with_model", total_steps=1, model=str(ckpt_folder)))
    assert not (tmp_path / "with_model" / "warm_start").exists()
    assert json.loads((tmp_path / "with_model" / "summary.json").read_text())["warm_start_reused"] is None

    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "1+1=", "answer": "2"}\n')
    train(tiny_config(tmp_path / "dataset", total_steps=1, dataset=str(data), max_new_tokens=2))
    assert not (tmp_path / "dataset" / "warm_start").exists()
    assert [r["step"] for r in read_rows(tmp_path / "dataset")] == [1]
