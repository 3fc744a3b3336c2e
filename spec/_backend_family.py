"""The gradient-preserving family (docs/spec.md clause S14) for the torch and JAX backends, written once.

Like `cegppo._backend_core`, whose primitive table (`ArrayOps`) it is written over, this is not the
reference: the NumPy reference (`cegppo._cispo`, `_sapo`, `_gspo`, `_family`) never imports it, so
the backends are checked against an independent oracle. Only `cegppo.torch` and `cegppo.jax` use
it, through `family_functions`, which builds a backend's public family functions (the reference's
names and signatures) from its primitive table and its CE-GPPO functions.

Gradients are the analytic ones of spec S14 by construction, through stop-gradient forms that are
finite wherever the reference's gradient is:

    CISPO   J_t = sg(w_t) A_t log_prob_t                         -> dJ_t = w_t A_t
    SAPO    J_t = sg(gate_t A_t) + sg(F_t A_t) (delta_t / sg(delta_t) - 1)
                                                                 -> dJ_t = F_t A_t (F formed in log space)
    GSPO    J_t = sg(s_i) delta_t / sg(delta_t) A_t  unclipped,  a constant when clipped

Every exponent is selected before it is exponentiated (spec S9.2), and with a mask the masked
positions are replaced by 0 first (spec S9.3), so garbage there reaches no value and no gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from . import _backend_core as core
from ._cispo import CISPOCapConfig, CISPOConfig, cispo_grad_weight, cispo_per_token_objective
from ._config import CEGPPOConfig
from ._family import (
    FAMILY,
    FamilyMember,
    family_grad_weight,
    family_member,
    family_metrics,
    family_per_token_objective,
    family_policy_loss,
)
from ._gspo import GSPOConfig, gspo_grad_weight, gspo_per_token_objective, gspo_sequence_log_ratio
from ._objective import TokenRegions
from ._sapo import SAPOConfig, sapo_grad_weight, sapo_per_token_objective
from ._validation import check_aggregation

__all__ = ["FamilyFunctions", "family_functions"]

Array = Any
"""A backend's array (see `cegppo._backend_core.Array`)."""

Row = Callable[[core.ArrayOps, Array, Array, Array, Any, Any], Array]
"""(ops, log_prob, old_log_prob, advantages, mask or None, cfg) -> (B, T), on coerced inputs."""


# ---------------------------------------------------------------------- CISPO (spec S14.2)


def _cispo_weight(ops: core.ArrayOps, lp: Array, olp: Array, cfg: Any) -> Array:
    """w = clip(delta, lower, upper), a constant: clipping in ratio space keeps the interval's ends exact."""
    return ops.clip(ops.exp(ops.constant(lp - olp)), cfg.lower, cfg.upper)


def _cispo_objective(ops: core.ArrayOps, lp: Array, olp: Array, adv: Array, _m: Any, cfg: Any) -> Array:
    """J_t = sg(w_t) A_t log_prob_t (arXiv 2506.13585 Sec. 3.1), exactly 0 where A_t = 0 (also at log_prob -inf)."""
    nonzero = adv != 0
    zero = ops.scalar(0.0, lp)
    return ops.where(nonzero, _cispo_weight(ops, lp, olp, cfg) * adv * ops.where(nonzero, lp, zero), zero)


def _cispo_grad_weight(ops: core.ArrayOps, lp: Array, olp: Array, _adv: Array, _m: Any, cfg: Any) -> Array:
    """F_t = w_t = clip(delta_t, lower, upper)."""
    return _cispo_weight(ops, lp, olp, cfg)


def _cispo_regions(ops: core.ArrayOps, lp: Array, olp: Array, _adv: Array, _m: Any, cfg: Any) -> TokenRegions:
    """clip_low = delta < lower, clip_high = delta > upper (any sign of A): where `_cispo_weight` clips."""
    ratio = ops.exp(lp - olp)
    low, high = ratio < ops.scalar(cfg.lower, ratio), ratio > ops.scalar(cfg.upper, ratio)
    return TokenRegions(low, high, ops.all_false(low), ~(low | high))


