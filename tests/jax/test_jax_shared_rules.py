"""cegppo.jax with the rules written once in spec/: host token ids range-checked always in the fused
head as in token_log_probs, global normalizers on the host or the device, validate under jit, counts
under a named axis, dtypes with x64 on and off (spec S8, S9.5, S9.6, S11)."""

from __future__ import annotations

from typing import Any

import cegppo
import cegppo.jax as cj
import jax
import jax.numpy as jnp
import numpy as np
import pytest

MASK = np.array([[True, False], [True, True]])


def _fused_args(ids: object) -> list[object]:
    rng = np.random.default_rng(0)
    return [jnp.asarray(rng.normal(size=(2, 2, 3))), jnp.asarray(rng.normal(size=(5, 3))), ids,
            jnp.full((2, 2), -1.5), jnp.asarray([1.0, -1.0]), MASK]


def test_fused_head_range_checks_host_token_ids_always() -> None:
    """NumPy ids are host memory: range-checked without validate, as `token_log_probs` does; garbage
    at masked positions (-100) is allowed. Device ids are checked only with validate=True."""
    cfg = cegppo.CEGPPOConfig()
    ok = np.array([[1, -100], [0, 2]])
    cj.fused_linear_policy_loss(*_fused_args(ok), cfg)
    bad = np.array([[5, -100], [0, 2]])  # V = 5, (0, 0) is valid
    with pytest.raises(ValueError, match="token_ids"):
        cj.fused_linear_policy_loss(*_fused_args(bad), cfg)
    loss, _ = cj.fused_linear_policy_loss(*_fused_args(jnp.asarray(bad)), cfg)  # device ids, no validate
    assert not np.isfinite(float(loss))
    with pytest.raises(ValueError, match="token_ids"):
        cj.fused_linear_policy_loss(*_fused_args(jnp.asarray(bad)), cfg, validate=True)


# ---------------------------------------------------------------- aggregation: normalizers, dtypes, counts (S8)
# The global normalizers, their checks, the default dtype, the validate=True rules and the counts: the
# jax mutation target (`nox -s mutation -- jax`) needs them reached by a test.

MASK3 = np.array([[True, True, True], [True, True, True], [False, False, False]])
LOSS3 = np.arange(9.0).reshape(3, 3)


@pytest.mark.parametrize(("agg", "norm"), [("token-mean", {"num_tokens": 10}), ("seq-mean-token-sum", {"num_seqs": 4}),
                                           ("seq-mean-token-mean", {"num_seqs": 4.0}),
                                           ("seq-mean-token-sum-norm", {"num_seqs": 3, "norm_length": 5.0})])
@pytest.mark.parametrize("as_array", [False, True], ids=["host", "jax"])
def test_S8_global_normalizers_reach_weights_and_loss(agg: str, norm: dict[str, Any], as_array: bool) -> None:
    given = {k: (jnp.asarray(v) if as_array and k != "norm_length" else v) for k, v in norm.items()}
    np.testing.assert_allclose(np.asarray(cj.aggregation_weights(MASK3, agg, **given)),
                               cegppo.aggregation_weights(MASK3, agg, **norm), rtol=1e-12)
    assert float(cj.aggregate_loss(jnp.asarray(LOSS3), MASK3, agg, **given)) == pytest.approx(
        float(cegppo.aggregate_loss(LOSS3, MASK3, agg, **norm)), rel=1e-12)


def _two_ones() -> jax.Array:  # built when the test runs: collection computes nothing on a device
    return jnp.ones(2)


@pytest.mark.parametrize("fn", ["aggregation_weights", "aggregate_loss"])
@pytest.mark.parametrize(("agg", "name", "value", "exc"), [("token-mean", "num_tokens", -1, ValueError),
                                                           ("seq-mean-token-sum", "num_seqs", True, TypeError),
                                                           ("token-mean", "num_tokens", _two_ones, ValueError),
                                                           ("seq-mean-token-sum", "num_seqs", _two_ones, ValueError),
                                                           ("seq-mean-token-sum-norm", "norm_length", -1.0, ValueError)])
def test_S8_2_bad_normalizers_are_refused_by_name(fn: str, agg: str, name: str, value: Any,
                                                  exc: type[Exception]) -> None:
    args = (jnp.asarray(LOSS3), MASK3) if fn == "aggregate_loss" else (MASK3,)
    with pytest.raises(exc, match=rf"^{name} "):
        getattr(cj, fn)(*args, agg, **{name: value() if callable(value) else value})


