"""The ``cegppo-conformance`` CLI (run in-process through `main(argv)`) and bad input to `check`.

The CLI tests use NumPy ports and check the kit, not a backend: they run once, with
--backend=numpy (in every venv they would repeat the same run); the torch CLI runs are added with
--backend=torch.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cegppo.conformance as cc
import pytest
from cegppo._progress import DEFAULT_INTERVAL
from cegppo.conformance._check import select
from cegppo.conformance._cli import main
from ports import numpy_ports

PORTS_DIR = Path(__file__).parent / "ports"
GOOD = "ports.numpy_ports:correct"
BROKEN = "ports.numpy_ports:mean_over_padding"


@pytest.fixture(autouse=True)
def _once_not_per_backend(request: pytest.FixtureRequest, backend: str) -> None:
    """A test of the kit on NumPy ports runs with --backend=numpy only; one on torch ports with --backend=torch."""
    if backend != "numpy" and "torch_ports" not in request.fixturenames:
        pytest.skip("checks the kit on NumPy ports: runs with --backend=numpy")


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
    # the two S1 properties pass, and the run stops at the first failure, S3
    assert [ln[:8] for ln in out.splitlines() if ln.startswith(("PASS", "FAIL"))] == ["PASS  S1", "PASS  S1",
                                                                                     "FAIL  S3"]
    assert "stopped at the first failure" in out


def test_port_given_as_a_file_path(capsys: pytest.CaptureFixture[str]) -> None:
    target = f"{PORTS_DIR / 'numpy_ports.py'}:mean_over_padding"
    code, out, _ = run(capsys, "check", target, "--framework", "numpy", "--max-examples", "5", "--only", "S3",
                       "--no-shrink")
    assert code == 1
    assert f"port = load_port({target!r})" in out  # the reproducer loads the file the same way


def test_framework_loss_names_say_how_to_rebuild_the_port() -> None:
    """Each row of the frameworks' table names its port for the report and the reproducer."""
    from cegppo.conformance._frameworks import FRAMEWORK_LOSSES

    assert sorted(FRAMEWORK_LOSSES) == ["openrlhf", "skyrl", "trl", "tunix", "verl"]
    assert {k: v.framework for k, v in FRAMEWORK_LOSSES.items()} == {
        "verl": "torch", "openrlhf": "torch", "skyrl": "torch", "trl": "torch", "tunix": "jax"}
    assert (FRAMEWORK_LOSSES["verl"].port_name("verl", "my_pkg.losses:mine")
            == "<verl policy loss 'mine': import my_pkg.losses; port = cegppo.integrations.verl.verl_port('mine')>")
    assert (FRAMEWORK_LOSSES["verl"].port_name("verl", None)
            == "<verl policy loss (cegppo's integration): port = cegppo.conformance.port_from_verl_loss()>")
    assert (FRAMEWORK_LOSSES["tunix"].port_name("tunix", "grpo")
            == "<tunix policy loss 'grpo': port = cegppo.conformance.port_from_tunix('grpo')>")
    assert (FRAMEWORK_LOSSES["trl"].port_name("trl", "sapo", "sapo")
            == "<trl policy loss 'sapo': port = cegppo.integrations.trl.trl_port('sapo')>")
    # A family member's reproducer rebuilds the port of that member, not CE-GPPO's.
    assert (FRAMEWORK_LOSSES["verl"].port_name("verl", "cispo", "cispo")
            == "<verl policy loss 'cispo': port = cegppo.integrations.verl.verl_port('cispo', objective='cispo')>")
    assert (FRAMEWORK_LOSSES["skyrl"].port_name("skyrl", "gspo", "gspo")
            == "<skyrl policy loss 'gspo': port = cegppo.conformance.port_from_skyrl('gspo', objective='gspo')>")


