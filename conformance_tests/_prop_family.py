"""Chapter S14: the other members of the family (spec S14.1 table, S14.2 CISPO, S14.3 SAPO, S14.4 GSPO).

A port of CISPO, SAPO or GSPO (``objective=``) is checked by the chapters that hold for every
member (S1 inputs, S8 aggregation, S9 numerics, the kernel-scale S3 checks) and by its own clause
here, in place of CE-GPPO's S3-S7:

    value equals the reference       loss = sum_t c_t (-J_t)          cegppo.family_policy_loss
    gradient equals the reference    d loss / d log_prob_t = -c_t F_t A_t   (inputs away from the kinks)
    constants                        no gradient into old_log_prob, advantages (S4)
    gradient bound                   the bound column of S14.1, per token, every sign of A, extremes included
    special cases                    on-policy F = 1 (S14.1); CISPO without bounds F = delta and its cap
                                     form (S14.2); SAPO at delta = 1 (S14.3); GSPO's one-token rows (S14.4)

The special cases' expected values come from the formulas they reduce to, written here in float64
(as S6 does for PPO), not from the member's reference.
"""

from __future__ import annotations

from typing import Any

import cegppo
import numpy as np
from cegppo import CEGPPOConfig, CISPOCapConfig, CISPOConfig, GSPOConfig, SAPOConfig
from hypothesis import strategies as st

from ._adapters import Adapter
from ._cases import GRAD_TOL, Case, Mismatch, compare_grad, compare_value, expected, tol_dtype, weights
from ._objectives import FAMILY_OBJECTIVES
from ._prop_objective import (
    common_dtypes,
    constants_have_no_gradient,
    draw_general,
    gradient_equals_reference,
    value_equals_reference,
)
from ._prop_special import textbook
from ._registry import prop
from ._strategies import draw_case, push_rows_away

__all__ = ["MEMBER_CLAUSES", "weight_bounds"]

MEMBER_CLAUSES: dict[str, tuple[str, ...]] = {"S14.2": ("cispo", "cispo_cap"), "S14.3": ("sapo",), "S14.4": ("gspo",)}
"""Each member's clause of spec S14 -> the objectives it specifies."""

SAPO_C = 0.8955
"""C = max_x x sech^2(x / 2) (spec S14.3), rounded up: F <= 1 + C / tau."""


def _grad_of(ad: Adapter, case: Case) -> np.ndarray:
    return ad.run(case).grad_or_fail(case)


def _policy_gradient(case: Case, weight: Any) -> np.ndarray:
    """-c_t F_t A_t with the given F (a number or a (B, T) array), 0 at masked positions (spec S14.1)."""
    a = case.adv_2d()
    return np.where(case.mask, -weights(case) * weight * a, 0.0)


# -- value, gradient, constants: the bodies of S3 / S4, run on the member's reference -------------------
for _clause, _members in MEMBER_CLAUSES.items():

    def _value(ad: Adapter, data: Any) -> None:
        """The loss equals the member's NumPy reference (cegppo.family_policy_loss) within VALUE_TOL, in every declared mode."""
        value_equals_reference(ad, data)

    def _gradient(ad: Adapter, data: Any) -> None:
        """d loss / d log_prob equals the reference's -c_t F_t A_t within GRAD_TOL (inputs away from the member's kinks)."""
        gradient_equals_reference(ad, data)

    def _constants(ad: Adapter, data: Any) -> None:
        """Passed as differentiable inputs, old_log_prob and advantages get no or a zero gradient (every w, s_i, gate a constant)."""
        constants_have_no_gradient(ad, data)

    prop(_clause, "value equals the reference", "family", objectives=_members)(_value)
    prop(_clause, "gradient equals the reference", "family", needs_grad=True, objectives=_members)(_gradient)
    prop(_clause, "old_log_prob and advantages are constants", "family", needs_grad=True,
         skip=lambda ad: ad.constants_skip, objectives=_members)(_constants)


