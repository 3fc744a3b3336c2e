"""The diagnostics' names and definitions as reductions (docs/spec.md clauses S10, S11.1), in one place.

Every implementation computes the per-token quantities and the three reductions over the valid
tokens in its own framework (that is its arithmetic); which key is which reduction of which
quantity, and the keys' order, are written once, here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

__all__ = [
    "ENTROPY_REGION_KEYS",
    "FUSED_METRIC_KEYS",
    "METRIC_KEYS",
    "METRIC_TABLE",
    "REGION_NAMES",
    "reduce_metrics",
]

REGION_NAMES: tuple[str, ...] = ("clip_low", "clip_high", "dual_clip", "inside")
"""The four regions of spec S2, in the order of `cegppo.TokenRegions`."""

METRIC_TABLE: tuple[tuple[str, str, str], ...] = (
    ("clip_low_frac", "frac", "clip_low"),
    ("clip_high_frac", "frac", "clip_high"),
    ("dual_clip_frac", "frac", "dual_clip"),
    ("inside_frac", "frac", "inside"),
    ("clip_frac", "frac", "clipped"),
    ("ratio_mean", "mean", "ratio"),
    ("ratio_max", "max", "ratio"),
    ("approx_kl_k1", "mean", "neg_logr"),
    ("approx_kl_k3", "mean", "k3"),
    ("grad_weight_abs_mean", "mean", "grad_weight_abs"),
)
"""(key, reduction, per-token quantity) of each `policy_metrics` key (spec S10). Reductions over the
n valid tokens: ``frac`` = count / max(n, 1) of a boolean, ``mean`` = sum / max(n, 1), ``max`` = the
maximum (0 with no valid token). Quantities, per token: the region masks of S2 by name,
``clipped`` = clip_low | clip_high, ``ratio`` = delta = exp(logr), ``neg_logr`` = -logr (Schulman's k1),
``k3`` = delta - 1 - logr (k3), ``grad_weight_abs`` = |F_t| where A_t != 0, else 0 (S4)."""

METRIC_KEYS: tuple[str, ...] = tuple(key for key, _, _ in METRIC_TABLE)
"""The keys of `policy_metrics`, in order (spec S10)."""

ENTROPY_REGION_KEYS: tuple[str, ...] = tuple(f"entropy_change_{r}" for r in REGION_NAMES)
"""The fused head's first-order entropy change summed over each region (spec S11, S11.1)."""

FUSED_METRIC_KEYS: tuple[str, ...] = (*METRIC_KEYS, "entropy_mean", *ENTROPY_REGION_KEYS)
"""Keys of the fused head's metrics: `policy_metrics`' keys, then `entropy_mean` and the per-region
first-order entropy change (spec S10, S11.1)."""

T = TypeVar("T")


def reduce_metrics(per_token: Mapping[str, T], reductions: Mapping[str, Callable[[T], T]]) -> dict[str, T]:
    """The `policy_metrics` dict, keys in the order of METRIC_KEYS, from an implementation's own
    per-token quantities and reductions (both named as in METRIC_TABLE)."""
    return {key: reductions[how](per_token[what]) for key, how, what in METRIC_TABLE}
