"""The batch loss, its analytic gradient and its diagnostics (docs/spec.md clauses S4, S8, S10).

`policy_loss_grad` is the reference's stand-in for autodiff: the conformance suite compares every
backend's autodiff gradient with it, and it is itself checked against finite differences.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from ._aggregation import aggregation_weights
from ._arrays import as_bool_mask, as_float, compute_dtype
from ._config import CEGPPOConfig, check_config
from ._metrics import METRIC_KEYS, REGION_NAMES, reduce_metrics
from ._objective import TokenRegions, _regions, grad_weight, per_token_objective
from ._validation import check_aggregation, check_policy_shapes, require_finite

__all__ = ["METRIC_KEYS", "metrics_from_regions", "policy_loss", "policy_loss_grad", "policy_metrics"]


def _prepare(
    log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any, cfg: CEGPPOConfig, validate: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check everything, then zero the masked positions so garbage there never enters arithmetic."""
    check_config(cfg)
    check_policy_shapes(log_prob, old_log_prob, advantages, mask)
    m = as_bool_mask(mask)
    dt = compute_dtype(("log_prob", log_prob), ("old_log_prob", old_log_prob), ("advantages", advantages))
    lp = as_float("log_prob", log_prob, dt)
    olp = as_float("old_log_prob", old_log_prob, dt)
    adv = as_float("advantages", advantages, dt, floating_only=False)
    if adv.ndim == 1:
        adv = np.broadcast_to(adv[:, None], lp.shape)
    if validate:
        for name, arr in (("log_prob", lp), ("old_log_prob", olp), ("advantages", adv)):
            require_finite(name, bool(np.all(np.isfinite(arr[m]))))
    zero = dt.type(0)
    return np.where(m, lp, zero), np.where(m, olp, zero), np.where(m, adv, zero), m


def policy_loss(
    log_prob: Any,
    old_log_prob: Any,
    advantages: Any,
    mask: Any,
    cfg: CEGPPOConfig,
    agg: str = "token-mean",
    num_tokens: Any = None,
    num_seqs: Any = None,
    *,
    norm_length: float | None = None,
    validate: bool = False,
) -> np.ndarray:
    """The CE-GPPO loss: -J aggregated over valid tokens (arXiv 2509.20712 Eq. 8; spec S3, S8).

        loss = sum_t c_t (-J_t),  c from `aggregation_weights(mask, agg, ...)`

    Args:
        log_prob: (B, T) log-probs of the sampled tokens under the current policy.
        old_log_prob: (B, T) log-probs recorded at rollout.
        advantages: (B, T) per token, or (B,) per sequence.
        mask: (B, T) bool (or integer 0/1); True marks a valid response token. Masked positions
            may hold anything, NaN and inf included, and change neither loss nor gradient.
        cfg: the hyperparameters.
        agg: one of AGG_MODES (spec S8).
        num_tokens: global count of valid tokens for token-mean (default: this batch's).
        num_seqs: global count of sequences for the seq-mean modes (default: this batch's rows
            with at least one valid token).
        norm_length: the constant length L of seq-mean-token-sum-norm (default T).
        validate: also check that valid positions hold finite values (costs a pass over the data).

    Returns:
        0-d array in the compute dtype (spec S9.5). An all-masked batch gives exactly 0.
    """
    check_aggregation(agg, num_tokens, num_seqs, norm_length)
    lp, olp, adv, m = _prepare(log_prob, old_log_prob, advantages, mask, cfg, validate)
    per_token = -per_token_objective(lp, olp, adv, cfg)
    agg_weights = aggregation_weights(
        m, agg, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length, dtype=lp.dtype
    )
    return cast(np.ndarray, np.sum(agg_weights * np.where(m, per_token, 0)))


