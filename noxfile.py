"""Sessions for tests, conformance, lint, types, docs and benchmarks.

`nox` with no arguments runs the default sessions below: this is the README's test command and
what `.ci/run` calls. `bench` and `gpu` (everything on CUDA) run only when named. Every session installs the project from this checkout with the pins in
constraints.txt (torch 2.13.0, the local CPU build), so nothing installed by hand is relied on.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "typecheck", "tests", "conformance", "trainer", "integrations", "docs"]

PYTHON = "3.11"
CONSTRAINTS = ("-c", "constraints.txt")
BACKENDS = ("numpy", "torch", "jax")
EXTRAS = {"numpy": "test", "torch": "torch,test", "jax": "jax,test"}
# The Hypothesis profile: `ci` (derandomized, bounded) unless the caller picks another.
HYPOTHESIS_ENV = {"HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci"), "PYTHONHASHSEED": "0"}


def _install(session: nox.Session, extras: str) -> None:
    session.install(*CONSTRAINTS, "--upgrade", "pip")
    session.install(*CONSTRAINTS, f".[{extras}]")


@nox.session(python=PYTHON)
@nox.parametrize("backend", BACKENDS)
def tests(session: nox.Session, backend: str) -> None:
    """Unit tests of one implementation: the NumPy reference (`numpy`), `cegppo.torch` or `cegppo.jax`."""
    _install(session, EXTRAS[backend])
    folder = "tests/core" if backend == "numpy" else f"tests/{backend}"
    session.run("pytest", folder, *session.posargs, env={**HYPOTHESIS_ENV, "CEGPPO_STRICT": "1"})


@nox.session(python=PYTHON)
@nox.parametrize("backend", BACKENDS)
def conformance(session: nox.Session, backend: str) -> None:
    """The conformance suite against one implementation (HYPOTHESIS_PROFILE=thorough for release checks)."""
    _install(session, EXTRAS[backend])
    session.run(
        "pytest",
        "tests/conformance",
        f"--backend={backend}",
        *session.posargs,
        env={**HYPOTHESIS_ENV, "CEGPPO_STRICT": "1"},
    )


@nox.session(python=PYTHON)
def trainer(session: nox.Session) -> None:
    """The reference trainer: CLI smoke run, resume, DDP equivalence, checkpoints, datasets."""
    _install(session, "trainer,test")
    session.run("pytest", "tests/trainer", *session.posargs, env={**HYPOTHESIS_ENV, "CEGPPO_STRICT": "1"})


@nox.session(python=PYTHON)
def integrations(session: nox.Session) -> None:
    """verl, TRL and optax integrations against the real packages (pinned in the `integrations` extra)."""
    _install(session, "integrations,trainer,test")
    # This venv has torch, jax, optax, verl and trl: it also runs every python block of the docs.
    session.run("pytest", "tests/integrations", "tests/docs", *session.posargs, env={**HYPOTHESIS_ENV, "CEGPPO_STRICT": "1"})


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site: `mkdocs build --strict` into build/site (offline: KaTeX vendored, no web fonts)."""
    _install(session, "docs")  # a regular (non-editable) install: mkdocstrings reads the installed package
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/site", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and import order."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy over every package (spec, backends, conformance, trainer, integrations), strict on the spec.

    The folders map onto one package `cegppo` (pyproject.toml), which mypy cannot see through the
    editable install's import hook: it reads a plain copy installed into build/typecheck instead
    (MYPYPATH), against torch, jax and the trainer's dependencies in this session's environment.
    """
    _install(session, "torch,jax,trainer,test")
    session.install("mypy==2.4.1")
    target = os.path.join("build", "typecheck")
    shutil.rmtree(target, ignore_errors=True)
    session.install("--no-deps", "--target", target, ".")
    session.run("mypy", env={"MYPYPATH": target})


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks (not in CI): `nox -s bench -- policy_loss` or `-- fused_head`."""
    _install(session, "torch,jax")
    which = session.posargs or ["policy_loss"]
    for name in which:
        session.run("python", f"benchmarks/bench_{name}.py")


# Run in the gpu session after the install: a clear message instead of a wall of failing tests.
_CHECK_CUDA = """
import sys, torch, jax
problems = []
if not torch.cuda.is_available():
    problems.append(f"torch {torch.__version__} sees no CUDA device (a CPU build?)")
try:
    jax.devices("gpu")
except RuntimeError as exc:
    problems.append(f"jax {jax.__version__} has no GPU backend ({str(exc).splitlines()[0]})")
if problems:
    sys.exit("nox -s gpu: " + "; ".join(problems))
print("CUDA:", torch.cuda.get_device_name(0), "| jax:", jax.devices("gpu"))
"""


@nox.session(python=PYTHON)
def gpu(session: nox.Session) -> None:
    """Everything on CUDA, one command (not in CI: needs an NVIDIA GPU): backends, conformance, benchmarks.

    Installs CUDA builds of torch and jax instead of the CPU pin of constraints.txt
    (CEGPPO_GPU_TORCH / CEGPPO_GPU_JAX override the requirements), then runs tests/torch,
    tests/jax and the conformance suite of both backends with ``--device cuda``, and the policy-loss
    benchmark on CUDA. Extra arguments go to pytest (e.g. ``nox -s gpu -- -x``).
    """
    if shutil.which("nvidia-smi") is None:
        session.error("nox -s gpu needs an NVIDIA GPU and its driver (nvidia-smi is not on PATH)")
    session.install("--upgrade", "pip")
    session.install(os.environ.get("CEGPPO_GPU_TORCH", "torch>=2.4"),
                    os.environ.get("CEGPPO_GPU_JAX", "jax[cuda12]>=0.4.30"))
    session.install(".[test]")
    session.run("python", "-c", _CHECK_CUDA)
    env = {**HYPOTHESIS_ENV, "CEGPPO_STRICT": "1"}
    for backend in ("torch", "jax"):
        session.run("pytest", f"tests/{backend}", "--device=cuda", *session.posargs, env=env)
        session.run("pytest", "tests/conformance", f"--backend={backend}", "--device=cuda", *session.posargs, env=env)
    session.run("python", "benchmarks/bench_policy_loss.py", "--device", "cuda")
