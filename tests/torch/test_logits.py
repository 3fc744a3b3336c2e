"""cegppo.torch logit head (spec S11): chunked token_log_probs / entropy vs the reference, gradients, memory."""

from __future__ import annotations

import cegppo
import cegppo.torch as cg
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch.utils._python_dispatch import TorchDispatchMode
from torch_cases import TOL, to_np

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


@st.composite
def heads(draw):
    """logits (..., V) with some -inf (banned) entries, ids, grad_output and weight, all float64 NumPy."""
    lead = draw(st.sampled_from([(), (1,), (3,), (2, 3), (4, 1)]), label="lead shape")
    v = draw(st.integers(1, 13), label="V")
    z = draw(hnp.arrays(np.float64, (*lead, v), elements=st.floats(-20, 20)), label="logits")
    banned = draw(hnp.arrays(np.bool_, (*lead, v)), label="banned") if v > 1 else np.zeros((*lead, v), bool)
    banned[..., 0] = False  # keep one finite logit per row
    z = np.where(banned, -np.inf, z)
    ids = draw(hnp.arrays(np.int64, lead, elements=st.integers(0, v - 1)), label="ids")
    ids = np.where(
        np.take_along_axis(banned, ids[..., None], -1)[..., 0], 0, ids
    )  # sampled tokens are allowed
    g = draw(hnp.arrays(np.float64, lead, elements=st.floats(-2, 2)), label="grad_output")
    w = draw(hnp.arrays(np.float64, lead, elements=st.floats(-2, 2)), label="weight")
    chunk = draw(st.sampled_from([None, 1, 2, 5]), label="chunk_size")
    return z, ids, g, w, chunk


