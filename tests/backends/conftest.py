"""The `backend` fixture: every test of tests/backends runs once per framework, torch and JAX.

``--backend=torch`` or ``--backend=jax`` (the option of the conformance suite, tests/conftest.py) keeps
that framework's cases only: `nox -s tests(torch)` runs the torch cases beside tests/torch, and
`tests(jax)` the JAX cases beside tests/jax, so each case runs once in CI. Without the option (or with
``--backend=numpy``) both run; outside nox (CEGPPO_STRICT unset) a framework that is not installed is
left out instead of failing.

Module scope (Hypothesis refuses function-scoped fixtures); JAX's cases run with float64 on
(`jax_enable_x64`), switched on for the module and restored after, as in tests/jax.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest
from array_backends import Backend, jax_backend, torch_backend

FRAMEWORKS = ("torch", "jax")


def _selected(config: pytest.Config) -> list[str]:
    chosen = str(config.getoption("--backend"))
    names = [chosen] if chosen in FRAMEWORKS else list(FRAMEWORKS)
    if os.environ.get("CEGPPO_STRICT"):
        return names
    return [n for n in names if importlib.util.find_spec(n) is not None]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", _selected(metafunc.config), indirect=True, scope="module")


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "torch":
        yield torch_backend()
        return
    import jax

    with jax.enable_x64(True):
        yield jax_backend()