def test_S9_5_aggregation_weights_dtype() -> None:
    assert cj.aggregation_weights(MASK3).dtype == jnp.float64  # x64 on (tests/jax/conftest.py)
    assert cj.aggregation_weights(MASK3, dtype=jnp.float32).dtype == jnp.float32
    with jax.enable_x64(False):
        assert cj.aggregation_weights(MASK3).dtype == jnp.float32


@pytest.mark.parametrize(("agg", "name", "message"), [
    ("token-mean", "num_tokens", "num_tokens is 0 but this batch has 6 valid tokens"),
    ("seq-mean-token-sum", "num_seqs", "num_seqs is 0 but this batch has 2 valid sequences"),
])
def test_S8_2_a_zero_device_normalizer_is_nan_unless_validated(agg: str, name: str, message: str) -> None:
    """A normalizer on the device is not read back unless validate=True (then the count it is checked
    against is that of the mode's normalizer: tokens or sequences)."""
    zero = {name: jnp.asarray(0.0)}
    assert np.isnan(np.asarray(cj.aggregation_weights(MASK3, agg, **zero))).all()
    for fn, args in (("aggregation_weights", (MASK3,)), ("aggregate_loss", (jnp.asarray(LOSS3), MASK3))):
        with pytest.raises(ValueError, match=rf"^{message}"):
            getattr(cj, fn)(*args, agg, validate=True, **zero)
        getattr(cj, fn)(*args, agg, validate=True, **{name: jnp.asarray([7.0])})  # a (1,) normalizer is a scalar


def test_S9_6_validate_under_jit_names_the_traced_normalizer() -> None:
    with pytest.raises(ValueError, match=r"^validate=True reads array values, but num_tokens is a traced value"):
        jax.jit(lambda n: cj.aggregation_weights(MASK3, num_tokens=n, validate=True))(jnp.asarray(6.0))


def test_S9_6_validate_under_jit_names_a_traced_mask() -> None:
    """The normalizer is a host number, but the count it is checked against comes from the mask."""
    with pytest.raises(ValueError, match=r"^validate=True reads array values, but mask is a traced value"):
        jax.jit(lambda m: cj.aggregation_weights(m, num_tokens=6, validate=True))(MASK3)


@pytest.mark.parametrize("traced", ["per_token_loss", "mask"])
def test_S9_6_aggregate_loss_validate_under_jit_names_what_is_traced(traced: str) -> None:
    """validate=True reads the loss at the mask's valid positions: either one traced is named."""
    loss = jnp.asarray(LOSS3)
    if traced == "per_token_loss":
        call = jax.jit(lambda x: cj.aggregate_loss(x, MASK3, validate=True))
        arg: Any = loss
    else:
        call = jax.jit(lambda m: cj.aggregate_loss(loss, m, validate=True))
        arg = MASK3
    with pytest.raises(ValueError, match=rf"^validate=True reads array values, but {traced} is a traced value"):
        call(arg)


def test_S8_3_local_and_global_counts() -> None:
    """int32 counts (what policy_loss takes as normalizers); under a named axis they are summed over it."""
    n_tok, n_seq = cj.local_counts(MASK3)
    assert (int(n_tok), int(n_seq)) == (6, 2) and n_tok.dtype == n_seq.dtype == jnp.int32
    shards = jnp.asarray(np.stack([MASK3, np.eye(3, dtype=bool)]))  # 6 + 3 tokens, 2 + 3 sequences
    tok, seq = jax.vmap(lambda m: cj.global_counts(m, "shards"), axis_name="shards")(shards)
    assert tok.tolist() == [9, 9] and seq.tolist() == [5, 5]
    assert [int(x) for x in cj.global_counts(MASK3)] == [6, 2]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["log_prob", "old_log_prob", "advantages"])
def test_S9_6_a_complex_per_token_input_is_refused_by_name(which: int) -> None:
    args = [jnp.full((2, 3), -0.5), jnp.full((2, 3), -0.4), jnp.ones((2, 3))]
    args[which] = args[which].astype(jnp.complex64)
    name = ["log_prob", "old_log_prob", "advantages"][which]
    for fn in ("per_token_objective", "grad_weight", "token_regions"):
        with pytest.raises(TypeError, match=rf"^{name} must be a real numeric array"):
            getattr(cj, fn)(*args, cegppo.CEGPPOConfig())


