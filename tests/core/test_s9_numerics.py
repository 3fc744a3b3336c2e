"""Reference self-checks for docs/spec.md S9 (numerics: log space, select-then-exponentiate,
masked garbage, dtypes, errors, validate=True) and S10 (diagnostics)."""

from __future__ import annotations

import math

import cegppo
import numpy as np
import pytest
from _core_strategies import AGG_MODES, Batch, batches
from hypothesis import given
from hypothesis import strategies as st

CFG = cegppo.presets.ce_gppo_official()


def _args(b: Batch) -> tuple:
    return b.log_prob, b.old_log_prob, b.advantages, b.mask, b.cfg


# ---------------------------------------------------------------- S9.1 log space, bounds in the compute dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_S9_1_bounds_are_rounded_to_the_compute_dtype(dtype: type) -> None:
    """logr exactly at dtype(log(1 - eps_low)) is inside; one ulp below is clip_low (same above)."""
    lower = dtype(math.log1p(-0.2))
    upper = dtype(math.log1p(0.2))
    logr = np.array([[lower, np.nextafter(lower, dtype(-np.inf)), upper, np.nextafter(upper, dtype(np.inf))]], dtype)
    adv = np.array([[-1.0, -1.0, 1.0, 1.0]], dtype)
    r = cegppo.token_regions(logr, np.zeros_like(logr), adv, CFG)
    np.testing.assert_array_equal(r.clip_low[0], [False, True, False, False])
    np.testing.assert_array_equal(r.clip_high[0], [False, False, False, True])


def test_S9_1_extreme_log_ratios_give_finite_clipped_values_and_gradients() -> None:
    """fp32 delta underflows below logr = -103 and overflows above 88; clipped tokens must not care."""
    for dtype in (np.float32, np.float64):
        logr = np.array([[-200.0, -1e4, 200.0, 1e4, 200.0, 1e4]], dtype)
        adv = np.array([[-1.0, -1.0, 1.0, 1.0, -1.0, -1.0]], dtype)
        mask = np.ones_like(logr, bool)
        r = cegppo.token_regions(logr, np.zeros_like(logr), adv, CFG)
        assert r.clip_low[0, :2].all() and r.clip_high[0, 2:4].all() and r.dual_clip[0, 4:].all()
        j = cegppo.per_token_objective(logr, np.zeros_like(logr), adv, CFG)
        np.testing.assert_allclose(j[0], [-0.4, -0.4, 1.2, 1.2, -10, -10], rtol=1e-6)
        g = cegppo.policy_loss_grad(logr, np.zeros_like(logr), adv, mask, CFG, "token-sum")
        np.testing.assert_allclose(g[0], [0.4, 0.4, -1.2, -1.2, 0, 0], rtol=1e-6)  # -F A


# ---------------------------------------------------------------- S9.2 select-then-exponentiate


def test_S9_2_infinite_log_ratios_in_untaken_branches_produce_no_nan() -> None:
    """+-inf log-ratios at valid positions whose region never exponentiates them (A = 0 included)."""
    lp = np.array([[np.inf, -np.inf, np.inf, np.inf, -np.inf]])
    adv = np.array([[1.0, -1.0, -1.0, 0.0, 0.0]])
    mask = np.ones_like(lp, bool)
    with np.errstate(all="raise"):
        j = cegppo.per_token_objective(lp, np.zeros_like(lp), adv, CFG)
        g = cegppo.policy_loss_grad(lp, np.zeros_like(lp), adv, mask, CFG, "token-sum")
        loss = cegppo.policy_loss(lp, np.zeros_like(lp), adv, mask, CFG, "token-sum")
    np.testing.assert_allclose(j[0], [1.2, -0.4, -10.0, 0.0, 0.0])
    np.testing.assert_allclose(g[0], [-1.2, 0.4, 0.0, 0.0, 0.0])  # -F A
    assert float(loss) == pytest.approx(-(1.2 - 0.4 - 10.0))


# ---------------------------------------------------------------- S9.3 masked garbage


