"""Reference checks for `family_metrics` (docs/spec.md S10, S14.1): each member's regions and gate.

Hand-made batches put one token in each region a member has; the expected fractions are counted
here by hand and the gradient weights written as direct formulas (no code shared with `cegppo`).
For a `CEGPPOConfig` the metrics are `policy_metrics`' bit for bit.
"""

from __future__ import annotations

import math
from typing import Any

import cegppo
import numpy as np
import pytest

REL = 1e-12

LOGR = np.array([[math.log(0.5), math.log(0.5), 0.0, math.log(2.0), math.log(2.0), 0.3]])
"""One row: ratios 0.5 (A < 0 and A > 0), 1 (A < 0), 2 (A > 0 and A < 0), and a masked token."""
ADV = np.array([[-1.0, 1.0, -2.0, 3.0, -1.5, 7.0]])
MASK = np.array([[True, True, True, True, True, False]])
LOG_PROB = np.full(LOGR.shape, -1.0)


def metrics(cfg: Any, logr: np.ndarray = LOGR, adv: np.ndarray = ADV, mask: np.ndarray = MASK) -> dict[str, float]:
    lp = np.full(logr.shape, -1.0)
    out = cegppo.family_metrics(lp, lp - logr, adv, mask, cfg)
    assert list(out) == list(cegppo.METRIC_KEYS)
    assert all(v.shape == () and v.dtype == np.float64 for v in out.values())
    return {k: float(v) for k, v in out.items()}


def check_token_statistics(got: dict[str, float]) -> None:
    """ratio_mean, ratio_max and the KL estimators are the token ratio's over the 5 valid tokens."""
    ratios = [0.5, 0.5, 1.0, 2.0, 2.0]
    logrs = [math.log(r) for r in ratios]
    assert got["ratio_mean"] == pytest.approx(sum(ratios) / 5, rel=REL)
    assert got["ratio_max"] == pytest.approx(2.0, rel=REL)
    assert got["approx_kl_k1"] == pytest.approx(-sum(logrs) / 5, rel=REL)
    assert got["approx_kl_k3"] == pytest.approx(sum(r - 1 - lr for r, lr in zip(ratios, logrs, strict=True)) / 5, rel=REL)


def check_regions(got: dict[str, float], low: int, high: int, inside: int) -> None:
    """Region fractions of the 5 valid tokens (no member beside CE-GPPO has dual-clip tokens)."""
    assert (got["clip_low_frac"], got["clip_high_frac"], got["dual_clip_frac"], got["inside_frac"]) == pytest.approx(
        (low / 5, high / 5, 0.0, inside / 5), rel=REL
    )
    assert got["clip_frac"] == pytest.approx((low + high) / 5, rel=REL)


def test_S10_S14_2_cispo_regions_are_where_the_weight_is_clipped_whatever_the_sign_of_A() -> None:
    """Two-sided CISPO with [0.8, 1.2]: the two ratio-0.5 tokens are clip_low (A < 0 and A > 0), the two
    ratio-2 tokens clip_high; mean |F| over A != 0 tokens is (0.8 + 0.8 + 1 + 1.2 + 1.2) / 5."""
    got = metrics(cegppo.CISPOConfig(eps_low=0.2, eps_high=0.2))
    check_regions(got, low=2, high=2, inside=1)
    assert got["grad_weight_abs_mean"] == pytest.approx((0.8 + 0.8 + 1.0 + 1.2 + 1.2) / 5, rel=REL)
    check_token_statistics(got)


def test_S10_S14_2_capped_cispo_has_no_clip_low() -> None:
    """TRL's cap 1.5: only the ratio-2 tokens are clipped (clip_high), none below; F = min(delta, 1.5)."""
    got = metrics(cegppo.CISPOCapConfig(cap=1.5))
    check_regions(got, low=0, high=2, inside=3)
    assert got["grad_weight_abs_mean"] == pytest.approx((0.5 + 0.5 + 1.0 + 1.5 + 1.5) / 5, rel=REL)
    # A cap below every ratio clips them all above.
    check_regions(metrics(cegppo.CISPOCapConfig(cap=0.25)), low=0, high=5, inside=0)


def test_S10_S14_3_sapo_has_every_token_inside_and_its_gate_in_the_weight() -> None:
    """SAPO: inside_frac 1; grad_weight_abs_mean = mean over valid tokens of 4 sig(z) sig(-z) delta [A != 0]."""
    cfg = cegppo.SAPOConfig(tau_pos=1.0, tau_neg=1.05)
    adv = ADV.copy()
    adv[0, 2] = 0.0  # an A = 0 token counts as 0 in grad_weight_abs_mean
    got = metrics(cfg, adv=adv)
    check_regions(got, low=0, high=0, inside=5)

    def gate(ratio: float, a: float) -> float:
        if a == 0:
            return 0.0
        z = (cfg.tau_pos if a > 0 else cfg.tau_neg) * (ratio - 1)
        sig = 1 / (1 + math.exp(-z))
        return 4 * sig * (1 - sig) * ratio

    want = sum(gate(r, a) for r, a in zip([0.5, 0.5, 1.0, 2.0, 2.0], adv[0, :5], strict=True)) / 5
    assert got["grad_weight_abs_mean"] == pytest.approx(want, rel=REL)
    check_token_statistics(got)


