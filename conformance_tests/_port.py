"""The port contract: how the kit calls an implementation, and `kit_port`, which gives a framework's loss that shape.

A port (docs/conformance.md) is ``port(log_prob, old_log_prob, advantages, response_mask, *, eps_low,
eps_high, beta_low, beta_high, clip_ratio_c) -> loss``: (B, T) log-probs and mask, (B, T) or (B,)
advantages, the hyperparameters as keywords (``clip_ratio_c=None``: no dual clip), a scalar loss of the
port's framework back. A port of another member of the family (docs/spec.md S14) takes that member's
keywords instead (`OBJECTIVE_HYPERPARAMETERS`: CISPO ``eps_low, eps_high``, ...). A port declared with ``agg=`` also takes ``loss_agg_mode`` (verl's names) and, with
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

__all__ = [
    "HYPERPARAMETERS",
    "OBJECTIVES",
    "OBJECTIVE_HYPERPARAMETERS",
    "FrameworkCall",
    "Port",
    "agg_kit_port",
    "kit_port",
    "objective_of",
    "paper_aggregation",
    "port_keywords",
]

HYPERPARAMETERS: tuple[str, ...] = ("eps_low", "eps_high", "beta_low", "beta_high", "clip_ratio_c")
"""The keywords of a CE-GPPO port, in the order of its signature (verl's name ``clip_ratio_c`` for the dual clip c)."""

OBJECTIVE_HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "ce_gppo": HYPERPARAMETERS,
    "cispo": ("eps_low", "eps_high"),
    "cispo_cap": ("cap",),
    "sapo": ("tau_pos", "tau_neg"),
    "gspo": ("eps_low", "eps_high"),
}
"""Objective -> the keywords a port of it takes (docs/spec.md S14.1): each is the field of that name of the
objective's config (`CEGPPOConfig`, `CISPOConfig`, `CISPOCapConfig`, `SAPOConfig`, `GSPOConfig`), except
CE-GPPO's ``clip_ratio_c``, which is ``dual_clip``."""
OBJECTIVES: tuple[str, ...] = tuple(OBJECTIVE_HYPERPARAMETERS)
"""The objectives the kit checks a port of (``--objective``); ``ce_gppo`` is the default."""

# By the config's class name, so that this module needs no import of cegppo (see the module docstring).
_OBJECTIVE_OF_CONFIG: dict[str, str] = {
    "CEGPPOConfig": "ce_gppo",
    "CISPOConfig": "cispo",
    "CISPOCapConfig": "cispo_cap",
    "SAPOConfig": "sapo",
    "GSPOConfig": "gspo",
}


class Port(Protocol):
    """A CE-GPPO policy loss as the kit calls it (the standard port signature)."""

    def __call__(self, log_prob: Any, old_log_prob: Any, advantages: Any, response_mask: Any, *, eps_low: float,
                 eps_high: float, beta_low: float, beta_high: float, clip_ratio_c: float | None) -> Any: ...


class FrameworkCall(Protocol):
    """A framework's loss called on the kit's arrays; the hyperparameters come as the keywords of `HYPERPARAMETERS`."""

    def __call__(self, log_prob: Any, old_log_prob: Any, advantages: Any, response_mask: Any, **hyper: Any) -> Any: ...


def objective_of(cfg: Any) -> str:
    """The objective (a key of `OBJECTIVE_HYPERPARAMETERS`) whose config `cfg` is."""
    objective = _OBJECTIVE_OF_CONFIG.get(type(cfg).__name__)
    if objective is None:
        raise TypeError(f"cfg must be one of cegppo.{{{', '.join(_OBJECTIVE_OF_CONFIG)}}}, got {type(cfg).__name__}")
    return objective


