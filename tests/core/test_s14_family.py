"""Reference self-checks for docs/spec.md S14: the gradient-preserving family (CISPO, SAPO, GSPO).

Test names carry the clause they check. Values and gradient weights are compared with direct
formulas written here with Python floats in ratio space (no code shared with `cegppo`); gradients
with central differences in float64. Where a member's value holds a stop-gradient (CISPO's sg(w),
GSPO-token's sg(s)) the differenced function freezes it at the drawn point, as the CE-GPPO checks
of S4 do; SAPO has none, and GSPO with one advantage per sequence is also checked against its
sequence objective, which has none either. Draws keep log-ratios (GSPO: row log-ratios) at least
KINK_GAP away from every kink.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import cegppo
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from _core_strategies import AGG_MODES, KINK_GAP, central_difference
from hypothesis import given
from hypothesis import strategies as st

REL = 1e-12  # direct float64 formulas: value and gradient weight
FD_RTOL = 1e-6  # central differences with h = 1e-6 on a function smooth to KINK_GAP = 1e-3
SAPO_C = 0.8954864093886058  # max_x x sech^2(x / 2), at x tanh(x / 2) = 1 (spec S14.3)


# ---------------------------------------------------------------- strategies


@dataclass
class FamilyBatch:
    """One drawn float64 batch for a family member (a copy-pasteable reproducer)."""

    log_prob: np.ndarray
    old_log_prob: np.ndarray
    advantages: np.ndarray
    mask: np.ndarray
    cfg: Any

    def __repr__(self) -> str:
        np.set_printoptions(precision=17)
        return (
            f"FamilyBatch(log_prob=np.{self.log_prob!r}, old_log_prob=np.{self.old_log_prob!r}, "
            f"advantages=np.{self.advantages!r}, mask=np.{self.mask!r}, cfg=cegppo.{self.cfg!r})"
        )

    def args(self) -> tuple[Any, ...]:
        return self.log_prob, self.old_log_prob, self.advantages, self.mask, self.cfg

    @property
    def adv2d(self) -> np.ndarray:
        a = self.advantages
        return np.broadcast_to(a[:, None], self.mask.shape) if a.ndim == 1 else a


_ADVANTAGE = st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]) | st.floats(-3.0, 3.0).map(
    lambda x: 0.0 if abs(x) < 1e-3 else x
)


def cispo_configs() -> st.SearchStrategy[Any]:
    two_sided = st.builds(cegppo.CISPOConfig, eps_low=st.floats(0.05, 1.5), eps_high=st.floats(0.05, 2.0))
    return two_sided | st.builds(cegppo.CISPOCapConfig, cap=st.floats(0.3, 6.0))


def sapo_configs() -> st.SearchStrategy[cegppo.SAPOConfig]:
    return st.builds(cegppo.SAPOConfig, tau_pos=st.floats(0.1, 8.0), tau_neg=st.floats(0.1, 8.0))


def gspo_configs() -> st.SearchStrategy[cegppo.GSPOConfig]:
    # Wide enough for three KINK_GAP-shrunk bands; the paper's 3e-4 / 4e-4 has its own checks.
    return st.builds(cegppo.GSPOConfig, eps_low=st.floats(0.01, 0.5), eps_high=st.floats(0.01, 0.8))


def _bands(kinks: list[float]) -> list[tuple[float, float]]:
    """Open log-ratio bands between sorted kinks, within [-3, 3] around them, shrunk by KINK_GAP."""
    edges = [min([-3.0, *kinks]) - 1.0, *sorted(kinks), max([3.0, *kinks]) + 1.0]
    return [(lo + KINK_GAP, hi - KINK_GAP) for lo, hi in itertools.pairwise(edges) if hi - lo > 2 * KINK_GAP]


def _kinks(cfg: Any) -> list[float]:
    if isinstance(cfg, (cegppo.CISPOConfig, cegppo.CISPOCapConfig)):
        return [math.log(b) for b in (cfg.lower, cfg.upper) if b > 0]
    if isinstance(cfg, cegppo.GSPOConfig):
        return [math.log1p(-cfg.eps_low), math.log1p(cfg.eps_high)]
    return []  # SAPO is smooth


@st.composite
def family_batches(draw: st.DrawFn, cfgs: st.SearchStrategy[Any], *, max_b: int = 3, max_t: int = 4,
                   holes: bool = True, per_sequence: bool | None = None) -> FamilyBatch:
    """A float64 batch whose log-ratios (GSPO: row log-ratios log s) avoid the member's kinks by KINK_GAP."""
    cfg = draw(cfgs, label="cfg")
    b = draw(st.integers(1, max_b), label="B")
    t = draw(st.integers(1, max_t), label="T")
    mask = draw(hnp.arrays(np.bool_, (b, t)), label="mask") if holes else np.ones((b, t), bool)
    bands = _bands(_kinks(cfg))
    which = draw(hnp.arrays(np.int64, (b, t), elements=st.integers(0, len(bands) - 1)), label="band")
    where = draw(hnp.arrays(np.float64, (b, t), elements=st.floats(0.0, 1.0)), label="position_in_band")
    lo = np.array([bands[k][0] for k in which.ravel()]).reshape(b, t)
    hi = np.array([bands[k][1] for k in which.ravel()]).reshape(b, t)
    logr = lo + where * (hi - lo)
    if isinstance(cfg, cegppo.GSPOConfig):
        # Row i's log s is the band value of its first token; the others spread around it and the
        # spread is re-centred over the valid tokens, so the row mean is exactly that value.
        spread = draw(hnp.arrays(np.float64, (b, t), elements=st.floats(-1.0, 1.0)), label="token_spread")
        n = np.maximum(mask.sum(-1, keepdims=True), 1)
        centred = spread - np.where(mask, spread, 0).sum(-1, keepdims=True) / n
        logr = logr[:, :1] + centred
    old = draw(hnp.arrays(np.float64, (b, t), elements=st.floats(-6.0, -0.01)), label="old_log_prob")
    per_seq = draw(st.booleans(), label="per_sequence") if per_sequence is None else per_sequence
    adv = draw(hnp.arrays(np.float64, (b,) if per_seq else (b, t), elements=_ADVANTAGE), label="advantages")
    return FamilyBatch(old + logr, old, adv, mask, cfg)


