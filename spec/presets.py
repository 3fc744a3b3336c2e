"""Named hyperparameter sets (docs/spec.md clause S6 "Special cases", S7 "Dual clip" and S14 "The family").

Each preset is a function so that it carries a docstring saying where its numbers come from, and
so that single fields can be overridden: ``presets.ce_gppo_7b(dual_clip=10.0)``. CE-GPPO's presets
(its special cases PPO, DAPO and GPPO included) return a `CEGPPOConfig`; the family's other
members, `cispo`, `sapo` and `gspo`, return their own config types (spec S14).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._cispo import CISPOConfig
from ._config import CEGPPOConfig
from ._gspo import GSPOConfig
from ._sapo import SAPOConfig

__all__ = [
    "CE_GPPO_PRESETS",
    "FAMILY_PRESETS",
    "PRESETS",
    "PresetConfig",
    "ce_gppo_1p5b",
    "ce_gppo_7b",
    "ce_gppo_official",
    "cispo",
    "dapo",
    "dual_clip_ppo",
    "get",
    "gppo",
    "gspo",
    "ppo",
    "sapo",
]

PresetConfig = CEGPPOConfig | CISPOConfig | SAPOConfig | GSPOConfig
"""The config types a preset returns: CE-GPPO's, or one of the family's other members' (spec S14)."""


def ppo(**overrides: Any) -> CEGPPOConfig:
    """PPO-clip (Schulman et al. 2017, arXiv 1707.06347, Eq. 7): eps = 0.2, beta_low = beta_high = 0.

    The gradient equals PPO-clip's exactly; the value differs from PPO's in the clipped regions only
    by a constant (spec S6.1).
    """
    return CEGPPOConfig(**{"eps_low": 0.2, "eps_high": 0.2, "beta_low": 0.0, "beta_high": 0.0, **overrides})


def dual_clip_ppo(**overrides: Any) -> CEGPPOConfig:
    """Dual-clip PPO (Ye et al. 2020, arXiv 1912.09729): PPO-clip plus c = 3, verl's default `clip_ratio_c`.

    With these numbers the gradient equals verl's `vanilla` policy loss (spec S7).
    """
    return ppo(**{"dual_clip": 3.0, **overrides})


def dapo(**overrides: Any) -> CEGPPOConfig:
    """DAPO clip-higher (Yu et al. 2025, arXiv 2503.14476, Sec. 3.1): eps_low = 0.2, eps_high = 0.28, no beta."""
    return CEGPPOConfig(**{"eps_low": 0.2, "eps_high": 0.28, "beta_low": 0.0, "beta_high": 0.0, **overrides})


def gppo(**overrides: Any) -> CEGPPOConfig:
    """GPPO (Klear-Reasoner, arXiv 2508.07629, Eq. 4): clipped tokens keep their full, bounded gradient.

    beta_low = beta_high = 1 with eps = 0.2; the value equals PPO's (spec S6.2).
    """
    return CEGPPOConfig(**{"eps_low": 0.2, "eps_high": 0.2, "beta_low": 1.0, "beta_high": 1.0, **overrides})


def ce_gppo_1p5b(**overrides: Any) -> CEGPPOConfig:
    """CE-GPPO as run on the 1.5B model (arXiv 2509.20712, Sec. 4.1): eps = 0.2, beta_low = 0.5, beta_high = 1."""
    return CEGPPOConfig(**{"eps_low": 0.2, "eps_high": 0.2, "beta_low": 0.5, "beta_high": 1.0, **overrides})


def ce_gppo_7b(**overrides: Any) -> CEGPPOConfig:
    """CE-GPPO as run on the 7B model (arXiv 2509.20712, Sec. 4.1): eps = 0.2, beta_low = 0.75, beta_high = 1."""
    return CEGPPOConfig(**{"eps_low": 0.2, "eps_high": 0.2, "beta_low": 0.75, "beta_high": 1.0, **overrides})


def ce_gppo_official(**overrides: Any) -> CEGPPOConfig:
    """CE-GPPO as the official training scripts run it (github.com/Kwai-Klear/CE-GPPO).

    The paper's 1.5B betas (beta_low = 0.5, beta_high = 1, eps = 0.2) plus the dual clip c = 10 that
    the scripts pass as `clip_ratio_c` and the paper does not mention (spec S7, S13).
    """
    return ce_gppo_1p5b(**{"dual_clip": 10.0, **overrides})


def cispo(**overrides: Any) -> CISPOConfig:
    """Two-sided CISPO (MiniMax-M1, arXiv 2506.13585, Sec. 3.1; spec S14.2): the weight is clip(delta, 0.8, 1.2).

    `CISPOConfig()`'s defaults, eps_low = eps_high = 0.2: verl 0.9.1's `cispo` loss reads the actor's
    `clip_ratio_low` / `clip_ratio_high`, 0.2 each by default. The paper itself tunes eps_high only and
    sets eps_low large enough that the weight has no lower bound (any eps_low >= 1 here).
    """
    return CISPOConfig(**overrides)


def sapo(**overrides: Any) -> SAPOConfig:
    """SAPO's soft gate (arXiv 2511.20347, Sec. 3; spec S14.3): tau_pos = 1.0, tau_neg = 1.05.

    `SAPOConfig()`'s defaults: the paper's temperatures (tau_neg > tau_pos, as it recommends), also
    verl's and TRL's defaults.
    """
    return SAPOConfig(**overrides)


def gspo(**overrides: Any) -> GSPOConfig:
    """GSPO, token form (arXiv 2507.18071, Eq. 5; spec S14.4): eps_low = 3e-4, eps_high = 4e-4 on the sequence ratio.

    `GSPOConfig()`'s defaults: the paper's clip ranges. They are small because the sequence ratio is
    a geometric mean of the token ratios, which moves far less than one token's ratio.
    """
    return GSPOConfig(**overrides)


CE_GPPO_PRESETS: dict[str, Callable[..., CEGPPOConfig]] = {
    "ppo": ppo,
    "dual_clip_ppo": dual_clip_ppo,
    "dapo": dapo,
    "gppo": gppo,
    "ce_gppo_1p5b": ce_gppo_1p5b,
    "ce_gppo_7b": ce_gppo_7b,
    "ce_gppo_official": ce_gppo_official,
}
"""The presets that are settings of CE-GPPO (spec S6, S7): each returns a `CEGPPOConfig`."""

FAMILY_PRESETS: dict[str, Callable[..., PresetConfig]] = {"cispo": cispo, "sapo": sapo, "gspo": gspo}
"""The presets of the family's other members (spec S14.2-S14.4): each returns its member's config type."""

PRESETS: dict[str, Callable[..., PresetConfig]] = {**CE_GPPO_PRESETS, **FAMILY_PRESETS}
"""Every preset by name (the names the trainer's `--preset` accepts)."""


def get(name: str, **overrides: Any) -> PresetConfig:
    """The preset called `name`, with optional field overrides."""
    try:
        factory = PRESETS[name]
    except KeyError:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}") from None
    return factory(**overrides)
