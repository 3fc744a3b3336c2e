"""The property registry: each property is a named check tied to one clause of docs/spec.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._adapters import Adapter
from ._port import OBJECTIVES

__all__ = ["CE_GPPO_ONLY", "FUSED_PROPERTIES", "MEMBER_PROPERTIES", "PROPERTIES", "REGISTRY", "TARGETS", "Property", "Skip", "objective_properties",
           "of_objective", "prop", "properties_of"]


class Skip(Exception):
    """Raised by a property's `skip` hook or body: the property does not apply to this implementation."""


@dataclass(frozen=True)
class Property:
    """A named conformance property.

    Attributes:
        clause: the spec clause it checks (``S5``, ``S8.3``, ...), quoted in test ids and reports.
        name: short name; ``f"{clause} {name}"`` is the test id (e.g. ``S5 gradient bound clip_high``).
        chapter: the spec chapter module it belongs to (``objective``, ``bounds``, ...).
        doc: one sentence of what is checked.
        body: ``body(adapter, data)`` draws inputs from Hypothesis's ``data`` and raises
            `Mismatch` when the property does not hold.
        needs_grad: skipped for adapters without gradients (NumPy ports).
        skip: ``skip(adapter)`` returns a reason not to run, or None.
        max_examples: a cap on examples for costly properties (compiled runs), or None.
        target: ``loss`` (policy losses: backends and ports) or ``fused`` (fused LM heads).
        share: the fraction of a run's max_examples this property runs (at least 1): the scale
            properties cost up to 10^6 tokens per example, so they run a share of the budget that
            grows with it (a ``ci`` run checks a few shapes, a ``thorough`` run many).
        declared: ``declared(adapter)`` returns why a port's declared convention replaces this
            property (reported as DECLARED, not run), or None.
        objectives: the objectives (`OBJECTIVES`) whose ports this property checks; None: every one.
            CE-GPPO's regions, beta special cases and dual clip (S3-S7) are ``("ce_gppo",)``; each
            member's clause of spec S14 names its members; the input, aggregation and numerics
            chapters (S1, S8, S9) hold for every member.
    """

    clause: str
    name: str
    chapter: str
    doc: str
    body: Callable[[Adapter, Any], None]
    needs_grad: bool = False
    skip: Callable[[Adapter], str | None] | None = None
    max_examples: int | None = None
    target: str = "loss"
    share: float = 1.0
    declared: Callable[[Adapter], str | None] | None = None
    objectives: tuple[str, ...] | None = None

    @property
    def id(self) -> str:
        return f"{self.clause} {self.name}"

    def examples(self, max_examples: int) -> int:
        """How many examples this property runs in a run of `max_examples` per property."""
        n = max(1, int(max_examples * self.share))
        return n if self.max_examples is None else min(n, self.max_examples)

    def checks(self, objective: str) -> bool:
        """Whether this property applies to ports of `objective` (a key of `OBJECTIVE_HYPERPARAMETERS`)."""
        return self.objectives is None or objective in self.objectives

    def skip_reason(self, adapter: Adapter) -> str | None:
        """Why this property does not run on `adapter`, or None when it does."""
        if getattr(adapter, "target", "loss") != self.target:
            return f"a property of {self.target} implementations; this is a {getattr(adapter, 'target', 'loss')}"
        objective = getattr(adapter, "objective", "ce_gppo")
        if not self.checks(objective):
            return f"a property of {' and '.join(self.objectives or ())} (spec {self.clause}); this is a {objective} port"
        if self.needs_grad and not adapter.has_grad:
            return "no gradients (NumPy port)"
        return self.skip(adapter) if self.skip is not None else None

    def declared_reason(self, adapter: Adapter) -> str | None:
        """The declared convention that stands in for this property on `adapter`, or None."""
        return self.declared(adapter) if self.declared is not None else None

    def __call__(self, adapter: Adapter, data: Any) -> None:
        self.body(adapter, data)


PROPERTIES: list[Property] = []
"""Every property of a CE-GPPO policy loss (the default objective), in spec order (filled as the chapter modules
are imported); those of S1, S8 and S9 check the other members of the family too."""
MEMBER_PROPERTIES: list[Property] = []
"""The policy-loss properties of the other members of the family only (spec S14), in spec order: with the
chapters of `PROPERTIES` that hold for every member, they check a port of CISPO, SAPO or GSPO."""
FUSED_PROPERTIES: list[Property] = []
"""The fused LM-head properties (spec S11.1), run on adapters from `fused_adapter`."""
REGISTRY: dict[str, list[Property]] = {"loss": PROPERTIES, "fused": FUSED_PROPERTIES}
"""An adapter's ``target`` (what it checks: a policy loss, backend or port, or a fused LM-head loss) -> its properties."""
TARGETS: tuple[str, ...] = tuple(REGISTRY)


def properties_of(adapter: Adapter) -> list[Property]:
    """The properties that apply to `adapter`: those registered for its target that check its objective."""
    return objective_properties(getattr(adapter, "objective", "ce_gppo"), adapter.target)


def objective_properties(objective: str, target: str = "loss") -> list[Property]:
    """Every property of `target` that checks ports of `objective`, in spec order: for CE-GPPO `PROPERTIES`
    less none, for another member those of its chapters that hold for every member, then its clause of S14."""
    listed = REGISTRY[target] + (MEMBER_PROPERTIES if target == "loss" else [])
    return of_objective(listed, objective)


def of_objective(properties: list[Property], objective: str) -> list[Property]:
    """The properties of `properties` that check ports of `objective` (`Property.checks`), in their order."""
    return [p for p in properties if p.checks(objective)]


CE_GPPO_ONLY: tuple[str, ...] = ("ce_gppo",)
"""`Property.objectives` of CE-GPPO's own clauses: its regions, beta special cases and dual clip (S3-S7)."""


def prop(clause: str, name: str, chapter: str, *, needs_grad: bool = False,
         skip: Callable[[Adapter], str | None] | None = None,
         max_examples: int | None = None,
         target: str = "loss", share: float = 1.0,
         declared: Callable[[Adapter], str | None] | None = None,
         objectives: tuple[str, ...] | None = None) -> Callable[[Callable[[Adapter, Any], None]], Property]:
    """Decorator: register `body` as a property (its docstring's first line is the description)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    unknown = [o for o in objectives or () if o not in OBJECTIVES]
    if unknown or objectives == ():
        raise ValueError(f"objectives must be None or a non-empty tuple of {OBJECTIVES}, got {objectives!r}")
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must lie in (0, 1], got {share!r}")

    def deco(body: Callable[[Adapter, Any], None]) -> Property:
        doc = (body.__doc__ or "").strip().splitlines()[0] if body.__doc__ else ""
        p = Property(clause, name, chapter, doc, body, needs_grad, skip, max_examples, target, share, declared,
                     objectives)
        (REGISTRY[target] if p.checks("ce_gppo") else MEMBER_PROPERTIES).append(p)
        return p

    return deco
