"""`cegppo.aggregate_loss` on its own (docs/spec.md S8): defaults, normalizers passed through, dtypes.

Added when mutation testing (`nox -s mutation`, docs/contributing.md) showed that these clauses were only
checked through `policy_loss`: a mutant of `aggregate_loss` that dropped `num_tokens`, ignored the
compute dtype or changed the default mode survived.
"""

from __future__ import annotations

import cegppo
import numpy as np
import pytest

MASK = np.array([[1, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)  # n_i = 3, 1, 0; N = 4; S = 2; T = 4
LOSS = np.array([[1.0, 2.0, 50.0, 4.0], [8.0, 60.0, 70.0, 80.0], [90.0, 91.0, 92.0, 93.0]])


def test_S8_default_mode_is_token_mean() -> None:
    assert float(cegppo.aggregate_loss(LOSS, MASK)) == pytest.approx((1 + 2 + 4 + 8) / 4, rel=1e-15)


@pytest.mark.parametrize(
    ("agg", "kwargs", "expected"),
    [
        ("token-mean", {"num_tokens": 10}, 15 / 10),
        ("token-sum", {"num_tokens": 10, "num_seqs": 10}, 15.0),
        ("seq-mean-token-sum", {"num_seqs": 5}, 15 / 5),
        ("seq-mean-token-mean", {"num_seqs": 5}, (7 / 3 + 8 / 1) / 5),
        ("seq-mean-token-sum-norm", {"num_seqs": 5, "norm_length": 2.0}, 15 / (5 * 2)),
        ("seq-mean-token-sum-norm", {"norm_length": 2.0}, 15 / (2 * 2)),
        ("seq-mean-token-sum-norm", {"num_seqs": 5}, 15 / (5 * 4)),
    ],
)
def test_S8_2_aggregate_loss_reads_the_global_normalizers(agg: str, kwargs: dict, expected: float) -> None:
    assert float(cegppo.aggregate_loss(LOSS, MASK, agg, **kwargs)) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    ("loss_dtype", "expected"),
    [(np.float16, np.float32), (np.float32, np.float32), (np.float64, np.float64), (np.int64, np.float64)],
)
@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
def test_S9_5_aggregate_loss_computes_in_at_least_float32(loss_dtype: type, expected: type, agg: str) -> None:
    out = cegppo.aggregate_loss(LOSS.astype(loss_dtype), MASK, agg)
    assert out.dtype == np.dtype(expected), (agg, loss_dtype, out.dtype)
    assert out.shape == ()


def test_S8_aggregate_loss_names_per_token_loss_on_a_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"^per_token_loss must have the shape of mask"):
        cegppo.aggregate_loss(LOSS[:, :3], MASK)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum"])
def test_S8_2_a_normalizer_below_one_divides(agg: str) -> None:
    # Normalizers need not be counts: dividing them by the world size W is the documented way to
    # undo DDP's gradient averaging (cegppo.torch.global_counts), which gives values in (0, 1).
    key = "num_tokens" if agg == "token-mean" else "num_seqs"
    c = cegppo.aggregation_weights(MASK, agg, **{key: 0.25})
    np.testing.assert_allclose(c, MASK / 0.25, rtol=1e-15)


def test_S8_aggregation_weights_default_mode_is_token_mean() -> None:
    np.testing.assert_array_equal(cegppo.aggregation_weights(MASK), MASK / 4.0)


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
@pytest.mark.parametrize("kwargs", [{}, {"num_tokens": 6, "num_seqs": 3}, {"num_tokens": 6.0, "num_seqs": 3.0}])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_S8_aggregation_weights_are_in_the_dtype_asked_for(agg: str, kwargs: dict, dtype: type) -> None:
    c = cegppo.aggregation_weights(MASK, agg, dtype=dtype, **kwargs)
    assert c.dtype == np.dtype(dtype), (agg, kwargs, c.dtype)


@pytest.mark.parametrize(("agg", "name"), [("seq-mean-token-sum", "num_tokens"), ("token-mean", "num_seqs"),
                                           ("token-sum", "num_tokens"), ("token-sum", "num_seqs")])
@pytest.mark.parametrize("fn", ["aggregation_weights", "aggregate_loss"])
def test_S8_2_a_bad_normalizer_is_refused_even_by_a_mode_that_does_not_read_it(agg: str, name: str, fn: str) -> None:
    args = (MASK,) if fn == "aggregation_weights" else (LOSS, MASK)
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number >= 0"):
        getattr(cegppo, fn)(*args, agg, **{name: -1.0})


def test_S8_aggregation_weights_names_the_mask_of_the_wrong_rank() -> None:
    with pytest.raises(ValueError, match=r"^mask must have shape \(B, T\), got shape \(4,\)"):
        cegppo.aggregation_weights(MASK[0])
