"""Named hyperparameter sets (docs/spec.md clause S6 "Special cases" and S7 "Dual clip").

Each preset is a function so that it carries a docstring saying where its numbers come from, and
so that single fields can be overridden: ``presets.ce_gppo_7b(dual_clip=10.0)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._config import CEGPPOConfig

__all__ = [
    "PRESETS",
    "ce_gppo_1p5b",
    "ce_gppo_7b",
    "ce_gppo_official",
    "dapo",
    "dual_clip_ppo",
    "get",
    "gppo",
    "ppo",
]


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


PRESETS: dict[str, Callable[..., CEGPPOConfig]] = {
    "ppo": ppo,
    "dual_clip_ppo": dual_clip_ppo,
    "dapo": dapo,
    "gppo": gppo,
    "ce_gppo_1p5b": ce_gppo_1p5b,
    "ce_gppo_7b": ce_gppo_7b,
    "ce_gppo_official": ce_gppo_official,
}
"""Every preset by name (the names the trainer's `--preset` accepts)."""


def get(name: str, **overrides: Any) -> CEGPPOConfig:
    """The preset called `name`, with optional field overrides."""
    try:
        factory = PRESETS[name]
    except KeyError:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}") from None
    return factory(**overrides)