def test_a_loss_of_a_file_path_is_read_like_a_port() -> None:
    """One reader of [MODULE:]NAME: a .py path works for --loss as for a port, and NAME alone imports nothing."""
    from cegppo.conformance._targets import import_target

    module, name = import_target(f"{PORTS_DIR / 'numpy_ports.py'}:correct")
    assert name == "correct" and callable(getattr(module, name))
    assert import_target("ce_gppo") == (None, "ce_gppo")
    with pytest.raises(ValueError, match="MODULE:FUNCTION"):
        cc.load_port("no_module_given")


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
        (["check", GOOD, "--framework", "numpy", "--device", "cuda"], "--device cuda: NumPy ports run on the CPU"),
        (["check", GOOD, "--framework", "numpy", "--timeout", "-1"], "--timeout must be >= 0 seconds"),
        (["check", GOOD, "--framework", "numpy", "--json", "/no/such/folder/r.json"], "does not exist"),
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
        (["check", GOOD, "--framework", "numpy", "--advantages", "rows"], "invalid choice: 'rows'"),
        # --verl-loss NAME is --framework-loss verl --loss NAME: one table row, each named as the user wrote it
        (["check", "--framework-loss", "verl", "--framework", "jax"], "--framework-loss verl: its losses are torch"),
        (["check", "--verl-loss", "ce_gppo", "--framework", "jax"], "--verl-loss: verl losses are torch functions"),
        (["check", "--verl-loss", "ce_gppo", "--loss", "vanilla"], "give --framework-loss too"),
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
        ({"device": "cuda"}, ValueError, "device must be 'cpu' (or None) for framework='numpy', got 'cuda'"),
        ({"device": 3}, TypeError, "device must be a device name"),
        ({"advantages": "row"}, ValueError, "advantages must be one of ('both', 'token', 'sequence'), got 'row'"),
        ({"timeout": 0}, ValueError, "timeout must be > 0 seconds (None for no limit), got 0"),
        ({"timeout": "1"}, TypeError, "timeout must be a number of seconds or None, got str"),
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
    assert [p.clause for p in cc.select("S9.5")] == ["S9.5", "S9.5", "S9.5"]
    assert {p.clause for p in cc.select("S9")} == {"S9", "S9.1", "S9.3", "S9.5"}
    assert [p.id for p in cc.select("S5 gradient bound clip_")] == ["S5 gradient bound clip_low",
                                                                    "S5 gradient bound clip_high"]


def test_shrink_false_is_faster_and_still_fails() -> None:
    report = cc.check(numpy_ports.mean_over_padding, "numpy", max_examples=20, shrink=False, fail_fast=True)
    assert not report.ok and report.stopped_early


# -- capabilities, devices, JSON, time limits, progress ---------------------------------------------------
TOKEN_ONLY = "ports.numpy_ports:token_advantages_only"


def test_token_only_port_conforms_when_declared(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", TOKEN_ONLY, "--framework", "numpy", "--max-examples", "3",
                       "--advantages", "token", "--device", "cpu")
    assert code == 0, out
    assert out.startswith(f"cegppo conformance: {TOKEN_ONLY} (port, framework numpy, device cpu, advantages token)")


