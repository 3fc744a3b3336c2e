"""docs/trainer.md documents every metric key and every flag with its current default and doc line."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from cegppo.trainer import METRICS, TrainConfig
from cegppo.trainer.config import field_docs

PAGE = Path(__file__).resolve().parents[2] / "docs" / "trainer.md"


def _rows(first_cell: str) -> dict[str, list[str]]:
    """Table rows of the page whose first cell matches `first_cell` (a regex with one group), by that group."""
    rows = {}
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells and (m := re.fullmatch(first_cell, cells[0])):
            rows[m.group(1)] = [c.replace("\\|", "|") for c in cells[1:]]
    return rows


def test_every_metric_key_is_documented_with_its_meaning() -> None:
    rows = _rows(r"`([a-zA-Z_]+)`")
    for key, meaning in METRICS.items():
        assert key in rows, f"metric {key!r} missing from {PAGE.name}"
        assert rows[key][-1] == meaning, key


def test_every_flag_is_documented_with_its_default_and_doc() -> None:
    rows = _rows(r"`--([a-z-]+)`")
    docs, defaults = field_docs(), TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = f.name.replace("_", "-")
        assert flag in rows, f"--{flag} missing from {PAGE.name} (regenerate the table)"
        value = getattr(defaults, f.name)
        shown = "unset" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        assert rows[flag] == [f"`{shown}`", docs[f.name]], flag
