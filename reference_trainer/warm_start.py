"""The warm start: a short supervised phase on the task's imperfect teacher, so that RL starts where an LLM does.

CE-GPPO's mechanism is about a *pretrained* policy: confident on most tokens, with a low-probability tail
in which the right token sometimes sits. Restoring the gradient of clipped tokens matters there: a
clip_high token (A > 0, ratio > 1 + eps_high) is mostly such a tail token whose probability the update is
raising, and raising a token below exp(-H) raises the entropy (docs/spec.md, first-order entropy change).
A random-init policy has no such tail (it starts uniform), so the default run first fits the tiny model to
a teacher that drops each carry with probability `carry_drop` (cegppo.trainer.tasks.carry_dropping_sum):
afterwards the model is confident on the digits without a carry and gives the right digit after a carry
only about 1 - carry_drop.

The phase is deterministic from the seed, runs once per folder and is saved as an ordinary checkpoint
(`save_pretrained`, so the folder is a valid `--model`), with `warm_start.json` (the settings it was made
with) and `loss.jsonl` (its loss curve). A run, its `--resume` and every run of a sweep on the same seed
reuse it; a folder made with other settings is refused rather than silently reused.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import cegppo.torch as cg
import torch

from . import checkpoint as ckpt
from .config import TrainConfig
from .metrics import progress_bar
from .policy import build_char_tokenizer, build_tiny_model, quiet_hf_progress
from .rollout import Batch, PolicyForward, left_pad
from .tasks import Task

__all__ = ["SETTINGS_FILE", "needs_warm_start", "warm_start", "warm_start_folder", "warm_start_settings"]

SETTINGS_FILE = "warm_start.json"
LOSS_FILE = "loss.jsonl"


def needs_warm_start(cfg: TrainConfig, task: Task) -> bool:
    """True when RL should start from a warm start: no --model, warm_start_steps > 0 and a task with a teacher."""
    return cfg.model is None and cfg.warm_start_steps > 0 and task.teacher is not None


def warm_start_folder(cfg: TrainConfig) -> Path:
    """--warm-start-dir, else OUT/warm_start."""
    return Path(cfg.warm_start_dir) if cfg.warm_start_dir else Path(cfg.out) / "warm_start"


def warm_start_settings(cfg: TrainConfig, task: Task) -> dict[str, Any]:
    """Everything the warm start's weights depend on (a folder made with other values is not reused)."""
    return {
        "task": task.name,
        "carry_drop": cfg.carry_drop,
        "seed": cfg.seed,
        "steps": cfg.warm_start_steps,
        "batch_size": cfg.warm_start_batch,
        "lr": cfg.warm_start_lr,
        "hidden_size": cfg.hidden_size,
        "num_layers": cfg.num_layers,
        "num_heads": cfg.num_heads,
    }


def _recorded_settings(folder: Path) -> dict[str, Any] | None:
    """The settings a complete warm-start folder was made with, None when there is none."""
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["settings"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ValueError(f"--warm-start-dir: {path} is not a valid warm-start record; delete {folder} to redo it") from None


def warm_start(cfg: TrainConfig, task: Task, *, progress: bool = True) -> tuple[Path, bool]:
    """Make (or reuse) the warm-start checkpoint of `cfg`; returns (folder, reused).

    Raises ValueError when the folder holds a warm start made with other settings.
    """
    folder = warm_start_folder(cfg)
    settings = warm_start_settings(cfg, task)
    recorded = _recorded_settings(folder)
    if recorded is not None:
        if recorded != settings:
            changed = ", ".join(f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in settings.items() if recorded.get(k) != v)
            raise ValueError(
                f"--warm-start-dir: {folder} holds a warm start made with other settings ({changed}); "
                "delete it, or give another --out / --warm-start-dir"
            )
        return folder, True
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"--warm-start-dir: {folder} exists, is not empty and holds no {SETTINGS_FILE}; delete it or pick another")
    _fit(cfg, task, folder, settings, progress)
    return folder, False


def _fit(cfg: TrainConfig, task: Task, folder: Path, settings: dict[str, Any], progress: bool) -> None:
    """Supervised fit of the tiny model to the teacher; written to a temporary folder, renamed into place."""
    assert task.teacher is not None
    tokenizer = build_char_tokenizer(task.alphabet)
    model = build_tiny_model(len(tokenizer), cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.seed)
    model.train(False)  # no dropout in the tiny model either way; eval keeps the forward identical to RL's
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.warm_start_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 3)  # its own stream: RL's prompts are not consumed
    forward = PolicyForward(model)
    bar = progress_bar(cfg.warm_start_steps, "warm start") if progress else None
    curve: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for step in range(1, cfg.warm_start_steps + 1):
        # Cosine decay from warm_start_lr to 0: the fit ends settled, not mid-step.
        lr = cfg.warm_start_lr * 0.5 * (1.0 + torch.cos(torch.tensor(torch.pi * (step - 1) / cfg.warm_start_steps)).item())
        for group in opt.param_groups:
            group["lr"] = lr
        pairs = task.teacher(cfg.warm_start_batch, gen)
        loss = _teacher_forced_nll(forward, tokenizer, pairs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        curve.append({"step": step, "loss": float(loss.detach()), "lr": lr})
        if bar is not None:
            if step % 25 == 0:  # the figure first: the line the update writes carries it
                bar.set_postfix(loss=f"{curve[-1]['loss']:.3f}", refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    tmp = folder.with_name(f".tmp_{folder.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with quiet_hf_progress():
        model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / LOSS_FILE).write_text("".join(json.dumps(r) + "\n" for r in curve), encoding="utf-8")
    record = {"settings": settings, "final_loss": curve[-1]["loss"], "seconds": seconds}
    ckpt.write_text_atomic(tmp / SETTINGS_FILE, json.dumps(record, indent=2))  # written last: marks it complete
    if folder.exists():
        folder.rmdir()  # empty (checked by the caller)
    tmp.rename(folder)
    print(f"warm start: {cfg.warm_start_steps} steps, loss {curve[0]['loss']:.3f} -> {curve[-1]['loss']:.3f} "
          f"in {seconds:.1f} s -> {folder}", file=sys.stderr)  # fmt: skip


def _teacher_forced_nll(forward: PolicyForward, tokenizer: Any, pairs: list[tuple[str, str]]) -> torch.Tensor:
    """Mean negative log-likelihood of the teacher's demonstration tokens given their prompts."""
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p, _ in pairs]
    targets = [tokenizer(t, add_special_tokens=False)["input_ids"] for _, t in pairs]
    device = next(forward.parameters()).device
    prompt_ids, prompt_mask = left_pad(prompts, tokenizer.pad_token_id, device)
    width = max(len(t) for t in targets)
    response = torch.full((len(targets), width), tokenizer.pad_token_id, dtype=torch.long, device=device)
    response_mask = torch.zeros((len(targets), width), dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        response[i, : len(t)] = torch.tensor(t, dtype=torch.long)
        response_mask[i, : len(t)] = True
    logits = forward(Batch(prompt_ids, prompt_mask, response, response_mask), 1.0)
    log_prob = cg.token_log_probs(logits, response)
    return -torch.where(response_mask, log_prob, 0.0).sum() / response_mask.sum()
