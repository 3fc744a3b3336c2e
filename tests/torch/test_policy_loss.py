"""cegppo.torch beyond the conformance suite (spec S2, S8, S9, S10): the per-token functions, the
aggregation helpers, metrics, empty shapes, dtype rules, normalizers as tensors, errors and validate.

The value and gradient of `policy_loss` against the reference in every region, masked garbage,
extreme log-ratios, low-precision inputs and micro-batch additivity are clauses of the conformance
suite (`pytest tests/conformance --backend=torch`), which owns them for every backend.
"""

from __future__ import annotations

import cegppo
import cegppo.torch as cg
import numpy as np
import pytest
import torch
from backend_cases import BAD_TYPE_CALLS, BAD_VALUE_CALLS, bad_type_argument
from hypothesis import given
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from torch_cases import (
    CONFIGS,
    NP_COMPUTE,
    TOL,
    away_from_kinks,
    isclose_or_same_nonfinite,
    policy_batches,
    to_np,
)

FLOAT_DTYPES = [torch.float64, torch.float32]


def _torch_inputs(case: dict, dtype: torch.dtype, cfg: cegppo.CEGPPOConfig, *, kinks: bool = False):
    """Tensors in `dtype` and the matching NumPy inputs (same rounded values, reference compute dtype)."""
    logr = case["logr"] if kinks else away_from_kinks(case["logr"], cfg)
    lp = torch.tensor(case["log_prob"]).to(dtype)
    olp = torch.tensor(case["log_prob"] - logr).to(dtype)
    adv = torch.tensor(case["advantages"]).to(dtype)
    mask = torch.tensor(case["mask"])
    npdt = NP_COMPUTE[dtype]
    ref = (to_np(lp).astype(npdt), to_np(olp).astype(npdt), to_np(adv).astype(npdt), case["mask"])
    return (lp, olp, adv, mask), ref


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
def test_S8_3_normalizers_as_python_numbers_or_0d_tensors(agg):
    """num_tokens / num_seqs as a Python int, a 0-d int64 tensor (what global_counts returns) or a
    0-d float tensor give the loss and gradient of the same Python float (the conformance suite,
    which owns value, gradient and micro-batch additivity, passes Python floats only)."""
    rng = np.random.default_rng(5)
    lp = rng.uniform(-3, 0, (3, 4))
    olp = lp - rng.uniform(-0.5, 0.5, (3, 4))
    adv = rng.normal(size=(3, 4))
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]], bool)
    cfg = cegppo.presets.ce_gppo_official()
    n_tok, n_seq = cg.global_counts(torch.tensor(mask))
    assert n_tok.dtype == torch.int64 and n_tok.shape == () and int(n_tok) == 8 and int(n_seq) == 3

    def run(num_tokens, num_seqs):
        x = torch.tensor(lp, requires_grad=True)
        loss = cg.policy_loss(x, torch.tensor(olp), torch.tensor(adv), torch.tensor(mask), cfg, agg, num_tokens, num_seqs)
        loss.backward()
        return loss.detach(), x.grad

    want_loss, want_grad = run(11.0, 5.0)
    want = cegppo.policy_loss(lp, olp, adv, mask, cfg, agg, num_tokens=11.0, num_seqs=5.0)
    assert want_loss.item() == pytest.approx(float(want), rel=1e-12)
    for num_tokens, num_seqs in [(11, 5), (torch.tensor(11), torch.tensor(5)), (torch.tensor(11.0), torch.tensor(5.0)),
                                 (n_tok + 3, n_seq + 2)]:
        loss, grad = run(num_tokens, num_seqs)
        assert loss.dtype == torch.float64 and loss.shape == ()
        torch.testing.assert_close(loss, want_loss, rtol=1e-15, atol=0)
        torch.testing.assert_close(grad, want_grad, rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
@pytest.mark.parametrize("shape", [(3, 5), (1, 1), (0, 4), (2, 0)])
def test_S8_4_S9_4_all_masked_is_zero(agg, dtype, shape):
    """No valid token (incl. empty shapes): loss exactly 0 and gradient exactly 0, even with garbage everywhere."""
    lp = torch.full(shape, float("nan"), dtype=dtype, requires_grad=True)
    olp = torch.full(shape, float("inf"), dtype=dtype)
    adv = torch.full(shape, -float("inf"), dtype=dtype)
    mask = torch.zeros(shape, dtype=torch.bool)
    cfg = cegppo.presets.ce_gppo_official()
    loss = cg.policy_loss(lp, olp, adv, mask, cfg, agg, num_tokens=torch.tensor(0), num_seqs=0)
    loss.backward()
    assert loss.item() == 0.0 and not loss.isnan()
    assert torch.equal(lp.grad, torch.zeros(shape, dtype=dtype))
    loss2 = cg.policy_loss(lp.detach(), olp, adv, mask, cfg, agg)
    assert loss2.item() == 0.0
    metrics = cg.policy_metrics(lp.detach(), olp, adv, mask, cfg)
    assert all(v.item() == 0.0 for v in metrics.values())


@pytest.mark.parametrize(
    ("dtypes", "want"),
    [
        ((torch.float64, torch.float64, torch.float64), torch.float64),
        ((torch.float32, torch.float32, torch.float32), torch.float32),
        ((torch.bfloat16, torch.bfloat16, torch.bfloat16), torch.float32),
        ((torch.float16, torch.bfloat16, torch.float16), torch.float32),
        ((torch.float32, torch.float64, torch.float32), torch.float64),
        ((torch.float64, torch.float64, torch.int64), torch.float64),
        ((torch.bfloat16, torch.bfloat16, torch.int32), torch.float32),
        ((torch.float32, torch.float32, torch.bool), torch.float32),
    ],
    ids=str,
)
def test_S9_5_dtype_rules(dtypes, want):
    """Compute dtype = promotion of the floating inputs, at least float32, as the reference's."""
    cfg = cegppo.CEGPPOConfig(dual_clip=3.0)
    lp = torch.zeros(2, 3, dtype=dtypes[0])
    olp = torch.full((2, 3), -0.5, dtype=dtypes[1])
    adv = torch.ones(2, 3, dtype=dtypes[2])
    mask = torch.ones(2, 3, dtype=torch.bool)
    # NumPy has no bfloat16: float16 stands in for it on the reference side (both are "low precision").
    np_of = {torch.bfloat16: np.float16, torch.float16: np.float16, torch.float32: np.float32}
    np_of.update(
        {torch.float64: np.float64, torch.int64: np.int64, torch.int32: np.int32, torch.bool: np.bool_}
    )
    ref = cegppo.policy_loss(*(to_np(t).astype(np_of[t.dtype]) for t in (lp, olp, adv)), to_np(mask), cfg)
    assert cg.policy_loss(lp, olp, adv, mask, cfg).dtype == want
    assert cg.per_token_objective(lp, olp, adv, cfg).dtype == want
    assert cg.grad_weight(lp, olp, adv, cfg).dtype == want
    assert all(v.dtype == want for v in cg.policy_metrics(lp, olp, adv, mask, cfg).values())
    assert np.dtype(ref.dtype) == np.dtype(str(want).removeprefix("torch."))


def test_S9_5_float64_keeps_float64_constants():
    """float64 stays float64 end to end: constants (1 - eps) beta, c, bounds are not rounded to float32."""
    cfg = cegppo.CEGPPOConfig(eps_low=0.1 + 1e-12, eps_high=0.3, beta_low=1 / 3, beta_high=0.7, dual_clip=1.1)
    logr = np.array([[np.log1p(-cfg.eps_low) - 1e-14, 0.5, 0.1, -0.7, np.log(1.1) + 1e-14, 0.0]])
    lp = np.zeros_like(logr)
    adv = np.array([[-1.0, 1.0, 1.0, -2.0, -3.0, 0.0]])
    mask = np.ones_like(lp, dtype=bool)
    x = torch.tensor(lp, requires_grad=True)
    loss = cg.policy_loss(x, torch.tensor(lp - logr), torch.tensor(adv), torch.tensor(mask), cfg, "token-sum")
    loss.backward()
    assert loss.item() == pytest.approx(
        float(cegppo.policy_loss(lp, lp - logr, adv, mask, cfg, "token-sum")), rel=1e-15
    )
    np.testing.assert_allclose(
        to_np(x.grad), cegppo.policy_loss_grad(lp, lp - logr, adv, mask, cfg, "token-sum"), rtol=1e-15, atol=0
    )
    regions = cg.token_regions(x, torch.tensor(lp - logr), torch.tensor(adv), cfg)
    want = cegppo.token_regions(lp, lp - logr, adv, cfg)
    for got, exp in zip(regions, want, strict=True):
        assert np.array_equal(to_np(got), exp)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@given(case=policy_batches(logr_scale=3.0), cfg=st.sampled_from(CONFIGS))
def test_S2_S3_S4_per_token_functions_match_reference(dtype, case, cfg):
    """token_regions, per_token_objective (value and gradient) and grad_weight equal the reference."""
    (lp, olp, adv, _), (rlp, rolp, radv, _) = _torch_inputs(case, dtype, cfg)
    regions = cg.token_regions(lp, olp, adv, cfg)
    assert isinstance(regions, cegppo.TokenRegions)
    for got, want in zip(regions, cegppo.token_regions(rlp, rolp, radv, cfg), strict=True):
        assert got.dtype == torch.bool and np.array_equal(to_np(got), want)
    x = lp.clone().requires_grad_()
    j = cg.per_token_objective(x, olp, adv, cfg)
    rtol, atol = TOL[dtype]["value"]
    np.testing.assert_allclose(
        to_np(j), cegppo.per_token_objective(rlp, rolp, radv, cfg), rtol=rtol, atol=atol
    )
    j.sum().backward()
    f = cegppo.grad_weight(rlp, rolp, radv, cfg)
    a = np.broadcast_to(radv[:, None], rlp.shape) if radv.ndim == 1 else radv
    np.testing.assert_allclose(to_np(x.grad), np.where(a == 0, 0, f * a), rtol=rtol, atol=atol)
    np.testing.assert_allclose(to_np(cg.grad_weight(lp, olp, adv, cfg)), f, rtol=rtol, atol=atol)


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
@given(case=policy_batches(), norm_length=st.sampled_from([None, 3.0, 17]))
def test_S8_aggregation_weights_and_aggregate_loss(agg, case, norm_length):
    """aggregation_weights and aggregate_loss equal the reference (float64)."""
    mask = case["mask"]
    per_token = np.where(mask, case["logr"], np.nan)
    c = cg.aggregation_weights(torch.tensor(mask), agg, norm_length=norm_length, dtype=torch.float64)
    np.testing.assert_allclose(
        to_np(c), cegppo.aggregation_weights(mask, agg, norm_length=norm_length), rtol=1e-12, atol=0
    )
    got = cg.aggregate_loss(torch.tensor(per_token), torch.tensor(mask), agg, norm_length=norm_length)
    want = cegppo.aggregate_loss(per_token, mask, agg, norm_length=norm_length)
    np.testing.assert_allclose(to_np(got), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@given(case=policy_batches(logr_scale=4.0), cfg=st.sampled_from(CONFIGS))
def test_S10_metrics_match_reference(dtype, case, cfg):
    """policy_metrics: the reference's values as 0-d tensors in the compute dtype, keys in METRIC_KEYS order."""
    (lp, olp, adv, mask), (rlp, rolp, radv, rmask) = _torch_inputs(case, dtype, cfg)
    got = cg.policy_metrics(lp.requires_grad_(), olp, adv, mask, cfg)
    want = cegppo.policy_metrics(rlp, rolp, radv, rmask, cfg)
    assert tuple(got) == cegppo.METRIC_KEYS == cg.METRIC_KEYS
    rtol, atol = TOL[dtype]["value"]
    for k, v in got.items():
        assert isinstance(v, torch.Tensor) and v.shape == () and v.dtype == dtype and not v.requires_grad, k
        np.testing.assert_allclose(to_np(v), want[k], rtol=rtol, atol=atol, err_msg=k)


def test_S10_metrics_report_overflowing_ratio_as_inf():
    """An overflowing valid ratio is reported as inf (its true value), masked ones are ignored."""
    cfg = cegppo.presets.ce_gppo_official()
    lp = torch.tensor([[0.0, 0.0, float("nan")]])
    olp = torch.tensor([[-1e4, 0.0, 0.0]])
    adv = torch.tensor([[-1.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, False]])
    m = cg.policy_metrics(lp, olp, adv, mask, cfg)
    want = cegppo.policy_metrics(to_np(lp), to_np(olp), to_np(adv), to_np(mask), cfg)
    for k in cegppo.METRIC_KEYS:
        assert isclose_or_same_nonfinite(to_np(m[k]), want[k], 1e-6, 1e-6), k
    assert m["ratio_max"].item() == float("inf")


class _RecordOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) or (
            isinstance(out, (tuple, list)) and any(isinstance(o, torch.Tensor) for o in out)
        ):
            self.ops.append(func)  # only ops producing tensors (not metadata queries like promote_types)
        return out


def _good():
    return torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)


