"""Hypothesis strategies for conformance inputs: every region, every edge (spec S1, S2, S8, S9).

Each function takes Hypothesis's ``data`` object (from ``st.data()``) and draws with a label, so a
failing example in pytest reads as a list of named inputs. What is reached:

- shapes with B = 1 or T = 1 (B in 1..5, T in 1..7);
- masks with rows of no valid token, a single valid token, a prefix (response then padding) or
  random holes; a fully masked batch where a property asks for one;
- per-sequence (B,) and per-token (B, T) advantages, A = 0 included;
- log-ratios on both sides of each boundary (log(1 - eps_low), log(1 + eps_high), log c), around
  0, far beyond (|logr| up to 20) and, on request, extreme (|logr| up to 1e4: delta under- or
  overflows in every float type) or infinite (old_log_prob = -inf: a token the old policy could
  not sample, logr = +inf; log_prob = -inf: a token the current policy cannot sample, logr = -inf);
- asymmetric eps (eps_low in (0, 0.9), eps_high in (0, 2)), beta in [0, 2] (0 and 1 exactly too),
  dual clip off or c in (1.05, 50);
- for a port of another member of the family (spec S14, the active conventions' ``objective``), that
  member's hyperparameters (`draw_member_config`) and log-ratios around its own reference points,
  the extremes its loss can represent, and inputs kept away from its kinks (GSPO: the row means);
- float64, float32, bfloat16 and float16 inputs;
- advantages per token (B, T) and per sequence (B,), or only the form a port declares;
- for the scale properties (`draw_scale_case`, `scale_case`): T across kernel block sizes
  (`BLOCK_T`), B up to 64, ragged masks, and batches of about a million tokens (`LARGE_SHAPES`),
  whose token values come from a seeded NumPy generator (Hypothesis draws the shape, the
  hyperparameters, the mask style and the seed), so that a case of 10^6 tokens costs milliseconds.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from cegppo import CEGPPOConfig, CISPOCapConfig, CISPOConfig, GSPOConfig, SAPOConfig
from hypothesis import strategies as st

from ._cases import MARGIN, Case, round_to
from ._conventions import Conventions, active
from ._objectives import CE_GPPO, check_objective, kinks, reference_points, representable, row_kinks

__all__ = ["BLOCK_B", "BLOCK_T", "DUAL_CLIP_KINDS", "LARGE_SHAPES", "MASK_STYLES", "REGIONS", "advantage_values", "draw_case",
           "draw_config", "draw_dual_clip_case", "draw_mask", "draw_member_config", "draw_region_case",
           "draw_scale_case", "push_rows_away", "scale_case"]

REGIONS: tuple[str, ...] = ("clip_low", "clip_high", "dual_clip", "inside")
#: The three places where dual-clip ports go wrong (spec S7): A < 0 with log c < logr < c (a port
#: comparing logr with c instead of log c), A < 0 beyond c, and A > 0 above log c (a port ignoring
#: the sign of A).
DUAL_CLIP_KINDS: tuple[str, ...] = ("A<0, log c < logr < c", "A<0, logr > c", "A>0, logr > log c")

_KINDS = ("near_lower", "near_upper", "near_dual", "around_zero", "far_below", "far_above")
_EXTREME_KINDS = ("extreme_below", "extreme_above", "infinite_below", "infinite_above")


def draw_config(data: Any, *, dual: bool | None = None, beta: tuple[float, float] | None = None) -> CEGPPOConfig:
    """Hyperparameters: asymmetric eps, beta in [0, 2], dual clip on or off (or as asked).

    Under a declared ``dual_clip="required"`` the dual clip is always on (the port has no off switch);
    under ``dual_clip="absent"`` always off (the port has none).
    """
    if active().dual_clip == "required":
        dual = True
    elif active().dual_clip == "absent":
        dual = False
    eps_low = data.draw(st.one_of(st.just(0.2), st.floats(0.01, 0.9)), label="eps_low")
    eps_high = data.draw(st.one_of(st.just(0.2), st.just(0.28), st.floats(0.01, 2.0)), label="eps_high")
    if beta is None:
        # 0 exactly, the paper's values, or a beta of usable size: a beta of 1e-130 times a float32
        # gradient underflows in any float32 implementation and says nothing about the port.
        b = st.one_of(st.sampled_from([0.0, 0.5, 0.75, 1.0]), st.floats(1e-3, 2.0))
        beta_low = data.draw(b, label="beta_low")
        beta_high = data.draw(b, label="beta_high")
    else:
        beta_low, beta_high = beta
    c_strategy = st.one_of(st.sampled_from([3.0, 10.0]), st.floats(1.05, 50.0))
    if dual is None:
        c = data.draw(st.one_of(st.none(), c_strategy), label="dual_clip")
    elif dual:
        c = data.draw(c_strategy, label="dual_clip")
    else:
        c = None
    return CEGPPOConfig(eps_low=eps_low, eps_high=eps_high, beta_low=beta_low, beta_high=beta_high, dual_clip=c)


def draw_member_config(data: Any, objective: str | None = None) -> Any:
    """The hyperparameters of `objective` (default: the active conventions' objective, spec S14).

    CE-GPPO: `draw_config`. CISPO: eps_low below 1 or at least 1 (no lower bound, the paper's
    practice), eps_high up to 2; the cap form: caps below and above 1 (TRL recommends 5); SAPO: the
    paper's temperatures or any in [0.1, 10], tau_pos and tau_neg drawn apart; GSPO: the paper's
    clip widths (3e-4, 4e-4) or widths of token-level size.
    """
    objective = active().objective if objective is None else check_objective(objective)
    if objective == CE_GPPO:
        return draw_config(data)
    if objective == "cispo":
        eps_low = data.draw(st.one_of(st.just(0.2), st.floats(0.01, 0.9), st.floats(1.0, 4.0)), label="eps_low")
        eps_high = data.draw(st.one_of(st.just(0.2), st.just(0.28), st.floats(0.01, 2.0)), label="eps_high")
        return CISPOConfig(eps_low=eps_low, eps_high=eps_high)
    if objective == "cispo_cap":
        return CISPOCapConfig(cap=data.draw(st.one_of(st.just(5.0), st.floats(0.1, 10.0)), label="cap"))
    if objective == "sapo":
        tau_pos = data.draw(st.one_of(st.just(1.0), st.floats(0.1, 10.0)), label="tau_pos")
        tau_neg = data.draw(st.one_of(st.just(1.05), st.floats(0.1, 10.0)), label="tau_neg")
        return SAPOConfig(tau_pos=tau_pos, tau_neg=tau_neg)
    eps_low = data.draw(st.one_of(st.just(3e-4), st.floats(1e-3, 0.9)), label="eps_low")
    eps_high = data.draw(st.one_of(st.just(4e-4), st.floats(1e-3, 2.0)), label="eps_high")
    return GSPOConfig(eps_low=eps_low, eps_high=eps_high)


def draw_mask(data: Any, b: int, t: int, *, allow_empty: bool = True) -> np.ndarray:
    """A (B, T) bool mask; rows are all valid, empty, a single token, a prefix, or random holes."""
    kinds = ["all", "prefix", "single", "random"] + (["none"] if allow_empty else [])
    rows = data.draw(st.lists(st.sampled_from(kinds), min_size=b, max_size=b), label="mask row kinds")
    m = np.zeros((b, t), dtype=bool)
    for i, kind in enumerate(rows):
        if kind == "all":
            m[i] = True
        elif kind == "prefix":
            m[i, : data.draw(st.integers(1, t), label=f"mask row {i} length")] = True
        elif kind == "single":
            m[i, data.draw(st.integers(0, t - 1), label=f"mask row {i} position")] = True
        elif kind == "random":
            bits = data.draw(st.lists(st.booleans(), min_size=t, max_size=t), label=f"mask row {i} bits")
            m[i] = bits
    return m


def _mask_row(t: int, allow_empty: bool) -> st.SearchStrategy[list[bool]]:
    """One mask row of length t: all valid, a prefix, a single token, random holes, or (maybe) empty."""
    kinds = ["all", "prefix", "single", "random"] + (["none"] if allow_empty else [])

    def build(kind: str) -> st.SearchStrategy[list[bool]]:
        if kind == "all":
            return st.just([True] * t)
        if kind == "none":
            return st.just([False] * t)
        if kind == "prefix":
            return st.integers(1, t).map(lambda k: [i < k for i in range(t)])
        if kind == "single":
            return st.integers(0, t - 1).map(lambda k: [i == k for i in range(t)])
        return st.lists(st.booleans(), min_size=t, max_size=t)

    return st.sampled_from(kinds).flatmap(build)


def _logr_strategy(kind: str, cfg: Any) -> st.SearchStrategy[float]:
    near = st.floats(-0.5, 0.5)
    lower, upper, far = reference_points(cfg)
    if kind == "near_lower":
        return near.map(lambda u: lower + u)
    if kind == "near_upper":
        return near.map(lambda u: upper + u)
    if kind == "near_dual":
        return near.map(lambda u: far + u)
    if kind == "around_zero":
        return st.floats(-0.3, 0.3)
    if kind == "far_below":
        return st.floats(-20.0, -1.0)
    if kind == "far_above":
        return st.floats(1.0, 20.0)
    if kind == "extreme_below":
        return st.floats(-1e4, -50.0)
    if kind == "infinite_below":  # log_prob = -inf (see `_place`)
        return st.just(-math.inf)
    if kind == "infinite_above":  # old_log_prob = -inf
        return st.just(math.inf)
    return st.floats(50.0, 1e4)


def _ulp(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float64":
        return np.spacing(np.abs(x))
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return np.spacing(np.abs(x).astype(np.float16)).astype(np.float64)
    sp = np.spacing(np.abs(x).astype(np.float32)).astype(np.float64)
    return sp * (2.0**16 if dtype == "bfloat16" else 1.0)


def _place(anchor: np.ndarray, logr: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(log_prob, old_log_prob), both <= 0 around `anchor`, with log_prob - old_log_prob ~ logr, rounded.

    An infinite logr is placed as a -inf log-probability: old_log_prob = -inf for +inf, log_prob =
    -inf for -inf (the other one stays the finite anchor).
    """
    pos = logr >= 0
    lp = np.where(pos, anchor, anchor + logr)
    olp = np.where(pos, anchor - logr, anchor)
    return round_to(lp, dtype), round_to(olp, dtype)


def _margin_dtype(dtype: str) -> str:
    """The MARGIN key for inputs of `dtype`: float64 inputs of a port declared to compute in float32 are
    rounded to float32 inside it."""
    return "float32" if dtype == "float64" and active().compute_dtype == "float32" else dtype


def push_away(lp: np.ndarray, olp: np.ndarray, cfg: Any, dtype: str) -> np.ndarray:
    """Move log_prob so that every log-ratio is at least MARGIN[dtype] from each kink of the member's weight.

    Gradients (and, for CE-GPPO with beta != 1, values) jump at the clip boundaries, where a correct
    implementation may round either way: compared values are drawn away from them (jax's
    test-utility style). The kinks are the member's (`kinks`): none for SAPO and, per token, GSPO.
    """
    margin = MARGIN[_margin_dtype(dtype)]
    bounds = np.array(kinks(cfg))
    if bounds.size == 0:
        return lp
    lp = lp.copy()
    for _ in range(6):
        logr = lp - olp
        dist = logr[..., None] - bounds
        near = np.argmin(np.abs(dist), axis=-1)
        d = np.take_along_axis(dist, near[..., None], axis=-1)[..., 0]
        close = np.abs(d) < margin
        if not close.any():
            return lp
        direction = np.where(d >= 0, 1.0, -1.0)
        b = bounds[near]
        step = np.maximum(3 * margin, 2 * _ulp(olp + b, dtype))
        lp = np.where(close, round_to(olp + b + direction * step, dtype), lp)
    # Boundaries closer together than the margin: move the stragglers far below every boundary.
    logr = lp - olp
    close = np.min(np.abs(logr[..., None] - bounds), axis=-1) < margin
    return np.where(close, round_to(olp - 5.0, dtype), lp)


_ROW_MARGIN_SHARE = 0.1
"""GSPO's row margin, as a share of MARGIN: the token margin (1e-3 in float32) is wider than GSPO's own clip
interval at the paper's widths (7e-4), and a row mean is far more precise than one token's ratio is needed."""


def push_rows_away(lp: np.ndarray, olp: np.ndarray, mask: np.ndarray, cfg: Any, dtype: str) -> np.ndarray:
    """Move the valid log-probs of each row so that its mean log-ratio log s_i keeps away from `row_kinks`.

    GSPO's weight jumps where log s_i crosses a clip end (spec S14.4). The margin is a share of
    MARGIN plus the rounding error of a mean of n log-ratios in the compute dtype (n |logr|max eps,
    four times over), so that a port's mean and the float64 reference's fall on the same side.
    Each close row is shifted to the nearest point that is clear of every end; rows that rounding
    keeps close are moved 5 below the lower end. No-op for members without row kinks.
    """
    bounds = np.array(row_kinks(cfg))
    if bounds.size == 0:
        return lp
    key = _margin_dtype(dtype)
    eps = float(np.finfo(np.float64 if key == "float64" else np.float32).eps)
    lp = lp.copy()
    n = mask.sum(axis=-1)

    def close_rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", over="ignore"):
            logr = np.where(mask, lp - olp, 0.0)
            mean = logr.sum(axis=-1) / np.maximum(n, 1)
            margin = MARGIN[key] * _ROW_MARGIN_SHARE + 4 * n * np.max(np.abs(logr), axis=-1, initial=0.0) * eps
            close = (n > 0) & np.any(np.abs(mean[:, None] - bounds) < margin[:, None], axis=-1)
        return close, mean, margin

    for _ in range(6):
        close, mean, margin = close_rows()
        if not close.any():
            return lp
        mean = np.where(close, mean, 0.0)  # rows left alone (infinite or NaN means included) shift by nothing
        candidates = (bounds[None, :, None] + np.array([-3.0, 3.0])[None, None, :] * margin[:, None, None]).reshape(
            len(mean), -1)
        clear = np.all(np.abs(candidates[:, :, None] - bounds) >= 2 * margin[:, None, None], axis=-1)
        cost = np.where(clear, np.abs(candidates - mean[:, None]), np.inf)
        target = candidates[np.arange(len(mean)), np.argmin(cost, axis=-1)]
        shift = np.where(np.isfinite(cost.min(axis=-1)), target - mean, bounds.min() - 5.0 - mean)
        lp = np.where(close[:, None] & mask, round_to(lp + shift[:, None], dtype), lp)
    close, _, _ = close_rows()
    return np.where(close[:, None] & mask, round_to(olp + bounds.min() - 5.0, dtype), lp)


ADVANTAGE_RANGES: tuple[float, ...] = (5.0,) * 5 + (100.0,)
"""The bound of |A| of a case, drawn per case (shrinking to the first): 5 mostly; one case in six up to 100,
as GRPO's (r - mean) / (std + eps) reaches sqrt(G - 1) (about 16 for G = 256) and unnormalized returns more."""


def advantage_values(bound: float) -> st.SearchStrategy[float]:
    """One advantage: 0, +-1, or any value in [-bound, bound] whose magnitude is at least 1e-6.

    |A| below 1e-6 becomes 0: c_t F_t A_t, and the intermediate products of any backward pass
    (1/N times A), would be float32 subnormals, which XLA and most GPU kernels flush to 0 depending
    on the order of operations; such an advantage says nothing about the port (as for beta). Every
    strategy that draws advantages (policy losses and fused heads) draws them here.
    """
    return st.one_of(st.just(0.0), st.sampled_from([-1.0, 1.0]),
                     st.floats(-bound, bound).map(lambda a: a if abs(a) >= 1e-6 else 0.0))


def draw_case(
    data: Any,
    *,
    dtypes: Sequence[str] = ("float64", "float32"),
    aggs: Sequence[str] = ("token-mean",),
    cfg: Any = None,
    extremes: bool = False,
    away_from_boundaries: bool = True,
    allow_empty_rows: bool = True,
    global_normalizers: bool = False,
    max_b: int = 5,
    max_t: int = 7,
    adv_forms: Sequence[str] = ("token", "sequence"),
) -> Case:
    """A random batch reaching every region (see the module docstring), as a `Case`.

    `adv_forms` are the advantage shapes to draw from: ``token`` (B, T), ``sequence`` (B,).
    `cfg` defaults to a config drawn for the active objective (`draw_member_config`).

    With ``extremes``, some log-ratios are extreme (|logr| in [50, 1e4]) or infinite (a -inf
    log_prob or old_log_prob, spec S9.1) where the true loss is still representable
    (`representable`): for CE-GPPO, A < 0 above the interval without dual clip would make delta A
    overflow, so such tokens are kept at |logr| <= 20.
    """
    # Rows are elements of one list, so that Hypothesis shrinks a failure to few rows by deleting
    # list elements (a batch size drawn first would pin every later draw to it).
    t = data.draw(st.integers(1, max_t), label="T")
    dtype = data.draw(st.sampled_from(list(dtypes)), label="dtype")
    if cfg is None:
        cfg = draw_member_config(data)
    kinds = list(_KINDS) + (list(_EXTREME_KINDS) if extremes else [])
    per_seq = _draw_per_seq(data, adv_forms)
    a_el = advantage_values(data.draw(st.sampled_from(ADVANTAGE_RANGES), label="advantage range"))
    token = st.sampled_from(kinds).flatmap(lambda k: _logr_strategy(k, cfg))
    row = st.fixed_dictionaries({
        "log-ratios": st.lists(token, min_size=t, max_size=t),
        "log-prob anchors": st.lists(st.floats(-20.0, 0.0), min_size=t, max_size=t),
        "advantages": a_el if per_seq else st.lists(a_el, min_size=t, max_size=t),
        "mask": _mask_row(t, allow_empty_rows),
    })
    rows = data.draw(st.lists(row, min_size=1, max_size=max_b), label="rows")
    b = len(rows)
    logr = np.array([r["log-ratios"] for r in rows], dtype=np.float64).reshape(b, t)
    anchor = np.array([r["log-prob anchors"] for r in rows], dtype=np.float64).reshape(b, t)
    adv = np.array([r["advantages"] for r in rows], dtype=np.float64)
    adv = round_to(adv if per_seq else adv.reshape(b, t), dtype)
    a2 = np.broadcast_to(adv[:, None], (b, t)) if per_seq else adv
    if extremes:
        logr = representable(logr, a2, cfg)
    lp, olp = _place(anchor, logr, dtype)
    mask = np.array([r["mask"] for r in rows], dtype=bool).reshape(b, t)
    if away_from_boundaries:
        lp = push_rows_away(push_away(lp, olp, cfg, dtype), olp, mask, cfg, dtype)
    agg = data.draw(st.sampled_from(list(aggs)), label="agg")
    num_tokens = num_seqs = None
    if global_normalizers and data.draw(st.booleans(), label="global normalizers"):
        num_tokens = float(mask.sum() + data.draw(st.integers(0, 20), label="extra tokens elsewhere"))
        num_seqs = float(mask.any(-1).sum() + data.draw(st.integers(0, 5), label="extra sequences elsewhere"))
    return Case(lp, olp, adv, mask, cfg, dtype, agg, num_tokens, num_seqs)


def _draw_per_seq(data: Any, adv_forms: Sequence[str]) -> bool:
    """Whether the advantages are per sequence (B,): drawn when both forms are allowed."""
    forms = tuple(adv_forms)
    if not forms or any(f not in ("token", "sequence") for f in forms):
        raise ValueError(f"adv_forms must be a non-empty subset of ('token', 'sequence'), got {adv_forms!r}")
    if len(set(forms)) == 2:
        return bool(data.draw(st.booleans(), label="per-sequence advantages"))
    return forms[0] == "sequence"


_SUBCASES_BY_SIGN = {1.0: ["below+", "within"], -1.0: ["within", "above-"]}


def draw_region_case(data: Any, region: str, *, dtypes: Sequence[str] = ("float64", "float32"),
                     extremes: bool = True, adv_forms: Sequence[str] = ("token", "sequence")) -> Case:
    """A batch whose valid tokens all lie in one region of spec S2 (for the gradient bounds of S5).

    ``inside`` mixes its three sub-cases: A > 0 below the interval, within the interval, and A < 0
    above it (below c when dual clip is on). Advantages are (B, T) unless ``token`` is not in
    `adv_forms`: then one advantage per row, whose sign picks the row's sub-cases.
    """
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    b = data.draw(st.integers(1, 4), label="B")
    t = data.draw(st.integers(1, 6), label="T")
    n = b * t
    dtype = data.draw(st.sampled_from(list(dtypes)), label="dtype")
    cfg = draw_config(data, dual=True if region == "dual_clip" else None)
    far = 1e4 if extremes else 20.0
    lo, hi, c = cfg.log_lower, cfg.log_upper, cfg.log_dual_clip
    per_seq = _draw_per_seq(data, ("token",) if "token" in adv_forms else adv_forms)
    adv_mag = np.array(data.draw(st.lists(st.floats(0.01, 5.0), min_size=b if per_seq else n,
                                          max_size=b if per_seq else n), label="|advantages|"))
    row_sign = np.array(data.draw(st.lists(st.sampled_from([1.0, -1.0]), min_size=b, max_size=b),
                                  label="sign of each row's advantage")) if per_seq and region == "inside" else None
    if region == "clip_low":
        logr = [data.draw(st.floats(-far, lo - 1e-2), label=f"log-ratio {i}") for i in range(n)]
        sign = -np.ones(n)
    elif region == "clip_high":
        logr = [data.draw(st.floats(hi + 1e-2, far), label=f"log-ratio {i}") for i in range(n)]
        sign = np.ones(n)
    elif region == "dual_clip":
        assert c is not None
        logr = [data.draw(st.floats(c + 1e-2, max(far, c + 1.0)), label=f"log-ratio {i}") for i in range(n)]
        sign = -np.ones(n)
    else:
        if row_sign is None:
            subs = data.draw(st.lists(st.sampled_from(["below+", "within", "above-"]), min_size=n, max_size=n),
                             label="inside sub-cases")
        else:  # one advantage per row: its sign decides which sub-cases the row's tokens can be in
            subs = [data.draw(st.sampled_from(_SUBCASES_BY_SIGN[float(row_sign[i // t])]), label=f"sub-case {i}")
                    for i in range(n)]
        logr, sign_list = [], []
        for i, s in enumerate(subs):
            if s == "below+":
                logr.append(data.draw(st.floats(-far, lo - 1e-2), label=f"log-ratio {i}"))
                sign_list.append(1.0)
            elif s == "within":
                logr.append(data.draw(st.floats(lo + 1e-2, hi - 1e-2), label=f"log-ratio {i}"))
                sign_list.append(data.draw(st.sampled_from([-1.0, 1.0]), label=f"sign of A {i}") if row_sign is None
                            else float(row_sign[i // t]))
            else:
                top = (c - 1e-2) if c is not None else hi + 20.0
                if top <= hi + 1e-2:
                    logr.append(data.draw(st.floats(lo + 1e-2, hi - 1e-2), label=f"log-ratio {i}"))
                else:
                    logr.append(data.draw(st.floats(hi + 1e-2, top), label=f"log-ratio {i}"))
                sign_list.append(-1.0)
        sign = np.array(sign_list)
    logr_a = np.array(logr, dtype=np.float64).reshape(b, t)
    signs = np.asarray(sign, dtype=np.float64).reshape(b, t)
    if per_seq:  # one advantage per row: every token of a row has the row's sign
        assert np.all(signs == signs[:, :1])
        adv = round_to(signs[:, 0] * adv_mag, dtype)
    else:
        adv = round_to(signs * adv_mag.reshape(b, t), dtype)
    anchor = np.array(data.draw(st.lists(st.floats(-20.0, 0.0), min_size=n, max_size=n), label="log-prob anchors"))
    lp, olp = _place(anchor.reshape(b, t), logr_a, dtype)
    lp = push_away(lp, olp, cfg, dtype)
    mask = draw_mask(data, b, t, allow_empty=True)
    return Case(lp, olp, adv, mask, cfg, dtype)


def draw_dual_clip_case(data: Any, *, dtypes: Sequence[str] = ("float64", "float32"),
                        adv_forms: Sequence[str] = ("token", "sequence")) -> Case:
    """A batch with dual clip on and every token above log c (spec S7), for the dual-clip property.

    Tokens are of the three `DUAL_CLIP_KINDS`; the first three tokens of row 0 are one of each and
    always valid, the rest are drawn freely (kind, mask). So every example separates a correct port
    from one that slips on any of the three, whatever examples a Hypothesis version happens to
    generate: mixed batches reach these places too rarely to rely on. With one advantage per row
    (``token`` not in `adv_forms`) row 0 (A < 0) holds the first two kinds and row 1 (A > 0) the third.
    """
    cfg = draw_config(data, dual=True)
    assert cfg.dual_clip is not None and cfg.log_dual_clip is not None
    per_seq = "token" not in adv_forms
    _draw_per_seq(data, adv_forms)  # validates adv_forms
    b = data.draw(st.integers(2 if per_seq else 1, 3), label="B")
    t = data.draw(st.integers(3, 6), label="T")
    n = b * t
    dtype = data.draw(st.sampled_from(list(dtypes)), label="dtype")
    c, log_c = cfg.dual_clip, cfg.log_dual_clip
    if per_seq:
        row_sign = [-1.0, 1.0, *data.draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=b - 2, max_size=b - 2),
                                           label="sign of the advantage of rows 2+")]
        first = {0: list(DUAL_CLIP_KINDS[:2]), t: [DUAL_CLIP_KINDS[2]]}  # flat index -> forced kinds
        kinds = []
        for i in range(n):
            forced = [k for start, ks in first.items() for j, k in enumerate(ks) if start + j == i]
            allowed = list(DUAL_CLIP_KINDS[:2]) if row_sign[i // t] < 0 else [DUAL_CLIP_KINDS[2]]
            kinds.append(forced[0] if forced else data.draw(st.sampled_from(allowed), label=f"token kind {i}"))
    else:
        free = data.draw(st.lists(st.sampled_from(DUAL_CLIP_KINDS), min_size=n - 3, max_size=n - 3),
                         label="token kinds after the first three")
        kinds = list(DUAL_CLIP_KINDS) + free
    ranges = {  # c - log c >= 1 for every c > 1, so the band is never empty
        DUAL_CLIP_KINDS[0]: (log_c + 1e-2, c - 1e-2),
        DUAL_CLIP_KINDS[1]: (c + 1e-2, c + 20.0),
        DUAL_CLIP_KINDS[2]: (log_c + 1e-2, c + 20.0),
    }
    logr = np.array([data.draw(st.floats(*ranges[k]), label=f"log-ratio {i} ({k})") for i, k in enumerate(kinds)])
    sign = np.array([1.0 if k.startswith("A>0") else -1.0 for k in kinds]).reshape(b, t)
    adv_mag = np.array(data.draw(st.lists(st.floats(0.01, 5.0), min_size=b if per_seq else n,
                                          max_size=b if per_seq else n), label="|advantages|"))
    adv = round_to(sign[:, 0] * adv_mag if per_seq else sign * adv_mag.reshape(b, t), dtype)
    anchor = np.array(data.draw(st.lists(st.floats(-20.0, 0.0), min_size=n, max_size=n), label="log-prob anchors"))
    lp, olp = _place(anchor.reshape(b, t), logr.reshape(b, t), dtype)
    lp = push_away(lp, olp, cfg, dtype)
    mask = draw_mask(data, b, t, allow_empty=True)
    if per_seq:
        mask[0, :2] = True
        mask[1, 0] = True
    else:
        mask[0, :3] = True
    return Case(lp, olp, adv, mask, cfg, dtype)


# -- kernel-scale shapes ------------------------------------------------------------------------------
BLOCK_T: tuple[int, ...] = (1, 63, 64, 65, 127, 128, 129, 1000, 4097)
"""Sequence lengths on both sides of the usual kernel block sizes (64, 128, 1024, 4096), smallest first."""
BLOCK_B: tuple[int, ...] = (1, 2, 7, 8, 9, 31, 32, 33, 63, 64)
"""Batch sizes on both sides of the usual warp and block counts; B is drawn from these or any of 1..64."""
LARGE_SHAPES: tuple[tuple[int, int], ...] = ((256, 4097), (1024, 1024), (64, 16385), (2048, 513))
"""About 2^20 tokens each: where size-dependent fast paths (chunked reductions, split kernels) start."""
MASK_STYLES: tuple[str, ...] = ("ragged", "holes", "mixed", "all")
"""Masks of the scale cases: ragged right-padded rows, random holes, a mix of every row kind, all valid.

The million-token cases are never all valid: real batches of that size are padded, and a chunked
reduction that averages per-chunk means is right exactly when every chunk holds as many tokens."""


def _scale_logr(rng: np.random.Generator, cfg: Any, shape: tuple[int, int]) -> np.ndarray:
    """Log-ratios of every kind of `_KINDS`, uniformly mixed (the vectorised twin of `_logr_strategy`)."""
    kind = rng.integers(0, len(_KINDS), size=shape)
    lower, upper, beyond = reference_points(cfg)
    centre = np.select([kind == 0, kind == 1, kind == 2], [lower, upper, beyond], 0.0)
    near = centre + rng.uniform(-0.5, 0.5, size=shape)
    far = np.where(kind == 4, rng.uniform(-20.0, -1.0, size=shape), rng.uniform(1.0, 20.0, size=shape))
    return np.where(kind <= 2, near, np.where(kind == 3, rng.uniform(-0.3, 0.3, size=shape), far))


def _scale_mask(rng: np.random.Generator, style: str, b: int, t: int) -> np.ndarray:
    """A (B, T) mask of `style`; one row always reaches the last token and every block edge below T."""
    cols = np.arange(t)
    lengths = rng.integers(1, t + 1, size=b)
    if style == "all":
        return np.ones((b, t), dtype=bool)
    if style == "ragged":
        m = cols[None, :] < lengths[:, None]
    elif style == "holes":
        m = rng.random((b, t)) < rng.uniform(0.2, 0.9)
    else:  # mixed: every row kind of `draw_mask`, per row
        kind = rng.integers(0, 5, size=b)[:, None]
        single = cols[None, :] == rng.integers(0, t, size=b)[:, None]
        m = np.select([kind == 0, kind == 1, kind == 2, kind == 3],
                      [np.ones((b, t), dtype=bool), cols[None, :] < lengths[:, None], single,
                       rng.random((b, t)) < 0.5], False)
    row = int(rng.integers(0, b))  # a port that drops the tail or a block edge must be seen doing it
    edges = [e + d for e in (64, 128, 1024, 4096) for d in (-1, 0, 1) if 0 <= e + d < t]
    m[row, [*edges, t - 1]] = True
    return m


def scale_case(*, b: int, t: int, seed: int, dtype: str, cfg: Any, mask: str = "ragged",
               advantages: str = "token") -> Case:
    """A (b, t) case of the scale properties, built from `seed` by NumPy alone (no Hypothesis).

    Log-ratios reach every region as in `draw_case`, advantages are 0, +-1 or in [-5, 5], per
    token (``advantages="token"``) or per sequence (``"sequence"``); `mask` is one of
    `MASK_STYLES`. The same arguments give the same case on any machine, which is how a
    reproducer of a million-token failure stays one line (``cc.scale_case(...)``).
    """
    if mask not in MASK_STYLES:
        raise ValueError(f"mask must be one of {MASK_STYLES}, got {mask!r}")
    if advantages not in ("token", "sequence"):
        raise ValueError(f"advantages must be 'token' or 'sequence', got {advantages!r}")
    if b < 1 or t < 1:
        raise ValueError(f"b and t must be >= 1, got b={b}, t={t}")
    return _scale_case(b, t, seed, dtype, cfg, mask, advantages, active())


# A derandomized run draws the same cases for every implementation it checks (the project checks
# dozens of ports): a case is immutable, so the last few are kept instead of rebuilt (~1 s at 2^20).
@functools.lru_cache(maxsize=4)
def _scale_case(b: int, t: int, seed: int, dtype: str, cfg: Any, mask: str, advantages: str,
                conventions: Conventions) -> Case:
    rng = np.random.default_rng(seed)
    shape = (b, t)
    logr = _scale_logr(rng, cfg, shape)
    anchor = rng.uniform(-20.0, 0.0, size=shape)
    adv_shape = shape if advantages == "token" else (b,)
    pick = rng.random(adv_shape)
    adv = np.where(pick < 0.1, 0.0, np.where(pick < 0.3, rng.choice([-1.0, 1.0], size=adv_shape),
                                             rng.uniform(-5.0, 5.0, size=adv_shape)))
    adv = round_to(adv, dtype)
    lp, olp = _place(anchor, logr, dtype)
    lp = push_away(lp, olp, cfg, dtype)
    m = _scale_mask(rng, mask, b, t)
    lp = push_rows_away(lp, olp, m, cfg, dtype)
    recipe = (f"cc.scale_case(b={b}, t={t}, seed={seed}, dtype={dtype!r}, cfg=cegppo.{cfg!r}, mask={mask!r}, "
              f"advantages={advantages!r})")
    return Case(lp, olp, adv, m, cfg, dtype, recipe=recipe, conventions=conventions)


def draw_scale_case(data: Any, *, large: bool = False, dtypes: Sequence[str] = ("float64", "float32"),
                    adv_forms: Sequence[str] = ("token", "sequence")) -> Case:
    """A case at kernel scale: T in `BLOCK_T` and B up to 64, or (``large``) one of `LARGE_SHAPES`.

    Hypothesis draws the shape, dtype, hyperparameters, mask style, advantage form and a seed;
    `scale_case` builds the arrays from them.
    """
    if large:
        b, t = data.draw(st.sampled_from(LARGE_SHAPES), label="(B, T) of about 2^20 tokens")
    else:
        t = data.draw(st.sampled_from(BLOCK_T), label="T")
        b = data.draw(st.one_of(st.sampled_from(BLOCK_B), st.integers(1, 64)), label="B")
    dtype = data.draw(st.sampled_from(list(dtypes)), label="dtype")
    cfg = draw_member_config(data)
    mask = data.draw(st.sampled_from(MASK_STYLES[:-1] if large else MASK_STYLES), label="mask style")
    form = "sequence" if _draw_per_seq(data, adv_forms) else "token"
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed of the token values")
    return scale_case(b=b, t=t, seed=seed, dtype=dtype, cfg=cfg, mask=mask, advantages=form)
