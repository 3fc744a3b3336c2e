"""The port contract: how the kit calls an implementation, and `kit_port`, which gives a framework's loss that shape.

A port (docs/conformance.md) is ``port(log_prob, old_log_prob, advantages, response_mask, *, eps_low,
eps_high, beta_low, beta_high, clip_ratio_c) -> loss``: (B, T) log-probs and mask, (B, T) or (B,)
advantages, the hyperparameters as keywords (``clip_ratio_c=None``: no dual clip), a scalar loss of the
port's framework back. A port declared with ``agg=`` also takes ``loss_agg_mode`` (verl's names) and, with
``global_normalizers=True``, ``num_tokens`` / ``num_seqs`` (docs/conformance.md, "Conventions"). The adapters
call ports through `port_keywords`; the integrations build their ports with `kit_port` / `agg_kit_port`, so
the signature is written here once for both sides.

This module imports nothing beyond the standard library: the integrations import it when they build a
port, and importing an integration must not load a framework the user did not ask for.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cegppo import CEGPPOConfig

__all__ = ["HYPERPARAMETERS", "FrameworkCall", "Port", "agg_kit_port", "kit_port", "port_keywords"]

HYPERPARAMETERS: tuple[str, ...] = ("eps_low", "eps_high", "beta_low", "beta_high", "clip_ratio_c")
"""The keywords of a port, in the order of its signature (verl's name ``clip_ratio_c`` for the dual clip c)."""


class Port(Protocol):
    """A CE-GPPO policy loss as the kit calls it (the standard port signature)."""

    def __call__(self, log_prob: Any, old_log_prob: Any, advantages: Any, response_mask: Any, *, eps_low: float,
                 eps_high: float, beta_low: float, beta_high: float, clip_ratio_c: float | None) -> Any: ...


class FrameworkCall(Protocol):
    """A framework's loss called on the kit's arrays; the hyperparameters come as the keywords of `HYPERPARAMETERS`."""

    def __call__(self, log_prob: Any, old_log_prob: Any, advantages: Any, response_mask: Any, **hyper: Any) -> Any: ...


def port_keywords(cfg: CEGPPOConfig) -> dict[str, float | None]:
    """The keywords a port is called with for `cfg` (`HYPERPARAMETERS`; ``clip_ratio_c`` is ``cfg.dual_clip``)."""
    return {"eps_low": cfg.eps_low, "eps_high": cfg.eps_high, "beta_low": cfg.beta_low,
            "beta_high": cfg.beta_high, "clip_ratio_c": cfg.dual_clip}


def kit_port(call: FrameworkCall, *, name: str, doc: str, token_advantages: bool = False) -> Port:
    """`call` as a port named `name`.

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


def agg_kit_port(call: Callable[..., Any], *, name: str, doc: str, token_advantages: bool = False) -> Callable[
        ..., Any]:
    """`kit_port` for a framework loss that takes an aggregation mode.

    The port also takes the keywords the kit passes to a port declared with ``agg=``: ``loss_agg_mode``
    (default token-mean, the kit's mode without a declaration) and ``num_tokens`` / ``num_seqs`` (default
    None: the local counts). `call` receives all three as keywords, besides the hyperparameters.
    """

    def port(log_prob: Any, old_log_prob: Any, advantages: Any, response_mask: Any, *,
             loss_agg_mode: str = "token-mean", num_tokens: Any = None, num_seqs: Any = None, **hyper: Any) -> Any:
        bound = functools.partial(call, loss_agg_mode=loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs)
        inner = kit_port(bound, name=name, doc=doc, token_advantages=token_advantages)
        return inner(log_prob, old_log_prob, advantages, response_mask, **hyper)

    port.__name__ = port.__qualname__ = name
    port.__doc__ = doc
    return port