def _cast(x: torch.Tensor, dtype: str) -> torch.Tensor:
    return x.to(getattr(torch, dtype))


def _numpy_args(args, kwargs):
    conv = [a.numpy() if isinstance(a, torch.Tensor) else a for a in args]
    return conv, kwargs


@pytest.mark.parametrize("name", sorted(BAD_VALUE_CALLS))
def test_S9_6_value_errors_as_reference_before_any_computation(name):
    """Same ValueError (type and message) as the reference, raised before any tensor op is dispatched."""
    cfg = cegppo.CEGPPOConfig()
    args, kwargs = BAD_VALUE_CALLS[name](*_good(), cfg)
    with pytest.raises(ValueError) as ref:
        cegppo.policy_loss(*_numpy_args(args, kwargs)[0], **kwargs)
    rec = _RecordOps()
    with rec, pytest.raises(ValueError) as got:
        cg.policy_loss(*args, **kwargs)
    assert str(got.value) == str(ref.value)
    assert rec.ops == [], rec.ops


@pytest.mark.parametrize("name", sorted(BAD_TYPE_CALLS))
def test_S9_6_type_errors_name_the_argument(name):
    """Same exception type as the reference; the message names the argument; no op dispatched first."""
    cfg = cegppo.CEGPPOConfig()
    args, kwargs = BAD_TYPE_CALLS[name](*_good(), cfg, _cast)
    with pytest.raises(TypeError):
        cegppo.policy_loss(*_numpy_args(args, kwargs)[0], **kwargs)
    rec = _RecordOps()
    with rec, pytest.raises(TypeError) as got:
        cg.policy_loss(*args, **kwargs)
    assert bad_type_argument(name) in str(got.value)
    assert rec.ops == [], rec.ops


