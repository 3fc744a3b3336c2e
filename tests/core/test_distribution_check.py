"""tools/check_distribution.py's reading of a wheel and an sdist (the release check, docs/contributing.md).

The whole check builds and installs (half a minute with a warm uv cache) and runs as its own step; these test,
in a second, that its content checks find what a broken distribution lacks. The distributions here are made
by hand from the repository's own files, complete, then broken one way at a time.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import tomllib
from repo_tools import ROOT, load_tool

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


tool = load_tool("check_distribution.py")
VERSION = tool.source_version()
DIST_INFO = f"cegppo-{VERSION}.dist-info"


def _wheel_files() -> dict[str, bytes]:
    """A complete wheel's files, from the repository (as setuptools lays them out)."""
    project = PYPROJECT["project"]
    files = {path: (ROOT / source).read_bytes() for path, source in tool.expected_modules().items()}
    meta = [f"Name: {project['name']}", f"Version: {VERSION}", f"License-Expression: {project['license']}",
            "License-File: LICENSE", f"Requires-Python: {project['requires-python']}",
            *(f"Provides-Extra: {extra}" for extra in project["optional-dependencies"])]
    files[f"{DIST_INFO}/METADATA"] = ("Metadata-Version: 2.4\n" + "\n".join(meta) + "\n\n" + "readme\n").encode()
    points = {"console_scripts": project["scripts"], **project["entry-points"]}
    files[f"{DIST_INFO}/entry_points.txt"] = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n"
        for group, entries in points.items()).encode()
    files[f"{DIST_INFO}/licenses/LICENSE"] = (ROOT / "LICENSE").read_bytes()
    return files


def _zip(tmp_path: Path, files: dict[str, bytes]) -> Path:
    path = tmp_path / f"cegppo-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def test_a_complete_wheel_passes() -> None:
    assert tool.check_wheel(_zip_in_memory(_wheel_files())) == []


