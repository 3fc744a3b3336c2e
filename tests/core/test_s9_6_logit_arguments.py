"""Shape rules of the logit head's arguments (docs/spec.md S9.6, S11): logits (..., V) with V >= 1.

Added when mutation testing (`nox -s mutation`, docs/contributing.md) showed `check_logits_shapes`'
limits untested: 1-D logits (V,), V = 1, empty leading axes, and the argument named in each error.
"""

from __future__ import annotations

import cegppo
import numpy as np
import pytest


def test_S11_one_dimensional_logits_are_one_distribution() -> None:
    z = np.array([0.0, 1.0, 2.0])
    lp = cegppo.token_log_probs(z, np.array(2))
    assert lp.shape == () and float(lp) == pytest.approx(2.0 - np.log(np.exp(z).sum()))
    assert cegppo.entropy(z).shape == ()


def test_S11_a_vocabulary_of_one_is_allowed() -> None:
    z = np.array([[3.0], [-1.0]])
    np.testing.assert_array_equal(cegppo.token_log_probs(z, np.array([0, 0])), [0.0, 0.0])
    np.testing.assert_array_equal(cegppo.entropy(z), [0.0, 0.0])


def test_S11_empty_leading_axes_are_allowed() -> None:
    z = np.zeros((2, 0, 3))
    assert cegppo.entropy(z).shape == (2, 0)
    assert cegppo.token_log_probs(z, np.zeros((2, 0), dtype=np.int64)).shape == (2, 0)


@pytest.mark.parametrize("shape", [(), (2, 0)])
def test_S9_6_logits_without_a_vocabulary_are_refused(shape: tuple) -> None:
    with pytest.raises(ValueError, match=r"^logits must have shape \(\.\.\., V\) with V >= 1"):
        cegppo.entropy(np.zeros(shape))


def test_S9_6_logit_arguments_are_named() -> None:
    z = np.zeros((2, 3))
    ids = np.zeros(2, dtype=np.int64)
    with pytest.raises(TypeError, match=r"^logits must be an array or tensor, got list"):
        cegppo.entropy([[0.0, 1.0]])
    with pytest.raises(TypeError, match=r"^ids must be an array or tensor, got list"):
        cegppo.token_log_probs(z, [0, 0])
    with pytest.raises(TypeError, match=r"^weight must be an array or tensor, got list"):
        cegppo.entropy_change_first_order(z, ids, [1.0, 1.0])
    with pytest.raises(ValueError, match=r"^ids must have shape \(2,\) \(logits without the vocab axis\)"):
        cegppo.token_log_probs(z, np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"^weight must have shape \(2,\) \(logits without the vocab axis\)"):
        cegppo.entropy_change_first_order(z, ids, np.ones(3))


def test_policy_metrics_reports_non_finite_inputs_instead_of_refusing_them() -> None:
    """policy_metrics is for logging: it never validates values (policy_loss(validate=True) does)."""
    lp = np.array([[np.nan, -0.5]])
    old = np.array([[-0.5, -np.inf]])
    cfg = cegppo.presets.ce_gppo_1p5b()
    with np.errstate(invalid="ignore"):  # NaN - NaN in the k3 estimator: reported as NaN
        metrics = cegppo.policy_metrics(lp, old, np.array([1.0]), np.ones((1, 2), bool), cfg)
    assert isinstance(metrics, dict) and metrics
    with pytest.raises(ValueError, match=r"^log_prob holds non-finite values"):
        cegppo.policy_loss(lp, old, np.array([1.0]), np.ones((1, 2), bool), cfg, validate=True)