def test_token_only_port_undeclared_is_told_what_to_declare(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", TOKEN_ONLY, "--framework", "numpy", "--max-examples", "3")
    assert code == 1, out
    fails = [ln for ln in out.splitlines() if ln.startswith("FAIL")]
    assert len(fails) == 1, out  # one line, not a column of "the implementation raised"
    assert fails[0].startswith("FAIL  S1    declared advantage shapes are accepted  -> rejects (B,) per-sequence")
    assert "declare advantages='token' (--advantages token)" in fails[0]
    assert "the implementation raised" not in out
    assert "DOES NOT CONFORM: 15 passed, 1 failed" in out


def test_json_results(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    code, out, _ = run(capsys, "check", BROKEN, "--framework", "numpy", "--max-examples", "5", "--no-shrink",
                       "--only", "S3 value equals", "--only", "S8.4", "--json", str(path))
    assert code == 1
    data = json.loads(path.read_text())
    assert data["ok"] is False and data["framework"] == "numpy" and data["counts"] == {"pass": 1, "fail": 1, "skip": 0}
    by_id = {r["id"]: r for r in data["results"]}
    assert set(by_id) == {"S3 value equals the reference", "S8.4 all-masked batch gives zero loss and zero gradient"}
    failure = by_id["S3 value equals the reference"]
    assert failure["status"] == "FAIL" and failure["clause"] == "S3" and failure["examples"] >= 1
    assert "import mean_over_padding as port" in failure["reproducer"] and failure["expected"] and failure["got"]
    assert data["summary"] in out


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


S3_S4 = ("check", GOOD, "--framework", "numpy", "--max-examples", "3", "--only", "S3", "--only", "S4")


def test_progress_on_a_terminal_is_a_line_per_property(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code, out, _ = run(capsys, *S3_S4)
    assert code == 0
    lines = terminal.getvalue().splitlines()
    n = len(select(["S3", "S4"]))  # every S3 and S4 property, one progress line each
    assert len(lines) == n and all(line.startswith(f"[{k}/{n}] ") for k, line in enumerate(lines, start=1)), lines
    assert lines[0].startswith(f"[1/{n}] PASS S3 value equals the reference (") and "examples" in lines[0]
    assert f"[{n - 1}/{n}] SKIP S4 gradient equals the reference (no gradients (NumPy port))" in lines
    assert f"[1/{n}]" not in out


def test_progress_in_a_log_is_a_few_lines_and_the_last(capsys: pytest.CaptureFixture[str]) -> None:
    """stderr is not a terminal here (pytest captures it), as in a CI log: at most a line per interval."""
    start = time.monotonic()
    code, out, err = run(capsys, *S3_S4)
    seconds = time.monotonic() - start
    assert code == 0
    lines = err.splitlines()
    n = len(select(["S3", "S4"]))
    assert n > 2 and "\r" not in err
    assert lines[0].startswith(f"[1/{n}] PASS S3 value equals the reference (")  # the first: something runs
    assert lines[-1].startswith(f"[{n}/{n}] ")  # the last: where the run ended
    assert len(lines) <= 2 + seconds / DEFAULT_INTERVAL, (seconds, lines)
    assert f"[1/{n}]" not in out
    # failures so far are counted on every line after the first failure (the report names them)
    code, out, err = run(capsys, "check", BROKEN, "--framework", "numpy", "--max-examples", "10", "--no-shrink",
                         "--seed", "3", "--only", "S3", "--only", "S8.4")
    failed = sum(line.startswith("FAIL  ") for line in out.splitlines())  # the report's lines
    lines = err.splitlines()
    assert code == 1 and failed > 0 and lines[-1].endswith(f"; {failed} failed so far"), lines


@pytest.mark.parametrize("flag", ["--quiet", "-q", "--no-progress"])
def test_quiet_or_no_progress_silences_the_progress(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    code, _, err = run(capsys, "check", GOOD, "--framework", "numpy", "--max-examples", "3", "--only", "S3", flag)
    assert code == 0 and err == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import cegppo

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"cegppo-conformance {cegppo.__version__}\n"


def test_a_hanging_port_is_reported_not_waited_for(capsys: pytest.CaptureFixture[str]) -> None:
    numpy_ports.RELEASE_HANG.clear()
    try:
        code, out, _ = run(capsys, "check", "ports.numpy_ports:hangs", "--framework", "numpy", "--timeout", "1",
                             "--only", "S3")
    finally:
        numpy_ports.RELEASE_HANG.set()  # lets the hung call (a daemon thread) return
    assert code == 1, out
    fails = [ln for ln in out.splitlines() if ln.startswith("FAIL")]
    assert len(fails) == 1 and fails[0].startswith("FAIL  S1  declared advantage shapes are accepted  -> "), out
    assert fails[0].endswith("-> timed out: the first call of the implementation returned nothing after 1s; it "
                             "hangs or is slower than the time limit (raise it with timeout= / --timeout)"), out
    assert "not run: the implementation hung in 'the advantage-shape probe'" in out
    assert "from ports.numpy_ports import hangs as port" in out  # the call that hung


def test_a_port_hanging_in_a_property_stops_the_run() -> None:
    calls = [0]

    def slow_after_ten(*args: Any, **kw: Any) -> Any:
        calls[0] += 1
        if calls[0] > 10:
            numpy_ports.RELEASE_HANG.wait(600)
        return numpy_ports.correct(*args, **kw)

    numpy_ports.RELEASE_HANG.clear()
    try:
        # 3 s: the ten quick calls (the advantage probe and the first examples) must fit in it on a loaded
        # machine, or the limit expires before the hang and there is no hanging case to reproduce
        report = cc.check(slow_after_ten, "numpy", max_examples=40, timeout=3.0, only=["S3", "S8"])
    finally:
        numpy_ports.RELEASE_HANG.set()
    status = [(r.id.split()[0], r.status, r.timed_out) for r in report.results]
    assert status[0] == ("S3", "FAIL", True), report.format()
    assert all(s == "SKIP" for _, s, _ in status[1:]) and len(status) == 7
    assert report.results[0].message.startswith("timed out: no result after 3s")
    assert report.results[0].reproducer


def test_numpy_port_mutating_the_mask_after_its_loss_is_reported_as_mutating() -> None:
    """The kit keeps its own copy of the inputs: only S1 fails, and its reproducer shows the mutation."""
    # The properties whose later calls would see the written mask if the kit handed its own arrays (the
    # loss and the reference would both be computed from it); the scale ones would add seconds, not cover.
    only = ["S1", "S3 value equals", "S7", "S8", "S9"]
    report = cc.check(numpy_ports.mutates_mask_after_loss, "numpy", max_examples=10, only=only)
    assert [r.id for r in report.failed] == ["S1 inputs are not modified"], report.format()
    assert sum(r.status == "PASS" for r in report.results) >= 9
    failure = report.failed[0]
    assert failure.message == "the call modified response_mask in place"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(failure.reproducer, {})
    assert out.getvalue().splitlines()[-1] == "modified in place: ['response_mask']"


# -- the pytest route: cc.pytest_suite in a user's test module -------------------------------------------
USER_MODULE = """\
import cegppo.conformance as cc
from ports.numpy_ports import {port}
test_port = cc.pytest_suite({port}, framework="numpy", max_examples={n}{extra})
"""


def _user_pytest(tmp_path: Path, port: str, *args: str, n: int = 5, extra: str = "") -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user.py").write_text(USER_MODULE.format(port=port, n=n, extra=extra))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "pytest", "test_user.py", "-p", "no:cacheprovider", "-rA", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_pytest_suite_collects_one_test_per_property(tmp_path: Path) -> None:
    proc = _user_pytest(tmp_path, "correct", "--junitxml", "junit.xml", n=1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import xml.etree.ElementTree as ET

    cases = ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")
    names = [c.get("name") for c in cases]
    assert names == [f"test_port[{p.id}]" for p in cc.PROPERTIES]
    assert f"PASSED test_user.py::test_port[{cc.PROPERTIES[0].id}]" in proc.stdout
    assert "SKIPPED" in proc.stdout and "no gradients (NumPy port)" in proc.stdout


def test_pytest_suite_fails_a_broken_port_with_the_reproducer(tmp_path: Path) -> None:
    proc = _user_pytest(tmp_path, "mean_over_padding", "-k", "S8 or reference", extra=", shrink=False")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED test_user.py::test_port[S3 value equals the reference]" in proc.stdout
    assert "from ports.numpy_ports import mean_over_padding as port" in proc.stdout  # the reproducer
    assert "=== FAIL S3 value equals the reference ===" in proc.stdout
    ran = [ln for ln in proc.stdout.splitlines() if ln.startswith(("PASSED", "FAILED", "SKIPPED"))]
    assert len(ran) == 6, ran  # -k: S3 value equals the reference, S4 ... reference, S8.1, S8.2, S8.3, S8.4


def test_pytest_suite_rejects_bad_options() -> None:
    with pytest.raises(TypeError, match="does not take \\['fail_fast'\\]"):
        cc.pytest_suite(numpy_ports.correct, framework="numpy", fail_fast=True)
    with pytest.raises(TypeError, match="unknown options \\['max_example'\\]"):
        cc.pytest_suite(numpy_ports.correct, framework="numpy", max_example=3)
    with pytest.raises(ValueError, match="device must be 'cpu'"):
        cc.pytest_suite(numpy_ports.correct, framework="numpy", device="cuda")
    with pytest.raises(ValueError, match="max_examples must be an int >= 1"):
        cc.pytest_suite(numpy_ports.correct, framework="numpy", max_examples=0)


def test_torch_device_that_is_not_there_is_a_clean_error(capsys: pytest.CaptureFixture[str],
                                                         torch_ports: Any) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error path is not reachable")
    code, out, err = run(capsys, "check", "ports.torch_ports:correct", "--framework", "torch", "--device", "cuda")
    assert code == 2 and out == ""
    assert err.startswith("cegppo-conformance: error: device='cuda': CUDA is not available to torch"), err
    with pytest.raises(ValueError, match="device must be a torch device"):
        cc.check(torch_ports.correct, "torch", device="cuda:x")
    report = cc.check(torch_ports.correct, "torch", device="cpu", max_examples=3, only=["S3 value equals", "S4"])
    assert report.ok and report.device == "cpu"


def test_gpu_session_is_opt_in() -> None:
    """`nox -s gpu` exists (CUDA: backends, conformance, benchmarks) and is not a default session (CI has no GPU)."""
    import ast

    tree = ast.parse((Path(__file__).parents[2] / "noxfile.py").read_text())
    sessions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert "gpu" in sessions
    source = ast.unparse(sessions["gpu"])
    for needle in ("tests/{backend}", "--device=cuda", "tests/conformance", "bench_policy_loss.py", "nvidia-smi"):
        assert needle in source, needle
    defaults = next(n.value for n in tree.body if isinstance(n, ast.Assign)
                    and ast.unparse(n.targets[0]) == "nox.options.sessions")
    assert "gpu" not in ast.literal_eval(defaults)
