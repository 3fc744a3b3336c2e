"""The CE-GPPO training loop, top to bottom (CleanRL style). docs/trainer.md lists every detail and metric.

One training step:
  1. rollout: P prompts (global), G samples each, tokens drawn with the run's generators;
  2. reward each response, group advantages A (GRPO / Dr.GRPO / RLOO) per sequence;
  3. record old log-probs (and the entropy of the sampling policy, and reference log-probs for KL);
  4. update_epochs passes over num_minibatches mini-batches of whole groups, one AdamW step each,
     loss = CE-GPPO (cegppo.torch.policy_loss) with token counts global over the mini-batch on all ranks;
  5. log one JSON line of metrics, checkpoint every save_every steps.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import cegppo.torch as cg
import torch
import torch.distributed as dist

from . import checkpoint as ckpt
from .config import TrainConfig, cegppo_config
from .policy import build_char_tokenizer, build_tiny_model, load_policy
from .rollout import Batch, PolicyForward, generate, left_pad
from .tasks import Task, addition_task, dataset_task
from .warm_start import needs_warm_start, warm_start, warm_start_folder

__all__ = ["METRICS", "RESUME_MAY_CHANGE", "TIMING_METRICS", "TrainingDiverged", "make_task", "train"]

METRICS: dict[str, str] = {
    "step": "training step (1-based)",
    "lr": "learning rate of this step (after warm-up)",
    "reward": "mean reward of the step's P * G responses",
    "reward_std": "standard deviation of those rewards",
    "accuracy": "fraction of responses the task counts as correct (exact answer)",
    "groups_with_signal": "fraction of groups whose rewards are not all equal (others have A = 0)",
    "response_length": "mean response length in tokens (eos included)",
    "entropy": "mean token entropy of the sampling policy over response tokens (nats, at temperature T)",
    "loss": "total loss (CE-GPPO + KL + entropy terms), mean over the step's optimizer updates",
    "pg_loss": "CE-GPPO policy loss, mean over updates",
    "kl_ref": "k3 estimate of KL(pi || pi_ref) per token, mean over updates (0 without --kl-coef)",
    "clip_low_frac": "fraction of update tokens in clip_low (ratio < 1 - eps_low, A < 0)",
    "clip_high_frac": "fraction of update tokens in clip_high (ratio > 1 + eps_high, A > 0)",
    "dual_clip_frac": "fraction of update tokens in dual_clip (A < 0, ratio > c)",
    "inside_frac": "fraction of update tokens inside (everything else, A = 0 included)",
    "clip_frac": "clip_low_frac + clip_high_frac",
    "ratio_mean": "mean ratio pi / pi_old over update tokens",
    "ratio_max": "max ratio over update tokens",
    "approx_kl": "k3 estimate of KL(pi_old || pi) over update tokens (how far the updates moved)",
    "grad_weight_abs_mean": "mean |F_t| over update tokens (spec S4)",
    "dH_clip_low": "first-order entropy change from clip_low tokens, summed over updates (see docs)",
    "dH_clip_high": "same, clip_high tokens",
    "dH_dual_clip": "same, dual_clip tokens (always 0: F = 0)",
    "dH_inside": "same, inside tokens",
    "dH_total": "sum of the four dH_ values",
    "clip_low_old_prob": "mean old probability pi_old(a_t) of the clip_low tokens over updates (null if none or --fused-head)",
    "clip_high_old_prob": "same, clip_high tokens: low values mean the clipped tokens are tail tokens (docs/experiments.md)",
    "grad_norm": "global gradient norm before clipping, mean over updates",
    "tokens_per_s": "response tokens of the step / wall time of the step",
    "step_time_s": "wall time of the step (rollout + updates)",
}
"""Every key of metrics.jsonl and what it means (docs/trainer.md reproduces this table)."""

TIMING_METRICS = ("tokens_per_s", "step_time_s")
"""Keys that depend on wall time (everything else is bit-reproducible on CPU)."""

_REGIONS = ("clip_low", "clip_high", "dual_clip", "inside")

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from tokenizers in torchrun workers


def make_task(cfg: TrainConfig) -> Task:
    """The task of a config: its --dataset if given, else the embedded --task."""
    if cfg.dataset is not None:
        return dataset_task(cfg.dataset, max_new_tokens=cfg.max_new_tokens or 256)
    return addition_task(cfg.digits, cfg.carry_drop, cfg.reward)


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


def _learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over warmup_steps steps (step is 1-based), then constant."""
    if cfg.warmup_steps == 0:
        return cfg.lr
    return cfg.lr * min(1.0, step / cfg.warmup_steps)


