"""What a training step logs: the keys of metrics.jsonl, the typed sums that one step's updates add up, and the
progress display.

An update contributes its loss, gradient norm and token counts plus the per-token diagnostics of CE-GPPO
(region fractions, ratios, |F_t|, the first-order entropy change by region). `UpdateStats` holds their sums
on one rank; `step_row` reduces them over ranks and turns them into the documented keys.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, SupportsFloat

from cegppo._progress import LogBar, is_terminal

__all__ = ["LOG_NAMES", "METRICS", "REGIONS", "TIMING_METRICS", "TOKEN_MEAN_KEYS", "TOKEN_SUM_KEYS", "RolloutStats",
           "UpdateStats", "progress_bar", "step_row", "strict_json"]

METRICS: dict[str, str] = {
    "step": "training step (1-based)",
    "lr": "learning rate of this step (after warm-up)",
    "reward": "mean reward of the step's P * G responses",
    "reward_std": "standard deviation of those rewards",
    "accuracy": "fraction of responses the task counts as correct (exact answer)",
    "pass_at_g": "fraction of the step's prompts with at least one correct response among the G of its group (pass@G)",
    "groups_with_signal": "fraction of groups whose rewards are not all equal (others have A = 0)",
    "response_length": "mean response length in tokens (eos included)",
    "entropy": "mean token entropy of the sampling policy over response tokens (nats, at temperature T)",
    "loss": "total loss (policy loss + KL + entropy terms), mean over the step's optimizer updates",
    "pg_loss": "policy loss of the preset's family member (CE-GPPO, CISPO, SAPO or GSPO), mean over updates",
    "kl_ref": "k3 estimate of KL(pi || pi_ref) per token, mean over updates (0 without --kl-coef)",
    "clip_low_frac": "fraction of update tokens in clip_low (ratio < 1 - eps_low, A < 0; other members: their own, spec S10)",
    "clip_high_frac": "fraction of update tokens in clip_high (ratio > 1 + eps_high, A > 0; other members: their own)",
    "dual_clip_frac": "fraction of update tokens in dual_clip (A < 0, ratio > c)",
    "inside_frac": "fraction of update tokens inside (everything else, A = 0 included)",
    "clip_frac": "clip_low_frac + clip_high_frac",
    "ratio_mean": "mean ratio pi / pi_old over update tokens",
    "ratio_max": "max ratio over update tokens",
    "approx_kl": "k3 estimate of KL(pi_old || pi) over update tokens (how far the updates moved)",
    "grad_weight_abs_mean": "mean |F_t| over update tokens, A = 0 tokens counting 0 (spec S10); SAPO: its gate's mean weight",
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

REGIONS = ("clip_low", "clip_high", "dual_clip", "inside")
"""The four regions of spec S3, in the order of cegppo's metrics."""

CLIPPED = ("clip_low", "clip_high")

TOKEN_MEAN_KEYS: tuple[str, ...] = (*(f"{r}_frac" for r in REGIONS), "ratio_mean", "approx_kl_k3",
                                    "grad_weight_abs_mean")
"""cegppo's per-token means (`cegppo.METRIC_KEYS`) that a step averages over its updates, weighted by tokens."""
TOKEN_SUM_KEYS: tuple[str, ...] = (*(f"entropy_change_{r}" for r in REGIONS), *(f"old_prob_sum_{r}" for r in CLIPPED))
"""Sums over an update's tokens that a step adds up: the first-order entropy change by region (the fused head's
`cegppo.FUSED_METRIC_KEYS` names) and pi_old summed over each clipped region (absent with --fused-head)."""
LOG_NAMES: dict[str, str] = {"approx_kl_k3": "approx_kl", **{f"entropy_change_{r}": f"dH_{r}" for r in REGIONS}}
"""cegppo's metric key -> its metrics.jsonl key, where the two differ: the log keeps the names that docs/trainer.md,
the plots and existing runs' files use (`METRICS`), so runs stay comparable."""


def _zeros(keys: tuple[str, ...]) -> Callable[[], dict[str, float]]:
    return lambda: dict.fromkeys(keys, 0.0)


