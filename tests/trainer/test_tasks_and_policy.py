"""Tasks and rewards, the JSONL dataset path, `--model PATH` with a checkpoint on disk, and the loss in use."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cegppo
import cegppo.torch as cg
import pytest
import torch
from _trainer_helpers import read_rows, tiny_config
from cegppo.trainer import (
    addition_task,
    dataset_task,
    extract_math_answer,
    load_jsonl,
    math_answer_reward,
    train,
)
from cegppo.trainer.policy import build_char_tokenizer, build_tiny_model
from cegppo.trainer.tasks import addition_reward

TRAIN = sys.modules["cegppo.trainer.train"]  # the module (the package attribute `train` is the function)


# --- rewards ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "answer", "reward"),
    [
        ("The answer is 42.", "42", 1.0),
        ("so x = \\boxed{42}", "42", 1.0),
        ("\\boxed{\\frac{1}{2}} ... 7", "\\frac{1}{2}", 1.0),  # boxed wins over a later number
        ("first 3, then 4", "3", 0.0),  # the last number counts
        ("0.50", "1/2", 1.0),
        (".5", "0.5", 1.0),
        ("1,234", "1234", 1.0),
        ("-7", "7", 0.0),
        ("no number here", "5", 0.0),
        ("\\boxed{x+1}", "x + 1", 1.0),
        ("\\boxed{x+2}", "x+1", 0.0),
        ("#### 18", "The total is \\boxed{18}", 1.0),
        ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("\\boxed{\\dfrac{-3}{4}}", "-0.75", 1.0),
        ("it is 72", "She sold 48 + 24 = 72 clips.\n#### 72", 1.0),  # GSM8K answer field
        ("it is 24", "She sold 48 + 24 = 72 clips.\n#### 72", 0.0),
    ],
)
def test_math_answer_reward(response: str, answer: str, reward: float) -> None:
    assert math_answer_reward(response, answer) == reward


def test_extract_math_answer_nested_braces_and_none() -> None:
    assert extract_math_answer("\\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert extract_math_answer("\\boxed{unclosed") is None or extract_math_answer("\\boxed{unclosed") == ""
    assert extract_math_answer("nothing") is None


def test_addition_task_answers_and_partial_reward() -> None:
    task = addition_task(2)
    pairs = task.sample(200, torch.Generator().manual_seed(0))
    for prompt, answer in pairs:
        a, b = prompt[:-1].split("+")
        assert answer == str(int(a) + int(b)).zfill(3)
    assert addition_reward("088", "088") == 1.0
    assert addition_reward("087", "088") == pytest.approx(2 / 3)
    assert addition_reward("0", "088") == pytest.approx(1 / 3)  # a short response scores only what it has
    assert task.sample(5, torch.Generator().manual_seed(1)) == task.sample(5, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="digits"):
        addition_task(0)


# --- datasets --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json\n", ":1: not valid JSON"),
        ('["prompt", "answer"]\n', ":1: expected a JSON object"),
        ('{"prompt": "q"}\n', ":1: missing key 'answer'"),
        ('{"prompt": "", "answer": "1"}\n', ":1: 'prompt' must be a non-empty string"),
        ('{"prompt": "q", "answer": true}\n', ":1: 'answer' must be a string or a number"),
        ('{"prompt": "q", "answer": 1}\n{"prompt": "q", "answer": [1]}\n', ":2: 'answer'"),
        ("\n\n", "no examples"),
    ],
)
def test_load_jsonl_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=str(path).replace("\\", "\\\\")) as err:
        load_jsonl(str(path))
    assert message in str(err.value)


def test_dataset_run_trains_on_jsonl_rows_with_the_math_reward(tmp_path: Path) -> None:
    """--dataset: prompts come from the file; a tiny char model trains 2 steps; rewards are math-answer matches."""
    data = tmp_path / "add.jsonl"
    rows = [{"prompt": f"{a}+{b}=", "answer": a + b} for a in range(5) for b in range(5)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = dataset_task(str(data))
    assert task.reward("so 7", "7") == 1.0 and task.correct("7", "7")
    assert set("0123456789+=") <= set(task.alphabet)

    seen: list[str] = []
    real = task.reward

    def spy(response: str, answer: str) -> float:
        seen.append(answer)
        return real(response, answer)

    cfg = tiny_config(tmp_path / "run", dataset=str(data), max_new_tokens=3, total_steps=2)
    orig = TRAIN.dataset_task
    TRAIN.dataset_task = lambda path, max_new_tokens: dataset_task(path, reward=spy, max_new_tokens=max_new_tokens)
    try:
        out = train(cfg)
    finally:
        TRAIN.dataset_task = orig
    assert len(out) == 2 and all(r["response_length"] <= 3 for r in out)
    assert len(seen) == 2 * 2 * cfg.prompts_per_step * cfg.group_size  # 2 steps; reward and accuracy call it
    assert set(seen) <= {str(a + b) for a in range(5) for b in range(5)}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dataset"] == str(data)


# --- --model PATH ----------------------------------------------------------------------------------------------------


def test_model_path_loads_a_tiny_hf_checkpoint_from_disk(tmp_path: Path) -> None:
    """A checkpoint saved with save_pretrained (weights + tokenizer) trains with --model, and so does a trainer
    checkpoint folder; the first step's rollout equals that of the in-memory model it was saved from."""
    tok = build_char_tokenizer("0123456789+=")
    model = build_tiny_model(len(tok), hidden_size=16, num_layers=1, num_heads=2, seed=1)
    folder = tmp_path / "tiny-hf"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)

    from_disk = train(tiny_config(tmp_path / "disk", model=str(folder), total_steps=2, save_every=1))
    # same seed, same sizes, no warm start: the same weights
    built = train(tiny_config(tmp_path / "built", total_steps=2, warm_start_steps=0))
    for key in ("reward", "entropy", "pg_loss", "grad_norm"):
        assert from_disk[0][key] == built[0][key], key

    ckpt_folder = tmp_path / "disk" / "checkpoints" / "step_000001"
    again = train(tiny_config(tmp_path / "again", model=str(ckpt_folder), total_steps=1))
    assert again[0]["entropy"] != from_disk[0]["entropy"]  # it starts from the trained weights


