"""The release check: what a user installing cegppo from the package index gets (docs/contributing.md, "Releasing").

    python tools/check_distribution.py [--uv PATH] [--keep DIR]

Standard library only. In a temporary folder, outside the source tree:

1. builds the sdist and the wheel with ``python -m build`` from a copy of the checkout (files git tracks or
   would track; nothing ignored, so no stale egg-info or build/ leaks in), the wheel from the sdist, as an
   index user's pip does when no wheel fits;
2. runs ``twine check --strict`` on both;
3. reads the wheel and the sdist: every module of every subpackage (pyproject.toml's ``package-dir``), the
   ``py.typed`` marker, LICENSE, the version, the license and extras metadata, the entry points, the modules
   docs/api.md documents (the docs build reads them from the installed package); the sdist's release files;
4. installs the wheel alone into a clean venv (NumPy is its only dependency, checked) and runs the
   NumPy-only smoke test: ``import cegppo`` from that venv, a ``policy_loss`` call against its definition,
   ``python -m cegppo``, and each optional subpackage refusing to import with the extra to install;
5. installs the wheel with the extras ``torch,jax,trainer,test`` (constraints.txt pins torch) into a second
   venv, imports every subpackage, and runs ``--help`` and ``--version`` of both command lines.

uv (``--uv PATH``, or ``uv`` on PATH) makes the venvs and installs, and is build's installer; without it
``venv`` and pip do. Find-links for the local torch wheel come from the environment (UV_FIND_LINKS, or
PIP_FIND_LINKS, which is handed to uv too). The build and twine run in this interpreter if it has them,
else in a venv of their own. Prints what it checked; exits 1 if anything failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import tomllib

ROOT = Path(__file__).resolve().parents[1]
FULL_EXTRAS = "torch,jax,trainer,test"
"""The extras of the second venv: every subpackage but the framework integrations imports with them."""
SDIST_FILES = ("LICENSE", "README.md", "CHANGELOG.md", "CITATION.cff", "pyproject.toml", "PKG-INFO")
"""Files of the repository root every sdist must hold (the wheel is built from it, and a reader wants them)."""
CLIS = ("cegppo-train", "cegppo-conformance")


# ---- what the wheel must hold (read from the repository, not restated) --------------------------------------------


def pyproject(root: Path = ROOT) -> dict:
    with open(root / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def source_version(root: Path = ROOT) -> str:
    """`cegppo.__version__` as spec/__init__.py assigns it (read, not imported: the check needs no install)."""
    folder = pyproject(root)["tool"]["setuptools"]["package-dir"]["cegppo"]
    tree = ast.parse((root / folder / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]:
            return str(ast.literal_eval(node.value))
    raise ValueError(f"{folder}/__init__.py assigns no __version__")


def expected_modules(root: Path = ROOT) -> dict[str, str]:
    """Wheel path -> repository path of every Python module and package-data file pyproject.toml maps."""
    config = pyproject(root)["tool"]["setuptools"]
    out: dict[str, str] = {}
    for package in config["packages"]:
        folder = root / config["package-dir"][package]
        target = package.replace(".", "/")
        for path in sorted(folder.glob("*.py")):
            out[f"{target}/{path.name}"] = str(path.relative_to(root))
        for pattern in config.get("package-data", {}).get(package, []):
            for path in sorted(folder.glob(pattern)):
                out[f"{target}/{path.name}"] = str(path.relative_to(root))
    return out


def documented_modules(root: Path = ROOT) -> list[str]:
    """The modules docs/api.md renders (``::: cegppo.x`` lines; mkdocstrings reads them from the installed package)."""
    text = (root / "docs" / "api.md").read_text(encoding="utf-8")
    return re.findall(r"^::: *([\w.]+)\s*$", text, re.M)


def extras_closure(extras: Sequence[str], root: Path = ROOT) -> set[str]:
    """`extras` and the extras they name in turn (``test`` holds ``cegppo[conformance]``)."""
    table = pyproject(root)["project"]["optional-dependencies"]
    out: set[str] = set()
    todo = list(extras)
    while todo:
        extra = todo.pop()
        if extra not in table:
            raise ValueError(f"cegppo has no extra {extra!r}; it has {sorted(table)}")
        if extra not in out:
            out.add(extra)
            for req in table[extra]:
                inner = re.fullmatch(r"cegppo\[([\w,\s-]+)\]", req.strip())
                if inner:
                    todo += [e.strip() for e in inner.group(1).split(",")]
    return out


def _module_file(module: str, names: set[str]) -> str | None:
    """The wheel path of `module`'s source (a module file or a package's __init__), if the wheel holds it."""
    base = module.replace(".", "/")
    return next((p for p in (f"{base}.py", f"{base}/__init__.py") if p in names), None)


# ---- the checks of the built files: each returns the problems it found (empty: fine) ------------------------------


def check_wheel(wheel: Path | IO[bytes], root: Path = ROOT) -> list[str]:
    """Problems with the wheel `wheel` (a path or an open binary file): missing modules, py.typed, LICENSE,
    metadata, entry points."""
    problems: list[str] = []
    version = source_version(root)
    project = pyproject(root)["project"]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = f"cegppo-{version}.dist-info"
        for path, source in expected_modules(root).items():
            if path not in names:
                problems.append(f"wheel lacks {path} (from {source})")
            elif zf.read(path) != (root / source).read_bytes():
                problems.append(f"wheel's {path} differs from {source}")
        stray = sorted({n.split("/")[0] for n in names} - {"cegppo", dist_info})
        if stray:
            problems.append(f"wheel holds top-level entries other than cegppo/ and {dist_info}/: {stray}")
        for module in documented_modules(root):
            if _module_file(module, names) is None:
                problems.append(f"wheel lacks {module}, which docs/api.md documents")
        license_path = f"{dist_info}/licenses/LICENSE"
        if license_path not in names:
            problems.append(f"wheel lacks {license_path}")
        elif zf.read(license_path) != (root / "LICENSE").read_bytes():
            problems.append(f"wheel's {license_path} is not the repository's LICENSE")
        if f"{dist_info}/METADATA" not in names:
            return [*problems, f"wheel lacks {dist_info}/METADATA (version {version} expected)"]
        meta = email.parser.Parser().parsestr(zf.read(f"{dist_info}/METADATA").decode("utf-8"))
        expect = {"Name": "cegppo", "Version": version, "License-Expression": project["license"],
                  "Requires-Python": project["requires-python"]}
        for key, value in expect.items():
            if meta.get(key) != value:
                problems.append(f"wheel METADATA {key}: {meta.get(key)!r}, expected {value!r}")
        if "LICENSE" not in (meta.get_all("License-File") or []):
            problems.append("wheel METADATA names no License-File LICENSE")
        missing_extras = sorted(set(project["optional-dependencies"]) - set(meta.get_all("Provides-Extra") or []))
        if missing_extras:
            problems.append(f"wheel METADATA lacks the extras {missing_extras}")
        if f"{dist_info}/entry_points.txt" not in names:
            return [*problems, f"wheel lacks {dist_info}/entry_points.txt"]
        points = configparser.ConfigParser(delimiters=("=",))
        points.optionxform = str  # type: ignore[assignment,method-assign]  # entry point names keep their case
        points.read_string(zf.read(f"{dist_info}/entry_points.txt").decode("utf-8"))
        wanted = {"console_scripts": project["scripts"], **project.get("entry-points", {})}
        for group, entries in wanted.items():
            for name, target in entries.items():
                got = points.get(group, name, fallback=None)
                if got is None or got.strip() != target:
                    problems.append(f"wheel entry point [{group}] {name} = {got!r}, expected {target!r}")
    return problems


def check_sdist(sdist: Path, root: Path = ROOT) -> list[str]:
    """Problems with the sdist at `sdist`: its folder, the release files, the sources of every package."""
    version = source_version(root)
    top = f"cegppo-{version}"
    with tarfile.open(sdist) as tf:
        names = set(tf.getnames())
    problems = [f"sdist lacks {top}/{name}" for name in SDIST_FILES if f"{top}/{name}" not in names]
    for source in expected_modules(root).values():
        if f"{top}/{source}" not in names:
            problems.append(f"sdist lacks {top}/{source}")
    return problems


# ---- running: build, install, smoke tests -------------------------------------------------------------------------


class Failed(Exception):
    """A step that the following ones need failed (its output is printed)."""


class Run:
    """The steps' shared state: the scratch folder, uv (or None), the results printed as they come."""

    def __init__(self, scratch: Path, uv: str | None) -> None:
        self.scratch = scratch
        self.uv = uv
        self.failures: list[str] = []
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        if uv and "UV_FIND_LINKS" not in self.env and self.env.get("PIP_FIND_LINKS"):
            self.env["UV_FIND_LINKS"] = self.env["PIP_FIND_LINKS"]  # the local torch wheel, for uv as for pip
        if uv:  # build's --installer uv looks uv up on PATH
            self.env["PATH"] = os.pathsep.join([str(Path(uv).parent), self.env.get("PATH", "")])

    def ok(self, what: str) -> None:
        print(f"ok    {what}", flush=True)

    def fail(self, what: str, detail: str = "") -> None:
        self.failures.append(what)
        print(f"FAIL  {what}" + (f"\n{textwrap.indent(detail.rstrip(), '      ')}" if detail.strip() else ""), flush=True)

    def check(self, what: str, problems: Sequence[str]) -> None:
        if problems:
            self.fail(what, "\n".join(problems))
        else:
            self.ok(what)

    def sh(self, what: str, args: Sequence[str], *, cwd: Path | None = None, fatal: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str] | None:
        """Run `args` (cwd: the scratch folder, outside the source tree); report a failure with its output."""
        start = time.monotonic()
        proc = subprocess.run(list(args), cwd=cwd or self.scratch, env=env or self.env, capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            self.fail(f"{what} (exit {proc.returncode})", (proc.stdout + proc.stderr)[-4000:])
            if fatal:
                raise Failed(what)
            return None
        self.ok(f"{what} ({time.monotonic() - start:.1f} s)")
        return proc

    def venv(self, name: str) -> Path:
        """A new venv in the scratch folder; its python."""
        where = self.scratch / name
        if self.uv:
            self.sh(f"venv {name}", [self.uv, "venv", "--quiet", "--python", sys.executable, str(where)])
        else:
            self.sh(f"venv {name}", [sys.executable, "-m", "venv", str(where)])
        return where / "bin" / "python"

    def install(self, what: str, python: Path, *requirements: str) -> None:
        """Install into the venv of `python` with constraints.txt's pins."""
        args = ["-c", str(ROOT / "constraints.txt"), *requirements]
        if self.uv:
            self.sh(what, [self.uv, "pip", "install", "--quiet", "--python", str(python), *args])
        else:
            self.sh(what, [str(python), "-m", "pip", "install", "--quiet", *args])


def _stage_source(run: Run) -> Path:
    """A copy of the checkout's files (tracked, or untracked but not ignored) in the scratch folder."""
    target = run.scratch / "src"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=False)
    if listed.returncode != 0:  # not a git checkout (an unpacked sdist): every file but the usual build outputs
        shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(".git", ".nox", "build", "dist", "*.egg-info",
                                                                    "__pycache__", ".*_cache"))
        return target
    for name in listed.stdout.decode("utf-8").split("\0"):
        if name and (ROOT / name).is_file():  # a deleted file git still lists is left out
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def _tools_python(run: Run) -> Path:
    """An interpreter with `build` and `twine`: this one if it has both, else a venv made for them."""
    probe = subprocess.run([sys.executable, "-c", "import build, twine"], capture_output=True, check=False)
    if probe.returncode == 0:
        return Path(sys.executable)
    python = run.venv("tools")
    run.install("install build and twine", python, "build", "twine")
    return python