def _owned_prompts(num_prompts: int, num_minibatches: int, world: int, rank: int) -> list[int]:
    """Prompts of this rank: prompt p is in mini-batch p % M and on rank (p // M) % W.

    So global mini-batch k is {p : p % M = k} whatever the world size (DDP equivalence).
    """
    return [p for p in range(num_prompts) if (p // num_minibatches) % world == rank]


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


def train(cfg: TrainConfig) -> list[dict[str, float]]:
    """Run (or resume) training as configured; returns the metrics rows written by this call."""
    # ---- 0. checks first: nothing is loaded or written for an impossible config -------------------------------------
    world, rank, local_rank = _dist_env()
    cfg.check(world)
    loss_cfg = cegppo_config(cfg)
    task = make_task(cfg)  # reads and validates a --dataset file completely
    max_new_tokens = cfg.max_new_tokens or task.max_new_tokens
    fused_loss = None
    if cfg.fused_head:
        fused_loss = getattr(cg, "fused_linear_policy_loss", None)
        if fused_loss is None:
            raise ValueError("--fused-head: this cegppo.torch has no fused_linear_policy_loss")
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
    out = Path(cfg.out)
    is_main = rank == 0
    # The checkpoint to resume from, or a fresh start; refuses (before writing anything) whatever would lose data.
    latest = _resume_checkpoint(cfg, out, loss_cfg, announce=is_main) if cfg.resume else None
    if not cfg.resume and is_main:
        _claim_fresh_out(cfg, out)

    # ---- 1. policy, optimizer, generators ---------------------------------------------------------------------------
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    t_start = time.perf_counter()
    init_from = cfg.model
    warm_reused = None
    if needs_warm_start(cfg, task):
        if is_main:
            warm_reused = warm_start(cfg, task, progress=cfg.progress)[1]
        if world > 1:
            dist.barrier()
        init_from = str(warm_start_folder(cfg))
    warm_seconds = time.perf_counter() - t_start
    if init_from is not None:
        model, tokenizer = load_policy(init_from, dtype)
    else:
        tokenizer = build_char_tokenizer(task.alphabet)
        model = build_tiny_model(len(tokenizer), cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.seed).to(dtype)
    model.to(device)
    model.eval()  # no dropout: the policy that samples is the policy that is scored (ratio = 1 before updates)
    ref_model = None
    if cfg.kl_coef > 0:
        ref_model = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Prompts and sampling noise each come from their own generator (same on every rank: global batches).
    gens = {
        "task": torch.Generator().manual_seed(cfg.seed * 1_000_003 + 1),
        "sample": torch.Generator().manual_seed(cfg.seed * 1_000_003 + 2),
    }
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id

    start_step = 0
    if latest is not None:
        from safetensors.torch import load_file

        state = ckpt.load_trainer_state(latest)
        result = model.load_state_dict(load_file(str(latest / "model.safetensors"), device=str(device)), strict=False)
        untied = [k for k in result.missing_keys if "lm_head" not in k]  # save_pretrained drops tied heads
        if result.unexpected_keys or untied:
            raise ValueError(f"--resume: {latest} does not match the model ({result.unexpected_keys or untied})")
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(gens, state["rng"])
        start_step = int(state["step"])
        if is_main:
            ckpt.truncate_metrics(out / "metrics.jsonl", start_step)
            print(f"resuming from {latest} (step {start_step})", file=sys.stderr)
    elif is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("")  # a fresh run (the folder was checked above: nothing is lost)
        ckpt.write_text_atomic(out / "config.json", json.dumps(_config_record(cfg, loss_cfg), indent=2))
    if world > 1:
        dist.barrier()

    forward: Any = PolicyForward(model)
    if world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None
        )
    owned = _owned_prompts(cfg.prompts_per_step, cfg.num_minibatches, world, rank)
    minibatch_of = [p % cfg.num_minibatches for p in owned]
    g = cfg.group_size
    end_step = min(cfg.total_steps, cfg.stop_at_step or cfg.total_steps)

    writer = None
    if is_main and cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))
    bar = None
    if is_main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.total_steps, initial=start_step, desc="cegppo-train", dynamic_ncols=True)
    log = open(out / "metrics.jsonl", "a", encoding="utf-8") if is_main else None
    rows: list[dict[str, float]] = []
    t_rl = time.perf_counter()

    try:
        for step in range(start_step + 1, end_step + 1):
            t0 = time.perf_counter()
            lr = _learning_rate(cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr

            # ---- 2. rollout: global prompts and noise, this rank's share -----------------------------------------------
            pairs = task.sample(cfg.prompts_per_step, gens["task"])
            uniforms = torch.rand(cfg.prompts_per_step * g, max_new_tokens, generator=gens["sample"])
            rows_of = [p * g + j for p in owned for j in range(g)]
            texts = [pairs[p][0] for p in owned for _ in range(g)]
            answers = [pairs[p][1] for p in owned for _ in range(g)]
            if cfg.chat_template and cfg.dataset is not None:
                texts = [
                    tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
                    for t in texts
                ]
            encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
            prompt_ids, prompt_mask = left_pad(encoded, pad_id, device)
            batch = generate(
                model, prompt_ids, prompt_mask, uniforms[rows_of], eos_id=eos_id, pad_id=pad_id, temperature=cfg.temperature
            )
            responses = tokenizer.batch_decode(
                torch.where(batch.response_mask, batch.response, pad_id).tolist(), skip_special_tokens=True
            )
            rewards = torch.tensor([task.reward(r, a) for r, a in zip(responses, answers, strict=True)], dtype=torch.float64)
            correct = [task.correct(r, a) for r, a in zip(responses, answers, strict=True)]
            advantages = cg.group_advantages(rewards, g, cfg.advantage).to(device=device, dtype=torch.float32)
            flat = rewards.reshape(-1, g)
            signal = (flat != flat[:, :1]).any(dim=1).float().sum().item()

            # ---- 3. old log-probs (mini-batch by mini-batch: the shapes the updates will use) ------------------------
            seq_mb = torch.tensor([minibatch_of[i // g] for i in range(len(rows_of))], device=device)
            mbs = [torch.nonzero(seq_mb == k)[:, 0] for k in range(cfg.num_minibatches)]
            old_lp = torch.zeros(batch.response.shape, device=device)
            ref_lp = torch.zeros(batch.response.shape, device=device)
            ent_sum = torch.zeros((), dtype=torch.float64, device=device)
            with torch.no_grad():
                for idx in mbs:
                    sub = _select(batch, idx)
                    logits = PolicyForward(model)(sub, cfg.temperature)
                    old_lp[idx] = cg.token_log_probs(logits, sub.response)
                    ent_sum += torch.where(sub.response_mask, cg.entropy(logits), 0.0).sum(dtype=torch.float64)
                    if ref_model is not None:
                        ref_logits = PolicyForward(ref_model)(sub, cfg.temperature)
                        ref_lp[idx] = cg.token_log_probs(ref_logits, sub.response)

            # ---- 4. updates ---------------------------------------------------------------------------------------------
            acc: dict[str, float] = {k: 0.0 for k in ("loss", "pg_loss", "kl_ref", "grad_norm", "tokens")}
            acc.update({f"n_{k}": 0.0 for k in ("clip_low_frac", "clip_high_frac", "dual_clip_frac", "inside_frac")})
            acc.update({k: 0.0 for k in ("ratio_sum", "kl_sum", "fabs_sum")})
            acc.update({f"dH_{r}": 0.0 for r in _REGIONS})
            acc.update({k: 0.0 for k in ("p_clip_low", "p_clip_high")})  # sums of pi_old over those tokens
            ratio_max = 0.0
            updates = 0
            for _epoch in range(cfg.update_epochs):
                for idx in mbs:
                    sub = _select(batch, idx)
                    mask = sub.response_mask
                    adv, olp = advantages[idx], old_lp[idx]
                    num_tokens, num_seqs = cg.global_counts(mask)
                    norm = dict(num_tokens=num_tokens, num_seqs=num_seqs, norm_length=float(max_new_tokens))
                    if fused_loss is not None:
                        hidden, weight, bias = forward(sub, 1.0, hidden=True)
                        pg_loss, fused_metrics = fused_loss(
                            hidden, weight, sub.response, olp, adv, mask, loss_cfg, bias=bias,
                            temperature=cfg.temperature, entropy_coef=cfg.entropy_coef, agg=cfg.agg, **norm,
                        )  # fmt: skip
                        loss, kl = pg_loss, torch.zeros(())
                        log_prob = None
                    else:
                        logits = forward(sub, cfg.temperature)
                        log_prob = cg.token_log_probs(logits, sub.response)
                        pg_loss = cg.policy_loss(log_prob, olp, adv, mask, loss_cfg, cfg.agg, **norm)
                        loss = pg_loss
                        kl = torch.zeros((), device=device)
                        if ref_model is not None:
                            d = ref_lp[idx] - log_prob
                            kl = cg.aggregate_loss(torch.expm1(d) - d, mask, cfg.agg, **norm)
                            loss = loss + cfg.kl_coef * kl
                        if cfg.entropy_coef > 0:
                            loss = loss - cfg.entropy_coef * cg.aggregate_loss(cg.entropy(logits), mask, cfg.agg, **norm)
                    optimizer.zero_grad(set_to_none=True)
                    # DDP averages gradients over ranks; with global normalizers the rank losses SUM to the batch loss.
                    (loss * world).backward()
                    max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                    loss_value = float(loss.detach())
                    if not (math.isfinite(loss_value) and math.isfinite(float(grad_norm))):
                        # Before optimizer.step: the weights, the log and the checkpoints stay as they were.
                        raise TrainingDiverged(step, updates + 1, loss_value, float(grad_norm), ckpt.latest_checkpoint(out))
                    optimizer.step()
                    updates += 1

                    # diagnostics of this update (local sums; reduced over ranks below)
                    n_local = float(mask.sum())
                    acc["tokens"] += n_local
                    acc["loss"] += loss_value
                    acc["pg_loss"] += float(pg_loss.detach())
                    acc["kl_ref"] += float(kl.detach())
                    acc["grad_norm"] += float(grad_norm) / world  # identical on all ranks
                    if fused_loss is not None:
                        _accumulate_fused(acc, fused_metrics, n_local)
                        ratio_max = max(ratio_max, float(fused_metrics.get("ratio_max", 0.0)))
                        continue
                    with torch.no_grad():
                        m = cg.policy_metrics(log_prob, olp, adv, mask, loss_cfg)
                        for k in ("clip_low_frac", "clip_high_frac", "dual_clip_frac", "inside_frac"):
                            acc[f"n_{k}"] += float(m[k]) * n_local
                        acc["ratio_sum"] += float(m["ratio_mean"]) * n_local
                        acc["kl_sum"] += float(m["approx_kl_k3"]) * n_local
                        acc["fabs_sum"] += float(m["grad_weight_abs_mean"]) * n_local
                        ratio_max = max(ratio_max, float(m["ratio_max"]))
                        # First-order entropy change (docs/spec.md, paper Eq. 7): the logits' step dz = w (e_a - pi)
                        # with w = -d pg_loss / d log_prob = c_t F_t A_t (unit step size, eta = 1).
                        c = cg.aggregation_weights(mask, cfg.agg, **norm)
                        w = c * cg.grad_weight(log_prob, olp, adv, loss_cfg) * adv[:, None]
                        w = torch.where(mask, w, 0.0)
                        dh = cg.entropy_change_first_order(logits.detach(), sub.response, w)
                        regions = cg.token_regions(log_prob, olp, adv, loss_cfg)
                        for r in _REGIONS:
                            acc[f"dH_{r}"] += float(torch.where(getattr(regions, r) & mask, dh, 0.0).sum())
                        for r in ("clip_low", "clip_high"):
                            acc[f"p_{r}"] += float(torch.where(getattr(regions, r) & mask, olp.exp(), 0.0).sum())

            # ---- 5. metrics: global over ranks, one JSON line -----------------------------------------------------------
            n_resp = float(batch.response_mask.sum())
            keys = sorted(acc)
            local = [acc[k] for k in keys] + [
                float(rewards.sum()), float((rewards**2).sum()), float(sum(correct)), signal, n_resp, float(ent_sum),
            ]  # fmt: skip
            tot = _all_reduce(local, device)
            s = dict(zip(keys, tot[: len(keys)], strict=True))
            r_sum, r2_sum, n_correct, n_signal, n_resp_all, ent_all = tot[len(keys) :]
            ratio_max = _all_reduce([ratio_max], device, dist.ReduceOp.MAX if world > 1 else None)[0]
            n_seq = cfg.prompts_per_step * g
            ntok = max(s["tokens"], 1.0)
            reward_mean = r_sum / n_seq
            dt = time.perf_counter() - t0
            row: dict[str, float] = {
                "step": step,
                "lr": lr,
                "reward": reward_mean,
                "reward_std": math.sqrt(max(r2_sum / n_seq - reward_mean**2, 0.0)),
                "accuracy": n_correct / n_seq,
                "groups_with_signal": n_signal / cfg.prompts_per_step,
                "response_length": n_resp_all / n_seq,
                "entropy": ent_all / max(n_resp_all, 1.0),
                "loss": s["loss"] / updates,
                "pg_loss": s["pg_loss"] / updates,
                "kl_ref": s["kl_ref"] / updates,
                **{k: s[f"n_{k}"] / ntok for k in ("clip_low_frac", "clip_high_frac", "dual_clip_frac", "inside_frac")},
                "clip_frac": (s["n_clip_low_frac"] + s["n_clip_high_frac"]) / ntok,
                "ratio_mean": s["ratio_sum"] / ntok,
                "ratio_max": ratio_max,
                "approx_kl": s["kl_sum"] / ntok,
                "grad_weight_abs_mean": s["fabs_sum"] / ntok,
                **{
                    f"{r}_old_prob": s[f"p_{r}"] / s[f"n_{r}_frac"] if s[f"n_{r}_frac"] > 0 and fused_loss is None else math.nan
                    for r in ("clip_low", "clip_high")
                },
                **{f"dH_{r}": s[f"dH_{r}"] for r in _REGIONS},
                "dH_total": sum(s[f"dH_{r}"] for r in _REGIONS),
                "grad_norm": s["grad_norm"] / updates,
                "tokens_per_s": n_resp_all / dt,
                "step_time_s": dt,
            }
            rows.append(row)
            if log is not None:
                log.write(json.dumps(_strict_json(row), allow_nan=False) + "\n")
                log.flush()
            if writer is not None:
                for k, v in row.items():
                    if k != "step" and math.isfinite(v):
                        writer.add_scalar(k, v, step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    reward=f"{row['reward']:.3f}", acc=f"{row['accuracy']:.2f}", H=f"{row['entropy']:.3f}",
                    clip=f"{row['clip_frac']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}",
                )  # fmt: skip

            # ---- 6. checkpoint ----------------------------------------------------------------------------------------
            if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.total_steps or step == end_step:
                if is_main:
                    state = {"step": step, "optimizer": optimizer.state_dict(), "rng": _rng_state(gens)}
                    ckpt.save_checkpoint(out, step, model, tokenizer, state, cfg.keep_checkpoints)
                if world > 1:
                    dist.barrier()
    except KeyboardInterrupt:
        if is_main:
            last = ckpt.latest_checkpoint(out)
            print(
                f"\ninterrupted; the last complete checkpoint is {last} (continue with --resume)", file=sys.stderr
            )
        raise
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
        if writer is not None:
            writer.close()
    rl_seconds = time.perf_counter() - t_rl
    t_plots = time.perf_counter()
    if is_main and cfg.plots:
        from .plots import plot_run

        plot_run(out)
    if is_main:
        times = {"warm_start_s": warm_seconds, "rl_s": rl_seconds, "plots_s": time.perf_counter() - t_plots}
        ckpt.write_text_atomic(out / "summary.json", json.dumps(run_summary(out, times, warm_reused), indent=2))
    if world > 1:
        dist.barrier()
    return rows


def run_summary(out: Path, times: dict[str, float], warm_start_reused: bool | None) -> dict[str, Any]:
    """What OUT/summary.json holds: accuracy, reward and entropy over the first and last tenth of the whole run
    (at least 1, at most 10 steps), this call's phase times and where the plots are."""
    from .plots import read_metrics

    rows = read_metrics(out / "metrics.jsonl")
    n = max(1, min(10, len(rows) // 10))
    summary: dict[str, Any] = {"steps": len(rows), "window": n}
    for key in ("accuracy", "reward", "entropy"):
        vals = [float(r[key]) for r in rows]
        summary[key] = {"first": sum(vals[:n]) / n, "last": sum(vals[-n:]) / n} if vals else None
    summary["seconds"] = times
    summary["warm_start_reused"] = warm_start_reused
    summary["plots"] = str(out / "plots") if (out / "plots").is_dir() else None
    return summary


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient norm: the run stops before applying it (the CLI exits with status 3)."""

    def __init__(self, step: int, update: int, loss: float, grad_norm: float, last: Path | None) -> None:
        where = f"the last complete checkpoint is {last}" if last is not None else "no checkpoint was written yet"
        super().__init__(
            f"training diverged at step {step}, update {update}: loss {loss}, gradient norm {grad_norm}. "
            f"Stopped before applying it; metrics.jsonl holds the steps before {step} and {where}. "
            "Lower --lr (or raise --max-grad-norm's protection) and resume or start again."
        )


RESUME_MAY_CHANGE = (
    "out", "resume", "overwrite", "allow_config_change", "total_steps", "stop_at_step", "save_every",
    "keep_checkpoints", "device", "threads", "progress", "plots", "tensorboard",
)  # fmt: skip
"""Settings that --resume accepts changed: they decide how long, where and how visibly the run goes on, not
what it computes (device aside: the same computation, rounded by another chip). docs/trainer.md lists them."""


def _config_record(cfg: TrainConfig, loss_cfg: Any) -> dict[str, Any]:
    """What OUT/config.json holds: every setting, plus the resolved CE-GPPO hyperparameters."""
    return {**vars(cfg), "cegppo": loss_cfg.as_dict()}


def _claim_fresh_out(cfg: TrainConfig, out: Path) -> None:
    """A fresh run may only write where no previous run would be lost: refuse a used OUT unless --overwrite,
    which deletes that run's outputs (a warm start stays: it is reused only if made with the same settings)."""
    used = [name for name in ("config.json", "metrics.jsonl", "checkpoints") if (out / name).exists()]
    if not used:
        return
    if not cfg.overwrite:
        raise ValueError(
            f"--out={cfg.out!r} holds a previous run ({', '.join(used)}): add --resume to continue it, "
            "or --overwrite to delete it and start afresh"
        )
    for name in ("checkpoints", "plots", "tensorboard"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("metrics.jsonl", "config.json", "summary.json"):
        (out / name).unlink(missing_ok=True)


def _resume_checkpoint(cfg: TrainConfig, out: Path, loss_cfg: Any, announce: bool) -> Path | None:
    """The newest complete checkpoint of OUT (passing over incomplete ones, and saying why), after checking that
    the settings match the recorded ones; None when OUT has no checkpoint at all (the run starts at step 1).

    Raises ValueError, changing nothing, when checkpoints exist but none is complete, or a setting that changes
    the run differs from OUT/config.json without --allow-config-change.
    """
    latest, skipped = ckpt.resume_point(out)
    if latest is None and skipped:
        raise ValueError(f"--resume: no complete checkpoint in {out / 'checkpoints'} ({'; '.join(skipped)}); nothing was changed")
    if latest is None:
        if announce and (out / "metrics.jsonl").exists():
            print(f"--resume: {out} has no checkpoint yet; starting at step 1", file=sys.stderr)
        return None
    if announce:
        for note in skipped:
            print(f"--resume: passing over an incomplete checkpoint: {note}", file=sys.stderr)
    record_path = out / "config.json"
    try:
        recorded = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    now = _config_record(cfg, loss_cfg)
    if not isinstance(recorded, dict):
        if not cfg.allow_config_change:
            raise ValueError(f"--resume: {record_path} is missing or unreadable, so a changed setting could not be told; "
                             "add --allow-config-change to resume with the settings given")  # fmt: skip
        recorded = {}
    changed = {k: (recorded.get(k), v) for k, v in now.items() if k not in RESUME_MAY_CHANGE and recorded.get(k) != v}
    if changed and not cfg.allow_config_change:
        listed = ", ".join(f"--{k.replace('_', '-')} {a!r} -> {b!r}" for k, (a, b) in changed.items() if k != "cegppo")
        raise ValueError(
            f"--resume: settings differ from {record_path} ({listed or 'the CE-GPPO hyperparameters'}), which would "
            "change the run; resume with the recorded values, or add --allow-config-change (the change is recorded)"
        )
    if changed and announce:
        history = [*recorded.get("resume_changes", []), {"from_checkpoint": latest.name, "changes": changed}]
        ckpt.write_text_atomic(record_path, json.dumps({**now, "resume_changes": history}, indent=2, default=str))
    return latest


def _strict_json(row: dict[str, float]) -> dict[str, float | None]:
    """The row with every non-finite value as null: metrics.jsonl stays strict JSON (NaN is not JSON)."""
    return {k: (v if math.isfinite(v) else None) for k, v in row.items()}


def _select(batch: Batch, idx: torch.Tensor) -> Batch:
    """The rows `idx` of a batch."""
    return Batch(batch.prompt_ids[idx], batch.prompt_mask[idx], batch.response[idx], batch.response_mask[idx])


def _accumulate_fused(acc: dict[str, float], metrics: dict[str, Any], n_local: float) -> None:
    """Fold the fused head's metrics (same names as policy_metrics, plus dH_<region>) into the accumulators."""
    for k in ("clip_low_frac", "clip_high_frac", "dual_clip_frac", "inside_frac"):
        acc[f"n_{k}"] += float(metrics.get(k, 0.0)) * n_local
    acc["ratio_sum"] += float(metrics.get("ratio_mean", 0.0)) * n_local
    acc["kl_sum"] += float(metrics.get("approx_kl_k3", 0.0)) * n_local
    acc["fabs_sum"] += float(metrics.get("grad_weight_abs_mean", 0.0)) * n_local
    for r in _REGIONS:
        acc[f"dH_{r}"] += float(metrics.get(f"dH_{r}", metrics.get(f"entropy_change_{r}", 0.0)))

