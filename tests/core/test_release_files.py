"""What a user of the published package reads besides the code: LICENSE, CHANGELOG.md, CITATION.cff, the version.

The distributions' contents (LICENSE in the sdist and the wheel, ...) are checked by tools/check_distribution.py
(tests/core/test_distribution_check.py tests its checks).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cegppo
import tomllib

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# sha256 of the Apache License 2.0 as the Apache Software Foundation publishes it (LICENSE-2.0.txt, appendix
# included): the file is that text, byte for byte, with no other project's notice added.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
HEADING = re.compile(r"^## \[(\d+)\.(\d+)\.(\d+)\] - (\d{4}-\d{2}-\d{2}|Unreleased)$", re.M)


def test_license_is_the_text_of_the_license_pyproject_declares() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]  # shipped in the sdist and the wheel
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_0_SHA256
    assert b"Apache License\n                           Version 2.0, January 2004" in text


def test_the_version_is_written_once() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "cegppo.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", cegppo.__version__)
    # no other file of the package assigns a version, and the citation leaves it to the package
    assigning = [str(p.relative_to(ROOT)) for folder in ("spec", "backends", "conformance_tests", "reference_trainer",
                                                         "integrations")
                 for p in (ROOT / folder).rglob("*.py") if re.search(r"^__version__\s*=", p.read_text(), re.M)]
    assert assigning == ["spec/__init__.py"]
    assert not re.search(r"^version:", (ROOT / "CITATION.cff").read_text(encoding="utf-8"), re.M)


def test_the_changelog_s_newest_entry_is_this_version_and_semver_holds() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert text.startswith("# Changelog\n") and "Keep a Changelog" in text and "Semantic Versioning" in text
    entries = [(tuple(map(int, m.groups()[:3])), m.start()) for m in HEADING.finditer(text)]
    assert len(entries) >= 2, "CHANGELOG.md needs this version's entry and the one before it"
    versions = [v for v, _ in entries]
    assert ".".join(map(str, versions[0])) == cegppo.__version__
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions), versions
    # before 1.0 a change that can break a caller raises the minor number (and resets the patch number)
    newest = text[entries[0][1]:entries[1][1]]
    (major, minor, patch), (_, previous_minor, _) = versions[0], versions[1]
    if major == 0 and "**Breaking**" in newest:
        assert minor == previous_minor + 1 and patch == 0, (versions[0], versions[1])
    # each section of an entry is one of Keep a Changelog's kinds, or a wave of work holding them
    for bullet in re.findall(r"^- (?:\*\*Breaking\*\*|[A-Z][a-z]+(?: \([^)]*\))?:)", newest, re.M):
        kind = bullet[2:].split(":")[0].split(" (")[0]
        assert kind in {"**Breaking**", "Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, bullet


def test_the_citation_cites_the_paper_and_the_software() -> None:
    text = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    assert re.search(r"^cff-version: 1\.2\.0$", text, re.M)
    assert re.search(r"^type: software$", text, re.M) and re.search(r"^title: .*cegppo", text, re.M)
    assert re.search(rf"^license: {re.escape(PYPROJECT['project']['license'])}$", text, re.M)
    paper = text[text.index("\npreferred-citation:\n"):]
    assert re.search(r"^  type: article$", paper, re.M)
    assert re.search(r'^  title: "CE-GPPO: .*"$', paper, re.M)
    assert re.search(r'^  url: "https://arxiv\.org/abs/2509\.20712"$', paper, re.M)
    assert re.search(r"^  doi: 10\.48550/arXiv\.2509\.20712$", paper, re.M)
    assert len(re.findall(r"^    - family-names: \S+", paper, re.M)) >= 1
