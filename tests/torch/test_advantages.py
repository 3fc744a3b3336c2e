"""cegppo.torch group advantages (spec S12) vs the reference."""

from __future__ import annotations

import cegppo
import cegppo.torch as cg
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch_cases import to_np

DTYPES = {"float64": torch.float64, "float32": torch.float32, "int64": torch.int64, "bool": torch.bool}
NP = {"float64": np.float64, "float32": np.float32, "int64": np.int64, "bool": np.bool_}


@pytest.mark.parametrize("estimator", cegppo.ADVANTAGE_ESTIMATORS)
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@given(
    g=st.integers(2, 6),
    p=st.integers(1, 4),
    data=st.data(),
)
def test_S12_group_advantages_match_reference(estimator, dtype, g, p, data):
    """grpo/drgrpo/rloo equal the reference: value and dtype (ints/bools in float64, floats >= float32)."""
    if dtype == "bool":
        elements = st.booleans()
    elif dtype == "int64":
        elements = st.integers(-3, 3)
    else:  # few distinct values, so flat groups (S12.4) come up often
        elements = st.sampled_from([0.0, 1.0, 0.5, -2.0, 1e-3, 3.7])
    r = data.draw(hnp.arrays(NP[dtype], (p * g,), elements=elements), label="rewards")
    got = cg.group_advantages(torch.tensor(r), g, estimator)
    want = cegppo.group_advantages(r, g, estimator)
    assert str(got.dtype).removeprefix("torch.") == str(want.dtype)
    tol = 1e-12 if got.dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(to_np(got), want, rtol=tol, atol=tol)
    flat = (r.reshape(-1, g) == r.reshape(-1, g)[:, :1]).all(-1)
    assert np.all(to_np(got).reshape(-1, g)[flat] == 0.0)  # exactly 0 (S12.4)
    named = {"grpo": cg.grpo_advantages, "drgrpo": cg.drgrpo_advantages, "rloo": cg.rloo_advantages}[
        estimator
    ]
    torch.testing.assert_close(named(torch.tensor(r), g), got, rtol=0, atol=0)


def test_S12_bf16_rewards_in_float32_and_grpo_eps():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.bfloat16)
    got = cg.grpo_advantages(r, 4, eps=0.5)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(
        to_np(got), cegppo.grpo_advantages(np.array([1.0, 0, 0, 0], np.float32), 4, 0.5), rtol=1e-6
    )
    assert cg.GRPO_EPS == cegppo.GRPO_EPS


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        ((torch.zeros(6), 1), ValueError, "group_size must be >= 2"),
        ((torch.zeros(6), 4), ValueError, "positive multiple"),
        ((torch.zeros(0), 2), ValueError, "positive multiple"),
        ((torch.zeros(2, 2), 2), ValueError, "rewards must have shape"),
        ((torch.zeros(4), 2.0), TypeError, "group_size must be an int"),
        ((torch.zeros(4), 2, "ppo"), ValueError, "estimator must be one of"),
        ((np.zeros(4), 2), TypeError, "rewards must be a torch.Tensor"),
    ],
)
def test_S12_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        cg.group_advantages(*args)
    if not isinstance(args[0], np.ndarray):
        with pytest.raises(exc, match=match):
            cegppo.group_advantages(args[0].numpy(), *args[1:])


def test_S12_eps_must_be_positive():
    with pytest.raises(ValueError, match="eps must be"):
        cg.grpo_advantages(torch.zeros(4), 2, eps=0.0)