def policy_loss_grad(
    log_prob: Any,
    old_log_prob: Any,
    advantages: Any,
    mask: Any,
    cfg: CEGPPOConfig,
    agg: str = "token-mean",
    num_tokens: Any = None,
    num_seqs: Any = None,
    *,
    norm_length: float | None = None,
    validate: bool = False,
) -> np.ndarray:
    """The analytic gradient d policy_loss / d log_prob, shape (B, T) (spec S4).

        d loss / d log_prob_t = -c_t F_t A_t

    with F from `grad_weight` and c from `aggregation_weights`. It is exactly 0 at masked positions
    and at A_t = 0 (where F_t A_t is 0 even if delta overflows). old_log_prob and advantages are
    constants (spec S4): there is no gradient with respect to them.
    """
    check_aggregation(agg, num_tokens, num_seqs, norm_length)
    lp, olp, adv, m = _prepare(log_prob, old_log_prob, advantages, mask, cfg, validate)
    f = grad_weight(lp, olp, adv, cfg)
    objective_grad = np.where(adv == 0, 0, f * np.where(adv == 0, 1, adv))  # dJ_t / dlog_prob_t = F_t A_t
    agg_weights = aggregation_weights(
        m, agg, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length, dtype=lp.dtype
    )
    return np.where(m, -agg_weights * objective_grad, 0).astype(lp.dtype, copy=False)


def policy_metrics(
    log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any, cfg: CEGPPOConfig
) -> dict[str, np.ndarray]:
    """Diagnostics over the valid tokens of a batch (spec S10). Each value is a 0-d array.

    - `clip_low_frac`, `clip_high_frac`, `dual_clip_frac`, `inside_frac`: fraction of valid tokens
      in each region of spec S2 (they sum to 1); `clip_frac` = clip_low + clip_high (verl's
      `pg_clipfrac`).
    - `ratio_mean`, `ratio_max`: mean and max of delta = exp(log_prob - old_log_prob).
    - `approx_kl_k1` = mean(-logr) and `approx_kl_k3` = mean(delta - 1 - logr): Schulman's k1 and
      k3 estimators of KL(pi_old || pi_theta) on samples from pi_old.
    - `grad_weight_abs_mean`: mean over the valid tokens of |F_t| [A_t != 0] (spec S4, S10), the
      size of the gradient weight a token actually gets: an A_t = 0 token gets no gradient
      (F_t A_t = 0), so it counts as 0, not as delta_t (which may overflow).

    With no valid token every metric is 0. These are local (this batch) statistics, each a mean
    over the same n valid tokens, so token-weighted sums over micro-batches and ranks are exact.
    """
    lp, olp, adv, m = _prepare(log_prob, old_log_prob, advantages, mask, cfg, False)
    logr = lp - olp
    return metrics_from_regions(logr, adv, m, _regions(logr, adv, cfg), grad_weight(lp, olp, adv, cfg))


def metrics_from_regions(
    logr: np.ndarray, adv: np.ndarray, m: np.ndarray, regions: TokenRegions, f: np.ndarray
) -> dict[str, np.ndarray]:
    """The metrics of spec S10 from a member's regions and gradient weight F (`policy_metrics`, `family_metrics`).

    `logr`, `adv` are (B, T) with masked positions 0, `m` the bool mask. The region fractions are
    the member's, `grad_weight_abs_mean` its mean |F_t| [A_t != 0]; the ratio and KL keys are the
    token ratio's for every member.
    """
    n = m.sum()
    den = max(int(n), 1)
    with np.errstate(over="ignore"):  # an overflowing ratio is reported as inf, its true value
        ratio = np.exp(logr)
        per_token = {
            **dict(zip(REGION_NAMES, regions, strict=True)),
            "clipped": regions.clip_low | regions.clip_high,
            "ratio": ratio,
            "neg_logr": -logr,
            "k3": np.expm1(logr) - logr,
            # |F_t| where the token gets a gradient; A_t = 0 tokens (F_t = delta_t) count as 0 (spec S10)
            "grad_weight_abs": np.where(adv != 0, np.abs(f), 0),
        }
    dt = logr.dtype
    reductions = {
        "frac": lambda x: np.sum(x & m, dtype=dt) / den,
        "mean": lambda x: np.sum(np.where(m, x, 0)) / den,
        "max": lambda x: np.max(np.where(m, x, 0)) if n else np.zeros((), dt),
    }
    return {k: np.asarray(v, dtype=dt) for k, v in reduce_metrics(per_token, reductions).items()}
