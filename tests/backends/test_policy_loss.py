"""cegppo.torch and cegppo.jax beyond the conformance suite (spec S2, S4, S8.4, S9, S10): the per-token
functions, metrics, constants of the loss, empty and all-masked batches, dtype rules.

The value and gradient of `policy_loss` against the reference in every region, masked garbage,
extreme log-ratios, low-precision inputs and micro-batch additivity are clauses of the conformance
suite (`pytest tests/conformance --backend=torch|jax`), which owns them for every backend.
"""

from __future__ import annotations

from typing import Any

import cegppo
import numpy as np
import pytest
from array_backends import Backend, make_inputs
from backend_cases import COMPUTE_DTYPE_CASES, CONFIGS, isclose_or_same_nonfinite
from cegppo.conformance import MARGIN
from hypothesis import given
from hypothesis import strategies as st

FLOAT_DTYPES = ["float64", "float32"]
VALUE_TOL = {"float64": (1e-10, 1e-10), "float32": (1e-5, 1e-5)}
"""(rtol, atol) of values against the reference run in the same compute dtype on the same rounded inputs."""
CFG = cegppo.presets.ce_gppo_official()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@given(data=st.data(), cfg=st.sampled_from(CONFIGS))
def test_S2_S3_S4_per_token_functions_match_reference(backend: Backend, dtype: str, data: Any,
                                                      cfg: cegppo.CEGPPOConfig) -> None:
    """token_regions, per_token_objective (value and gradient) and grad_weight equal the reference."""
    cg = backend.cg
    case = data.draw(backend.policy_batches(logr_scale=3.0), label="case")
    (lp, olp, adv, _), (rlp, rolp, radv, _) = make_inputs(backend, case, dtype, cfg, margin=MARGIN["float32"])
    regions = cg.token_regions(lp, olp, adv, cfg)
    assert isinstance(regions, cegppo.TokenRegions)
    for got, want in zip(regions, cegppo.token_regions(rlp, rolp, radv, cfg), strict=True):
        assert backend.dtype_name(got) == "bool" and np.array_equal(backend.to_np(got), want)
    rtol, atol = VALUE_TOL[dtype]
    np.testing.assert_allclose(backend.to_np(cg.per_token_objective(lp, olp, adv, cfg)),
                               cegppo.per_token_objective(rlp, rolp, radv, cfg), rtol=rtol, atol=atol)
    grad = backend.grad(lambda x: cg.per_token_objective(x, olp, adv, cfg).sum())(lp)
    f = cegppo.grad_weight(rlp, rolp, radv, cfg)
    a = np.broadcast_to(radv[:, None], rlp.shape) if radv.ndim == 1 else radv
    np.testing.assert_allclose(backend.to_np(grad), np.where(a == 0, 0, f * a), rtol=rtol, atol=atol)
    np.testing.assert_allclose(backend.to_np(cg.grad_weight(lp, olp, adv, cfg)), f, rtol=rtol, atol=atol)


BOUNDARY_CFG = cegppo.CEGPPOConfig(eps_low=0.15, eps_high=0.3, beta_low=0.5, beta_high=1.0, dual_clip=3.0)
"""A config with all three boundaries of spec S2 (beta_low != 1, so clip_low and inside differ in value).
Its eps values round in float32 to the side where a comparison made in float64 instead of the compute
dtype would move the boundary token out of inside (the boundary test below asserts it)."""


def boundary_batch(dtype: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log_prob, old_log_prob, advantages) with log-ratios exactly on the boundaries of `BOUNDARY_CFG`.

    delta = 1 - eps_low (A < 0), 1 + eps_high (A > 0) and c (A < 0), in `dtype`, with old_log_prob 0 so
    that the log-ratio is the log-prob itself. Each boundary belongs to inside (spec S2, compared in the
    compute dtype, S9.1). The conformance kit keeps its draws away from the boundaries, where a port
    that compares ratios rather than log-ratios may round either way; cegppo's backends compare
    log-ratios as the reference does, so they must agree with it exactly there.
    """
    cfg = BOUNDARY_CFG
    assert cfg.log_dual_clip is not None
    lp = np.array([[cfg.log_lower, cfg.log_upper, cfg.log_dual_clip]], dtype=dtype)
    return lp, np.zeros_like(lp), np.array([[-1.0, 1.0, -1.0]], dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_S2_each_boundary_belongs_to_inside_as_in_the_reference(backend: Backend, dtype: type) -> None:
    """token_regions and grad_weight on log-ratios exactly on the boundaries of `BOUNDARY_CFG` equal the
    reference's: each boundary is inside (spec S2, compared in the compute dtype, S9.1)."""
    lp, olp, adv = boundary_batch(dtype)
    if np.dtype(dtype) == np.float32:  # so that a bound kept in float64 (not the compute dtype) shows
        cfg = BOUNDARY_CFG
        assert float(lp[0, 0]) < cfg.log_lower and float(lp[0, 1]) > cfg.log_upper and float(lp[0, 2]) > cfg.log_dual_clip
    ref = cegppo.token_regions(lp, olp, adv, BOUNDARY_CFG)
    assert ref.inside.all()
    args = [backend.asarray(x) for x in (lp, olp, adv)]
    got = backend.cg.token_regions(*args, BOUNDARY_CFG)
    for region in ("inside", "clip_low", "clip_high", "dual_clip"):
        np.testing.assert_array_equal(backend.to_np(getattr(got, region)), getattr(ref, region), err_msg=region)
    f = backend.cg.grad_weight(*args, BOUNDARY_CFG)
    np.testing.assert_allclose(backend.to_np(f), cegppo.grad_weight(lp, olp, adv, BOUNDARY_CFG), rtol=1e-6)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@given(data=st.data(), cfg=st.sampled_from(CONFIGS))
