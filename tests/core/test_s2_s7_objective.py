"""Reference self-checks for docs/spec.md S2 (regions) to S7 (dual clip).

Test names carry the clause they check. Every gradient check draws log-ratios at least KINK_GAP
(the kit's MARGIN["float32"]) away from the kinks (1 - eps_low, 1 + eps_high, c), where the loss is smooth.
"""

from __future__ import annotations

import math

import cegppo
import numpy as np
import pytest
from _core_strategies import (
    AGG_MODES,
    Batch,
    batches,
    central_difference,
    configs,
    independent_loss_and_grad,
    ppo_clip_grad,
)
from hypothesis import given
from hypothesis import strategies as st

REL = 1e-12  # independent float64 implementation: value and gradient (issue 2, "Done when")
FD_RTOL = 1e-6  # central differences with h = 1e-6 on a function smooth to KINK_GAP = 1e-3 (_core_strategies.py)


def _args(b: Batch) -> tuple:
    return b.log_prob, b.old_log_prob, b.advantages, b.mask, b.cfg


# ---------------------------------------------------------------- S2 regions


@given(batches(holes=False))
def test_S2_regions_partition_the_tokens(b: Batch) -> None:
    r = cegppo.token_regions(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    total = sum(x.astype(int) for x in r)
    assert np.all(total == 1), "every token lies in exactly one region"


@given(batches(holes=False))
def test_S2_region_conditions(b: Batch) -> None:
    r = cegppo.token_regions(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    delta = np.exp(b.log_prob - b.old_log_prob)
    a = np.broadcast_to(b.advantages[:, None], delta.shape) if b.advantages.ndim == 1 else b.advantages
    np.testing.assert_array_equal(r.clip_low, (delta < 1 - b.cfg.eps_low) & (a < 0))
    np.testing.assert_array_equal(r.clip_high, (delta > 1 + b.cfg.eps_high) & (a > 0))
    c = math.inf if b.cfg.dual_clip is None else b.cfg.dual_clip
    np.testing.assert_array_equal(r.dual_clip, (delta > c) & (a < 0))


def test_S2_zero_advantage_is_inside() -> None:
    lp = np.log(np.array([[0.01, 1.0, 100.0]]))
    r = cegppo.token_regions(lp, np.zeros_like(lp), np.zeros(1), cegppo.presets.ce_gppo_official())
    assert r.inside.all()


# ---------------------------------------------------------------- S3 + S4 vs an independent implementation


@pytest.mark.parametrize("agg", AGG_MODES)
@given(b=batches())
def test_S3_S4_reference_agrees_with_independent_float64_implementation(agg: str, b: Batch) -> None:
    loss_ref = float(cegppo.policy_loss(*_args(b), agg))
    grad_ref = cegppo.policy_loss_grad(*_args(b), agg)
    loss_ind, grad_ind, scale = independent_loss_and_grad(b, agg)
    assert abs(loss_ref - loss_ind) <= REL * max(abs(loss_ind), scale), (loss_ref, loss_ind)
    np.testing.assert_allclose(grad_ref, grad_ind, rtol=REL, atol=0)


@pytest.mark.parametrize("dual", [False, True], ids=["no_dual", "dual"])
def test_S3_S4_every_region_hit_with_and_without_dual_clip(dual: bool) -> None:
    """A fixed batch with tokens in all four regions (three without dual clip), checked both ways."""
    cfg = cegppo.presets.ce_gppo_official() if dual else cegppo.presets.ce_gppo_7b()
    ratio = np.array([[0.5, 1.0, 1.5, 20.0], [0.5, 1.0, 1.5, 20.0]])
    old = np.log(np.full_like(ratio, 0.04))
    adv = np.array([[-1.0, -1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 0.0]])
    mask = np.array([[True, True, False, True], [True, True, True, True]])
    b = Batch(old + np.log(ratio), old, adv, mask, cfg)
    r = cegppo.token_regions(b.log_prob, b.old_log_prob, b.advantages, cfg)
    assert r.clip_low[0, 0] and r.clip_high[1, 2] and r.inside[0, 1] and r.inside[1, 3]
    assert r.dual_clip[0, 3] == dual
    for agg in AGG_MODES:
        loss_ind, grad_ind, scale = independent_loss_and_grad(b, agg)
        assert abs(float(cegppo.policy_loss(*_args(b), agg)) - loss_ind) <= REL * scale
        np.testing.assert_allclose(cegppo.policy_loss_grad(*_args(b), agg), grad_ind, rtol=REL, atol=0)


@given(batches(holes=False))
def test_S3_per_token_objective_values_by_region(b: Batch) -> None:
    j = cegppo.per_token_objective(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    r = cegppo.token_regions(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    a = np.broadcast_to(b.advantages[:, None], j.shape) if b.advantages.ndim == 1 else b.advantages
    delta = np.exp(b.log_prob - b.old_log_prob)
    cfg = b.cfg
    np.testing.assert_allclose(j[r.clip_low], cfg.beta_low * (1 - cfg.eps_low) * a[r.clip_low], rtol=1e-15)
    np.testing.assert_allclose(j[r.clip_high], cfg.beta_high * (1 + cfg.eps_high) * a[r.clip_high], rtol=1e-15)
    np.testing.assert_allclose(j[r.inside], delta[r.inside] * a[r.inside], rtol=1e-14)
    if cfg.dual_clip is not None:
        np.testing.assert_allclose(j[r.dual_clip], cfg.dual_clip * a[r.dual_clip], rtol=1e-15)


# ---------------------------------------------------------------- S4 gradient vs finite differences


@pytest.mark.parametrize("agg", AGG_MODES)
@given(b=batches(max_b=3, max_t=4))
def test_S4_policy_loss_grad_matches_central_differences(agg: str, b: Batch) -> None:
    """d loss / d log_prob against central differences of Eq. 8 with sg frozen at the drawn point.

    In clip_low / clip_high the value of J is the constant w A and only delta / sg(delta) carries
    the gradient; differencing it means differencing exp(x - x0) with sg(delta) held at x0. So
    f(x) = policy_loss(x) + sum_clipped c_t (-J_t) (exp(x_t - x0_t) - 1), which equals the loss at
    x0 and has the Eq. 8 surrogate's derivative everywhere in the drawn neighbourhood.
    """
    x0 = b.log_prob
    r = cegppo.token_regions(x0, b.old_log_prob, b.advantages, b.cfg)
    clipped = (r.clip_low | r.clip_high) & b.mask
    j0 = cegppo.per_token_objective(x0, b.old_log_prob, b.advantages, b.cfg)
    c = cegppo.aggregation_weights(b.mask, agg)

    def f(x: np.ndarray) -> float:
        value = float(cegppo.policy_loss(x, b.old_log_prob, b.advantages, b.mask, b.cfg, agg))
        return value + float(np.sum(np.where(clipped, c * -j0 * np.expm1(x - x0), 0)))

    fd = central_difference(f, x0)
    g = cegppo.policy_loss_grad(*_args(b), agg)
    scale = np.max(np.abs(g)) + 1.0
    np.testing.assert_allclose(g, fd, rtol=FD_RTOL, atol=FD_RTOL * scale)


@pytest.mark.parametrize("agg", AGG_MODES)
@given(b=batches(max_b=3, max_t=4))
def test_S4_value_gradient_equals_analytic_gradient_off_the_clipped_regions(agg: str, b: Batch) -> None:
    """Where no token is clipped the loss value itself is the surrogate: plain central differences."""
    r = cegppo.token_regions(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    unclipped = ~(r.clip_low | r.clip_high)
    adv = np.broadcast_to(b.advantages[:, None], b.mask.shape) if b.advantages.ndim == 1 else b.advantages
    adv = np.where(unclipped, adv, 0.0)  # zero advantage moves clipped tokens inside (S2)

    def f(x: np.ndarray) -> float:
        return float(cegppo.policy_loss(x, b.old_log_prob, adv, b.mask, b.cfg, agg))

    fd = central_difference(f, b.log_prob)
    g = cegppo.policy_loss_grad(b.log_prob, b.old_log_prob, adv, b.mask, b.cfg, agg)
    scale = np.max(np.abs(g)) + 1.0
    np.testing.assert_allclose(g, fd, rtol=FD_RTOL, atol=FD_RTOL * scale)


@given(batches(holes=False))
def test_S4_grad_weight_table(b: Batch) -> None:
    """F = beta_low (1 - eps_low), beta_high (1 + eps_high), 0, delta in the four regions."""
    f = cegppo.grad_weight(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    r = cegppo.token_regions(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    assert np.all(f[r.clip_low] == b.cfg.weight_low)
    assert np.all(f[r.clip_high] == b.cfg.weight_high)
    assert np.all(f[r.dual_clip] == 0)
    np.testing.assert_allclose(f[r.inside], np.exp(b.log_prob - b.old_log_prob)[r.inside], rtol=1e-15)


# ---------------------------------------------------------------- S5 bounds


@given(batches(holes=False))
def test_S5_gradient_weight_bounds(b: Batch) -> None:
    cfg = b.cfg
    f = np.abs(cegppo.grad_weight(b.log_prob, b.old_log_prob, b.advantages, cfg))
    r = cegppo.token_regions(b.log_prob, b.old_log_prob, b.advantages, cfg)
    delta = np.exp(b.log_prob - b.old_log_prob)
    a = np.broadcast_to(b.advantages[:, None], f.shape) if b.advantages.ndim == 1 else b.advantages
    assert np.all(f[r.clip_low] <= cfg.beta_low * (1 - cfg.eps_low))
    assert np.all(f[r.clip_high] <= cfg.beta_high * (1 + cfg.eps_high))
    assert np.all(f[r.dual_clip] == 0)
    below = r.inside & (a > 0) & (delta < 1 - cfg.eps_low)
    assert np.all(f[below] < 1 - cfg.eps_low)
    within = r.inside & (delta >= 1 - cfg.eps_low) & (delta <= 1 + cfg.eps_high)
    assert np.all(f[within] <= 1 + cfg.eps_high)
    above_neg = r.inside & (a < 0) & (delta > 1 + cfg.eps_high)
    if cfg.dual_clip is not None:
        assert np.all(f[above_neg] <= cfg.dual_clip)


def test_S5_unbounded_without_dual_clip() -> None:
    """A < 0 above the interval without dual clip: F = delta grows without bound (inf on overflow)."""
    cfg = cegppo.presets.ce_gppo_1p5b()
    lp = np.array([[5.0, 50.0, 800.0]])
    f = cegppo.grad_weight(lp, np.zeros_like(lp), -np.ones(1), cfg)
    np.testing.assert_allclose(f[0, :2], np.exp([5.0, 50.0]))
    assert f[0, 2] == np.inf
    g = cegppo.policy_loss_grad(lp, np.zeros_like(lp), -np.ones(1), np.ones((1, 3), bool), cfg, "token-sum")
    assert g[0, 2] == np.inf  # the true value: d(-delta A)/dlogp = delta with A = -1


# ---------------------------------------------------------------- S6 special cases


@pytest.mark.parametrize("agg", AGG_MODES)
@given(data=st.data())
def test_S6_1_beta_zero_has_ppo_clip_gradient(agg: str, data: st.DataObject) -> None:
    cfg = data.draw(configs(), label="cfg").replace(beta_low=0.0, beta_high=0.0)
    b = data.draw(batches(cfg), label="batch")
    np.testing.assert_allclose(cegppo.policy_loss_grad(*_args(b), agg), ppo_clip_grad(b, agg), rtol=1e-14, atol=0)


@given(data=st.data())
def test_S6_1_beta_zero_value_differs_from_ppo_by_a_constant(data: st.DataObject) -> None:
    """PPO's per-token loss minus CE-GPPO(beta = 0)'s is a function of (A, region) alone: the clipped constant."""
    cfg = data.draw(configs(), label="cfg").replace(beta_low=0.0, beta_high=0.0)
    b = data.draw(batches(cfg, holes=False), label="batch")
    j = cegppo.per_token_objective(b.log_prob, b.old_log_prob, b.advantages, cfg)
    a = np.broadcast_to(b.advantages[:, None], j.shape) if b.advantages.ndim == 1 else b.advantages
    delta = np.exp(b.log_prob - b.old_log_prob)
    ppo = np.minimum(delta * a, np.clip(delta, 1 - cfg.eps_low, 1 + cfg.eps_high) * a)
    if cfg.dual_clip is not None:
        ppo = np.where(a < 0, np.maximum(ppo, cfg.dual_clip * a), ppo)
    r = cegppo.token_regions(b.log_prob, b.old_log_prob, b.advantages, cfg)
    np.testing.assert_allclose((ppo - j)[r.inside | r.dual_clip], 0, atol=1e-14)
    np.testing.assert_allclose((ppo - j)[r.clip_low], ((1 - cfg.eps_low) * a)[r.clip_low], rtol=1e-14)
    np.testing.assert_allclose((ppo - j)[r.clip_high], ((1 + cfg.eps_high) * a)[r.clip_high], rtol=1e-14)


@pytest.mark.parametrize("agg", AGG_MODES)
@given(data=st.data())
def test_S6_2_beta_one_has_ppo_value_and_gppo_gradient(agg: str, data: st.DataObject) -> None:
    cfg = data.draw(configs(), label="cfg").replace(beta_low=1.0, beta_high=1.0)
    b = data.draw(batches(cfg), label="batch")
    a = np.broadcast_to(b.advantages[:, None], b.mask.shape) if b.advantages.ndim == 1 else b.advantages
    delta = np.exp(b.log_prob - b.old_log_prob)
    ppo = -np.minimum(delta * a, np.clip(delta, 1 - cfg.eps_low, 1 + cfg.eps_high) * a)
    if cfg.dual_clip is not None:
        ppo = np.where(a < 0, np.minimum(ppo, -cfg.dual_clip * a), ppo)
    c = cegppo.aggregation_weights(b.mask, agg)
    ppo_loss = float(np.sum(c * np.where(b.mask, ppo, 0)))
    loss = float(cegppo.policy_loss(*_args(b), agg))
    assert abs(loss - ppo_loss) <= 1e-13 * (np.sum(np.abs(c * ppo)) + 1e-300)
    # GPPO (arXiv 2508.07629 Eq. 4): clipped tokens keep the gradient of the clip bound itself,
    # (1 - eps_low) A or (1 + eps_high) A; written here as a per-case table.
    r = cegppo.token_regions(b.log_prob, b.old_log_prob, b.advantages, cfg)
    f = np.where(r.clip_low, 1 - cfg.eps_low, np.where(r.clip_high, 1 + cfg.eps_high, np.where(r.dual_clip, 0, delta)))
    np.testing.assert_allclose(cegppo.policy_loss_grad(*_args(b), agg), np.where(b.mask, -c * f * a, 0), rtol=1e-14)


def test_S6_3_clip_higher_moves_only_the_upper_kink() -> None:
    """DAPO: eps_high > eps_low; a ratio of 1.25 with A > 0 is clipped at eps_high = 0.2, inside at 0.28."""
    lp = np.log(np.array([[1.25, 0.75]]))
    adv = np.array([[1.0, -1.0]])
    r_sym = cegppo.token_regions(lp, np.zeros_like(lp), adv, cegppo.presets.ppo())
    r_dapo = cegppo.token_regions(lp, np.zeros_like(lp), adv, cegppo.presets.dapo())
    assert r_sym.clip_high[0, 0] and r_dapo.inside[0, 0]
    assert r_sym.clip_low[0, 1] and r_dapo.clip_low[0, 1]


# ---------------------------------------------------------------- S7 dual clip


@given(batches(dual=True, holes=False))
def test_S7_dual_clip_caps_the_loss_of_negative_advantage_tokens(b: Batch) -> None:
    j = cegppo.per_token_objective(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    a = np.broadcast_to(b.advantages[:, None], j.shape) if b.advantages.ndim == 1 else b.advantages
    neg = a < 0
    assert np.all(-j[neg] <= -b.cfg.dual_clip * a[neg] * (1 + 1e-15))
    b_off = Batch(b.log_prob, b.old_log_prob, b.advantages, b.mask, b.cfg.replace(dual_clip=None))
    r = cegppo.token_regions(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    g_on = cegppo.grad_weight(*_args(b)[:3], b.cfg)
    g_off = cegppo.grad_weight(*_args(b_off)[:3], b_off.cfg)
    assert np.all(g_on[r.dual_clip] == 0)
    np.testing.assert_array_equal(g_on[~r.dual_clip], g_off[~r.dual_clip])
