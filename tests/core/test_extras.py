"""The optional subpackages name a missing framework and the extra that installs it (cegppo._extras.require).

Absence is simulated (``sys.modules[name] = None``, which the import system reads as "not importable"), so
these run in any venv, the numpy-only one included. Which subpackages are optional, and the extras, are read
from pyproject.toml and from each subpackage's own `require` call, not restated here.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from cegppo._extras import missing_modules, require

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGE_DIR: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
# Import names whose distribution is named otherwise (the rest match once normalized, PEP 503).
DISTRIBUTION_OF = {"tunix": "google-tunix"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distributions(extra: str) -> set[str]:
    """The distributions `extra` installs, following `cegppo[other]` references."""
    out: set[str] = set()
    for req in EXTRAS[extra]:
        name = re.match(r"[A-Za-z0-9_.-]+", req)
        assert name is not None, req
        if _normalize(name.group()) == "cegppo":
            for other in re.search(r"\[(.*)\]", req).group(1).split(","):  # type: ignore[union-attr]
                out |= _distributions(other.strip())
        else:
            out.add(_normalize(name.group()))
    return out


def _optional_modules() -> dict[str, Path]:
    """Every optional subpackage (import name -> source file): the packages of pyproject's map but the core and
    `cegppo.integrations` (which imports no framework), and each public module of integrations/."""
    out = {name: ROOT / folder / "__init__.py" for name, folder in PACKAGE_DIR.items()
           if name not in ("cegppo", "cegppo.integrations")}
    for path in sorted((ROOT / PACKAGE_DIR["cegppo.integrations"]).glob("*.py")):
        if not path.name.startswith("_"):
            out[f"cegppo.integrations.{path.stem}"] = path
    return out


def _require_call(path: Path) -> tuple[str, list[str], int]:
    """(extra, modules, index among the module's top-level statements) of the file's `require(...)` call."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for index, node in enumerate(tree.body):
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", None) == "require"):
            _, extra, modules = (ast.literal_eval(a) if not isinstance(a, ast.Name) else a.id for a in node.value.args)
            return extra, list(modules), index
    raise AssertionError(f"{path.relative_to(ROOT)} does not call cegppo._extras.require")


CALLS = {name: _require_call(path) for name, path in _optional_modules().items()}


def test_every_optional_subpackage_requires_its_extra_before_importing_anything_else() -> None:
    assert {"cegppo.torch", "cegppo.jax", "cegppo.conformance", "cegppo.trainer", "cegppo.integrations.verl"} <= set(CALLS)
    for name, path in _optional_modules().items():
        extra, modules, index = CALLS[name]
        assert extra in EXTRAS, f"{name}: no extra {extra!r} in pyproject.toml"
        provided = _distributions(extra)
        for module in modules:
            assert _normalize(DISTRIBUTION_OF.get(module, module)) in provided, (name, module, extra)
        # Only the docstring, `from __future__` and the helper's own import may come first.
        body = ast.parse(path.read_text(encoding="utf-8")).body[:index]
        for node in body:
            allowed = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)  # the docstring
            allowed |= isinstance(node, ast.ImportFrom) and node.module in ("__future__", "cegppo._extras")
            assert allowed, f"{name}: line {node.lineno} runs before require()"


_PROBE = textwrap.dedent("""
    import importlib, json, sys
    results = []
    for subpackage, module in json.loads(sys.argv[1]):
        sys.modules[module] = None  # "not importable", as if it were not installed
        try:
            importlib.import_module(subpackage)
            results.append([subpackage, module, None, None, None])
        except ImportError as exc:
            results.append([subpackage, module, type(exc).__name__, exc.name, str(exc)])
        finally:
            del sys.modules[module]
    print(json.dumps(results))
""")


def test_a_missing_framework_is_named_with_the_extra_to_install() -> None:
    # One subprocess for every (subpackage, module) pair: an import that failed leaves nothing behind, and
    # require() stops each before any framework is imported, so the pairs do not see each other.
    pairs = [[name, module] for name, (_, modules, _) in CALLS.items() for module in modules]
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(pairs)], capture_output=True, text=True,
                         check=True, cwd=ROOT, timeout=120)
    for subpackage, module, kind, name, message in json.loads(out.stdout):
        extra, modules, _ = CALLS[subpackage]
        assert kind == "ModuleNotFoundError", (subpackage, module, kind)
        # Others of the list may be missing in this venv too (flax beside tunix): all are named, the first as
        # exc.name.
        needs = re.fullmatch(r"(\S+) needs (.+), which (?:is|are) not installed\. .*", message)
        assert needs is not None and needs.group(1) == subpackage, message
        assert module in re.split(r", | and ", needs.group(2)), message
        assert name in modules and modules.index(name) <= modules.index(module), (subpackage, module, name)
        assert f'pip install "cegppo[{extra}]"' in message, message


def test_require_names_every_missing_module_and_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.raises(ModuleNotFoundError) as info:
        require("cegppo.trainer", "trainer", ["numpy", "torch", "tqdm"])
    assert str(info.value) == ('cegppo.trainer needs torch and tqdm, which are not installed. It is an optional part '
                               'of cegppo; install it with its extra: pip install "cegppo[trainer]"')
    assert info.value.name == "torch"
    with pytest.raises(ModuleNotFoundError, match=r'^cegppo.torch needs torch, which is not installed\. .*"cegppo\[torch\]"$'):
        require("cegppo.torch", "torch", ["torch"])


def test_require_passes_and_imports_nothing_when_the_modules_are_there(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cegppo_probe_module.py").write_text("raise RuntimeError('imported')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert require("cegppo.x", "test", ["numpy", "cegppo_probe_module"]) is None
    assert "cegppo_probe_module" not in sys.modules
    assert missing_modules(["numpy", "cegppo_probe_module"]) == []


def test_a_bare_folder_of_the_framework_s_name_is_not_the_framework(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # tests/torch on sys.path is a namespace package "torch": importing it would give an empty module.
    (tmp_path / "cegppo_probe_framework").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    assert missing_modules(["cegppo_probe_framework"]) == ["cegppo_probe_framework"]
    (tmp_path / "cegppo_probe_framework" / "__init__.py").write_text("", encoding="utf-8")
    assert missing_modules(["cegppo_probe_framework"]) == []


@pytest.mark.parametrize(("args", "error", "match"), [
    ((1, "torch", ["torch"]), TypeError, "subpackage must be a str, got int"),
    (("", "torch", ["torch"]), ValueError, "subpackage is empty"),
    (("cegppo.x", None, ["torch"]), TypeError, "extra must be a str, got NoneType"),
    (("cegppo.x", "Torch Extra", ["torch"]), ValueError, "extra must be the name of an extra"),
    (("cegppo.x", "torch", "torch"), TypeError, "modules must be a sequence of module names, got str"),
    (("cegppo.x", "torch", []), ValueError, "modules is empty"),
    (("cegppo.x", "torch", [3]), TypeError, "modules must hold module names"),
    (("cegppo.x", "torch", ["torch.nn"]), ValueError, "top-level import names"),
])
def test_require_refuses_bad_arguments(args: tuple[object, ...], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        require(*args)  # type: ignore[arg-type]
