"""Group-relative advantages in PyTorch (docs/spec.md clause S12).

`rewards` is (P * G,), the G samples of each prompt contiguous. The result has the same shape: one
advantage per sequence, which `policy_loss` broadcasts over the sequence's tokens. Floating
rewards are computed in at least float32 (float64 stays float64); integer and bool rewards in
float64, as in the reference.
"""

from __future__ import annotations

from typing import Any

from cegppo._advantages import GRPO_EPS
from cegppo._estimators import run_estimator
from cegppo._validation import check_group_shape, check_positive

import torch

from ._common import check_tensor

__all__ = ["GRPO_EPS", "drgrpo_advantages", "group_advantages", "grpo_advantages", "rloo_advantages"]


def _groups(rewards: Any, group_size: int) -> torch.Tensor:
    check_tensor("rewards", rewards)
    if rewards.dtype.is_complex:
        raise TypeError(f"rewards must be a real numeric tensor, got dtype {rewards.dtype}")
    check_group_shape(tuple(rewards.shape), group_size)
    dt = (
        torch.promote_types(rewards.dtype, torch.float32)
        if rewards.dtype.is_floating_point
        else torch.float64
    )
    return rewards.to(dt).reshape(-1, group_size)


def _flat_equal_to_zero(adv: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # A group whose rewards are all equal carries no signal: exactly 0 (spec S12.4).
    flat = (r == r[:, :1]).all(dim=-1, keepdim=True)
    return torch.where(flat, torch.zeros((), dtype=r.dtype, device=r.device), adv).reshape(-1)


def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = GRPO_EPS) -> torch.Tensor:
    """GRPO (Shao et al. 2024, arXiv 2402.03300, Sec. 4.1.2): A_i = (r_i - mean(r)) / (std(r) + eps).

    std is the sample standard deviation (ddof = 1), as in verl and TRL. Flat groups give 0.
    Shapes: rewards (P * G,) -> advantages (P * G,).
    """
    eps = check_positive("eps", eps)
    r = _groups(rewards, group_size)
    centred = r - r.mean(dim=-1, keepdim=True)
    return _flat_equal_to_zero(centred / (r.std(dim=-1, correction=1, keepdim=True) + eps), r)


def drgrpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Dr.GRPO (Liu et al. 2025, arXiv 2503.20783, Eq. 3): A_i = r_i - mean(r), no std division."""
    r = _groups(rewards, group_size)
    return _flat_equal_to_zero(r - r.mean(dim=-1, keepdim=True), r)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024, arXiv 2402.14740, Eq. 6): A_i = r_i - mean_{j != i} r_j."""
    r = _groups(rewards, group_size)
    g = r.shape[-1]
    loo_mean = (r.sum(dim=-1, keepdim=True) - r) / (g - 1)
    return _flat_equal_to_zero(r - loo_mean, r)


def group_advantages(
    rewards: torch.Tensor, group_size: int, estimator: str = "grpo", *, eps: float = GRPO_EPS
) -> torch.Tensor:
    """Dispatch to `grpo_advantages`, `drgrpo_advantages` or `rloo_advantages` by name."""
    return run_estimator(estimator, rewards, group_size, eps, grpo=grpo_advantages, drgrpo=drgrpo_advantages,
                         rloo=rloo_advantages)
