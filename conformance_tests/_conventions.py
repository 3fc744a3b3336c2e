"""Declared conventions: how a port departs from the spec on purpose, so that the kit checks what it means.

A port written in a framework's conventions is not wrong because it divides by ``count + 1e-8``
(verl's old ``masked_mean``), has no off switch for the dual clip, or computes in float32 whatever
it is given: it is written to a different contract. A declaration tells the kit which one, and
the kit then evaluates the reference under the same convention (docs/conformance.md,
"Conventions"):

- ``normalizer_eps``: every count the aggregation mode divides by (N, n_i and S of spec S8.1) is
  divided by as ``count + eps``; the reference does the same, so values still compare at full
  precision, and the all-masked batch must still give 0 (S8.4);
- ``dual_clip="required"``: the port cannot turn the dual clip off, so the kit never passes
  ``clip_ratio_c=None`` (S7 is then checked against the reference with the clip on);
  ``dual_clip="absent"``: the port has no dual clip (SkyRL's ``regular``), so the
  kit always passes ``clip_ratio_c=None``, and the dual-clip properties report ``DECLARED``;
- ``compute_dtype="float32"``: float64 inputs are computed in float32; float64 draws are compared
  at float32 tolerance and drawn float32's margin away from the clip boundaries, and
  ``S9.5 float64 inputs are computed in float64`` reports ``DECLARED``;
- ``agg``: the aggregation modes the port takes as ``loss_agg_mode=`` (verl's names), and whether
  it takes the global normalizers ``num_tokens=`` / ``num_seqs=`` (``global_normalizers``).

They also say which objective the port computes (``objective``: CE-GPPO by default, or a member of
the family of spec S14, `OBJECTIVES`), because the other declarations are read against it: a port
declaring no ``agg`` is expected to compute its member's paper aggregation (token-mean for CE-GPPO
and CISPO, seq-mean-token-mean for SAPO and GSPO), and only CE-GPPO has a dual clip to declare.

The conventions of the running property are held in a context variable (`use`), so that every
`Case` drawn inside it carries them (`Case.conventions`) without each strategy being told.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from cegppo import AGG_MODES

from ._objectives import CE_GPPO, check_objective, paper_agg

__all__ = ["COMPUTE_DTYPES", "DUAL_CLIP_OPTIONS", "SPEC", "Conventions", "active", "conventions",
           "declares_no_dual_clip", "spec_conventions", "use"]

DUAL_CLIP_OPTIONS: tuple[str, ...] = ("optional", "required", "absent")
"""``optional``: the port turns the dual clip off for clip_ratio_c=None (spec S7); ``required``: it cannot;
``absent``: it has no dual clip to turn on."""
COMPUTE_DTYPES: tuple[str, ...] = ("float32",)
"""Compute dtypes a port may declare instead of spec S9.5's promotion (float64 stays float64)."""


@dataclass(frozen=True)
class Conventions:
    """What a port declares about itself; the default is the spec's own contract for CE-GPPO (`SPEC`)."""

    normalizer_eps: float = 0.0
    dual_clip: str = "optional"
    compute_dtype: str | None = None
    agg: tuple[str, ...] = ("token-mean",)
    global_normalizers: bool = False
    objective: str = CE_GPPO
    """The objective the port computes (a key of `OBJECTIVE_HYPERPARAMETERS`): which reference and which
    properties apply, and which keywords the port takes."""

    @property
    def is_spec(self) -> bool:
        """Whether nothing is declared beyond the objective: the spec's contract for that objective."""
        return self == spec_conventions(self.objective)

    @property
    def agg_declared(self) -> bool:
        """Whether the port takes ``loss_agg_mode=`` (modes other than its objective's paper aggregation, or
        global normalizers, were declared)."""
        return self.agg != spec_conventions(self.objective).agg or self.global_normalizers

    def lines(self) -> list[str]:
        """One line per declared convention, with its option and command-line flag (for the report)."""
        out = []
        if self.normalizer_eps:
            out.append(f"divides by count + {self.normalizer_eps:g} (normalizer_eps={self.normalizer_eps:g}, "
                       f"--normalizer-eps {self.normalizer_eps:g})")
        if self.dual_clip == "required":
            out.append("dual clip always on: clip_ratio_c=None is never passed (dual_clip='required', "
                       "--dual-clip required)")
        if self.dual_clip == "absent":
            out.append("no dual clip: clip_ratio_c is always None (dual_clip='absent', --dual-clip absent)")
        if self.compute_dtype is not None:
            out.append(f"float64 inputs computed in {self.compute_dtype}, compared at {self.compute_dtype} tolerance "
                       f"(compute_dtype={self.compute_dtype!r}, --compute-dtype {self.compute_dtype})")
        if self.agg_declared:
            glob = ", with global normalizers num_tokens=/num_seqs=" if self.global_normalizers else ""
            out.append(f"takes loss_agg_mode= in {', '.join(self.agg)}{glob} (agg=, --agg)")
        return out


