"""docs/spec.md cannot drift from the code.

- Every clause id cited anywhere in the code and tests (``S5``, ``S8.3``, and test names such as
  ``test_S6_1_...`` or ``test_S8_4_S9_4_...``) is a heading of docs/spec.md.
- The preset table of clause S6 quotes exactly the numbers of `cegppo.presets`, for every CE-GPPO preset, and
  S6 names every preset of the family's other members.
- The tables of S8.1 (aggregation modes) and S10 (metrics) list exactly `AGG_MODES` and
  `METRIC_KEYS`; S12 quotes `GRPO_EPS` and names every estimator.
- The page's ```python blocks run.

Each checker is a pure function of the page's text, and is also run on mutated copies of the page
to show that it fails when the page drifts.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import cegppo
import numpy as np
import pytest
from cegppo import presets

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "docs" / "spec.md"
CODE_FOLDERS = ("spec", "backends", "conformance_tests", "tests", "reference_trainer", "integrations")

# The clauses the project rules (notes/HELPERS.md, issue 2) promise, cited or not.
REQUIRED = (
    "S1 S2 S3 S4 S5 S6 S6.1 S6.2 S6.3 S7 S8 S8.1 S8.2 S8.3 S8.4 "
    "S9 S9.1 S9.2 S9.3 S9.4 S9.5 S9.6 S10 S11 S12 S12.4 S13"
).split()

# Ids that tests use on purpose as clauses that do not exist (error paths of `--only`).
NOT_CLAUSES = frozenset({"S99"})

# "S8.3" in prose, or "S8_3" inside an identifier such as test_S8_3_micro_batches; not "BS12".
_CITE = re.compile(r"(?<![A-Za-z0-9])S(\d+)(?:[._](\d+))?(?![A-Za-z0-9])")
_HEADING = re.compile(r"^#{2,4}\s+S(\d+(?:\.\d+)?)\.?\s", re.M)


def clause_ids(text: str) -> set[str]:
    """Clause ids cited in a source text, normalised to ``S<n>`` / ``S<n>.<m>``."""
    return {f"S{a}.{b}" if b else f"S{a}" for a, b in _CITE.findall(text)}


def cited_clauses(root: Path = ROOT) -> dict[str, set[str]]:
    """clause id -> the files (relative paths) of the code and tests that cite it."""
    out: dict[str, set[str]] = {}
    for folder in CODE_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            rel = str(path.relative_to(root))
            for cid in clause_ids(path.read_text(encoding="utf-8")) - NOT_CLAUSES:
                out.setdefault(cid, set()).add(rel)
    return out


def headings(doc: str) -> list[str]:
    """Clause ids of the page's headings (``## S5. Bounds`` -> ``S5``), in order."""
    return ["S" + h for h in _HEADING.findall(doc)]


def missing_clauses(doc: str, wanted: set[str] | list[str]) -> list[str]:
    """The clause ids in `wanted` that are not a heading of `doc`."""
    have = set(headings(doc))
    return sorted(set(wanted) - have, key=_order)


def _order(cid: str) -> tuple[int, ...]:
    return tuple(int(x) for x in cid[1:].split("."))


def section(doc: str, cid: str) -> str:
    """The text of clause `cid` up to the next heading of the same or a higher level."""
    m = re.search(rf"^(#{{2,4}})\s+{re.escape(cid)}\.?\s.*$", doc, re.M)
    if m is None:
        raise AssertionError(f"no heading for clause {cid}")
    level = len(m.group(1))
    nxt = re.compile(rf"^#{{2,{level}}}\s", re.M).search(doc, m.end())
    return doc[m.end() : nxt.start() if nxt else len(doc)]


