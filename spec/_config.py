"""The CE-GPPO hyperparameters (docs/spec.md clause S1 "Symbols").

`CEGPPOConfig` is frozen and validated at construction, so every backend can trust it and no
backend has to re-check hyperparameters on a hot path.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, TypeVar, cast

from ._validation import check_real

__all__ = ["CEGPPOConfig", "ClipInterval", "ConfigMethods", "check_clip_widths", "check_config", "check_positive_real", "store_floats"]

_C = TypeVar("_C", bound="ConfigMethods")


class ConfigMethods:
    """`replace` and `as_dict` of the frozen, validated hyperparameter dataclasses (CE-GPPO's, the family's)."""

    def replace(self: _C, **changes: Any) -> _C:
        """A copy with some fields changed (validated again)."""
        return cast(_C, cast(Any, type(self))(**{**asdict(cast(Any, self)), **changes}))

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (for logging and checkpoints)."""
        return asdict(cast(Any, self))


class ClipInterval(ConfigMethods):
    """The clip interval [1 - eps_low, 1 + eps_high] of a config with `eps_low` / `eps_high` fields, in the log
    space every backend compares in (spec clause S9.1): a ratio r (a token's, or GSPO's sequence ratio)
    is below it when log r < log_lower and above it when log r > log_upper."""

    eps_low: float
    eps_high: float

    @property
    def log_lower(self) -> float:
        """log(1 - eps_low)."""
        return math.log1p(-self.eps_low)

    @property
    def log_upper(self) -> float:
        """log(1 + eps_high)."""
        return math.log1p(self.eps_high)


def store_floats(cfg: Any, **values: float | None) -> None:
    """Set the fields of a frozen config to their checked values: ints stored as floats, so that configs
    compare and hash by value."""
    for name, value in values.items():
        object.__setattr__(cfg, name, value)


def check_positive_real(name: str, value: Any) -> float:
    """A finite real number > 0, returned as float (TypeError / ValueError naming `name`)."""
    number = float(check_real(name, value))
    if not number > 0.0:
        raise ValueError(f"{name} must be > 0, got {number!r}")
    return number


def check_clip_widths(eps_low: Any, eps_high: Any) -> tuple[float, float]:
    """A clip interval [1 - eps_low, 1 + eps_high] on a ratio: eps_low in (0, 1), eps_high > 0."""
    eps_low = check_real("eps_low", eps_low)
    eps_high = check_real("eps_high", eps_high)
    if not 0.0 < eps_low < 1.0:
        raise ValueError(f"eps_low must lie in (0, 1), got {eps_low!r}")
    if not eps_high > 0.0:
        raise ValueError(f"eps_high must be > 0, got {eps_high!r}")
    return eps_low, eps_high


@dataclass(frozen=True)
class CEGPPOConfig(ClipInterval):
    """Hyperparameters of the CE-GPPO objective (arXiv 2509.20712, Eq. 8).

    The clip interval is ``[1 - eps_low, 1 + eps_high]`` on the ratio ``delta = pi / pi_old``.
    Tokens clipped below the interval with negative advantage keep a gradient scaled by
    ``beta_low * (1 - eps_low)`` (the paper's beta_1); tokens clipped above it with positive
    advantage keep ``beta_high * (1 + eps_high)`` (beta_2). ``dual_clip`` (c > 1) bounds the loss of
    negative-advantage tokens whose ratio exceeds c (Ye et al. 2020), as the official scripts do.

    Special cases (spec clause S6): ``beta_low = beta_high = 0`` is PPO-clip's gradient,
    ``beta_low = beta_high = 1`` is GPPO (arXiv 2508.07629), ``eps_high > eps_low`` is DAPO's
    clip-higher.
    """

    eps_low: float = 0.2
    """Lower clip width: the interval starts at 1 - eps_low. Must lie in (0, 1)."""
    eps_high: float = 0.2
    """Upper clip width: the interval ends at 1 + eps_high. Must be > 0."""
    beta_low: float = 0.5
    """beta_1: gradient scale kept for clip_low tokens (ratio < 1 - eps_low, A < 0). Must be >= 0."""
    beta_high: float = 1.0
    """beta_2: gradient scale kept for clip_high tokens (ratio > 1 + eps_high, A > 0). Must be >= 0."""
    dual_clip: float | None = None
    """Dual-clip constant c > 1, or None for no dual clip."""

    def __post_init__(self) -> None:
        eps_low, eps_high = check_clip_widths(self.eps_low, self.eps_high)
        beta_low = check_real("beta_low", self.beta_low)
        beta_high = check_real("beta_high", self.beta_high)
        if beta_low < 0.0:
            raise ValueError(f"beta_low must be >= 0, got {beta_low!r}")
        if beta_high < 0.0:
            raise ValueError(f"beta_high must be >= 0, got {beta_high!r}")
        dual_clip = self.dual_clip
        if dual_clip is not None:
            dual_clip = check_real("dual_clip", dual_clip)
            if not dual_clip > 1.0:
                raise ValueError(f"dual_clip must be None or > 1, got {dual_clip!r}")
        store_floats(self, eps_low=eps_low, eps_high=eps_high, beta_low=beta_low, beta_high=beta_high,
                     dual_clip=dual_clip)

    # Derived constants (log_lower and log_upper: ClipInterval), in the log space of spec clause S9.1.
    @property
    def log_dual_clip(self) -> float | None:
        """log(c), or None without dual clip."""
        return None if self.dual_clip is None else math.log(self.dual_clip)

    @property
    def weight_low(self) -> float:
        """F in clip_low: beta_low * (1 - eps_low)."""
        return self.beta_low * (1.0 - self.eps_low)

    @property
    def weight_high(self) -> float:
        """F in clip_high: beta_high * (1 + eps_high)."""
        return self.beta_high * (1.0 + self.eps_high)


def check_config(cfg: Any) -> CEGPPOConfig:
    """`cfg` must be a CEGPPOConfig (already validated at construction)."""
    if not isinstance(cfg, CEGPPOConfig):
        raise TypeError(f"cfg must be a cegppo.CEGPPOConfig, got {type(cfg).__name__}")
    return cfg
