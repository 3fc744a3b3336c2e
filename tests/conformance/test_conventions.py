"""Declared conventions, the diagnosis of every failure and the ranked verdict (runs with --backend=torch).

The ports of ports/convention_torch_ports.py are written in real frameworks' conventions: each
conforms with its declarations and fails without them, with a diagnosis naming the convention;
each defective variant fails the property of its defect with the diagnosis of its defect class.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import cegppo.conformance as cc
import pytest
from cegppo.conformance._cli import main
from ports import BROKEN_MIN_EXAMPLES, CONVENTION_DEFECTS, CONVENTION_PORTS

VERL02 = CONVENTION_PORTS["verl02_style"][1]
PORT_FILE = "tests/conformance/ports/convention_torch_ports.py"


@pytest.fixture(scope="module")
def ports(convention_torch_ports: Any) -> Any:
    return convention_torch_ports


# What a declaration changes: the reference's value and gradient, the modes drawn, the aggregation properties and
# the dtype rules. The ci profile checks these on every convention port and every property on verl02_style
# (the properties themselves run at full count on the backends); dev and thorough runs check every property.
DECLARATION_PROPERTIES = ["S3 value equals", "S4 gradient equals", "S7", "S8", "S9.5"]


@pytest.mark.parametrize("name", sorted(n for n, (fw, _) in CONVENTION_PORTS.items() if fw == "torch"))
def test_convention_port_conforms_with_its_declarations(ports: Any, name: str, max_examples: int) -> None:
    full = name == "verl02_style" or max_examples >= 100
    report = cc.check(getattr(ports, name), "torch", max_examples=max(5 if full else 3, max_examples // 8),
                      only=None if full else DECLARATION_PROPERTIES, **CONVENTION_PORTS[name][1])
    assert report.ok, report.format()
    rows = report.verdict()
    assert rows and all(not row["defect"] for row in rows)  # only the declarations are listed
    assert [row["fix"] for row in rows] == report.declared and "DECLARED  " in report.format()


def test_undeclared_epsilon_fails_with_the_epsilon_diagnosis(ports: Any) -> None:
    decl = {k: v for k, v in VERL02.items() if k != "normalizer_eps"}
    report = cc.check(ports.verl02_style, "torch", max_examples=10, only=["S3 value equals", "S4 gradient equals"],
                      **decl)
    assert [r.id for r in report.failed] == ["S3 value equals the reference", "S4 gradient equals the reference"]
    for r in report.failed:
        assert r.defect_class == "undeclared convention", r.diagnosis
        assert "relative: consistent with dividing by count + 1e-08; declare --normalizer-eps 1e-08" in r.diagnosis
    text = report.format()
    assert text.index("diagnosis (undeclared convention)") < text.index("what failed")  # in the failure's first lines
    (row,) = [row for row in report.verdict() if row["defect"]]
    assert row["class"] == "undeclared convention" and "--normalizer-eps 1e-08" in row["fix"]


def test_undeclared_dual_clip_is_diagnosed_as_a_default_dual_clip(ports: Any) -> None:
    decl = {k: v for k, v in VERL02.items() if k != "dual_clip"}
    report = cc.check(ports.verl02_style, "torch", max_examples=10, only=["S7"], **decl)
    (failure,) = report.failed
    assert failure.defect_class == "undeclared convention"
    assert "with clip_ratio_c=None the result equals the reference with c = 3: a default dual clip" in failure.diagnosis


def test_undeclared_absent_dual_clip_and_partial_float32_are_diagnosed(ports: Any) -> None:
    """skyrl_style ignores clip_ratio_c and returns float64 computed in float32: without its declarations S7 names
    the missing dual clip and S3 the float32 arithmetic; with them S7 and the dual-clip bound report DECLARED."""
    report = cc.check(ports.skyrl_style, "torch", max_examples=10, advantages="token", compute_dtype="float32",
                      only=["S7"])
    (s7,) = report.failed
    assert s7.defect_class == "undeclared convention", s7.diagnosis
    assert "the result equals the reference without a dual clip" in s7.diagnosis
    report = cc.check(ports.skyrl_style, "torch", max_examples=10, advantages="token", dual_clip="absent",
                      only=["S3 value equals"])
    (s3,) = report.failed
    assert s3.defect_class == "undeclared convention", s3.diagnosis
    assert "only to float32 rounding, though the loss comes back float64" in s3.diagnosis
    report = cc.check(ports.skyrl_style, "torch", max_examples=3, only=["S7", "S5 gradient bound dual_clip"],
                      **CONVENTION_PORTS["skyrl_style"][1])
    assert [r.status for r in report.results] == ["DECLARED", "DECLARED"], report.format()
    assert "DECLARED  no dual clip" in report.format()


def test_float32_arithmetic_is_declared_or_diagnosed(torch_ports: Any) -> None:
    """float32_always (a bug for the spec) conforms with compute_dtype='float32'; S9.5 float64 reports DECLARED."""
    only = ["S3 value equals", "S4 gradient equals", "S9.5 float64"]
    report = cc.check(torch_ports.float32_always, "torch", max_examples=10, only=only, compute_dtype="float32")
    assert report.ok, report.format()
    assert report.result("S9.5 float64 inputs are computed in float64").status == "DECLARED"
    assert "1 declared" in report.summary()
    report = cc.check(torch_ports.float32_always, "torch", max_examples=10, only=["S9.5 float64"])
    (failure,) = report.failed
    assert failure.defect_class == "undeclared convention"
    assert "declare --compute-dtype float32" in failure.diagnosis


@pytest.mark.parametrize("name", sorted(n for n, (c, *_) in CONVENTION_DEFECTS.items()
                                         if CONVENTION_PORTS[c][0] == "torch"))
def test_defective_variant_fails_with_its_diagnosis(ports: Any, name: str, max_examples: int) -> None:
    correct, prefix, cls, phrase = CONVENTION_DEFECTS[name]
    report = cc.check(getattr(ports, name), "torch", max_examples=max(max_examples, BROKEN_MIN_EXAMPLES),
                      only=[prefix], fail_fast=True, shrink=False, **CONVENTION_PORTS[correct][1])
    assert not report.ok, report.format()
    failure = report.failed[0]
    assert failure.defect_class == cls and phrase in failure.diagnosis, (failure.defect_class, failure.diagnosis)


def test_half_arithmetic_fails_the_all_masked_float16_batch(ports: Any) -> None:
    """count + 1e-8 computed in float16: the epsilon underflows (below 6e-8), the all-masked batch is 0 / 0."""
    report = cc.check(ports.verl02_half_arithmetic, "torch", max_examples=BROKEN_MIN_EXAMPLES, only=["S8.4"],
                      fail_fast=True, shrink=False, **VERL02)
    (failure,) = report.failed
    assert failure.defect_class == "non-finite"
    assert "an all-masked batch gives a loss of nan" in failure.diagnosis


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(list(argv))
    return code, out.getvalue()


def test_cli_declarations_and_exit_codes(ports: Any) -> None:
    base = ["check", f"{PORT_FILE}:verl02_style", "--framework", "torch", "--advantages", "token", "--mask-dtype",
            "float", "--max-examples", "10", "--only", "S3 value equals", "--only", "S7"]  # 10: S3 draws float64 by then
    code, out = _cli(*base, "--normalizer-eps", "1e-8", "--dual-clip", "required")
    assert code == 0, out
    assert "DECLARED  dual clip always on" in out
    code, out = _cli(*base)
    assert code == 1
    assert "declare --normalizer-eps 1e-08" in out and "a default dual clip" in out
    assert "DEFECT    undeclared convention (2 properties)" in out


@pytest.mark.parametrize(("flag", "value"), [("--normalizer-eps", "-1"), ("--agg", "token-avg")])
def test_cli_rejects_bad_declarations(ports: Any, flag: str, value: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["check", f"{PORT_FILE}:verl02_style", "--framework", "torch", flag, value])
    assert code == 2 and flag.lstrip("-").replace("-", "_") in err.getvalue(), err.getvalue()


@pytest.mark.parametrize(("kw", "err", "word"), [
    ({"normalizer_eps": -1e-8}, ValueError, "normalizer_eps"),
    ({"normalizer_eps": "1e-8"}, TypeError, "normalizer_eps"),
    ({"dual_clip": "always"}, ValueError, "dual_clip"),
    ({"compute_dtype": "float16"}, ValueError, "compute_dtype"),
    ({"agg": "token-avg"}, ValueError, "agg"),
    ({"global_normalizers": 1}, TypeError, "global_normalizers"),
])
def test_bad_declarations_name_the_argument(kw: dict[str, Any], err: type[Exception], word: str) -> None:
    with pytest.raises(err, match=word):
        cc.conventions(**kw)


def test_declarations_on_an_adapter_are_refused() -> None:
    with pytest.raises(ValueError, match="declared on the adapter"):
        cc.check(cc.backend_adapter("numpy"), normalizer_eps=1e-8)
    with pytest.raises(ValueError, match="declares no conventions"):
        cc.Adapter(lambda *a: 0.0, name="x", framework="numpy", kind="backend", conventions=cc.conventions(agg="all"))


def test_jax_convention_port_conforms_and_its_variant_is_diagnosed(convention_jax_ports: Any) -> None:
    """tunix_style conforms under compute_dtype='float32' (under jit) on the properties the declaration changes;
    its variant without the restored gradient fails S6.2 with the clipped-gradient diagnosis.

    Not every property: each example is a new XLA compilation (a full check costs a minute of the JAX
    suite), the JAX adapter's path is checked at full count by test_properties.py, and the declaration's
    effect on every property is checked on the torch ports above."""
    decl = CONVENTION_PORTS["tunix_style"][1]
    report = cc.check(convention_jax_ports.tunix_style, "jax", max_examples=5, jit=True, **decl,
                      only=["S3 value equals", "S4 gradient equals", "S9.5"])
    assert report.ok, report.format()
    assert report.result("S9.5 float64 inputs are computed in float64").status == "DECLARED"
    _, prefix, cls, phrase = CONVENTION_DEFECTS["tunix_ppo_clip"]
    report = cc.check(convention_jax_ports.tunix_ppo_clip, "jax", max_examples=BROKEN_MIN_EXAMPLES, jit=True,
                      only=[prefix], fail_fast=True, shrink=False, **decl)
    failure = report.failed[0]
    assert failure.defect_class == cls and phrase in failure.diagnosis, failure.diagnosis


def test_pytest_suite_takes_and_checks_the_declarations() -> None:
    from ports import numpy_ports

    test = cc.pytest_suite(numpy_ports.correct, "numpy", normalizer_eps=0.0, dual_clip="required", agg="all",
                           global_normalizers=True, compute_dtype="float32")
    assert callable(test)
    with pytest.raises(ValueError, match="dual_clip"):
        cc.pytest_suite(numpy_ports.correct, "numpy", dual_clip="never")


def test_json_carries_the_diagnosis_and_the_verdict(ports: Any, tmp_path: Any) -> None:
    import json

    out = tmp_path / "report.json"
    code, _ = _cli("check", f"{PORT_FILE}:verl02_mask_multiplied", "--framework", "torch", "--advantages", "token",
                   "--mask-dtype", "float", "--normalizer-eps", "1e-8", "--dual-clip", "required", "--max-examples",
                   str(BROKEN_MIN_EXAMPLES), "--only", "S9.3", "--no-shrink", "--json", str(out))
    assert code == 1
    data = json.loads(out.read_text())
    (failure,) = [r for r in data["results"] if r["status"] == "FAIL"]
    assert failure["defect_class"] == "non-finite" and "garbage at masked positions" in failure["diagnosis"]
    assert [(row["class"], row["defect"]) for row in data["verdict"]] == [
        ("non-finite", True), ("declared convention", False), ("declared convention", False)]