def test_S10_metrics_match_reference(backend: Backend, dtype: str, data: Any, cfg: cegppo.CEGPPOConfig) -> None:
    """policy_metrics: the reference's values as 0-d arrays in the compute dtype, keys in METRIC_KEYS order,
    detached from a log_prob that autograd tracks."""
    cg = backend.cg
    case = data.draw(backend.policy_batches(logr_scale=4.0), label="case")
    (lp, olp, adv, mask), (rlp, rolp, radv, rmask) = make_inputs(backend, case, dtype, cfg, margin=MARGIN["float32"])
    got = cg.policy_metrics(backend.requiring_grad(lp), olp, adv, mask, cfg)
    want = cegppo.policy_metrics(rlp, rolp, radv, rmask, cfg)
    assert tuple(got) == cegppo.METRIC_KEYS == cg.METRIC_KEYS
    rtol, atol = VALUE_TOL[dtype]
    for k, v in got.items():
        assert v.shape == () and backend.dtype_name(v) == dtype and not backend.carries_graph(v), k
        np.testing.assert_allclose(backend.to_np(v), want[k], rtol=rtol, atol=atol, err_msg=k)


def test_S10_grad_weight_abs_mean_ignores_A_zero_tokens(backend: Backend) -> None:
    """A = 0 tokens (F = delta, here ~1e130) get no gradient and count as 0, as in the reference (spec S10)."""
    lp = np.array([[300.0, 0.0, 0.1], [-5.0, 0.0, 0.0]])
    old, adv = np.zeros((2, 3)), np.array([[0.0, 0.0, 1.0], [-2.0, 0.0, 0.0]])
    mask = np.array([[True, True, True], [True, False, True]])
    got = float(backend.cg.policy_metrics(*(backend.asarray(x) for x in (lp, old, adv, mask)), CFG)["grad_weight_abs_mean"])
    assert got == pytest.approx((np.exp(0.1) + 0.4) / 5, rel=1e-14)
    assert got == pytest.approx(float(cegppo.policy_metrics(lp, old, adv, mask, CFG)["grad_weight_abs_mean"]), rel=1e-14)


def test_S10_metrics_report_an_overflowing_ratio_as_inf(backend: Backend) -> None:
    """An overflowing valid ratio is reported as inf (its true value), masked ones are ignored; the metrics
    pass no gradient to log_prob."""
    lp = np.array([[0.0, 0.0, np.nan]], np.float32)
    olp = np.array([[-1e4, 0.0, 0.0]], np.float32)
    adv = np.array([[-1.0, 1.0, 1.0]], np.float32)
    mask = np.array([[True, True, False]])
    m = backend.cg.policy_metrics(*(backend.asarray(x) for x in (lp, olp, adv, mask)), CFG)
    want = cegppo.policy_metrics(lp, olp, adv, mask, CFG)
    for k in cegppo.METRIC_KEYS:
        assert isclose_or_same_nonfinite(backend.to_np(m[k]), want[k], 1e-6, 1e-6), k
    assert float(m["ratio_max"]) == np.inf
    rest = [backend.asarray(x) for x in (olp, adv, mask)]
    g = backend.grad(lambda x: sum(v for v in backend.cg.policy_metrics(x, *rest, CFG).values() if np.isfinite(float(v))))(
        backend.asarray(np.zeros((1, 3), np.float32)))
    assert np.array_equal(backend.to_np(g), np.zeros((1, 3)))