def test_model_path_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"--model.*config\.json"):
        train(tiny_config(tmp_path / "x", model=str(tmp_path / "empty")))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="--model"):
        train(tiny_config(tmp_path / "y", model=str(broken)))


# --- the loss is cegppo.torch's ----------------------------------------------------------------------------------------


def test_updates_use_cegppo_torch_family_policy_loss_with_the_configured_hyperparameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[cegppo.CEGPPOConfig] = []
    real = cg.family_policy_loss  # policy_loss itself for a CEGPPOConfig

    def spy(*args: object, **kw: object) -> torch.Tensor:
        calls.append(args[4])  # type: ignore[arg-type]
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(TRAIN.cg, "family_policy_loss", spy)
    cfg = tiny_config(tmp_path / "r", total_steps=1, preset="ce_gppo_7b", beta_high=0.9, dual_clip="3")
    rows = train(cfg)
    assert len(calls) == cfg.update_epochs * cfg.num_minibatches
    want = cegppo.presets.get("ce_gppo_7b", beta_high=0.9, dual_clip=3.0)
    assert all(c == want for c in calls)
    assert rows[0]["pg_loss"] == pytest.approx(rows[0]["loss"])


def test_region_metrics_match_cegppo_on_a_recomputed_update(tmp_path: Path) -> None:
    """Step 1's first update starts at ratio 1 (all inside); later updates put tokens in clip regions, and
    the beta grid point changes the gradient (and so the run) only through those tokens."""
    base = dict(total_steps=2, lr=3e-2)
    ppo = read_rows_after(tmp_path / "ppo", **base, beta_low=0.0, beta_high=0.0)
    gppo = read_rows_after(tmp_path / "gppo", **base, beta_low=1.0, beta_high=1.0)
    assert ppo[0]["reward"] == gppo[0]["reward"]  # same rollout at step 1
    assert ppo[0]["clip_frac"] > 0  # clipping happened within step 1's updates ...
    assert ppo[0]["grad_norm"] != gppo[0]["grad_norm"]  # ... so the betas changed the gradients
    # the region gradient weights: PPO gives clipped tokens F = 0, GPPO F = 1 -/+ eps
    assert ppo[0]["grad_weight_abs_mean"] < gppo[0]["grad_weight_abs_mean"]
    assert ppo[0]["dH_clip_low"] == 0.0 and ppo[0]["dH_clip_high"] == 0.0
    # the old probability of clipped tokens: clip_high needs pi_old < 1 / (1 + eps_high) to have ratio > 1 + eps_high
    for row in (*ppo, *gppo):
        if row["clip_high_frac"] > 0:
            assert 0 < row["clip_high_old_prob"] < 1 / 1.2
        else:
            assert row["clip_high_old_prob"] is None  # strict JSON null, not NaN
    assert gppo[0]["dH_clip_low"] != 0.0 or gppo[0]["dH_clip_high"] != 0.0


def read_rows_after(out: Path, **over: object) -> list[dict[str, float]]:
    train(tiny_config(out, **over))  # type: ignore[arg-type]
    return read_rows(out)


@pytest.mark.parametrize("preset", ["ce_gppo_1p5b", "cispo", "gspo"])
def test_fused_head_run_matches_the_unfused_run(tmp_path: Path, preset: str) -> None:
    """--fused-head (cegppo.torch.fused_linear_policy_loss, no logits) gives the same losses, gradient norms,
    regions and per-region entropy changes as the logits path, up to float32 rounding, for CE-GPPO and for
    members with their own regions (CISPO's clipped weight, GSPO's sequence ratio, whose F reads whole rows)."""
    plain = train(tiny_config(tmp_path / "plain", total_steps=2, temperature=0.7, preset=preset))
    fused = train(tiny_config(tmp_path / "fused", total_steps=2, temperature=0.7, fused_head=True, preset=preset))
    assert plain[0]["clip_frac"] > 0
    for a, b in zip(plain, fused, strict=True):
        for key in ("reward", "entropy", "pg_loss", "grad_norm", "clip_low_frac", "clip_high_frac", "ratio_mean",
                    "approx_kl", "grad_weight_abs_mean", "dH_clip_low", "dH_clip_high", "dH_inside"):  # fmt: skip
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), (a["step"], key)