def paper_aggregation(objective: str) -> str:
    """The aggregation mode `objective`'s paper uses (`cegppo.FAMILY`'s ``paper_agg``, docs/spec.md S14.1).

    A port that takes ``loss_agg_mode`` computes it when the kit passes none: the kit, given no ``agg``
    declaration, compares a port with the member's paper aggregation.
    """
    import cegppo  # NumPy only; imported here so that importing this module stays standard-library only

    for cls, member in cegppo.FAMILY.items():
        if _OBJECTIVE_OF_CONFIG[cls.__name__] == objective:
            return member.paper_agg
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def port_keywords(cfg: CEGPPOConfig | Any) -> dict[str, float | None]:
    """The keywords a port is called with for `cfg`: its objective's `OBJECTIVE_HYPERPARAMETERS`, each the
    field of that name (``clip_ratio_c`` is ``cfg.dual_clip``)."""
    names = OBJECTIVE_HYPERPARAMETERS[objective_of(cfg)]
    return {k: cfg.dual_clip if k == "clip_ratio_c" else getattr(cfg, k) for k in names}


def kit_port(call: FrameworkCall, *, name: str, doc: str, token_advantages: bool = False,
             objective: str = "ce_gppo") -> Port:
    """`call` as a port of `objective` (a key of `OBJECTIVE_HYPERPARAMETERS`) named `name`.

    The port takes exactly the objective's keywords and hands them to `call` as keywords. With
    ``token_advantages=True`` (torch frameworks whose losses take (B, T) advantages: verl, OpenRLHF,
    SkyRL) per-sequence (B,) advantages, which the kit may hand, are broadcast over the tokens first,
    as those frameworks do before their loss.
    """
    if objective not in OBJECTIVE_HYPERPARAMETERS:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    expected = set(OBJECTIVE_HYPERPARAMETERS[objective])

    def port(log_prob: Any, old_log_prob: Any, advantages: Any, response_mask: Any, **hyper: Any) -> Any:
        if set(hyper) != expected:
            raise TypeError(f"{name} takes the keywords {sorted(expected)} of a {objective} port, got {sorted(hyper)}")
        if token_advantages and advantages.dim() == 1:
            advantages = advantages[:, None].expand(log_prob.shape)
        return call(log_prob, old_log_prob, advantages, response_mask, **hyper)

    _label(port, name=name, doc=doc, objective=objective)
    return port


def _label(port: Callable[..., Any], *, name: str, doc: str, objective: str) -> None:
    """Name `port`, and record the objective whose keywords it takes (``port.objective``), which a caller that
    did not build it (the command line) reads to check it against the right member."""
    port.__name__ = port.__qualname__ = name
    port.__doc__ = doc
    port.objective = objective  # type: ignore[attr-defined]


def agg_kit_port(call: Callable[..., Any], *, name: str, doc: str, token_advantages: bool = False,
                 objective: str = "ce_gppo") -> Callable[..., Any]:
    """`kit_port` for a framework loss that takes an aggregation mode.

    The port also takes the keywords the kit passes to a port declared with ``agg=``: ``loss_agg_mode``
    (default None: the objective's `paper_aggregation`, the mode the kit expects without a declaration;
    token-mean for CE-GPPO) and ``num_tokens`` / ``num_seqs`` (default None: the local counts). `call`
    receives all three as keywords, besides the hyperparameters.
    """
    default_mode = paper_aggregation(objective)

    def port(log_prob: Any, old_log_prob: Any, advantages: Any, response_mask: Any, *,
             loss_agg_mode: str | None = None, num_tokens: Any = None, num_seqs: Any = None, **hyper: Any) -> Any:
        mode = default_mode if loss_agg_mode is None else loss_agg_mode
        bound = functools.partial(call, loss_agg_mode=mode, num_tokens=num_tokens, num_seqs=num_seqs)
        inner = kit_port(bound, name=name, doc=doc, token_advantages=token_advantages, objective=objective)
        return inner(log_prob, old_log_prob, advantages, response_mask, **hyper)

    _label(port, name=name, doc=doc, objective=objective)
    return port
