"""cegppo.jax with the rules written once in spec/ (issue 13): validate on aggregate_loss and
aggregation_weights, host token ids range-checked always in the fused head as in token_log_probs
(spec S8.2, S9.6, S11)."""

from __future__ import annotations

from typing import Any

import cegppo
import cegppo.jax as cj
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from backend_cases import BOUNDARY_CFG, boundary_batch, signature_drift

MASK = np.array([[True, False], [True, True]])


def test_aggregate_loss_validate_checks_valid_positions_and_normalizers() -> None:
    loss = jnp.asarray([[1.0, np.nan], [2.0, 3.0]])
    assert float(cj.aggregate_loss(loss, MASK, validate=True)) == pytest.approx(2.0)  # NaN is masked
    with pytest.raises(ValueError, match="per_token_loss"):
        cj.aggregate_loss(loss.at[1, 1].set(np.inf), MASK, validate=True)
    zero = jnp.asarray(0.0)
    assert np.isnan(float(cj.aggregate_loss(loss, MASK, num_tokens=zero)))
    with pytest.raises(ValueError, match="num_tokens"):
        cj.aggregate_loss(loss, MASK, num_tokens=zero, validate=True)
    with pytest.raises(ValueError, match="num_seqs"):  # the normalizer the mode reads, whichever it is
        cj.aggregate_loss(loss, MASK, "seq-mean-token-sum", num_seqs=jnp.asarray(-1.0), validate=True)


def test_aggregation_weights_validate_checks_the_normalizer_the_mode_reads() -> None:
    with pytest.raises(ValueError, match="num_seqs"):
        cj.aggregation_weights(MASK, "seq-mean-token-sum", num_seqs=jnp.asarray(-1.0), validate=True)
    c = cj.aggregation_weights(MASK, "token-mean", num_seqs=jnp.asarray(-1.0), validate=True)
    np.testing.assert_allclose(np.asarray(c), cegppo.aggregation_weights(MASK, "token-mean"), rtol=1e-6)


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


def test_public_signatures_extend_the_reference_s() -> None:
    assert signature_drift(cj) == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_S2_each_boundary_belongs_to_inside_as_in_the_reference(dtype: type) -> None:
    lp, olp, adv = boundary_batch(dtype)
    ref = cegppo.token_regions(lp, olp, adv, BOUNDARY_CFG)
    got = cj.token_regions(*(jnp.asarray(x) for x in (lp, olp, adv)), BOUNDARY_CFG)
    assert ref.inside.all()
    for region in ("inside", "clip_low", "clip_high", "dual_clip"):
        np.testing.assert_array_equal(np.asarray(getattr(got, region)), getattr(ref, region), err_msg=region)
    f = cj.grad_weight(*(jnp.asarray(x) for x in (lp, olp, adv)), BOUNDARY_CFG)
    np.testing.assert_allclose(np.asarray(f), cegppo.grad_weight(lp, olp, adv, BOUNDARY_CFG), rtol=1e-6)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
@pytest.mark.parametrize(
    "form", [float, np.float64, np.array, lambda v: np.array([v]), lambda v: jnp.asarray(v, dtype=jnp.float64)],
    ids=["float", "np.float64", "np 0-d", "np (1,)", "jax 0-d"],
)
def test_S8_2_a_normalizer_in_any_accepted_form_divides_exactly(agg: str, form: Any) -> None:
    """A global normalizer as a host number, a 0-d or (1,) NumPy array or a 0-d jax array: the same float64
    loss as the reference's (3.3 is not a float32 number, so a divisor rounded to float32 shows), eagerly
    and under jit."""
    loss = np.array([[1.0, np.nan], [2.0, 3.0]])
    name = "num_tokens" if agg == "token-mean" else "num_seqs"
    expected = float(cegppo.aggregate_loss(loss, MASK, agg, **{name: 3.3}))
    eager = cj.aggregate_loss(jnp.asarray(loss), MASK, agg, **{name: form(3.3)})
    jitted = jax.jit(lambda x, n: cj.aggregate_loss(x, MASK, agg, **{name: n}))(jnp.asarray(loss), form(3.3))
    for got in (eager, jitted):
        assert got.dtype == jnp.float64
        assert float(got) == pytest.approx(expected, rel=1e-15)


def test_a_complex_weight_is_refused_not_truncated() -> None:
    """The shared dtype rule (check_input_dtype): integer weights are fine, complex ones would lose their
    imaginary part in a cast, so they are refused by name."""
    z, ids = jnp.zeros((2, 4)), jnp.asarray([1, 3])
    cj.entropy_change_first_order(z, ids, jnp.asarray([2, -1]))
    with pytest.raises(TypeError, match=r"^weight must be a real numeric array, got dtype complex64$"):
        cj.entropy_change_first_order(z, ids, jnp.asarray([1j, 1], dtype=jnp.complex64))
