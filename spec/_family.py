"""The gradient-preserving family as one table of rows (docs/spec.md clause S14.1).

Every member's gradient is d loss / d log_prob_t = -c_t F_t A_t with c from the aggregation of
spec S8, so a member is fully specified by its per-token objective J_t, its gradient weight F_t
and the aggregation its paper uses. The config type selects the row: `CEGPPOConfig` (with its
special cases PPO, DAPO and GPPO, spec S6), `CISPOConfig` / `CISPOCapConfig`, `SAPOConfig`,
`GSPOConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, cast

import numpy as np

from ._aggregation import aggregation_weights
from ._cispo import (
    CISPOCapConfig,
    CISPOConfig,
    cispo_grad_weight,
    cispo_per_token_objective,
    cispo_token_regions,
)
from ._config import CEGPPOConfig
from ._family_inputs import family_inputs
from ._gspo import GSPOConfig, gspo_grad_weight, gspo_per_token_objective, gspo_token_regions
from ._loss import metrics_from_regions
from ._objective import TokenRegions, grad_weight, per_token_objective, token_regions
from ._sapo import SAPOConfig, sapo_grad_weight, sapo_per_token_objective, sapo_token_regions
from ._validation import check_aggregation

__all__ = [
    "FAMILY",
    "FamilyMember",
    "family_grad_weight",
    "family_member",
    "family_metrics",
    "family_per_token_objective",
    "family_policy_loss",
    "family_policy_loss_grad",
]

PerToken = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any], np.ndarray]
Regions = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any], TokenRegions]


class FamilyMember(NamedTuple):
    """One row of the family table (spec S14.1)."""

    name: str
    """The member's name, as the frameworks call its loss."""
    objective: PerToken
    """(log_prob, old_log_prob, advantages, mask, cfg) -> J, (B, T)."""
    grad_weight: PerToken
    """(log_prob, old_log_prob, advantages, mask, cfg) -> F, (B, T), with dJ_t / d log_prob_t = F_t A_t."""
    paper_agg: str
    """The aggregation its paper uses, the default of `family_policy_loss`."""
    regions: Regions
    """(log_prob, old_log_prob, advantages, mask, cfg) -> the regions of spec S2 as this member defines
    them (spec S10): where its weight is clipped, or every token `inside` for a member with none."""


def _without_mask(fn: Callable[[Any, Any, Any, Any], Any]) -> Any:
    """A per-token function that needs no mask (every member but GSPO) in the table's signature."""
    return lambda lp, olp, adv, _mask, cfg: fn(lp, olp, adv, cfg)


_CISPO = FamilyMember(
    "cispo",
    _without_mask(cispo_per_token_objective),
    _without_mask(cispo_grad_weight),
    "token-mean",
    _without_mask(cispo_token_regions),
)

FAMILY: dict[type, FamilyMember] = {
    CEGPPOConfig: FamilyMember(
        "ce_gppo", _without_mask(per_token_objective), _without_mask(grad_weight), "token-mean",
        _without_mask(token_regions),
    ),
    CISPOConfig: _CISPO,
    CISPOCapConfig: _CISPO,
    SAPOConfig: FamilyMember(
        "sapo", _without_mask(sapo_per_token_objective), _without_mask(sapo_grad_weight), "seq-mean-token-mean",
        _without_mask(sapo_token_regions),
    ),
    GSPOConfig: FamilyMember(
        "gspo", gspo_per_token_objective, gspo_grad_weight, "seq-mean-token-mean", gspo_token_regions
    ),
}
"""Config type -> its row. CE-GPPO's row is `per_token_objective` / `grad_weight` unchanged."""


def family_member(cfg: Any) -> FamilyMember:
    """The row of `cfg`'s type in FAMILY; TypeError naming the config types for anything else."""
    member = FAMILY.get(type(cfg))
    if member is None:
        names = ", ".join(t.__name__ for t in FAMILY)
        raise TypeError(f"cfg must be one of cegppo.{{{names}}}, got {type(cfg).__name__}")
    return member


def family_per_token_objective(log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any, cfg: Any) -> np.ndarray:
    """J_t of the member that `cfg` selects (spec S14.1), (B, T), no reduction.

    Only GSPO reads the mask (its sequence ratio averages over the valid tokens); the other members
    are elementwise and ignore it.
    """
    return family_member(cfg).objective(log_prob, old_log_prob, advantages, mask, cfg)


def family_grad_weight(log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any, cfg: Any) -> np.ndarray:
    """F_t of the member that `cfg` selects, with dJ_t / d log_prob_t = F_t A_t (spec S14.1), (B, T)."""
    return family_member(cfg).grad_weight(log_prob, old_log_prob, advantages, mask, cfg)