# ---------------------------------------------------------------------- SAPO (spec S14.3)


def _sapo_gate_argument(ops: core.ArrayOps, logr: Array, adv: Array, cfg: SAPOConfig) -> tuple[Array, Array]:
    """(tau_t, z_t = tau_t (delta_t - 1)), tau_t = tau_pos if A_t > 0 else tau_neg; z = +inf where delta overflows."""
    tau = ops.where(adv > 0, ops.scalar(cfg.tau_pos, logr), ops.scalar(cfg.tau_neg, logr))
    return tau, tau * ops.expm1(logr)


def _sapo_gate_value(ops: core.ArrayOps, logr: Array, adv: Array, cfg: SAPOConfig) -> Array:
    """(4 / tau_t) sigmoid(z_t) A_t, the sigmoid from exp(-|z|), which cannot overflow (spec S9.2)."""
    tau, z = _sapo_gate_argument(ops, logr, adv, cfg)
    e = ops.exp(-ops.abs(z))
    sigmoid = ops.where(z >= 0, 1 / (1 + e), e / (1 + e))
    return (4 / tau) * sigmoid * adv


def _sapo_weight(ops: core.ArrayOps, logr: Array, adv: Array, cfg: SAPOConfig) -> Array:
    """F_t = 4 sigmoid(z_t) sigmoid(-z_t) delta_t = 4 exp(logr - |z|) / (1 + exp(-|z|))^2.

    In log space, so an overflowing ratio gives F = 0 (its limit), not 0 * inf; logr = +inf, where
    the exponent is inf - inf, gives its limit 0 as well.
    """
    _, z = _sapo_gate_argument(ops, logr, adv, cfg)
    abs_z = ops.abs(z)
    e = ops.exp(-abs_z)
    exponent = ops.where(logr == float("inf"), ops.scalar(float("-inf"), logr), logr - abs_z)
    return 4 * ops.exp(exponent) / (1 + e) ** 2


def _sapo_objective(ops: core.ArrayOps, lp: Array, olp: Array, adv: Array, _m: Any, cfg: Any) -> Array:
    """J_t = (4 / tau_t) sigmoid(tau_t (delta_t - 1)) A_t (arXiv 2511.20347 Sec. 3), with dJ_t = F_t A_t.

    The value is the gate's; the derivative is carried by sg(F_t A_t) (delta / sg(delta) - 1), which is
    0 in value. Differentiating the sigmoid of expm1 directly would give 0 * inf where delta overflows.
    """
    logr = lp - olp
    frozen = ops.constant(logr)
    weight = _sapo_weight(ops, frozen, adv, cfg) * adv
    return ops.constant(_sapo_gate_value(ops, frozen, adv, cfg)) + weight * (ops.ratio_over_sg_ratio(logr) - 1)


def _sapo_grad_weight(ops: core.ArrayOps, lp: Array, olp: Array, adv: Array, _m: Any, cfg: Any) -> Array:
    return _sapo_weight(ops, ops.constant(lp - olp), adv, cfg)


def _sapo_regions(ops: core.ArrayOps, lp: Array, _olp: Array, _adv: Array, _m: Any, _cfg: Any) -> TokenRegions:
    """No hard region: every token `inside` (the soft gate shows in F)."""
    none = ops.all_false(lp)
    return TokenRegions(none, none, none, ~none)


# ---------------------------------------------------------------------- GSPO (spec S14.4)


def _row_log_ratio(ops: core.ArrayOps, logr: Array, m: Array) -> Array:
    """log s_i, (B, 1): the mean of the row's valid log-ratios (0 for a row with none).

    `logr` must be 0 at masked positions already (`_coerced` selects them away).
    """
    n = ops.row_total(m, logr.dtype, keepdims=True)
    return ops.row_total(logr, keepdims=True) / ops.where(n > 0, n, ops.scalar(1.0, n))


