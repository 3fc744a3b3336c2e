"""The fused LM-head properties (spec S11.1) on the selected backend, and proof that they can fail.

With --backend=torch or --backend=jax, `cegppo.<backend>.fused_linear_policy_loss` must pass every
S11.1 property (the NumPy reference has no fused head: skipped). With --backend=torch, a correct
head written through full logits passes too and each broken head in
`ports/fused_torch_ports.py` is caught, by the whole suite and by the property named for its bug.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import cegppo.conformance as cc
import pytest
from cegppo.conformance import FUSED_PROPERTIES, Report
from ports import BROKEN_MIN_EXAMPLES, FUSED_TORCH_BROKEN


@pytest.fixture(scope="module")
def fused(backend: str, jax_x64: None) -> Any:
    if backend == "numpy":
        pytest.skip("the NumPy reference has no fused head (run with --backend=torch or jax)")
    return cc.fused_adapter(backend, jit=backend == "jax")


@pytest.fixture(scope="module")
def fused_ports(backend: str) -> Any:
    if backend != "torch":
        pytest.skip("torch fused-head ports run with --backend=torch")
    from ports import fused_torch_ports as module

    return module


@pytest.mark.parametrize("prop", FUSED_PROPERTIES, ids=[p.id for p in FUSED_PROPERTIES])
def test_fused_property(prop: cc.Property, fused: Any, max_examples: int) -> None:
    result = cc.run_property(prop, fused, max_examples=max_examples)
    if result.status != "PASS":
        report = Report(fused.name, fused.framework, fused.kind, max_examples, None, [result])
        pytest.fail(report.format(verbose=True), pytrace=False)
    assert result.examples >= 1


def test_fused_properties_cover_values_metrics_gradients_masking() -> None:
    names = {p.name for p in FUSED_PROPERTIES}
    assert {p.clause for p in FUSED_PROPERTIES} == {"S11.1"}
    for word in ("value", "metrics", "gradients", "masked garbage", "empty batch"):
        assert any(word in n for n in names), word
    assert not set(map(id, FUSED_PROPERTIES)) & set(map(id, cc.PROPERTIES))


def test_correct_full_logits_head_passes(fused_ports: Any, max_examples: int) -> None:
    report = cc.check(cc.fused_adapter(fused_ports.correct, "torch"), max_examples=max_examples)
    assert report.ok, report.format()
    assert [r.id for r in report.results] == [p.id for p in FUSED_PROPERTIES]


def test_every_broken_head_is_listed(fused_ports: Any) -> None:
    names = {n for n, f in vars(fused_ports).items()
             if callable(f) and not n.startswith("_") and getattr(f, "__module__", "") == fused_ports.__name__}
    assert names - {"correct"} == set(FUSED_TORCH_BROKEN)


@pytest.mark.parametrize("name", sorted(FUSED_TORCH_BROKEN))
def test_broken_head_is_caught(fused_ports: Any, name: str, max_examples: int) -> None:
    bug, prefix = FUSED_TORCH_BROKEN[name]
    adapter = cc.fused_adapter(getattr(fused_ports, name), "torch")
    n = max(max_examples, BROKEN_MIN_EXAMPLES)
    report = cc.check(adapter, max_examples=n, fail_fast=True, shrink=False)
    assert not report.ok, f"{name} ({bug}) passed the S11.1 properties:\n{report.format()}"
    targeted = cc.check(adapter, max_examples=n, only=[prefix], fail_fast=True, shrink=False)
    assert not targeted.ok, f"{name} ({bug}) not caught by {prefix}:\n{targeted.format()}"


def test_fused_reproducer_recomputes_the_failure(fused_ports: Any) -> None:
    """The shrunk reproducer of a failing head runs as pasted and prints a loss that is not the reference's."""
    adapter = cc.fused_adapter(fused_ports.entropy_bonus_sign, "torch")
    report = cc.check(adapter, max_examples=40, only=["S11.1 fused value"])
    (fail,) = report.failed
    assert "from ports.fused_torch_ports import entropy_bonus_sign as fused" in fail.reproducer
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(fail.reproducer, "<reproducer>", "exec"), {})
    got = float(out.getvalue().split()[0])
    want = float(fail.reproducer.rsplit("loss = ", 1)[1])
    assert abs(got - want) > 1e-6, (got, want)


def test_loss_and_fused_properties_do_not_mix(fused_ports: Any) -> None:
    loss_adapter = cc.backend_adapter("torch")
    result = cc.run_property(FUSED_PROPERTIES[0], loss_adapter, max_examples=2)
    assert result.status == "SKIP" and "fused" in result.reason
    result = cc.run_property(cc.PROPERTIES[0], cc.fused_adapter(fused_ports.correct, "torch"), max_examples=2)
    assert result.status == "SKIP" and "loss" in result.reason


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "needle"),
    [
        (("numpy",), {}, ValueError, "fused must be 'torch', 'jax' or a callable"),
        ((42,), {}, TypeError, "fused must be 'torch', 'jax' or a callable, got int"),
        ((print, "numpy"), {}, ValueError, "framework must be 'torch' or 'jax' for a fused head"),
        ((print, None), {}, ValueError, "framework must be 'torch' or 'jax' for a fused head"),
        (("torch", "jax"), {}, ValueError, "does not match"),
        ((print, "torch"), {"jit": True}, ValueError, "jit=True is for framework='jax' only"),
    ],
)
def test_fused_adapter_rejects_bad_arguments(backend: str, args: tuple, kwargs: dict, exc: type, needle: str) -> None:
    if backend != "torch":
        pytest.skip("runs with --backend=torch")
    with pytest.raises(exc, match=needle.replace("(", r"\(").replace(")", r"\)")):
        cc.fused_adapter(*args, **kwargs)
