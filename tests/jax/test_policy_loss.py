"""cegppo.jax beyond the conformance suite (spec S2, S4, S8, S10): the per-token functions, the
aggregation helpers, metrics, normalizers as arrays, public names, constants under jax.grad.

The value and gradient of `policy_loss` against the reference in every region, low-precision
inputs and micro-batch additivity are clauses of the conformance suite
(`pytest tests/conformance --backend=jax`), which owns them for every backend.
"""

from __future__ import annotations

import cegppo
import cegppo.jax as cg
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax_cases import (
    CONFIGS,
    TOL,
    isclose_or_same_nonfinite,
    make_inputs,
    policy_batches,
    to_np,
)

FLOAT_DTYPES = ["float64", "float32"]


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
def test_S8_3_normalizers_as_python_numbers_or_0d_arrays(agg):
    """num_tokens / num_seqs as a Python int, a 0-d int32 array (what global_counts returns, also
    traced under jit) or a 0-d float array give the loss and gradient of the same Python float (the
    conformance suite, which owns value, gradient and micro-batch additivity, passes Python floats)."""
    rng = np.random.default_rng(5)
    lp = rng.uniform(-3, 0, (3, 4))
    olp = lp - rng.uniform(-0.5, 0.5, (3, 4))
    adv = rng.normal(size=(3, 4))
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]], bool)
    cfg = cegppo.presets.ce_gppo_official()
    n_tok, n_seq = cg.global_counts(jnp.asarray(mask))
    assert n_tok.dtype == jnp.int32 and n_tok.shape == () and int(n_tok) == 8 and int(n_seq) == 3

    def run(num_tokens, num_seqs):
        return jax.value_and_grad(lambda x: cg.policy_loss(x, olp, adv, mask, cfg, agg, num_tokens, num_seqs))(
            jnp.asarray(lp))

    want_loss, want_grad = run(11.0, 5.0)
    assert float(want_loss) == pytest.approx(float(cegppo.policy_loss(lp, olp, adv, mask, cfg, agg, num_tokens=11.0,
                                                                      num_seqs=5.0)), rel=1e-12)
    jitted = jax.jit(lambda x, nt, ns: jax.value_and_grad(lambda y: cg.policy_loss(y, olp, adv, mask, cfg, agg, nt, ns))(x))
    for num_tokens, num_seqs in [(11, 5), (jnp.asarray(11, jnp.int32), jnp.asarray(5, jnp.int32)),
                                 (jnp.asarray(11.0, jnp.float32), jnp.asarray(5.0, jnp.float32)),
                                 (n_tok + 3, n_seq + 2)]:
        for loss, grad in (run(num_tokens, num_seqs), jitted(jnp.asarray(lp), num_tokens, num_seqs)):
            assert loss.dtype == jnp.float64 and loss.shape == ()
            np.testing.assert_allclose(to_np(loss), to_np(want_loss), rtol=1e-15, atol=0)
            np.testing.assert_allclose(to_np(grad), to_np(want_grad), rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@given(case=policy_batches(logr_scale=3.0), cfg=st.sampled_from(CONFIGS))
def test_S2_S3_S4_per_token_functions_match_reference(dtype, case, cfg):
    """token_regions, per_token_objective (value and gradient) and grad_weight equal the reference."""
    (lp, olp, adv, _), (rlp, rolp, radv, _) = make_inputs(case, dtype, cfg)
    regions = cg.token_regions(lp, olp, adv, cfg)
    assert isinstance(regions, cegppo.TokenRegions)
    for got, want in zip(regions, cegppo.token_regions(rlp, rolp, radv, cfg), strict=True):
        assert got.dtype == jnp.bool_ and np.array_equal(to_np(got), want)
    rtol, atol = TOL[dtype]["value"]
    np.testing.assert_allclose(
        to_np(cg.per_token_objective(lp, olp, adv, cfg)), cegppo.per_token_objective(rlp, rolp, radv, cfg), rtol=rtol, atol=atol
    )
    grad = jax.grad(lambda x: jnp.sum(cg.per_token_objective(x, olp, adv, cfg)))(lp)
    f = cegppo.grad_weight(rlp, rolp, radv, cfg)
    a = np.broadcast_to(radv[:, None], rlp.shape) if radv.ndim == 1 else radv
    np.testing.assert_allclose(to_np(grad), np.where(a == 0, 0, f * a), rtol=rtol, atol=atol)
    np.testing.assert_allclose(to_np(cg.grad_weight(lp, olp, adv, cfg)), f, rtol=rtol, atol=atol)


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
@given(case=policy_batches(), norm_length=st.sampled_from([None, 3.0, 17]))
def test_S8_aggregation_weights_and_aggregate_loss(agg, case, norm_length):
    """aggregation_weights and aggregate_loss equal the reference (float64), NaN at masked positions ignored."""
    mask = case["mask"]
    per_token = np.where(mask, case["logr"], np.nan)
    c = cg.aggregation_weights(jnp.asarray(mask), agg, norm_length=norm_length)
    assert c.dtype == jnp.float64
    np.testing.assert_allclose(to_np(c), cegppo.aggregation_weights(mask, agg, norm_length=norm_length), rtol=1e-12, atol=0)
    got = cg.aggregate_loss(jnp.asarray(per_token), jnp.asarray(mask), agg, norm_length=norm_length)
    want = cegppo.aggregate_loss(per_token, mask, agg, norm_length=norm_length)
    np.testing.assert_allclose(to_np(got), want, rtol=1e-10, atol=1e-10)
    g = jax.grad(lambda x: cg.aggregate_loss(x, mask, agg, norm_length=norm_length))(jnp.asarray(per_token))
    np.testing.assert_allclose(to_np(g), np.where(mask, cegppo.aggregation_weights(mask, agg, norm_length=norm_length), 0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@given(case=policy_batches(logr_scale=4.0), cfg=st.sampled_from(CONFIGS))
def test_S10_metrics_match_reference(dtype, case, cfg):
    """policy_metrics: the reference's values as 0-d arrays in the compute dtype, keys in METRIC_KEYS order."""
    (lp, olp, adv, mask), (rlp, rolp, radv, rmask) = make_inputs(case, dtype, cfg)
    got = cg.policy_metrics(lp, olp, adv, mask, cfg)
    want = cegppo.policy_metrics(rlp, rolp, radv, rmask, cfg)
    assert tuple(got) == cegppo.METRIC_KEYS == cg.METRIC_KEYS
    rtol, atol = TOL[dtype]["value"]
    for k, v in got.items():
        assert isinstance(v, jax.Array) and v.shape == () and v.dtype == jnp.dtype(dtype), k
        np.testing.assert_allclose(to_np(v), want[k], rtol=rtol, atol=atol, err_msg=k)


def test_S10_metrics_have_no_gradient_and_report_overflow_as_inf():
    """An overflowing valid ratio is reported as inf (its true value); masked NaN ignored; metrics carry no gradient."""
    cfg = cegppo.presets.ce_gppo_official()
    lp = np.array([[0.0, 0.0, np.nan]], np.float32)
    olp = np.array([[-1e4, 0.0, 0.0]], np.float32)
    adv = np.array([[-1.0, 1.0, 1.0]], np.float32)
    mask = np.array([[True, True, False]])
    m = cg.policy_metrics(jnp.asarray(lp), olp, adv, mask, cfg)
    want = cegppo.policy_metrics(lp, olp, adv, mask, cfg)
    for k in cegppo.METRIC_KEYS:
        assert isclose_or_same_nonfinite(m[k], want[k], 1e-6, 1e-6), k
    assert float(m["ratio_max"]) == np.inf
    g = jax.grad(lambda x: sum(v for v in cg.policy_metrics(x, olp, adv, mask, cfg).values() if jnp.isfinite(v)))(jnp.zeros((1, 3)))
    assert np.array_equal(to_np(g), np.zeros((1, 3)))


def test_public_names_match_the_reference_and_torch():
    """cegppo.jax exposes the reference's public names (minus the analytic *_grad helpers) plus global_counts."""
    reference_only = {"policy_loss_grad", "token_log_probs_grad", "entropy_grad", "fused_linear_policy_loss_grad", "__version__"}
    # The family beside CE-GPPO (docs/spec.md S14) is specified in the reference only until the backends compute it.
    family = {
        "FAMILY", "FamilyMember", "CISPOConfig", "CISPOCapConfig", "SAPOConfig", "GSPOConfig",
        "cispo_per_token_objective", "cispo_grad_weight", "sapo_per_token_objective", "sapo_grad_weight",
        "gspo_per_token_objective", "gspo_grad_weight", "gspo_sequence_log_ratio", "family_per_token_objective",
        "family_grad_weight", "family_policy_loss", "family_policy_loss_grad",
    }
    assert family <= set(cegppo.__all__)
    assert set(cegppo.__all__) - reference_only - family <= set(cg.__all__)
    assert "global_counts" in cg.__all__
    assert cg.CEGPPOConfig is cegppo.CEGPPOConfig and cg.TokenRegions is cegppo.TokenRegions
    assert cg.AGG_MODES == cegppo.AGG_MODES and cg.METRIC_KEYS == cegppo.METRIC_KEYS and cg.GRPO_EPS == cegppo.GRPO_EPS
    assert cg.presets is cegppo.presets
    for name in cg.__all__:
        assert hasattr(cg, name), name


CFG = cegppo.presets.ce_gppo_official()


def test_S4_old_log_prob_and_advantages_are_constants():
    """Issue 11: old log-probs computed inside the differentiated function must not receive gradient.

    jax.grad(lambda l: policy_loss(l, l, ...)) is the gradient with old_log_prob held constant:
    -A / n per token at ratio 1 (the reference's), not 0. The same for advantages, for
    per_token_objective, the metrics and the fused head (spec S4)."""
    x = jnp.array([[-1.0, -2.0]])
    mask = jnp.ones((1, 2), bool)
    g = jax.grad(lambda lp: cg.policy_loss(lp, lp, jnp.array([1.0]), mask, CFG))(x)
    np.testing.assert_allclose(np.asarray(g), [[-0.5, -0.5]], rtol=1e-15)
    lp = jnp.array([[-1.0, -0.7, -0.2]])
    olp, adv = jnp.array([[-1.2, -0.5, -0.2]]), jnp.array([[1.0, -2.0, 0.5]])
    mask3 = jnp.ones((1, 3), bool)
    for fn in (lambda o, a: cg.policy_loss(lp, o, a, mask3, CFG),
               lambda o, a: jnp.sum(cg.per_token_objective(lp, o, a, CFG)),
               lambda o, a: sum(cg.policy_metrics(lp, o, a, mask3, CFG).values())):
        g_olp, g_adv = jax.grad(fn, argnums=(0, 1))(olp, adv)
        assert np.all(np.asarray(g_olp) == 0) and np.all(np.asarray(g_adv) == 0)
    h, w = jnp.ones((1, 3, 2)) * 0.1, jnp.arange(8.0).reshape(4, 2) / 8
    ids = jnp.array([[0, 3, 1]])

    def fused(o, a):
        return cg.fused_linear_policy_loss(h, w, ids, o, a, mask3, CFG, entropy_coef=0.01)[0]

    g_olp, g_adv = jax.grad(fused, argnums=(0, 1))(olp, adv)
    assert np.all(np.asarray(g_olp) == 0) and np.all(np.asarray(g_adv) == 0)


def test_S9_1_infinite_log_ratio_of_a_clipped_token_is_finite():
    """old_log_prob = -inf (clip_high) and log_prob = -inf (clip_low): the reference's finite loss and gradient."""
    lp, olp = np.array([[-1.0, -np.inf, -0.3]]), np.array([[-np.inf, -1.0, -0.3]])
    adv, mask = np.array([[1.0, -2.0, 0.5]]), np.ones((1, 3), bool)
    val, g = jax.value_and_grad(lambda x: cg.policy_loss(x, olp, adv, mask, CFG))(jnp.asarray(lp))
    assert float(val) == pytest.approx(float(cegppo.policy_loss(lp, olp, adv, mask, CFG)), rel=1e-14)
    np.testing.assert_allclose(np.asarray(g), cegppo.policy_loss_grad(lp, olp, adv, mask, CFG), rtol=1e-14)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("bad", ["nan", "negative", "zero", "python_zero"])
def test_S8_2_bad_normalizer_is_never_replaced_by_one(agg, bad):
    """NaN, negative or 0-with-valid-tokens: NaN loss (also under jit), ValueError with validate=True (eager)."""
    name = "num_tokens" if agg == "token-mean" else "num_seqs"
    value = {"nan": jnp.array(jnp.nan), "negative": jnp.array(-4), "zero": jnp.array(0), "python_zero": 0}[bad]
    lp, olp = jnp.array([[-1.0, -0.5], [-0.2, -0.3]]), jnp.full((2, 2), -0.6)
    adv, mask, empty = jnp.array([1.0, -1.0]), jnp.ones((2, 2), bool), jnp.zeros((2, 2), bool)
    assert np.isnan(float(cg.policy_loss(lp, olp, adv, mask, CFG, agg, **{name: value})))
    jitted = jax.jit(lambda v: cg.policy_loss(lp, olp, adv, mask, CFG, agg, **{name: v}))
    if bad != "python_zero":
        assert np.isnan(float(jitted(value)))
    with pytest.raises(ValueError, match=name):
        cg.policy_loss(lp, olp, adv, mask, CFG, agg, validate=True, **{name: value})
    out = cg.policy_loss(lp, olp, adv, empty, CFG, agg, **{name: value})
    if bad in ("zero", "python_zero"):
        assert float(out) == 0.0
        assert float(cg.policy_loss(lp, olp, adv, empty, CFG, agg, validate=True, **{name: value})) == 0.0
    else:
        assert np.isnan(float(out))
    with pytest.raises(ValueError, match=name):  # a host (NumPy) value is checked always, like the reference
        cg.policy_loss(lp, olp, adv, mask, CFG, agg, **{name: np.float32("nan")})


def test_S10_grad_weight_abs_mean_ignores_A_zero_tokens():
    """A = 0 tokens (F = delta, here ~1e130) get no gradient and count as 0, as in the reference (spec S10)."""
    lp = np.array([[300.0, 0.0, 0.1], [-5.0, 0.0, 0.0]])
    old, adv = np.zeros((2, 3)), np.array([[0.0, 0.0, 1.0], [-2.0, 0.0, 0.0]])
    mask = np.array([[True, True, True], [True, False, True]])
    got = float(cg.policy_metrics(lp, old, adv, mask, CFG)["grad_weight_abs_mean"])
    assert got == pytest.approx((np.exp(0.1) + 0.4) / 5, rel=1e-14)
    assert got == pytest.approx(float(cegppo.policy_metrics(lp, old, adv, mask, CFG)["grad_weight_abs_mean"]), rel=1e-14)