_CORE_SMOKE = r"""
import importlib, importlib.metadata as md, pathlib, sys
import numpy as np
import cegppo
assert pathlib.Path(cegppo.__file__).is_relative_to(sys.prefix), f"cegppo imported from {cegppo.__file__}"
assert cegppo.__version__ == sys.argv[1], (cegppo.__version__, sys.argv[1])
others = {d.metadata["Name"].lower() for d in md.distributions()} - {"cegppo", "numpy", "pip", "setuptools", "wheel"}
assert not others, f"the core venv holds more than cegppo and NumPy: {sorted(others)}"
# At ratio 1 every token is inside the clip interval: the loss is -mean(A) over valid tokens (spec S3, token-mean).
old = np.log(np.full((2, 3), 0.5))
adv = np.array([1.0, -0.5])
mask = np.array([[True, True, True], [True, False, False]])
loss = float(cegppo.policy_loss(old, old, adv, mask, cegppo.presets.ce_gppo_1p5b(), agg="token-mean"))
want = -float((adv[:, None] * mask).sum() / mask.sum())
assert abs(loss - want) < 1e-12, (loss, want)
for name, extra in [(n.split("=")[0], n.split("=")[1]) for n in sys.argv[2:]]:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        assert f'pip install "cegppo[{extra}]"' in str(exc), f"{name}: {exc}"
    else:
        raise AssertionError(f"{name} imported without its extra {extra}")
print("policy_loss", loss)
"""

