"""cegppo.torch with the rules written once in spec/ (issue 13): validate on aggregate_loss and
aggregation_weights, the one scalar rule for entropy_coef, the one chunk_size rule (spec S8.2, S9.6)."""

from __future__ import annotations

import warnings
from typing import Any

import cegppo
import cegppo.torch as cg
import numpy as np
import pytest
import torch
from backend_cases import (
    AGGREGATION_SHAPE_CASES,
    COMPUTE_DTYPE_CASES,
    aggregation_shape_case_id,
    check_aggregation_shape_case,
    check_boundaries_belong_to_inside,
    signature_drift,
)

MASK = torch.tensor([[True, False], [True, True]])


def test_aggregate_loss_validate_checks_valid_positions_and_normalizers() -> None:
    loss = torch.tensor([[1.0, float("nan")], [2.0, 3.0]])
    assert float(cg.aggregate_loss(loss, MASK, validate=True)) == pytest.approx(2.0)  # NaN is masked
    bad = loss.clone()
    bad[1, 1] = float("inf")
    with pytest.raises(ValueError, match=r"^per_token_loss holds non-finite values at valid \(mask = True\) positions$"):
        cg.aggregate_loss(bad, MASK, validate=True)
    zero = torch.tensor(0.0)  # 0 tokens for a batch with valid tokens: NaN unchecked, ValueError checked
    assert torch.isnan(cg.aggregate_loss(loss, MASK, num_tokens=zero))
    with pytest.raises(ValueError, match="num_tokens"):
        cg.aggregate_loss(loss, MASK, num_tokens=zero, validate=True)
    with pytest.raises(ValueError, match="num_seqs"):  # the normalizer the mode reads, whichever it is
        cg.aggregate_loss(loss, MASK, "seq-mean-token-sum", num_seqs=torch.tensor(-1.0), validate=True)


def test_aggregation_weights_validate_checks_the_normalizer_the_mode_reads() -> None:
    with pytest.raises(ValueError, match="num_seqs"):
        cg.aggregation_weights(MASK, "seq-mean-token-sum", num_seqs=torch.tensor(-1.0), validate=True)
    # token-mean does not read num_seqs: nothing to check
    c = cg.aggregation_weights(MASK, "token-mean", num_seqs=torch.tensor(-1.0), validate=True)
    np.testing.assert_allclose(c.numpy(), cegppo.aggregation_weights(MASK.numpy(), "token-mean"), rtol=1e-6)


@pytest.mark.parametrize("value", [torch.tensor(True), torch.tensor(1 + 0j)])
def test_bool_and_complex_normalizer_tensors_are_refused(value: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="num_tokens"):
        cg.aggregate_loss(torch.ones(2, 2), MASK, num_tokens=value)


def _fused_args() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 2, 3, generator=g), torch.randn(5, 3, generator=g), torch.tensor([[1, 4], [0, 2]]),
            torch.full((2, 2), -1.5), torch.tensor([1.0, -1.0]), MASK]


@pytest.mark.parametrize("kw,exc", [({"entropy_coef": np.float32(0.1)}, TypeError),
                                    ({"entropy_coef": float("inf")}, ValueError),
                                    ({"chunk_size": True}, TypeError)])
def test_fused_options_follow_the_shared_rules(kw: dict[str, object], exc: type[Exception]) -> None:
    """entropy_coef follows the config fields' rule (a Python int or float, so not np.float32, which
    the fused head used to accept while `temperature` refused it)."""
    with pytest.raises(exc, match=next(iter(kw))):
        cg.fused_linear_policy_loss(*_fused_args(), cegppo.CEGPPOConfig(), **kw)
    cg.fused_linear_policy_loss(*_fused_args(), cegppo.CEGPPOConfig(), entropy_coef=0.1, chunk_size=1)


