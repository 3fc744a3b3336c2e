"""Chapter S5: the gradient bound of every region (spec S5 Bounds).

With token-mean over N valid tokens, d loss / d log_prob_t = -F_t A_t / N, so F_t is read back
from the gradient and checked against its region's bound (docs/spec.md S5):

    clip_low   |F| <= beta_low (1 - eps_low)
    clip_high  |F| <= beta_high (1 + eps_high)
    dual_clip  F = 0
    inside     0 <= F < 1 - eps_low (A > 0 below the interval), <= 1 + eps_high (within),
               <= c (A < 0 above the interval, dual clip on; unbounded without)

Log-ratios go far beyond the boundaries (|logr| up to 1e4), where delta under- or overflows: the
bound must still hold and the gradient must be finite.
"""

from __future__ import annotations

from typing import Any

import cegppo
import numpy as np

from ._adapters import Adapter
from ._cases import GRAD_TOL, Case, Mismatch, tol_dtype, weights
from ._conventions import declares_no_dual_clip
from ._prop_objective import common_dtypes, in_declared_mode
from ._registry import CE_GPPO_ONLY, prop
from ._strategies import draw_region_case

__all__: list[str] = []


def _bound_check(ad: Adapter, data: Any, region: str) -> None:
    case = in_declared_mode(ad, data, draw_region_case(data, region, dtypes=common_dtypes(ad), adv_forms=ad.forms))
    got = ad.run(case)
    check_bounds(case, got.grad_or_fail(case), region)


def check_bounds(case: Case, grad: np.ndarray, region: str) -> None:
    """Raise Mismatch unless every valid token of `region` has |F| within its bound.

    F_t is read back from d loss / d log_prob_t = -c_t F_t A_t (spec S4) with the case's coefficients c.
    """
    cfg = case.cfg
    m = case.mask
    if not np.all(np.isfinite(grad)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(grad))[0])
        raise Mismatch("gradient finite", case, "finite", grad, f"element {bad} is {grad[bad]!r}")
    n = int(m.sum())
    if n == 0:
        return
    c_t = weights(case)
    a = case.adv_2d()
    regions = cegppo.token_regions(case.log_prob, case.old_log_prob, case.advantages, cfg)
    logr = case.log_prob - case.old_log_prob
    with np.errstate(all="ignore"):
        ca = c_t * a
        f = np.where(ca != 0, -grad / np.where(ca != 0, ca, 1.0), 0.0)
    rtol = 10 * GRAD_TOL[tol_dtype(case)][0]
    sel = m & (a != 0) & (c_t != 0) & getattr(regions, region)
    if region == "clip_low":
        bound = np.full(case.shape, cfg.weight_low)
    elif region == "clip_high":
        bound = np.full(case.shape, cfg.weight_high)
    elif region == "dual_clip":
        bound = np.zeros(case.shape)
    else:
        below = logr < cfg.log_lower
        within = ~below & (logr <= cfg.log_upper)
        c = np.inf if cfg.dual_clip is None else cfg.dual_clip
        bound = np.where(below, 1 - cfg.eps_low, np.where(within, 1 + cfg.eps_high, c))
    with np.errstate(invalid="ignore"):
        ok = ~sel | ((np.abs(f) <= bound * (1 + rtol) + 1e-30) & (f >= -rtol * bound - 1e-30))
    if not np.all(ok):
        i = tuple(int(k) for k in np.argwhere(~ok)[0])
        raise Mismatch(
            f"gradient weight F in {region}", case, f"0 <= F <= {bound[i]!r}", float(f[i]),
            f"token {i}: log-ratio {logr[i]!r}, A {a[i]!r}, d loss/d log_prob {grad[i]!r} with c_t = {c_t[i]!r}",
        )


@prop("S5", "gradient bound clip_low", "bounds", needs_grad=True, objectives=CE_GPPO_ONLY)
def bound_clip_low(ad: Adapter, data: Any) -> None:
    """clip_low tokens (delta < 1 - eps_low, A < 0): |F| <= beta_low (1 - eps_low), finite at any depth."""
    _bound_check(ad, data, "clip_low")


@prop("S5", "gradient bound clip_high", "bounds", needs_grad=True, objectives=CE_GPPO_ONLY)
def bound_clip_high(ad: Adapter, data: Any) -> None:
    """clip_high tokens (delta > 1 + eps_high, A > 0): |F| <= beta_high (1 + eps_high), finite even when delta overflows."""
    _bound_check(ad, data, "clip_high")


@prop("S5", "gradient bound dual_clip", "bounds", needs_grad=True, declared=declares_no_dual_clip,
      objectives=CE_GPPO_ONLY)
def bound_dual_clip(ad: Adapter, data: Any) -> None:
    """dual_clip tokens (A < 0, delta > c): F = 0, finite even when delta overflows."""
    _bound_check(ad, data, "dual_clip")


@prop("S5", "gradient bound inside", "bounds", needs_grad=True, objectives=CE_GPPO_ONLY)
def bound_inside(ad: Adapter, data: Any) -> None:
    """inside tokens: 0 <= F < 1 - eps_low below the interval (A > 0), <= 1 + eps_high within, <= c above (A < 0)."""
    _bound_check(ad, data, "inside")
