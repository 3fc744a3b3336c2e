"""Every ```python block of docs/*.md and README.md runs (the docs' promise: "every code block runs").

One test per page: its python blocks run in order, in one namespace (a fresh module per page), from
the repository root, on CPU. Blocks in other languages (```bash, ```text, ```yaml ...) are not run.
A page whose blocks import a framework that is not installed (torch, jax, optax, verl, trl, ...) is
skipped with the reason, unless CEGPPO_STRICT is set (as under nox): then it fails, because the
session that runs this file is meant to have every framework. A failing block is reported with its
page, block number and line, and the block's source.

Frameworks tested in a nox session of their own (`OWN_SESSION`: tunix) are not in the `integrations`
venv: their blocks are left out of the page's run and run by `test_own_session_blocks_run[<framework>]`
instead (in page order, one namespace per page), which their session selects (`nox -s tunix`) and the
`integrations` session deselects.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import textwrap
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

# An opening fence ```python (optionally indented, e.g. inside an admonition or a tab), up to the
# closing fence at the same indentation. Attributes after the language ({ .python title=...}) are allowed.
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python[^\n`]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_IMPORT = re.compile(r"^[ \t]*(?:import|from)[ \t]+([A-Za-z_][\w.]*)(?:[ \t]+import[ \t]+([\w \t,]+))?", re.MULTILINE)

# Which installed distribution a block needs, by the module it imports (first match wins).
_NEEDS = (
    ("cegppo.torch", "torch"),
    ("cegppo.jax", "jax"),
    ("cegppo.trainer", "torch"),
    ("cegppo.integrations.verl", "verl"),
    ("cegppo.integrations.trl", "trl"),
    ("cegppo.integrations.tunix", "tunix"),
)
_THIRD_PARTY = {"torch", "jax", "jaxlib", "optax", "flax", "verl", "trl", "transformers", "datasets", "tokenizers",
                "accelerate", "matplotlib", "safetensors", "tunix", "grain"}
OWN_SESSION = {"tunix": "nox -s tunix"}
"""Frameworks whose blocks run only in their own nox session (framework -> the command)."""


@dataclass(frozen=True)
class Block:
    page: str
    index: int
    line: int
    source: str


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown file, dedented, with their 1-based starting line."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for i, m in enumerate(_FENCE.finditer(text)):
        body = m.group("body")
        indent = m.group("indent")
        if indent:
            body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in body.splitlines())
        line = text.count("\n", 0, m.start("body")) + 1
        blocks.append(Block(path.name, i + 1, line, textwrap.dedent(body)))
    return blocks


def needed_modules(blocks: list[Block]) -> list[str]:
    """The third-party top-level modules the blocks import (cegppo backends mapped to their framework)."""
    needs: set[str] = set()
    for b in blocks:
        names = []
        for module, imported in _IMPORT.findall(b.source):  # `from a import b, c` also names a.b, a.c
            names.append(module)
            names += [f"{module}.{n.split()[0]}" for n in imported.split(",") if n.strip()]
        for name in names:
            mapped = next((fw for prefix, fw in _NEEDS if name == prefix or name.startswith(prefix + ".")), None)
            top = mapped or name.split(".")[0]
            if top in _THIRD_PARTY:
                needs.add(top)
    return sorted(needs)


def run_blocks(blocks: list[Block], module_name: str) -> float:
    """Run the blocks in order in one fresh module namespace; return the seconds taken.

    Raises AssertionError naming the page, block and line, with the block's source and traceback.
    """
    module = types.ModuleType(module_name)
    module.__file__ = str(ROOT / "docs" / f"{module_name}.py")
    sys.modules[module_name] = module  # dataclasses and pickling look classes up by module
    state = _framework_state()
    start = time.perf_counter()
    try:
        for b in blocks:
            code = compile(b.source, f"{b.page}:block{b.index}(line {b.line})", "exec")
            try:
                exec(code, module.__dict__)
            except Exception as exc:
                tb = traceback.format_exc(limit=-6)
                numbered = "\n".join(f"{b.line + k:5d} | {s}" for k, s in enumerate(b.source.splitlines()))
                raise AssertionError(
                    f"{b.page}, python block {b.index} (line {b.line}) raised {type(exc).__name__}: {exc}\n"
                    f"{numbered}\n{tb}"
                ) from exc
    finally:
        sys.modules.pop(module_name, None)
        _restore_framework_state(state)
    return time.perf_counter() - start


def _framework_state() -> dict[str, object]:
    """Global switches a page may flip (jax x64, torch default dtype), to restore after it."""
    state: dict[str, object] = {}
    if "jax" in sys.modules:
        state["jax_x64"] = sys.modules["jax"].config.jax_enable_x64
    if "torch" in sys.modules:
        state["torch_dtype"] = sys.modules["torch"].get_default_dtype()
    return state


def _restore_framework_state(state: dict[str, object]) -> None:
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_enable_x64", bool(state.get("jax_x64", False)))
    if "torch" in sys.modules:
        sys.modules["torch"].set_default_dtype(state.get("torch_dtype", sys.modules["torch"].float32))


# ----------------------------------------------------------------------------- the docs' pages

PAGES_WITH_CODE = [p for p in PAGES if p.exists() and python_blocks(p)]


def own_session_of(block: Block) -> str | None:
    """The `OWN_SESSION` framework a block imports, if any."""
    return next((fw for fw in needed_modules([block]) if fw in OWN_SESSION), None)


def _run_page_blocks(page: Path, blocks: list[Block], install: str, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = [m for m in needed_modules(blocks) if importlib.util.find_spec(m) is None]
    if missing:
        msg = f"{page.name} needs {', '.join(missing)}, not installed ({install})"
        if os.environ.get("CEGPPO_STRICT"):
            pytest.fail(f"CEGPPO_STRICT is set: {msg}")
        pytest.skip(msg)
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    module_name = "docs_" + re.sub(r"\W", "_", page.stem)
    seconds = run_blocks(blocks, module_name)
    print(f"{page.name}: {len(blocks)} python blocks in {seconds:.1f}s")


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=[p.name for p in PAGES_WITH_CODE])
def test_page_code_blocks_run(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [b for b in python_blocks(page) if own_session_of(b) is None]
    _run_page_blocks(page, blocks, "pip install -e '.[integrations,test]'", monkeypatch)


@pytest.mark.parametrize("framework", sorted(OWN_SESSION))
def test_own_session_blocks_run(framework: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pages = [(p, [b for b in python_blocks(p) if own_session_of(b) == framework]) for p in PAGES_WITH_CODE]
    pages = [(p, blocks) for p, blocks in pages if blocks]
    assert pages, f"no docs page has a python block importing {framework}"
    for page, blocks in pages:
        _run_page_blocks(page, blocks, f"pip install -e '.[{framework},test]' or {OWN_SESSION[framework]}",
                         monkeypatch)


def test_docs_have_python_blocks() -> None:
    """The collection above is not vacuous: the overview page and the integrations page carry code."""
    names = {p.name for p in PAGES_WITH_CODE}
    assert {"index.md", "integrations.md"} <= names, names
    assert len(python_blocks(ROOT / "docs" / "index.md")) >= 3


# ----------------------------------------------------------------------------- the runner itself


def test_runner_extracts_only_python_fences(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nx = 1\n```\n\n```bash\nexit 1\n```\n\n"
        "!!! note\n    ```python\n    y = x + 1\n    ```\n\n```text\nnot code\n```\n",
        encoding="utf-8",
    )
    blocks = python_blocks(page)
    assert [b.source.strip() for b in blocks] == ["x = 1", "y = x + 1"]
    assert [b.line for b in blocks] == [4, 13]
    run_blocks(blocks, "docs_runner_selftest")  # shared namespace: block 2 sees block 1's x


def test_runner_reports_a_failing_block(tmp_path: Path) -> None:
    page = tmp_path / "bad.md"
    page.write_text("```python\na = 1\n```\n\ntext\n\n```python\nassert a == 2, 'a is 1'\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"bad.md, python block 2 \(line 8\) raised AssertionError: a is 1"):
        run_blocks(python_blocks(page), "docs_runner_selftest")


def test_blocks_split_by_session() -> None:
    """A block importing an OWN_SESSION framework leaves its page's run; the others stay."""
    blocks = [Block("p", 1, 1, "import jax\n"), Block("p", 2, 5, "from cegppo.integrations.tunix import CEGPPOConfig\n"),
              Block("p", 3, 9, "import tunix.rl\n")]
    assert [own_session_of(b) for b in blocks] == [None, "tunix", "tunix"]


def test_needed_modules() -> None:
    blocks = [Block("p", 1, 1, "import cegppo\nimport cegppo.torch as cg\nfrom cegppo.integrations import trl\n"),
              Block("p", 2, 9, "from cegppo.integrations.verl import verl_port\nimport jax.numpy as jnp\nimport os\n")]
    assert needed_modules(blocks) == ["jax", "torch", "trl", "verl"]
