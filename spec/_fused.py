"""The fused LM-head loss as the unfused composition, in float64 (docs/spec.md clauses S11.1, S14.1).

    z_t = (W h_t + b) / tau,   l_t = log softmax(z_t)[a_t],   H_t = -sum_j pi_tj log pi_tj   (S11)
    loss = family_policy_loss(l, old_log_prob, A, mask, cfg, agg, ...) - k * aggregate_loss(H, mask, agg, ...)

with the analytic chain rule for the gradients (S4, S11):

    G_t = (token_log_probs_grad(z_t, a_t, -c_t F_t A_t) + entropy_grad(z_t, -k c_t)) / tau
    dloss/dh_t = G_t W,   dloss/dW = sum_t G_t^T h_t,   dloss/db = sum_t G_t

with F the gradient weight of the family member `cfg` selects (S4 for CE-GPPO, S14.1 for the others).
This is the reference the backends' `fused_linear_policy_loss` are checked against (the conformance
kit's S11.1 properties). It materialises the (B, T, V) logits: it is for checking, not training.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._aggregation import aggregate_loss, aggregation_weights
from ._arrays import as_bool_mask
from ._family import family_member, family_metrics, family_policy_loss, family_policy_loss_grad
from ._fused_args import check_fused_args
from ._logits import entropy, entropy_change_first_order, entropy_grad, token_log_probs, token_log_probs_grad
from ._metrics import ENTROPY_REGION_KEYS, REGION_NAMES
from ._validation import check_id_range, require_finite

__all__ = ["FusedHeadTerms", "fused_head_terms", "fused_linear_policy_loss", "fused_linear_policy_loss_grad"]


class FusedHeadTerms(NamedTuple):
    """The float64 quantities of the fused head's composition (masked positions inert: h 0, id 0, A 0)."""

    value: float
    """The loss."""
    metrics: dict[str, float]
    """`family_metrics`' keys, `entropy_mean` and the per-region first-order entropy change."""
    grads: dict[str, np.ndarray]
    """d loss / d hidden (B, T, H), d weight (V, H) and, with a bias, d bias (V,)."""
    mask: np.ndarray
    hidden: np.ndarray
    token_ids: np.ndarray
    logits: np.ndarray
    """z (B, T, V), the temperature applied."""
    log_prob: np.ndarray
    old_log_prob: np.ndarray
    advantages: np.ndarray
    """(B, T), per-sequence advantages broadcast."""
    entropy: np.ndarray
    coef: np.ndarray
    """c_t, the aggregation weights (S8)."""
    grad_log_prob: np.ndarray
    """d loss / d l_t = -c_t F_t A_t (S4)."""


