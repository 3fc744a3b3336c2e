"""The kit on JAX ports (runs with --backend=jax): the correct port passes, each broken one is caught."""

from __future__ import annotations

from typing import Any

import cegppo.conformance as cc
import pytest
from ports import BROKEN_MIN_EXAMPLES, JAX_BROKEN


@pytest.fixture(scope="module")
def ports(jax_ports: Any) -> Any:
    return jax_ports


def test_correct_jax_port_passes_every_property(ports: Any, max_examples: int, device: str) -> None:
    # Under jax.jit (eager JAX compiles every op for each new shape; S9 compares with eager), and at a
    # fifth of the backend's examples (2 in ci, 100 in thorough): test_properties.py runs the full count
    # through the same JaxAdapter and the same jit path, and every example here is a new XLA compilation
    # (the drawn hyperparameters are constants of the program), so more would re-check that path, not
    # the port convention this test is about (the broken ports below are what the kit must catch).
    report = cc.check(ports.correct, "jax", max_examples=max(2, max_examples // 5), jit=True, device=device)
    assert report.ok, report.format()
    # x64 on: float64 and jit checked too; only mutation and strided views are moot (JAX arrays are immutable
    # and have no user-visible strides)
    assert [r.id for r in report.results if r.status == "SKIP"] == ["S1 inputs are not modified",
                                                                    "S1 inputs as views (sliced, transposed)"]


def test_correct_jax_port_passes_eagerly(ports: Any) -> None:
    """The default (eager) JaxAdapter path on a few properties."""
    report = cc.check(ports.correct, "jax", max_examples=3, only=["S3", "S4", "S9.3"])
    assert report.ok, report.format()


def test_token_only_jax_port_on_a_device(ports: Any, device: str) -> None:
    """(B, T)-only advantages declared, inputs on --device: conforms; undeclared: one line says what to declare."""
    only = ["S1", "S3 value equals", "S4"]
    report = cc.check(ports.token_advantages_only, "jax", max_examples=3, jit=True, device=device,
                      advantages="token", only=only)
    assert report.ok, report.format()
    report = cc.check(ports.token_advantages_only, "jax", max_examples=3, jit=True, device=device, only=only)
    assert [r.id for r in report.failed] == ["S1 declared advantage shapes are accepted"], report.format()
    assert "--advantages token" in report.failed[0].message


@pytest.mark.parametrize("name", sorted(JAX_BROKEN))
def test_broken_jax_port_is_caught(ports: Any, name: str, max_examples: int, device: str) -> None:
    bug, prefix = JAX_BROKEN[name]
    max_examples = max(max_examples, BROKEN_MIN_EXAMPLES)
    report = cc.check(getattr(ports, name), "jax", max_examples=max_examples, only=[prefix], fail_fast=True,
                      shrink=False, device=device)
    assert not report.ok, f"{name} ({bug}) not caught by {prefix}:\n{report.format()}"
    assert report.failed[0].message and report.failed[0].reproducer
