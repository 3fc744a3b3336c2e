"""Errors that start with the argument they name, dtypes kept, and the dtype reader (docs/spec.md S9.5, S9.6, S10, S11).

Added when mutation testing (`nox -s mutation`, docs/contributing.md) showed these unchecked: tests
matched an argument's name anywhere in the message (so "XXweightXX" passed), `dtype_kind` was reached
only with NumPy dtypes of a few kinds, a config field could keep the int it was given, and the
logits' helpers were never given large logits, (B, T, V) logits with an entropy change, integer
weights or a float32 weight.
"""

from __future__ import annotations

from typing import Any

import cegppo
import numpy as np
import pytest
from cegppo._validation import check_aggregation, dtype_kind

# ---------------------------------------------------------------- dtype_kind (every backend's dtype reader)


@pytest.mark.parametrize(("dtype", "kind"), [
    (np.float16, "float"), (np.float32, "float"), (np.float64, "float"), (np.complex64, "complex"),
    (np.int8, "int"), (np.uint8, "int"), (np.int64, "int"), (np.bool_, "bool"), (np.str_, "other"),
    (np.object_, "other"), ("float32", "float"),
])
def test_dtype_kind_of_numpy_dtypes(dtype: Any, kind: str) -> None:
    assert dtype_kind(dtype) == kind


class _TorchLikeDtype:
    """What `dtype_kind` reads of a torch.dtype, without torch: two flags and the name."""

    def __init__(self, name: str, floating: bool = False, complex_: bool = False) -> None:
        self.is_floating_point, self.is_complex, self._name = floating, complex_, name

    def __str__(self) -> str:
        return f"torch.{self._name}"


@pytest.mark.parametrize(("dtype", "kind"), [
    (_TorchLikeDtype("bfloat16", floating=True), "float"),
    (_TorchLikeDtype("complex64", complex_=True), "complex"),
    (_TorchLikeDtype("bool"), "bool"),
    (_TorchLikeDtype("int32"), "int"),
    (_TorchLikeDtype("uint8"), "int"),
    (_TorchLikeDtype("quint8"), "other"),
])
def test_dtype_kind_of_torch_dtypes_by_their_flags_and_name(dtype: Any, kind: str) -> None:
    assert dtype_kind(dtype) == kind


def test_dtype_kind_of_ml_dtypes_bfloat16() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")  # installed with JAX; NumPy's kind for these is "V"
    assert dtype_kind(ml_dtypes.bfloat16) == "float"
    assert dtype_kind(ml_dtypes.float8_e4m3fn) == "float"  # read by its name: "float..."


# ---------------------------------------------------------------- the config's fields


@pytest.mark.parametrize("field", ["eps_low", "eps_high", "beta_low", "beta_high", "dual_clip"])
def test_config_field_errors_start_with_the_field(field: str) -> None:
    with pytest.raises(TypeError, match=rf"^{field} must be a real number, got str 'x'$"):
        cegppo.CEGPPOConfig(**{field: "x"})


def test_config_fields_given_as_ints_are_stored_as_floats() -> None:
    cfg = cegppo.CEGPPOConfig(eps_low=np.float64(0.2), eps_high=1, beta_low=0, beta_high=1, dual_clip=3)
    for field in ("eps_low", "eps_high", "beta_low", "beta_high", "dual_clip"):
        assert type(getattr(cfg, field)) is float, field  # np.float64 is a float subclass: stored as float


# ---------------------------------------------------------------- check_aggregation's array check


def test_check_aggregation_hands_array_normalizers_to_the_backend_s_type_check() -> None:
    seen: list[tuple[str, Any]] = []
    arr = np.array(4.0)
    check_aggregation("token-mean", arr, 3.0, None, array_type=lambda name, x: seen.append((name, x)))
    check_aggregation("token-mean", np.float64(4.0), 3, None, array_type=lambda name, x: seen.append((name, x)))
    assert [(name, id(x)) for name, x in seen] == [("num_tokens", id(arr))]  # host numbers (NumPy scalars too) are not


# ---------------------------------------------------------------- messages that start with the argument


def test_aggregate_loss_validate_names_per_token_loss() -> None:
    loss = np.array([[1.0, np.inf]])
    with pytest.raises(ValueError, match=r"^per_token_loss holds non-finite values"):
        cegppo.aggregate_loss(loss, np.ones((1, 2), bool), validate=True)


def test_token_ids_out_of_the_vocabulary_name_ids_and_the_vocabulary() -> None:
    with pytest.raises(ValueError, match=r"^ids must lie in \[0, 3\) \(the vocabulary\), got values in \[0, 5\]$"):
        cegppo.token_log_probs(np.zeros((2, 3)), np.array([0, 5]))


@pytest.mark.parametrize("dtype", [np.complex128, np.int64])
@pytest.mark.parametrize("fn", ["token_log_probs", "entropy"])
def test_complex_or_integer_logits_are_refused_naming_logits(fn: str, dtype: Any) -> None:
    args = (np.zeros((2, 3), dtype),) + ((np.array([0, 1]),) if fn == "token_log_probs" else ())
    with pytest.raises(TypeError, match=r"^logits must be a "):
        getattr(cegppo, fn)(*args)