def _gspo_parts(
    ops: core.ArrayOps, logr: Array, adv: Array, m: Array, cfg: GSPOConfig
) -> tuple[Array, Array, Array]:
    """(sg(log s) of (B, 1), clip_low, clip_high): PPO's clipped cases on s, compared in log space (S9.1)."""
    log_s = ops.constant(_row_log_ratio(ops, logr, m))
    low = (adv < 0) & (log_s < ops.scalar(cfg.log_lower, log_s))
    high = (adv > 0) & (log_s > ops.scalar(cfg.log_upper, log_s))
    return log_s, low, high


def _gspo_objective(ops: core.ArrayOps, lp: Array, olp: Array, adv: Array, m: Any, cfg: Any) -> Array:
    """J_t = min(s_t A_t, clip(s_t) A_t), s_t = sg(s_i) delta_t / sg(delta_t) (arXiv 2507.18071 Eq. 5, Sec. 4.3)."""
    logr = lp - olp
    log_s, low, high = _gspo_parts(ops, logr, adv, m, cfg)
    unclipped = ~(low | high) & (adv != 0)
    zero = ops.scalar(0.0, logr)
    s = ops.exp(ops.where(unclipped, log_s, zero))  # select, then exponentiate (spec S9.2)
    token_ratio = s * ops.ratio_over_sg_ratio(ops.where(unclipped, logr, zero))
    scale = ops.where(
        low,
        ops.scalar(1 - cfg.eps_low, logr),
        ops.where(high, ops.scalar(1 + cfg.eps_high, logr), token_ratio),
    )
    return scale * adv


def _gspo_grad_weight(ops: core.ArrayOps, lp: Array, olp: Array, adv: Array, m: Any, cfg: Any) -> Array:
    """F_t = s_i where the unclipped term is active, 0 where the clip is."""
    log_s, low, high = _gspo_parts(ops, ops.constant(lp - olp), adv, m, cfg)
    clipped = low | high
    zero = ops.scalar(0.0, log_s)
    return ops.where(clipped, zero, ops.exp(ops.where(clipped, zero, log_s)))


def _gspo_regions(ops: core.ArrayOps, lp: Array, olp: Array, adv: Array, m: Any, cfg: Any) -> TokenRegions:
    """PPO's regions on the sequence ratio s_i, per token: where `_gspo_grad_weight` is 0."""
    _, low, high = _gspo_parts(ops, ops.constant(lp - olp), adv, m, cfg)
    return TokenRegions(low, high, ops.all_false(low), ~(low | high))


# ---------------------------------------------------------------------- the table


class _Row(NamedTuple):
    objective: Row
    grad_weight: Row
    reads_mask: bool
    """Whether the per-token functions read the mask (GSPO's sequence mean) or are elementwise."""
    regions: Callable[[core.ArrayOps, Array, Array, Array, Any, Any], TokenRegions]
    """The member's regions of spec S2 (spec S10), for its metrics."""


_ROWS: dict[type, _Row] = {
    CISPOConfig: _Row(_cispo_objective, _cispo_grad_weight, False, _cispo_regions),
    CISPOCapConfig: _Row(_cispo_objective, _cispo_grad_weight, False, _cispo_regions),
    SAPOConfig: _Row(_sapo_objective, _sapo_grad_weight, False, _sapo_regions),
    GSPOConfig: _Row(_gspo_objective, _gspo_grad_weight, True, _gspo_regions),
}
"""The members beside CE-GPPO, whose row is each backend's own CE-GPPO functions."""


def _coerced(
    ops: core.ArrayOps, log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any, validate: bool = False
) -> tuple[Array, Array, Array, Array | None]:
    """Checked and cast inputs (`core.array_inputs`); with a mask, masked positions replaced by 0 (S9.3)."""
    lp, olp, adv, m = core.array_inputs(ops, log_prob, old_log_prob, advantages, mask, validate)
    if m is None:
        return lp, olp, adv, None
    lp, olp, adv = core.zero_masked(ops, m, lp, olp, adv)
    return lp, olp, adv, m


