"""The kit on JAX ports (runs with --backend=jax): the correct port passes, each broken one is caught."""

from __future__ import annotations

from typing import Any

import cegppo.conformance as cc
import pytest
from ports import JAX_BROKEN

BROKEN_MIN_EXAMPLES = 40
"""Broken ports stop at their first failure (fail_fast, no shrink), so they get at least the ci count
whatever the profile or --conformance-max-examples: a detection must not depend on a small budget."""


@pytest.fixture(scope="module")
def ports(jax_ports: Any) -> Any:
    return jax_ports


def test_correct_jax_port_passes_every_property(ports: Any, max_examples: int) -> None:
    # Under jax.jit (eager JAX compiles every op for each new shape; S9 compares with eager), and at
    # half the backend's examples: test_properties.py runs the full count through the same JaxAdapter.
    report = cc.check(ports.correct, "jax", max_examples=max(3, max_examples // 2), jit=True)
    assert report.ok, report.format()
    assert not [r.id for r in report.results if r.status == "SKIP"]  # x64 on: float64 and jit checked too


def test_correct_jax_port_passes_eagerly(ports: Any) -> None:
    """The default (eager) JaxAdapter path on a few properties."""
    report = cc.check(ports.correct, "jax", max_examples=3, only=["S3", "S4", "S9.3"])
    assert report.ok, report.format()


@pytest.mark.parametrize("name", sorted(JAX_BROKEN))
def test_broken_jax_port_is_caught(ports: Any, name: str, max_examples: int) -> None:
    bug, prefix = JAX_BROKEN[name]
    max_examples = max(max_examples, BROKEN_MIN_EXAMPLES)
    report = cc.check(getattr(ports, name), "jax", max_examples=max_examples, only=[prefix], fail_fast=True,
                      shrink=False)
    assert not report.ok, f"{name} ({bug}) not caught by {prefix}:\n{report.format()}"
    assert report.failed[0].message and report.failed[0].reproducer
