"""cegppo.jax tests: float64 needs `jax_enable_x64`, switched on per test module (and restored after).

The switch is a fixture, not an import-time `jax.config.update`, so that other test folders run
in the same process (conformance, integrations) keep JAX's default. Tests of the x64-off dtype
rules use `jax.enable_x64(False)` inside. (Module scope: Hypothesis refuses function-scoped fixtures.)
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _jax_x64() -> Iterator[None]:
    with jax.enable_x64(True):
        yield