def test_S9_6_non_tensor_inputs_are_type_errors():
    lp, olp, _, m = _good()
    with pytest.raises(TypeError, match="advantages"):
        cg.policy_loss(lp, olp, [[0.0] * 3] * 2, m, cegppo.CEGPPOConfig())


def test_S9_6_validate_checks_values_only_on_request():
    """validate=True rejects non-finite values at valid positions; by default nothing reads the data."""
    lp, olp, adv, m = _good()
    lp[0, 1] = float("nan")
    adv += 1.0  # (a NaN log-ratio with A = 0 has J = 0, as in the reference)
    cfg = cegppo.CEGPPOConfig()
    with pytest.raises(ValueError, match="log_prob holds non-finite"):
        cg.policy_loss(lp, olp, adv, m, cfg, validate=True)
    assert torch.isnan(cg.policy_loss(lp, olp, adv, m, cfg))
    m[0, 1] = False
    assert cg.policy_loss(lp, olp, adv, m, cfg, validate=True).item() == -1.0  # mean of -delta A = -1


def test_integer_mask_and_per_sequence_advantages():
    """An integer 0/1 mask is a bool mask; (B,) advantages broadcast over tokens."""
    cfg = cegppo.presets.ce_gppo_1p5b()
    rng = np.random.default_rng(3)
    lp = rng.normal(size=(4, 5))
    olp = lp + rng.normal(scale=0.4, size=(4, 5))
    adv = rng.normal(size=4)
    mask = rng.integers(0, 2, size=(4, 5))
    got = cg.policy_loss(torch.tensor(lp), torch.tensor(olp), torch.tensor(adv), torch.tensor(mask), cfg)
    np.testing.assert_allclose(
        to_np(got), cegppo.policy_loss(lp, olp, adv, mask, cfg), rtol=1e-12, atol=1e-12
    )


