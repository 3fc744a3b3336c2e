"""Input coercion shared by the family members of docs/spec.md clause S14 (CISPO, SAPO, GSPO).

The members take the CE-GPPO arguments (spec S1) with a different config type, so they share the
argument rules of S9.5 and S9.6 (shapes, dtypes, masked garbage) but not CE-GPPO's config check.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._arrays import as_bool_mask, as_float, compute_dtype
from ._validation import check_policy_shapes, require_finite

__all__ = ["FamilyInputs", "family_inputs"]


class FamilyInputs(NamedTuple):
    """Coerced (B, T) arrays in the compute dtype; advantages broadcast to (B, T)."""

    log_prob: np.ndarray
    old_log_prob: np.ndarray
    advantages: np.ndarray
    mask: np.ndarray | None
    """The bool mask, or None when the caller passed none (the per-token functions of CISPO and SAPO)."""


def family_inputs(
    log_prob: Any, old_log_prob: Any, advantages: Any, mask: Any = None, *, validate: bool = False
) -> FamilyInputs:
    """Check shapes and dtypes (spec S9.5, S9.6) and coerce to the compute dtype.

    With a mask, masked positions are replaced by 0 before any arithmetic (spec S9.3), so garbage
    there (NaN, +-inf) reaches neither a loss nor a gradient nor GSPO's sequence mean; `validate`
    then also requires finite values at the valid positions.
    """
    check_policy_shapes(log_prob, old_log_prob, advantages, mask)
    dt = compute_dtype(("log_prob", log_prob), ("old_log_prob", old_log_prob), ("advantages", advantages))
    lp = as_float("log_prob", log_prob, dt)
    olp = as_float("old_log_prob", old_log_prob, dt)
    adv = as_float("advantages", advantages, dt, floating_only=False)
    if adv.ndim == 1:  # per-sequence advantages broadcast over the row's tokens (spec S1)
        adv = np.broadcast_to(adv[:, None], lp.shape)
    if mask is None:
        return FamilyInputs(lp, olp, adv, None)
    m = as_bool_mask(mask)
    if validate:
        for name, arr in (("log_prob", lp), ("old_log_prob", olp), ("advantages", adv)):
            require_finite(name, bool(np.all(np.isfinite(arr[m]))))
    zero = dt.type(0)
    return FamilyInputs(np.where(m, lp, zero), np.where(m, olp, zero), np.where(m, adv, zero), m)