def _zip_in_memory(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    buffer.seek(0)
    return buffer


def _drop(name: str) -> Callable[[dict[str, bytes]], None]:
    def remove(files: dict[str, bytes]) -> None:
        del files[name]
    return remove


def _edit(name: str, old: bytes, new: bytes) -> Callable[[dict[str, bytes]], None]:
    def change(files: dict[str, bytes]) -> None:
        assert old in files[name], (name, old)
        files[name] = files[name].replace(old, new)
    return change


BREAKAGES = {
    "no py.typed": (_drop("cegppo/py.typed"), ["wheel lacks cegppo/py.typed (from spec/py.typed)"]),
    "a subpackage's module missing": (_drop("cegppo/torch/_loss.py"),
                                      ["wheel lacks cegppo/torch/_loss.py (from backends/torch/_loss.py)"]),
    "a module the docs document missing": (_drop("cegppo/integrations/tunix.py"), [
        "wheel lacks cegppo/integrations/tunix.py (from integrations/tunix.py)",
        "wheel lacks cegppo.integrations.tunix, which docs/api.md documents"]),
    "a stale module": (_edit("cegppo/_loss.py", b"def ", b"def _stale_"),
                       ["wheel's cegppo/_loss.py differs from spec/_loss.py"]),
    "no LICENSE": (_drop(f"{DIST_INFO}/licenses/LICENSE"), [f"wheel lacks {DIST_INFO}/licenses/LICENSE"]),
    "another LICENSE": (_edit(f"{DIST_INFO}/licenses/LICENSE", b"Apache License", b"MIT License"),
                        [f"wheel's {DIST_INFO}/licenses/LICENSE is not the repository's LICENSE"]),
    "the tests packaged": (lambda files: files.update({"tests/__init__.py": b""}),
                           [f"wheel holds top-level entries other than cegppo/ and {DIST_INFO}/: ['tests']"]),
    "another version": (_edit(f"{DIST_INFO}/METADATA", f"Version: {VERSION}".encode(), b"Version: 0.0.1"),
                        [f"wheel METADATA Version: '0.0.1', expected '{VERSION}'"]),
    "a license classifier instead of the SPDX expression": (
        _edit(f"{DIST_INFO}/METADATA", b"License-Expression: Apache-2.0\nLicense-File: LICENSE\n", b""),
        ["wheel METADATA License-Expression: None, expected 'Apache-2.0'",
         "wheel METADATA names no License-File LICENSE"]),
    "an extra lost": (_edit(f"{DIST_INFO}/METADATA", b"Provides-Extra: trainer\n", b""),
                      ["wheel METADATA lacks the extras ['trainer']"]),
    "a console script pointing elsewhere": (
        _edit(f"{DIST_INFO}/entry_points.txt", b"cegppo.trainer._cli:main", b"cegppo.trainer:main"),
        ["wheel entry point [console_scripts] cegppo-train = 'cegppo.trainer:main', "
         "expected 'cegppo.trainer._cli:main'"]),
    "the verl plugin lost": (_edit(f"{DIST_INFO}/entry_points.txt", b"[verl.plugins]\ncegppo = ", b"[verl.plugins]\nx = "),
                             ["wheel entry point [verl.plugins] cegppo = None, expected 'cegppo.integrations.verl'"]),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_wheel_is_named_for_what_it_lacks(breakage: str) -> None:
    files = _wheel_files()
    change, problems = BREAKAGES[breakage]
    change(files)
    assert tool.check_wheel(_zip_in_memory(files)) == problems


def test_a_wheel_file_on_disk_is_read_too(tmp_path: Path) -> None:
    files = _wheel_files()
    del files[f"{DIST_INFO}/METADATA"]
    assert tool.check_wheel(_zip(tmp_path, files)) == [f"wheel lacks {DIST_INFO}/METADATA (version {VERSION} expected)"]


def test_the_wheel_must_hold_every_module_of_every_mapped_folder() -> None:
    expected = tool.expected_modules()
    config = PYPROJECT["tool"]["setuptools"]
    for package in config["packages"]:
        folder = ROOT / config["package-dir"][package]
        for path in folder.glob("*.py"):
            assert expected[f"{package.replace('.', '/')}/{path.name}"] == str(path.relative_to(ROOT))
    assert expected["cegppo/py.typed"] == "spec/py.typed"
    assert {"cegppo/_extras.py", "cegppo/_progress.py", "cegppo/trainer/_cli.py", "cegppo/conformance/_cli.py"} <= set(expected)
    documented = tool.documented_modules()
    assert "cegppo.torch" in documented and "cegppo.integrations.verl" in documented


def _sdist(tmp_path: Path, skip: str = "") -> Path:
    top = f"cegppo-{VERSION}"
    names = [*tool.SDIST_FILES, *tool.expected_modules().values()]
    path = tmp_path / f"{top}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name in names:
            if name != skip:
                info = tarfile.TarInfo(f"{top}/{name}")
                tf.addfile(info, io.BytesIO(b""))
    return path


def test_the_sdist_must_hold_the_release_files_and_the_sources(tmp_path: Path) -> None:
    assert tool.check_sdist(_sdist(tmp_path)) == []
    top = f"cegppo-{VERSION}"
    assert tool.check_sdist(_sdist(tmp_path, "LICENSE")) == [f"sdist lacks {top}/LICENSE"]
    assert tool.check_sdist(_sdist(tmp_path, "CHANGELOG.md")) == [f"sdist lacks {top}/CHANGELOG.md"]
    assert tool.check_sdist(_sdist(tmp_path, "spec/_extras.py")) == [f"sdist lacks {top}/spec/_extras.py"]


def test_extras_follow_their_references() -> None:
    assert tool.extras_closure(["test"]) == {"test", "conformance"}
    assert tool.extras_closure(["all"]) >= {"all", "torch", "jax", "trainer", "test", "conformance"}
    with pytest.raises(ValueError, match="cegppo has no extra 'nope'"):
        tool.extras_closure(["nope"])


def test_the_optional_subpackages_and_their_extras_are_read_from_their_require_calls() -> None:
    optional = tool._optional_subpackages()
    assert optional["cegppo.torch"] == "torch" and optional["cegppo.conformance"] == "conformance"
    assert set(optional.values()) <= set(PYPROJECT["project"]["optional-dependencies"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--keep", str(ROOT / "build" / "dist-check")], "must be outside the source tree"),
    (["--uv", str(ROOT / "README.md")], "not an executable file"),
])
def test_bad_arguments_exit_2_before_any_work(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        tool.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
