"""Shared pytest set-up: Hypothesis profiles, and skipping framework folders that are not installed.

Profiles (pick one with HYPOTHESIS_PROFILE): `dev` (default), `ci` (derandomized, bounded: what
nox and CI use) and `thorough` (many more examples, for release checks).

Under nox (CEGPPO_STRICT=1) a missing framework is an error, never a silent skip.
"""

from __future__ import annotations

import importlib.util
import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=2000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

_FRAMEWORK_OF_FOLDER = {"torch": "torch", "jax": "jax", "trainer": "transformers", "integrations": "torch"}

collect_ignore_glob: list[str] = []
if not os.environ.get("CEGPPO_STRICT"):
    for folder, module in _FRAMEWORK_OF_FOLDER.items():
        if importlib.util.find_spec(module) is None:
            collect_ignore_glob.append(f"{folder}/*")