def fused_head_terms(
    hidden: Any,
    weight: Any,
    token_ids: Any,
    old_log_prob: Any,
    advantages: Any,
    mask: Any,
    cfg: Any,
    *,
    bias: Any = None,
    temperature: float = 1.0,
    entropy_coef: float = 0.0,
    agg: str | None = None,
    num_tokens: Any = None,
    num_seqs: Any = None,
    norm_length: float | None = None,
    chunk_size: int | None = None,
    validate: bool = False,
) -> FusedHeadTerms:
    """Loss, metrics, gradients and the intermediate terms of the fused head (spec S11.1), in float64.

    Arguments as `fused_linear_policy_loss`. Token ids at valid positions are range-checked always
    (the reference reads its data); `validate=True` also checks that old_log_prob and advantages
    are finite there.
    """
    hidden, weight, token_ids, old_log_prob, advantages, mask = (
        np.asarray(x) for x in (hidden, weight, token_ids, old_log_prob, advantages, mask)
    )
    bias = None if bias is None else np.asarray(bias)
    args = check_fused_args(
        hidden, weight, token_ids, old_log_prob, advantages, mask, cfg, bias=bias, temperature=temperature,
        entropy_coef=entropy_coef, agg=agg, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length,
        chunk_size=chunk_size,
    )  # the reference has no chunks: any valid chunk_size gives the same result
    agg, norm_length, temperature, entropy_coef = args.agg, args.norm_length, args.temperature, args.entropy_coef
    b_, t_, _, v_ = args.shape
    m = as_bool_mask(mask)
    adv_bt = np.broadcast_to(advantages[:, None], (b_, t_)) if advantages.ndim == 1 else advantages
    if m.any():
        check_id_range("token_ids", int(token_ids[m].min()), int(token_ids[m].max()), v_, valid_only=True)
    if validate:
        require_finite("old_log_prob", bool(np.all(np.isfinite(old_log_prob[m]))))
        require_finite("advantages", bool(np.all(np.isfinite(adv_bt[m]))))
    f64 = np.float64
    hid = np.where(m[..., None], hidden.astype(f64), 0.0)  # masked positions never reach the head
    ids = np.where(m, token_ids, 0)
    olp = np.where(m, old_log_prob.astype(f64), 0.0)
    adv = np.where(m, adv_bt.astype(f64), 0.0)
    w = weight.astype(f64)
    agg_kw: dict[str, Any] = {"num_tokens": num_tokens, "num_seqs": num_seqs, "norm_length": norm_length}
    z = (hid @ w.T + (0.0 if bias is None else bias.astype(f64))) / temperature
    lp = token_log_probs(z, ids)
    ent = entropy(z)
    agg_weights = aggregation_weights(m, agg, dtype=f64, **agg_kw)
    aggregated_entropy = aggregate_loss(np.where(m, ent, 0.0), m, agg, **agg_kw)
    value = float(family_policy_loss(lp, olp, adv, m, cfg, agg, **agg_kw) - entropy_coef * aggregated_entropy)
    g_lp = np.asarray(family_policy_loss_grad(lp, olp, adv, m, cfg, agg, **agg_kw))  # -c F A
    gz = (token_log_probs_grad(z, ids, g_lp) + entropy_grad(z, -entropy_coef * agg_weights)) / temperature
    grads = {"hidden": gz @ w, "weight": np.einsum("btv,bth->vh", gz, hid)}
    if bias is not None:
        grads["bias"] = gz.sum((0, 1))
    metrics = {key: float(v) for key, v in family_metrics(lp, olp, adv, m, cfg).items()}
    metrics["entropy_mean"] = float(np.sum(np.where(m, ent, 0.0)) / max(int(m.sum()), 1))
    dent = entropy_change_first_order(z, ids, -g_lp)  # along w_t = c_t F_t A_t (spec S11)
    regions = family_member(cfg).regions(lp, olp, adv, m, cfg)  # the member's regions (S10, S14.1)
    for key, name in zip(ENTROPY_REGION_KEYS, REGION_NAMES, strict=True):
        metrics[key] = float(np.sum(np.where(getattr(regions, name) & m, dent, 0.0)))
    return FusedHeadTerms(value, metrics, grads, m, hid, ids, z, lp, olp, adv, ent, agg_weights, g_lp)


def fused_linear_policy_loss(
    hidden: Any,
    weight: Any,
    token_ids: Any,
    old_log_prob: Any,
    advantages: Any,
    mask: Any,
    cfg: Any,
    **options: Any,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The fused head's (loss, metrics) by the unfused composition in float64 (spec S11.1).

    Same arguments as `cegppo.torch.fused_linear_policy_loss` (keyword options `bias`,
    `temperature`, `entropy_coef`, `agg`, `num_tokens`, `num_seqs`, `norm_length`, `chunk_size`,
    `validate`); metrics keyed by FUSED_METRIC_KEYS, each a 0-d float64 array. `cfg` is any family
    config (spec S14.1); `agg=None` is its paper aggregation (token-mean for CE-GPPO).
    """
    t = fused_head_terms(hidden, weight, token_ids, old_log_prob, advantages, mask, cfg, **options)
    return np.asarray(t.value), {key: np.asarray(v) for key, v in t.metrics.items()}


def fused_linear_policy_loss_grad(
    hidden: Any,
    weight: Any,
    token_ids: Any,
    old_log_prob: Any,
    advantages: Any,
    mask: Any,
    cfg: Any,
    **options: Any,
) -> dict[str, np.ndarray]:
    """d loss / d {hidden, weight, bias} of `fused_linear_policy_loss`, by the analytic chain rule (S4, S11)."""
    return fused_head_terms(hidden, weight, token_ids, old_log_prob, advantages, mask, cfg, **options).grads
