"""The kit tells correct ports of CISPO, SAPO and GSPO from broken ones (runs with --backend=torch).

`ports/family_torch_ports.py` holds a correct port per member (written independently of cegppo.torch)
and broken ones; `ports.FAMILY_TORCH_BROKEN` names the property expected to catch each. As for CE-GPPO's
broken ports, each is checked by that property with ``fail_fast=True, shrink=False``.
"""

from __future__ import annotations

from typing import Any

import cegppo.conformance as cc
import pytest
from cegppo.conformance._diagnose import DEFECT_CLASSES
from ports import FAMILY_CORRECT, FAMILY_TORCH_BROKEN

BROKEN_MIN_EXAMPLES = 40
"""As for CE-GPPO's broken ports: a detection must not depend on a small example budget."""

CORRECT_EXAMPLES = 3
"""Examples per property for the correct ports: the backends' own family suite runs the properties at strength."""


@pytest.fixture(scope="module")
def ports(backend: str) -> Any:
    if backend != "torch":
        pytest.skip("torch ports run with --backend=torch")
    from ports import family_torch_ports as module

    return module


def test_every_family_port_is_listed(ports: Any) -> None:
    names = {n for n, f in vars(ports).items()
             if callable(f) and not n.startswith("_") and getattr(f, "__module__", "") == ports.__name__}
    assert names == set(FAMILY_CORRECT) | set(FAMILY_TORCH_BROKEN)
    assert {objective for objective, _, _ in FAMILY_TORCH_BROKEN.values()} >= {"cispo", "sapo", "gspo"}


@pytest.mark.parametrize("name", sorted(FAMILY_CORRECT))
def test_correct_family_port_passes(ports: Any, name: str, device: str) -> None:
    objective = FAMILY_CORRECT[name]
    report = cc.check(getattr(ports, name), "torch", objective=objective, max_examples=CORRECT_EXAMPLES,
                      device=device)
    assert report.ok, report.format()
    assert report.header().startswith(f"cegppo conformance: {objective} ")
    clause = {"cispo": "S14.2", "cispo_cap": "S14.2", "sapo": "S14.3", "gspo": "S14.4"}[objective]
    ran = {r.id for r in report.results if r.status == "PASS"}
    assert f"{clause} value equals the reference" in ran and f"{clause} gradient bound" in ran, ran
    assert not any(r.clause in ("S5", "S6.1", "S6.2", "S7") for r in report.results)  # CE-GPPO's clauses


@pytest.mark.parametrize("name", sorted(FAMILY_TORCH_BROKEN))
def test_broken_family_port_is_caught(ports: Any, name: str, max_examples: int, device: str) -> None:
    objective, bug, prefix = FAMILY_TORCH_BROKEN[name]
    report = cc.check(getattr(ports, name), "torch", objective=objective, max_examples=max(max_examples,
                      BROKEN_MIN_EXAMPLES), only=[prefix], fail_fast=True, shrink=False, device=device)
    assert not report.ok, f"{name} ({bug}) not caught by {prefix}:\n{report.format()}"
    first = report.failed[0]
    assert first.id.startswith(prefix) and first.message and first.reproducer, first
    assert first.diagnosis and first.defect_class in DEFECT_CLASSES, first
    assert "port(log_prob, old_log_prob, advantages, response_mask, " in first.reproducer
    assert "beta_low" not in first.reproducer  # the member's keywords, not CE-GPPO's


def test_a_port_of_another_member_is_refused_with_its_keywords(ports: Any) -> None:
    """A CISPO port checked as SAPO gets SAPO's keywords and raises: the first property says so."""
    report = cc.check(ports.cispo_correct, "torch", objective="sapo", max_examples=2, only=["S1 declared"])
    assert not report.ok
    assert "tau_pos" in report.failed[0].exception or "tau_pos" in report.failed[0].reproducer