def _loss_parts(
    log_prob: Any,
    old_log_prob: Any,
    advantages: Any,
    mask: Any,
    cfg: Any,
    agg: str | None,
    num_tokens: Any,
    num_seqs: Any,
    norm_length: float | None,
    validate: bool,
) -> tuple[FamilyMember, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(member, log_prob, old_log_prob, advantages, mask, c) with masked positions zeroed (spec S9.3)."""
    member = family_member(cfg)
    agg = member.paper_agg if agg is None else agg
    check_aggregation(agg, num_tokens, num_seqs, norm_length)
    lp, olp, adv, m = family_inputs(log_prob, old_log_prob, advantages, mask, validate=validate)
    assert m is not None
    c = aggregation_weights(m, agg, num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length, dtype=lp.dtype)
    return member, lp, olp, adv, m, c


def family_policy_loss(
    log_prob: Any,
    old_log_prob: Any,
    advantages: Any,
    mask: Any,
    cfg: Any,
    agg: str | None = None,
    num_tokens: Any = None,
    num_seqs: Any = None,
    *,
    norm_length: float | None = None,
    validate: bool = False,
) -> np.ndarray:
    """The batch loss of any family member: -J aggregated over the valid tokens (spec S14.1, S8).

        loss = sum_t c_t (-J_t),  c from `aggregation_weights(mask, agg, ...)`

    `agg` defaults to the member's paper aggregation (`FAMILY[type(cfg)].paper_agg`): token-mean for
    CE-GPPO and CISPO, seq-mean-token-mean for SAPO and GSPO. Any mode of spec S8 may be passed, for
    every member; the other arguments are those of `policy_loss`, which this equals for a
    `CEGPPOConfig` with the same `agg`.

    Returns:
        0-d array in the compute dtype (spec S9.5). An all-masked batch gives exactly 0.
    """
    member, lp, olp, adv, m, c = _loss_parts(
        log_prob, old_log_prob, advantages, mask, cfg, agg, num_tokens, num_seqs, norm_length, validate
    )
    per_token = -member.objective(lp, olp, adv, m, cfg)
    return cast(np.ndarray, np.sum(c * np.where(m, per_token, 0)))


def family_policy_loss_grad(
    log_prob: Any,
    old_log_prob: Any,
    advantages: Any,
    mask: Any,
    cfg: Any,
    agg: str | None = None,
    num_tokens: Any = None,
    num_seqs: Any = None,
    *,
    norm_length: float | None = None,
    validate: bool = False,
) -> np.ndarray:
    """The analytic gradient d family_policy_loss / d log_prob, shape (B, T) (spec S14.1).

        d loss / d log_prob_t = -c_t F_t A_t

    exactly 0 at masked positions and where A_t = 0 (even where F_t overflows). For GSPO this is
    the gradient of the token form, whose stop-gradients keep token t's term from depending on the
    other tokens' log-probs (spec S14.4).
    """
    member, lp, olp, adv, m, c = _loss_parts(
        log_prob, old_log_prob, advantages, mask, cfg, agg, num_tokens, num_seqs, norm_length, validate
    )
    f = member.grad_weight(lp, olp, adv, m, cfg)
    fa = np.where(adv == 0, 0, f * np.where(adv == 0, 1, adv))
    return np.where(m, -c * fa, 0).astype(lp.dtype, copy=False)


def family_metrics(log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any, cfg: Any) -> dict[str, np.ndarray]:
    """The diagnostics of spec S10 for any family member, keyed by METRIC_KEYS (spec S10, S14.1).

    The keys and reductions of `policy_metrics`, which this equals for a `CEGPPOConfig`. For the
    other members the four region fractions are the member's own (`FAMILY[type(cfg)].regions`):

    - CISPO: clip_low = delta_t < lower, clip_high = delta_t > upper, whatever the sign of A_t
      (the weight is clipped there); `CISPOCapConfig` has no clip_low.
    - GSPO: PPO's regions on the sequence ratio s_i, per token (A_t < 0 and s_i < 1 - eps_low;
      A_t > 0 and s_i > 1 + eps_high).
    - SAPO: no hard region: every valid token is `inside`; its soft gate shows in
      `grad_weight_abs_mean`.

    dual_clip_frac is 0 for every member but CE-GPPO with dual clip. `grad_weight_abs_mean` is the
    mean over the valid tokens of the member's |F_t| [A_t != 0]; `ratio_mean`, `ratio_max` and the
    KL estimators are the token ratio's for every member. Each value is a 0-d array in the compute
    dtype; with no valid token every metric is 0.
    """
    member = family_member(cfg)
    lp, olp, adv, m = family_inputs(log_prob, old_log_prob, advantages, mask)
    assert m is not None
    f = member.grad_weight(lp, olp, adv, m, cfg)
    return metrics_from_regions(lp - olp, adv, m, member.regions(lp, olp, adv, m, cfg), f)
