"""The ``cegppo-conformance`` CLI (run in-process through `main(argv)`) and bad input to `check`.

The CLI tests use NumPy ports so that they run in every venv; a torch CLI run is added with
--backend=torch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import cegppo.conformance as cc
import pytest
from cegppo.conformance._cli import main
from ports import numpy_ports

PORTS_DIR = Path(__file__).parent / "ports"
GOOD = "ports.numpy_ports:correct"
BROKEN = "ports.numpy_ports:mean_over_padding"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- exit codes and the report --------------------------------------------------------------------
def test_good_port_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", GOOD, "--framework", "numpy", "--max-examples", "5")
    assert code == 0, out
    assert out.startswith(f"cegppo conformance: {GOOD} (port, framework numpy)")
    assert "PASS  S3    value equals the reference" in out
    assert "SKIP  S4    gradient equals the reference  (no gradients (NumPy port))" in out
    assert "CONFORMS:" in out and "0 failed" in out


def test_broken_port_exits_1_with_reproducer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", BROKEN, "--framework", "numpy", "--max-examples", "10", "--no-shrink",
                       "--seed", "3")
    assert code == 1, out
    assert "DOES NOT CONFORM" in out and "seed 3" in out
    assert "=== FAIL S3 value equals the reference ===" in out
    assert "expected: " in out and "got:      " in out
    assert "from ports.numpy_ports import mean_over_padding as port" in out
    assert "# reference (cegppo, float64 on these numbers): loss = " in out


def test_only_and_fail_fast(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", BROKEN, "--framework", "numpy", "--max-examples", "10", "--no-shrink",
                       "--only", "S8.3", "--only", "S8.4")
    assert code == 1
    lines = [ln for ln in out.splitlines() if ln.startswith(("PASS", "FAIL", "SKIP"))]
    assert [ln.split("  ")[1].strip() for ln in lines] == ["S8.3", "S8.4"], lines
    code, out, _ = run(capsys, "check", BROKEN, "--framework", "numpy", "--max-examples", "10", "--fail-fast",
                       "--no-shrink")
    assert code == 1
    assert [ln[:4] for ln in out.splitlines() if ln.startswith(("PASS", "FAIL"))] == ["FAIL"]
    assert "stopped at the first failure" in out


def test_port_given_as_a_file_path(capsys: pytest.CaptureFixture[str]) -> None:
    target = f"{PORTS_DIR / 'numpy_ports.py'}:mean_over_padding"
    code, out, _ = run(capsys, "check", target, "--framework", "numpy", "--max-examples", "5", "--only", "S3",
                       "--no-shrink")
    assert code == 1
    assert f"port = load_port({target!r})" in out  # the reproducer loads the file the same way


def test_port_that_raises_is_a_failure_showing_the_exception(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "ports.numpy_ports:raises", "--framework", "numpy", "--max-examples", "3",
                       "--only", "S3")
    assert code == 1
    assert "the implementation raised" in out
    assert "RuntimeError: this port is not implemented" in out
    assert "_adapters.py" not in out  # the traceback shows the port's frames, not the kit's


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    for p in [*cc.PROPERTIES, *cc.FUSED_PROPERTIES]:
        assert p.name in out
    assert out.index("fused LM-head losses (check --fused)") < out.index(cc.FUSED_PROPERTIES[0].name)


def test_fused_heads_from_the_cli(capsys: pytest.CaptureFixture[str], torch_ports: Any) -> None:
    code, out, _ = run(capsys, "check", "ports.fused_torch_ports:correct", "--fused", "--framework", "torch",
                       "--max-examples", "5")
    assert code == 0, out
    assert [ln.split("  ")[1].strip() for ln in out.splitlines() if ln.startswith("PASS")] == ["S11.1"] * len(cc.FUSED_PROPERTIES)
    code, out, _ = run(capsys, "check", "ports.fused_torch_ports:bias_ignored", "--fused", "--framework", "torch",
                       "--max-examples", "20", "--no-shrink", "--only", "S11.1 fused value")
    assert code == 1, out
    assert "=== FAIL S11.1 fused value equals the unfused path ===" in out
    assert "from ports.fused_torch_ports import bias_ignored as fused" in out


def test_module_runs_as_a_script() -> None:
    proc = subprocess.run([sys.executable, "-m", "cegppo.conformance._cli", "list"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "S8.3" in proc.stdout


# -- bad arguments: exit 2 and a message naming the problem ----------------------------------------
@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["check", "ports.numpy_ports", "--framework", "numpy"], "MODULE:FUNCTION"),
        (["check", "no_such_module_xyz:loss", "--framework", "numpy"], "cannot load no_such_module_xyz:loss"),
        (["check", "ports.numpy_ports:no_such_function", "--framework", "numpy"], "no_such_function"),
        (["check", "ports.numpy_ports:np", "--framework", "numpy"], "not callable"),
        (["check", GOOD, "--framework", "numpy", "--only", "S99"], "--only: no property matches ['S99']"),
        (["check", GOOD, "--framework", "numpy", "--max-examples", "0"], "--max-examples must be >= 1, got 0"),
        (["check", GOOD, "--framework", "numpy", "--jit"], "--jit is for --framework jax"),
    ],
)
def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert needle in err and err.startswith("cegppo-conformance: error:"), err


def test_missing_framework_exits_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jax", None)  # as in a venv without jax
    code, _, err = run(capsys, "check", GOOD, "--framework", "jax")
    assert code == 2
    assert "--framework jax: cannot import jax" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["check", GOOD], "--framework"),
        (["check", GOOD, "--framework", "tensorflow"], "invalid choice: 'tensorflow'"),
        (["check", GOOD, "--framework", "numpy", "--max-examples", "many"], "invalid int value: 'many'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["check", GOOD, "--framework", "numpy", "--fused"], "--fused: fused heads are checked in torch or jax"),
        (["check", "--verl-loss", "ce_gppo", "--fused"], "--fused checks a fused LM-head loss"),
        (["check", GOOD, "--framework", "torch", "--fused", "--mask-dtype", "float"], "policy-loss ports only"),
    ],
)
def test_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_torch_port_from_the_cli(capsys: pytest.CaptureFixture[str], torch_ports: Any) -> None:
    code, out, _ = run(capsys, "check", "ports.torch_ports:correct", "--framework", "torch", "--max-examples", "5",
                       "--only", "S4", "--only", "S5")
    assert code == 0, out
    code, out, _ = run(capsys, "check", "ports.torch_ports:no_stop_gradient", "--framework", "torch",
                       "--max-examples", "10", "--only", "S4", "--no-shrink")
    assert code == 1, out
    assert "import torch" in out and "loss.backward()" in out


# -- bad input to the Python API: ValueError/TypeError naming the argument ---------------------------
@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [
        ({"framework": "tensorflow"}, ValueError, "framework must be one of"),
        ({"max_examples": 0}, ValueError, "max_examples must be an int >= 1, got 0"),
        ({"max_examples": 2.5}, ValueError, "max_examples must be an int >= 1, got 2.5"),
        ({"max_examples": True}, ValueError, "max_examples"),
        ({"seed": "1"}, TypeError, "seed must be an int or None, got str"),
        ({"only": ["S99"]}, ValueError, "no property matches ['S99']"),
        ({"only": []}, ValueError, "only must be a non-empty list"),
        ({"only": [3]}, ValueError, "only must be a non-empty list"),
        ({"mask_dtype": "int8"}, ValueError, "mask_dtype must be 'bool' or 'float', got 'int8'"),
        ({"fail_fast": "yes"}, TypeError, "fail_fast must be a bool, got str"),
        ({"shrink": 0}, TypeError, "shrink must be a bool, got int"),
        ({"progress": 3}, TypeError, "progress must be callable or None, got int"),
        ({"jit": True}, ValueError, "jit=True is for framework='jax' only, got framework='numpy'"),
    ],
)
def test_check_rejects_bad_arguments(kwargs: dict[str, Any], exc: type[Exception], needle: str) -> None:
    kw: dict[str, Any] = {"framework": "numpy", **kwargs}
    with pytest.raises(exc) as info:
        cc.check(numpy_ports.correct, **kw)
    assert needle in str(info.value)


def test_check_rejects_a_non_callable_port() -> None:
    with pytest.raises(TypeError, match="port must be callable, got int"):
        cc.check(3, "numpy")


def test_run_property_rejects_bad_arguments() -> None:
    adapter = cc.backend_adapter("numpy")
    with pytest.raises(TypeError, match="p must be a Property, got str"):
        cc.run_property("S3", adapter)
    with pytest.raises(TypeError, match="adapter must be an Adapter"):
        cc.run_property(cc.PROPERTIES[0], numpy_ports.correct)
    with pytest.raises(ValueError, match="max_examples must be an int >= 1, got -1"):
        cc.run_property(cc.PROPERTIES[0], adapter, max_examples=-1)


def test_a_single_string_selects_one_prefix() -> None:
    assert [p.clause for p in cc.select("S9.5")] == ["S9.5", "S9.5"]
    assert {p.clause for p in cc.select("S9")} == {"S9", "S9.1", "S9.3", "S9.5"}
    assert [p.id for p in cc.select("S5 gradient bound clip_")] == ["S5 gradient bound clip_low",
                                                                    "S5 gradient bound clip_high"]


def test_shrink_false_is_faster_and_still_fails() -> None:
    report = cc.check(numpy_ports.mean_over_padding, "numpy", max_examples=20, shrink=False, fail_fast=True)
    assert not report.ok and report.stopped_early