def test_S9_5_S9_6_per_token_loss_dtype_and_type() -> None:
    """`check_input_dtype` (one rule): a real numeric loss, computed in at least float32, a complex one
    refused by name (a cast would drop its imaginary part); a loss that is not an array is named too."""
    for dt, expected in ((jnp.float32, jnp.float32), (jnp.bfloat16, jnp.float32), (jnp.float64, jnp.float64),
                         (jnp.int32, jnp.float32), (jnp.bool_, jnp.float32)):
        got = cj.aggregate_loss(jnp.ones((3, 3), dt), MASK3)
        assert got.dtype == expected and float(got) == pytest.approx(1.0, rel=1e-6), dt
    with pytest.raises(TypeError, match=r"^per_token_loss must be a real numeric array, got dtype complex64$"):
        cj.aggregate_loss(jnp.ones((3, 3), jnp.complex64), MASK3)
    with pytest.raises(TypeError, match=r"^per_token_loss must be a jax.Array or numpy.ndarray, got list$"):
        cj.aggregate_loss(LOSS3.tolist(), MASK3)


class _ForeignScalar:
    """A 0-d array of another framework (a torch tensor, say): it has a shape and a dtype."""

    shape = ()
    dtype = np.dtype(np.float32)


@pytest.mark.parametrize("fn", ["aggregation_weights", "aggregate_loss"])
def test_S9_6_a_normalizer_of_another_framework_is_refused_by_name(fn: str) -> None:
    args = (jnp.asarray(LOSS3), MASK3) if fn == "aggregate_loss" else (MASK3,)
    with pytest.raises(TypeError, match=r"^num_tokens must be a jax.Array or numpy.ndarray, got _ForeignScalar$"):
        getattr(cj, fn)(*args, num_tokens=_ForeignScalar())


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
@pytest.mark.parametrize("normalizers", [False, True], ids=["own counts", "float64 normalizers"])
def test_S9_5_every_mode_keeps_float32(agg: str, normalizers: bool) -> None:
    """float32 weights and a float32 loss stay float32 in every mode, even beside float64 normalizers
    (x64 is on here, so a float64 constant or divisor that slipped in would promote the result)."""
    kw = {"num_tokens": jnp.asarray(6.0), "num_seqs": jnp.asarray(2.0)} if normalizers else {}
    weights = cj.aggregation_weights(MASK3, agg, dtype=jnp.float32, **kw)
    loss = cj.aggregate_loss(jnp.asarray(LOSS3, jnp.float32), MASK3, agg, **kw)
    assert weights.dtype == loss.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(weights), cegppo.aggregation_weights(MASK3, agg, num_tokens=6, num_seqs=2),
                               rtol=1e-6)
    assert float(loss) == pytest.approx(float(cegppo.aggregate_loss(LOSS3, MASK3, agg, num_tokens=6, num_seqs=2)),
                                        rel=1e-6)


@pytest.mark.parametrize("which", [0, 1], ids=["log_prob", "old_log_prob"])
def test_S9_6_integer_log_probs_are_refused_by_name(which: int) -> None:
    """Log-probabilities must be floating (`check_input_dtype`, floating_only): named in every per-token function."""
    args = [jnp.full((2, 3), -0.5), jnp.full((2, 3), -0.4), jnp.ones((2, 3))]
    args[which] = args[which].astype(jnp.int32)
    name = ["log_prob", "old_log_prob"][which]
    for fn in ("per_token_objective", "grad_weight", "token_regions"):
        with pytest.raises(TypeError, match=rf"^{name} must be a floating-point array, got dtype int32$"):
            getattr(cj, fn)(*args, cegppo.CEGPPOConfig())


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
def test_S8_S9_5_policy_loss_in_every_mode_keeps_float32_and_reads_norm_length(agg: str) -> None:
    """policy_loss sums then divides once (`_aggregate`, not the weights): float32 inputs give a float32
    loss in every mode (x64 is on: a float64 count would promote it), and norm_length reaches the divisor."""
    rng = np.random.default_rng(0)
    lp = rng.normal(-1.0, 0.3, (3, 3))
    olp, adv = lp + rng.normal(0.0, 0.3, (3, 3)), rng.normal(size=(3, 3))
    cfg = cegppo.CEGPPOConfig()
    kw = {"norm_length": 5.0} if agg == "seq-mean-token-sum-norm" else {}
    expected = float(cegppo.policy_loss(lp, olp, adv, MASK3, cfg, agg, **kw))
    got = cj.policy_loss(*(jnp.asarray(x, jnp.float32) for x in (lp, olp, adv)), MASK3, cfg, agg, **kw)
    assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(expected, rel=1e-5)