@pytest.mark.parametrize("agg", AGG_MODES)
@given(data=st.data())
def test_S9_3_masked_positions_holding_nan_or_inf_change_nothing(agg: str, data: st.DataObject) -> None:
    b = data.draw(batches(per_sequence=False), label="batch")
    garbage = st.sampled_from([np.nan, np.inf, -np.inf, 1e308, -1e308])
    pick = data.draw(st.lists(garbage, min_size=3, max_size=3), label="garbage")
    dirty = [np.where(b.mask, x, g) for x, g in zip((b.log_prob, b.old_log_prob, b.advantages), pick, strict=True)]
    clean_loss = cegppo.policy_loss(*_args(b), agg)
    clean_grad = cegppo.policy_loss_grad(*_args(b), agg)
    with np.errstate(all="ignore"):  # what is computed at masked positions is never looked at
        dirty_loss = cegppo.policy_loss(*dirty, b.mask, b.cfg, agg)
        dirty_grad = cegppo.policy_loss_grad(*dirty, b.mask, b.cfg, agg)
        dirty_metrics = cegppo.policy_metrics(*dirty, b.mask, b.cfg)
    assert float(dirty_loss) == float(clean_loss)
    np.testing.assert_array_equal(dirty_grad, clean_grad)
    clean_metrics = cegppo.policy_metrics(*_args(b))
    for k in cegppo.METRIC_KEYS:
        assert float(dirty_metrics[k]) == float(clean_metrics[k]), k


def test_S9_3_aggregate_loss_ignores_masked_nan() -> None:
    loss = np.array([[1.0, np.nan], [np.inf, 2.0]])
    mask = np.array([[True, False], [False, True]])
    assert float(cegppo.aggregate_loss(loss, mask, "token-mean")) == 1.5


# ---------------------------------------------------------------- S9.5 dtypes


@pytest.mark.parametrize(
    ("lp_dtype", "old_dtype", "expected"),
    [
        (np.float16, np.float16, np.float32),
        (np.float32, np.float32, np.float32),
        (np.float64, np.float64, np.float64),
        (np.float32, np.float64, np.float64),
        (np.float16, np.float32, np.float32),
    ],
)
def test_S9_5_compute_dtype(lp_dtype: type, old_dtype: type, expected: type) -> None:
    lp = np.log(np.array([[0.5, 0.3, 0.9]])).astype(lp_dtype)
    old = np.log(np.array([[0.4, 0.6, 0.9]])).astype(old_dtype)
    adv = np.array([1, -1], dtype=np.int64)[:1]  # integer advantages take part as float32
    mask = np.ones((1, 3), bool)
    assert cegppo.policy_loss(lp, old, adv, mask, CFG).dtype == expected
    assert cegppo.policy_loss_grad(lp, old, adv, mask, CFG).dtype == expected
    assert cegppo.per_token_objective(lp, old, adv, CFG).dtype == expected
    assert cegppo.grad_weight(lp, old, adv, CFG).dtype == expected
    assert all(v.dtype == expected for v in cegppo.policy_metrics(lp, old, adv, mask, CFG).values())


@given(batches())
def test_S9_5_float32_agrees_with_float64(b: Batch) -> None:
    args32 = (b.log_prob.astype(np.float32), b.old_log_prob.astype(np.float32), b.advantages.astype(np.float32))
    for agg in AGG_MODES:
        l64 = float(cegppo.policy_loss(*_args(b), agg))
        l32 = float(cegppo.policy_loss(*args32, b.mask, b.cfg, agg))
        j = cegppo.per_token_objective(*_args(b)[:3], b.cfg)
        scale = float(np.sum(np.abs(np.where(b.mask, cegppo.aggregation_weights(b.mask, agg) * j, 0))))
        assert abs(l32 - l64) <= 1e-5 * scale + 1e-30


# ---------------------------------------------------------------- S9.6 errors


@pytest.mark.parametrize(
    ("field", "value", "exc"),
    [
        ("eps_low", 0.0, ValueError),
        ("eps_low", 1.0, ValueError),
        ("eps_low", -0.1, ValueError),
        ("eps_low", math.nan, ValueError),
        ("eps_low", "0.2", TypeError),
        ("eps_low", True, TypeError),
        ("eps_high", 0.0, ValueError),
        ("eps_high", -1.0, ValueError),
        ("eps_high", math.inf, ValueError),
        ("eps_high", None, TypeError),
        ("beta_low", -0.1, ValueError),
        ("beta_low", math.inf, ValueError),
        ("beta_low", [0.5], TypeError),
        ("beta_high", -1e-9, ValueError),
        ("beta_high", math.nan, ValueError),
        ("dual_clip", 1.0, ValueError),
        ("dual_clip", 0.5, ValueError),
        ("dual_clip", math.inf, ValueError),
        ("dual_clip", "10", TypeError),
    ],
)
def test_S9_6_invalid_config_field_raises_naming_the_field(field: str, value: object, exc: type) -> None:
    with pytest.raises(exc, match=field):
        cegppo.CEGPPOConfig(**{field: value})
    with pytest.raises(exc, match=field):
        CFG.replace(**{field: value})


def test_S9_6_config_is_frozen_and_normalised() -> None:
    cfg = cegppo.CEGPPOConfig(eps_low=1 / 5, eps_high=1, beta_low=0, beta_high=2, dual_clip=3)
    assert isinstance(cfg.eps_high, float) and isinstance(cfg.dual_clip, float)
    with pytest.raises(AttributeError):
        cfg.eps_low = 0.3  # type: ignore[misc]