SPEC = Conventions()
"""The spec's contract: no epsilon, dual clip off for None, S9.5 dtypes, token-mean with local normalizers."""


def spec_conventions(objective: str) -> Conventions:
    """The spec's contract for a port of `objective`: nothing declared, its paper aggregation (spec S14.1)."""
    if objective == CE_GPPO:
        return SPEC
    return Conventions(agg=(paper_agg(objective),), objective=check_objective(objective))


def _agg_modes(agg: str | Sequence[str] | None, objective: str) -> tuple[str, ...]:
    if agg is None:
        return spec_conventions(objective).agg
    names = [a.strip() for a in agg.split(",")] if isinstance(agg, str) else list(agg)
    if names == ["all"]:
        return tuple(AGG_MODES)
    bad = [a for a in names if a not in AGG_MODES]
    if bad or not names:
        raise ValueError(f"agg must be a comma list of {AGG_MODES} or 'all', got {agg!r}")
    return tuple(dict.fromkeys(names))


def conventions(*, normalizer_eps: Any = 0.0, dual_clip: Any = "optional", compute_dtype: Any = None,
                agg: str | Sequence[str] | None = None, global_normalizers: Any = False,
                objective: Any = CE_GPPO) -> Conventions:
    """A validated `Conventions` (ValueError / TypeError naming the bad argument).

    ``agg=None`` is the objective's paper aggregation, passed to the port as no ``loss_agg_mode``.
    """
    objective = check_objective(objective)
    if isinstance(normalizer_eps, bool) or not isinstance(normalizer_eps, (int, float)):
        raise TypeError(f"normalizer_eps must be a number, got {type(normalizer_eps).__name__} {normalizer_eps!r}")
    # Above 1e-2 it is no longer an epsilon: it would change what a count of 1 means.
    if not (math.isfinite(normalizer_eps) and 0.0 <= normalizer_eps <= 1e-2):
        raise ValueError(f"normalizer_eps must be a finite number in [0, 1e-2], got {normalizer_eps!r}")
    if dual_clip not in DUAL_CLIP_OPTIONS:
        raise ValueError(f"dual_clip must be one of {DUAL_CLIP_OPTIONS}, got {dual_clip!r}")
    if dual_clip != "optional" and objective != CE_GPPO:  # the dual clip is CE-GPPO's (spec S7)
        raise ValueError(f"dual_clip={dual_clip!r} declares a dual clip, which only ce_gppo has; "
                         f"objective={objective!r} has none (leave dual_clip='optional')")
    if compute_dtype is not None and compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be None or one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
    if not isinstance(global_normalizers, bool):
        raise TypeError(f"global_normalizers must be a bool, got {type(global_normalizers).__name__}")
    return Conventions(float(normalizer_eps), dual_clip, compute_dtype, _agg_modes(agg, objective), global_normalizers,
                       objective)


def declares_no_dual_clip(adapter: Any) -> str | None:
    """Why the dual-clip properties do not apply to `adapter`'s port (it declares none), or None."""
    if adapter.conventions.dual_clip == "absent":
        return "dual_clip='absent' declared: the port has no dual clip"
    return None


_ACTIVE: ContextVar[Conventions] = ContextVar("cegppo_conformance_conventions", default=SPEC)


def active() -> Conventions:
    """The conventions of the property running in this thread (`SPEC` outside `check`)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def use(conv: Conventions) -> Iterator[Conventions]:
    """Run a block with `conv` active: every `Case` built in it carries `conv`."""
    token = _ACTIVE.set(conv)
    try:
        yield conv
    finally:
        _ACTIVE.reset(token)
