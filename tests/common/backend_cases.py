"""Strategies and helpers shared by the backend tests (tests/backends, tests/torch, tests/jax) and the
reference's (tests/core) where a rule is the same everywhere.

Framework-neutral (NumPy only): tests/backends reaches a framework through its `backend` fixture,
and each framework folder adds its own tolerances and conversions (torch_cases.py, jax_cases.py). The conformance suite has its own, public, strategies
(cegppo.conformance: draw_case, draw_config ...) for the clauses it owns; these serve the
backend-only tests (per-token functions, aggregation helpers, metrics).
"""

from __future__ import annotations

from typing import Any

import cegppo
import numpy as np
import pytest
from cegppo.conformance import MARGIN
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = [
    "AGGREGATION_SHAPE_CASES",
    "BAD_TYPE_CALLS",
    "BAD_VALUE_CALLS",
    "COMPUTE_DTYPE_CASES",
    "CONFIGS",
    "FUSED_BAD_OPTIONS",
    "aggregation_shape_case_id",
    "away_from_kinks",
    "bad_type_argument",
    "check_aggregation_shape_case",
    "fused_option_id",
    "isclose_or_same_nonfinite",
    "policy_batches",
    "signature_drift",
]

CONFIGS = [
    cegppo.CEGPPOConfig(),
    cegppo.presets.ce_gppo_7b(),
    cegppo.presets.ce_gppo_official(),
    cegppo.presets.ppo(),
    cegppo.presets.dual_clip_ppo(),
    cegppo.presets.dapo(),
    cegppo.presets.gppo(),
    cegppo.CEGPPOConfig(eps_low=0.3, eps_high=0.5, beta_low=0.75, beta_high=2.0, dual_clip=1.5),
]
"""The presets and one asymmetric dual-clip config: every region of spec S2 with paper values."""


def away_from_kinks(logr: np.ndarray, cfg: cegppo.CEGPPOConfig, gap: float = MARGIN["float32"]) -> np.ndarray:
    """Move log-ratios within `gap` of a region boundary (clip bounds, dual clip) out of that band.

    The default is the conformance kit's margin for float32 and lower precisions, which covers the
    float32 and float64 comparisons of these tests."""
    out = np.array(logr, dtype=np.float64)
    bounds = [cfg.log_lower, cfg.log_upper] + ([] if cfg.log_dual_clip is None else [cfg.log_dual_clip])
    for b in bounds:
        near = np.abs(out - b) < gap
        out = np.where(near, b + np.where(out >= b, 2 * gap, -2 * gap), out)
    return out