Z = np.zeros((2, 3))
M = np.ones((2, 3), bool)


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"log_prob": np.zeros(3)}, ValueError, "log_prob"),
        ({"log_prob": np.zeros((2, 3, 1))}, ValueError, "log_prob"),
        ({"old_log_prob": np.zeros((2, 4))}, ValueError, "old_log_prob"),
        ({"advantages": np.zeros(3)}, ValueError, "advantages"),
        ({"advantages": np.zeros((3, 2))}, ValueError, "advantages"),
        ({"mask": np.ones((2, 4), bool)}, ValueError, "mask"),
        ({"mask": np.ones((2, 3))}, TypeError, "mask"),
        ({"log_prob": np.zeros((2, 3), np.int64)}, TypeError, "log_prob"),
        ({"old_log_prob": np.zeros((2, 3), np.int32)}, TypeError, "old_log_prob"),
        ({"advantages": np.zeros((2, 3), np.complex128)}, TypeError, "advantages"),
        ({"log_prob": [[0.0, 0.0, 0.0]] * 2}, TypeError, "log_prob"),
        ({"cfg": {"eps_low": 0.2}}, TypeError, "cfg"),
        ({"agg": "mean"}, ValueError, "agg"),
        ({"num_tokens": -1}, ValueError, "num_tokens"),
        ({"num_tokens": math.nan}, ValueError, "num_tokens"),
        ({"num_tokens": True}, TypeError, "num_tokens"),
        ({"num_tokens": np.float32("nan")}, ValueError, "num_tokens"),
        ({"num_tokens": np.array(-2.0)}, ValueError, "num_tokens"),
        ({"num_tokens": np.array([np.nan])}, ValueError, "num_tokens"),
        ({"num_tokens": 0}, ValueError, "num_tokens is 0 but this batch has 6 valid tokens"),
        ({"num_tokens": np.int64(0)}, ValueError, "num_tokens is 0"),
        ({"agg": "seq-mean-token-sum", "num_seqs": 0.0}, ValueError, "num_seqs is 0 but this batch has 2 valid"),
        ({"agg": "seq-mean-token-mean", "num_seqs": np.float32(-1)}, ValueError, "num_seqs"),
        ({"num_seqs": np.ones(2)}, ValueError, "num_seqs"),
        ({"num_seqs": "4"}, TypeError, "num_seqs"),
        ({"norm_length": 0}, ValueError, "norm_length"),
        ({"norm_length": "8"}, TypeError, "norm_length"),
    ],
)
@pytest.mark.parametrize("fn", [cegppo.policy_loss, cegppo.policy_loss_grad], ids=["loss", "grad"])
def test_S9_6_bad_arguments_raise_naming_the_argument(fn, kwargs: dict, exc: type, name: str) -> None:
    call = {"log_prob": Z, "old_log_prob": Z, "advantages": Z, "mask": M, "cfg": CFG, "agg": "token-mean", **kwargs}
    with pytest.raises(exc, match=name):
        fn(**call)


@pytest.mark.parametrize("fn", [cegppo.token_regions, cegppo.per_token_objective, cegppo.grad_weight])
def test_S9_6_per_token_functions_check_shapes(fn) -> None:
    with pytest.raises(ValueError, match="old_log_prob"):
        fn(Z, np.zeros((3, 2)), Z, CFG)
    with pytest.raises(TypeError, match="cfg"):
        fn(Z, Z, Z, None)


def test_S9_6_logit_helpers_check_arguments() -> None:
    z = np.zeros((2, 5))
    ids = np.array([0, 4])
    with pytest.raises(ValueError, match="ids"):
        cegppo.token_log_probs(z, np.array([0, 5]))
    with pytest.raises(ValueError, match="ids"):
        cegppo.token_log_probs(z, np.array([0, -1]))
    with pytest.raises(ValueError, match="ids"):
        cegppo.token_log_probs(z, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="ids"):
        cegppo.token_log_probs(z, np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="logits"):
        cegppo.entropy(np.zeros((2, 5), np.int64))
    with pytest.raises(ValueError, match="logits"):
        cegppo.entropy(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="weight"):
        cegppo.entropy_change_first_order(z, ids, np.ones(3))
    with pytest.raises(ValueError, match="grad_output"):
        cegppo.entropy_grad(z, np.ones(3))
    with pytest.raises(ValueError, match="grad_output"):
        cegppo.token_log_probs_grad(z, ids, np.ones((2, 1)))


