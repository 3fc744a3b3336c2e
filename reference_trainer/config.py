"""The trainer's configuration: one dataclass, every field documented in one line (docs/trainer.md).

The docstring under each field is also its `--help` text: the command line is built from this dataclass by tyro,
and `cegppo-train --help` lists every field.
`TrainConfig.check()` rejects impossible settings before anything is loaded or written.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cegppo
import docstring_parser
import tyro
from cegppo import presets

__all__ = ["TrainConfig", "cegppo_config", "field_docs", "parse_args"]


@dataclass
class TrainConfig:
    """Every knob of `cegppo-train`. Defaults: warm start, then CE-GPPO RL on two-digit addition, 2-3 min on 2 CPU cores."""

    # --- run ---------------------------------------------------------------------------------------------------------
    out: str = "runs/cegppo"
    """Output folder: metrics.jsonl, checkpoints/, plots/, tensorboard/ (if enabled), config.json."""
    seed: int = 1
    """Seed of everything: model init, prompts, sampling (all from torch generators, saved in checkpoints)."""
    total_steps: int = 200
    """Number of training steps (one step = one rollout batch followed by its mini-batch updates)."""
    stop_at_step: int | None = None
    """Stop after this step as if killed (the schedule still follows total_steps); for tests and time boxes."""
    resume: bool = False
    """Continue from the newest complete checkpoint in OUT (metrics.jsonl is cut back to that step)."""
    overwrite: bool = False
    """Start afresh in an OUT that holds a previous run, deleting its metrics, checkpoints and plots."""
    allow_config_change: bool = False
    """With --resume: accept settings that differ from OUT/config.json (the changes are recorded there)."""
    save_every: int = 40
    """Write a checkpoint every this many steps (and at the last step); 0 = only at the end."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep (older ones are deleted after a new one is complete)."""
    device: str = "auto"
    """`cpu`, `cuda`, `cuda:N` or `auto` (cuda when available; under torchrun each rank takes its LOCAL_RANK)."""
    threads: int = 1
    """torch intra-op threads on CPU; 0 = torch's default (one per core), thrashes on a busy machine."""
    progress: bool = True
    """Show progress with the key figures (rank 0 only): a tqdm bar on a terminal, a plain line every 10 s in a log."""
    plots: bool = True
    """Write PNG plots (reward, entropy, regions, entropy change) to OUT/plots at the end."""
    tensorboard: bool = False
    """Also log every metric to TensorBoard under OUT/tensorboard."""

    # --- policy ------------------------------------------------------------------------------------------------------
    model: str | None = None
    """Local Hugging Face checkpoint folder (config.json, weights, tokenizer); unset = the tiny random-init default."""
    dtype: str = "float32"
    """Parameter dtype of the policy: float32 or bfloat16 (the loss is always computed in float32)."""
    hidden_size: int = 64
    """Tiny default model only: width of the Llama-style transformer."""
    num_layers: int = 2
    """Tiny default model only: number of transformer blocks."""
    num_heads: int = 4
    """Tiny default model only: attention heads."""
    warm_start_steps: int = 600
    """Tiny default model only: supervised steps on the task's imperfect teacher before RL; 0 = RL from random init."""
    warm_start_batch: int = 128
    """Warm start: teacher demonstrations per supervised step."""
    warm_start_lr: float = 3e-3
    """Warm start: AdamW peak learning rate (cosine decay to 0 over warm_start_steps)."""
    warm_start_dir: str | None = None
    """Warm start: folder of its checkpoint (default OUT/warm_start); reused when made with the same settings."""

    # --- task --------------------------------------------------------------------------------------------------------
    task: str = "addition"
    """Embedded task when no dataset is given: `addition` ('a+b=' -> zero-padded sum, reward = digits right)."""
    digits: int = 2
    """Addition task: digits per operand (1: '3+5=' -> '08'; 2: '31+57=' -> '088')."""
    reward: str = "exact"
    """Addition task: `exact` (1 for the exact answer, else 0) or `partial` (fraction of answer digits right)."""
    carry_drop: float = 0.8
    """Addition task: probability that the warm start's teacher drops each carry (its one mistake)."""
    dataset: str | None = None
    """JSONL file with one {"prompt": ..., "answer": ...} per line; reward = math answer match (last number or boxed)."""
    chat_template: bool = False
    """Dataset prompts: wrap each prompt as a user message with the tokenizer's chat template."""
    max_new_tokens: int = 0
    """Response length limit; 0 = the task's own (addition: digits + 1; dataset: 256)."""

    # --- rollout -----------------------------------------------------------------------------------------------------
    prompts_per_step: int = 32
    """Prompts per rollout batch (global, over all ranks); must be divisible by num_minibatches * world size."""
    group_size: int = 8
    """G: responses sampled per prompt; advantages are computed within each group."""
    temperature: float = 1.0
    """Sampling temperature; log-probs and entropies are those of the tempered policy softmax(z / T)."""

    # --- algorithm ---------------------------------------------------------------------------------------------------
    preset: str = "ce_gppo_1p5b"
    """Loss by name (cegppo.presets.PRESETS): CE-GPPO's settings, or the family's cispo, sapo, gspo; the fields below override single values."""
    eps_low: float | None = None
    """Override: lower clip width (interval starts at 1 - eps_low)."""
    eps_high: float | None = None
    """Override: upper clip width (interval ends at 1 + eps_high)."""
    beta_low: float | None = None
    """Override: beta_1, gradient scale of clip_low tokens (ratio < 1 - eps_low, A < 0)."""
    beta_high: float | None = None
    """Override: beta_2, gradient scale of clip_high tokens (ratio > 1 + eps_high, A > 0)."""
    dual_clip: str | None = None
    """Override: dual-clip constant c > 1, or `none` to switch it off."""
    advantage: str = "grpo"
    """Group advantage estimator: grpo, drgrpo or rloo (cegppo.torch.group_advantages)."""
    agg: str = "token-mean"
    """Loss aggregation (cegppo.AGG_MODES); normalizers are global over the mini-batch on all ranks."""
    update_epochs: int = 2
    """Passes over each rollout batch; with several mini-batches the ratios leave 1 and clipping acts."""
    num_minibatches: int = 4
    """Optimizer steps per epoch; each mini-batch holds prompts_per_step / num_minibatches whole groups."""
    lr: float = 2e-4
    """AdamW peak learning rate."""
    warmup_steps: int = 5
    """Linear learning-rate warm-up over this many training steps, then constant."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this value before each optimizer step; 0 = no clipping."""
    kl_coef: float = 0.0
    """Weight of the k3 KL penalty to a frozen copy of the initial policy (0 = no reference model)."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (loss -= entropy_coef * aggregated token entropy)."""
    fused_head: bool = False
    """Compute the loss with cegppo.torch.fused_linear_policy_loss (no (N, V) logits), for any member's preset."""

    def check(self, world_size: int = 1) -> None:
        """Raise ValueError (naming the field) for impossible settings, before anything is loaded or written."""

        def need(cond: bool, name: str, why: str) -> None:
            if not cond:
                raise ValueError(f"--{name.replace('_', '-')}={getattr(self, name)!r}: {why}")

        for f in dataclasses.fields(self):  # nan and inf pass every comparison below: refuse them first
            value = getattr(self, f.name)
            if isinstance(value, float):
                need(math.isfinite(value), f.name, "must be a finite number")
        need(not (self.resume and self.overwrite), "overwrite", "contradicts --resume (continue, or start afresh?)")
        need(self.total_steps >= 1, "total_steps", "must be >= 1")
        need(self.stop_at_step is None or self.stop_at_step >= 1, "stop_at_step", "must be >= 1")
        need(self.save_every >= 0, "save_every", "must be >= 0")
        need(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        need(self.threads >= 0, "threads", "must be >= 0")
        need(self.dtype in ("float32", "bfloat16"), "dtype", "must be float32 or bfloat16")
        need(self.hidden_size >= 1 and self.num_heads >= 1, "hidden_size", "must be >= 1")
        need(self.hidden_size % max(self.num_heads, 1) == 0, "num_heads", "must divide hidden_size")
        need(
            (self.hidden_size // max(self.num_heads, 1)) % 2 == 0,
            "num_heads",
            f"gives an odd head size {self.hidden_size}/{self.num_heads} (rotary embeddings need an even one)",
        )
        need(self.num_layers >= 1, "num_layers", "must be >= 1")
        need(self.task in TASKS, "task", f"must be one of {list(TASKS)}")
        need(1 <= self.digits <= 6, "digits", "must lie in [1, 6]")
        need(self.reward in ("exact", "partial"), "reward", "must be exact or partial")
        need(0.0 <= self.carry_drop <= 1.0, "carry_drop", "must lie in [0, 1]")
        need(self.warm_start_steps >= 0, "warm_start_steps", "must be >= 0")
        need(self.warm_start_batch >= 1, "warm_start_batch", "must be >= 1")
        need(self.warm_start_lr > 0, "warm_start_lr", "must be > 0")
        need(self.max_new_tokens >= 0, "max_new_tokens", "must be >= 0")
        need(self.prompts_per_step >= 1, "prompts_per_step", "must be >= 1")
        need(self.group_size >= 2, "group_size", "must be >= 2 (advantages compare samples within a group)")
        need(self.temperature > 0, "temperature", "must be > 0")
        need(self.preset in presets.PRESETS, "preset", f"must be one of {sorted(presets.PRESETS)}")
        need(self.advantage in cegppo.ADVANTAGE_ESTIMATORS, "advantage", f"must be one of {list(cegppo.ADVANTAGE_ESTIMATORS)}")
        need(self.agg in cegppo.AGG_MODES, "agg", f"must be one of {list(cegppo.AGG_MODES)}")
        need(self.update_epochs >= 1, "update_epochs", "must be >= 1")
        need(self.num_minibatches >= 1, "num_minibatches", "must be >= 1")
        need(
            self.prompts_per_step % (self.num_minibatches * world_size) == 0,
            "prompts_per_step",
            f"must be divisible by num_minibatches * world_size = {self.num_minibatches} * {world_size}",
        )
        need(self.lr > 0, "lr", "must be > 0")
        need(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0 (0 = no clipping)")
        need(self.kl_coef >= 0, "kl_coef", "must be >= 0")
        need(self.entropy_coef >= 0, "entropy_coef", "must be >= 0 (a bonus: loss -= entropy_coef * entropy)")
        need(not (self.fused_head and self.kl_coef > 0), "kl_coef", "the KL penalty needs per-token log-probs: not with --fused-head")
        cegppo_config(self)  # the loss's fields (ValueError naming eps/beta/dual_clip)
        need(device_problem(self.device) is None, "device", device_problem(self.device) or "")
        need(out_problem(self.out) is None, "out", out_problem(self.out) or "")
        if self.model is not None:
            need(os.path.isdir(self.model), "model", "is not a folder (a local Hugging Face checkpoint is expected)")
            need(
                os.path.isfile(os.path.join(self.model, "config.json")),
                "model",
                "has no config.json: not a Hugging Face checkpoint folder",
            )
        if self.dataset is not None:
            need(os.path.isfile(self.dataset), "dataset", "no such file")


def device_problem(device: str) -> str | None:
    """Why `device` cannot be used here (unknown name, CUDA absent, index out of range), or None."""
    import torch

    if device == "auto":
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return "is not a device: use cpu, cuda, cuda:N or auto"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available in this torch build or machine (use cpu or auto)"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"there are only {torch.cuda.device_count()} CUDA devices"
    elif dev.type != "cpu":
        return f"device type {dev.type!r} is not supported by the trainer (cpu, cuda)"
    return None


def out_problem(out: str) -> str | None:
    """Why the output folder cannot be created or written (a file is in the way, no write access), or None.

    Writing is tried (a temporary file in the nearest existing folder, removed at once): permission bits do not
    tell for root or for read-only file systems.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        return "exists and is not a folder"
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        return f"cannot write in {probe} ({e.strerror or e})"
    return None


TASKS = ("addition",)
"""Names of the embedded tasks (see cegppo.trainer.tasks)."""


OVERRIDE_FIELDS = ("eps_low", "eps_high", "beta_low", "beta_high", "dual_clip")
"""The loss fields that a single flag overrides (those of CEGPPOConfig; CISPO's and GSPO's configs have the eps)."""


def cegppo_config(cfg: TrainConfig) -> presets.PresetConfig:
    """The loss hyperparameters: the preset's config (CE-GPPO's, or a family member's: spec S14) with the explicit
    overrides applied (validated).

    An override of a field that the preset's config does not have (`--beta-low` with `--preset sapo`,
    `--dual-clip` with any member but CE-GPPO) raises ValueError naming the flag and the config's fields.
    """
    over, base = _overrides(cfg), presets.get(cfg.preset)
    fields = base.as_dict()
    for name in over:
        if name not in fields:
            raise ValueError(
                f"--{name.replace('_', '-')}={getattr(cfg, name)!r}: --preset {cfg.preset} is a {type(base).__name__}, "
                f"which has no {name} (its fields: {', '.join(fields)})"
            )
    return presets.get(cfg.preset, **over)


def _overrides(cfg: TrainConfig) -> dict[str, Any]:
    """The loss fields set by a flag (`OVERRIDE_FIELDS`), `--dual-clip none` parsed to None."""
    over: dict[str, Any] = {k: getattr(cfg, k) for k in OVERRIDE_FIELDS[:-1] if getattr(cfg, k) is not None}
    if cfg.dual_clip is not None:
        text = str(cfg.dual_clip).strip().lower()
        if text in ("none", "off", ""):
            over["dual_clip"] = None
        else:
            try:
                over["dual_clip"] = float(text)
            except ValueError:
                raise ValueError(f"--dual-clip={cfg.dual_clip!r}: must be a number > 1 or 'none'") from None
    return over


def field_docs(cls: type = TrainConfig) -> dict[str, str]:
    """The docstring under each dataclass field, by field name: the same text `--help` shows.

    Read by docstring_parser, the library tyro itself uses to turn these docstrings into help.
    """
    return {
        p.arg_name: (p.description or "").strip()
        for p in docstring_parser.parse_from_object(cls).params
        if p.args[:1] == ["attribute"]
    }


def parse_args(argv: list[str] | None = None, defaults: TrainConfig | None = None, prog: str = "cegppo-train") -> TrainConfig:
    """Build a TrainConfig from command-line arguments: one `--flag` per field, help = the field's docstring.

    The parser is tyro's, built from the dataclass: bools get `--x` / `--no-x`, `--dual-clip none`
    switches the dual clip off, and a bad value exits with status 2 naming the flag (as argparse does).
    """
    return tyro.cli(
        TrainConfig,
        args=argv,
        default=defaults or TrainConfig(),
        prog=prog,
        description=f"{TrainConfig.__doc__} `{prog.split()[0]} --version` prints the version.",
    )
