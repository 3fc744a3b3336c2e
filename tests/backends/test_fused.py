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


FAMILY_CONFIGS = [
    cegppo.CISPOConfig(eps_low=0.2, eps_high=0.28),
    cegppo.CISPOCapConfig(cap=1.1),
    cegppo.SAPOConfig(),
    cegppo.GSPOConfig(eps_low=0.05, eps_high=0.05),
]
"""Every row of spec S14.1 beside CE-GPPO (whose fused head the S11.1 properties of the conformance suite
check), with clip ranges that `family_case`'s log-ratios cross."""


def family_case() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A float64 head (B, T, H, V) = (3, 5, 4, 11) with garbage at masked positions, and the unfused
    float64 log-probs: old_log_prob is them moved by N(0, 0.3), so that tokens (and GSPO rows) fall on
    both sides of every clip bound."""
    rng = np.random.default_rng(7)
    b, t, h, v = 3, 5, 4, 11
    case = {"hidden": rng.normal(size=(b, t, h)), "weight": 0.5 * rng.normal(size=(v, h)),
            "bias": 0.1 * rng.normal(size=v), "token_ids": rng.integers(0, v, (b, t)),
            "advantages": rng.normal(size=(b, t)), "mask": rng.random((b, t)) < 0.75}
    case["mask"][1, :2] = False
    lp = cegppo.token_log_probs((case["hidden"] @ case["weight"].T + case["bias"]) / 0.8, case["token_ids"])
    case["old_log_prob"] = lp + rng.normal(0, 0.3, (b, t))
    m = case["mask"]
    case["hidden"] = np.where(m[..., None], case["hidden"], np.nan)
    case["token_ids"] = np.where(m, case["token_ids"], -100)
    case["old_log_prob"] = np.where(m, case["old_log_prob"], np.inf)
    return case, lp


def member_name(cfg: object) -> str:
    return type(cfg).__name__.removesuffix("Config").lower()


@pytest.mark.parametrize("cfg", FAMILY_CONFIGS, ids=member_name)
def test_S11_1_S14_fused_head_of_every_member_equals_the_unfused_loss(backend: Backend, cfg: object) -> None:
    """For every family member in its paper aggregation (`agg=None`), the fused head (eagerly in torch, under
    jit in JAX, whose eager call tests/jax/test_fused.py checks against the jitted one), in chunks of 2 rows that cut GSPO's rows, gives the float64 reference's value, metrics
    (the member's regions) and gradients w.r.t. hidden, weight and bias; and the backend's unfused
    composition (full logits -> token_log_probs / entropy -> family_policy_loss, by autodiff, jitted)
    gives the same value and gradients. The aggregation modes themselves are CE-GPPO's, checked by
    the S11.1 properties of the conformance suite."""
    case, _ = family_case()
    agg = None
    opts = {"temperature": 0.8, "entropy_coef": 0.01, "agg": agg}
    head = {k: case[k] for k in ("token_ids", "old_log_prob", "advantages", "mask")}
    want_value, want_metrics = cegppo.fused_linear_policy_loss(case["hidden"], case["weight"], *head.values(), cfg,
                                                               bias=case["bias"], **opts)
    want_grads = cegppo.fused_linear_policy_loss_grad(case["hidden"], case["weight"], *head.values(), cfg,
                                                      bias=case["bias"], **opts)
    if not isinstance(cfg, cegppo.SAPOConfig):
        assert float(want_metrics["clip_frac"]) > 0  # the case crosses the member's clip bounds
    cg, arr = backend.cg, backend.asarray
    rest = [arr(case[k]) for k in ("token_ids", "old_log_prob", "advantages", "mask")]
    params = [arr(case[k]) for k in ("hidden", "weight", "bias")]

    def fused(hidden: object, weight: object, bias: object) -> object:
        return cg.fused_linear_policy_loss(hidden, weight, *rest, cfg, bias=bias, chunk_size=2, **opts)

    def unfused(hidden: object, weight: object, bias: object) -> object:
        m = rest[3]
        logits = (hidden @ weight.T + bias) / opts["temperature"]
        ids = arr(np.where(case["mask"], case["token_ids"], 0))
        lp = cg.token_log_probs(logits, ids)
        paper = cegppo.FAMILY[type(cfg)].paper_agg if agg is None else agg
        return (cg.family_policy_loss(lp, rest[1], rest[2], m, cfg, agg)
                - opts["entropy_coef"] * cg.aggregate_loss(cg.entropy(logits), m, paper))

    tol = {"rtol": 1e-9, "atol": 1e-12}
    (value, metrics), grads = backend.jit(backend.value_and_grad(fused, argnums=(0, 1, 2), has_aux=True))(*params)
    np.testing.assert_allclose(backend.to_np(value), want_value, **tol)
    assert set(metrics) == set(cegppo.FUSED_METRIC_KEYS)
    for key, got in metrics.items():
        np.testing.assert_allclose(backend.to_np(got), want_metrics[key], **tol, err_msg=key)
    for name, got in zip(("hidden", "weight", "bias"), grads, strict=True):
        np.testing.assert_allclose(backend.to_np(got), want_grads[name], **tol, err_msg=name)
    clean_hidden = arr(np.where(case["mask"][..., None], case["hidden"], 0.0))  # the unfused path reads every row
    value, grads = backend.jit(backend.value_and_grad(unfused, argnums=(0, 1, 2)))(clean_hidden, *params[1:])
    np.testing.assert_allclose(backend.to_np(value), want_value, **tol)
    for name, got in zip(("hidden", "weight", "bias"), grads, strict=True):
        np.testing.assert_allclose(backend.to_np(got), want_grads[name], **tol, err_msg=name)
