"""The CE-GPPO training loop, top to bottom (CleanRL style). docs/trainer.md lists every detail and metric.

`train` holds the loop; each part of a step is a named function below it:
  1. `collect_rollout`: P prompts (global), G samples each, tokens drawn with the run's generators; each response
     rewarded, group advantages A (GRPO / Dr.GRPO / RLOO) per sequence; old log-probs recorded (and the entropy of
     the sampling policy, and reference log-probs for KL), mini-batch by mini-batch;
  2. `update_minibatch`, update_epochs times over num_minibatches mini-batches of whole groups: one AdamW step
     each, loss = the preset's member of the family (cegppo.torch.family_policy_loss: for CE-GPPO's presets
     cegppo.torch.policy_loss itself) with token counts global over the mini-batch on all ranks;
  3. `reduce_step_metrics`: one JSON line of metrics (cegppo.trainer.metrics); a checkpoint every save_every steps.
`setup` makes everything a step needs (model, optimizer, generators, the run folder) once, before the loop.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, SupportsFloat

import cegppo.torch as cg
import torch
import torch.distributed as dist
from cegppo import presets

from . import checkpoint as ckpt
from .config import TrainConfig, cegppo_config
from .metrics import (
    METRICS,
    REGIONS,
    TIMING_METRICS,
    RolloutStats,
    UpdateStats,
    progress_bar,
    step_row,
    strict_json,
)
from .policy import build_char_tokenizer, build_tiny_model, load_policy
from .rollout import Batch, PolicyForward, generate, left_pad
from .run_folder import RESUME_MAY_CHANGE, claim_fresh_out, config_record, resume_checkpoint, run_summary
from .tasks import Task, addition_task, dataset_task
from .warm_start import needs_warm_start, warm_start, warm_start_folder

__all__ = ["METRICS", "RESUME_MAY_CHANGE", "TIMING_METRICS", "TrainingDiverged", "make_task", "train"]

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from tokenizers in torchrun workers


def train(cfg: TrainConfig) -> list[dict[str, float]]:
    """Run (or resume) training as configured; returns the metrics rows written by this call."""
    run = setup(cfg)
    rows: list[dict[str, float]] = []
    t_rl = time.perf_counter()
    with _StepLog(run) as log:
        for step in range(run.start_step + 1, run.end_step + 1):
            t0 = time.perf_counter()
            lr = _set_learning_rate(run, step)
            rollout = collect_rollout(run)
            stats = UpdateStats()
            for _epoch in range(cfg.update_epochs):
                for idx in rollout.minibatches:
                    update_minibatch(run, rollout, idx, step, stats)
            row = reduce_step_metrics(run, step, lr, rollout, stats, time.perf_counter() - t0)
            rows.append(row)
            log.write(row)
            if (cfg.save_every and step % cfg.save_every == 0) or step in (cfg.total_steps, run.end_step):
                save(run, step)
    finish(run, rl_seconds=time.perf_counter() - t_rl)
    return rows


# ---- set-up ---------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything the steps of one run share, made once by `setup` (CleanRL's globals, in one place)."""

    cfg: TrainConfig
    loss_cfg: presets.PresetConfig
    """The loss's hyperparameters: a CEGPPOConfig, or a family member's config (spec S14)."""
    task: Task
    max_new_tokens: int
    world: int
    rank: int
    device: torch.device
    out: Path
    model: Any
    ref_model: Any
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    forward: Any
    gens: dict[str, torch.Generator]
    owned: list[int]
    """Prompts (of the global batch) whose samples this rank generates and trains on."""
    start_step: int
    end_step: int
    warm_start_seconds: float
    warm_start_reused: bool | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(cfg: TrainConfig) -> Run:
    """Check everything checkable, claim or resume the run folder, make the policy, optimizer and generators.

    Nothing is loaded or written for an impossible config; nothing of a previous run is lost (run_folder).
    """
    world, rank, local_rank = _dist_env()
    cfg.check(world)
    loss_cfg = cegppo_config(cfg)
    task = make_task(cfg)  # reads and validates a --dataset file completely
    device = _device(cfg, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out, is_main = Path(cfg.out), rank == 0
    latest = resume_checkpoint(cfg, out, loss_cfg, announce=is_main) if cfg.resume else None
    if not cfg.resume and is_main:
        claim_fresh_out(cfg, out)

    # The policy: the warm start (made once, by rank 0), a --model folder, or a random init.
    t_warm = time.perf_counter()
    init_from, warm_reused = cfg.model, None
    if needs_warm_start(cfg, task):
        if is_main:
            warm_reused = warm_start(cfg, task, progress=cfg.progress)[1]
        if world > 1:
            dist.barrier()
        init_from = str(warm_start_folder(cfg))
    warm_seconds = time.perf_counter() - t_warm
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    if init_from is not None:
        model, tokenizer = load_policy(init_from, dtype)
    else:
        tokenizer = build_char_tokenizer(task.alphabet)
        model = build_tiny_model(len(tokenizer), cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.seed).to(dtype)
    model.to(device)
    model.eval()  # no dropout: the policy that samples is the policy that is scored (ratio = 1 before updates)
    ref_model = copy.deepcopy(model).requires_grad_(False) if cfg.kl_coef > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Prompts and sampling noise each come from their own generator (same on every rank: global batches).
    gens = {
        "task": torch.Generator().manual_seed(cfg.seed * 1_000_003 + 1),
        "sample": torch.Generator().manual_seed(cfg.seed * 1_000_003 + 2),
    }

    start_step = 0
    if latest is not None:
        start_step = _load_checkpoint(latest, model, optimizer, gens, device)
        if is_main:
            ckpt.truncate_metrics(out / "metrics.jsonl", start_step)
            print(f"resuming from {latest} (step {start_step})", file=sys.stderr)
    elif is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("")  # a fresh run (claim_fresh_out checked that nothing is lost)
        ckpt.write_text_atomic(out / "config.json", json.dumps(config_record(cfg, loss_cfg), indent=2))
    if world > 1:
        dist.barrier()

    forward: Any = PolicyForward(model)
    if world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    return Run(
        cfg=cfg, loss_cfg=loss_cfg, task=task, max_new_tokens=cfg.max_new_tokens or task.max_new_tokens,
        world=world, rank=rank, device=device, out=out, model=model, ref_model=ref_model, tokenizer=tokenizer,
        optimizer=optimizer, forward=forward, gens=gens,
        owned=_owned_prompts(cfg.prompts_per_step, cfg.num_minibatches, world, rank),
        start_step=start_step, end_step=min(cfg.total_steps, cfg.stop_at_step or cfg.total_steps),
        warm_start_seconds=warm_seconds, warm_start_reused=warm_reused,
    )  # fmt: skip


def make_task(cfg: TrainConfig) -> Task:
    """The task of a config: its --dataset if given, else the embedded --task."""
    if cfg.dataset is not None:
        return dataset_task(cfg.dataset, max_new_tokens=cfg.max_new_tokens or 256)
    return addition_task(cfg.digits, cfg.carry_drop, cfg.reward)


# ---- 1. rollout -----------------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    """One step's samples on this rank, with what the updates need and what the metrics report."""

    batch: Batch
    advantages: torch.Tensor
    """(B,) float32 per-sequence group advantages."""
    old_log_prob: torch.Tensor
    """(B, T) log pi_old of the sampled tokens (tempered)."""
    ref_log_prob: torch.Tensor | None
    """(B, T) log pi_ref with --kl-coef, else None."""
    minibatches: list[torch.Tensor]
    """Row indices of each mini-batch (whole groups)."""
    stats: RolloutStats


def collect_rollout(run: Run) -> Rollout:
    """Sample G responses per prompt of this rank's share of the global batch, reward them, compute group
    advantages and record the old (and reference) log-probs mini-batch by mini-batch."""
    cfg, g, tok = run.cfg, run.cfg.group_size, run.tokenizer
    pairs = run.task.sample(cfg.prompts_per_step, run.gens["task"])
    uniforms = torch.rand(cfg.prompts_per_step * g, run.max_new_tokens, generator=run.gens["sample"])
    rows_of = [p * g + j for p in run.owned for j in range(g)]
    texts = [pairs[p][0] for p in run.owned for _ in range(g)]
    answers = [pairs[p][1] for p in run.owned for _ in range(g)]
    if cfg.chat_template and cfg.dataset is not None:
        texts = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True) for t in texts]
    prompt_ids, prompt_mask = left_pad([tok(t, add_special_tokens=False)["input_ids"] for t in texts], tok.pad_token_id, run.device)
    batch = generate(
        run.model, prompt_ids, prompt_mask, uniforms[rows_of],
        eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, temperature=cfg.temperature,
    )  # fmt: skip
    responses = tok.batch_decode(torch.where(batch.response_mask, batch.response, tok.pad_token_id).tolist(), skip_special_tokens=True)
    rewards = torch.tensor([run.task.reward(r, a) for r, a in zip(responses, answers, strict=True)], dtype=torch.float64)
    correct = [run.task.correct(r, a) for r, a in zip(responses, answers, strict=True)]
    advantages = cg.group_advantages(rewards, g, cfg.advantage).to(device=run.device, dtype=torch.float32)
    flat = rewards.reshape(-1, g)

    # Old log-probs mini-batch by mini-batch: the shapes (and so the rounding) the updates will use.
    minibatch_of = [p % cfg.num_minibatches for p in run.owned]
    seq_mb = torch.tensor([minibatch_of[i // g] for i in range(len(rows_of))], device=run.device)
    minibatches = [torch.nonzero(seq_mb == k)[:, 0] for k in range(cfg.num_minibatches)]
    old_lp = torch.zeros(batch.response.shape, device=run.device)
    ref_lp = torch.zeros(batch.response.shape, device=run.device) if run.ref_model is not None else None
    entropy_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    with torch.no_grad():
        for idx in minibatches:
            sub = _select(batch, idx)
            logits = PolicyForward(run.model)(sub, cfg.temperature)
            old_lp[idx] = cg.token_log_probs(logits, sub.response)
            entropy_sum += torch.where(sub.response_mask, cg.entropy(logits), 0.0).sum(dtype=torch.float64)
            if ref_lp is not None:
                ref_lp[idx] = cg.token_log_probs(PolicyForward(run.ref_model)(sub, cfg.temperature), sub.response)
    stats = RolloutStats(
        sequences=float(len(rows_of)),  # summed over ranks: the global P * G
        reward_sum=float(rewards.sum()),
        reward_sq_sum=float((rewards**2).sum()),
        correct=float(sum(correct)),
        groups_with_correct=float(torch.tensor(correct).reshape(-1, g).any(dim=1).sum()),
        groups_with_signal=(flat != flat[:, :1]).any(dim=1).float().sum().item(),
        response_tokens=float(batch.response_mask.sum()),
        entropy_sum=float(entropy_sum),
    )
    return Rollout(batch, advantages, old_lp, ref_lp, minibatches, stats)


# ---- 2. updates -----------------------------------------------------------------------------------------------------


def update_minibatch(run: Run, rollout: Rollout, idx: torch.Tensor, step: int, stats: UpdateStats) -> None:
    """One AdamW step on the mini-batch `idx`; its losses and per-token diagnostics go into `stats`.

    Raises TrainingDiverged, before the optimizer step, on a non-finite loss or gradient norm.
    """
    cfg = run.cfg
    sub = _select(rollout.batch, idx)
    mask, adv, olp = sub.response_mask, rollout.advantages[idx], rollout.old_log_prob[idx]
    num_tokens, num_seqs = cg.global_counts(mask)
    norm: dict[str, Any] = {"num_tokens": num_tokens, "num_seqs": num_seqs, "norm_length": float(run.max_new_tokens)}
    kl = torch.zeros((), device=run.device)
    token_metrics: Mapping[str, SupportsFloat]
    if cfg.fused_head:
        hidden, weight, bias = run.forward(sub, 1.0, hidden=True)
        pg_loss, token_metrics = cg.fused_linear_policy_loss(
            hidden, weight, sub.response, olp, adv, mask, run.loss_cfg, bias=bias,
            temperature=cfg.temperature, entropy_coef=cfg.entropy_coef, agg=cfg.agg, **norm,
        )  # fmt: skip
        loss = pg_loss
    else:
        logits = run.forward(sub, cfg.temperature)
        log_prob = cg.token_log_probs(logits, sub.response)
        # The run's agg for every member (not each paper's own), so that runs differ only in F_t.
        pg_loss = cg.family_policy_loss(log_prob, olp, adv, mask, run.loss_cfg, cfg.agg, **norm)
        loss = pg_loss
        if rollout.ref_log_prob is not None:
            # k3 of KL(pi || pi_ref) as a loss term: differentiable and aggregated like pg_loss. cegppo's
            # approx_kl_k3 is another quantity (a detached token mean of KL(pi_old || pi)).
            d = rollout.ref_log_prob[idx] - log_prob
            kl = cg.aggregate_loss(torch.expm1(d) - d, mask, cfg.agg, **norm)
            loss = loss + cfg.kl_coef * kl
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * cg.aggregate_loss(cg.entropy(logits), mask, cfg.agg, **norm)
    run.optimizer.zero_grad(set_to_none=True)
    # DDP averages gradients over ranks; with global normalizers the rank losses SUM to the batch loss.
    (loss * run.world).backward()
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(run.model.parameters(), max_norm))
    loss_value = float(loss.detach())
    if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
        # Before optimizer.step: the weights, the log and the checkpoints stay as they were.
        raise TrainingDiverged(step, stats.updates + 1, loss_value, grad_norm, ckpt.latest_checkpoint(run.out))
    run.optimizer.step()

    tokens = float(mask.sum())
    stats.add_update(tokens=tokens, loss=loss_value, pg_loss=float(pg_loss.detach()), kl_ref=float(kl.detach()), grad_norm=grad_norm)
    if not cfg.fused_head:
        with torch.no_grad():
            token_metrics = _token_metrics(run, logits.detach(), log_prob, olp, adv, sub.response, mask, norm)
    stats.add_token_metrics(token_metrics, tokens)


def _token_metrics(
    run: Run, logits: torch.Tensor, log_prob: torch.Tensor, olp: torch.Tensor, adv: torch.Tensor,
    ids: torch.Tensor, mask: torch.Tensor, norm: dict[str, Any],
) -> dict[str, float]:  # fmt: skip
    """cegppo.torch.family_metrics (policy_metrics itself for CE-GPPO's presets) plus what the fused head also
    reports: the first-order entropy change by the member's regions (docs/spec.md S10, paper Eq. 7: the logits'
    step dz = w (e_a - pi) with w = -d pg_loss / d log_prob = c_t F_t A_t, F_t the member's, a unit step), and the
    sum of pi_old over the clipped tokens."""
    cfg = run.loss_cfg
    m = {k: float(v) for k, v in cg.family_metrics(log_prob, olp, adv, mask, cfg).items()}
    c = cg.aggregation_weights(mask, run.cfg.agg, **norm)
    w = torch.where(mask, c * cg.family_grad_weight(log_prob, olp, adv, mask, cfg) * adv[:, None], 0.0)
    dh = cg.entropy_change_first_order(logits, ids, w)
    # FamilyMember's fields are typed with the reference's NumPy signatures; the torch table's take tensors.
    member: Any = cg.FAMILY[type(cfg)]
    regions = member.regions(log_prob, olp, adv, mask, cfg)
    for r in REGIONS:
        m[f"entropy_change_{r}"] = float(torch.where(getattr(regions, r) & mask, dh, 0.0).sum())
    for r in ("clip_low", "clip_high"):
        m[f"old_prob_sum_{r}"] = float(torch.where(getattr(regions, r) & mask, olp.exp(), 0.0).sum())
    return m


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient norm: the run stops before applying it (the CLI exits with status 3)."""

    def __init__(self, step: int, update: int, loss: float, grad_norm: float, last: Path | None) -> None:
        where = f"the last complete checkpoint is {last}" if last is not None else "no checkpoint was written yet"
        super().__init__(
            f"training diverged at step {step}, update {update}: loss {loss}, gradient norm {grad_norm}. "
            f"Stopped before applying it; metrics.jsonl holds the steps before {step} and {where}. "
            "Lower --lr (or raise --max-grad-norm's protection) and resume or start again."
        )


# ---- 3. metrics, checkpoints, the end of the run --------------------------------------------------------------------


def reduce_step_metrics(run: Run, step: int, lr: float, rollout: Rollout, stats: UpdateStats, seconds: float) -> dict[str, float]:
    """The step's metrics row, every sum reduced over ranks (one float64 all-reduce, and one max)."""
    rollout_sums, update_sums = _sum_over_ranks(run.device, rollout.stats.sums(), stats.sums())
    reduced = stats.with_sums(update_sums)
    reduced.ratio_max = _all_reduce([stats.ratio_max], run.device, dist.ReduceOp.MAX if run.world > 1 else None)[0]
    rollout_total = RolloutStats(**rollout_sums)
    return step_row(step, lr, rollout_total, reduced, run.cfg.prompts_per_step, run.world, seconds)


def save(run: Run, step: int) -> None:
    """A complete checkpoint of the step (rank 0 writes; every rank waits)."""
    if run.is_main:
        state = {"step": step, "optimizer": run.optimizer.state_dict(), "rng": _rng_state(run.gens)}
        ckpt.save_checkpoint(run.out, step, run.model, run.tokenizer, state, run.cfg.keep_checkpoints)
    if run.world > 1:
        dist.barrier()


def finish(run: Run, rl_seconds: float) -> None:
    """Plots and OUT/summary.json (rank 0), after the last step."""
    t_plots = time.perf_counter()
    if run.is_main and run.cfg.plots:
        from .plots import plot_run

        plot_run(run.out)
    if run.is_main:
        times = {"warm_start_s": run.warm_start_seconds, "rl_s": rl_seconds, "plots_s": time.perf_counter() - t_plots}
        summary = run_summary(run.out, times, run.warm_start_reused)
        ckpt.write_text_atomic(run.out / "summary.json", json.dumps(summary, indent=2))
    if run.world > 1:
        dist.barrier()


class _StepLog:
    """metrics.jsonl (strict JSON, flushed per line), TensorBoard and the progress bar of rank 0; closes them all,
    and on Ctrl-C names the checkpoint to resume from."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.file = open(run.out / "metrics.jsonl", "a", encoding="utf-8") if run.is_main else None
        self.writer = self.bar = None
        if run.is_main and run.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run.out / "tensorboard"))
        if run.is_main and run.cfg.progress:
            self.bar = progress_bar(run.cfg.total_steps, "cegppo-train", initial=run.start_step)

    def __enter__(self) -> _StepLog:
        return self

    def write(self, row: dict[str, float]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(strict_json(row), allow_nan=False) + "\n")
            self.file.flush()
        if self.writer is not None:
            for k, v in row.items():
                if k != "step" and math.isfinite(v):
                    self.writer.add_scalar(k, v, row["step"])
        if self.bar is not None:  # the figures first, so that the line the update writes carries this step's
            self.bar.set_postfix(
                reward=f"{row['reward']:.3f}", acc=f"{row['accuracy']:.2f}", H=f"{row['entropy']:.3f}",
                clip=f"{row['clip_frac']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}", refresh=False,
            )  # fmt: skip
            self.bar.update(1)

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        for closable in (self.bar, self.file, self.writer):
            if closable is not None:
                closable.close()
        if kind is KeyboardInterrupt and self.run.is_main:
            last = ckpt.latest_checkpoint(self.run.out)
            print(f"\ninterrupted; the last complete checkpoint is {last} (continue with --resume)", file=sys.stderr)


# ---- small helpers --------------------------------------------------------------------------------------------------


def _dist_env() -> tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's environment (1, 0, 0 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def _set_learning_rate(run: Run, step: int) -> float:
    """Linear warm-up over warmup_steps steps (step is 1-based), then constant; set on the optimizer."""
    cfg = run.cfg
    lr = cfg.lr if cfg.warmup_steps == 0 else cfg.lr * min(1.0, step / cfg.warmup_steps)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    return lr


def _owned_prompts(num_prompts: int, num_minibatches: int, world: int, rank: int) -> list[int]:
    """Prompts of this rank: prompt p is in mini-batch p % M and on rank (p // M) % W.

    So global mini-batch k is {p : p % M = k} whatever the world size (DDP equivalence).
    """
    return [p for p in range(num_prompts) if (p // num_minibatches) % world == rank]


def _load_checkpoint(latest: Path, model: Any, optimizer: torch.optim.Optimizer, gens: dict[str, torch.Generator], device: torch.device) -> int:
    """Weights, AdamW state and every RNG state of a checkpoint; returns its step."""
    from safetensors.torch import load_file

    state = ckpt.load_trainer_state(latest)
    result = model.load_state_dict(load_file(str(latest / ckpt.WEIGHTS_FILE), device=str(device)), strict=False)
    untied = [k for k in result.missing_keys if "lm_head" not in k]  # save_pretrained drops tied heads
    if result.unexpected_keys or untied:
        raise ValueError(f"--resume: {latest} does not match the model ({result.unexpected_keys or untied})")
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(gens, state["rng"])
    return int(state["step"])


def _rng_state(gens: dict[str, torch.Generator]) -> dict[str, Any]:
    state: dict[str, Any] = {f"gen_{k}": g.get_state() for k, g in gens.items()}
    state["torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(gens: dict[str, torch.Generator], state: dict[str, Any]) -> None:
    for k, g in gens.items():
        g.set_state(state[f"gen_{k}"])
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def _all_reduce(values: list[float], device: torch.device, op: Any = None) -> list[float]:
    """Sum (or `op`) a list of floats over ranks in one float64 all-reduce."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.tolist()


def _sum_over_ranks(device: torch.device, *groups: Mapping[str, float]) -> list[dict[str, float]]:
    """Each group of named sums, summed over ranks, in one float64 all-reduce."""
    total = iter(_all_reduce([v for group in groups for v in group.values()], device))
    return [{k: next(total) for k in group} for group in groups]


def _select(batch: Batch, idx: torch.Tensor) -> Batch:
    """The rows `idx` of a batch."""
    return Batch(batch.prompt_ids[idx], batch.prompt_mask[idx], batch.response[idx], batch.response_mask[idx])
