"""The group-relative advantage estimators by name (docs/spec.md clause S12): the list and the dispatch.

Each implementation (the reference and every backend) writes GRPO, Dr.GRPO and RLOO in its own
framework; which names exist and which estimator a name runs are written once, here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["ADVANTAGE_ESTIMATORS", "check_estimator", "run_estimator"]

ADVANTAGE_ESTIMATORS: tuple[str, ...] = ("grpo", "drgrpo", "rloo")
"""Group-relative advantage estimators (spec clause S12)."""

_Adv = TypeVar("_Adv")
"""A backend's advantages array type."""


def check_estimator(estimator: Any) -> str:
    """`estimator` must name one of ADVANTAGE_ESTIMATORS."""
    if estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"estimator must be one of {list(ADVANTAGE_ESTIMATORS)}, got {estimator!r}")
    return str(estimator)


def run_estimator(
    estimator: Any,
    rewards: Any,
    group_size: int,
    eps: float,
    *,
    grpo: Callable[[Any, int, float], _Adv],
    drgrpo: Callable[[Any, int], _Adv],
    rloo: Callable[[Any, int], _Adv],
) -> _Adv:
    """`group_advantages`' dispatch by name (spec S12), for every backend: each passes its own estimators.

    Only GRPO takes `eps` (its std guard); Dr.GRPO and RLOO divide by no std.
    """
    estimator = check_estimator(estimator)
    if estimator == "grpo":
        return grpo(rewards, group_size, eps)
    return (drgrpo if estimator == "drgrpo" else rloo)(rewards, group_size)