def _table_rows(text: str) -> list[list[str]]:
    """Cells of the markdown table rows of `text` whose first cell is a `code` name."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and re.fullmatch(r"`[A-Za-z0-9_.-]+`", cells[0]):
            rows.append([cells[0].strip("`"), *cells[1:]])
    return rows


def _number(cell: str) -> float | None:
    cell = cell.strip().strip("`")
    return None if cell.lower() in ("none", "-", "") else float(cell)


def preset_mismatches(doc: str) -> list[str]:
    """Differences between the preset table of S6 and `cegppo.presets`; empty when they agree."""
    fields = ("eps_low", "eps_high", "beta_low", "beta_high", "dual_clip")
    rows = {r[0]: r for r in _table_rows(section(doc, "S6"))}
    problems = [f"preset {name} is not in the S6 table" for name in presets.CE_GPPO_PRESETS if name not in rows]
    problems += [f"S6 table row {name} is not a CE-GPPO preset" for name in rows if name not in presets.CE_GPPO_PRESETS]
    problems += [f"family preset {name} is not named in S6" for name in presets.FAMILY_PRESETS
                 if f"`{name}`" not in section(doc, "S6")]  # fmt: skip
    for name, row in rows.items():
        if name not in presets.CE_GPPO_PRESETS:
            continue
        cfg = presets.CE_GPPO_PRESETS[name]()
        for i, field in enumerate(fields, start=1):
            want = getattr(cfg, field)
            try:
                got = _number(row[i])
            except (ValueError, IndexError):
                problems.append(f"{name}.{field}: cannot read {row[i : i + 1]}")
                continue
            if (got is None) != (want is None) or (got is not None and not math.isclose(got, want)):
                problems.append(f"{name}.{field}: the page says {row[i]!r}, cegppo.presets has {want!r}")
    return problems


def listed_names(doc: str, cid: str) -> list[str]:
    """The `code` names in the first column of the tables of clause `cid`, in order."""
    return [r[0] for r in _table_rows(section(doc, cid))]


@pytest.fixture(scope="module")
def doc() -> str:
    return SPEC.read_text(encoding="utf-8")


# ---------------------------------------------------------------- clause ids


def test_the_scan_finds_citations() -> None:
    """The citation scan reads prose and test names (and not words like 'BS12')."""
    assert clause_ids("spec S8.3, S9.1 and S12 (not BS12, not S1x)") == {"S8.3", "S9.1", "S12"}
    assert clause_ids("def test_S8_4_S9_4_all_masked(): ...  def test_S6_S13_x(): ...") == {
        "S8.4",
        "S9.4",
        "S6",
        "S13",
    }
    cited = cited_clauses()
    # The reference itself cites these; if the scan found nothing, the test below would be empty.
    assert {"S2", "S4", "S8.3", "S9.2", "S12.4"} <= set(cited)


def test_every_cited_clause_is_a_heading(doc: str) -> None:
    cited = cited_clauses()
    missing = missing_clauses(doc, set(cited))
    assert not missing, "clauses cited in code/tests but missing from docs/spec.md: " + ", ".join(
        f"{cid} (cited in {sorted(cited[cid])[:3]})" for cid in missing
    )


def test_required_clauses_exist_once_and_in_order(doc: str) -> None:
    assert not missing_clauses(doc, REQUIRED)
    ids = headings(doc)
    assert len(ids) == len(set(ids)), (
        f"duplicate clause headings: {sorted(i for i in ids if ids.count(i) > 1)}"
    )
    assert ids == sorted(ids, key=_order), f"clause headings out of order: {ids}"


def test_clause_checker_fails_on_a_dropped_heading(doc: str) -> None:
    assert "### S8.3." in doc
    broken = doc.replace("### S8.3.", "### Micro-batch additivity (was S8.3)")
    assert missing_clauses(broken, ["S8.3", "S8.4"]) == ["S8.3"]


# ---------------------------------------------------------------- numbers quoted from the code


def test_preset_table_matches_presets(doc: str) -> None:
    assert preset_mismatches(doc) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "| `ce_gppo_official` | 0.2 | 0.2 | 0.5 | 1 | 10 |",
            "| `ce_gppo_official` | 0.2 | 0.2 | 0.75 | 1 | 10 |",
            "ce_gppo_official.beta_low",
        ),
        ("| `dapo` | 0.2 | 0.28 |", "| `dapo` | 0.2 | 0.2 |", "dapo.eps_high"),
        (
            "| `dual_clip_ppo` | 0.2 | 0.2 | 0 | 0 | 3 |",
            "| `dual_clip_ppo` | 0.2 | 0.2 | 0 | 0 | none |",
            "dual_clip_ppo.dual_clip",
        ),
        ("| `gppo` | 0.2 | 0.2 | 1 | 1 | none |", "| `gppo_v2` | 0.2 | 0.2 | 1 | 1 | none |", "preset gppo"),
        ("`sapo`\n(`SAPOConfig()`", "SAPO\n(`SAPOConfig()`", "family preset sapo"),
    ],
)
def test_preset_checker_fails_on_a_wrong_number(doc: str, old: str, new: str, expected: str) -> None:
    assert old in doc, f"the S6 table no longer has the row {old!r}: update this test"
    problems = preset_mismatches(doc.replace(old, new))
    assert any(expected in p for p in problems), problems


def test_aggregation_modes_and_metric_keys_are_listed(doc: str) -> None:
    assert listed_names(doc, "S8.1") == list(cegppo.AGG_MODES)
    assert listed_names(doc, "S10")[: len(cegppo.METRIC_KEYS)] == list(cegppo.METRIC_KEYS)
    broken = doc.replace("| `approx_kl_k3` |", "| `approx_kl` |")
    assert listed_names(broken, "S10")[: len(cegppo.METRIC_KEYS)] != list(cegppo.METRIC_KEYS)


def test_fused_metric_keys_are_listed(doc: str) -> None:
    """The extra keys of the fused loss (`cegppo.FUSED_METRIC_KEYS`, which every backend uses)."""
    extra = list(cegppo.FUSED_METRIC_KEYS[len(cegppo.METRIC_KEYS) :])
    assert extra == ["entropy_mean", *(f"entropy_change_{r}" for r in cegppo.TokenRegions._fields)]
    assert listed_names(doc, "S10")[len(cegppo.METRIC_KEYS) :] == extra


def test_advantage_section_quotes_the_code(doc: str) -> None:
    text = section(doc, "S12")  # with its sub-clauses
    m = re.search(r"`GRPO_EPS`\s*=\s*([0-9.eE+-]+)", text)
    assert m is not None and float(m.group(1)) == cegppo.GRPO_EPS
    for name in cegppo.ADVANTAGE_ESTIMATORS:
        assert f"`{name}`" in text, name


def test_grpo_bound_quoted_in_s12_holds() -> None:
    """S12.1: without eps, |A| <= (G - 1) / sqrt(G); attained by one outlier in a group."""
    g = 8
    r = np.zeros(g)
    r[0] = 1.0
    a = cegppo.grpo_advantages(r, g, eps=1e-300)
    assert np.max(np.abs(a)) == pytest.approx((g - 1) / math.sqrt(g), rel=1e-12)


# ---------------------------------------------------------------- the page's examples


def test_python_blocks_run(doc: str) -> None:
    blocks = re.findall(r"^```python\n(.*?)^```", doc, re.M | re.S)
    assert blocks, "docs/spec.md has no python example"
    namespace: dict[str, object] = {"__name__": "spec_md"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/spec.md[python block {i}]", "exec"), namespace)


def test_no_file_refers_to_a_design_document_outside_the_repository() -> None:
    """The project's docs stand alone: docs/design.md holds the design; nothing cites a file that is not here."""
    root = Path(__file__).resolve().parents[2]
    outside = "DESIGN" + ".md"  # spelled in two parts so that this file does not cite it either
    folders = ("spec", "backends", "conformance_tests", "reference_trainer", "integrations", "docs", "tests", "benchmarks",
               "tools", ".ci")
    files = [root / name for name in ("README.md", "CHANGELOG.md", "CITATION.cff", "pyproject.toml", "noxfile.py",
                                       "mkdocs.yml")]
    files += [p for folder in folders for p in (root / folder).rglob("*") if p.suffix in (".py", ".md", ".toml", ".yml")]
    citing = [str(p.relative_to(root)) for p in files if p.is_file() and outside in p.read_text(encoding="utf-8")]
    assert not citing, f"these files cite {outside}, which is not in the repository: {citing}"
    assert (root / "docs" / "design.md").is_file()
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "(docs/design.md)" in readme and "(docs/contributing.md)" in readme, "the README links the design pages"
