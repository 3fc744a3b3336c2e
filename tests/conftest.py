"""Shared pytest set-up: Hypothesis profiles, and skipping framework folders that are not installed.

Profiles (pick one with HYPOTHESIS_PROFILE): `dev` (default), `ci` (derandomized, bounded: what
nox and CI use), `thorough` (many more examples, for release checks) and `mutation` (derandomized,
few examples: `nox -s mutation` runs the suites once per mutant).

Under nox (CEGPPO_STRICT=1) a missing framework is an error, never a silent skip.

``--device DEVICE`` (default cpu) runs the suites on an accelerator: the conformance suite creates
its inputs there (the reference stays on the CPU); for the backend suites torch's default device is
set to it (every tensor factory allocates there) and JAX is limited to that platform. A device that
is not available is a usage error, before any test runs. `nox -s gpu` passes ``--device cuda``.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
from hypothesis import HealthCheck, settings

# ci and mutation runs must give the same examples on every run (derandomized) and tolerate slow draws
# on a loaded machine; a mutation run also keeps no example database, which a mutant would pollute.
_REPRODUCIBLE = {"deadline": None, "derandomize": True, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("ci", max_examples=40, print_blob=True, **_REPRODUCIBLE)
settings.register_profile("thorough", max_examples=2000, deadline=None, print_blob=True)
settings.register_profile("mutation", max_examples=5, database=None, **_REPRODUCIBLE)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

_FRAMEWORK_OF_FOLDER = {"torch": "torch", "jax": "jax", "trainer": "transformers", "integrations": "torch"}

collect_ignore_glob: list[str] = []
if not os.environ.get("CEGPPO_STRICT"):
    for folder, module in _FRAMEWORK_OF_FOLDER.items():
        if importlib.util.find_spec(module) is None:
            collect_ignore_glob.append(f"{folder}/*")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", metavar="DEVICE",
                     help="device for torch and JAX tensors: cpu (default), cuda, cuda:1 ...")
    # The conformance suite's options (tests/conformance/conftest.py reads them), declared here so
    # that every run accepts them, whichever folders it selects.
    group = parser.getgroup("cegppo conformance")
    group.addoption("--backend", choices=("numpy", "torch", "jax"), default="numpy",
                    help="implementation the conformance suite checks: numpy (reference), torch or jax")
    group.addoption("--conformance-max-examples", type=int, default=None, metavar="N",
                    help="Hypothesis examples per property (default: the profile's, cut for jax)")


def pytest_configure(config: pytest.Config) -> None:
    device = str(config.getoption("--device"))
    if device == "cpu":
        return
    if not device.startswith("cuda"):
        raise pytest.UsageError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if importlib.util.find_spec("torch") is not None:
        import torch

        if not torch.cuda.is_available():
            raise pytest.UsageError(f"--device {device}: CUDA is not available to torch {torch.__version__} here")
        torch.set_default_device(device)
    if importlib.util.find_spec("jax") is not None:
        if "jax" not in sys.modules:
            os.environ["JAX_PLATFORMS"] = "cuda"  # read once, when jax is first imported
        import jax

        try:
            jax.devices("gpu")
        except Exception as exc:  # RuntimeError, or an assertion of a backend that failed to start
            raise pytest.UsageError(f"--device {device}: JAX {jax.__version__} has no GPU backend here "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


# Collection must compute nothing with JAX. A JAX array built at import or in a parametrize list
# starts JAX's device backend and its thread pools in the collecting process; `nox -s mutation`
# forks its workers from a process that has collected the tests, and a fork of a process with
# those threads deadlocks (workers sit idle until the mutant times out). Build arrays inside tests.
_JAX_STARTED_BEFORE_COLLECTION = pytest.StashKey[bool]()


def _jax_backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")  # only if JAX is imported; private, hence getattr
    return bool(getattr(bridge, "_backends", None))


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_JAX_STARTED_BEFORE_COLLECTION] = _jax_backend_started()  # --device cuda starts it


def pytest_collection_finish(session: pytest.Session) -> None:
    _count_jax_compiles()
    if not session.stash.get(_JAX_STARTED_BEFORE_COLLECTION, True) and _jax_backend_started():
        raise pytest.UsageError(
            "collecting the tests started JAX's backend: a module or a parametrize list builds a JAX array "
            "at import time. Build it inside the test (forked mutation workers deadlock otherwise)."
        )


# XLA compiles are what a JAX test run spends its time on (one per new program and shape). Counted
# here and printed at the end of every run that used JAX (`tests(jax)` in CI), so that a change which
# adds compiles shows up in the log. Counted per process; xdist workers hand theirs to the controller.
_JAX_COMPILES = {"count": 0, "seconds": 0.0, "cached": 0}
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_COMPILE_STAGES = (_COMPILE_EVENT, "/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration")  # trace, lower, compile: the time a compile costs


def _count_jax_compiles() -> None:
    if "jax" not in sys.modules or _JAX_COMPILES.get("listening"):
        return
    import jax

    def on_event(event: str, seconds: float, **_: object) -> None:
        if event in _COMPILE_STAGES:
            _JAX_COMPILES["count"] += event == _COMPILE_EVENT
            _JAX_COMPILES["seconds"] += seconds

    def on_cache_hit(event: str, **_: object) -> None:  # an executable loaded from the persistent cache
        _JAX_COMPILES["cached"] += event == "/jax/compilation_cache/cache_hits"

    jax.monitoring.register_event_duration_secs_listener(on_event)
    jax.monitoring.register_event_listener(on_cache_hit)
    _JAX_COMPILES["listening"] = True


def pytest_runtest_call(item: pytest.Item) -> None:  # JAX is often first imported by a fixture
    _count_jax_compiles()


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its counts travel to the controller
        workeroutput["jax_compiles"] = (_JAX_COMPILES["count"], _JAX_COMPILES["seconds"], _JAX_COMPILES["cached"])


@pytest.hookimpl(optionalhook=True)  # an xdist hook: a run without xdist does not know it
def pytest_testnodedown(node: object, error: object) -> None:  # xdist controller: add a worker's counts
    count, seconds, cached = getattr(node, "workeroutput", {}).get("jax_compiles", (0, 0.0, 0))
    _JAX_COMPILES["count"] += count
    _JAX_COMPILES["seconds"] += seconds
    _JAX_COMPILES["cached"] += cached


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _JAX_COMPILES["count"]:
        terminalreporter.write_line(
            f"XLA compiles: {_JAX_COMPILES['count']}, {_JAX_COMPILES['cached']} of them loaded from the persistent "
            f"cache ({_JAX_COMPILES['seconds']:.1f} s tracing, lowering and compiling, all processes)")