def _checked(cfg: Any, *types: type) -> Any:
    """`cfg` if it is one of `types`, else the TypeError of the reference's per-member functions."""
    if not isinstance(cfg, types):
        names = " or ".join(f"cegppo.{t.__name__}" for t in types)
        raise TypeError(f"cfg must be a {names}, got {type(cfg).__name__}")
    return cfg


def _member_row(cfg: Any) -> _Row | None:
    """The row of `cfg`'s type, None for CE-GPPO; the reference's TypeError for anything else."""
    family_member(cfg)
    return _ROWS.get(type(cfg))


def _public(fn: Callable[..., Any], reference: Callable[..., Any], module: str) -> Callable[..., Any]:
    """`fn` named and documented as the reference function whose contract it implements."""
    fn.__name__ = fn.__qualname__ = reference.__name__
    fn.__doc__ = reference.__doc__
    fn.__module__ = module
    return fn


class FamilyFunctions(NamedTuple):
    """One backend's family API: the reference's names (spec S14), computed in the backend's framework."""

    FAMILY: dict[type, FamilyMember]
    cispo_per_token_objective: Callable[..., Any]
    cispo_grad_weight: Callable[..., Any]
    sapo_per_token_objective: Callable[..., Any]
    sapo_grad_weight: Callable[..., Any]
    gspo_per_token_objective: Callable[..., Any]
    gspo_grad_weight: Callable[..., Any]
    gspo_sequence_log_ratio: Callable[..., Any]
    family_per_token_objective: Callable[..., Any]
    family_grad_weight: Callable[..., Any]
    family_policy_loss: Callable[..., Any]
    family_metrics: Callable[..., Any]