def _tensor(z: np.ndarray, dtype: torch.dtype) -> tuple[torch.Tensor, np.ndarray]:
    t = torch.tensor(z).to(dtype)
    return t.requires_grad_(), to_np(t)  # the reference sees the rounded values


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(case=heads())
def test_S11_token_log_probs_value_and_grad(dtype, case):
    z, ids, g, _, chunk = case
    x, zr = _tensor(z, dtype)
    out = cg.token_log_probs(x, torch.tensor(ids), chunk_size=chunk)
    assert (
        out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32) and out.shape == ids.shape
    )
    rtol, atol = TOL[dtype]["value"]
    np.testing.assert_allclose(to_np(out), cegppo.token_log_probs(zr, ids), rtol=rtol, atol=atol)
    out.backward(torch.tensor(g).to(out.dtype))
    assert x.grad.dtype == dtype
    rtol, atol = TOL[dtype]["grad"]
    np.testing.assert_allclose(to_np(x.grad), cegppo.token_log_probs_grad(zr, ids, g), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(case=heads())
def test_S11_entropy_value_and_grad(dtype, case):
    z, _, g, _, chunk = case
    x, zr = _tensor(z, dtype)
    out = cg.entropy(x, chunk_size=chunk)
    rtol, atol = TOL[dtype]["value"]
    np.testing.assert_allclose(to_np(out), cegppo.entropy(zr), rtol=rtol, atol=atol)
    out.backward(torch.tensor(g).to(out.dtype))
    assert x.grad.dtype == dtype and not torch.isnan(x.grad).any()
    rtol, atol = TOL[dtype]["grad"]
    np.testing.assert_allclose(to_np(x.grad), cegppo.entropy_grad(zr, g), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@given(case=heads())
def test_S11_entropy_change_first_order_matches_reference(dtype, case):
    z, ids, _, w, chunk = case
    x, zr = _tensor(z, dtype)
    out = cg.entropy_change_first_order(x, torch.tensor(ids), torch.tensor(w), chunk_size=chunk)
    assert not out.requires_grad
    rtol, atol = TOL[dtype]["value"]
    np.testing.assert_allclose(
        to_np(out), cegppo.entropy_change_first_order(zr, ids, w), rtol=rtol, atol=atol * 10
    )


def test_S11_entropy_change_is_first_order_exact():
    """A small real step dz = eta (e_a - pi) changes H by dH + O(eta^2)."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(6, 50, generator=gen, dtype=torch.float64) * 2
    ids = torch.randint(0, 50, (6,), generator=gen)
    w = torch.randn(6, generator=gen, dtype=torch.float64)
    dh = cg.entropy_change_first_order(z, ids, w)
    pi = torch.softmax(z, -1)
    for eta in (1e-4, 1e-5):
        step = eta * w[:, None] * (torch.nn.functional.one_hot(ids, 50).double() - pi)
        actual = cg.entropy(z + step) - cg.entropy(z)
        torch.testing.assert_close(actual, eta * dh, rtol=0, atol=50 * eta**2)


class _Allocations(TorchDispatchMode):
    """Records (dtype, numel) of every new storage an op produces (outputs aliasing an input are views)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[torch.dtype, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat_in = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        flat_in += [t for a in args if isinstance(a, (tuple, list)) for t in a if isinstance(t, torch.Tensor)]
        inputs = {t.untyped_storage().data_ptr() for t in flat_in}
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor) and o.untyped_storage().data_ptr() not in inputs:
                self.sizes.append((o.dtype, o.untyped_storage().nbytes() // o.element_size()))
        return out


@pytest.mark.parametrize("fn", ["token_log_probs", "entropy"])
def test_S11_chunking_never_makes_a_full_fp32_copy(fn):
    """bf16 logits (N, V): no float32 tensor larger than one chunk in forward or backward; one bf16 gradient."""
    n, v, rows = 64, 1000, 8
    x = torch.randn(n, v, dtype=torch.bfloat16).requires_grad_()
    ids = torch.randint(0, v, (n,))
    rec = _Allocations()
    with rec:
        out = (
            cg.token_log_probs(x, ids, chunk_size=rows)
            if fn == "token_log_probs"
            else cg.entropy(x, chunk_size=rows)
        )
        out.backward(torch.ones_like(out))
    wide = [numel for dtype, numel in rec.sizes if dtype in (torch.float32, torch.float64)]
    assert wide and max(wide) <= rows * v, max(wide)
    full_bf16 = [numel for dtype, numel in rec.sizes if dtype == torch.bfloat16 and numel >= n * v]
    assert len(full_bf16) == 1  # the gradient buffer, allocated once in the logits' dtype
    assert x.grad.dtype == torch.bfloat16


def test_S11_default_chunk_is_bounded():
    """Without chunk_size, a chunk holds at most DEFAULT_CHUNK_ELEMENTS elements (at least one row)."""
    v = 1 << 20
    n = 40
    x = torch.zeros(n, v, dtype=torch.bfloat16)
    rec = _Allocations()
    with rec:
        cg.entropy(x)
    wide = [numel for dtype, numel in rec.sizes if dtype == torch.float32]
    assert max(wide) <= cg._logits.DEFAULT_CHUNK_ELEMENTS < n * v


def test_S11_errors():
    z = torch.zeros(2, 5)
    ids = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(TypeError, match="ids"):
        cg.token_log_probs(z, ids.float())
    with pytest.raises(ValueError, match="ids must have shape"):
        cg.token_log_probs(z, ids[:1])
    with pytest.raises(TypeError, match="logits"):
        cg.entropy(z.long())
    with pytest.raises(ValueError, match="logits must have shape"):
        cg.entropy(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="chunk_size"):
        cg.entropy(z, chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        cg.entropy(z, chunk_size=2.0)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 5\)"):
        cg.token_log_probs(z, ids + 5, validate=True)
    with pytest.raises(ValueError, match="weight must have shape"):
        cg.entropy_change_first_order(z, ids, torch.zeros(3))
    with pytest.raises(TypeError, match="logits"):
        cg.token_log_probs(z.numpy(), ids)