def isclose_or_same_nonfinite(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """Finite entries close, non-finite entries identical (same inf sign, NaN where NaN).

    `a` and `b` are anything np.asarray reads as float64 (callers convert tensors with `to_np`).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    same_nonfinite = np.array_equal(np.isfinite(a), np.isfinite(b)) and np.array_equal(
        a[~np.isfinite(a)], b[~np.isfinite(b)], equal_nan=True
    )
    fin = np.isfinite(a) & np.isfinite(b)
    return bool(same_nonfinite and np.allclose(a[fin], b[fin], rtol=rtol, atol=atol))


@st.composite
def policy_batches(
    draw: Any,
    *,
    logr_scale: float = 1.0,
    per_sequence: bool | None = None,
    shape: tuple[int, int] | None = None,
    max_b: int = 6,
    max_t: int = 9,
    no_subnormal_advantages: bool = False,
) -> dict[str, Any]:
    """Float64 NumPy inputs of policy_loss: log_prob, logr, advantages, mask (all draws labelled).

    `shape` fixes (B, T) (JAX compiles every primitive once per shape, so its tests draw values,
    not shapes); otherwise B in 1..max_b and T in 1..max_t. The mask is drawn row by row from
    full, empty and random rows, so batches with empty rows, empty batches and full batches all
    occur. With `no_subnormal_advantages` (JAX), advantages below float32's smallest normal number
    are drawn as 0: XLA on CPU flushes subnormals to zero, in comparisons too (docs/backends.md,
    "Subnormal numbers"), so such an advantage would be read as A = 0 there while NumPy sees its sign.
    """
    if shape is None:
        b = draw(st.integers(1, max_b), label="B")
        t = draw(st.integers(1, max_t), label="T")
    else:
        b, t = shape
    finite = {"allow_nan": False, "allow_infinity": False}
    lp = draw(hnp.arrays(np.float64, (b, t), elements=st.floats(-8, 0, **finite)), label="log_prob")
    logr = draw(
        hnp.arrays(np.float64, (b, t), elements=st.floats(-2 * logr_scale, 2 * logr_scale, **finite)),
        label="logr",
    )
    seq = draw(st.booleans(), label="per_sequence") if per_sequence is None else per_sequence
    tiny = float(np.finfo(np.float32).tiny) if no_subnormal_advantages else 0.0
    adv_el = st.floats(-3, 3, **finite).map(lambda a: 0.0 if abs(a) < tiny else a)
    adv = draw(
        hnp.arrays(np.float64, (b,) if seq else (b, t), elements=st.one_of(st.just(0.0), adv_el)),
        label="advantages",
    )
    kind = draw(st.lists(st.sampled_from(["full", "empty", "random"]), min_size=b, max_size=b), label="row_kinds")
    rand = draw(hnp.arrays(np.bool_, (b, t)), label="mask_bits")
    mask = np.stack([np.ones(t, bool) if k == "full" else np.zeros(t, bool) if k == "empty" else r
                     for k, r in zip(kind, rand, strict=True)])
    return {"log_prob": lp, "logr": logr, "advantages": adv, "mask": mask}


# The aggregation functions' shape rule (spec S9.6, `check_aggregation_shapes`), the same in every
# implementation: (function, shapes of its array arguments (per_token_loss, mask) or (mask,), the
# whole message). Each suite builds the arrays with its framework (a float loss, a bool mask).
AGGREGATION_SHAPE_CASES: list[tuple[str, list[tuple[int, ...]], str]] = [
    ("local_counts", [(4,)], r"^mask must have shape \(B, T\), got shape \(4,\)$"),
    ("local_counts", [(2, 3, 1)], r"^mask must have shape \(B, T\), got shape \(2, 3, 1\)$"),
    ("aggregation_weights", [(4,)], r"^mask must have shape \(B, T\), got shape \(4,\)$"),
    ("aggregate_loss", [(4,), (4,)], r"^mask must have shape \(B, T\), got shape \(4,\)$"),
    ("aggregate_loss", [(2, 2), (2, 3)], r"^per_token_loss must have the shape of mask \(2, 3\), got shape \(2, 2\)$"),
    ("aggregate_loss", [(3,), (2, 3)], r"^per_token_loss must have the shape of mask \(2, 3\), got shape \(3,\)$"),
]


def aggregation_shape_case_id(case: tuple[str, list[tuple[int, ...]], str]) -> str:
    return f"{case[0]}{case[1]}".replace(" ", "")


def check_aggregation_shape_case(backend: Any, case: tuple[str, list[tuple[int, ...]], str], zeros: Any,
                                 bool_mask: Any) -> None:
    """One `AGGREGATION_SHAPE_CASES` case in `backend`: `zeros(shape)` builds the loss, `bool_mask(shape)`
    the mask, in the backend's framework."""
    fn, shapes, message = case
    *loss, mask = shapes
    with pytest.raises(ValueError, match=message):
        getattr(backend, fn)(*[zeros(s) for s in loss], bool_mask(mask))


# The S9.6 argument checks every backend shares with the reference (spec/_validation.py): calls of
# `policy_loss` built from a good (2, 3) batch (lp, olp, adv, m) and a config, as (args, kwargs).
# `cast(x, dtype_name)` is the backend's dtype conversion. Each backend checks its error equals the
# reference's; torch also that no op ran first, JAX also while tracing.
BAD_VALUE_CALLS: dict[str, Any] = {
    "log_prob_1d": lambda lp, olp, adv, m, cfg: ((lp[0], olp, adv, m, cfg), {}),
    "old_log_prob_shape": lambda lp, olp, adv, m, cfg: ((lp, olp[:, :2], adv, m, cfg), {}),
    "advantages_shape": lambda lp, olp, adv, m, cfg: ((lp, olp, adv[:, :1], m, cfg), {}),
    "advantages_per_seq_wrong": lambda lp, olp, adv, m, cfg: ((lp, olp, adv[0], m, cfg), {}),
    "mask_shape": lambda lp, olp, adv, m, cfg: ((lp, olp, adv, m[:1], cfg), {}),
    "agg": lambda lp, olp, adv, m, cfg: ((lp, olp, adv, m, cfg, "mean"), {}),
    "num_tokens_negative": lambda lp, olp, adv, m, cfg: ((lp, olp, adv, m, cfg, "token-mean", -1), {}),
    "num_tokens_nan": lambda lp, olp, adv, m, cfg: ((lp, olp, adv, m, cfg, "token-mean", float("nan")), {}),
    "num_tokens_inf": lambda lp, olp, adv, m, cfg: ((lp, olp, adv, m, cfg, "token-mean", float("inf")), {}),
    "num_tokens_np_float32_nan": lambda lp, olp, adv, m, cfg: ((lp, olp, adv, m, cfg, "token-mean",
                                                                np.float32("nan")), {}),
    "num_seqs_np_array_negative": lambda lp, olp, adv, m, cfg: ((lp, olp, adv, m, cfg, "seq-mean-token-sum", None,
                                                                 np.array(-1.0)), {}),
    "num_seqs_shape": lambda lp, olp, adv, m, cfg: ((lp, olp, adv, m, cfg, "seq-mean-token-sum", None,
                                                     np.ones(2)), {}),
    "norm_length": lambda lp, olp, adv, m, cfg: ((lp, olp, adv, m, cfg), {"norm_length": 0.0}),
}
"""Calls that raise ValueError, with the reference's message."""

BAD_TYPE_CALLS: dict[str, Any] = {
    "cfg": lambda lp, olp, adv, m, cfg, cast: ((lp, olp, adv, m, {"eps_low": 0.2}), {}),
    "num_tokens_bool": lambda lp, olp, adv, m, cfg, cast: ((lp, olp, adv, m, cfg, "token-mean", True), {}),
    "mask_float": lambda lp, olp, adv, m, cfg, cast: ((lp, olp, adv, cast(m, "float32"), cfg), {}),
    "log_prob_int": lambda lp, olp, adv, m, cfg, cast: ((cast(lp, "int32"), olp, adv, m, cfg), {}),
    "old_log_prob_int": lambda lp, olp, adv, m, cfg, cast: ((lp, cast(olp, "int32"), adv, m, cfg), {}),
    "log_prob_complex": lambda lp, olp, adv, m, cfg, cast: ((cast(lp, "complex64"), olp, adv, m, cfg), {}),
    "old_log_prob_complex": lambda lp, olp, adv, m, cfg, cast: ((lp, cast(olp, "complex64"), adv, m, cfg), {}),
    "advantages_complex": lambda lp, olp, adv, m, cfg, cast: ((lp, olp, cast(adv, "complex64"), m, cfg), {}),
    "norm_length_str": lambda lp, olp, adv, m, cfg, cast: ((lp, olp, adv, m, cfg), {"norm_length": "8"}),
}
"""Calls that raise TypeError naming the argument (the key up to its last ``_``)."""


def bad_type_argument(name: str) -> str:
    """The argument a BAD_TYPE_CALLS entry's TypeError must name: ``log_prob_int`` -> ``log_prob``."""
    return name if "_" not in name else name.rsplit("_", 1)[0]


def signature_drift(backend: Any) -> list[str]:
    """Public functions of `backend` whose signature departs from the reference's of the same name.

    Each backend spells out the reference's signature (for its type hints and its docs) rather than
    importing it: this keeps those copies honest. The reference's parameters must come first, with
    the same names, kinds and defaults; a backend may add keyword-only options after them
    (``chunk_size``, ``validate``). Two departures are by design: ``dtype`` defaults to the
    framework's own float (float64 in NumPy, float32 in torch, the x64-dependent default in JAX),
    and the reference's fused head takes its options as ``**options`` (it checks them with
    the backends' rule, `check_fused_args`).
    """
    import inspect

    drift = []
    for name in backend.__all__:
        ours, ref = getattr(backend, name), getattr(cegppo, name, None)
        if not (inspect.isfunction(ours) and inspect.isfunction(ref)):
            continue
        theirs = [p for p in inspect.signature(ref).parameters.values() if p.kind is not p.VAR_KEYWORD]
        mine = list(inspect.signature(ours).parameters.values())
        for i, p in enumerate(theirs):
            q = mine[i] if i < len(mine) else None
            if q is None or (q.name, q.kind) != (p.name, p.kind) or (p.name != "dtype" and q.default != p.default):
                drift.append(f"{name}: parameter {i} is {q} in {backend.__name__}, {p} in cegppo")
                break
        else:
            extra = [q for q in mine[len(theirs):] if q.kind is not q.KEYWORD_ONLY]
            if extra:
                drift.append(f"{name}: {backend.__name__} adds positional parameter(s) {[q.name for q in extra]}")
    return drift


FUSED_BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"temperature": 0.0}, ValueError, "temperature"),
    ({"temperature": float("nan")}, ValueError, "temperature"),
    ({"temperature": "1"}, TypeError, "temperature"),
    ({"entropy_coef": float("inf")}, ValueError, "entropy_coef"),
    ({"entropy_coef": float("nan")}, ValueError, "entropy_coef"),
    ({"entropy_coef": None}, TypeError, "entropy_coef"),
    ({"entropy_coef": "0.1"}, TypeError, "entropy_coef"),
    ({"chunk_size": 0}, ValueError, "chunk_size"),
    ({"chunk_size": True}, TypeError, "chunk_size"),
    ({"chunk_size": 2.0}, TypeError, "chunk_size"),
    ({"agg": "mean"}, ValueError, "agg"),
    ({"num_tokens": -1}, ValueError, "num_tokens"),
    ({"num_seqs": "2"}, TypeError, "num_seqs"),
    ({"norm_length": 0.0}, ValueError, "norm_length"),
    ({"norm_length": -1.0}, ValueError, "norm_length"),
]
"""Options every fused head refuses (the shared `check_fused_args`): the error names the option first."""


def fused_option_id(options: dict[str, Any]) -> str:
    return f"{next(iter(options))}={next(iter(options.values()))!r}"


COMPUTE_DTYPE_CASES: list[tuple[Any, Any, Any, Any]] = [
    (np.float64, np.float32, np.float32, np.float64),
    (np.float32, np.float64, np.float32, np.float64),
    (np.float32, np.float32, np.float64, np.float64),
    (np.float16, np.float16, np.float16, np.float32),
    (np.float32, np.float32, np.int64, np.float32),
]
"""(log_prob, old_log_prob, advantages, result) dtypes of the per-token functions: every input takes
part in the compute dtype, at least float32 (spec S9.5)."""
