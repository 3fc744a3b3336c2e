"""The aggregation of cegppo.torch and cegppo.jax (spec S8, S9.6): aggregation_weights and aggregate_loss
against the reference, global normalizers in every accepted form, bad normalizers, validate=True, the
shape rule. The micro-batch additivity of `policy_loss` is the conformance suite's."""

from __future__ import annotations

import warnings
from typing import Any

import cegppo
import numpy as np
import pytest
from array_backends import Backend
from backend_cases import AGGREGATION_SHAPE_CASES, aggregation_shape_case_id
from hypothesis import given
from hypothesis import strategies as st

CFG = cegppo.presets.ce_gppo_official()
MASK = np.array([[True, False], [True, True]])


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
@given(data=st.data(), norm_length=st.sampled_from([None, 3.0, 17]))
def test_S8_aggregation_weights_and_aggregate_loss(backend: Backend, agg: str, data: Any, norm_length: Any) -> None:
    """aggregation_weights, aggregate_loss and its gradient (the weights) equal the reference (float64);
    NaN at masked positions is ignored."""
    cg = backend.cg
    case = data.draw(backend.policy_batches(), label="case")
    mask = case["mask"]
    per_token = np.where(mask, case["logr"], np.nan)
    want_c = cegppo.aggregation_weights(mask, agg, norm_length=norm_length)
    c = cg.aggregation_weights(backend.asarray(mask), agg, norm_length=norm_length, dtype=backend.dtype("float64"))
    assert backend.dtype_name(c) == "float64"
    np.testing.assert_allclose(backend.to_np(c), want_c, rtol=1e-12, atol=0)
    loss, g = backend.value_and_grad(lambda x: cg.aggregate_loss(x, backend.asarray(mask), agg, norm_length=norm_length))(
        backend.asarray(per_token))
    np.testing.assert_allclose(backend.to_np(loss), cegppo.aggregate_loss(per_token, mask, agg, norm_length=norm_length),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(backend.to_np(g), np.where(mask, want_c, 0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
@pytest.mark.parametrize(
    "form", [float, np.float64, np.array, lambda v: np.array([v]), "backend 0-d"],
    ids=["float", "np.float64", "np 0-d", "np (1,)", "backend 0-d"],
)
def test_S8_2_a_normalizer_in_any_accepted_form_divides_exactly(backend: Backend, agg: str, form: Any) -> None:
    """A global normalizer as a host number, a 0-d or (1,) NumPy array or a 0-d array of the backend: the same
    float64 loss as the reference's (3.3 is not a float32 number, so a divisor rounded to float32 shows),
    eagerly and under jit, and no warning (NumPy deprecates float() of a (1,) array)."""
    cg = backend.cg
    loss = np.array([[1.0, np.nan], [2.0, 3.0]])
    name = "num_tokens" if agg == "token-mean" else "num_seqs"
    expected = float(cegppo.aggregate_loss(loss, MASK, agg, **{name: 3.3}))
    value = backend.asarray(3.3, "float64") if form == "backend 0-d" else form(3.3)
    mask = backend.asarray(MASK)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eager = cg.aggregate_loss(backend.asarray(loss), mask, agg, **{name: value})
        jitted = backend.jit(lambda x, n: cg.aggregate_loss(x, mask, agg, **{name: n}))(backend.asarray(loss), value)
    for got in (eager, jitted):
        assert backend.dtype_name(got) == "float64"
        assert float(got) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("bad", ["nan", "negative", "zero", "python_zero"])
def test_S8_2_bad_normalizer_is_never_replaced_by_one(backend: Backend, agg: str, bad: str) -> None:
    """A NaN, negative or 0 (with valid tokens) normalizer: NaN loss without validate (no host sync, also
    under jit), ValueError naming it with validate=True; never the silent 1 that turns the mean into a sum.
    On a micro-batch with no valid token 0 is right (the bad ones still are not). A host (NumPy) value is
    checked always, like the reference."""
    cg = backend.cg
    name = "num_tokens" if agg == "token-mean" else "num_seqs"
    value = 0 if bad == "python_zero" else backend.asarray({"nan": np.nan, "negative": -4, "zero": 0}[bad])
    lp = backend.asarray([[-1.0, -0.5], [-0.2, -0.3]])
    olp, adv = backend.asarray(np.full((2, 2), -0.6), backend.dtype_name(lp)), backend.asarray([1.0, -1.0])
    mask, empty = backend.asarray(np.ones((2, 2), bool)), backend.asarray(np.zeros((2, 2), bool))
    assert np.isnan(float(cg.policy_loss(lp, olp, adv, mask, CFG, agg, **{name: value})))
    if bad != "python_zero":
        assert np.isnan(float(backend.jit(lambda v: cg.policy_loss(lp, olp, adv, mask, CFG, agg, **{name: v}))(value)))
    with pytest.raises(ValueError, match=name):
        cg.policy_loss(lp, olp, adv, mask, CFG, agg, validate=True, **{name: value})
    out = float(cg.policy_loss(lp, olp, adv, empty, CFG, agg, **{name: value}))
    if bad in ("zero", "python_zero"):
        assert out == 0.0
        assert float(cg.policy_loss(lp, olp, adv, empty, CFG, agg, validate=True, **{name: value})) == 0.0
    else:
        assert np.isnan(out)
    with pytest.raises(ValueError, match=name):
        cg.policy_loss(lp, olp, adv, mask, CFG, agg, **{name: np.float32("nan")})


def test_aggregate_loss_validate_checks_valid_positions_and_normalizers(backend: Backend) -> None:
    cg, mask = backend.cg, backend.asarray(MASK)
    loss = backend.asarray([[1.0, float("nan")], [2.0, 3.0]])
    assert float(cg.aggregate_loss(loss, mask, validate=True)) == pytest.approx(2.0)  # NaN is masked
    with pytest.raises(ValueError, match=r"^per_token_loss holds non-finite values at valid \(mask = True\) positions$"):
        cg.aggregate_loss(backend.asarray([[1.0, float("nan")], [2.0, float("inf")]]), mask, validate=True)
    zero = backend.asarray(0.0)  # 0 tokens for a batch with valid tokens: NaN unchecked, ValueError checked
    assert np.isnan(float(cg.aggregate_loss(loss, mask, num_tokens=zero)))
    with pytest.raises(ValueError, match="num_tokens"):
        cg.aggregate_loss(loss, mask, num_tokens=zero, validate=True)
    with pytest.raises(ValueError, match="num_seqs"):  # the normalizer the mode reads, whichever it is
        cg.aggregate_loss(loss, mask, "seq-mean-token-sum", num_seqs=backend.asarray(-1.0), validate=True)


def test_aggregation_weights_validate_checks_the_normalizer_the_mode_reads(backend: Backend) -> None:
    cg, mask = backend.cg, backend.asarray(MASK)
    with pytest.raises(ValueError, match="num_seqs"):
        cg.aggregation_weights(mask, "seq-mean-token-sum", num_seqs=backend.asarray(-1.0), validate=True)
    # token-mean does not read num_seqs: nothing to check
    c = cg.aggregation_weights(mask, "token-mean", num_seqs=backend.asarray(-1.0), validate=True)
    np.testing.assert_allclose(backend.to_np(c), cegppo.aggregation_weights(MASK, "token-mean"), rtol=1e-6)


@pytest.mark.parametrize("case", AGGREGATION_SHAPE_CASES, ids=[aggregation_shape_case_id(c) for c in AGGREGATION_SHAPE_CASES])
def test_S9_6_aggregation_shapes_follow_the_one_rule(backend: Backend, case: tuple[str, list[tuple[int, ...]], str]) -> None:
    """`check_aggregation_shapes`: a (B, T) mask, a loss of its shape, the same message everywhere."""
    fn, shapes, message = case
    *loss, mask = shapes
    with pytest.raises(ValueError, match=message):
        getattr(backend.cg, fn)(*[backend.asarray(np.zeros(s)) for s in loss], backend.asarray(np.ones(mask, bool)))



@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
def test_S8_3_normalizers_as_python_numbers_or_0d_arrays(backend: Backend, agg: str) -> None:
    """num_tokens / num_seqs as a Python int, a 0-d integer array (what global_counts returns: int64 in
    torch, int32 in JAX, traced under jit) or a 0-d float array give the loss and gradient of the same
    Python float, eagerly and under jit (the conformance suite, which owns value, gradient and
    micro-batch additivity, passes Python floats only)."""
    cg = backend.cg
    rng = np.random.default_rng(5)
    lp = rng.uniform(-3, 0, (3, 4))
    olp, adv = backend.asarray(lp - rng.uniform(-0.5, 0.5, (3, 4))), backend.asarray(rng.normal(size=(3, 4)))
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]], bool)
    n_tok, n_seq = cg.global_counts(backend.asarray(mask))
    assert backend.dtype_name(n_tok) in ("int64", "int32") and tuple(n_tok.shape) == ()
    assert int(n_tok) == 8 and int(n_seq) == 3

    def loss_and_grad(x: Any, num_tokens: Any, num_seqs: Any) -> Any:
        return backend.value_and_grad(
            lambda y: cg.policy_loss(y, olp, adv, backend.asarray(mask), CFG, agg, num_tokens, num_seqs))(x)

    x = backend.asarray(lp)
    want_loss, want_grad = loss_and_grad(x, 11.0, 5.0)
    assert float(want_loss) == pytest.approx(float(cegppo.policy_loss(
        lp, backend.to_np(olp), backend.to_np(adv), mask, CFG, agg, num_tokens=11.0, num_seqs=5.0)), rel=1e-12)
    forms = [(11, 5), (backend.asarray(11, "int32"), backend.asarray(5, "int32")),
             (backend.asarray(11.0, "float32"), backend.asarray(5.0, "float32")), (n_tok + 3, n_seq + 2)]
    for num_tokens, num_seqs in forms:
        for loss, grad in (loss_and_grad(x, num_tokens, num_seqs), backend.jit(loss_and_grad)(x, num_tokens, num_seqs)):
            assert backend.dtype_name(loss) == "float64" and tuple(loss.shape) == ()
            np.testing.assert_allclose(backend.to_np(loss), backend.to_np(want_loss), rtol=1e-15, atol=0)
            np.testing.assert_allclose(backend.to_np(grad), backend.to_np(want_grad), rtol=1e-15, atol=0)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_S8_2_aggregation_weights_divide_by_the_normalizer_given(backend: Backend, agg: str) -> None:
    """A global normalizer given to aggregation_weights is the one the weights divide by (3.3, not this batch's count)."""
    name = "num_tokens" if agg == "token-mean" else "num_seqs"
    c = backend.cg.aggregation_weights(backend.asarray(MASK), agg, dtype=backend.dtype("float64"), **{name: 3.3})
    np.testing.assert_allclose(backend.to_np(c), cegppo.aggregation_weights(MASK, agg, **{name: 3.3}), rtol=1e-15, atol=0)