def test_S4_old_log_prob_and_advantages_are_constants(backend: Backend) -> None:
    """old_log_prob and advantages get no gradient from any differentiable function (spec S4), even when
    they are inputs of the differentiated function.

    policy_loss(lp, lp, ...) differentiated in lp is the gradient with old_log_prob held constant:
    -A / n per token at ratio 1 (the reference's), not 0. The same for advantages, for
    per_token_objective and the fused head, which all still pass a gradient to what they learn."""
    cg, arr = backend.cg, backend.asarray
    mask2 = arr(np.ones((1, 2), bool))
    g = backend.grad(lambda lp: cg.policy_loss(lp, lp, arr(np.array([1.0])), mask2, CFG))(arr(np.array([[-1.0, -2.0]])))
    np.testing.assert_allclose(backend.to_np(g), [[-0.5, -0.5]], rtol=1e-15)
    lp, olp, adv = arr(np.array([[-1.0, -0.7, -0.2]])), arr(np.array([[-1.2, -0.5, -0.2]])), arr(np.array([[1.0, -2.0, 0.5]]))
    mask = arr(np.ones((1, 3), bool))
    h, w, ids = arr(np.full((1, 3, 2), 0.1)), arr(np.arange(8.0).reshape(4, 2) / 8), arr(np.array([[0, 3, 1]]))
    learned = {
        "policy_loss": (lambda x, o, a: cg.policy_loss(x, o, a, mask, CFG), lp),
        "per_token_objective": (lambda x, o, a: cg.per_token_objective(x, o, a, CFG).sum(), lp),
        "fused_linear_policy_loss": (lambda x, o, a: cg.fused_linear_policy_loss(x, w, ids, o, a, mask, CFG,
                                                                                 entropy_coef=0.01)[0], h),
    }
    for name, (fn, x) in learned.items():
        g_x, g_olp, g_adv = (backend.to_np(v) for v in backend.grad(fn, argnums=(0, 1, 2))(x, olp, adv))
        assert np.any(g_x != 0), name
        assert np.all(g_olp == 0) and np.all(g_adv == 0), name


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
def test_S9_1_infinite_log_ratio_of_a_clipped_token_is_finite(backend: Backend, dtype: str) -> None:
    """old_log_prob = -inf (logr = +inf, A > 0: clip_high) and log_prob = -inf (logr = -inf, A < 0: clip_low):
    delta / sg(delta) is exactly 1 with gradient 1, so loss and gradient are the reference's finite values."""
    lp, olp = np.array([[-1.0, -np.inf, -0.3]]), np.array([[-np.inf, -1.0, -0.3]])
    adv, mask = np.array([[1.0, -2.0, 0.5]]), np.ones((1, 3), bool)
    rest = [backend.asarray(x, dtype) for x in (olp, adv)]
    loss, grad = backend.value_and_grad(lambda x: backend.cg.policy_loss(x, *rest, backend.asarray(mask), CFG))(
        backend.asarray(lp, dtype))
    want, want_grad = cegppo.policy_loss(lp, olp, adv, mask, CFG), cegppo.policy_loss_grad(lp, olp, adv, mask, CFG)
    assert np.isfinite(want) and np.all(np.isfinite(want_grad))
    tol = 1e-14 if dtype == "float64" else 1e-6
    assert float(loss) == pytest.approx(float(want), rel=tol)
    # a bfloat16 log_prob gets a bfloat16 gradient: one rounding, 2^-8 relative
    np.testing.assert_allclose(backend.to_np(grad), want_grad, rtol=4e-3 if dtype == "bfloat16" else tol)


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
@pytest.mark.parametrize("shape", [(3, 5), (1, 1), (0, 4), (2, 0)])
def test_S8_4_S9_4_all_masked_is_zero(backend: Backend, agg: str, dtype: str, shape: tuple[int, int]) -> None:
    """No valid token (incl. empty shapes): loss exactly 0 and gradient exactly 0 in the input dtype, even
    with garbage everywhere, with the batch's own normalizers or global ones of 0."""
    cg = backend.cg
    lp, olp, adv = (backend.asarray(np.full(shape, v), dtype) for v in (np.nan, np.inf, -np.inf))
    mask = backend.asarray(np.zeros(shape, bool))
    cfg = cegppo.presets.ce_gppo_official()
    for norms in ({}, {"num_tokens": backend.asarray(0), "num_seqs": 0}):
        loss, grad = backend.value_and_grad(lambda x, norms=norms: cg.policy_loss(x, olp, adv, mask, cfg, agg, **norms))(lp)
        assert float(loss) == 0.0 and not np.isnan(backend.to_np(loss))
        assert backend.dtype_name(grad) == dtype and np.array_equal(backend.to_np(grad), np.zeros(shape))
    assert all(float(v) == 0.0 for v in cg.policy_metrics(lp, olp, adv, mask, cfg).values())


