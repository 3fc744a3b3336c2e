"""policy_metrics' dtype and edge cases, and policy_loss_grad's argument checks (docs/spec.md S8.2, S9.5, S10).

Added when mutation testing (`nox -s mutation`, docs/contributing.md) showed them unchecked: metrics of
float32 inputs could come back float64, an empty batch and an overflowing ratio were never drawn,
and policy_loss_grad's checks of normalizers a mode does not read could be dropped.
"""

from __future__ import annotations

import warnings

import cegppo
import numpy as np
import pytest

CFG = cegppo.presets.ce_gppo_1p5b()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("empty", [False, True])
def test_S10_metrics_are_in_the_compute_dtype(dtype: type, empty: bool) -> None:
    lp = np.array([[-0.5, -1.0, -2.0]], dtype=dtype)
    mask = np.zeros((1, 3), bool) if empty else np.ones((1, 3), bool)
    metrics = cegppo.policy_metrics(lp, lp - 0.1, np.array([1.0], dtype=dtype), mask, CFG)
    expected = np.result_type(dtype, np.float32)
    assert {k: v.dtype for k, v in metrics.items()} == {k: expected for k in metrics}


@pytest.mark.parametrize("shape", [(0, 3), (2, 0)], ids=["no_rows", "no_tokens"])
def test_S10_metrics_of_an_empty_batch_are_zero(shape: tuple[int, int]) -> None:
    z = np.zeros(shape)
    metrics = cegppo.policy_metrics(z, z, np.zeros(shape[0]), np.zeros(shape, bool), CFG)
    assert all(float(v) == 0.0 for v in metrics.values()), metrics


def test_S10_an_overflowing_ratio_is_reported_as_inf_without_a_warning() -> None:
    lp = np.array([[800.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = cegppo.policy_metrics(lp, np.zeros_like(lp), np.array([-1.0]), np.ones((1, 2), bool), CFG)
    assert np.isposinf(metrics["ratio_max"]) and np.isposinf(metrics["ratio_mean"])


@pytest.mark.parametrize(
    ("agg", "kwargs", "name"),
    [("seq-mean-token-sum", {"num_tokens": -1.0}, "num_tokens"), ("token-mean", {"num_seqs": -1.0}, "num_seqs"),
     ("token-mean", {"norm_length": 0.0}, "norm_length")],
)
@pytest.mark.parametrize("fn", ["policy_loss", "policy_loss_grad"])
def test_S8_2_every_aggregation_argument_is_checked_whatever_the_mode(agg: str, kwargs: dict, name: str, fn: str) -> None:
    lp = np.zeros((1, 2))
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number"):
        getattr(cegppo, fn)(lp, lp, np.array([1.0]), np.ones((1, 2), bool), CFG, agg, **kwargs)


def test_S8_policy_loss_grad_reads_norm_length() -> None:
    rng = np.random.default_rng(3)
    lp, old = rng.normal(size=(2, 4)) * 0.1, rng.normal(size=(2, 4)) * 0.1
    adv, mask = np.array([1.0, -1.0]), np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    agg = "seq-mean-token-sum-norm"
    g_default = cegppo.policy_loss_grad(lp, old, adv, mask, CFG, agg)  # L = T = 4
    g_two = cegppo.policy_loss_grad(lp, old, adv, mask, CFG, agg, norm_length=2.0)
    np.testing.assert_allclose(g_two, g_default * 2.0, rtol=1e-14)