_FULL_SMOKE = r"""
import importlib, importlib.metadata as md, pathlib, sys
for name in sys.argv[2:]:
    module = importlib.import_module(name)
    assert pathlib.Path(module.__file__).is_relative_to(sys.prefix), f"{name} imported from {module.__file__}"
plugins = {e.name: e.value for e in md.entry_points(group="verl.plugins")}
assert plugins.get("cegppo") == "cegppo.integrations.verl", plugins
assert importlib.import_module("cegppo").__version__ == sys.argv[1]
print("imported", " ".join(sys.argv[2:]))
"""


def _optional_subpackages(root: Path = ROOT) -> dict[str, str]:
    """Every optional subpackage -> the extra its `require` call names (tests/core/test_extras.py checks the calls)."""
    config = pyproject(root)["tool"]["setuptools"]["package-dir"]
    files = {name: root / folder / "__init__.py" for name, folder in config.items()
             if name not in ("cegppo", "cegppo.integrations")}
    files |= {f"cegppo.integrations.{p.stem}": p for p in sorted((root / config["cegppo.integrations"]).glob("*.py"))
              if not p.name.startswith("_")}
    out = {}
    for name, path in files.items():
        match = re.search(r"^require\(__name__, \"([\w-]+)\"", path.read_text(encoding="utf-8"), re.M)
        if match is None:
            raise ValueError(f"{path.relative_to(root)} does not call require(__name__, EXTRA, MODULES)")
        out[name] = match.group(1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/check_distribution.py", description=__doc__.split("\n")[0])
    parser.add_argument("--uv", default=None, metavar="PATH", help="the uv executable (default: uv on PATH, if any)")
    parser.add_argument("--keep", default=None, metavar="DIR", type=Path,
                        help="work in DIR and keep it (default: a temporary folder, removed at the end)")
    args = parser.parse_args(argv)
    uv = args.uv or shutil.which("uv")
    if args.uv is not None and not (Path(args.uv).is_file() and os.access(args.uv, os.X_OK)):
        parser.error(f"--uv {args.uv}: not an executable file")
    if args.keep is not None:
        if args.keep.exists() and (not args.keep.is_dir() or any(args.keep.iterdir())):
            parser.error(f"--keep {args.keep}: exists and is not an empty folder")
        if args.keep.resolve().is_relative_to(ROOT):  # the point is to install and import away from the sources
            parser.error(f"--keep {args.keep}: must be outside the source tree {ROOT}")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cegppo-dist-") as tmp:
        scratch = (args.keep or Path(tmp)).resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        run = Run(scratch, uv)
        print(f"cegppo {source_version()}: checking the distributions in {scratch} "
              f"({'uv ' + uv if uv else 'venv and pip'})", flush=True)
        try:
            _check(run)
        except Failed:
            pass
    took = time.monotonic() - start
    if run.failures:
        print(f"distribution check FAILED ({len(run.failures)}: {'; '.join(run.failures)}) in {took:.0f} s")
        return 1
    print(f"distribution check passed in {took:.0f} s")
    return 0


def _check(run: Run) -> None:
    version = source_version()
    src = _stage_source(run)
    dist = run.scratch / "dist"
    tools = _tools_python(run)
    build = [str(tools), "-m", "build", "--outdir", str(dist), *(["--installer", "uv"] if run.uv else []), str(src)]
    run.sh("python -m build (sdist, then the wheel from it)", build)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if [w.name for w in wheels] != [f"cegppo-{version}-py3-none-any.whl"] or len(sdists) != 1:
        run.fail("one pure-Python wheel and one sdist of this version", f"built: {sorted(p.name for p in dist.iterdir())}")
        raise Failed("build outputs")
    wheel, sdist = wheels[0], sdists[0]
    run.sh("twine check --strict", [str(tools), "-m", "twine", "check", "--strict", str(wheel), str(sdist)])
    run.check(f"wheel contents ({wheel.name}): modules, py.typed, LICENSE, metadata, entry points, api.md modules",
              check_wheel(wheel))
    run.check(f"sdist contents ({sdist.name}): release files and sources", check_sdist(sdist))

    optional = _optional_subpackages()
    core = run.venv("venv-core")
    run.install("install the wheel alone (NumPy only)", core, str(wheel))
    run.sh("NumPy-only smoke: import cegppo from the venv, policy_loss, only cegppo and NumPy installed; "
           f"{len(optional)} optional subpackages name their extra",
           [str(core), "-I", "-c", _CORE_SMOKE, version, *(f"{k}={v}" for k, v in optional.items())], fatal=False)
    run.sh("python -m cegppo (the demo)", [str(core), "-I", "-m", "cegppo"], fatal=False)

    full = run.venv("venv-full")
    run.install(f"install the wheel with [{FULL_EXTRAS}]", full, f"cegppo[{FULL_EXTRAS}] @ {wheel.as_uri()}")
    importable = ["cegppo", "cegppo.presets", "cegppo.integrations",
                  *(name for name, extra in optional.items() if extra in extras_closure(FULL_EXTRAS.split(",")))]
    run.sh(f"import {', '.join(importable)}", [str(full), "-I", "-c", _FULL_SMOKE, version, *importable], fatal=False)
    bin_dir = full.parent
    for cli in CLIS:
        proc = run.sh(f"{cli} --version", [str(bin_dir / cli), "--version"], fatal=False)
        if proc is not None and proc.stdout.strip() != f"{cli} {version}":
            run.fail(f"{cli} --version prints {cli} {version}", proc.stdout)
        proc = run.sh(f"{cli} --help", [str(bin_dir / cli), "--help"], fatal=False)
        if proc is not None and f"usage: {cli}" not in proc.stdout:
            run.fail(f"{cli} --help prints its usage", proc.stdout[:2000])


if __name__ == "__main__":
    sys.exit(main())
