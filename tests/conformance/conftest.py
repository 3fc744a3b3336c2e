"""Conformance tests: ``pytest tests/conformance --backend=numpy|torch|jax`` (default numpy).

The selected backend is what `test_properties.py` checks; port tests run for the framework of the
selected backend only (torch ports with ``--backend=torch``, JAX ports with ``--backend=jax``), so
each nox venv needs nothing beyond its own framework. The numbers of examples come from the
Hypothesis profile (HYPOTHESIS_PROFILE=ci|dev|thorough). JAX compiles for every new shape, so
the JAX backend runs under jax.jit (one compilation per call instead of one per op; eager vs jit
is still compared) and its share is cut by ``JAX_EXAMPLE_FRACTION`` (never its tolerances);
``--conformance-max-examples=N`` overrides all of this. ``--device`` is where the backend's and the
ports' inputs are created. The options are declared in tests/conftest.py, so that a run selecting
only other folders may still pass them (`nox -s mutation` runs each mutant's tests with the target's
options, whichever folders they are in).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

JAX_EXAMPLE_FRACTION = 0.25
"""Share of the profile's max_examples that JAX backend/port properties run (JAX compiles per shape)."""


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """The backend picked with --backend."""
    return str(request.config.getoption("--backend", default="numpy"))


@pytest.fixture(scope="session")
def max_examples(request: pytest.FixtureRequest, backend: str) -> int:
    """Examples per property: --conformance-max-examples, else the Hypothesis profile's (jax: a fraction)."""
    forced = request.config.getoption("--conformance-max-examples", default=None)
    if forced is not None:
        if forced < 1:
            raise pytest.UsageError(f"--conformance-max-examples must be >= 1, got {forced}")
        return int(forced)
    n = int(settings.default.max_examples)
    return max(5, int(n * JAX_EXAMPLE_FRACTION)) if backend == "jax" else n


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    """The device picked with --device (default cpu; tests/conftest.py checks that it is available)."""
    return str(request.config.getoption("--device", default="cpu"))


@pytest.fixture(scope="session")
def jax_x64(backend: str) -> Iterator[None]:
    """With --backend=jax, float64 on (as a user of the CLI gets it); a no-op otherwise."""
    if backend != "jax":
        yield
        return
    import jax

    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def adapter(backend: str, jax_x64: None, device: str) -> Any:
    """The conformance adapter of the selected backend on --device (its framework must import: no skip)."""
    import cegppo.conformance as cc

    # cegppo.jax under jax.jit: eager JAX compiles every op per shape (~5x slower); the S9 compiled
    # property still compares jit with a truly eager call.
    return cc.backend_adapter(backend, jit=backend == "jax", device=None if backend == "numpy" else device)


@pytest.fixture(scope="module")
def torch_ports(backend: str) -> Any:
    """ports/torch_ports.py, with --backend=torch only (skipped otherwise: the venv may lack torch)."""
    if backend != "torch":
        pytest.skip("torch ports run with --backend=torch")
    from ports import torch_ports as module

    return module


@pytest.fixture(scope="module")
def convention_torch_ports(backend: str) -> Any:
    """ports/convention_torch_ports.py, with --backend=torch only."""
    if backend != "torch":
        pytest.skip("torch ports run with --backend=torch")
    from ports import convention_torch_ports as module

    return module


@pytest.fixture(scope="module")
def convention_jax_ports(backend: str, jax_x64: None) -> Any:
    """ports/convention_jax_ports.py, with --backend=jax only (float64 on, as the CLI does)."""
    if backend != "jax":
        pytest.skip("jax ports run with --backend=jax")
    from ports import convention_jax_ports as module

    return module


@pytest.fixture(scope="module")
def jax_ports(backend: str, jax_x64: None) -> Any:
    """ports/jax_ports.py, with --backend=jax only (float64 on, as the CLI does)."""
    if backend != "jax":
        pytest.skip("jax ports run with --backend=jax")
    from ports import jax_ports as module

    return module