# -- bounds -------------------------------------------------------------------------------------------------
def weight_bounds(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) bounds of F_t per token (spec S14.1's bound column), (B, T) each.

    CISPO: max(1 - eps_low, 0) <= F <= 1 + eps_high (cap form: 0 <= F <= cap); SAPO: 0 <= F <=
    min(delta, 1 + C / tau, 4 delta e^{-tau |delta - 1|}), tau by the sign of A; GSPO, PPO's rule on
    s_i: 0 where the clip is active, s_i <= 1 + eps_high inside, < 1 - eps_low for A > 0 below,
    unbounded for A < 0 above.
    """
    cfg, a = case.cfg, case.adv_2d()
    logr = np.where(case.mask, case.log_prob - case.old_log_prob, 0.0)
    zeros = np.zeros(case.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        if isinstance(cfg, (CISPOConfig, CISPOCapConfig)):
            return zeros + cfg.lower, zeros + cfg.upper
        if isinstance(cfg, SAPOConfig):
            tau = np.where(a > 0, cfg.tau_pos, cfg.tau_neg)
            decay = np.exp(np.log(4.0) + logr - tau * np.abs(np.expm1(logr)))
            decay = np.where(np.isnan(decay), 0.0, decay)  # logr = +inf: inf - inf, whose limit is 0
            return zeros, np.minimum(np.minimum(np.exp(logr), 1 + SAPO_C / tau), decay)
        if isinstance(cfg, GSPOConfig):
            log_s = cegppo.gspo_sequence_log_ratio(case.log_prob, case.old_log_prob, case.mask)[:, None] + zeros
            below, above = log_s < cfg.log_lower, log_s > cfg.log_upper
            clipped = ((a < 0) & below) | ((a > 0) & above)
            upper = np.where(below, 1 - cfg.eps_low, np.where(above, np.inf, 1 + cfg.eps_high))
            return zeros, np.where(clipped, 0.0, upper)
    raise TypeError(f"no S14 bound for {type(cfg).__name__}")


def _check_weight_bounds(case: Case, grad: np.ndarray) -> None:
    """Raise Mismatch unless the gradient is finite and every valid token's F (read back from -c_t F_t A_t)
    lies within `weight_bounds`."""
    if not np.all(np.isfinite(grad)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(grad))[0])
        raise Mismatch("gradient finite", case, "finite", grad, f"element {bad} is {grad[bad]!r}")
    c_t, a = weights(case), case.adv_2d()
    with np.errstate(all="ignore"):
        ca = c_t * a
        f = np.where(ca != 0, -grad / np.where(ca != 0, ca, 1.0), 0.0)
    lower, upper = weight_bounds(case)
    rtol = 10 * GRAD_TOL[tol_dtype(case)][0]
    sel = case.mask & (ca != 0)
    with np.errstate(invalid="ignore"):
        ok = ~sel | ((f <= upper * (1 + rtol) + 1e-30) & (f >= lower * (1 - rtol) - 1e-30))
    if not np.all(ok):
        i = tuple(int(k) for k in np.argwhere(~ok)[0])
        logr = case.log_prob[i] - case.old_log_prob[i]
        raise Mismatch("gradient weight F", case, f"{lower[i]!r} <= F <= {upper[i]!r}", float(f[i]),
                       f"token {i}: log-ratio {logr!r}, A {a[i]!r}, d loss/d log_prob {grad[i]!r} with c_t = {c_t[i]!r}")


for _clause, _members in MEMBER_CLAUSES.items():

    def _bound(ad: Adapter, data: Any) -> None:
        """Every valid token's F lies within the member's bound of spec S14.1, for every sign of A, at extreme log-ratios too."""
        case = draw_general(ad, data, extremes=True)
        _check_weight_bounds(case, _grad_of(ad, case))

    prop(_clause, "gradient bound", "family", needs_grad=True, objectives=_members)(_bound)


# -- special cases ----------------------------------------------------------------------------------------
@prop("S14.1", "on-policy weight is 1", "family", needs_grad=True, objectives=FAMILY_OBJECTIVES)
def on_policy(ad: Adapter, data: Any) -> None:
    """With old_log_prob = log_prob every member gives the plain policy gradient -c_t A_t (F = 1; the cap form below 1: F = cap)."""
    case = draw_general(ad, data)
    case = case.with_(old_log_prob=case.log_prob)
    weight = min(1.0, case.cfg.cap) if isinstance(case.cfg, CISPOCapConfig) else 1.0
    compare_grad("d loss / d log_prob on-policy vs -c A", case, _grad_of(ad, case), _policy_gradient(case, weight))


_UNBOUNDED = 1e12
"""An upper end no drawn ratio reaches: the case is drawn for a config of ordinary size (|logr| <= 20.5
without extremes, delta < 1e9), then checked under this one."""


@prop("S14.2", "without bounds the weight is the ratio", "family", needs_grad=True, objectives=("cispo", "cispo_cap"))
def cispo_unbounded(ad: Adapter, data: Any) -> None:
    """eps_low >= 1 and a huge eps_high (or cap) give F = delta for every token: the unclipped importance-weighted gradient."""
    if ad.objective == "cispo":
        cfg: Any = CISPOConfig(eps_low=data.draw(st.floats(1.0, 4.0), label="eps_low"), eps_high=_UNBOUNDED)
    else:
        cfg = CISPOCapConfig(cap=_UNBOUNDED)
    case = draw_general(ad, data).with_(cfg=cfg)
    delta = np.exp(np.where(case.mask, case.log_prob - case.old_log_prob, 0.0))
    compare_grad("d loss / d log_prob vs -c delta A", case, _grad_of(ad, case), _policy_gradient(case, delta))


@prop("S14.2", "cap form equals the two-sided form with eps_low = 1", "family", objectives=("cispo", "cispo_cap"))
def cispo_cap_is_two_sided(ad: Adapter, data: Any) -> None:
    """For cap > 1, CISPOCapConfig(cap) and CISPOConfig(eps_low=1, eps_high=cap - 1) give the same loss and gradient."""
    cap = data.draw(st.floats(1.01, 10.0), label="cap")
    ported: Any = CISPOCapConfig(cap=cap)
    other: Any = CISPOConfig(eps_low=1.0, eps_high=cap - 1.0)
    if ad.objective == "cispo":
        ported, other = other, ported
    case = draw_case(data, dtypes=common_dtypes(ad), aggs=ad.aggs, cfg=ported, global_normalizers=ad.global_normalizers,
                     adv_forms=ad.forms)
    got, want = ad.run(case), expected(case.with_(cfg=other))
    compare_value(f"loss vs the reference of {other!r}", case, got.value, want.value, want.scale)
    if ad.has_grad:
        compare_grad(f"d loss / d log_prob vs the reference of {other!r}", case, got.grad_or_fail(case), want.grad)


@prop("S14.3", "at delta = 1 the weight is 1", "family", needs_grad=True, objectives=("sapo",))
def sapo_on_policy_tokens(ad: Adapter, data: Any) -> None:
    """Tokens with delta = 1 get F = 1 whatever the temperatures and whatever the other tokens: the 4 / tau factor."""
    case = draw_general(ad, data)
    b, t = case.shape
    flags = data.draw(st.lists(st.booleans(), min_size=b * t, max_size=b * t), label="tokens set on-policy")
    on = np.array(flags, dtype=bool).reshape(b, t)
    case = case.with_(old_log_prob=np.where(on, case.log_prob, case.old_log_prob))
    got = _grad_of(ad, case)
    want = np.where(on, _policy_gradient(case, 1.0), got)
    compare_grad("d loss / d log_prob of on-policy tokens vs -c A", case, got, want)


@prop("S14.4", "one-token rows are token-level PPO-clip", "family", objectives=("gspo",))
def gspo_one_token_rows(ad: Adapter, data: Any) -> None:
    """Rows with one valid token have s_i = delta_t: value and gradient are PPO-clip's (textbook min / clip) with GSPO's eps."""
    case = draw_general(ad, data)
    b, t = case.shape
    keep = [data.draw(st.integers(0, t - 1), label=f"row {i}'s valid token") for i in range(b)]
    mask = np.zeros((b, t), dtype=bool)
    mask[np.arange(b), keep] = case.mask.any(axis=-1)  # an empty row stays empty
    lp = push_rows_away(case.log_prob, case.old_log_prob, mask, case.cfg, case.dtype)
    case = case.with_(log_prob=lp, mask=mask)
    ppo = textbook(case.with_(cfg=CEGPPOConfig(eps_low=case.cfg.eps_low, eps_high=case.cfg.eps_high, beta_low=0.0,
                                               beta_high=0.0)))
    got = ad.run(case)
    compare_value("loss vs PPO-clip", case, got.value, ppo["value"], ppo["scale"])
    if ad.has_grad:
        compare_grad("d loss / d log_prob vs PPO-clip", case, got.grad_or_fail(case), ppo["ppo_grad"])