MEMBERS = {"cispo": cispo_configs(), "sapo": sapo_configs(), "gspo": gspo_configs()}


# ---------------------------------------------------------------- direct formulas (ratio space, Python floats)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _row_ratios(b: FamilyBatch) -> list[float]:
    """s_i: geometric mean of the valid token ratios, by a loop (1 for a row with none)."""
    out = []
    for i in range(b.mask.shape[0]):
        logs = [b.log_prob[i, t] - b.old_log_prob[i, t] for t in range(b.mask.shape[1]) if b.mask[i, t]]
        out.append(math.exp(sum(logs) / len(logs)) if logs else 1.0)
    return out


def direct_j_and_f(b: FamilyBatch) -> tuple[np.ndarray, np.ndarray]:
    """(J, F) at the valid tokens of `b` (0 elsewhere), from the formulas of S14.2-S14.4."""
    cfg, adv = b.cfg, b.adv2d
    s_rows = _row_ratios(b) if isinstance(cfg, cegppo.GSPOConfig) else None
    j, f = np.zeros(b.mask.shape), np.zeros(b.mask.shape)
    for i, t in zip(*np.nonzero(b.mask), strict=True):
        a, lp = float(adv[i, t]), float(b.log_prob[i, t])
        r = math.exp(lp - b.old_log_prob[i, t])
        if isinstance(cfg, (cegppo.CISPOConfig, cegppo.CISPOCapConfig)):
            w = min(max(r, cfg.lower), cfg.upper)
            j[i, t], f[i, t] = w * a * lp, w
        elif isinstance(cfg, cegppo.SAPOConfig):
            tau = cfg.tau_pos if a > 0 else cfg.tau_neg
            z = tau * (r - 1.0)
            j[i, t], f[i, t] = 4.0 / tau * _sigmoid(z) * a, 4.0 * _sigmoid(z) * _sigmoid(-z) * r
        else:
            s = s_rows[i]
            clipped = (a < 0 and s < 1 - cfg.eps_low) or (a > 0 and s > 1 + cfg.eps_high)
            j[i, t] = min(s * a, min(max(s, 1 - cfg.eps_low), 1 + cfg.eps_high) * a)
            f[i, t] = 0.0 if clipped else s
    return j, f


def _masked(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, x, 0.0)


# ---------------------------------------------------------------- S14.1 the table


@given(data=st.data())
def test_S14_1_ce_gppo_row_is_policy_loss_unchanged(data: st.DataObject) -> None:
    """The CE-GPPO row of the table is `policy_loss` / `grad_weight` itself, bit for bit."""
    cfg = data.draw(st.sampled_from([cegppo.presets.get(n) for n in ("ppo", "dapo", "gppo", "ce_gppo_official")]))
    b = data.draw(family_batches(st.just(cfg)), label="batch")
    lp, olp, adv = b.log_prob, b.old_log_prob, b.advantages
    for agg in AGG_MODES:
        assert np.array_equal(cegppo.family_policy_loss(*b.args(), agg), cegppo.policy_loss(*b.args(), agg))
        assert np.array_equal(cegppo.family_policy_loss_grad(*b.args(), agg), cegppo.policy_loss_grad(*b.args(), agg))
    assert np.array_equal(cegppo.family_grad_weight(*b.args()), cegppo.grad_weight(lp, olp, adv, cfg))
    assert np.array_equal(cegppo.family_per_token_objective(*b.args()), cegppo.per_token_objective(lp, olp, adv, cfg))