def test_S9_6_validate_true_rejects_non_finite_valid_values_only() -> None:
    lp = np.array([[np.nan, -1.0], [-1.0, -1.0]])
    adv = np.array([[1.0, np.inf], [1.0, 1.0]])
    mask = np.array([[False, True], [True, True]])
    # NaN log_prob is masked: fine. inf advantage is at a valid position: rejected.
    with pytest.raises(ValueError, match="advantages"):
        cegppo.policy_loss(lp, np.zeros_like(lp), adv, mask, CFG, validate=True)
    with pytest.raises(ValueError, match="advantages"):
        cegppo.policy_loss_grad(lp, np.zeros_like(lp), adv, mask, CFG, validate=True)
    with pytest.raises(ValueError, match="log_prob"):
        cegppo.policy_loss(lp, np.zeros_like(lp), np.ones_like(adv), np.ones_like(mask), CFG, validate=True)
    ok = cegppo.policy_loss(lp, np.zeros_like(lp), np.ones_like(adv), mask, CFG, validate=True)
    assert np.isfinite(ok)
    # Without validate the same input is computed, not checked: the valid inf shows in the loss.
    assert not np.isfinite(cegppo.policy_loss(lp, np.zeros_like(lp), adv, mask, CFG))


# ---------------------------------------------------------------- S10 diagnostics


@given(batches())
def test_S10_metrics_against_direct_formulas(b: Batch) -> None:
    m = cegppo.policy_metrics(*_args(b))
    assert tuple(m) == cegppo.METRIC_KEYS
    n = int(b.mask.sum())
    r = cegppo.token_regions(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    logr = (b.log_prob - b.old_log_prob)[b.mask]
    if n == 0:
        assert all(float(v) == 0.0 for v in m.values())
        return
    for name in ("clip_low", "clip_high", "dual_clip", "inside"):
        assert float(m[f"{name}_frac"]) == pytest.approx(getattr(r, name)[b.mask].sum() / n, abs=1e-15)
    total = sum(float(m[f"{k}_frac"]) for k in ("clip_low", "clip_high", "dual_clip", "inside"))
    assert total == pytest.approx(1.0, abs=1e-14)
    assert float(m["clip_frac"]) == pytest.approx(float(m["clip_low_frac"] + m["clip_high_frac"]), abs=1e-15)
    assert float(m["ratio_mean"]) == pytest.approx(np.exp(logr).mean(), rel=1e-13)
    assert float(m["ratio_max"]) == pytest.approx(np.exp(logr).max(), rel=1e-15)
    assert float(m["approx_kl_k1"]) == pytest.approx(-logr.mean(), rel=1e-12, abs=1e-15)
    assert float(m["approx_kl_k3"]) == pytest.approx((np.exp(logr) - 1 - logr).mean(), rel=1e-12, abs=1e-15)
    f = cegppo.grad_weight(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    a = np.broadcast_to(b.advantages[:, None], b.mask.shape) if b.advantages.ndim == 1 else b.advantages
    moving = b.mask & (a != 0)  # tokens that get a gradient; A = 0 tokens count as 0 (spec S10)
    assert float(m["grad_weight_abs_mean"]) == pytest.approx(np.abs(f[moving]).sum() / n, rel=1e-13, abs=1e-300)
    assert float(m["approx_kl_k3"]) >= 0.0


def test_S10_grad_weight_abs_mean_ignores_A_zero_tokens() -> None:
    """A flat group (A = 0) far from the old policy has F_t = delta_t ~ 1e130 but gets no gradient:
    it counts as 0, so the metric is the mean over valid tokens of |F_t| [A_t != 0] (spec S10)."""
    lp = np.array([[300.0, 0.0, 0.1], [-5.0, 0.0, 0.0]])
    old = np.zeros((2, 3))
    adv = np.array([[0.0, 0.0, 1.0], [-2.0, 0.0, 0.0]])
    mask = np.array([[True, True, True], [True, False, True]])
    m = cegppo.policy_metrics(lp, old, adv, mask, CFG)
    # token (0, 2): inside, F = e^0.1; token (1, 0): clip_low, F = 0.5 * 0.8; A = 0 tokens: 0; n = 5
    assert float(m["grad_weight_abs_mean"]) == pytest.approx((np.exp(0.1) + 0.4) / 5, rel=1e-14)
    flat = cegppo.policy_metrics(lp, old, np.zeros(2), mask, CFG)
    assert float(flat["grad_weight_abs_mean"]) == 0.0  # no token gets a gradient


def test_S10_metrics_of_an_empty_batch_are_zero() -> None:
    z = np.full((2, 3), np.nan)
    m = cegppo.policy_metrics(z, z, z, np.zeros((2, 3), bool), CFG)
    assert tuple(m) == cegppo.METRIC_KEYS
    assert all(float(v) == 0.0 for v in m.values())
