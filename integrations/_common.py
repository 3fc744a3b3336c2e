"""What every framework adapter shares, so that each one states only where its framework keeps a value.

- `DEFAULT`: the spec's defaults, which a framework config without a CE-GPPO field falls back to;
- `cegppo_config`: the `cegppo.CEGPPOConfig` of a framework's values, a missing beta taking the paper's
  default with one warning per framework;
- `AGG_TABLE`: which global normalizer each aggregation mode divides by (spec S8.2), so that an adapter maps
  its framework's counts onto the table instead of branching on mode names;
- `registered_loss`: a loss given by name (looked up in a framework's registry) or as the function itself;
- `host_floats`: a metrics dict of 0-d tensors as Python floats in one device-to-host copy.

Nothing here imports a framework: each adapter imports its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from cegppo import CEGPPOConfig
from cegppo._aggregation_modes import AGG_TABLE

__all__ = ["AGG_TABLE", "DEFAULT", "cegppo_config", "host_floats", "registered_loss"]

DEFAULT = CEGPPOConfig()
"""The spec's defaults (eps 0.2 both sides, the paper's 1.5B betas 0.5 and 1.0, no dual clip)."""

_warned: set[str] = set()
"""Loggers that have already said the betas were missing: a training run calls the loss every step."""


def cegppo_config(
    *,
    eps_low: Any,
    eps_high: Any,
    beta_low: Any,
    beta_high: Any,
    dual_clip: Any,
    log: logging.Logger | None = None,
    missing_betas: str = "",
) -> CEGPPOConfig:
    """The `CEGPPOConfig` of values read from a framework's config (arXiv 2509.20712, Eq. 8; spec S1).

    Args:
        eps_low, eps_high, beta_low, beta_high, dual_clip: the framework's values (numbers; a beta is None
            where the framework's config has no such field, `dual_clip` None for no dual clip).
        log: where to warn, once per logger, that a beta was missing and the paper's default is used;
            None: no warning (a framework whose plain config is documented to take the defaults).
        missing_betas: the warning's text: where the betas are missing and what to use instead.

    Raises:
        ValueError: a value out of range, named as `CEGPPOConfig` names it.
    """
    if (beta_low is None or beta_high is None) and log is not None and log.name not in _warned:
        _warned.add(log.name)
        log.warning("ce_gppo: %s; using the paper's defaults beta_low=%s, beta_high=%s",
                    missing_betas, DEFAULT.beta_low, DEFAULT.beta_high)
    return CEGPPOConfig(
        eps_low=float(eps_low),
        eps_high=float(eps_high),
        beta_low=float(DEFAULT.beta_low if beta_low is None else beta_low),
        beta_high=float(DEFAULT.beta_high if beta_high is None else beta_high),
        dual_clip=None if dual_clip is None else float(dual_clip),
    )


def registered_loss(loss: str | Callable[..., Any], lookup: Callable[[str], Callable[..., Any]]) -> tuple[
        Callable[..., Any], str]:
    """(function, name) of `loss`: a name looked up with the framework's `lookup`, or the function itself."""
    if callable(loss):
        return loss, getattr(loss, "__name__", "loss")
    return lookup(loss), loss


def host_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    """`metrics` (0-d torch tensors, e.g. `cegppo.torch.policy_metrics`) as floats, with one host sync.

    Frameworks log Python floats; one ``tolist`` of the stacked values waits for the device once, where a
    ``float()`` per key would wait once per metric.
    """
    import torch  # only the torch adapters call this; tunix's (JAX) must not import torch

    values = torch.stack([v.to(torch.float64) for v in metrics.values()]).tolist()
    return dict(zip(metrics, values, strict=True))

