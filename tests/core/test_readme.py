"""The README's two set-up commands are the ones CI runs and they stay true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md must start with a bash block holding the two set-up commands"
    return [line.split("#")[0].strip() for line in block.group(1).strip().splitlines()]


def test_readme_starts_with_two_commands() -> None:
    assert len(_readme_commands()) == 2


def test_ci_runs_the_readme_test_command() -> None:
    test_command = _readme_commands()[1]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines, f".ci/run must run the README's test command {test_command!r}"
