"""Hypothesis strategies and an independent float64 CE-GPPO for the reference self-checks.

Nothing here calls the reference's internals: `independent_loss_and_grad` is
docs/spec.md S2-S4, S7 and S8.1 re-written with Python floats, loops, ratio-space region tests and
forward-mode dual numbers for the gradient, so that it shares no code path with `cegppo`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import cegppo
import hypothesis.extra.numpy as hnp
import numpy as np
from cegppo.conformance import MARGIN
from hypothesis import strategies as st

AGG_MODES = (
    "token-mean",
    "token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)

# Distance kept from every kink, in log-ratio units: the conformance kit's margin for float32 (1e-3), far
# beyond the ~1e-6 steps of the finite differences.
KINK_GAP = MARGIN["float32"]


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------


@st.composite
def configs(draw: st.DrawFn, dual: bool | None = None) -> cegppo.CEGPPOConfig:
    """A valid CEGPPOConfig; `dual` forces dual clip on (True), off (False) or either (None)."""
    eps_low = draw(st.floats(0.05, 0.6), label="eps_low")
    eps_high = draw(st.floats(0.05, 0.8), label="eps_high")
    beta_low = draw(st.sampled_from([0.0, 0.5, 0.75, 1.0]) | st.floats(0.0, 2.0), label="beta_low")
    beta_high = draw(st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0.0, 2.0), label="beta_high")
    use_dual = draw(st.booleans(), label="use_dual") if dual is None else dual
    # c must sit above the interval (with room for a band of tokens between 1+eps_high and c).
    c = draw(st.floats(math.exp(math.log1p(eps_high) + 0.1), 12.0), label="dual_clip") if use_dual else None
    return cegppo.CEGPPOConfig(eps_low, eps_high, beta_low, beta_high, c)


def _bands(cfg: cegppo.CEGPPOConfig) -> list[tuple[float, float]]:
    """Open log-ratio bands between the kinks of `cfg`, each shrunk by KINK_GAP."""
    kinks = [cfg.log_lower, cfg.log_upper]
    if cfg.dual_clip is not None:
        kinks.append(math.log(cfg.dual_clip))
    edges = [-4.0, *kinks, max(kinks) + 2.0]
    return [(lo + KINK_GAP, hi - KINK_GAP) for lo, hi in itertools.pairwise(edges)]


@dataclass
class Batch:
    """One drawn policy-loss batch (float64)."""

    log_prob: np.ndarray
    old_log_prob: np.ndarray
    advantages: np.ndarray
    mask: np.ndarray
    cfg: cegppo.CEGPPOConfig

    def __repr__(self) -> str:  # a copy-pasteable reproducer
        np.set_printoptions(precision=17)
        return (
            f"Batch(log_prob=np.{self.log_prob!r}, old_log_prob=np.{self.old_log_prob!r}, "
            f"advantages=np.{self.advantages!r}, mask=np.{self.mask!r}, cfg=cegppo.{self.cfg!r})"
        )


@st.composite
def batches(
    draw: st.DrawFn,
    cfg: cegppo.CEGPPOConfig | None = None,
    *,
    dual: bool | None = None,
    max_b: int = 4,
    max_t: int = 6,
    per_sequence: bool | None = None,
    holes: bool = True,
) -> Batch:
    """A float64 batch whose log-ratios lie at least KINK_GAP away from every kink of `cfg`.

    Each token picks a band (below the interval, inside, above, above c) and a position in it, so
    every region of S2 is hit; advantages are drawn from {-2..2} plus continuous values, zero
    included; the mask may have holes (padding in the middle as well as at the end).
    """
    if cfg is None:
        cfg = draw(configs(dual=dual), label="cfg")
    b = draw(st.integers(1, max_b), label="B")
    t = draw(st.integers(1, max_t), label="T")
    bands = _bands(cfg)
    which = draw(hnp.arrays(np.int64, (b, t), elements=st.integers(0, len(bands) - 1)), label="band")
    where = draw(hnp.arrays(np.float64, (b, t), elements=st.floats(0.0, 1.0)), label="position_in_band")
    lo = np.array([bands[k][0] for k in which.ravel()]).reshape(b, t)
    hi = np.array([bands[k][1] for k in which.ravel()]).reshape(b, t)
    logr = lo + where * (hi - lo)
    old = draw(hnp.arrays(np.float64, (b, t), elements=st.floats(-6.0, -0.01)), label="old_log_prob")
    per_seq = draw(st.booleans(), label="per_sequence") if per_sequence is None else per_sequence
    # |A| >= 1e-3 or exactly 0: tiny nonzero advantages only test subnormal arithmetic.
    adv_elems = st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]) | st.floats(-3.0, 3.0).map(
        lambda x: 0.0 if abs(x) < 1e-3 else x
    )
    adv = draw(hnp.arrays(np.float64, (b,) if per_seq else (b, t), elements=adv_elems), label="advantages")
    if holes:
        mask = draw(hnp.arrays(np.bool_, (b, t)), label="mask")
    else:
        mask = np.ones((b, t), bool)
    return Batch(old + logr, old, adv, mask, cfg)


def logits_arrays(max_lead: int = 3, max_v: int = 6, scale: float = 3.0) -> st.SearchStrategy[np.ndarray]:
    """float64 logits of shape (N, V)."""
    return st.tuples(st.integers(1, max_lead), st.integers(2, max_v)).flatmap(
        lambda s: hnp.arrays(np.float64, s, elements=st.floats(-scale, scale))
    )


# --------------------------------------------------------------------------------------------
# Independent float64 implementation of docs/spec.md S2-S4, S7 and S8.1
# --------------------------------------------------------------------------------------------


class Dual:
    """Forward-mode dual number a + b eps (eps^2 = 0): value and derivative travel together."""

    __slots__ = ("d", "v")

    def __init__(self, v: float, d: float = 0.0) -> None:
        self.v, self.d = float(v), float(d)

    def __add__(self, o: Dual | float) -> Dual:
        o = o if isinstance(o, Dual) else Dual(o)
        return Dual(self.v + o.v, self.d + o.d)

    __radd__ = __add__

    def __sub__(self, o: Dual | float) -> Dual:
        o = o if isinstance(o, Dual) else Dual(o)
        return Dual(self.v - o.v, self.d - o.d)

    def __mul__(self, o: Dual | float) -> Dual:
        o = o if isinstance(o, Dual) else Dual(o)
        return Dual(self.v * o.v, self.v * o.d + self.d * o.v)

    __rmul__ = __mul__

    def __neg__(self) -> Dual:
        return Dual(-self.v, -self.d)

    def exp(self) -> Dual:
        e = math.exp(self.v)
        return Dual(e, e * self.d)

    def stop_gradient(self) -> Dual:
        return Dual(self.v, 0.0)


def _token_loss(lp: Dual, olp: float, a: float, cfg: cegppo.CEGPPOConfig) -> Dual:
    """-J_t for one token, written as in the paper: ratio-space tests, delta / sg(delta)."""
    logr = lp - olp
    delta = logr.exp()
    # delta / sg(delta) = delta * (1 / sg(delta)): value 1, derivative d(delta) / delta.
    unit = delta * (1.0 / delta.stop_gradient().v)
    if a < 0 and delta.v < 1.0 - cfg.eps_low:
        j = cfg.beta_low * (1.0 - cfg.eps_low) * unit * a
    elif a > 0 and delta.v > 1.0 + cfg.eps_high:
        j = cfg.beta_high * (1.0 + cfg.eps_high) * unit * a
    elif cfg.dual_clip is not None and a < 0 and delta.v > cfg.dual_clip:
        j = Dual(cfg.dual_clip * a)
    else:
        j = delta * a
    return -j


def _coefficients(mask: np.ndarray, agg: str) -> list[list[float]]:
    """c_t of S8.1 with the local default normalizers of S8.2, by loops."""
    b, t = mask.shape
    n_tok = sum(int(mask[i, k]) for i in range(b) for k in range(t))
    rows = [sum(int(mask[i, k]) for k in range(t)) for i in range(b)]
    n_seq = sum(1 for r in rows if r > 0)
    out = [[0.0] * t for _ in range(b)]
    for i in range(b):
        for k in range(t):
            if not mask[i, k]:
                continue
            if agg == "token-mean":
                out[i][k] = 1.0 / n_tok
            elif agg == "token-sum":
                out[i][k] = 1.0
            elif agg == "seq-mean-token-mean":
                out[i][k] = 1.0 / rows[i] / n_seq
            elif agg == "seq-mean-token-sum":
                out[i][k] = 1.0 / n_seq
            elif agg == "seq-mean-token-sum-norm":
                out[i][k] = 1.0 / (n_seq * t)
            else:  # pragma: no cover
                raise AssertionError(agg)
    return out


def independent_loss_and_grad(batch: Batch, agg: str) -> tuple[float, np.ndarray, float]:
    """(loss, d loss / d log_prob, scale) with scale = sum_t |c_t l_t| (the magnitude to compare at)."""
    b, t = batch.log_prob.shape
    adv = batch.advantages if batch.advantages.ndim == 2 else np.repeat(batch.advantages[:, None], t, 1)
    coef = _coefficients(batch.mask, agg)
    loss, scale = 0.0, 0.0
    grad = np.zeros((b, t))
    for i in range(b):
        for k in range(t):
            if not batch.mask[i, k]:
                continue
            lt = _token_loss(Dual(batch.log_prob[i, k], 1.0), float(batch.old_log_prob[i, k]), float(adv[i, k]), batch.cfg)
            loss += coef[i][k] * lt.v
            scale += abs(coef[i][k] * lt.v)
            grad[i, k] = coef[i][k] * lt.d
    return loss, grad, scale


def ppo_clip_grad(batch: Batch, agg: str) -> np.ndarray:
    """d/d log_prob of PPO-clip's max(-delta A, -clip(delta) A) (and dual clip), by cases (S6.1).

    PPO-clip keeps a gradient only where the unclipped term is the active one: -delta A (times
    c_t), and 0 where the clipped (or dual-clip) constant wins.
    """
    cfg = batch.cfg
    b, t = batch.log_prob.shape
    adv = batch.advantages if batch.advantages.ndim == 2 else np.repeat(batch.advantages[:, None], t, 1)
    coef = _coefficients(batch.mask, agg)
    g = np.zeros((b, t))
    for i in range(b):
        for k in range(t):
            if not batch.mask[i, k]:
                continue
            a = float(adv[i, k])
            delta = math.exp(batch.log_prob[i, k] - batch.old_log_prob[i, k])
            clipped = min(max(delta, 1 - cfg.eps_low), 1 + cfg.eps_high)
            unclipped_active = -delta * a >= -clipped * a  # max(-delta A, -clip(delta) A)
            if cfg.dual_clip is not None and a < 0 and max(-delta * a, -clipped * a) > -cfg.dual_clip * a:
                unclipped_active = False
            g[i, k] = coef[i][k] * (-delta * a) if unclipped_active else 0.0
    return g


def central_difference(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar f at x, elementwise (float64)."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (float(f(xp)) - float(f(xm))) / (2 * h)
    return g
