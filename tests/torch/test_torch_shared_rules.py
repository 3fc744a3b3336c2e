"""cegppo.torch with the rules written once in spec/: bool and complex normalizer tensors, the one scalar
rule for entropy_coef, the one chunk_size rule, the per-token loss dtype (spec S8.2, S9.5, S9.6)."""

from __future__ import annotations

import cegppo
import cegppo.torch as cg
import numpy as np
import pytest
import torch

MASK = torch.tensor([[True, False], [True, True]])


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


def test_S9_5_S9_6_per_token_loss_dtype() -> None:
    """`check_input_dtype` (one rule): a real numeric loss, computed in at least float32; a complex one
    refused by name (a cast would drop its imaginary part)."""
    for dt, expected in ((torch.float16, torch.float32), (torch.float64, torch.float64), (torch.int64, torch.float32),
                         (torch.bool, torch.float32)):
        got = cg.aggregate_loss(torch.ones((2, 2), dtype=dt), MASK)
        assert got.dtype == expected and float(got) == pytest.approx(1.0, rel=1e-6), dt
    with pytest.raises(TypeError, match=r"^per_token_loss must be a real numeric array, got dtype torch.complex64$"):
        cg.aggregate_loss(torch.ones((2, 2), dtype=torch.complex64), MASK)