@pytest.mark.parametrize(
    ("dtypes", "want"),
    [
        (("float64", "float64", "float64"), "float64"),
        (("float32", "float32", "float32"), "float32"),
        (("bfloat16", "bfloat16", "bfloat16"), "float32"),
        (("float16", "bfloat16", "float16"), "float32"),
        (("float32", "float64", "float32"), "float64"),
        (("float64", "float64", "int64"), "float64"),
        (("bfloat16", "bfloat16", "int32"), "float32"),
        (("float32", "float32", "bool"), "float32"),
    ],
    ids=str,
)
def test_S9_5_dtype_rules(backend: Backend, dtypes: tuple[str, str, str], want: str) -> None:
    """Compute dtype = promotion of the floating inputs, at least float32, as the reference's; the gradient
    is in the dtype of log_prob."""
    cg, cfg = backend.cg, cegppo.CEGPPOConfig(dual_clip=3.0)
    lp, olp, adv = (backend.asarray(np.full((2, 3), v), d) for v, d in zip((0.0, -0.5, 1.0), dtypes, strict=True))
    mask = backend.asarray(np.ones((2, 3), bool))
    # NumPy has no bfloat16: float16 stands in for it on the reference side (both are "low precision").
    ref = cegppo.policy_loss(*(backend.to_np(t).astype(d.replace("bfloat16", "float16"))
                               for t, d in zip((lp, olp, adv), dtypes, strict=True)), np.ones((2, 3), bool), cfg)
    assert np.dtype(ref.dtype) == np.dtype(want)
    assert backend.dtype_name(cg.policy_loss(lp, olp, adv, mask, cfg)) == want
    assert backend.dtype_name(cg.per_token_objective(lp, olp, adv, cfg)) == want
    assert backend.dtype_name(cg.grad_weight(lp, olp, adv, cfg)) == want
    assert all(backend.dtype_name(v) == want for v in cg.policy_metrics(lp, olp, adv, mask, cfg).values())
    assert backend.dtype_name(backend.grad(lambda x: cg.policy_loss(x, olp, adv, mask, cfg))(lp)) == dtypes[0]


@pytest.mark.parametrize("fn", ["per_token_objective", "grad_weight"])
@pytest.mark.parametrize(("lp", "olp", "adv", "expected"), COMPUTE_DTYPE_CASES)
def test_S9_5_every_input_takes_part_in_the_compute_dtype(backend: Backend, fn: str, lp: Any, olp: Any, adv: Any,
                                                          expected: Any) -> None:
    args = [backend.asarray(np.full((2, 3), v, dtype=d)) for v, d in ((-0.5, lp), (-0.4, olp), (1, adv))]
    assert backend.dtype_name(getattr(backend.cg, fn)(*args, cegppo.CEGPPOConfig())) == np.dtype(expected).name


def test_S9_5_float64_keeps_float64_constants(backend: Backend) -> None:
    """float64 stays float64 end to end: constants (1 - eps) beta, c and the bounds are not rounded to float32."""
    cfg = cegppo.CEGPPOConfig(eps_low=0.1 + 1e-12, eps_high=0.3, beta_low=1 / 3, beta_high=0.7, dual_clip=1.1)
    logr = np.array([[np.log1p(-cfg.eps_low) - 1e-14, 0.5, 0.1, -0.7, np.log(1.1) + 1e-14, 0.0]])
    lp = np.zeros_like(logr)
    adv = np.array([[-1.0, 1.0, 1.0, -2.0, -3.0, 0.0]])
    mask = np.ones_like(lp, dtype=bool)
    olp_, adv_, mask_ = (backend.asarray(x) for x in (lp - logr, adv, mask))
    loss, grad = backend.value_and_grad(lambda x: backend.cg.policy_loss(x, olp_, adv_, mask_, cfg, "token-sum"))(
        backend.asarray(lp))
    assert float(loss) == pytest.approx(float(cegppo.policy_loss(lp, lp - logr, adv, mask, cfg, "token-sum")), rel=1e-15)
    np.testing.assert_allclose(backend.to_np(grad), cegppo.policy_loss_grad(lp, lp - logr, adv, mask, cfg, "token-sum"),
                               rtol=1e-15, atol=0)
    got = backend.cg.token_regions(backend.asarray(lp), olp_, adv_, cfg)
    for region, exp in zip(got, cegppo.token_regions(lp, lp - logr, adv, cfg), strict=True):
        assert np.array_equal(backend.to_np(region), exp)
