"""tools/framework_verdicts.py: the rows of the frameworks' table come from the kit's JSON reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repo_tools import load_tool

verdicts = load_tool("framework_verdicts.py")


def _report(statuses: list[tuple[str, str, str, str]]) -> dict:
    return {"implementation": "<verl policy loss 'x'>", "results": [
        {"id": pid, "status": status, "defect_class": cls, "diagnosis": diag} for pid, status, cls, diag in statuses]}


def test_a_row_counts_passes_and_failures_by_class_and_lists_each_diagnosis_once() -> None:
    report = _report([
        ("S1 a", "PASS", "", ""),
        ("S3 b", "FAIL", "non-finite", "0 / 0"),
        ("S4 c", "FAIL", "non-finite", "0 / 0"),
        ("S9.5 d", "FAIL", "precision", "bfloat16"),
        ("S9.5 e", "DECLARED", "", ""),
    ])
    line, diagnoses = verdicts.row(report)
    assert line == "| `<verl policy loss 'x'>` | 1 | non-finite (2), precision (1); declared: S9.5 e |"
    assert diagnoses == ["non-finite: 0 / 0 [S3 b]", "non-finite: 0 / 0 [S4 c]", "precision: bfloat16 [S9.5 d]"]


def test_table_reads_every_report_of_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "verl-x.json").write_text(json.dumps(_report([("S1 a", "PASS", "", "")])))
    assert verdicts.main(["table", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| `<verl policy loss 'x'>` | 1 | none |" in out and "verl-x:" in out
    assert verdicts.main(["table", str(tmp_path / "empty")]) == 1


def test_unknown_names_are_refused_with_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        verdicts.main(["run", "verl-nonesuch"])
    assert exc.value.code == 2 and "verl-vanilla" in capsys.readouterr().err


def test_every_check_names_a_framework_flag_of_the_kit() -> None:
    for name, (framework, args) in verdicts.CHECKS.items():
        assert name.startswith(framework + "-")
        assert args[0] in ("--verl-loss", "--framework-loss"), name
