"""A diagnosis for every failure: the cheap hypothesis that explains the difference, and its defect class.

When a property fails, the kit holds the failing case. It calls the port on it once more and tests
hypotheses against that one result, by evaluating the reference under variant conventions (a
normalizer epsilon, a default dual clip, float32 arithmetic), by looking at where the difference
sits (which region, which tokens are non-finite and why, whether the gradient is scaled uniformly
or per row), or by small edits of the case (garbage at masked positions cleaned, an empty row
removed). The first hypothesis that fits is the diagnosis; where none fits, it says so.

Every diagnosis has a defect class (`DEFECT_CLASSES`), ranked for the verdict: an undeclared
convention first (a declaration makes it pass, if intended), then the defects in the order a user
should fix them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import cegppo
import numpy as np
from cegppo import CEGPPOConfig
from cegppo._aggregation_modes import AGG_TABLE

from ._adapters import Adapter, PortError, Result
from ._cases import GRAD_TOL, VALUE_TOL, Case, Expected, expected, tol_dtype

__all__ = ["DEFECT_CLASSES", "FIXES", "Diagnosis", "diagnose"]

DEFECT_CLASSES: tuple[str, ...] = (
    "undeclared convention",
    "non-finite",
    "wrong gradient by region",
    "wrong value",
    "precision",
    "aggregation",
    "contract/harness",
)
"""Defect classes, in the order of the verdict table (an undeclared convention is still a failure)."""

FIXES: dict[str, str] = {
    "undeclared convention": "declare it (the diagnosis names the option and flag) if it is intended, else follow the spec",
    "non-finite": "select, then exponentiate (S9.2); delta / sg(delta) as exp(r - sg(r)) with derivative 1 (S9.1); "
                  "where(mask, x, 0) before arithmetic (S9.3); divide by max(count, 1) (S8.4)",
    "wrong gradient by region": "keep the clipped tokens' gradient: beta * bound * exp(r - sg(r)) * A, the "
                                "stop-gradient on the denominator only, no clamp of the log-ratio (S4, S9.1)",
    "wrong value": "check the region conditions, the hyperparameters and the sign of the loss against S2-S3",
    "precision": "compute in float32 for half inputs and in float64 for float64 inputs (S9.5)",
    "aggregation": "divide by the mode's count of valid tokens / non-empty rows, never by padded sizes (S8.1-S8.4)",
    "contract/harness": "take the declared arguments, return a scalar of the framework, leave the inputs unchanged "
                        "and old_log_prob / advantages constant (S1, S4)",
}
"""One-line fix per defect class (the verdict table)."""


@dataclass(frozen=True)
class Diagnosis:
    """The hypothesis that explains a failure: its defect class and one line saying what was found."""

    defect_class: str
    text: str

    def __post_init__(self) -> None:
        if self.defect_class not in DEFECT_CLASSES:
            raise ValueError(f"defect_class must be one of {DEFECT_CLASSES}, got {self.defect_class!r}")


_NO_FIT = "no hypothesis fits: compare the reproducer's loss and gradient with the reference's, token by token"
_EPS_CANDIDATES = (1e-8, 1e-6, 1e-5, 1e-7, 1e-10, 1e-12)
_DEFAULT_C = (3.0, 10.0)
# Where exp(r) leaves the range of the compute dtype (spec S9.1): above it overflows, below it underflows.
_F16_LOG_MAX = math.log(65504.0)  # float16's largest finite value
_EXP_RANGE = {"float64": (-745.0, 709.7), "float32": (-103.9, 88.7)}


def diagnose(prop_id: str, case: Case | None, adapter: Adapter, exc: BaseException | None = None) -> Diagnosis:
    """The diagnosis of property `prop_id` failing on `case` (never raises: a hypothesis that errs does not fit)."""
    if exc is not None and _is_contract(prop_id, exc):
        return _contract(prop_id, exc)
    if not isinstance(case, Case) or adapter.target != "loss":
        return Diagnosis("contract/harness" if isinstance(exc, PortError) else "wrong value", _NO_FIT)
    try:
        with np.errstate(all="ignore"):
            return _diagnose_case(prop_id, case, adapter)
    except Exception as err:  # a hypothesis that cannot be evaluated says nothing about the port
        return Diagnosis("wrong value", f"{_NO_FIT} (the diagnosis stopped: {type(err).__name__}: {err})")


def _is_contract(prop_id: str, exc: BaseException) -> bool:
    return isinstance(exc, PortError) or prop_id.startswith(("S1 inputs are not", "S1 declared", "S4 old_log_prob"))


def _contract(prop_id: str, exc: BaseException) -> Diagnosis:
    if prop_id.startswith("S4 old_log_prob"):
        return Diagnosis("contract/harness", "a gradient flows into old_log_prob or advantages: they are constants "
                                             "of the loss (detach / stop_gradient them)")
    if prop_id == "S1 inputs are not modified":
        return Diagnosis("contract/harness", "the port writes into its inputs (in-place masking): work on copies")
    if prop_id.startswith("S1 declared"):
        return Diagnosis("contract/harness", "the port rejects an advantage shape it declares: declare what it takes "
                                             "(--advantages)")
    what = getattr(exc, "got", exc)
    return Diagnosis("contract/harness", f"the port raised or returned no scalar loss ({_first_line(what)}): "
                                         "it must take the standard arguments and return a 0-d loss")


def _first_line(x: Any) -> str:
    return str(x).strip().splitlines()[0][:160] if str(x).strip() else type(x).__name__


# -- comparing one result with a reference -------------------------------------------------------------
def _value_ok(case: Case, got: float, want: Expected, key: str | None = None) -> bool:
    rtol, atol = VALUE_TOL[key or tol_dtype(case)]
    if math.isnan(want.value):
        return math.isnan(got)
    return math.isfinite(got) and abs(got - want.value) <= atol + rtol * max(want.scale, abs(want.value))


def _grad_bad(case: Case, got: np.ndarray | None, want: Expected, key: str | None = None) -> np.ndarray:
    """The elements of the gradient outside tolerance (none when the port has no gradient)."""
    if got is None:
        return np.zeros(case.shape, dtype=bool)
    k = key or tol_dtype(case)
    if case.dtype in ("bfloat16", "float16") and key is None:
        k = f"{case.dtype}-grad"
    rtol, atol = GRAD_TOL[k]
    w = want.grad
    finite = w[np.isfinite(w)]
    gmax = float(np.max(np.abs(finite))) if finite.size else 0.0
    ok = np.isfinite(got) & (np.abs(got - w) <= atol * gmax + rtol * np.abs(w) + 1e-300)
    ok |= np.isinf(w) & (got == w)
    return ~ok


def _matches(case: Case, r: Result, want: Expected, key: str | None = None) -> bool:
    return _value_ok(case, r.value, want, key) and not _grad_bad(case, r.grad, want, key).any()


# -- the hypotheses --------------------------------------------------------------------------------------
def _diagnose_case(prop_id: str, case: Case, ad: Adapter) -> Diagnosis:
    if prop_id.startswith("S7") and case.cfg.dual_clip is not None and ad.conventions.dual_clip != "required":
        off = case.with_(cfg=case.cfg.replace(dual_clip=None))
        found = _explain(off, ad.run(off), ad, prop_id)
        if found is not None:
            return found
    if case.layout != "contiguous":  # only S1 inputs as views hands views: it compared them with contiguous inputs
        return Diagnosis("contract/harness", f"the result on {case.layout} views differs from the result on contiguous "
                         "inputs holding the same numbers: the port assumes contiguous row-major memory (as_strided, "
                         "data_ptr arithmetic, a kernel without strides); call .contiguous() or pass the strides")
    r = ad.run(case)
    found = _explain(case, r, ad, prop_id)
    if found is not None:
        return found
    return _port_vs_port(prop_id, case, r, ad)


def _explain(case: Case, r: Result, ad: Adapter, prop_id: str) -> Diagnosis | None:
    """The hypothesis that explains how `r` differs from the reference on `case`; None when it matches it."""
    want = expected(case)
    non_finite = not math.isfinite(r.value) or (r.grad is not None and not np.all(np.isfinite(r.grad)))
    if non_finite and (math.isfinite(want.value) or not math.isnan(r.value)):
        return _non_finite(case, r, ad)
    if prop_id.startswith("S9.5 float64") and r.out_dtype != "float64":
        conv = _convention_variant(case, r, ad, extra={"compute_dtype": "float32"})
        return Diagnosis("undeclared convention", f"the loss comes back as {r.out_dtype} for float64 inputs"
                         + (f"; {conv.text}" if conv else "") + "; declare --compute-dtype float32 "
                         "(compute_dtype='float32') if that is intended, else keep float64 (S9.5)")
    if _matches(case, r, want):
        return None
    for hypothesis in (_convention_variant, _partial_float32, _half_precision, _sign, _normalizer, _by_region, _ppo, _value_only):
        found = hypothesis(case, r, ad, want=want)
        if found is not None:
            return found
    return Diagnosis("wrong value", _NO_FIT)


def _non_finite(case: Case, r: Result, ad: Adapter) -> Diagnosis:
    m = case.mask
    what = "loss" if not math.isfinite(r.value) else "gradient"
    logr = case.log_prob - case.old_log_prob
    # A ratio formed (or cast back) in float16 is inf beyond a log-ratio of 11.09, masked position or not;
    # the finite value hides it, the backward pass does not (inf * 0 = NaN).
    f16_over = np.isfinite(logr) & (logr > _F16_LOG_MAX)
    if case.dtype == "float16" and f16_over.any():
        tamed = case.with_(old_log_prob=np.where(f16_over, case.log_prob, case.old_log_prob))  # log-ratio 0 there
        rt = ad.run(tamed)
        if math.isfinite(rt.value) and (rt.grad is None or np.all(np.isfinite(rt.grad))):
            return Diagnosis("non-finite", f"non-finite {what} where the ratio overflows float16 (log-ratio "
                             f"{float(logr[f16_over][0])!r} > {_F16_LOG_MAX:.2f}, finite once that log-ratio is "
                             "0): the ratio is formed or cast back in float16; keep it and the arithmetic after it "
                             "in float32 (S9.5), and select masked positions away before exponentiating (S9.2, S9.3)")
    if not m.any():
        eps = case.conventions.normalizer_eps
        why = (f"count + {eps:g} computed in float16, where {eps:g} underflows to 0 (below 6e-8)"
               if eps and eps < 6e-8 and case.dtype == "float16" else "the count is not clamped")
        return Diagnosis("non-finite", f"an all-masked batch gives a {what} of {r.value!r}: 0 / 0 ({why}): "
                         "divide by max(count, 1), in float32 for half inputs (S8.4)")
    holes = ~m
    dirty = any(np.any(~np.isfinite(a[holes]) | (np.abs(a[holes]) > 1e4)) for a in (case.log_prob, case.old_log_prob)
                ) or (case.adv_form == "token" and np.any(~np.isfinite(case.advantages[holes])))
    if dirty:
        clean = _cleaned(case)
        rc = ad.run(clean)
        if math.isfinite(rc.value) and (rc.grad is None or np.all(np.isfinite(rc.grad))):
            return Diagnosis("non-finite", f"non-finite {what} from garbage at masked positions (NaN, inf or 1e30 "
                             "there): select it away with where(mask, x, 0) before any arithmetic; multiplying by "
                             "the mask leaves 0 * NaN = NaN (S9.3)")
    empty_rows = ~m.any(axis=-1)
    if empty_rows.any() and m.any():
        kept = case.with_(log_prob=case.log_prob[~empty_rows], old_log_prob=case.old_log_prob[~empty_rows],
                          advantages=case.advantages[~empty_rows], mask=m[~empty_rows])
        rk = ad.run(kept)
        if math.isfinite(rk.value) and (rk.grad is None or np.all(np.isfinite(rk.grad))):
            return Diagnosis("aggregation", f"non-finite {what} from an empty row (a row with no valid token) in "
                             f"{case.agg}: the row's mean divides 0 by its count 0; give empty rows weight 0 and "
                             "count only non-empty rows in S (S8.1, S8.2)")
    lo, hi = _EXP_RANGE["float64" if tol_dtype(case) == "float64" else "float32"]
    outside = m & ((logr > hi) | (logr < lo) | ~np.isfinite(logr))
    bad = (~np.isfinite(r.grad)) if r.grad is not None else np.zeros(case.shape, dtype=bool)
    if outside.any() and (not bad.any() or np.all(outside[bad] | ~m[bad])):
        where = f"log-ratio {float(logr[outside][0])!r}"
        return Diagnosis("non-finite", f"non-finite {what} only where the ratio overflows or underflows ({where}; "
                         f"exp leaves the range of {tol_dtype(case)}): select, then exponentiate (S9.2), and form "
                         "delta / sg(delta) as exp(r - sg(r)) with value 1 and derivative 1, not as a quotient of "
                         "ratios (S9.1)")
    return Diagnosis("non-finite", f"non-finite {what} at finite, in-range inputs; {_NO_FIT}")


def _cleaned(case: Case) -> Case:
    """`case` with 0 at every masked position (the garbage removed)."""
    holes = ~case.mask
    out = {}
    for name in ("log_prob", "old_log_prob"):
        a = getattr(case, name).copy()
        a[holes] = 0.0
        out[name] = a
    if case.adv_form == "token":
        a = case.advantages.copy()
        a[holes] = 0.0
        out["advantages"] = a
    return case.with_(**out)


def _convention_variant(case: Case, r: Result, ad: Adapter, *, want: Expected | None = None,
                        extra: dict[str, Any] | None = None) -> Diagnosis | None:
    """Whether the reference under an undeclared convention (epsilon, default dual clip, float32) matches `r`."""
    conv = case.conventions
    variants: list[tuple[list[str], Case]] = []
    c_options: list[float | None] = [_dual_clip(case.cfg)]
    # the other members have no dual clip to default to or to ignore
    if isinstance(case.cfg, CEGPPOConfig) and case.cfg.dual_clip is None:
        c_options += list(_DEFAULT_C)
    elif isinstance(case.cfg, CEGPPOConfig):  # a port without a dual clip ignores the c it is given
        c_options.append(None)
    eps_options: list[float | None] = [conv.normalizer_eps]
    if conv.normalizer_eps == 0.0:
        eps_options += [_eps_estimate(case, r, c) for c in c_options]
        if _small(case):
            eps_options += list(_EPS_CANDIDATES)
    f32_options = [conv.compute_dtype]
    # float32 arithmetic shows in the loss's dtype; a float64 loss within float32 tolerance may be something
    # else (a clamped log-ratio, an epsilon): `_partial_float32` asks for float32 rounding at every token
    if case.dtype == "float64" and conv.compute_dtype is None and r.out_dtype == "float32":
        f32_options.append("float32")
    seen = set()
    for c in c_options:
        for eps in dict.fromkeys(e for e in eps_options if e is not None):
            for cd in f32_options:
                changes = []
                if c is None and _dual_clip(case.cfg) is not None:
                    changes.append(f"with clip_ratio_c={case.cfg.dual_clip:g} the result equals the reference without "
                                   "a dual clip: the port ignores clip_ratio_c; declare --dual-clip absent "
                                   "(dual_clip='absent') if it has no dual clip")
                elif c != _dual_clip(case.cfg):
                    changes.append(f"with clip_ratio_c=None the result equals the reference with c = {c:g}: a default "
                                   "dual clip; declare --dual-clip required (dual_clip='required') if the port has no "
                                   "off switch")
                if eps != conv.normalizer_eps:
                    changes.append(f"every difference is {_relative(case, r, eps):.1e} relative: consistent with "
                                   f"dividing by count + {eps:g}; declare --normalizer-eps {eps:g} "
                                   f"(normalizer_eps={eps:g}) if that is intended")
                if cd != conv.compute_dtype:
                    changes.append("float64 inputs match the reference computed in float32; declare --compute-dtype "
                                   "float32 (compute_dtype='float32') if that is intended")
                key = (c, eps, cd)
                if not changes or key in seen:
                    continue
                seen.add(key)
                variants.append((changes, case.with_(cfg=_with_dual_clip(case.cfg, c),
                                                     conventions=replace(conv, normalizer_eps=eps, compute_dtype=cd))))
    # exact hypotheses first: float32 arithmetic is compared at float32 tolerance, which an epsilon of 1e-8 also meets
    variants.sort(key=lambda v: (v[1].conventions.compute_dtype != conv.compute_dtype, len(v[0])))
    budget = len(variants) if _small(case) else 3  # a million-token reference costs a second
    for changes, variant in variants[:budget]:
        if _matches(variant, r, expected(variant)):
            return Diagnosis("undeclared convention", "; ".join(changes))
    return None


_F32_ROUNDING = 1e-5
"""Relative difference of a few float32 roundings (float32's epsilon is 1.2e-7) in a loss or a gradient."""


def _partial_float32(case: Case, r: Result, ad: Adapter, *, want: Expected) -> Diagnosis | None:
    """A float64 loss that differs from the reference by float32 rounding only, at every token: part of the
    arithmetic runs in float32 (SkyRL exponentiates the log-ratio in float32 and casts it back).

    Token by token, not against the batch's scale: a clamped log-ratio also moves a million-token loss
    by less than float32 tolerance, but it zeroes gradients, which no rounding does.
    """
    if case.dtype != "float64" or case.conventions.compute_dtype is not None or r.out_dtype != "float64":
        return None
    if not _small(case):  # a million-token sum averages rounding out: any change of 1e-8 looks like it
        return None
    if abs(r.value - want.value) > _F32_ROUNDING * max(want.scale, abs(want.value)):
        return None
    if r.grad is not None:
        # each token's gradient is its own product (-A F / N): rounding moves it relative to itself
        off = np.abs(r.grad - want.grad) > _F32_ROUNDING * np.abs(want.grad) + 1e-30
        if np.any(off & case.mask):
            return None
    return Diagnosis("undeclared convention", "float64 inputs match the reference only to float32 rounding, though "
                     "the loss comes back float64: part of the arithmetic runs in float32; declare --compute-dtype "
                     "float32 (compute_dtype='float32') if that is intended")


def _dual_clip(cfg: Any) -> float | None:
    """CE-GPPO's dual clip c; None for the other members of the family, which have none (spec S14)."""
    return cfg.dual_clip if isinstance(cfg, CEGPPOConfig) else None


def _with_dual_clip(cfg: Any, c: float | None) -> Any:
    """`cfg` with dual clip `c` (CE-GPPO); another member's config, which has none, unchanged."""
    return cfg.replace(dual_clip=c) if isinstance(cfg, CEGPPOConfig) else cfg


def _small(case: Case) -> bool:
    """Whether a reference evaluation of `case` costs milliseconds (not a kernel-scale or million-token case)."""
    return case.log_prob.size <= 100_000


def _eps_estimate(case: Case, r: Result, c: float | None) -> float | None:
    """The epsilon e with loss = reference * D / (D + e), rounded to a power of ten (None if there is none)."""
    d = _divisor(case)
    variant = case.with_(cfg=_with_dual_clip(case.cfg, c))
    want = expected(variant).value
    if d is None or not r.value or not want or not math.isfinite(r.value):
        return None
    e = d * (want / r.value - 1.0)
    if not 0.0 < e <= 1e-2:
        return None
    return float(10.0 ** round(math.log10(e)))


def _divisor(case: Case) -> float | None:
    mode = AGG_TABLE[case.agg]
    if mode.normalizer == "num_tokens":
        return float(case.mask.sum() if case.num_tokens is None else case.num_tokens) or None
    if mode.normalizer == "num_seqs" and not mode.per_row_mean:
        return float(case.mask.any(-1).sum() if case.num_seqs is None else case.num_seqs) or None
    return None


def _relative(case: Case, r: Result, eps: float) -> float:
    d = _divisor(case)
    return eps / (d + eps) if d else eps


def _half_precision(case: Case, r: Result, ad: Adapter, *, want: Expected) -> Diagnosis | None:
    if case.dtype not in ("float16", "bfloat16"):
        return None
    # a few roundings of the half type's epsilon (2^-8 for bfloat16, 2^-11 for float16) over the terms
    rel = 2.0**-8 if case.dtype == "bfloat16" else 2.0**-11
    if abs(r.value - want.value) <= 8 * rel * max(want.scale, abs(want.value)):
        return Diagnosis("precision", f"{case.dtype} inputs match the reference only to {case.dtype} precision "
                         f"(difference {abs(r.value - want.value):.2g} on a scale of {want.scale:.3g}): consistent "
                         f"with computing in {case.dtype}; upcast to float32 before any arithmetic (S9.5)")
    return None


def _sign(case: Case, r: Result, ad: Adapter, *, want: Expected) -> Diagnosis | None:
    flipped = Expected(-want.value, -want.grad, want.scale)
    if want.value != 0 and _matches(case, r, flipped):
        return Diagnosis("wrong value", "the loss and gradient have the opposite sign: return the loss -J, not the "
                                        "objective J (S3)")
    return None


def _ppo(case: Case, r: Result, ad: Adapter, *, want: Expected) -> Diagnosis | None:
    """Value and gradient are PPO-clip's (textbook min/clip, arXiv 1707.06347 Eq. 7): clipped tokens have no gradient."""
    from ._prop_special import textbook  # the independent PPO formula of S6

    if not isinstance(case.cfg, CEGPPOConfig):  # PPO is a row of CE-GPPO's beta family only (S6)
        return None
    if case.cfg.beta_low == 0 and case.cfg.beta_high == 0 and _value_ok(case, r.value, want):
        return None  # CE-GPPO with beta = 0 has PPO's gradient: nothing tells them apart but the value
    ref = textbook(case)
    ppo = Expected(ref["value"], ref["ppo_grad"], ref["scale"])
    if _matches(case, r, ppo) or (r.grad is None and _value_ok(case, r.value, ppo)):
        return Diagnosis("wrong gradient by region", "value and gradient equal PPO-clip's (min / clip, arXiv "
                         "1707.06347 Eq. 7): clipped tokens keep the value bound * A and get no gradient; the loss is "
                         "PPO, not CE-GPPO (whose gradient equals PPO's only with beta = 0, S6.1)")
    return None


def _normalizer(case: Case, r: Result, ad: Adapter, *, want: Expected) -> Diagnosis | None:
    """The gradient is the reference's times one factor (a different normalizer), or one factor per row."""
    if r.grad is None:  # a NumPy port: the value's ratio alone
        if not want.value or not math.isfinite(r.value):
            return None
        m = np.ones((1, 1), dtype=bool)
        ratio = np.array([[r.value / want.value]])
    else:
        m = case.mask & (np.abs(want.grad) > 0) & np.isfinite(r.grad)
        if m.sum() < 1:
            return None
        ratio = np.where(m, r.grad / np.where(m, want.grad, 1.0), np.nan)
    k = ratio[m]
    close = float(np.max(np.abs(k - k[0]))) <= 1e-4 * abs(k[0]) if k.size else False
    if close and abs(k[0] - 1.0) > 1e-4 and k[0] > 0:
        d = _divisor(case) or 1.0
        d_port = d / float(k[0])
        b, t = case.shape
        named = {b * t: f"B * T = {b * t}: a mean over padded positions", b: f"B = {b}: the number of rows",
                 t: f"T = {t}: the padded length"}
        what = next((v for n, v in named.items() if abs(d_port - n) <= 1e-6 * n), f"{d_port:.6g}")
        return Diagnosis("aggregation", f"loss and gradient are the reference's times {float(k[0]):.6g} everywhere: "
                         f"the port divides by {what} instead of {d:g} ({case.agg}, S8.1)")
    if r.grad is None:
        return None
    rows = [ratio[i][m[i]] for i in range(case.shape[0]) if m[i].any()]
    # A per-row divisor scales each row by a positive factor; a factor 0 is a missing gradient, not a weight.
    if len(rows) > 1 and all(float(np.ptp(x)) <= 1e-4 * abs(float(x[0])) and float(x[0]) > 0 for x in rows) and \
            float(np.ptp([x[0] for x in rows])) > 1e-4:
        return Diagnosis("aggregation", "the gradient differs from the reference by one factor per row: rows are "
                         f"weighted per sequence (e.g. seq-mean-token-mean) where {case.agg} is asked (S8.1)")
    return None


def _by_region(case: Case, r: Result, ad: Adapter, *, want: Expected) -> Diagnosis | None:
    """Where the gradient differs: clipped tokens with a zero gradient, one region only, beyond |log-ratio| 20."""
    bad = _grad_bad(case, r.grad, want) & case.mask
    if r.grad is None or not bad.any() or not isinstance(case.cfg, CEGPPOConfig):  # regions are CE-GPPO's (S2)
        return None
    regions = cegppo.token_regions(case.log_prob, case.old_log_prob, case.advantages, case.cfg)
    clipped = regions.clip_low | regions.clip_high
    logr = case.log_prob - case.old_log_prob
    got = r.grad
    # "0" up to the rounding of a quotient such as delta / delta, whose derivative cancels to ~1e-9, not to 0
    zero = np.abs(got[bad]) <= 1e-3 * np.abs(want.grad[bad])
    if np.all(zero) and np.all(np.abs(logr[bad]) > 20):
        return Diagnosis("wrong gradient by region", "the gradient is 0 exactly where |log-ratio| > 20 and right "
                         "elsewhere: the log-ratio is clamped (verl clamps at +-20), which erases the restored "
                         "gradient of clipped tokens (S9.1)")
    if np.all(clipped[bad]):
        if np.all(zero):
            return Diagnosis("wrong gradient by region", "the gradient of clipped tokens is 0: the restored gradient "
                             "is missing (delta / delta without the stop-gradient, or PPO's clip); CE-GPPO keeps "
                             "beta * bound * A (S4)")
        if np.all(np.sign(got[bad]) == -np.sign(want.grad[bad])):
            return Diagnosis("wrong gradient by region", "the gradient of clipped tokens has the wrong sign: the "
                             "stop-gradient is on the wrong side (sg(delta) / delta instead of delta / sg(delta)) (S4)")
    names = [n for n in ("clip_low", "clip_high", "dual_clip", "inside") if np.any(getattr(regions, n)[bad])]
    value = "" if _value_ok(case, r.value, want) else " (the value differs too)"
    if len(names) == 1 or (len(names) == 2 and set(names) <= {"clip_low", "clip_high"}):
        what = " and ".join(names)
        i = tuple(int(x) for x in np.argwhere(bad)[0])
        return Diagnosis("wrong gradient by region", f"the gradient differs only on {what} tokens{value} (token {i}: "
                         f"log-ratio {float(logr[i]):.4g}, A {float(case.adv_2d()[i]):.4g}, expected "
                         f"{float(want.grad[i]):.6g}, got {float(got[i]):.6g}): that region's condition or weight (S2, S4)")
    return None


def _value_only(case: Case, r: Result, ad: Adapter, *, want: Expected) -> Diagnosis | None:
    if r.grad is None or _grad_bad(case, r.grad, want).any() or _value_ok(case, r.value, want):
        return None
    return Diagnosis("wrong value", f"only the value differs, by a constant {r.value - want.value:.6g}, the "
                     "gradient is right: a term without gradient (a detached or constant term) enters the loss (S3)")


# -- properties comparing the port with itself ------------------------------------------------------------
def _port_vs_port(prop_id: str, case: Case, r: Result, ad: Adapter) -> Diagnosis:
    """The port matches the reference on the failing case: the property compared it with itself."""
    checks: dict[str, Callable[[], Diagnosis | None]] = {
        "S8.3": lambda: _padding_or_empty_rows(case, r, ad),
        "S8.1": lambda: _padding_or_empty_rows(case, r, ad),
        "S9 deterministic": lambda: Diagnosis("contract/harness", "two calls on the same inputs differ: a "
                                              "nondeterministic reduction (atomics, unordered sums) (S9)"),
        "S9 compiled": lambda: Diagnosis("precision", "the compiled call differs from the eager one on inputs where "
                                         "eager matches the reference: a fusion or graph break that changes the "
                                         "numerics (S9)"),
        "S9.3": lambda: Diagnosis("non-finite", "values at masked positions change the result: select them away with "
                                  "where(mask, x, 0) before any arithmetic (S9.3)"),
    }
    for prefix, check in checks.items():
        if prop_id.startswith(prefix):
            found = check()
            if found is not None:
                return found
    return Diagnosis("wrong value", f"the port matches the reference on the failing input itself; {_NO_FIT}")


def _padding_or_empty_rows(case: Case, r: Result, ad: Adapter) -> Diagnosis | None:
    """The loss changes when a masked column or an empty row is added: the normalizer counts padding."""
    b, t = case.shape
    pad = np.zeros((b, 1))
    wider = case.with_(log_prob=np.hstack([case.log_prob, pad - 1.0]), old_log_prob=np.hstack([case.old_log_prob, pad - 1.0]),
                       advantages=(np.hstack([case.advantages, pad]) if case.adv_form == "token" else case.advantages),
                       mask=np.hstack([case.mask, np.zeros((b, 1), dtype=bool)]))
    if not _matches(wider, ad.run(wider), expected(wider)):
        return Diagnosis("aggregation", "the loss changes when a masked column is appended: the normalizer counts "
                         "padded positions (a mean over B * T, or the padded length); divide by the valid tokens (S8.1)")
    row = np.zeros((1, t))
    taller = case.with_(log_prob=np.vstack([case.log_prob, row - 1.0]), old_log_prob=np.vstack([case.old_log_prob, row - 1.0]),
                        advantages=np.concatenate([case.advantages, row if case.adv_form == "token" else np.zeros(1)]),
                        mask=np.vstack([case.mask, np.zeros((1, t), dtype=bool)]))
    rt = ad.run(taller)
    if not _matches(taller, rt, expected(taller)):
        finite = math.isfinite(rt.value)
        return Diagnosis("aggregation" if finite else "non-finite", "the loss changes when an empty row is appended"
                         + ("" if finite else f" (it becomes {rt.value!r}: 0 / 0 in the row's mean)")
                         + ": empty rows must count for nothing (weight 0, not counted in S) (S8.2)")
    return None
