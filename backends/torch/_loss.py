"""The CE-GPPO batch loss and its diagnostics in PyTorch (docs/spec.md clauses S3, S4, S8, S9, S10)."""

from __future__ import annotations

from typing import Any

from cegppo import _backend_core as core
from cegppo._config import CEGPPOConfig
from cegppo._metrics import METRIC_KEYS, REGION_NAMES, reduce_metrics
from cegppo._objective import TokenRegions
from cegppo._validation import check_aggregation

import torch

from ._objective import _grad_weight, _objective, _regions
from ._ops import OPS

__all__ = ["METRIC_KEYS", "metrics_from_regions", "policy_loss", "policy_metrics"]


def _prepare(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: CEGPPOConfig,
    validate: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The checked, cast inputs (`cegppo._backend_core.policy_inputs`) with masked positions zeroed."""
    lp, olp, adv, m = core.policy_inputs(OPS, log_prob, old_log_prob, advantages, cfg, mask, validate)
    return (*core.zero_masked(OPS, m, lp, olp, adv), m)


def policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: CEGPPOConfig,
    agg: str = "token-mean",
    num_tokens: Any = None,
    num_seqs: Any = None,
    *,
    norm_length: float | None = None,
    validate: bool = False,
) -> torch.Tensor:
    """The CE-GPPO loss: -J aggregated over valid tokens (arXiv 2509.20712 Eq. 8; spec S3, S8).

        loss = sum_t c_t (-J_t),   c from `aggregation_weights(mask, agg, ...)`
        J_t  = beta_low (1-eps_low) A exp(logr - sg(logr))   clip_low  (delta < 1-eps_low, A < 0)
             = beta_high (1+eps_high) A exp(logr - sg(logr)) clip_high (delta > 1+eps_high, A > 0)
             = c A                                           dual_clip (A < 0, delta > c)
             = A exp(logr)                                   inside    (everything else)

    with logr = log_prob - old_log_prob. Autograd gives d loss / d log_prob_t = -c_t F_t A_t
    (spec S4), equal to `cegppo.policy_loss_grad`. Numerics (spec S9): log-space regions, the exp
    argument is selected before exponentiating (no inf * 0 in backward, even for |logr| ~ 1e4),
    masked garbage is selected away first, an all-masked batch gives 0 and zero gradients, bf16 and
    fp16 are computed in float32, float64 stays float64. No host sync (unless `validate=True`):
    `torch.compile(policy_loss, fullgraph=True)` compiles without graph breaks.

    Args:
        log_prob: (B, T) log-probs of the sampled tokens under the current policy (differentiable).
        old_log_prob: (B, T) log-probs recorded at rollout (treated as a constant).
        advantages: (B, T) per token, or (B,) per sequence (treated as a constant).
        mask: (B, T) bool or integer 0/1; True marks a valid response token.
        cfg: a `cegppo.CEGPPOConfig`.
        agg: one of `AGG_MODES` (spec S8).
        num_tokens: global valid-token count for token-mean: a Python number or a 0-d tensor (e.g.
            from `global_counts`); default this batch's. A tensor is never read on the host
            (unless `validate=True`). It may be 0 only for a micro-batch with no valid token;
            otherwise (0 with valid tokens, negative, NaN) a Python/NumPy value raises ValueError,
            and a tensor makes the loss NaN (ValueError with `validate=True`) (spec S8.2).
        num_seqs: global sequence count for the seq-mean modes (same rules).
        norm_length: the constant length L of seq-mean-token-sum-norm (default T, the padded
            width: pass it when micro-batches are padded to different widths, spec S8.2).
        validate: also check that valid positions hold finite values and that the normalizers
            obey spec S8.2 (host syncs).

    Returns:
        0-d tensor in the compute dtype.
    """
    agg, norm_length = check_aggregation(agg, num_tokens, num_seqs, norm_length)
    lp, olp, adv, m = _prepare(log_prob, old_log_prob, advantages, mask, cfg, validate)
    if validate:
        core.validate_normalizers(OPS, agg, m, num_tokens, num_seqs)
    per_token = -_objective(lp - olp, adv, cfg)
    return core.aggregate(OPS, per_token, m, agg, num_tokens, num_seqs, norm_length)


def policy_metrics(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: CEGPPOConfig,
) -> dict[str, torch.Tensor]:
    """Diagnostics over the valid tokens of a batch (spec S10), as 0-d tensors keyed by METRIC_KEYS.

    The metrics of `cegppo.policy_metrics`, which lists each key's definition (region fractions,
    ratio mean and max, Schulman's k1 and k3 KL estimators, the mean |F_t| [A_t != 0]).
    Computed without gradient, in the compute dtype, on the inputs' device, with no host sync
    (calling `.item()` is the caller's choice). With no valid token every metric is 0. Local
    statistics of this batch (all-reduce them yourself for global ones).
    """
    with torch.no_grad():
        lp, olp, adv, m = _prepare(log_prob, old_log_prob, advantages, mask, cfg, False)
        logr = lp - olp
        return metrics_from_regions(logr, adv, m, _regions(logr, adv, cfg), _grad_weight(logr, adv, cfg))


def metrics_from_regions(
    logr: torch.Tensor, adv: torch.Tensor, m: torch.Tensor, regions: TokenRegions, f: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The metrics of spec S10 from a member's regions and gradient weight F (`policy_metrics`, `family_metrics`).

    `logr`, `adv` (B, T) with masked positions 0 and no gradient, `m` the bool mask. The region
    fractions are the member's, `grad_weight_abs_mean` its mean |F_t| [A_t != 0]; the ratio and KL
    keys are the token ratio's for every member.
    """
    dt = logr.dtype
    den = m.sum().to(dt).clamp(min=1)
    zero = torch.zeros((), dtype=dt, device=logr.device)

    def frac(x: torch.Tensor) -> torch.Tensor:
        return (x & m).sum().to(dt) / den

    def mean(x: torch.Tensor) -> torch.Tensor:
        return torch.where(m, x, zero).sum() / den

    def maximum(x: torch.Tensor) -> torch.Tensor:
        # x >= 0 (a ratio): masked zeros never win, and the max of no valid token is 0
        return torch.where(m, x, zero).amax() if x.numel() else zero

    per_token = {
        **dict(zip(REGION_NAMES, regions, strict=True)),
        "clipped": regions.clip_low | regions.clip_high,
        "ratio": torch.exp(logr),
        "neg_logr": -logr,
        "k3": torch.expm1(logr) - logr,
        # A_t = 0 tokens get no gradient (F_t A_t = 0): they count as 0, not as delta_t (spec S10)
        "grad_weight_abs": torch.where(adv != 0, f.abs(), zero),
    }
    return reduce_metrics(per_token, {"frac": frac, "mean": mean, "max": maximum})