def test_S14_1_table_rows_and_paper_aggregations() -> None:
    rows = {cfg_type.__name__: (m.name, m.paper_agg) for cfg_type, m in cegppo.FAMILY.items()}
    assert rows == {
        "CEGPPOConfig": ("ce_gppo", "token-mean"),
        "CISPOConfig": ("cispo", "token-mean"),
        "CISPOCapConfig": ("cispo", "token-mean"),
        "SAPOConfig": ("sapo", "seq-mean-token-mean"),
        "GSPOConfig": ("gspo", "seq-mean-token-mean"),
    }


@pytest.mark.parametrize("member", MEMBERS)
@given(data=st.data())
def test_S14_1_default_aggregation_is_the_papers(member: str, data: st.DataObject) -> None:
    b = data.draw(family_batches(MEMBERS[member]), label="batch")
    paper = cegppo.FAMILY[type(b.cfg)].paper_agg
    assert np.array_equal(cegppo.family_policy_loss(*b.args()), cegppo.family_policy_loss(*b.args(), paper))
    assert np.array_equal(cegppo.family_policy_loss_grad(*b.args()), cegppo.family_policy_loss_grad(*b.args(), paper))


@pytest.mark.parametrize("member", MEMBERS)
@given(data=st.data())
def test_S14_1_loss_and_gradient_are_the_aggregated_direct_formulas(member: str, data: st.DataObject) -> None:
    """loss = sum_t c_t (-J_t) and d loss / d log_prob_t = -c_t F_t A_t, with J and F from the direct formulas."""
    b = data.draw(family_batches(MEMBERS[member]), label="batch")
    j, f = direct_j_and_f(b)
    for agg in AGG_MODES:
        c = cegppo.aggregation_weights(b.mask, agg)
        loss = float(cegppo.family_policy_loss(*b.args(), agg))
        want = float(np.sum(c * -j))
        assert abs(loss - want) <= REL * (float(np.sum(np.abs(c * j))) + 1e-300), (agg, loss, want)
        g = cegppo.family_policy_loss_grad(*b.args(), agg)
        np.testing.assert_allclose(g, -c * f * b.adv2d, rtol=REL, atol=0, err_msg=agg)


@pytest.mark.parametrize("member", MEMBERS)
@given(data=st.data())
def test_S14_1_masked_garbage_changes_nothing(member: str, data: st.DataObject) -> None:
    """Masked positions may hold NaN and +-inf (spec S9.3); for GSPO they stay out of the row mean too."""
    b = data.draw(family_batches(MEMBERS[member], per_sequence=False), label="batch")
    junk = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e300]), label="junk")
    dirty = FamilyBatch(*(np.where(b.mask, x, junk) for x in (b.log_prob, b.old_log_prob, b.advantages)),
                        b.mask, b.cfg)
    for agg in AGG_MODES:
        assert np.array_equal(cegppo.family_policy_loss(*dirty.args(), agg), cegppo.family_policy_loss(*b.args(), agg))
        assert np.array_equal(cegppo.family_policy_loss_grad(*dirty.args(), agg),
                              cegppo.family_policy_loss_grad(*b.args(), agg))


@pytest.mark.parametrize("cfg", [cegppo.CISPOConfig(), cegppo.CISPOCapConfig(), cegppo.SAPOConfig(),
                                 cegppo.GSPOConfig(), cegppo.presets.ce_gppo_official()], ids=type)
def test_S14_1_on_policy_weight_is_one_and_empty_batch_is_zero(cfg: Any) -> None:
    """At delta = 1 every row of the table gives F = 1: the plain policy gradient (spec S14.1)."""
    lp = np.log(np.array([[0.3, 0.6, 0.05], [0.9, 0.2, 0.5]]))
    adv = np.array([[1.0, -2.0, 0.5], [-1.0, 1.0, 3.0]])
    mask = np.ones(lp.shape, bool)
    np.testing.assert_array_equal(cegppo.family_grad_weight(lp, lp, adv, mask, cfg), np.ones(lp.shape))
    empty = np.zeros(lp.shape, bool)
    for agg in AGG_MODES:
        assert cegppo.family_policy_loss(lp, lp, adv, empty, cfg, agg) == 0
        assert np.array_equal(cegppo.family_policy_loss_grad(lp, lp, adv, empty, cfg, agg), np.zeros(lp.shape))


