"""``objective=`` / ``--objective``: the kit checks a port of any member of the family (spec S14).

The CLI and API runs use the NumPy CISPO port of ports/family_numpy_ports.py (values only) and run
once, with --backend=numpy; the torch ports of the family are test_family_ports.py's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cegppo
import cegppo.conformance as cc
import pytest
from cegppo.conformance._cli import main
from ports import family_numpy_ports

CISPO = "ports.family_numpy_ports:cispo"


@pytest.fixture(autouse=True)
def _numpy_only(backend: str) -> None:
    if backend != "numpy":
        pytest.skip("checks the kit on a NumPy port: runs with --backend=numpy")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_objective_flag_checks_a_cispo_port(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_json = tmp_path / "r.json"
    code, out, _ = run(capsys, "check", CISPO, "--framework", "numpy", "--objective", "cispo", "--max-examples", "3",
                       "--json", str(out_json), "-q")
    assert code == 0, out
    assert out.startswith(f"cegppo conformance: cispo {CISPO} (port, framework numpy)")
    assert "PASS  S14.2  value equals the reference" in out
    assert "S5 " not in out and "beta" not in out  # CE-GPPO's own clauses are not run
    data = json.loads(out_json.read_text())
    assert data["objective"] == "cispo" and data["ok"]


def test_objective_is_in_the_help_and_defaults_to_ce_gppo(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    out = capsys.readouterr().out
    assert "--objective" in out and "cispo_cap" in out and "ce_gppo (default" in out
    code, out, _ = run(capsys, "check", "ports.numpy_ports:correct", "--framework", "numpy", "--max-examples", "2",
                       "--only", "S3 value equals", "-q")
    assert code == 0 and out.startswith("cegppo conformance: ports.numpy_ports:correct (port"), out


def test_a_port_checked_as_another_member_fails_on_its_keywords(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", CISPO, "--framework", "numpy", "--objective", "sapo", "--max-examples", "2",
                       "--only", "S1 declared", "-q")
    assert code == 1
    assert "tau_pos" in out and "TypeError" in out


@pytest.mark.parametrize(("argv", "needle"), [
    (["--objective", "cispo", "--dual-clip", "required"], "only ce_gppo has"),
    (["--objective", "gspo", "--only", "S5"], "no property matches"),
])
def test_objective_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    code, _, err = run(capsys, "check", CISPO, "--framework", "numpy", *argv)
    assert code == 2 and needle in err, err


@pytest.mark.parametrize(("argv", "needle"), [
    (["--framework-loss", "openrlhf", "--objective", "sapo"], "its ports compute ce_gppo, not --objective sapo"),
    (["--framework-loss", "trl", "--loss", "sapo"], "its ports compute cispo_cap, sapo, not --objective ce_gppo"),
])
def test_framework_losses_compute_the_objectives_of_their_row(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                              needle: str) -> None:
    """OpenRLHF's losses are checked as CE-GPPO only, TRL's family losses only as their members (refused before
    any framework is imported)."""
    with pytest.raises(SystemExit) as exc:
        main(["check", *argv])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_list_by_objective(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "--objective", "gspo")
    assert code == 0
    assert "one-token rows are token-level PPO-clip" in out and "masked garbage changes nothing" in out
    assert "gradient bound clip_low" not in out and "fused LM-head" not in out
    code, out, _ = run(capsys, "list")
    assert "gradient bound clip_low" in out and "S14" not in out  # the default list is CE-GPPO's, as it was


def test_api_objective_and_its_paper_aggregation() -> None:
    report = cc.check(family_numpy_ports.cispo, "numpy", objective="cispo", max_examples=2, only=["S14.2 value"])
    assert report.ok and report.objective == "cispo", report.format()
    # an undeclared port is held to its member's paper aggregation, passed no loss_agg_mode
    conv = cc.conventions(objective="sapo")
    assert conv.agg == ("seq-mean-token-mean",) and not conv.agg_declared and conv.is_spec
    assert cc.conventions(objective="sapo", agg="all").agg_declared
    assert cc.spec_conventions("gspo").agg == (cegppo.FAMILY[cegppo.GSPOConfig].paper_agg,)


@pytest.mark.parametrize(("kwargs", "exc", "needle"), [
    ({"objective": "ppo"}, ValueError, "objective must be one of"),
    ({"objective": "cispo", "dual_clip": "absent"}, ValueError, "only ce_gppo has"),
])
def test_check_rejects_bad_objectives(kwargs: dict[str, Any], exc: type[Exception], needle: str) -> None:
    with pytest.raises(exc, match=needle):
        cc.check(family_numpy_ports.cispo, "numpy", max_examples=1, **kwargs)


def test_an_adapter_keeps_its_objective() -> None:
    ad = cc.backend_adapter("numpy", objective="gspo")
    assert ad.objective == "gspo" and ad.conventions.is_spec
    with pytest.raises(ValueError, match="the adapter checks 'gspo'"):
        cc.check(ad, objective="sapo", max_examples=1)
    report = cc.check(ad, objective="gspo", max_examples=2, only=["S14.4 value"])
    assert report.ok and report.header().startswith("cegppo conformance: gspo cegppo (NumPy reference)")
    with pytest.raises(ValueError, match="conventions\\(\\.\\.\\., objective=\\.\\.\\.\\)"):
        cc.port_adapter(family_numpy_ports.cispo, "numpy", objective="cispo",
                        conventions=cc.conventions(normalizer_eps=1e-8))


def test_pytest_suite_takes_the_objective() -> None:
    test = cc.pytest_suite(family_numpy_ports.cispo, framework="numpy", objective="cispo", max_examples=2)
    ids = [p.id for p in test.pytestmark[0].args[1]]
    assert ids == [p.id for p in cc.objective_properties("cispo")]
    assert "S14.2 value equals the reference" in ids and "S5 gradient bound clip_low" not in ids
