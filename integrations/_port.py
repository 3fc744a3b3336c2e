"""The conformance kit's port signature, written once for every framework adapter.

A port (docs/conformance.md) is ``port(log_prob, old_log_prob, advantages, response_mask, *, eps_low,
eps_high, beta_low, beta_high, clip_ratio_c) -> loss``. `kit_port` wraps a framework call in that
signature, so the verl, OpenRLHF, SkyRL and tunix adapters state only how their framework is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["FrameworkCall", "kit_port"]


class FrameworkCall(Protocol):
    """A framework's loss called on the kit's arrays; the hyperparameters come as keywords
    (eps_low, eps_high, beta_low, beta_high, clip_ratio_c)."""

    def __call__(self, log_prob: Any, old_log_prob: Any, advantages: Any, response_mask: Any, **hyper: Any) -> Any: ...


def kit_port(call: FrameworkCall, *, name: str, doc: str, token_advantages: bool = False) -> Callable[..., Any]:
    """`call` as a conformance-kit port named `name`.

    With ``token_advantages=True`` (torch frameworks whose losses take (B, T) advantages: verl,
    OpenRLHF, SkyRL) per-sequence (B,) advantages, which the kit may hand, are broadcast over the
    tokens first, as those frameworks do before their loss.
    """

    def port(
        log_prob: Any,
        old_log_prob: Any,
        advantages: Any,
        response_mask: Any,
        *,
        eps_low: float,
        eps_high: float,
        beta_low: float,
        beta_high: float,
        clip_ratio_c: float | None,
    ) -> Any:
        if token_advantages and advantages.dim() == 1:
            advantages = advantages[:, None].expand(log_prob.shape)
        return call(log_prob, old_log_prob, advantages, response_mask, eps_low=eps_low, eps_high=eps_high,
                    beta_low=beta_low, beta_high=beta_high, clip_ratio_c=clip_ratio_c)

    port.__name__ = port.__qualname__ = name
    port.__doc__ = doc
    return port