def test_S10_S14_4_gspo_regions_are_ppos_on_the_sequence_ratio() -> None:
    """GSPO, eps 0.1 / 0.1, three rows of mixed-sign advantages: log s below the interval (A < 0 tokens
    clip_low), above it (A > 0 tokens clip_high), inside (none clipped). F is s_i, or 0 where clipped."""
    cfg = cegppo.GSPOConfig(eps_low=0.1, eps_high=0.1)
    logr = np.array([[-0.3, -0.2, -0.1, 9.0], [0.3, 0.2, 0.1, -9.0], [0.05, -0.05, 0.0, 9.0]])
    adv = np.array([[-1.0, 2.0, -1.0, 5.0], [1.0, -2.0, 1.0, 5.0], [1.0, -1.0, 1.0, 5.0]])
    mask = np.array([[True, True, True, False]] * 3)  # the last column is masked: it must not move s
    got = metrics(cfg, logr, adv, mask)
    n = 9
    assert (got["clip_low_frac"], got["clip_high_frac"], got["dual_clip_frac"], got["inside_frac"]) == pytest.approx(
        (2 / n, 2 / n, 0.0, 5 / n), rel=REL
    )
    s = [math.exp(-0.2), math.exp(0.2), 1.0]
    want = (s[0] + s[1] + 3 * s[2]) / n  # |F| = s_i on the 5 unclipped tokens (|A| > 0 everywhere)
    assert got["grad_weight_abs_mean"] == pytest.approx(want, rel=REL)
    ratios = np.exp(logr[mask])
    assert got["ratio_mean"] == pytest.approx(ratios.mean(), rel=REL)
    assert got["ratio_max"] == pytest.approx(ratios.max(), rel=REL)


@pytest.mark.parametrize(
    "cfg",
    [cegppo.CEGPPOConfig(), cegppo.presets.ce_gppo_official(), cegppo.presets.ppo(), cegppo.presets.dapo()],
    ids=["default", "official-dual-clip", "ppo", "dapo"],
)
def test_S10_S14_1_ce_gppo_metrics_are_policy_metrics_bit_for_bit(cfg: cegppo.CEGPPOConfig) -> None:
    """For a CEGPPOConfig, family_metrics is policy_metrics: same keys, order, dtypes and bits, in float64 and
    float32, with per-token and per-sequence advantages, garbage at masked positions and dual-clip tokens."""
    rng = np.random.default_rng(3)
    lp = rng.uniform(-4, 0, (6, 9))
    logr = rng.normal(0, 0.5, (6, 9))
    logr[0, :2] = [3.0, -3.0]  # ratio e^3 > c = 10 with A < 0 for the official preset: dual clip
    mask = rng.random((6, 9)) < 0.7
    mask[0, :2] = True
    mask[1] = False
    for adv in (rng.normal(size=(6, 9)), rng.normal(size=6)):
        if adv.ndim == 2:
            adv[0, :2] = -1.0
        for dtype in (np.float64, np.float32):
            args = (np.where(mask, lp, np.nan).astype(dtype), (lp - logr).astype(dtype), adv.astype(dtype), mask)
            want = cegppo.policy_metrics(*args, cfg)
            got = cegppo.family_metrics(*args, cfg)
            assert list(got) == list(want)
            for key in want:
                assert got[key].dtype == want[key].dtype
                np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize(
    "cfg",
    [cegppo.CISPOConfig(), cegppo.CISPOCapConfig(), cegppo.SAPOConfig(), cegppo.GSPOConfig()],
    ids=lambda c: type(c).__name__,
)
def test_S10_family_metrics_of_an_empty_batch_are_zero_and_regions_partition(cfg: Any) -> None:
    """No valid token: every metric is 0 (not NaN); a drawn batch's four region fractions sum to 1."""
    lp = np.zeros((2, 3))
    got = cegppo.family_metrics(lp, lp, np.ones((2, 3)), np.zeros((2, 3), bool), cfg)
    assert all(float(v) == 0.0 for v in got.values())
    rng = np.random.default_rng(0)
    out = cegppo.family_metrics(lp, rng.normal(0, 0.5, (2, 3)), rng.normal(size=(2, 3)), np.ones((2, 3), bool), cfg)
    fracs = sum(float(out[k]) for k in ("clip_low_frac", "clip_high_frac", "dual_clip_frac", "inside_frac"))
    assert fracs == pytest.approx(1.0, rel=REL)


def test_S14_1_family_metrics_refuses_an_unknown_config_by_name() -> None:
    lp = np.zeros((1, 2))
    with pytest.raises(TypeError, match=r"cfg must be one of cegppo\.\{CEGPPOConfig, .*got dict"):
        cegppo.family_metrics(lp, lp, lp, np.ones((1, 2), bool), {})