CFG = cegppo.presets.ce_gppo_official()


def test_S4_old_log_prob_and_advantages_are_constants():
    """requires_grad old_log_prob / advantages get no gradient from any differentiable function (spec S4)."""
    lp = torch.tensor([[-1.0, -0.7, -0.2]], dtype=torch.float64, requires_grad=True)
    olp = torch.tensor([[-1.2, -0.5, -0.2]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 3, dtype=torch.bool)
    for out in (cg.policy_loss(lp, olp, adv, mask, CFG), cg.per_token_objective(lp, olp, adv, CFG).sum()):
        g_lp, g_olp, g_adv = torch.autograd.grad(out, [lp, olp, adv], allow_unused=True)
        assert g_lp is not None and torch.all(g_lp != 0)
        assert (g_olp is None or torch.all(g_olp == 0)) and (g_adv is None or torch.all(g_adv == 0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_S9_1_infinite_log_ratio_of_a_clipped_token_is_finite(dtype):
    """old_log_prob = -inf (logr = +inf, A > 0: clip_high) and log_prob = -inf (logr = -inf, A < 0: clip_low):
    delta / sg(delta) is exactly 1 with gradient 1, so loss and gradient are the reference's finite values."""
    lp = np.array([[-1.0, -np.inf, -0.3]])
    olp = np.array([[-np.inf, -1.0, -0.3]])
    adv = np.array([[1.0, -2.0, 0.5]])
    mask = np.ones((1, 3), bool)
    x = torch.tensor(lp, dtype=dtype, requires_grad=True)
    loss = cg.policy_loss(x, torch.tensor(olp, dtype=dtype), torch.tensor(adv, dtype=dtype), torch.tensor(mask), CFG)
    loss.backward()
    want = cegppo.policy_loss(lp, olp, adv, mask, CFG)
    want_grad = cegppo.policy_loss_grad(lp, olp, adv, mask, CFG)
    assert np.isfinite(want) and np.all(np.isfinite(want_grad))
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert loss.item() == pytest.approx(float(want), rel=tol)
    np.testing.assert_allclose(x.grad.double().numpy(), want_grad, rtol=tol if dtype != torch.bfloat16 else 4e-3)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
@pytest.mark.parametrize("bad", ["nan", "negative", "zero", "python_zero"])
def test_S8_2_bad_normalizer_is_never_replaced_by_one(agg, bad):
    """A NaN, negative or 0 (with valid tokens) normalizer: NaN loss without validate (no host sync),
    ValueError naming it with validate=True; never the silent 1 that turned the mean into a sum."""
    name = "num_tokens" if agg == "token-mean" else "num_seqs"
    value = {"nan": torch.tensor(float("nan")), "negative": torch.tensor(-4), "zero": torch.tensor(0),
             "python_zero": 0}[bad]
    lp = torch.tensor([[-1.0, -0.5], [-0.2, -0.3]], requires_grad=True)
    olp, adv, mask = torch.full((2, 2), -0.6), torch.tensor([1.0, -1.0]), torch.ones(2, 2, dtype=torch.bool)
    loss = cg.policy_loss(lp, olp, adv, mask, CFG, agg, **{name: value})
    assert torch.isnan(loss)
    with pytest.raises(ValueError, match=name):
        cg.policy_loss(lp, olp, adv, mask, CFG, agg, validate=True, **{name: value})
    # the same normalizer on a micro-batch with no valid token: 0 is right there (bad ones still are not)
    empty = torch.zeros(2, 2, dtype=torch.bool)
    out = cg.policy_loss(lp, olp, adv, empty, CFG, agg, **{name: value})
    if bad in ("zero", "python_zero"):
        assert out.item() == 0.0
        assert cg.policy_loss(lp, olp, adv, empty, CFG, agg, validate=True, **{name: value}).item() == 0.0
    else:
        assert torch.isnan(out)


def test_S10_grad_weight_abs_mean_ignores_A_zero_tokens():
    """A = 0 tokens (F = delta, here ~1e130) get no gradient and count as 0, as in the reference (spec S10)."""
    lp = np.array([[300.0, 0.0, 0.1], [-5.0, 0.0, 0.0]])
    old, adv = np.zeros((2, 3)), np.array([[0.0, 0.0, 1.0], [-2.0, 0.0, 0.0]])
    mask = np.array([[True, True, True], [True, False, True]])
    got = cg.policy_metrics(*(torch.tensor(x) for x in (lp, old, adv, mask)), CFG)["grad_weight_abs_mean"]
    assert got.item() == pytest.approx((np.exp(0.1) + 0.4) / 5, rel=1e-14)
    assert got.item() == pytest.approx(float(cegppo.policy_metrics(lp, old, adv, mask, CFG)["grad_weight_abs_mean"]),
                                       rel=1e-14)


@pytest.mark.parametrize("cfg", [cegppo.presets.ce_gppo_7b(), cegppo.presets.dual_clip_ppo()], ids=["ce_gppo_7b", "dual_clip"])
def test_per_sample_gradients_under_torch_func_vmap(cfg: cegppo.CEGPPOConfig) -> None:
    """torch.func.vmap(torch.func.grad(...)) over stacked batches (per-sample gradients, as in
    influence or gradient-noise studies) equals autograd batch by batch: the clipped tokens' custom
    autograd function has a vmap rule."""
    g = torch.Generator().manual_seed(0)
    n, b, t = 4, 3, 5
    olp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 2
    lps = olp + (torch.rand(n, b, t, generator=g, dtype=torch.float64) * 3 - 1.5)  # every region
    adv = torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) > 0.2

    def loss(lp: torch.Tensor) -> torch.Tensor:
        return cg.policy_loss(lp, olp, adv, mask, cfg)

    got_values = torch.func.vmap(loss)(lps)
    got_grads = torch.func.vmap(torch.func.grad(loss))(lps)
    for i in range(n):
        lp = lps[i].clone().requires_grad_(True)
        value = loss(lp)
        (grad,) = torch.autograd.grad(value, lp)
        assert float(got_values[i]) == float(value.detach())
        torch.testing.assert_close(got_grads[i], grad, rtol=0, atol=0)
    regions = cg.token_regions(lps[0], olp, adv, cfg)
    assert bool((regions.clip_low | regions.clip_high).any())  # the custom function is on the path
