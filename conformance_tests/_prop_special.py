"""Chapters S6-S7: special cases and dual clip (spec S6.1 PPO, S6.2 GPPO, S7 Dual clip).

The expected values here do not come from the CE-GPPO reference but from the textbook formulas
they reduce to, written independently in float64:

    PPO-clip   J = min(delta A, clip(delta, 1 - eps_low, 1 + eps_high) A)        (arXiv 1707.06347 Eq. 7)
    dual clip  J = max(J, c A) for A < 0                                          (arXiv 1912.09729)
    GPPO       gradient of clipped tokens = the clip bound times A               (arXiv 2508.07629 Eq. 4)

so a port that matches the reference by accident of a shared mistake still meets a second opinion.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from ._adapters import Adapter
from ._cases import Case, compare_grad, compare_value, expected, weights
from ._conventions import declares_no_dual_clip
from ._prop_objective import common_dtypes, in_declared_mode
from ._registry import CE_GPPO_ONLY, prop
from ._strategies import draw_case, draw_config, draw_dual_clip_case

__all__ = ["textbook"]


def textbook(case: Case) -> dict[str, Any]:
    """PPO-clip (with optional dual clip) per token in float64: J, the PPO gradient weight, GPPO's.

    Returns dict with `value` (aggregated -J), `ppo_grad` and `gppo_grad` (d loss / d log_prob) and `scale`.
    """
    cfg = case.cfg
    m = case.mask
    logr = np.where(m, case.log_prob - case.old_log_prob, 0.0)
    a = np.where(m, case.adv_2d(), 0.0)
    delta = np.exp(np.minimum(logr, 700.0))
    clipped = np.clip(delta, 1 - cfg.eps_low, 1 + cfg.eps_high)
    unclipped_term, clipped_term = delta * a, clipped * a
    take_delta = unclipped_term <= clipped_term
    j = np.where(take_delta, unclipped_term, clipped_term)
    dual = np.zeros_like(m)
    if cfg.dual_clip is not None:
        dual = (a < 0) & (cfg.dual_clip * a > j)
        j = np.where(dual, cfg.dual_clip * a, j)
    f_ppo = np.where(dual, 0.0, np.where(take_delta, delta, 0.0))
    f_gppo = np.where(dual, 0.0, np.where(take_delta, delta, clipped))
    c = weights(case)  # the declared normalizer epsilon, if any
    return {
        "value": float(np.sum(c * -j)),
        "scale": float(np.sum(np.abs(c * j))),
        "ppo_grad": np.where(m, -c * f_ppo * a, 0.0),
        "gppo_grad": np.where(m, -c * f_gppo * a, 0.0),
    }


def _case(ad: Adapter, data: Any, beta: tuple[float, float]) -> Case:
    cfg = draw_config(data, beta=beta)
    return draw_case(data, dtypes=common_dtypes(ad), aggs=ad.aggs, cfg=cfg, adv_forms=ad.forms)


@prop("S6.1", "beta = 0 gives PPO's gradient", "special", needs_grad=True, objectives=CE_GPPO_ONLY)
def beta0_is_ppo_gradient(ad: Adapter, data: Any) -> None:
    """With beta_low = beta_high = 0 the gradient equals PPO-clip's (textbook min/clip, dual clip included)."""
    case = _case(ad, data, (0.0, 0.0))
    got = ad.run(case)
    compare_grad("d loss / d log_prob vs PPO-clip", case, got.grad_or_fail(case), textbook(case)["ppo_grad"])


@prop("S6.2", "beta = 1 gives PPO's value", "special", objectives=CE_GPPO_ONLY)
def beta1_is_ppo_value(ad: Adapter, data: Any) -> None:
    """With beta_low = beta_high = 1 the loss equals PPO-clip's loss (GPPO changes only the gradient)."""
    case = _case(ad, data, (1.0, 1.0))
    got = ad.run(case)
    ref = textbook(case)
    compare_value("loss vs PPO-clip", case, got.value, ref["value"], ref["scale"])


@prop("S6.2", "beta = 1 gives GPPO's gradient", "special", needs_grad=True, objectives=CE_GPPO_ONLY)
def beta1_is_gppo_gradient(ad: Adapter, data: Any) -> None:
    """With beta_low = beta_high = 1 clipped tokens keep the gradient clip-bound * A (GPPO)."""
    case = _case(ad, data, (1.0, 1.0))
    got = ad.run(case)
    compare_grad("d loss / d log_prob vs GPPO", case, got.grad_or_fail(case), textbook(case)["gppo_grad"])


@prop("S7", "dual clip acts only on A < 0 above c", "special", declared=declares_no_dual_clip,
      objectives=CE_GPPO_ONLY)
def dual_clip_only_where_it_should(ad: Adapter, data: Any) -> None:
    """Turning dual clip off changes nothing but the tokens with A < 0 and delta > c, whose gradient is 0."""
    if data.draw(st.booleans(), label="every token above log c"):
        # Mixed batches rarely reach the places where dual-clip ports slip (A < 0 with
        # log c < logr < c, A > 0 above log c), so half the examples hold each of them.
        case = in_declared_mode(ad, data, draw_dual_clip_case(data, dtypes=common_dtypes(ad), adv_forms=ad.forms))
        cfg = case.cfg
    else:
        cfg = draw_config(data, dual=True)
        case = draw_case(data, dtypes=common_dtypes(ad), aggs=ad.aggs, cfg=cfg, adv_forms=ad.forms)
    if ad.conventions.dual_clip == "required":  # no off switch: the clip on, against the reference
        _dual_clip_against_reference(ad, case)
        return
    off = case.with_(cfg=cfg.replace(dual_clip=None))
    on_r, off_r = ad.run(case), ad.run(off)
    e_on, e_off = expected(case), expected(off)
    compare_value("loss(dual clip on) - loss(dual clip off)", case, on_r.value - off_r.value,
                  e_on.value - e_off.value, e_on.scale + e_off.scale)
    if not ad.has_grad:
        return
    logr = case.log_prob - case.old_log_prob
    dual = case.mask & (case.adv_2d() < 0) & (logr > cfg.log_dual_clip)
    want = np.where(dual, 0.0, off_r.grad_or_fail(case))
    compare_grad("d loss / d log_prob with dual clip vs without (0 on dual-clip tokens)", case, on_r.grad_or_fail(case), want)


def _dual_clip_against_reference(ad: Adapter, case: Case) -> None:
    """S7 for a port declaring dual_clip='required': value and gradient equal the reference on the
    dual-clip cases (tokens above log c of both signs), dual-clip tokens with gradient 0."""
    got, want = ad.run(case), expected(case)
    compare_value("loss with dual clip", case, got.value, want.value, want.scale)
    if ad.has_grad:
        compare_grad("d loss / d log_prob with dual clip (0 on dual-clip tokens)", case, got.grad_or_fail(case),
                     want.grad)
