"""cegppo.jax numerics (spec S9) beyond the conformance suite and tests/backends: A = 0 at an
overflowing ratio, dtypes without x64, errors at trace time, validate, subnormal advantages.

Extreme and infinite log-ratios (S9.1) and masked garbage (S9.3) are clauses of the conformance
suite (`pytest tests/conformance --backend=jax`), which owns them for every backend.
"""

from __future__ import annotations

import cegppo
import cegppo.jax as cg
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from backend_cases import BAD_VALUE_CALLS
from jax_cases import to_np


def _value_and_grad(lp, *rest, **kwargs):
    return jax.value_and_grad(lambda x: cg.policy_loss(x, *rest, **kwargs))(lp)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_S9_2_zero_advantage_with_overflowing_ratio_is_exactly_zero(dtype):
    """A = 0 with delta = inf: J = 0 and gradient 0 (exp(0) is taken there, never inf * 0)."""
    cfg = cegppo.CEGPPOConfig()
    lp = jnp.asarray([[0.0, 0.0]], dtype)
    olp = jnp.asarray([[-1e4, -200.0]], dtype)
    adv = jnp.zeros((1, 2), dtype)
    mask = jnp.ones((1, 2), bool)
    loss, grad = _value_and_grad(lp, olp, adv, mask, cfg, "token-sum")
    assert float(loss) == 0.0 and np.array_equal(to_np(grad), np.zeros((1, 2)))
    assert np.array_equal(to_np(cg.per_token_objective(lp, olp, adv, cfg)), np.zeros((1, 2)))


def test_S9_5_without_x64_float64_inputs_compute_in_float32():
    """With jax_enable_x64 off (JAX's default) JAX has no float64: NumPy float64 inputs give a float32 result."""
    cfg = cegppo.CEGPPOConfig()
    lp = np.zeros((2, 3))
    olp = np.full((2, 3), -0.5)
    adv = np.ones((2, 3))
    mask = np.ones((2, 3), bool)
    with jax.enable_x64(False):
        loss = cg.policy_loss(lp, olp, adv, mask, cfg)
        assert loss.dtype == jnp.float32
        np.testing.assert_allclose(float(loss), float(cegppo.policy_loss(lp, olp, adv, mask, cfg)), rtol=1e-6)
        assert cg.aggregation_weights(mask).dtype == jnp.float32
        assert cg.grpo_advantages(np.array([1, 0, 1, 1]), 2).dtype == jnp.float32


# --------------------------------------------------------------------------------------------
# Errors (spec S9.6): the reference's exceptions, raised at trace time


def _good():
    return (
        np.zeros((2, 3), np.float32),
        np.zeros((2, 3), np.float32),
        np.zeros((2, 3), np.float32),
        np.ones((2, 3), bool),
    )


BATCH = range(4)
"""Positions of the batch arrays (log_prob, old_log_prob, advantages, mask): JAX arrays, traced under eval_shape.
A normalizer given as a NumPy array stays one: its value is checked on the host, which a tracer cannot be."""


def _as_jax(args):
    return [jnp.asarray(a) if i in BATCH and isinstance(a, np.ndarray) else a for i, a in enumerate(args)]


@pytest.mark.parametrize("name", sorted(BAD_VALUE_CALLS))
def test_S9_6_value_errors_as_reference_at_trace_time(name):
    """Same ValueError (type and message) as the reference, eagerly and while tracing (jax.eval_shape: nothing runs)."""
    args, kwargs = BAD_VALUE_CALLS[name](*_good(), cegppo.CEGPPOConfig())
    with pytest.raises(ValueError) as ref:
        cegppo.policy_loss(*args, **kwargs)
    with pytest.raises(ValueError) as got:
        cg.policy_loss(*_as_jax(args), **kwargs)
    assert str(got.value) == str(ref.value)
    arrays = [i for i, a in enumerate(args) if i in BATCH and isinstance(a, np.ndarray)]

    def traced(*xs):
        full = list(args)
        for i, x in zip(arrays, xs, strict=True):
            full[i] = x
        return cg.policy_loss(*full, **kwargs)

    with pytest.raises(ValueError) as got_traced:
        jax.eval_shape(traced, *(args[i] for i in arrays))
    assert str(got_traced.value) == str(ref.value)


def test_S9_6_non_array_inputs_are_type_errors():
    """A list is not an array: TypeError naming the argument (as the reference's)."""
    lp, olp, adv, m = _good()
    with pytest.raises(TypeError, match="log_prob"):
        cg.policy_loss([[0.0]], olp, adv, m, cegppo.CEGPPOConfig())
    with pytest.raises(TypeError, match="mask"):
        cg.policy_loss(lp, olp, adv, [[True] * 3] * 2, cegppo.CEGPPOConfig())


def test_S9_6_validate_checks_valid_positions_eagerly_and_refuses_tracers():
    """validate=True: the reference's ValueError for non-finite valid values; under jit a clear ValueError."""
    cfg = cegppo.CEGPPOConfig()
    lp, olp, adv, m = _good()
    bad = lp.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError) as ref:
        cegppo.policy_loss(bad, olp, adv, m, cfg, validate=True)
    with pytest.raises(ValueError) as got:
        cg.policy_loss(jnp.asarray(bad), olp, adv, m, cfg, validate=True)
    assert str(got.value) == str(ref.value)
    masked = m.copy()
    masked[0, 1] = False
    assert float(cg.policy_loss(jnp.asarray(bad), olp, adv, masked, cfg, validate=True)) == 0.0
    with pytest.raises(ValueError, match="traced"):
        jax.jit(lambda x: cg.policy_loss(x, olp, adv, m, cfg, validate=True))(lp)
    with pytest.raises(ValueError, match="traced"):
        jax.grad(lambda x: cg.policy_loss(x, olp, adv, m, cfg, validate=True))(jnp.asarray(lp))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_S9_subnormal_advantages_read_as_zero_or_their_sign(dtype):
    """A subnormal advantage: XLA on CPU flushes it to 0 (A = 0 region), NumPy keeps its sign.

    Either reading is accepted (docs/backends.md, "Subnormal numbers"), but nothing else: the
    regions are those of A = 0 or of the reference, and value and gradient are 0 to within the
    subnormal itself (no NaN, no inf, no spurious clip weight).
    """
    tiny = np.finfo(np.dtype(dtype)).smallest_subnormal
    adv = np.array([tiny, -tiny, tiny, -tiny], dtype)
    logr = np.array([1.0, -1.0, 0.0, 3.0], dtype)  # clip_high / clip_low / inside / dual clip if A != 0
    lp = np.full(4, -1.0, dtype)
    args = [a[None, :] for a in (lp, lp - logr, adv)]
    cfg = cegppo.presets.ce_gppo_official()
    got = [to_np(r) for r in cg.token_regions(*(jnp.asarray(a) for a in args), cfg)]
    want = list(cegppo.token_regions(*args, cfg))
    as_zero = list(cegppo.token_regions(args[0], args[1], np.zeros_like(args[2]), cfg))
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True)) or all(
        np.array_equal(g, z) for g, z in zip(got, as_zero, strict=True)
    ), (got, want, as_zero)
    mask = np.ones((1, 4), bool)
    loss, grad = jax.value_and_grad(lambda x: cg.policy_loss(x, args[1], args[2], mask, cfg))(
        jnp.asarray(args[0])
    )
    assert abs(float(loss)) <= 20 * tiny and np.all(np.abs(to_np(grad)) <= 20 * tiny)
