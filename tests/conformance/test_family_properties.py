"""Every conformance property of CISPO, SAPO and GSPO against the backend picked with --backend.

The backend's ``family_policy_loss`` is checked as a port of each member (`cc.FAMILY_OBJECTIVES`) is:
the chapters that hold for every member (S1, S8, S9, the kernel-scale S3) and the member's own clause
of spec S14, against the NumPy reference ``cegppo.family_policy_loss``. One test per (member,
property); the test id names both. The members share CE-GPPO's machinery, which the CE-GPPO suite
(test_properties.py) exercises at full strength, so each runs a share of the profile's examples
(`FAMILY_EXAMPLE_FRACTION` for the member's own clause, less for the shared chapters; never its
tolerances), and the million-token property is left to the kit's users (``thorough`` runs of a port).
"""

from __future__ import annotations

from typing import Any

import cegppo.conformance as cc
import pytest
from cegppo.conformance import Report

FAMILY_EXAMPLE_FRACTION = 0.1
"""Share of the backend's examples per property of a member's own clause of S14 (at least `FAMILY_MIN_EXAMPLES`)."""
FAMILY_MIN_EXAMPLES = 2
SHARED_EXAMPLE_FRACTION = FAMILY_EXAMPLE_FRACTION / 4
"""Share for the chapters every member shares (S1, S8, S9, kernel-scale S3), at least one example: they run the
adapters' and the aggregation's code that the CE-GPPO suite checks at full strength, and under jax.jit each
example is a compilation; one example per member still runs the member's row through each of them."""
MILLION_TOKENS = "S3 value and gradient at a million tokens"
COMPILED = "S9 compiled agrees with eager"
COMPILED_EXAMPLES = 1
"""torch.compile / jax.jit examples per member: each is a compilation of seconds (the drawn hyperparameters are
constants of the program); one shows that the member's code compiles and agrees with eager, and the CE-GPPO
suite exercises the adapter's compiled path at full strength."""

CASES = [(objective, p) for objective in cc.FAMILY_OBJECTIVES for p in cc.objective_properties(objective)
         if p.id != MILLION_TOKENS]


@pytest.fixture(scope="module")
def family_adapters(backend: str, jax_x64: None, device: str) -> dict[str, Any]:
    """The selected backend as an adapter of each member (built on first use: torch and jax import on demand)."""
    kw: dict[str, Any] = {"jit": backend == "jax", "device": None if backend == "numpy" else device}
    return {objective: cc.backend_adapter(backend, objective=objective, **kw) for objective in cc.FAMILY_OBJECTIVES}


@pytest.mark.parametrize(("objective", "prop"), CASES, ids=[f"{o} {p.id}" for o, p in CASES])
def test_member_property(objective: str, prop: cc.Property, family_adapters: dict[str, Any],
                         max_examples: int) -> None:
    adapter = family_adapters[objective]
    if prop.id == COMPILED:
        n = COMPILED_EXAMPLES
    elif prop.objectives is None:  # a chapter every member shares
        n = max(1, int(max_examples * SHARED_EXAMPLE_FRACTION))
    else:
        n = max(FAMILY_MIN_EXAMPLES, int(max_examples * FAMILY_EXAMPLE_FRACTION))
    result = cc.run_property(prop, adapter, max_examples=n)
    if result.status == "SKIP":
        pytest.skip(f"{prop.id}: {result.reason}")
    if result.status == "FAIL":
        report = Report(adapter.name, adapter.framework, adapter.kind, n, None, [result], objective=objective)
        pytest.fail(report.format(verbose=True), pytrace=False)
    assert result.examples >= 1, f"{prop.id} ran no example"


def test_every_member_has_its_clause() -> None:
    """Each member is checked by value, gradient, constants, bound and a special case of its own S14 clause,
    plus the on-policy weight of S14.1; CE-GPPO's own clauses (S3-S7 but the scale checks) check none of them."""
    for objective in cc.FAMILY_OBJECTIVES:
        ids = {p.id for p in cc.objective_properties(objective)}
        clause = next(c for c, members in {"S14.2": ("cispo", "cispo_cap"), "S14.3": ("sapo",),
                                           "S14.4": ("gspo",)}.items() if objective in members)
        for name in ("value equals the reference", "gradient equals the reference",
                     "old_log_prob and advantages are constants", "gradient bound"):
            assert f"{clause} {name}" in ids, (objective, name)
        assert "S14.1 on-policy weight is 1" in ids
        assert len([i for i in ids if i.startswith(clause)]) >= 5, (objective, ids)
        ce_only = {p.id for p in cc.PROPERTIES if p.objectives == ("ce_gppo",)}
        assert not ids & ce_only, ids & ce_only
        assert {"S9.3 masked garbage changes nothing", "S8.3 micro-batch additivity"} <= ids
    assert not {p.id for p in cc.MEMBER_PROPERTIES} & {p.id for p in cc.objective_properties("ce_gppo")}
