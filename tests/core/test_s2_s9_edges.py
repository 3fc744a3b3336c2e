"""Region boundaries and the compute dtype of the per-token functions (docs/spec.md S2, S9.1, S9.5).

Added when mutation testing (`nox -s mutation`, docs/contributing.md) showed two gaps: `delta > c` could
become `delta >= c` (the dual-clip boundary was never drawn exactly), and the compute dtype of
`per_token_objective` / `grad_weight` / `token_regions` ignored `log_prob` or `advantages` unnoticed
(the dtype tests went through `policy_loss`, which has its own input path).
"""

from __future__ import annotations

import cegppo
import numpy as np
import pytest
from backend_cases import COMPUTE_DTYPE_CASES

CFG = cegppo.CEGPPOConfig(eps_low=0.2, eps_high=0.28, beta_low=0.5, beta_high=1.0, dual_clip=3.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_S2_each_boundary_belongs_to_inside(dtype: type) -> None:
    """delta = 1 - eps_low, 1 + eps_high and c exactly (as rounded in the compute dtype, S9.1) are inside."""
    logr = np.array([[CFG.log_lower, CFG.log_upper, CFG.log_dual_clip]], dtype=dtype)
    adv = np.array([[-1.0, 1.0, -1.0]], dtype=dtype)
    zero = np.zeros_like(logr)
    r = cegppo.token_regions(logr, zero, adv, CFG)
    assert r.inside.all(), r
    assert not (r.clip_low.any() or r.clip_high.any() or r.dual_clip.any())
    f = cegppo.grad_weight(logr, zero, adv, CFG)
    np.testing.assert_allclose(f, np.exp(logr.astype(np.float64)), rtol=1e-6)


@pytest.mark.parametrize("fn", ["per_token_objective", "grad_weight"])
@pytest.mark.parametrize(("lp", "olp", "adv", "expected"), COMPUTE_DTYPE_CASES)
def test_S9_5_every_input_takes_part_in_the_compute_dtype(fn: str, lp: type, olp: type, adv: type, expected: type) -> None:
    out = getattr(cegppo, fn)(np.full((2, 3), -0.5, lp), np.full((2, 3), -0.4, olp), np.ones((2, 3), adv), CFG)
    assert out.dtype == np.dtype(expected), (lp, olp, adv, out.dtype)


@pytest.mark.parametrize("fn", ["per_token_objective", "grad_weight", "token_regions"])
@pytest.mark.parametrize("which", [0, 1, 2], ids=["log_prob", "old_log_prob", "advantages"])
def test_S9_6_a_complex_input_is_refused_by_name(fn: str, which: int) -> None:
    args = [np.full((2, 3), -0.5), np.full((2, 3), -0.4), np.ones((2, 3))]
    args[which] = args[which].astype(np.complex128)
    name = ["log_prob", "old_log_prob", "advantages"][which]
    with pytest.raises(TypeError, match=rf"^{name} must be a real numeric array, got dtype complex128"):
        getattr(cegppo, fn)(*args, CFG)


@pytest.mark.parametrize("fn", ["per_token_objective", "grad_weight", "token_regions"])
@pytest.mark.parametrize("which", [0, 1], ids=["log_prob", "old_log_prob"])
def test_S9_6_integer_log_probs_are_refused_by_name(fn: str, which: int) -> None:
    args = [np.full((2, 3), -0.5), np.full((2, 3), -0.4), np.ones((2, 3))]
    args[which] = np.zeros((2, 3), dtype=np.int64)
    name = ["log_prob", "old_log_prob"][which]
    with pytest.raises(TypeError, match=rf"^{name} must be a floating-point array, got dtype int64"):
        getattr(cegppo, fn)(*args, CFG)


def _loss_grad(lp, olp, adv, cfg):
    return cegppo.policy_loss_grad(lp, olp, adv, np.ones(np.shape(lp), bool), cfg)


def _loss(lp, olp, adv, cfg):
    return cegppo.policy_loss(lp, olp, adv, np.ones(np.shape(lp), bool), cfg)


@pytest.mark.parametrize("fn", [_loss, _loss_grad], ids=["policy_loss", "policy_loss_grad"])
@pytest.mark.parametrize("which", [0, 1, 2], ids=["log_prob", "old_log_prob", "advantages"])
def test_S9_5_S9_6_policy_loss_inputs_set_the_dtype_and_are_refused_by_name(fn, which: int) -> None:
    args = [np.full((2, 3), -0.5, np.float32), np.full((2, 3), -0.4, np.float32), np.ones((2, 3), np.float32)]
    name = ["log_prob", "old_log_prob", "advantages"][which]
    wide = list(args)
    wide[which] = wide[which].astype(np.float64)
    assert fn(*wide, CFG).dtype == np.float64, name
    bad = list(args)
    bad[which] = bad[which].astype(np.complex64)
    with pytest.raises(TypeError, match=rf"^{name} must be a real numeric array, got dtype complex64"):
        fn(*bad, CFG)
    if which < 2:
        bad[which] = np.zeros((2, 3), np.int32)
        with pytest.raises(TypeError, match=rf"^{name} must be a floating-point array, got dtype int32"):
            fn(*bad, CFG)


@pytest.mark.parametrize("which", [0, 1, 2, 3], ids=["log_prob", "old_log_prob", "advantages", "mask"])
def test_S9_6_a_non_array_is_refused_by_name(which: int) -> None:
    args = [np.zeros((1, 2)), np.zeros((1, 2)), np.ones(1), np.ones((1, 2), bool)]
    name = ["log_prob", "old_log_prob", "advantages", "mask"][which]
    args[which] = args[which].tolist()
    with pytest.raises(TypeError, match=rf"^{name} must be an array or tensor, got list$"):
        cegppo.policy_loss(*args, CFG)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["log_prob", "old_log_prob", "advantages"])
def test_S9_6_validate_names_the_input_holding_a_non_finite_value(which: int) -> None:
    args = [np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2)), np.ones((1, 2), bool)]
    name = ["log_prob", "old_log_prob", "advantages"][which]
    args[which][0, 1] = np.inf
    with pytest.raises(ValueError, match=rf"^{name} holds non-finite values at valid"):
        cegppo.policy_loss(*args, CFG, validate=True)