def test_public_signatures_extend_the_reference_s() -> None:
    assert signature_drift(cg) == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_S2_each_boundary_belongs_to_inside_as_in_the_reference(dtype: type) -> None:
    check_boundaries_belong_to_inside(cg, torch.from_numpy, lambda t: t.numpy(), dtype)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
@pytest.mark.parametrize(
    "form", [float, np.float64, np.array, lambda v: np.array([v]), lambda v: torch.tensor(v, dtype=torch.float64)],
    ids=["float", "np.float64", "np 0-d", "np (1,)", "tensor 0-d"],
)
def test_S8_2_a_normalizer_in_any_accepted_form_divides_exactly(agg: str, form: Any) -> None:
    """A global normalizer as a host number, a 0-d or (1,) NumPy array or a 0-d tensor: the same float64
    loss as the reference's (3.3 is not a float32 number, so a divisor rounded to float32 shows), and no
    warning (NumPy deprecates float() of a (1,) array)."""
    loss = torch.tensor([[1.0, float("nan")], [2.0, 3.0]], dtype=torch.float64)
    name = "num_tokens" if agg == "token-mean" else "num_seqs"
    expected = cegppo.aggregate_loss(loss.numpy(), MASK.numpy(), agg, **{name: 3.3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = cg.aggregate_loss(loss, MASK, agg, **{name: form(3.3)})
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(float(expected), rel=1e-15)


def test_a_complex_weight_is_refused_not_truncated() -> None:
    """The shared dtype rule (check_input_dtype): integer weights are fine, complex ones would lose their
    imaginary part in a cast, so they are refused by name."""
    z, ids = torch.zeros(2, 4), torch.tensor([1, 3])
    cg.entropy_change_first_order(z, ids, torch.tensor([2, -1]))
    with pytest.raises(TypeError, match=r"^weight must be a real numeric array, got dtype torch.complex64$"):
        cg.entropy_change_first_order(z, ids, torch.tensor([1j, 1]))


@pytest.mark.parametrize("fn", ["per_token_objective", "grad_weight"])
@pytest.mark.parametrize(("lp", "olp", "adv", "expected"), COMPUTE_DTYPE_CASES)
def test_S9_5_every_input_takes_part_in_the_compute_dtype(fn: str, lp: Any, olp: Any, adv: Any, expected: Any) -> None:
    args = [torch.from_numpy(np.full((2, 3), v, dtype=d)) for v, d in ((-0.5, lp), (-0.4, olp), (1, adv))]
    assert getattr(cg, fn)(*args, cegppo.CEGPPOConfig()).dtype == getattr(torch, np.dtype(expected).name)


@pytest.mark.parametrize("case", AGGREGATION_SHAPE_CASES, ids=[aggregation_shape_case_id(c) for c in AGGREGATION_SHAPE_CASES])
def test_S9_6_aggregation_shapes_follow_the_one_rule(case: tuple[str, list[tuple[int, ...]], str]) -> None:
    """`check_aggregation_shapes`: a (B, T) mask, a loss of its shape, the same message everywhere."""
    check_aggregation_shape_case(cg, case, torch.zeros, lambda s: torch.ones(s, dtype=torch.bool))


def test_S9_5_S9_6_per_token_loss_dtype() -> None:
    """`check_input_dtype` (one rule): a real numeric loss, computed in at least float32; a complex one
    refused by name (a cast would drop its imaginary part)."""
    for dt, expected in ((torch.float16, torch.float32), (torch.float64, torch.float64), (torch.int64, torch.float32),
                         (torch.bool, torch.float32)):
        got = cg.aggregate_loss(torch.ones((2, 2), dtype=dt), MASK)
        assert got.dtype == expected and float(got) == pytest.approx(1.0, rel=1e-6), dt
    with pytest.raises(TypeError, match=r"^per_token_loss must be a real numeric array, got dtype torch.complex64$"):
        cg.aggregate_loss(torch.ones((2, 2), dtype=torch.complex64), MASK)
