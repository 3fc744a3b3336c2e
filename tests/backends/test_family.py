"""The gradient-preserving family (docs/spec.md S14) in cegppo.torch and cegppo.jax, against the NumPy reference.

Per backend and member (two-sided CISPO, TRL's capped CISPO, SAPO, GSPO): the per-token functions and
the batch loss equal the reference in value and gradient in float64 and float32, eagerly and under
`jit` (JAX; torch.compile once per member, in tests/torch's style, is left to those tests' budget:
torch's `jit` here is eager); masked garbage changes nothing; extreme log-ratios give the
reference's finite values; half inputs are computed in float32. CE-GPPO's row is its own API,
unchanged, which the last tests pin down.

Few examples per test (`EXAMPLES`): the arithmetic is elementwise and shared by both backends, and
tests/core/test_s14_family.py checks the reference itself at the profile's count.
"""

from __future__ import annotations

import functools
from typing import Any

import cegppo
import numpy as np
import pytest
from array_backends import NP_COMPUTE, Backend
from backend_cases import isclose_or_same_nonfinite
from hypothesis import given, settings
from hypothesis import strategies as st

EXAMPLES = 8
"""Hypothesis examples per test and parameter set (CI budget: the file adds < 10 s per backend)."""

MEMBERS = [
    cegppo.CISPOConfig(eps_low=0.2, eps_high=0.28),
    cegppo.CISPOCapConfig(cap=1.5),
    cegppo.SAPOConfig(tau_pos=1.0, tau_neg=1.05),
    cegppo.GSPOConfig(eps_low=0.05, eps_high=0.08),
]
"""One config per row of spec S14.1 beside CE-GPPO, with clip ranges the drawn log-ratios cross."""

TOL = {"float64": (1e-10, 1e-12), "float32": (1e-5, 1e-6)}
"""(rtol, atol) against the reference run in the same compute dtype on the same rounded inputs."""

AGGS = [None, *cegppo.AGG_MODES]
"""None is the member's paper aggregation (`FAMILY[type(cfg)].paper_agg`)."""

SHAPE = (5, 7)
"""The (B, T) of every fixed batch: the shape the JAX backend draws at, so that XLA compiles each program once."""

KINK_GAP = 1e-3
"""GSPO's gradient weight jumps (s to 0) where a row's log s crosses a clip bound: draws keep this far."""


def member_id(cfg: Any) -> str:
    return type(cfg).__name__.removesuffix("Config").lower()


def away_from_gspo_kinks(logr: np.ndarray, mask: np.ndarray, cfg: Any) -> np.ndarray:
    """`logr` with each row shifted so that its mean over the valid tokens (log s) is KINK_GAP from a bound."""
    if not isinstance(cfg, cegppo.GSPOConfig):
        return logr
    n = mask.sum(-1)
    log_s = np.where(mask, logr, 0).sum(-1) / np.maximum(n, 1)
    shift = np.zeros_like(log_s)
    for bound in (cfg.log_lower, cfg.log_upper):
        near = np.abs(log_s + shift - bound) < KINK_GAP
        shift = np.where(near, shift + np.where(log_s >= bound, 2, -2) * KINK_GAP, shift)
    return logr + shift[:, None]


