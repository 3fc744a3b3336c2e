"""The kit tells a correct torch port from broken ones (runs with --backend=torch).

`ports/torch_ports.py` holds `correct` (written independently of cegppo.torch) and one port per
realistic bug; `ports.TORCH_BROKEN` names the property expected to catch each. Broken ports are
checked with ``fail_fast=True, shrink=False``: the verdict, not a minimal example, is what is
asserted here, and shrinking every failure would cost a minute per port. Two tests execute a
reproducer (shrunk, as users get it; and a million-token one, rebuilt by ``cc.scale_case``) to show
that it recomputes the failure. Every check runs on --device (default cpu).
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from typing import Any

import cegppo.conformance as cc
import pytest
from cegppo.conformance._diagnose import DEFECT_CLASSES
from ports import BROKEN_MIN_EXAMPLES, CORRECT, TORCH_BROKEN, TORCH_DIAGNOSES


@pytest.fixture(scope="module")
def ports(torch_ports: Any) -> Any:
    return torch_ports


def test_correct_port_passes_every_property(ports: Any, max_examples: int, device: str) -> None:
    report = cc.check(ports.correct, "torch", max_examples=max_examples, device=device)
    assert report.ok, report.format()
    skipped = {r.id for r in report.results if r.status == "SKIP"}
    assert skipped == {"S9 compiled agrees with eager"}, skipped  # torch.compile of ports is opt-in
    assert all(r.examples >= 1 for r in report.results if r.status == "PASS")


def test_correct_port_passes_with_a_float_mask(ports: Any) -> None:
    """verl hands the mask as 0/1 floats (--mask-dtype float)."""
    report = cc.check(ports.correct, "torch", max_examples=10, mask_dtype="float", only=["S3", "S8.4", "S9.3"])
    assert report.ok, report.format()


def test_every_broken_port_is_listed(ports: Any) -> None:
    names = {n for n, f in vars(ports).items()
             if callable(f) and not n.startswith("_") and getattr(f, "__module__", "") == ports.__name__}
    assert names - set(CORRECT) == set(TORCH_BROKEN)
    assert len({bug for bug, _ in TORCH_BROKEN.values()}) >= 13  # distinct bug classes


@pytest.mark.parametrize("name", sorted(TORCH_BROKEN))
def test_broken_port_is_caught(ports: Any, name: str, max_examples: int, device: str) -> None:
    """The property that pins the bug class down fails the port (so the suite, which holds it, fails it too:
    each property draws the same derandomized examples alone as within the suite)."""
    port = getattr(ports, name)
    max_examples = max(max_examples, BROKEN_MIN_EXAMPLES)
    bug, prefix = TORCH_BROKEN[name]
    targeted = cc.check(port, "torch", max_examples=max_examples, only=[prefix], fail_fast=True, shrink=False,
                        device=device)
    assert not targeted.ok, f"{name} ({bug}) not caught by {prefix}:\n{targeted.format()}"
    first = targeted.failed[0]
    assert first.id.startswith(prefix)
    assert first.message and first.reproducer, first
    assert first.diagnosis and first.defect_class in DEFECT_CLASSES, first  # a diagnosis on every failure
    if name in TORCH_DIAGNOSES:
        cls, phrase = TORCH_DIAGNOSES[name]
        assert first.defect_class == cls and phrase in first.diagnosis, (first.defect_class, first.diagnosis)


def test_fail_fast_reports_the_first_failure_in_spec_order(ports: Any, device: str) -> None:
    """The whole suite with --fail-fast --no-shrink, as a user runs it: a port that breaks S3 stops there,
    with the message and reproducer of that first failure (each broken port above is checked by its
    own property only: the whole suite would re-run every earlier property per port)."""
    report = cc.check(ports.wrong_loss_sign, "torch", max_examples=BROKEN_MIN_EXAMPLES, fail_fast=True,
                      shrink=False, device=device)
    assert not report.ok and report.stopped_early
    first = report.failed[0]
    assert report.results[-1] is first and first.id == "S3 value equals the reference", report.format()
    assert first.message and first.reproducer, first
    assert all(r.status in ("PASS", "SKIP") for r in report.results[:-1]), report.format()


def test_shrunk_reproducer_recomputes_the_failure(ports: Any) -> None:
    """The default (shrinking) report of a broken port carries a snippet that reproduces the mismatch."""
    report = cc.check(ports.wrong_loss_sign, "torch", max_examples=20, only=["S3 value equals"])
    (failure,) = report.failed
    assert "from ports.torch_ports import wrong_loss_sign as port" in failure.reproducer
    namespace: dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(failure.reproducer, namespace)
    want = float(re.search(r"# reference .*: loss = (\S+)", failure.reproducer).group(1))
    got = float(namespace["loss"].item())
    assert math.isfinite(got) and got == pytest.approx(-want, rel=1e-5, abs=1e-12) and got != want


def test_token_only_port_conforms_when_declared(ports: Any, device: str) -> None:
    """A correct port taking (B, T) advantages only, as verl's: it conforms with advantages="token"."""
    report = cc.check(ports.token_advantages_only, "torch", max_examples=5, advantages="token", device=device)
    assert report.ok, report.format()
    assert f"device {device}, advantages token" in report.header()


