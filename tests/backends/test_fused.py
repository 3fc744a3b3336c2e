"""The fused LM-head loss of cegppo.torch and cegppo.jax on empty batches (spec S8.4, S9.4, S11).

Its loss, metrics and gradients against the float64 unfused path are S11.1 properties of the
conformance suite; chunking, half precision, memory and the autograd contract are per framework
(tests/torch/test_fused.py, tests/jax/test_fused.py)."""

from __future__ import annotations

import cegppo
import numpy as np
import pytest
from array_backends import Backend


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
@pytest.mark.parametrize("shape", [(2, 3), (0, 3), (2, 0)], ids=["all-masked", "B=0", "T=0"])
def test_empty_batch_is_zero_not_nan(backend: Backend, agg: str, shape: tuple[int, int]) -> None:
    """No valid token gives loss 0, metrics 0 and zero (not NaN) gradients for hidden, weight and bias."""
    b, t = shape
    cfg, arr = cegppo.presets.ce_gppo_official(), backend.asarray
    rest = [arr(np.full((b, t), -100)), arr(np.full((b, t), np.nan)), arr(np.ones((b, t))), arr(np.zeros((b, t), bool))]

    def loss(hidden: object, weight: object, bias: object) -> object:
        return backend.cg.fused_linear_policy_loss(hidden, weight, *rest, cfg, bias=bias, agg=agg, entropy_coef=0.1)

    rng = np.random.default_rng(0)
    params = [arr(np.full((b, t, 4), np.nan)), arr(rng.normal(size=(6, 4))), arr(rng.normal(size=6))]
    (value, metrics), grads = backend.jit(backend.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(*params)
    assert float(value) == 0.0
    assert all(float(v) == 0.0 for v in metrics.values()), metrics
    for g in grads:
        g = backend.to_np(g)
        assert not np.any(np.isnan(g)) and not np.any(g)