@pytest.mark.parametrize("fn", ["aggregation_weights", "aggregate_loss"])
@pytest.mark.parametrize(("agg", "name"), [("token-mean", "num_tokens"), ("seq-mean-token-sum", "num_seqs")])
def test_S8_2_a_bad_host_normalizer_is_refused_without_validate(backend: Backend, fn: str, agg: str, name: str) -> None:
    """A host number is read for free, so its value rule (S8.2) applies always, naming it, as in the reference."""
    args = ([backend.asarray(np.ones((2, 2)))] if fn == "aggregate_loss" else []) + [backend.asarray(MASK), agg]
    with pytest.raises(ValueError, match=rf"^{name} "):
        getattr(backend.cg, fn)(*args, **{name: -1.0})


@pytest.mark.parametrize(("agg", "name", "counted"), [("token-mean", "num_tokens", "3 valid tokens"),
                                                      ("seq-mean-token-sum", "num_seqs", "2 valid sequences")])
def test_S8_2_aggregation_weights_read_a_device_normalizer_only_with_validate(
    backend: Backend, agg: str, name: str, counted: str
) -> None:
    """A 0-d array normalizer of 0 on a batch with valid tokens: NaN weights by default (nothing is read back),
    a ValueError naming it and this batch's own count with validate=True."""
    mask, zero = backend.asarray(MASK), backend.asarray(0.0)
    assert np.isnan(backend.to_np(backend.cg.aggregation_weights(mask, agg, **{name: zero}))[MASK]).all()
    with pytest.raises(ValueError, match=rf"^{name} is 0 but this batch has {counted}: "):
        backend.cg.aggregation_weights(mask, agg, validate=True, **{name: zero})