def inputs(backend: Backend, case: dict[str, Any], dtype: str, cfg: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(log_prob, old_log_prob, advantages, mask) of `backend` in `dtype`, and the reference's: the same
    rounded values in the reference's compute dtype."""
    logr = away_from_gspo_kinks(case["logr"], case["mask"], cfg)
    arrays = [backend.asarray(x, dtype) for x in (case["log_prob"], case["log_prob"] - logr, case["advantages"])]
    ref = tuple(backend.to_np(x).astype(NP_COMPUTE[dtype]) for x in arrays)
    return (*arrays, backend.asarray(case["mask"])), (*ref, case["mask"])


def expected_token_grad(rlp: np.ndarray, rolp: np.ndarray, radv: np.ndarray, mask: np.ndarray, cfg: Any) -> np.ndarray:
    """d sum_t J_t / d log_prob = F A (0 where A = 0); GSPO's per-token functions zero masked positions first."""
    a = np.broadcast_to(radv[:, None], rlp.shape) if radv.ndim == 1 else radv
    if isinstance(cfg, cegppo.GSPOConfig):
        a = np.where(mask, a, 0)
    f = cegppo.family_grad_weight(rlp, rolp, radv, mask, cfg)
    return np.where(a == 0, 0, f * np.where(a == 0, 1, a))


@functools.cache
def jitted(backend: Backend, cfg: Any) -> Any:
    """The per-token J and F and the loss in the paper's aggregation with its gradient, as one jitted program
    per (backend, member): one compile per dtype instead of one per function (torch: eager)."""
    cg = backend.cg

    def outputs(lp: Any, olp: Any, adv: Any, mask: Any) -> dict[str, Any]:
        loss, grad = backend.value_and_grad(lambda x: cg.family_policy_loss(x, olp, adv, mask, cfg))(lp)
        return {"objective": cg.family_per_token_objective(lp, olp, adv, mask, cfg),
                "weight": cg.family_grad_weight(lp, olp, adv, mask, cfg), "loss": loss, "grad": grad}

    return backend.jit(outputs)


def eager(backend: Backend, cfg: Any, agg: str | None, args: tuple[Any, ...]) -> dict[str, Any]:
    """`jitted`'s outputs computed eagerly with the loss in aggregation `agg`, and two more: the gradient of
    sum_t J_t and the member's own per-token function (cispo_*, sapo_*, gspo_*), which is the family's."""
    cg, name = backend.cg, cegppo.FAMILY[type(cfg)].name
    lp, olp, adv, mask = args
    loss, grad = backend.value_and_grad(lambda x: cg.family_policy_loss(x, olp, adv, mask, cfg, agg))(lp)
    own = getattr(cg, f"{name}_per_token_objective")
    return {
        "objective": cg.family_per_token_objective(*args, cfg),
        "token_grad": backend.grad(lambda x: cg.family_per_token_objective(x, olp, adv, mask, cfg).sum())(lp),
        "weight": cg.family_grad_weight(*args, cfg),
        "own": own(*args, cfg) if name == "gspo" else own(lp, olp, adv, cfg),
        "loss": loss,
        "grad": grad,
    }


def check_outputs(backend: Backend, out: dict[str, Any], ref: tuple[Any, ...], cfg: Any, agg: str | None,
                  dtype: str) -> None:
    """`out` (from `jitted` or `eager`) equals the reference on `ref` in the compute dtype `dtype`."""
    rtol, atol = TOL[dtype]
    assert backend.dtype_name(out["objective"]) == dtype and backend.dtype_name(out["loss"]) == dtype
    assert tuple(out["loss"].shape) == () and not backend.carries_graph(out["weight"])
    want = {
        "objective": lambda: cegppo.family_per_token_objective(*ref, cfg),
        "token_grad": lambda: expected_token_grad(*ref, cfg),
        "weight": lambda: cegppo.family_grad_weight(*ref, cfg),
        "loss": lambda: cegppo.family_policy_loss(*ref, cfg, agg),
        "grad": lambda: cegppo.family_policy_loss_grad(*ref, cfg, agg),
    }
    for key in out.keys() & want.keys():
        np.testing.assert_allclose(backend.to_np(out[key]), want[key](), rtol=rtol, atol=atol, err_msg=key)
    if "own" in out:
        np.testing.assert_array_equal(backend.to_np(out["own"]), backend.to_np(out["objective"]))


EAGER_DTYPES = {"torch": ("float64", "float32"), "jax": ("float32",)}
"""The compute dtypes checked eagerly. JAX compiles every primitive per dtype when eager (~1.5 s per
member and dtype here); its float64 is checked under jit, where one compile covers a member."""


@pytest.mark.parametrize("cfg", MEMBERS, ids=member_id)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_S14_functions_match_reference_under_jit(backend: Backend, dtype: str, cfg: Any, data: Any) -> None:
    """Under jit (torch: eagerly), family_per_token_objective, family_grad_weight and family_policy_loss in
    the paper's aggregation (value and gradient) equal the reference."""
    case = data.draw(backend.policy_batches(logr_scale=1.0), label="case")
    args, ref = inputs(backend, case, dtype, cfg)
    check_outputs(backend, jitted(backend, cfg)(*args), ref, cfg, None, dtype)


@pytest.mark.parametrize("cfg", MEMBERS, ids=member_id)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_S14_S8_functions_match_reference_eagerly_in_every_aggregation(backend: Backend, cfg: Any,
                                                                       data: Any) -> None:
    """Eagerly, in every aggregation mode and each of `EAGER_DTYPES`, the loss (value and gradient), the
    per-token functions (value and gradient of their sum) and the member's own names equal the reference."""
    case = data.draw(backend.policy_batches(logr_scale=1.0), label="case")
    agg = data.draw(st.sampled_from(AGGS), label="agg")
    for dtype in EAGER_DTYPES[backend.name]:
        args, ref = inputs(backend, case, dtype, cfg)
        check_outputs(backend, eager(backend, cfg, agg, args), ref, cfg, agg, dtype)


def batch(seed: int) -> dict[str, np.ndarray]:
    """A float64 batch of SHAPE with full, empty and partly masked rows (log_prob, logr, advantages, mask)."""
    rng = np.random.default_rng(seed)
    mask = rng.random(SHAPE) < 0.6
    mask[0], mask[1] = True, False
    return {"log_prob": rng.uniform(-4, 0, SHAPE), "logr": rng.uniform(-0.6, 0.6, SHAPE),
            "advantages": rng.normal(size=SHAPE), "mask": mask}


def garbage_batch(backend: Backend, fill: float) -> tuple[Any, ...]:
    """`batch(14)` in float32 with `fill` at its masked positions in log_prob, old_log_prob and advantages."""
    case = batch(14)
    lp, olp, adv = (np.where(case["mask"], x, fill)
                    for x in (case["log_prob"], case["log_prob"] - case["logr"], case["advantages"]))
    return (*(backend.asarray(x, "float32") for x in (lp, olp, adv)), backend.asarray(case["mask"]))


@pytest.mark.parametrize("cfg", MEMBERS, ids=member_id)
def test_S9_3_masked_garbage_changes_nothing(backend: Backend, cfg: Any) -> None:
    """NaN or +-inf at masked positions gives the loss and gradient of zeros there (spec S9.3), in the
    paper's aggregation and token-sum: finite, and 0 at the masked positions (in float32, a dtype every backend runs eagerly)."""
    cg = backend.cg
    clean = garbage_batch(backend, 0.0)
    for agg in (None, "token-sum"):  # the aggregation itself is CE-GPPO's, whose garbage tests cover every mode
        def run(batch: tuple[Any, ...], agg: str | None = agg) -> Any:
            return backend.value_and_grad(lambda x: cg.family_policy_loss(x, *batch[1:], cfg, agg))(batch[0])

        want_loss, want_grad = (backend.to_np(out) for out in run(clean))
        assert np.isfinite(want_loss) and np.all(np.isfinite(want_grad))
        for fill in (float("nan"), float("inf"), float("-inf")):
            loss, grad = (backend.to_np(out) for out in run(garbage_batch(backend, fill)))
            np.testing.assert_array_equal(loss, want_loss, err_msg=f"agg={agg}, fill={fill}")
            np.testing.assert_array_equal(grad, want_grad, err_msg=f"agg={agg}, fill={fill}")
            assert np.all(grad[~backend.to_np(clean[3])] == 0)


EXTREME_LOGR = [-1e4, -104.0, 90.0, 710.0, 1e4]
"""Log-ratios whose ratio underflows (float32 below -103.3) or overflows (float32 above 88.7, float64
above 709.8) (spec S9.1, S9.2)."""


@pytest.mark.parametrize("cfg", MEMBERS, ids=member_id)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_S9_1_S9_2_extreme_log_ratios_match_reference(backend: Backend, dtype: str, cfg: Any) -> None:
    """At ratios that under- or overflow, value and gradient are the reference's, finite where it is finite
    (select, then exponentiate: no inf * 0 in a backward pass). Row r holds EXTREME_LOGR[r] at two tokens,
    one with A > 0 and one with A < 0, so that GSPO's row ratio s under- or overflows with it. Eagerly in
    `EAGER_DTYPES` (paper and token-sum aggregation), under jit otherwise (paper aggregation)."""
    cg = backend.cg
    case = batch(9)
    logr = np.concatenate([np.repeat(np.array(EXTREME_LOGR)[:, None], 2, axis=1), case["logr"][:, 2:]], axis=1)
    adv = np.concatenate([np.tile([1.0, -1.0], (SHAPE[0], 1)), case["advantages"][:, 2:]], axis=1)
    mask = np.ones(SHAPE, bool)
    args = (*(backend.asarray(x, dtype) for x in (case["log_prob"], case["log_prob"] - logr, adv)), backend.asarray(mask))
    ref = (*(backend.to_np(x).astype(NP_COMPUTE[dtype]) for x in args[:3]), mask)
    rtol, atol = TOL[dtype]
    for agg in (None, "token-sum") if dtype in EAGER_DTYPES[backend.name] else (None,):
        if dtype in EAGER_DTYPES[backend.name]:
            loss, grad = backend.value_and_grad(lambda x, agg=agg: cg.family_policy_loss(x, *args[1:], cfg, agg))(args[0])
        else:
            loss, grad = (jitted(backend, cfg)(*args)[key] for key in ("loss", "grad"))
        want_grad = cegppo.family_policy_loss_grad(*ref, cfg, agg)
        assert isclose_or_same_nonfinite(backend.to_np(loss), cegppo.family_policy_loss(*ref, cfg, agg), rtol, atol)
        assert isclose_or_same_nonfinite(backend.to_np(grad), want_grad, rtol, atol), (backend.to_np(grad), want_grad)


@pytest.mark.parametrize("cfg", MEMBERS, ids=member_id)
@pytest.mark.parametrize("half", ["bfloat16", "float16"])
def test_S9_5_half_inputs_are_computed_in_float32(backend: Backend, half: str, cfg: Any) -> None:
    """bf16 / fp16 inputs give a float32 loss and per-token values equal to the reference's on the rounded
    inputs in float32, and a gradient in the input's dtype (autodiff rounds it back)."""
    cg = backend.cg
    args, ref = inputs(backend, batch(5), half, cfg)
    rtol, atol = TOL["float32"]
    loss, grad = backend.value_and_grad(lambda x: cg.family_policy_loss(x, *args[1:], cfg))(args[0])
    assert backend.dtype_name(loss) == "float32" and backend.dtype_name(grad) == half
    np.testing.assert_allclose(backend.to_np(loss), cegppo.family_policy_loss(*ref, cfg), rtol=rtol, atol=atol)
    # The gradient is float32's, rounded to the half dtype once.
    want = backend.to_np(backend.asarray(cegppo.family_policy_loss_grad(*ref, cfg), half))
    np.testing.assert_allclose(backend.to_np(grad), want, rtol=0, atol=0)
    objective = cg.family_per_token_objective(*args, cfg)
    assert backend.dtype_name(objective) == "float32"
    np.testing.assert_allclose(backend.to_np(objective), cegppo.family_per_token_objective(*ref, cfg),
                               rtol=rtol, atol=atol)


def test_S14_1_family_table_rows_are_the_references_with_the_backends_functions(backend: Backend) -> None:
    """FAMILY has the reference's config types, names and paper aggregations; CE-GPPO's row is the backend's
    own per-token functions, and family_policy_loss of a CEGPPOConfig is its policy_loss, bit for bit."""
    cg = backend.cg
    assert list(cg.FAMILY) == list(cegppo.FAMILY)
    for t, row in cg.FAMILY.items():
        assert isinstance(row, cegppo.FamilyMember)
        assert (row.name, row.paper_agg) == (cegppo.FAMILY[t].name, cegppo.FAMILY[t].paper_agg)
    dtype = EAGER_DTYPES[backend.name][0]
    args, ref = inputs(backend, batch(1), dtype, None)
    cfg = cegppo.presets.ce_gppo_official()
    # The family's default aggregation for CE-GPPO is policy_loss's default (token-mean).
    family = backend.value_and_grad(lambda x: cg.family_policy_loss(x, *args[1:], cfg))(args[0])
    ce_gppo = backend.value_and_grad(lambda x: cg.policy_loss(x, *args[1:], cfg))(args[0])
    for got, want in zip(family, ce_gppo, strict=True):
        np.testing.assert_array_equal(backend.to_np(got), backend.to_np(want))
    np.testing.assert_array_equal(backend.to_np(cg.FAMILY[cegppo.CEGPPOConfig].objective(*args, cfg)),
                                  backend.to_np(cg.per_token_objective(*args[:3], cfg)))
    log_s = cg.gspo_sequence_log_ratio(*args[:2], args[3])
    assert backend.dtype_name(log_s) == dtype and tuple(log_s.shape) == (SHAPE[0],)
    np.testing.assert_allclose(backend.to_np(log_s), cegppo.gspo_sequence_log_ratio(*ref[:2], ref[3]), rtol=TOL[dtype][0],
                               atol=TOL[dtype][1])


def test_S14_config_types_are_checked_by_name(backend: Backend) -> None:
    """A config of another member (or none) is a TypeError naming what was expected, as in the reference."""
    cg = backend.cg
    args = tuple(backend.asarray(np.zeros((2, 3))) for _ in range(3))
    mask = backend.asarray(np.ones((2, 3), bool))
    with pytest.raises(TypeError, match=r"cfg must be a cegppo\.SAPOConfig, got CISPOConfig"):
        cg.sapo_per_token_objective(*args, cegppo.CISPOConfig())
    with pytest.raises(TypeError, match=r"cfg must be a cegppo\.GSPOConfig, got SAPOConfig"):
        cg.gspo_grad_weight(*args, mask, cegppo.SAPOConfig())
    with pytest.raises(TypeError, match=r"cfg must be one of cegppo\.\{CEGPPOConfig, .*got dict"):
        cg.family_policy_loss(*args, mask, {})


METRIC_MEMBERS = [*MEMBERS, cegppo.presets.ce_gppo_official()]
"""Every row's metrics, CE-GPPO's with dual clip (whose metrics must stay `policy_metrics`')."""


@pytest.mark.parametrize("cfg", METRIC_MEMBERS, ids=member_id)
def test_S10_S14_family_metrics_match_reference_eagerly_and_under_jit(backend: Backend, cfg: Any) -> None:
    """family_metrics (eager, and under jit: torch eager) equals the reference's in float32 with NaN at masked
    positions: METRIC_KEYS (in order when eager), the member's region fractions and gradient weight, the token ratio's
    statistics; the table's `regions` are the reference's on the valid tokens; for a CEGPPOConfig it is
    the backend's policy_metrics bit for bit."""
    cg = backend.cg
    case = batch(21)
    args, ref = inputs(backend, case, "float32", cfg)
    dirty = (backend.asarray(np.where(case["mask"], backend.to_np(args[0]), np.nan), "float32"), *args[1:])
    want = cegppo.family_metrics(*ref, cfg)
    if not isinstance(cfg, cegppo.CEGPPOConfig):  # the batch crosses the member's clip bounds
        assert float(want["clip_frac"]) > 0 or isinstance(cfg, cegppo.SAPOConfig)
    rtol, atol = TOL["float32"]
    assert list(cg.family_metrics(*dirty, cfg)) == list(cegppo.METRIC_KEYS)
    for run in (lambda *a: cg.family_metrics(*a, cfg), backend.jit(lambda *a: cg.family_metrics(*a, cfg))):
        got = run(*dirty)
        assert sorted(got) == sorted(cegppo.METRIC_KEYS)  # jax.jit returns a dict's keys sorted
        for key, value in got.items():
            assert backend.dtype_name(value) == "float32" and not backend.carries_graph(value)
            np.testing.assert_allclose(backend.to_np(value), want[key], rtol=rtol, atol=atol, err_msg=key)
    mask = case["mask"]
    for got_region, want_region in zip(cg.FAMILY[type(cfg)].regions(*dirty, cfg),
                                       cegppo.FAMILY[type(cfg)].regions(*ref, cfg), strict=True):
        np.testing.assert_array_equal(backend.to_np(got_region) & mask, want_region & mask)
    if isinstance(cfg, cegppo.CEGPPOConfig):
        same = cg.policy_metrics(*dirty, cfg)
        for key, value in cg.family_metrics(*dirty, cfg).items():
            np.testing.assert_array_equal(backend.to_np(value), backend.to_np(same[key]), err_msg=key)