@dataclass
class UpdateStats:
    """Sums over one step's updates on this rank (token-weighted where a metric is a per-token mean)."""

    updates: int = 0
    tokens: float = 0.0
    loss: float = 0.0
    pg_loss: float = 0.0
    kl_ref: float = 0.0
    grad_norm: float = 0.0
    token_weighted: dict[str, float] = field(default_factory=_zeros(TOKEN_MEAN_KEYS))
    """Each of `TOKEN_MEAN_KEYS` times the update's token count, summed over updates."""
    token_sums: dict[str, float] = field(default_factory=_zeros(TOKEN_SUM_KEYS))
    """Each of `TOKEN_SUM_KEYS` summed over updates."""
    old_prob_known: bool = True
    ratio_max: float = 0.0

    def add_update(self, *, tokens: float, loss: float, pg_loss: float, kl_ref: float, grad_norm: float) -> None:
        """One optimizer update: its losses, its gradient norm (identical on every rank) and its token count."""
        self.updates += 1
        self.tokens += tokens
        self.loss += loss
        self.pg_loss += pg_loss
        self.kl_ref += kl_ref
        self.grad_norm += grad_norm

    def add_token_metrics(self, m: Mapping[str, SupportsFloat], tokens: float) -> None:
        """The per-token diagnostics of one update, keyed as cegppo's policy_metrics / fused head key them
        (`TOKEN_MEAN_KEYS`, `ratio_max`, `TOKEN_SUM_KEYS`); a missing `old_prob_sum_<region>` marks the step's
        old probabilities unknown."""
        for key in TOKEN_MEAN_KEYS:
            self.token_weighted[key] += float(m.get(key, 0.0)) * tokens
        for key in TOKEN_SUM_KEYS:
            self.token_sums[key] += float(m.get(key, 0.0))
        self.ratio_max = max(self.ratio_max, float(m.get("ratio_max", 0.0)))
        self.old_prob_known = self.old_prob_known and all(f"old_prob_sum_{r}" in m for r in CLIPPED)

    def sums(self) -> dict[str, float]:
        """Every sum (not ratio_max, not updates) by name, for one all-reduce over ranks."""
        scalars = {"tokens": self.tokens, "loss": self.loss, "pg_loss": self.pg_loss, "kl_ref": self.kl_ref,
                   "grad_norm": self.grad_norm}
        return {**scalars, **self.token_weighted, **self.token_sums}

    def with_sums(self, reduced: Mapping[str, float]) -> UpdateStats:
        """A copy holding `reduced` (the `sums()` summed over ranks) in place of this rank's sums."""
        return dataclasses.replace(
            self,
            tokens=reduced["tokens"],
            loss=reduced["loss"],
            pg_loss=reduced["pg_loss"],
            kl_ref=reduced["kl_ref"],
            grad_norm=reduced["grad_norm"],
            token_weighted={k: reduced[k] for k in TOKEN_MEAN_KEYS},
            token_sums={k: reduced[k] for k in TOKEN_SUM_KEYS},
        )


@dataclass
class RolloutStats:
    """Sums over one step's rollout on this rank."""

    sequences: float
    reward_sum: float
    reward_sq_sum: float
    correct: float
    groups_with_correct: float
    groups_with_signal: float
    response_tokens: float
    entropy_sum: float

    def sums(self) -> dict[str, float]:
        """Every sum by name (the fields), for one all-reduce over ranks."""
        return dataclasses.asdict(self)


def step_row(
    step: int, lr: float, rollout: RolloutStats, stats: UpdateStats, groups: int, world: int, seconds: float
) -> dict[str, float]:
    """The metrics.jsonl row of a step from the rollout and update sums already reduced over ranks."""
    n_seq = rollout.sequences
    ntok = max(stats.tokens, 1.0)
    reward_mean = rollout.reward_sum / n_seq
    clipped = {r: stats.token_weighted[f"{r}_frac"] for r in REGIONS}  # the tokens of each region
    mean = {LOG_NAMES.get(k, k): stats.token_weighted[k] / ntok for k in TOKEN_MEAN_KEYS}
    dh = {LOG_NAMES[f"entropy_change_{r}"]: stats.token_sums[f"entropy_change_{r}"] for r in REGIONS}
    return {
        "step": step,
        "lr": lr,
        "reward": reward_mean,
        "reward_std": math.sqrt(max(rollout.reward_sq_sum / n_seq - reward_mean**2, 0.0)),
        "accuracy": rollout.correct / n_seq,
        "pass_at_g": rollout.groups_with_correct / groups,
        "groups_with_signal": rollout.groups_with_signal / groups,
        "response_length": rollout.response_tokens / n_seq,
        "entropy": rollout.entropy_sum / max(rollout.response_tokens, 1.0),
        "loss": stats.loss / stats.updates,
        "pg_loss": stats.pg_loss / stats.updates,
        "kl_ref": stats.kl_ref / stats.updates,
        **{f"{r}_frac": mean[f"{r}_frac"] for r in REGIONS},
        "clip_frac": (clipped["clip_low"] + clipped["clip_high"]) / ntok,
        "ratio_mean": mean["ratio_mean"],
        "ratio_max": stats.ratio_max,
        "approx_kl": mean["approx_kl"],
        "grad_weight_abs_mean": mean["grad_weight_abs_mean"],
        **{
            f"{r}_old_prob": stats.token_sums[f"old_prob_sum_{r}"] / clipped[r]
            if clipped[r] > 0 and stats.old_prob_known else math.nan
            for r in CLIPPED
        },
        **dh,
        "dH_total": sum(dh.values()),
        "grad_norm": stats.grad_norm / world / stats.updates,  # each rank added the (identical) global norm
        "tokens_per_s": rollout.response_tokens / seconds,
        "step_time_s": seconds,
    }


def strict_json(row: dict[str, float]) -> dict[str, float | None]:
    """The row with every non-finite value as null: metrics.jsonl stays strict JSON (NaN is not JSON)."""
    return {k: (v if math.isfinite(v) else None) for k, v in row.items()}


def progress_bar(total: int, desc: str, initial: int = 0) -> Any:
    """The progress display of a phase (warm start, RL): a tqdm bar on a terminal; where stderr is a file or a
    pipe (a log), plain lines at most every few seconds (`cegppo._progress.LogBar`), since every redraw of a
    bar, carriage return and all, would stay in the log. Both take `update`, `set_postfix` and `close`."""
    if is_terminal(sys.stderr):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)
    return LogBar(total, desc, initial=initial)