def test_S14_1_a_config_outside_the_table_is_a_type_error() -> None:
    lp = np.zeros((1, 2))
    with pytest.raises(TypeError, match=r"^cfg must be one of cegppo\.\{CEGPPOConfig, .*GSPOConfig\}, got dict$"):
        cegppo.family_policy_loss(lp, lp, np.ones(1), np.ones((1, 2), bool), {"eps_low": 0.2})
    for fn, cfg in ((cegppo.cispo_grad_weight, cegppo.SAPOConfig()), (cegppo.sapo_grad_weight, cegppo.GSPOConfig()),
                    (cegppo.cispo_per_token_objective, cegppo.CEGPPOConfig())):
        with pytest.raises(TypeError, match=r"^cfg must be a cegppo\."):
            fn(lp, lp, np.ones(1), cfg)
    with pytest.raises(TypeError, match=r"^cfg must be a cegppo\.GSPOConfig"):
        cegppo.gspo_grad_weight(lp, lp, np.ones(1), np.ones((1, 2), bool), cegppo.SAPOConfig())


# ---------------------------------------------------------------- S14.2 CISPO


@given(data=st.data())
def test_S14_2_cispo_gradient_matches_central_differences(data: st.DataObject) -> None:
    """Central differences of the loss with sg(w) frozen at the drawn point x0.

    The loss is sum_t c_t (-w_t(x) A_t x_t); adding sum_t c_t (w_t(x) - w_t(x0)) A_t x_t, with w
    written here in ratio space, leaves sum_t c_t (-w_t(x0) A_t x_t), whose derivative is the
    claimed -c_t F_t A_t.
    """
    b = data.draw(family_batches(cispo_configs()), label="batch")
    agg = data.draw(st.sampled_from(AGG_MODES), label="agg")
    x0, olp, a = b.log_prob, b.old_log_prob, b.adv2d
    c = cegppo.aggregation_weights(b.mask, agg)

    def weight(x: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(np.exp(x - olp), b.cfg.lower), b.cfg.upper)

    def f(x: np.ndarray) -> float:
        value = float(cegppo.family_policy_loss(x, olp, b.advantages, b.mask, b.cfg, agg))
        return value + float(np.sum(_masked(c * (weight(x) - weight(x0)) * a * x, b.mask)))

    g = cegppo.family_policy_loss_grad(*b.args(), agg)
    np.testing.assert_allclose(g, central_difference(f, x0), rtol=FD_RTOL, atol=FD_RTOL * (np.max(np.abs(g)) + 1.0))