def family_functions(
    ops: core.ArrayOps,
    module: str,
    *,
    policy_loss: Callable[..., Any],
    per_token_objective: Callable[..., Any],
    grad_weight: Callable[..., Any],
    token_regions: Callable[..., Any],
    policy_metrics: Callable[..., Any],
    metrics_from_regions: Callable[[Array, Array, Array, TokenRegions, Array], dict[str, Array]],
    array_type: Callable[[str, Any], Any] | None = None,
) -> FamilyFunctions:
    """The family functions of the backend whose primitives are `ops` and whose CE-GPPO functions are given.

    CE-GPPO's row is the backend's own `policy_loss` / `per_token_objective` / `grad_weight` /
    `token_regions` / `policy_metrics`, so a `CEGPPOConfig` gives results bit-for-bit equal to theirs. The other
    members' metrics are the backend's own reductions (`metrics_from_regions(logr, A, mask, regions,
    F)`, which its `policy_metrics` uses too) of the member's regions and F. `array_type` is the
    backend's check that a normalizer is one of its arrays (`check_aggregation`). `module` names
    the public module.
    """

    def elementwise(row: Row, *types: type) -> Callable[..., Any]:
        def per_token(log_prob: Any, old_log_prob: Any, advantages: Any, cfg: Any) -> Any:
            _checked(cfg, *types)
            lp, olp, adv, _ = _coerced(ops, log_prob, old_log_prob, advantages, None)
            return row(ops, lp, olp, adv, None, cfg)

        return per_token

    def with_mask(row: Row) -> Callable[..., Any]:
        def per_token(log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any, cfg: Any) -> Any:
            _checked(cfg, GSPOConfig)
            return row(ops, *_coerced(ops, log_prob, old_log_prob, advantages, mask), cfg)

        return per_token

    def sequence_log_ratio(log_prob: Any, old_log_prob: Any, mask: Any) -> Any:
        # log_prob stands in for the advantages, which this function has none of: only their shape rule applies.
        lp, olp, _, m = _coerced(ops, log_prob, old_log_prob, log_prob, mask)
        return _row_log_ratio(ops, lp - olp, m)[:, 0]

    def family_row(field: str, ce_gppo: Callable[..., Any]) -> Callable[..., Any]:
        def per_token(log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any, cfg: Any) -> Any:
            row = _member_row(cfg)
            if row is None:
                return ce_gppo(log_prob, old_log_prob, advantages, cfg)
            lp, olp, adv, m = _coerced(ops, log_prob, old_log_prob, advantages, mask if row.reads_mask else None)
            return getattr(row, field)(ops, lp, olp, adv, m, cfg)

        return per_token

    def loss(
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
    ) -> Any:
        row = _member_row(cfg)
        agg = FAMILY[type(cfg)].paper_agg if agg is None else agg
        if row is None:
            return policy_loss(
                log_prob, old_log_prob, advantages, mask, cfg, agg, num_tokens, num_seqs,
                norm_length=norm_length, validate=validate,
            )  # fmt: skip
        agg, norm_length = check_aggregation(agg, num_tokens, num_seqs, norm_length, array_type=array_type)
        lp, olp, adv, m = _coerced(ops, log_prob, old_log_prob, advantages, mask, validate)
        if validate:
            core.validate_normalizers(ops, agg, m, num_tokens, num_seqs)
        # Masked positions hold lp = olp = A = 0, where every member's J is exactly 0 (aggregate's contract).
        per_token = -row.objective(ops, lp, olp, adv, m, cfg)
        return core.aggregate(ops, per_token, m, agg, num_tokens, num_seqs, norm_length)

    def metrics(log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any, cfg: Any) -> dict[str, Any]:
        row = _member_row(cfg)
        if row is None:
            ce_gppo: dict[str, Any] = policy_metrics(log_prob, old_log_prob, advantages, mask, cfg)
            return ce_gppo
        lp, olp, adv, m = _coerced(ops, log_prob, old_log_prob, advantages, mask)
        lp = ops.constant(lp)  # diagnostics: no gradient flows through them
        f = row.grad_weight(ops, lp, olp, adv, m, cfg)
        return metrics_from_regions(lp - olp, adv, m, row.regions(ops, lp, olp, adv, m, cfg), f)

    cispo = (CISPOConfig, CISPOCapConfig)
    fns: dict[Callable[..., Any], Callable[..., Any]] = {
        cispo_per_token_objective: elementwise(_cispo_objective, *cispo),
        cispo_grad_weight: elementwise(_cispo_grad_weight, *cispo),
        sapo_per_token_objective: elementwise(_sapo_objective, SAPOConfig),
        sapo_grad_weight: elementwise(_sapo_grad_weight, SAPOConfig),
        gspo_per_token_objective: with_mask(_gspo_objective),
        gspo_grad_weight: with_mask(_gspo_grad_weight),
        gspo_sequence_log_ratio: sequence_log_ratio,
        family_per_token_objective: family_row("objective", per_token_objective),
        family_grad_weight: family_row("grad_weight", grad_weight),
        family_policy_loss: loss,
        family_metrics: metrics,
    }
    public = {ref.__name__: _public(fn, ref, module) for ref, fn in fns.items()}
    ce_gppo = FAMILY[CEGPPOConfig]._replace(
        objective=_ignoring_mask(per_token_objective), grad_weight=_ignoring_mask(grad_weight)
    )
    # Every row's regions: one function that reads the row from cfg, as family_grad_weight does.
    regions = family_row("regions", token_regions)
    table = {
        t: (ce_gppo if t is CEGPPOConfig else _backend_member(row, public))._replace(regions=regions)
        for t, row in FAMILY.items()
    }
    return FamilyFunctions(FAMILY=table, **public)


def _ignoring_mask(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A per-token function without a mask argument in the table's signature (mask, then cfg)."""
    return lambda lp, olp, adv, _mask, cfg: fn(lp, olp, adv, cfg)


def _backend_member(member: FamilyMember, public: dict[str, Callable[..., Any]]) -> FamilyMember:
    """The reference's row `member` with the backend's per-token functions in the table's signature."""
    if member.name == "gspo":
        return member._replace(objective=public["gspo_per_token_objective"], grad_weight=public["gspo_grad_weight"])
    return member._replace(
        objective=_ignoring_mask(public[f"{member.name}_per_token_objective"]),
        grad_weight=_ignoring_mask(public[f"{member.name}_grad_weight"]),
    )
