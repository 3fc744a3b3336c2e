"""cegppo.torch only (spec S8.3, S9.6): normalizers as tensors, errors raised before any op is
dispatched, validate, integer masks, per-sample gradients under torch.func.vmap.

What every backend shares is tests/backends (per-token functions, metrics, dtype rules, all-masked
batches ...) and the conformance suite (`pytest tests/conformance --backend=torch`).
"""

from __future__ import annotations

import cegppo
import cegppo.torch as cg
import numpy as np
import pytest
import torch
from backend_cases import BAD_VALUE_CALLS
from torch.utils._python_dispatch import TorchDispatchMode
from torch_cases import to_np


def test_S8_3_global_counts_make_one_sum_all_reduce_over_the_group_given(tmp_path, monkeypatch):
    """In an initialised process group, global_counts reduces both counts with one SUM all_reduce over the
    `group` argument (the real collective of a one-rank gloo world, watched on its way through; the sum over
    several ranks is tests/torch/test_distributed.py's, whose ranks run in subprocesses)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        group = dist.new_group([0])
        real, calls = dist.all_reduce, []

        def watched(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
            calls.append((tensor.tolist(), op, group))
            return real(tensor, op=op, group=group, async_op=async_op)

        monkeypatch.setattr(dist, "all_reduce", watched)
        n_tok, n_seq = cg.global_counts(torch.tensor([[1, 1, 0], [0, 0, 0], [0, 1, 1]]), group=group)
    finally:
        dist.destroy_process_group()
    assert (n_tok.dtype, int(n_tok), int(n_seq)) == (torch.int64, 4, 2)
    assert calls == [([4, 2], dist.ReduceOp.SUM, group)]


class _RecordOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) or (
            isinstance(out, (tuple, list)) and any(isinstance(o, torch.Tensor) for o in out)
        ):
            self.ops.append(func)  # only ops producing tensors (not metadata queries like promote_types)
        return out


def _good():
    return torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)


def _numpy_args(args, kwargs):
    conv = [a.numpy() if isinstance(a, torch.Tensor) else a for a in args]
    return conv, kwargs


@pytest.mark.parametrize("name", sorted(BAD_VALUE_CALLS))
def test_S9_6_value_errors_as_reference_before_any_computation(name):
    """Same ValueError (type and message) as the reference, raised before any tensor op is dispatched."""
    cfg = cegppo.CEGPPOConfig()
    args, kwargs = BAD_VALUE_CALLS[name](*_good(), cfg)
    with pytest.raises(ValueError) as ref:
        cegppo.policy_loss(*_numpy_args(args, kwargs)[0], **kwargs)
    rec = _RecordOps()
    with rec, pytest.raises(ValueError) as got:
        cg.policy_loss(*args, **kwargs)
    assert str(got.value) == str(ref.value)
    assert rec.ops == [], rec.ops


def test_S9_6_non_tensor_inputs_are_type_errors():
    lp, olp, _, m = _good()
    with pytest.raises(TypeError, match="advantages"):
        cg.policy_loss(lp, olp, [[0.0] * 3] * 2, m, cegppo.CEGPPOConfig())


def test_S9_6_validate_checks_values_only_on_request():
    """validate=True rejects non-finite values at valid positions; by default nothing reads the data."""
    lp, olp, adv, m = _good()
    lp[0, 1] = float("nan")
    adv += 1.0  # (a NaN log-ratio with A = 0 has J = 0, as in the reference)
    cfg = cegppo.CEGPPOConfig()
    with pytest.raises(ValueError, match="log_prob holds non-finite"):
        cg.policy_loss(lp, olp, adv, m, cfg, validate=True)
    assert torch.isnan(cg.policy_loss(lp, olp, adv, m, cfg))
    m[0, 1] = False
    assert cg.policy_loss(lp, olp, adv, m, cfg, validate=True).item() == -1.0  # mean of -delta A = -1


def test_integer_mask_and_per_sequence_advantages():
    """An integer 0/1 mask is a bool mask; (B,) advantages broadcast over tokens."""
    cfg = cegppo.presets.ce_gppo_1p5b()
    rng = np.random.default_rng(3)
    lp = rng.normal(size=(4, 5))
    olp = lp + rng.normal(scale=0.4, size=(4, 5))
    adv = rng.normal(size=4)
    mask = rng.integers(0, 2, size=(4, 5))
    got = cg.policy_loss(torch.tensor(lp), torch.tensor(olp), torch.tensor(adv), torch.tensor(mask), cfg)
    np.testing.assert_allclose(
        to_np(got), cegppo.policy_loss(lp, olp, adv, mask, cfg), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("cfg", [cegppo.presets.ce_gppo_7b(), cegppo.presets.dual_clip_ppo()], ids=["ce_gppo_7b", "dual_clip"])
def test_per_sample_gradients_under_torch_func_vmap(cfg: cegppo.CEGPPOConfig) -> None:
    """torch.func.vmap(torch.func.grad(...)) over stacked batches (per-sample gradients, as in
    influence or gradient-noise studies) equals autograd batch by batch: the clipped tokens' custom
    autograd function has a vmap rule."""
    g = torch.Generator().manual_seed(0)
    n, b, t = 4, 3, 5
    olp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 2
    lps = olp + (torch.rand(n, b, t, generator=g, dtype=torch.float64) * 3 - 1.5)  # every region
    adv = torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) > 0.2

    def loss(lp: torch.Tensor) -> torch.Tensor:
        return cg.policy_loss(lp, olp, adv, mask, cfg)

    got_values = torch.func.vmap(loss)(lps)
    got_grads = torch.func.vmap(torch.func.grad(loss))(lps)
    for i in range(n):
        lp = lps[i].clone().requires_grad_(True)
        value = loss(lp)
        (grad,) = torch.autograd.grad(value, lp)
        assert float(got_values[i]) == float(value.detach())
        torch.testing.assert_close(got_grads[i], grad, rtol=0, atol=0)
    regions = cg.token_regions(lps[0], olp, adv, cfg)
    assert bool((regions.clip_low | regions.clip_high).any())  # the custom function is on the path