@given(family_batches(cispo_configs(), holes=False))
def test_S14_2_cispo_every_token_keeps_a_bounded_gradient(b: FamilyBatch) -> None:
    f = cegppo.cispo_grad_weight(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    assert np.all(f >= b.cfg.lower) and np.all(f <= b.cfg.upper)
    assert np.all(f > 0), "no token's gradient is dropped (the ratio of a finite log-ratio is > 0)"
    j = cegppo.cispo_per_token_objective(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    np.testing.assert_allclose(j, f * b.adv2d * b.log_prob, rtol=1e-15, atol=0)


def test_S14_2_cispo_without_bounds_is_the_ratio_weighted_policy_gradient() -> None:
    """eps_low >= 1 and eps_high -> inf: F = delta, CE-GPPO's `inside` weight (REINFORCE with the ratio)."""
    logr = np.array([[-30.0, -2.0, -0.1, 0.0, 0.3, 4.0]])
    old = np.full_like(logr, -1.0)
    adv = np.array([[1.0, -1.0, 2.0, -2.0, 0.5, -0.5]])
    f = cegppo.cispo_grad_weight(old + logr, old, adv, cegppo.CISPOConfig(eps_low=1.0, eps_high=1e9))
    np.testing.assert_allclose(f, np.exp(logr), rtol=1e-14)
    inside = cegppo.grad_weight(old + logr, old, np.zeros(1), cegppo.presets.ppo())  # A = 0: every token inside
    np.testing.assert_allclose(f, inside, rtol=1e-14)


@given(data=st.data())
def test_S14_2_cispo_weight_is_gppos_where_gppo_clips_and_bounded_where_it_does_not(data: st.DataObject) -> None:
    """Clipped by CE-GPPO's rule or inside the interval: CISPO's F is GPPO's (beta = 1). A > 0 below and
    A < 0 above the interval (CE-GPPO's `inside`, F = delta there): CISPO's is the bound it crossed."""
    eps_low, eps_high = data.draw(st.floats(0.05, 0.9), label="eps_low"), data.draw(st.floats(0.05, 2.0), label="eps_high")
    b = data.draw(family_batches(st.just(cegppo.CISPOConfig(eps_low, eps_high)), holes=False), label="batch")
    gppo = cegppo.CEGPPOConfig(eps_low=eps_low, eps_high=eps_high, beta_low=1.0, beta_high=1.0)
    f = cegppo.cispo_grad_weight(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    f_gppo = cegppo.grad_weight(b.log_prob, b.old_log_prob, b.advantages, gppo)
    a, r = b.adv2d, np.exp(b.log_prob - b.old_log_prob)
    below, above = r < 1 - eps_low, r > 1 + eps_high
    same = (below & (a < 0)) | (above & (a > 0)) | ~(below | above)
    np.testing.assert_allclose(f[same], f_gppo[same], rtol=1e-15)
    np.testing.assert_allclose(f[below & (a >= 0)], 1 - eps_low, rtol=1e-15)
    np.testing.assert_allclose(f[above & (a <= 0)], 1 + eps_high, rtol=1e-15)


@given(st.floats(1.01, 20.0), hnp.arrays(np.float64, (2, 5), elements=st.floats(-8.0, 8.0)))
def test_S14_2_cispo_cap_is_the_two_sided_form_without_a_lower_bound(cap: float, logr: np.ndarray) -> None:
    """TRL's min(delta, cap) = clip(delta, 1 - eps_low, 1 + eps_high) with eps_low >= 1, eps_high = cap - 1."""
    old = np.full_like(logr, -2.0)
    adv = np.ones(2)
    capped = cegppo.cispo_grad_weight(old + logr, old, adv, cegppo.CISPOCapConfig(cap=cap))
    two_sided = cegppo.cispo_grad_weight(old + logr, old, adv, cegppo.CISPOConfig(eps_low=1.0, eps_high=cap - 1.0))
    np.testing.assert_allclose(capped, np.minimum(np.exp(logr), cap), rtol=1e-14)
    np.testing.assert_allclose(capped, two_sided, rtol=1e-14)


def test_S14_2_cispo_is_finite_at_extreme_log_ratios_and_zero_at_zero_advantage() -> None:
    lp = np.array([[-1e4, 0.0, -np.inf, -3.0]])
    old = np.array([[0.0, -1e4, -1.0, -np.inf]])
    cfg = cegppo.CISPOConfig(eps_low=0.3, eps_high=0.5)
    np.testing.assert_array_equal(cegppo.cispo_grad_weight(lp, old, np.ones(1), cfg), [[0.7, 1.5, 0.7, 1.5]])
    j = cegppo.cispo_per_token_objective(lp, old, np.array([[1.0, 1.0, 0.0, -1.0]]), cfg)
    np.testing.assert_array_equal(j, [[-7e3, 0.0, 0.0, 4.5]])  # A = 0 with log_prob = -inf gives 0


# ---------------------------------------------------------------- S14.3 SAPO


@given(b=family_batches(sapo_configs()), agg=st.sampled_from(AGG_MODES))
def test_S14_3_sapo_gradient_is_the_derivative_of_its_value(b: FamilyBatch, agg: str) -> None:
    """SAPO's value carries no stop-gradient and no kink: plain central differences of the loss."""

    def f(x: np.ndarray) -> float:
        return float(cegppo.family_policy_loss(x, b.old_log_prob, b.advantages, b.mask, b.cfg, agg))

    g = cegppo.family_policy_loss_grad(*b.args(), agg)
    np.testing.assert_allclose(g, central_difference(f, b.log_prob), rtol=FD_RTOL,
                               atol=FD_RTOL * (np.max(np.abs(g)) + 1.0))


@given(family_batches(sapo_configs(), holes=False, max_b=4, max_t=6))
def test_S14_3_sapo_bounds(b: FamilyBatch) -> None:
    """0 < F <= min(delta, 1 + C / tau), F <= 4 delta exp(-tau |delta - 1|), 0 < gate <= 4 / tau."""
    a = b.adv2d
    tau = np.where(a > 0, b.cfg.tau_pos, b.cfg.tau_neg)
    r = np.exp(b.log_prob - b.old_log_prob)
    f = cegppo.sapo_grad_weight(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    assert np.all(f > 0)
    assert np.all(f <= np.minimum(r, 1 + SAPO_C / tau) * (1 + 1e-15))
    # exp of an argument near -|z| carries a relative rounding of about |z| ulp
    assert np.all(f <= 4 * r * np.exp(-tau * np.abs(r - 1)) * (1 + 1e-12))
    j = cegppo.sapo_per_token_objective(b.log_prob, b.old_log_prob, b.advantages, b.cfg)
    nz = a != 0
    gate = j[nz] / a[nz]
    assert np.all(gate > 0) and np.all(gate <= 4 / tau[nz])  # sigmoid rounds to 1 from z ~ 37 on
    assert np.all(j[~nz] == 0)


@pytest.mark.parametrize("tau", [0.5, 1.0, 1.05, 4.0, 50.0])
def test_S14_3_sapo_bound_constant_is_attained(tau: float) -> None:
    """sup F = sech^2(x/2)(1 + x/tau) at (tau + x) tanh(x/2) = 1; below 1 + C/tau, and F(1) = 1."""
    x = np.linspace(0.0, 40.0, 400001)
    logr = np.log1p(x / tau)[None, :]
    cfg = cegppo.SAPOConfig(tau_pos=tau, tau_neg=2 * tau)
    f = cegppo.sapo_grad_weight(logr, np.zeros_like(logr), np.ones(1), cfg)[0]
    k = int(np.argmin(np.abs((tau + x) * np.tanh(x / 2) - 1)))
    np.testing.assert_allclose(f.max(), (1 + x[k] / tau) / np.cosh(x[k] / 2) ** 2, rtol=1e-8)
    assert f.max() < 1 + SAPO_C / tau and f[0] == 1.0


def test_S14_3_sapo_temperature_limits() -> None:
    """tau -> 0: F -> delta (the unclipped ratio weight); tau -> inf: F -> 0 off delta = 1 (no hard-clip limit)."""
    logr = np.log(np.array([[0.05, 0.5, 0.9, 1.0, 1.1, 2.0, 20.0]]))
    old = np.zeros_like(logr)
    small = cegppo.sapo_grad_weight(logr, old, np.ones(1), cegppo.SAPOConfig(tau_pos=1e-6, tau_neg=1e-6))
    np.testing.assert_allclose(small, np.exp(logr), rtol=1e-9)
    large = cegppo.sapo_grad_weight(logr, old, np.ones(1), cegppo.SAPOConfig(tau_pos=1e4, tau_neg=1e4))
    off = np.exp(logr) != 1
    assert np.all(large[off] < 1e-100) and np.all(large[~off] == 1)
    # The value tends to 2 A / tau + (delta - 1) A: the plain surrogate plus a constant.
    j = cegppo.sapo_per_token_objective(logr, old, np.ones(1), cegppo.SAPOConfig(tau_pos=1e-6, tau_neg=1e-6))
    np.testing.assert_allclose(j - 2 / 1e-6, np.expm1(logr), atol=1e-8)


def test_S14_3_sapo_temperature_follows_the_sign_of_the_advantage() -> None:
    lp = np.log(np.array([[1.5, 1.5, 1.5]]))
    cfg = cegppo.SAPOConfig(tau_pos=1.0, tau_neg=3.0)
    j = cegppo.sapo_per_token_objective(lp, np.zeros_like(lp), np.array([[1.0, -1.0, 0.0]]), cfg)
    np.testing.assert_allclose(j, [[4 * _sigmoid(0.5), -4 / 3 * _sigmoid(1.5), 0.0]], rtol=1e-15)


def test_S14_3_sapo_is_finite_at_extreme_log_ratios() -> None:
    """The gate needs no clamp of the log-ratio: F = 0 and a finite value at +-1e4 and +-inf (spec S14.5)."""
    lp = np.array([[1e4, -1e4, np.inf, -np.inf, 30.0]])
    old = np.zeros_like(lp)
    adv = np.array([[1.0, -1.0, -2.0, 1.0, -1.0]])
    cfg = cegppo.SAPOConfig()
    np.testing.assert_array_equal(cegppo.sapo_grad_weight(lp, old, adv, cfg), np.zeros((1, 5)))
    j = cegppo.sapo_per_token_objective(lp, old, adv, cfg)
    np.testing.assert_allclose(j, [[4.0, -4 / 1.05 * _sigmoid(-1.05), -2 * 4 / 1.05, 4 * _sigmoid(-1.0), -4 / 1.05]])
    g = cegppo.family_policy_loss_grad(lp, old, adv, np.ones((1, 5), bool), cfg)
    assert np.all(np.isfinite(g))


# ---------------------------------------------------------------- S14.4 GSPO


@given(family_batches(gspo_configs()))
def test_S14_4_gspo_sequence_log_ratio_is_the_mean_over_valid_tokens(b: FamilyBatch) -> None:
    want = np.log(_row_ratios(b))
    np.testing.assert_allclose(cegppo.gspo_sequence_log_ratio(b.log_prob, b.old_log_prob, b.mask), want,
                               rtol=1e-12, atol=1e-15)


@given(family_batches(gspo_configs(), per_sequence=True))
def test_S14_4_gspo_token_form_equals_the_sequence_objective(b: FamilyBatch) -> None:
    """One advantage per sequence, seq-mean-token-mean: value and gradient of GSPO's Eq. 5, which has no sg.

    The sequence objective (1/S) sum_i min(s_i A_i, clip(s_i) A_i) is a plain function of every
    log-prob of row i through s_i, so its central differences need no freezing.
    """
    olp, a, m = b.old_log_prob, b.advantages, b.mask
    lo, hi = 1 - b.cfg.eps_low, 1 + b.cfg.eps_high

    def sequence_loss(x: np.ndarray) -> float:
        rows = [i for i in range(m.shape[0]) if m[i].any()]
        terms = []
        for i in rows:
            s = math.exp(float(np.mean((x - olp)[i][m[i]])))
            terms.append(-min(s * a[i], min(max(s, lo), hi) * a[i]))
        return sum(terms) / max(len(rows), 1)

    loss = float(cegppo.family_policy_loss(*b.args(), "seq-mean-token-mean"))
    assert abs(loss - sequence_loss(b.log_prob)) <= 1e-12 * (abs(loss) + 1.0)
    g = cegppo.family_policy_loss_grad(*b.args(), "seq-mean-token-mean")
    fd = central_difference(sequence_loss, b.log_prob)
    np.testing.assert_allclose(g, fd, rtol=FD_RTOL, atol=FD_RTOL * (np.max(np.abs(g)) + 1.0))


@given(b=family_batches(gspo_configs(), per_sequence=False), agg=st.sampled_from(AGG_MODES))
def test_S14_4_gspo_token_form_gradient_matches_central_differences(b: FamilyBatch, agg: str) -> None:
    """Per-token advantages: central differences of the token form with sg(s_i) and sg(pi_t) frozen at x0.

    s_t(x) = s_i(x0) exp(x_t - x0_t); the token's term min(s_t A_t, clip(s_t) A_t) is then a
    function of x_t alone, written here independently of `cegppo`.
    """
    x0, a, m = b.log_prob, b.adv2d, b.mask
    s0 = np.array(_row_ratios(b))[:, None]
    c = cegppo.aggregation_weights(m, agg)
    lo, hi = 1 - b.cfg.eps_low, 1 + b.cfg.eps_high

    def f(x: np.ndarray) -> float:
        s = s0 * np.exp(x - x0)
        return float(np.sum(_masked(c * -np.minimum(s * a, np.clip(s, lo, hi) * a), m)))

    g = cegppo.family_policy_loss_grad(*b.args(), agg)
    np.testing.assert_allclose(g, central_difference(f, x0), rtol=FD_RTOL, atol=FD_RTOL * (np.max(np.abs(g)) + 1.0))


@given(data=st.data())
def test_S14_4_gspo_on_one_token_rows_is_token_level_ppo_clip(data: st.DataObject) -> None:
    """With one valid token per row s = delta: GSPO's J is PPO-clip's value, its F is PPO's weight (spec S6.1)."""
    cfg = data.draw(gspo_configs(), label="cfg")
    ppo = cegppo.CEGPPOConfig(eps_low=cfg.eps_low, eps_high=cfg.eps_high, beta_low=0.0, beta_high=0.0)
    b = data.draw(family_batches(st.just(cfg), max_b=6, max_t=1, holes=False), label="batch")
    lp, olp, adv = b.log_prob, b.old_log_prob, b.advantages
    np.testing.assert_array_equal(cegppo.gspo_grad_weight(*b.args()), cegppo.grad_weight(lp, olp, adv, ppo))
    a, r = b.adv2d, np.exp(lp - olp)
    ppo_value = np.minimum(r * a, np.clip(r, 1 - cfg.eps_low, 1 + cfg.eps_high) * a)
    np.testing.assert_allclose(cegppo.gspo_per_token_objective(*b.args()), ppo_value, rtol=1e-14, atol=0)


@given(family_batches(gspo_configs(), holes=False, max_b=4, max_t=6))
def test_S14_4_gspo_gradient_weight_is_s_or_zero(b: FamilyBatch) -> None:
    """F = 0 exactly where the clip is active; F = s elsewhere, < 1 - eps_low for A > 0 below the interval."""
    f = cegppo.gspo_grad_weight(*b.args())
    s = np.broadcast_to(np.array(_row_ratios(b))[:, None], f.shape)
    a = b.adv2d
    clipped = ((a < 0) & (s < 1 - b.cfg.eps_low)) | ((a > 0) & (s > 1 + b.cfg.eps_high))
    assert np.all(f[clipped] == 0)
    np.testing.assert_allclose(f[~clipped], s[~clipped], rtol=1e-12)
    assert np.all(f[(a > 0) & ~clipped] <= 1 + b.cfg.eps_high)


def test_S14_4_gspo_paper_ranges_clip_whole_sequences() -> None:
    """3e-4 / 4e-4 (the paper's): a row whose geometric-mean ratio leaves the band loses every token's gradient."""
    cfg = cegppo.GSPOConfig()
    logr = np.array([[0.0, 3e-3, -1e-3], [0.3, -0.3, 1e-4]])  # log s = 6.7e-4 (above), 3.3e-5 (inside)
    old = np.full_like(logr, -1.0)
    mask = np.ones(logr.shape, bool)
    f = cegppo.gspo_grad_weight(old + logr, old, np.array([1.0, 1.0]), mask, cfg)
    np.testing.assert_array_equal(f[0], 0.0)
    np.testing.assert_allclose(f[1], math.exp(1e-4 / 3), rtol=1e-15)
    f_neg = cegppo.gspo_grad_weight(old + logr, old, np.array([-1.0, -1.0]), mask, cfg)
    np.testing.assert_allclose(f_neg[0], math.exp(2e-3 / 3), rtol=1e-15)  # A < 0 above: unclipped, F = s


# ---------------------------------------------------------------- configs (spec S14.2-S14.4, S9.6)


@pytest.mark.parametrize(
    ("make", "field", "bad"),
    [
        (cegppo.CISPOConfig, "eps_low", 0.0),
        (cegppo.CISPOConfig, "eps_low", -0.1),
        (cegppo.CISPOConfig, "eps_high", 0.0),
        (cegppo.CISPOConfig, "eps_high", math.inf),
        (cegppo.CISPOCapConfig, "cap", 0.0),
        (cegppo.CISPOCapConfig, "cap", -5.0),
        (cegppo.CISPOCapConfig, "cap", math.nan),
        (cegppo.SAPOConfig, "tau_pos", 0.0),
        (cegppo.SAPOConfig, "tau_neg", -1.05),
        (cegppo.SAPOConfig, "tau_neg", math.inf),
        (cegppo.GSPOConfig, "eps_low", 0.0),
        (cegppo.GSPOConfig, "eps_low", 1.0),
        (cegppo.GSPOConfig, "eps_high", 0.0),
        (cegppo.GSPOConfig, "eps_high", -4e-4),
    ],
)
def test_S14_bad_config_values_name_the_field(make: type, field: str, bad: float) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must "):
        make(**{field: bad})


@pytest.mark.parametrize("make", [cegppo.CISPOConfig, cegppo.CISPOCapConfig, cegppo.SAPOConfig, cegppo.GSPOConfig])
@pytest.mark.parametrize("bad", [True, "0.2", None, np.float32(0.2)])
def test_S14_config_fields_must_be_real_numbers(make: type, bad: Any) -> None:
    field = next(iter(make().as_dict()))
    with pytest.raises(TypeError, match=rf"^{field} must be a real number"):
        make(**{field: bad})


@pytest.mark.parametrize("make", [cegppo.CISPOConfig, cegppo.CISPOCapConfig, cegppo.SAPOConfig, cegppo.GSPOConfig])
def test_S14_configs_are_frozen_compare_by_value_and_round_trip(make: type) -> None:
    cfg = make()
    field = list(cfg.as_dict())[-1]  # the last field of each accepts 1 and 0.5
    assert make(**cfg.as_dict()) == cfg and hash(make(**cfg.as_dict())) == hash(cfg)
    assert make(**{field: 1}) == make(**{field: 1.0}) and type(getattr(make(**{field: 1}), field)) is float
    assert cfg.replace(**{field: 0.5}) == make(**{field: 0.5})
    with pytest.raises(ValueError, match=rf"^{field} must"):
        cfg.replace(**{field: -1.0})
    with pytest.raises(AttributeError):
        setattr(cfg, field, 0.5)


def test_S14_default_configs_are_the_sources_numbers() -> None:
    assert cegppo.CISPOConfig().as_dict() == {"eps_low": 0.2, "eps_high": 0.2}  # verl 0.9.1's clip_ratio_*
    assert cegppo.CISPOCapConfig().as_dict() == {"cap": 5.0}  # TRL's recommended epsilon_high for cispo
    assert cegppo.SAPOConfig().as_dict() == {"tau_pos": 1.0, "tau_neg": 1.05}  # arXiv 2511.20347
    assert cegppo.GSPOConfig().as_dict() == {"eps_low": 3e-4, "eps_high": 4e-4}  # arXiv 2507.18071
