"""`variant`: a standard port that is a shared loss function with some of its switches set.

Most broken ports differ from their correct port by one switch of the loss function they share
(``sg=False``, ``safe=False``, ...); writing each as a five-line wrapper would repeat the port
signature once per bug. A variant keeps the port's name, module and docstring, so the kit's
labels and reproducers name it as if it were written out (``jax_ports:missing_stop_gradient``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["variant"]


def variant(loss: Callable[..., Any], name: str, doc: str, **switches: Any) -> Callable[..., Any]:
    """The port ``name(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high, beta_low,
    beta_high, clip_ratio_c)`` calling ``loss(...the same, positionally..., **switches)``."""

    def port(log_prob: Any, old_log_prob: Any, advantages: Any, response_mask: Any, *, eps_low: float,
             eps_high: float, beta_low: float, beta_high: float, clip_ratio_c: float | None) -> Any:
        return loss(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, beta_low, beta_high,
                    clip_ratio_c, **switches)

    port.__name__ = port.__qualname__ = name
    port.__module__ = loss.__module__
    port.__doc__ = doc
    return port
