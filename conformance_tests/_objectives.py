"""The kit's rules per objective: what differs between CE-GPPO and the family members it checks (docs/spec.md S14).

The properties, strategies, adapters and report are written once; where a member's objective needs
something of its own, it is looked up here, one rule per function:

- `default_config` and `paper_agg`: the config a probe uses, and the aggregation a port is expected
  to compute when it declares none (spec S14.1's "paper aggregation" column);
- `reference_points`: the log-ratios the strategies draw around (clip ends, delta = 1);
- `kinks`: the log-ratios where a member's gradient weight F has a kink or a jump, which compared
  inputs are drawn away from (spec S14.1, "Kinks"); GSPO's kinks are in the row mean, `row_kinks`;
- `representable`: the extreme log-ratios whose true loss is still a finite number (spec S9.1);
- `rows_coupled`: whether a token's weight depends on the other tokens of its row (GSPO's s_i).

This module imports NumPy and cegppo only (no framework, no Hypothesis).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from cegppo import FAMILY, CEGPPOConfig, CISPOCapConfig, CISPOConfig, GSPOConfig, SAPOConfig

from ._port import OBJECTIVES, objective_of

__all__ = [
    "CE_GPPO",
    "FAMILY_OBJECTIVES",
    "OBJECTIVES",
    "check_objective",
    "default_config",
    "kinks",
    "objective_of",
    "paper_agg",
    "reference_points",
    "representable",
    "row_kinks",
    "rows_coupled",
]

CE_GPPO = "ce_gppo"
"""The default objective: CE-GPPO (and its special cases PPO, DAPO, GPPO, spec S6)."""
FAMILY_OBJECTIVES: tuple[str, ...] = tuple(o for o in OBJECTIVES if o != CE_GPPO)
"""The family members beside CE-GPPO (spec S14.2-S14.4)."""

# The port contract names each objective's config (by class name, so that it imports no cegppo); the
# types are the family table's, each constructible with its defaults.
_CONFIG_TYPES: dict[str, type] = {objective_of(config_type()): config_type for config_type in FAMILY}


def check_objective(objective: Any) -> str:
    """`objective` if it is one of `OBJECTIVES`, else a ValueError naming it."""
    if objective not in _CONFIG_TYPES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return str(objective)


def default_config(objective: str) -> Any:
    """The objective's config with its defaults (the paper's or the frameworks' values, spec S14)."""
    return _CONFIG_TYPES[check_objective(objective)]()


def paper_agg(objective: str) -> str:
    """The aggregation the objective's paper uses (`cegppo.FAMILY[...].paper_agg`): what a port declaring
    no ``agg`` is expected to compute (token-mean for CE-GPPO and CISPO, seq-mean-token-mean for SAPO, GSPO)."""
    return FAMILY[_CONFIG_TYPES[check_objective(objective)]].paper_agg


def rows_coupled(cfg: Any) -> bool:
    """Whether a token's weight depends on the other valid tokens of its row: GSPO's sequence ratio s_i
    (spec S14.4). Moving a token to another row then changes the loss, so permutations keep rows whole."""
    return isinstance(cfg, GSPOConfig)


def reference_points(cfg: Any) -> tuple[float, float, float]:
    """Three log-ratios the strategies draw tokens around: (lower, upper, far).

    CE-GPPO: the clip ends and the dual clip (the upper end without one); CISPO: the ends of its
    weight interval (log 0.8 where it has no lower end); SAPO, whose gate has no ends: either side of
    delta = 1 and the gate's width 1 / tau; GSPO: its clip ends (drawn per token, they move s_i there).
    """
    if isinstance(cfg, CEGPPOConfig):
        return cfg.log_lower, cfg.log_upper, cfg.log_dual_clip if cfg.log_dual_clip is not None else cfg.log_upper
    if isinstance(cfg, (CISPOConfig, CISPOCapConfig)):
        upper = math.log(cfg.upper)
        return (math.log(cfg.lower) if cfg.lower > 0 else math.log(0.8)), upper, upper
    if isinstance(cfg, SAPOConfig):
        return -0.2, 0.2, math.log1p(1.0 / min(cfg.tau_pos, cfg.tau_neg))
    if isinstance(cfg, GSPOConfig):
        return cfg.log_lower, cfg.log_upper, cfg.log_upper
    raise TypeError(f"cfg must be a config of one of {OBJECTIVES}, got {type(cfg).__name__}")


def kinks(cfg: Any) -> list[float]:
    """The log-ratios where the token's own weight F jumps or has a kink (compared inputs keep away from them).

    CE-GPPO: the clip ends and log c (F jumps there unless beta = 1); CISPO: the ends of its
    interval (kinks: F is continuous, but a ratio rounded across an end changes its derivative);
    SAPO: none (F is smooth); GSPO: none per token (its jumps are in the row mean, `row_kinks`).
    """
    if isinstance(cfg, CEGPPOConfig):
        out = [cfg.log_lower, cfg.log_upper]
        if cfg.log_dual_clip is not None:
            out.append(cfg.log_dual_clip)
        return out
    if isinstance(cfg, (CISPOConfig, CISPOCapConfig)):
        return [math.log(b) for b in (cfg.lower, cfg.upper) if b > 0 and math.isfinite(math.log(b))]
    return []


def row_kinks(cfg: Any) -> list[float]:
    """The values of a row's mean log-ratio log s_i where GSPO's F jumps (spec S14.4); none for the others."""
    return [cfg.log_lower, cfg.log_upper] if isinstance(cfg, GSPOConfig) else []


_REPRESENTABLE_ABOVE = 20.0
"""A log-ratio above which delta A would overflow float32 soon (e^20 ~ 5e8 times |A| <= 100 is still finite)."""


def representable(logr: np.ndarray, adv: np.ndarray, cfg: Any) -> np.ndarray:
    """`logr` (B, T) with the extreme values whose true loss is not a finite number replaced (spec S9.1).

    `adv` is (B, T). CE-GPPO without dual clip: delta A for A < 0 above the interval is unbounded, so
    such tokens stay at logr <= 20. CISPO: its value A log_prob is infinite where log_prob = -inf
    and A != 0 (logr = -inf is placed as log_prob = -inf): those become logr = -1e4. SAPO: every
    log-ratio is representable (its gate is bounded). GSPO: s_i A for A < 0 is unbounded in s_i, so
    rows holding a negative advantage stay at logr <= 20; a row mixing +inf and -inf has no mean,
    so its -inf become -1e4.
    """
    if isinstance(cfg, CEGPPOConfig):
        if cfg.dual_clip is None:
            return np.where((adv < 0) & (logr > _REPRESENTABLE_ABOVE), _REPRESENTABLE_ABOVE, logr)
        return logr
    if isinstance(cfg, (CISPOConfig, CISPOCapConfig)):
        return np.where(np.isneginf(logr) & (adv != 0), -1e4, logr)
    if isinstance(cfg, GSPOConfig):
        negative_row = np.any(adv < 0, axis=-1, keepdims=True)
        logr = np.where(negative_row & (logr > _REPRESENTABLE_ABOVE), _REPRESENTABLE_ABOVE, logr)
        both = np.any(np.isposinf(logr), axis=-1, keepdims=True) & np.any(np.isneginf(logr), axis=-1, keepdims=True)
        return np.where(both & np.isneginf(logr), -1e4, logr)
    return logr