def test_entropy_change_weight_and_grad_output_rules() -> None:
    """weight and grad_output may be integer (a count or a sign), never complex; they take the logits' dtype."""
    z = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    ids = np.array([1, 3])
    as_bool = cegppo.entropy_change_first_order(z, ids, np.array([True, False]))
    np.testing.assert_allclose(as_bool, cegppo.entropy_change_first_order(z, ids, np.array([1.0, 0.0])), rtol=1e-6)
    as_int = cegppo.entropy_change_first_order(z, ids, np.array([2, -1]))
    np.testing.assert_allclose(as_int, cegppo.entropy_change_first_order(z, ids, np.array([2.0, -1.0])), rtol=1e-6)
    assert as_int.dtype == np.float32
    assert cegppo.entropy_change_first_order(z, ids, np.array([2.0, -1.0])).dtype == np.float32
    with pytest.raises(TypeError, match=r"^weight "):
        cegppo.entropy_change_first_order(z, ids, np.array([1j, 1]))
    for grad in (cegppo.token_log_probs_grad, cegppo.entropy_grad):
        extra = (ids,) if grad is cegppo.token_log_probs_grad else ()
        np.testing.assert_allclose(grad(z, *extra, np.array([3, 1])), grad(z, *extra, np.array([3.0, 1.0])),
                                   rtol=1e-6)
        with pytest.raises(TypeError, match=r"^grad_output "):
            grad(z, *extra, np.array([1j, 1]))


def test_entropy_change_of_batched_logits_is_per_token() -> None:
    """(B, T, V) logits: each token's change is that of its own (V,) row (the entropy is over the last axis)."""
    z = np.random.default_rng(1).normal(size=(2, 3, 5))
    ids = np.random.default_rng(2).integers(0, 5, size=(2, 3))
    w = np.random.default_rng(3).normal(size=(2, 3))
    got = cegppo.entropy_change_first_order(z, ids, w)
    for b in range(2):
        for t in range(3):
            row = cegppo.entropy_change_first_order(z[b, t][None], ids[b, t][None], w[b, t][None])
            assert got[b, t] == pytest.approx(float(row[0]), rel=1e-12)


def test_log_softmax_of_large_logits_is_shifted_by_the_row_max() -> None:
    z = np.array([[1000.0, 999.0, 998.0]])
    np.testing.assert_allclose(cegppo.token_log_probs(z, np.array([0])), cegppo.token_log_probs(z - 1000.0, np.array([0])),
                               rtol=1e-12)
    np.testing.assert_allclose(cegppo.entropy(z), cegppo.entropy(z - 1000.0), rtol=1e-12)


# ---------------------------------------------------------------- metrics (S10) and a zero normalizer (S8.2)


def _metric_batch(dtype: Any) -> tuple[np.ndarray, ...]:
    lp = np.log(np.array([[0.5, 0.4, 0.3]])).astype(dtype)  # ratios 0.5/0.6 = 0.83, 1 and 0.75 at valid positions
    olp = np.log(np.array([[0.6, 0.4, 0.4]])).astype(dtype)
    return lp, olp, np.array([1.0], dtype), np.array([[True, True, False]])


def test_ratio_max_is_the_max_over_valid_tokens_below_one() -> None:
    lp, olp, adv, m = _metric_batch(np.float64)
    lp = lp.copy()
    lp[0, 1] = np.log(0.3)  # ratios 0.83 and 0.75 at valid positions, all < 1
    assert float(cegppo.policy_metrics(lp, olp, adv, m, cegppo.CEGPPOConfig())["ratio_max"]) == pytest.approx(0.5 / 0.6)


def test_fractions_with_one_valid_token() -> None:
    lp, olp, adv, m = _metric_batch(np.float64)
    m = np.array([[False, True, False]])
    metrics = cegppo.policy_metrics(lp, olp, adv, m, cegppo.CEGPPOConfig())
    assert float(metrics["inside_frac"]) == 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("empty", [False, True])
def test_metrics_take_the_log_probs_dtype_empty_batch_included(dtype: Any, empty: bool) -> None:
    lp, olp, adv, m = _metric_batch(dtype)
    if empty:
        m = np.zeros_like(m)
    for key, value in cegppo.policy_metrics(lp, olp, adv, m, cegppo.CEGPPOConfig()).items():
        assert np.asarray(value).dtype == np.dtype(dtype), key


def test_a_zero_host_normalizer_with_valid_tokens_is_refused_validated_or_not() -> None:
    """S8.2: a host number is read for free, so the reference checks it always; 0 is legitimate only
    for a micro-batch without a valid token."""
    m = np.array([[True, False]])
    for validate in (False, True):
        with pytest.raises(ValueError, match=r"^num_tokens is 0 but this batch has 1 valid tokens"):
            cegppo.aggregation_weights(m, "token-mean", num_tokens=0, validate=validate)
    np.testing.assert_array_equal(cegppo.aggregation_weights(~np.ones_like(m), "token-mean", num_tokens=0), 0.0)