def test_token_only_port_undeclared_gets_one_line_saying_what_to_declare(ports: Any) -> None:
    report = cc.check(ports.token_advantages_only, "torch", max_examples=3)
    assert [r.id for r in report.failed] == ["S1 declared advantage shapes are accepted"], report.format()
    line = next(ln for ln in report.format().splitlines() if ln.startswith("FAIL"))
    assert "rejects (B,) per-sequence advantages" in line
    assert "declare advantages='token' (--advantages token)" in line
    assert "the implementation raised" not in report.format()
    assert "ValueError: advantages must have the shape of log_prob" in report.failed[0].exception
    assert any("draw (B, T) per-token advantages only" in note for note in report.notes)


def test_sequence_only_port_conforms_when_declared(ports: Any) -> None:
    """Every strategy draws (B,) advantages only when asked: region, dual-clip and permutation cases included."""
    report = cc.check(ports.sequence_advantages_only, "torch", max_examples=5, advantages="sequence")
    assert report.ok, report.format()
    report = cc.check(ports.sequence_advantages_only, "torch", max_examples=3, only=["S1 declared"])
    assert "declare advantages='sequence' (--advantages sequence)" in report.failed[0].message


def test_million_token_reproducer_rebuilds_the_case(ports: Any) -> None:
    """A failure at 10^6 tokens is reported with a one-line cc.scale_case(...) recipe that recomputes it."""
    report = cc.check(ports.large_batch_fast_path, "torch", max_examples=40, shrink=False,
                      only=["S3 value and gradient at a million tokens"])
    (failure,) = report.failed
    assert "case = cc.scale_case(b=" in failure.reproducer and len(failure.reproducer) < 4000
    namespace: dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(failure.reproducer, namespace)
    want = float(re.search(r"# reference .*: loss = (\S+)", failure.reproducer).group(1))
    assert namespace["case"].log_prob.size >= 2**20 - 1024
    got = float(namespace["loss"].item())
    assert failure.got == repr(got) and got != pytest.approx(want, rel=1e-4)


def test_mutation_reproducer_shows_the_modified_inputs(ports: Any) -> None:
    # "S4 gradient" and not all of S4: the constants property hands old_log_prob with requires_grad, on which
    # this port's in-place write raises (a second, fair failure that is not what this test is about).
    report = cc.check(ports.zeroes_padding_in_place, "torch", max_examples=10,
                      only=["S1", "S3 value equals", "S4 gradient"])
    assert [r.id for r in report.failed] == ["S1 inputs are not modified"], report.format()
    failure = report.failed[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(failure.reproducer, {})
    assert "modified in place: ['old_log_prob'" in out.getvalue()


def test_views_reach_advantages_expanded_with_stride_zero(ports: Any) -> None:
    """S1 inputs as views hands (B, T) advantages as a stride-0 expand of one column, as GRPO code broadcasts them."""
    import torch

    strides: set[tuple[int, ...]] = set()

    def recording(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, *args: Any,
                  **kw: Any) -> torch.Tensor:
        strides.add(tuple(advantages.stride()))
        return ports.correct(log_prob, old_log_prob, advantages, *args, **kw)

    # the property runs an eighth of max_examples, a third of them expanded: 25 examples reach it whatever
    # constants Hypothesis draws from (it mixes the literals of the project's modules into its draws)
    report = cc.check(recording, "torch", max_examples=200, only=["S1 inputs as views"], advantages="token")
    assert report.ok, report.format()
    assert any(len(s) == 2 and s[1] == 0 for s in strides), strides
