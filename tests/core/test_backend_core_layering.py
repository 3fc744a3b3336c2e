"""`cegppo._backend_core` and `cegppo._backend_family`, the backends' shared algorithm, stay apart from the
reference they are checked against: no module of the reference imports them, and they import no framework (docs/spec.md: the NumPy
reference is the oracle; `import cegppo.torch` must not pull in JAX, nor `cegppo.jax` torch)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ("_backend_core", "_backend_family")


def _imported(path: Path) -> set[str]:
    """The modules a file imports, relative ones as `.name`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names |= {base} | {f"{base.rstrip('.')}.{a.name}" for a in node.names}
    return names


def test_no_module_of_the_reference_imports_the_backends_shared_algorithm() -> None:
    for path in sorted((ROOT / "spec").glob("*.py")):
        if path.stem not in SHARED:
            assert not any(shared in name for name in _imported(path) for shared in SHARED), path.name


@pytest.mark.parametrize("module", SHARED)
def test_the_shared_algorithm_imports_no_framework_and_no_array_library(module: str) -> None:
    imported = _imported(ROOT / "spec" / f"{module}.py")
    assert not {name.split(".")[0] for name in imported} & {"torch", "jax", "jaxlib", "numpy"}, imported
    assert {".torch", ".jax"}.isdisjoint(imported)
