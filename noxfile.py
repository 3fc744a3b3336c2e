"""Sessions for tests, conformance, lint, types, docs and benchmarks.

`nox` with no arguments runs the default sessions below: this is the README's test command and
what `.ci/run` calls. `bench`, `gpu` (everything on CUDA), `openrlhf`, `skyrl` and `tunix` (a framework
each, in its own venv), `conformance` (inside `tests` in CI) and `mutation` run only when named. Every session installs the project from this checkout with the pins in
constraints.txt (torch 2.13.0, the local CPU build), so nothing installed by hand is relied on.

Speed (docs/contributing.md, "CI time"): venvs are made and filled by uv when it is installed (the README's
test command installs it beside nox), from one package cache for every session; each pytest run spreads
its tests over every core with pytest-xdist.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import nox

# uv when it is installed (`pip install "nox[uv]"`), else virtualenv and pip: the same sessions either way.
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True
# openrlhf, skyrl and tunix install a framework each (DeepSpeed built from source, Ray, ~80 packages for tunix),
# which would add minutes to every CI run, so they run when named.
nox.options.sessions = ["lint", "typecheck", "tests", "trainer", "integrations", "docs"]

PYTHON = "3.11"
CONSTRAINTS = ("-c", "constraints.txt")
BACKENDS = ("numpy", "torch", "jax")
EXTRAS = {"numpy": "test", "torch": "torch,test", "jax": "jax,test"}
# Every pytest run of a session uses every core (pytest-xdist, pinned in constraints.txt): `-n auto` starts
# one worker per core; `worksteal` lets an idle worker take queued tests from a busy one, so a few slow tests
# late in a file do not leave a core idle (tests(torch): 102 -> 95 s). PYTEST_XDIST="-n 0" runs in one process.
XDIST = tuple(os.environ.get("PYTEST_XDIST", "-n auto --dist worksteal").split())
TEST_TOOLS = ("pytest-xdist",)  # what every test session installs beside the project
# The Hypothesis profile: `ci` (derandomized, bounded) unless the caller picks another.
HYPOTHESIS_ENV = {"HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci"), "PYTHONHASHSEED": "0"}
# JAX's persistent compilation cache, beside uv's package cache in the user's cache folder: the xdist workers, and
# later runs on this machine, load each other's XLA executables instead of compiling the same program again. It is
# keyed on the program, the JAX version and the compiler flags, so a changed function is compiled anew and no test
# runs less. Every compile is kept (the default keeps only those over a second: the tests' programs are small).
# Unbounded: JAX's size bound takes a file lock (filelock) and re-reads the folder at every write, and a tests(jax)
# run with it spent 337 s compiling against 175 s with a fresh cache and no bound. A run adds about 15 MB of
# programs it has not seen; `rm -r ~/.cache/cegppo` empties it.
# A caller's JAX_COMPILATION_CACHE_DIR wins.
_USER_CACHE = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
JAX_CACHE_ENV = {
    "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR",
                                                os.path.join(_USER_CACHE, "cegppo", "jax-compilation-cache")),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
}
TEST_ENV = {**HYPOTHESIS_ENV, "CEGPPO_STRICT": "1", **JAX_CACHE_ENV}
# Frameworks with a session of their own (openrlhf, skyrl, tunix) set CEGPPO_REQUIRE=<extra>: there a missing
# framework fails its tests; elsewhere (`integrations` also collects tests/integrations) they skip.
INTEGRATION_ENV = {**TEST_ENV, "RAY_USAGE_STATS_ENABLED": "0"}


def _pip_find_links() -> str:
    """The find-links locations pip is configured with on this machine (PIP_FIND_LINKS, else pip's config)."""
    links = os.environ.get("PIP_FIND_LINKS", "")
    if not links:
        done = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                              capture_output=True, text=True, check=False)
        links = done.stdout.strip() if done.returncode == 0 else ""
    return links


# uv reads neither pip's configuration nor PIP_* variables. Where pip is pointed at local wheels (this
# machine's CPU build of the torch that constraints.txt pins), uv is pointed at them too: without them it
# would take PyPI's torch of the same version, a CUDA build of several GB.
if "UV_FIND_LINKS" not in os.environ and (_links := _pip_find_links()):
    os.environ["UV_FIND_LINKS"] = ",".join(_links.split())


def _install(session: nox.Session, extras: str, *more: str) -> None:
    """The project from this checkout with `extras`, and `more` packages, under the pins of constraints.txt."""
    if session.venv_backend != "uv":  # uv needs no pip in the venv
        session.install(*CONSTRAINTS, "--upgrade", "pip")
    session.install(*CONSTRAINTS, f".[{extras}]", *more)


def _pytest(session: nox.Session, *args: str, env: dict[str, str] = TEST_ENV) -> None:
    session.run("pytest", *XDIST, *args, *session.posargs, env=env)


@nox.session(python=PYTHON)
@nox.parametrize("backend", BACKENDS)
def tests(session: nox.Session, backend: str) -> None:
    """Unit tests of one implementation (`numpy`: the reference, `torch`, `jax`) and the conformance suite on it.

    One pytest run over the folders: the workers share them out, so the slowest file no longer
    sets the pace of a run of its own. The clauses every backend must meet are the conformance
    suite's; tests/backends holds the unit tests torch and JAX share, parametrised over a `backend`
    fixture that `--backend` narrows to this session's framework (so each of its cases runs once, here);
    tests/torch and tests/jax hold only what is framework-specific. `nox -s conformance` runs the
    conformance suite alone.
    """
    _install(session, EXTRAS[backend], *TEST_TOOLS)
    folders = ["tests/core"] if backend == "numpy" else [f"tests/{backend}", "tests/backends"]
    _pytest(session, *folders, "tests/conformance", f"--backend={backend}")


@nox.session(python=PYTHON, default=False)
@nox.parametrize("backend", BACKENDS)
def conformance(session: nox.Session, backend: str) -> None:
    """The conformance suite alone against one implementation (HYPOTHESIS_PROFILE=thorough for release
    checks). In CI it runs inside `tests`, in the same venv."""
    _install(session, EXTRAS[backend], *TEST_TOOLS)
    _pytest(session, "tests/conformance", f"--backend={backend}")


@nox.session(python=PYTHON)
def trainer(session: nox.Session) -> None:
    """The reference trainer: CLI smoke run, resume, DDP equivalence, checkpoints, datasets."""
    _install(session, "trainer,test", *TEST_TOOLS)
    _pytest(session, "tests/trainer")


@nox.session(python=PYTHON)
def integrations(session: nox.Session) -> None:
    """verl, TRL and optax integrations against the real packages (pinned in the `integrations` extra)."""
    _install(session, "integrations,trainer,test", *TEST_TOOLS)
    # This venv has torch, jax, optax, verl and trl: it also runs every python block of the docs, except
    # those of the frameworks with a session of their own (tunix: `nox -s tunix`).
    _pytest(session, "tests/integrations", "tests/docs", "-k", "not own_session")




@nox.session(python=PYTHON)
def tunix(session: nox.Session) -> None:
    """tunix (google-tunix, JAX) against the real package, pinned in the `tunix` extra, on CPU.

    tunix's own GRPO learner with the `ce_gppo` loss (two steps of a toy model), the kit adapter
    (`--framework-loss tunix`), and the tunix python blocks of the docs. Not in the default sessions
    (the install is ~80 packages and the tests take about two minutes): `nox -s tunix`.
    """
    # torch too, though tunix does not need it: without it, `import torch` in tunix's dependencies (tensorboardX)
    # would find the folder tests/torch (pytest puts tests/ on sys.path) and fail on torch.Tensor.
    _install(session, "tunix,torch,test")
    session.run("pytest", "tests/integrations/test_tunix.py", "tests/integrations/test_tunix_conformance.py",
                "tests/docs/test_code_blocks.py", "-k", "tunix", *session.posargs,
                env={**INTEGRATION_ENV, "CEGPPO_REQUIRE": "tunix"})


# OpenRLHF and SkyRL declare GPU-only dependencies (flash-attn, vLLM, NIXL) that cannot be installed on a
# CPU machine, so their sessions install the pinned framework with --no-deps plus what its loss layer
# imports, pinned here (docs/integrations.md says which modules run). A user's `.[openrlhf]` / `.[skyrl]`
# installs the framework whole.
OPENRLHF = "openrlhf==0.11.2"
OPENRLHF_LOSS_LAYER = (  # openrlhf.models.loss -> openrlhf.models.utils -> deepspeed (an sdist: built here)
    "deepspeed==0.19.6", "einops==0.8.2", "hjson==3.1.0", "msgpack==1.2.4", "ninja==1.13.2", "psutil==7.2.2",
    "py-cpuinfo==9.0.0", "pydantic==2.14.4", "tqdm==4.70.1",
)
SKYRL = ("skyrl==0.3.0", "skyrl-gym==0.4.0")
SKYRL_LOSS_LAYER = (  # ppo_utils (Ray registry actor, jaxtyping, loguru) and skyrl.train.config (OmegaConf, gym envs)
    "ray==2.56.0", "cloudpickle==3.1.3", "jaxtyping==0.3.11", "loguru==0.7.3", "omegaconf==2.4.0", "PyYAML==6.0.4",
    "pandas==3.1.1", "func_timeout==4.3.5", "requests==2.34.2", "fsspec==2026.9.0", "pydantic==2.14.4",
    "aiohttp==3.14.5",
)


@nox.session(python=PYTHON)
def openrlhf(session: nox.Session) -> None:
    """OpenRLHF: the PolicyLoss drop-in and `--framework-loss openrlhf` against openrlhf 0.11.2's loss layer."""
    _install(session, "torch,test")
    session.install(*CONSTRAINTS, "setuptools", "wheel")
    # DeepSpeed is an sdist; without build isolation it builds against the pinned CPU torch (no CUDA wheels).
    session.install(*CONSTRAINTS, "--no-build-isolation", *OPENRLHF_LOSS_LAYER)
    session.install(*CONSTRAINTS, "--no-deps", OPENRLHF)
    session.run("pytest", "tests/integrations/test_openrlhf.py", "tests/integrations/test_openrlhf_conformance.py",
                *session.posargs, env={**INTEGRATION_ENV, "CEGPPO_REQUIRE": "openrlhf"})


@nox.session(python=PYTHON)
def skyrl(session: nox.Session) -> None:
    """SkyRL: `ce_gppo` in SkyRL's policy-loss registry and `--framework-loss skyrl` against skyrl 0.3.0's loss layer."""
    _install(session, "torch,test")
    session.install(*CONSTRAINTS, *SKYRL_LOSS_LAYER)
    session.install(*CONSTRAINTS, "--no-deps", *SKYRL)
    session.run("pytest", "tests/integrations/test_skyrl.py", "tests/integrations/test_skyrl_conformance.py",
                "tests/integrations/test_skyrl_family.py", *session.posargs,
                env={**INTEGRATION_ENV, "CEGPPO_REQUIRE": "skyrl"})


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site: `mkdocs build --strict` into build/site (offline: KaTeX vendored, no web fonts)."""
    _install(session, "docs")  # a regular (non-editable) install: mkdocstrings reads the installed package
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/site", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and import order."""
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")


@contextlib.contextmanager
def _beside(session: nox.Session, *args: str) -> Iterator[None]:
    """Run `args` in this session's environment while the body runs; then print its output, and fail the session
    if it failed (after the body, so that both report). For two checks that each keep one core busy."""
    env = {**os.environ, "PATH": os.pathsep.join([session.bin, os.environ.get("PATH", "")]),
           "VIRTUAL_ENV": session.virtualenv.location}
    with tempfile.TemporaryFile("w+") as log:
        session.log(f"{' '.join(args)} (beside the next command)")
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            yield
        finally:
            code = proc.wait()
            log.seek(0)
            print(log.read(), end="", flush=True)
        if code != 0:
            session.error(f"{' '.join(args)} failed with exit code {code}")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy over every package (spec, backends, conformance, trainer, integrations), strict on the spec; then the
    release check of the distribution (tools/check_distribution.py: sdist and wheel built, twine-checked, installed
    outside the tree). The two share this session because both need the project built and installed.

    The folders map onto one package `cegppo` (pyproject.toml), which mypy cannot see through the
    editable install's import hook: it reads a plain copy installed into build/typecheck instead
    (MYPYPATH), against torch, jax and the trainer's dependencies in this session's environment.
    """
    _install(session, "torch,jax,trainer,test", "mypy", "build", "twine", "uv")
    target = os.path.join("build", "typecheck")
    shutil.rmtree(target, ignore_errors=True)
    session.install("--no-deps", "--target", target, ".")
    # mypy checks on one core; the release check (builds, installs, subprocesses) runs beside it on the other.
    with _beside(session, "python", "tools/check_distribution.py"):
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
    tests/jax, tests/backends and the conformance suite of both backends with ``--device cuda``, and the policy-loss
    benchmark on CUDA. Extra arguments go to pytest (e.g. ``nox -s gpu -- -x``).
    """
    if shutil.which("nvidia-smi") is None:
        session.error("nox -s gpu needs an NVIDIA GPU and its driver (nvidia-smi is not on PATH)")
    session.install("--upgrade", "pip")
    session.install(os.environ.get("CEGPPO_GPU_TORCH", "torch>=2.4"),
                    os.environ.get("CEGPPO_GPU_JAX", "jax[cuda12]>=0.4.30"))
    session.install(".[test]")
    session.run("python", "-c", _CHECK_CUDA)
    env = TEST_ENV
    for backend in ("torch", "jax"):
        session.run("pytest", f"tests/{backend}", "tests/backends", f"--backend={backend}", "--device=cuda",
                    *session.posargs, env=env)
        session.run("pytest", "tests/conformance", f"--backend={backend}", "--device=cuda", *session.posargs, env=env)
    session.run("python", "benchmarks/bench_policy_loss.py", "--device", "cuda")


# Mutation testing (`nox -s mutation`, not in CI): each target names the modules mutated and the test
# suites that must kill the mutants. This table is the one place to change either; `nox -s mutation
# -- spec` runs one target. tools/mutation.py stages, runs mutmut and prints the score per module.
MUTATION_TARGETS: dict[str, dict[str, list[str]]] = {
    "spec": {
        # Every module of spec/ with code (not __init__, which re-exports, nor __main__, the `python -m cegppo` demo),
        # but _backend_core and _backend_family: the backends' shared algorithm, which only the backends' suites run.
        "mutate": ["spec/_objective.py", "spec/_aggregation.py", "spec/_loss.py", "spec/_logits.py",
                   "spec/_advantages.py", "spec/_validation.py", "spec/_metrics.py", "spec/_fused.py",
                   "spec/_config.py", "spec/presets.py", "spec/_arrays.py", "spec/_aggregation_modes.py",
                   "spec/_estimators.py", "spec/_fused_args.py"],
        "tests": ["tests/core"],
        "pytest_args": [],
    },
    "torch": {
        "mutate": ["backends/torch/_objective.py", "backends/torch/_aggregation.py", "backends/torch/_ops.py",
                   "spec/_backend_core.py", "spec/_backend_family.py"],
        # Not test_compile (a torch.compile per mutant) nor test_distributed (its ranks run in
        # subprocesses, which see no mutant); not test_fused (the fused head is not mutated).
        # tests/backends: its torch cases (--backend=torch), without test_fused.
        "tests": ["tests/conformance/test_properties.py", "tests/torch/test_policy_loss.py",
                  "tests/torch/test_torch_shared_rules.py", "tests/backends/test_policy_loss.py",
                  "tests/backends/test_aggregation.py", "tests/backends/test_arguments.py",
                  "tests/backends/test_family.py", "tests/backends/test_ops.py"],
        "pytest_args": ["--backend=torch"],
    },
    "jax": {
        "mutate": ["backends/jax/_objective.py", "backends/jax/_aggregation.py", "backends/jax/_ops.py",
                   "spec/_backend_core.py", "spec/_backend_family.py"],
        # Not test_sharding / test_memory_traffic (compiled-HLO inspection, minutes per mutant),
        # nor test_fused (as for torch).
        "tests": ["tests/conformance/test_properties.py", "tests/jax/test_policy_loss.py",
                  "tests/jax/test_numerics.py", "tests/jax/test_jax_shared_rules.py",
                  "tests/backends/test_policy_loss.py", "tests/backends/test_aggregation.py",
                  "tests/backends/test_arguments.py", "tests/backends/test_family.py",
                  "tests/backends/test_ops.py"],
        "pytest_args": ["--backend=jax"],
        "isolation": ["forkserver"],  # JAX's runtime segfaults in a forked worker (exit -11)
    },
}


@nox.session(python=PYTHON)
def mutation(session: nox.Session) -> None:
    """Mutation testing with mutmut (not in CI; long): `nox -s mutation [-- spec torch jax]`.

    Mutates the modules of MUTATION_TARGETS and runs the suites that check them (Hypothesis profile
    `mutation`: few derandomized examples), then prints per module the mutants killed, timed out,
    shown equivalent (tools/mutation_equivalent.toml) and surviving. Fails if a survivor is not
    explained. Results stay in build/mutation/NAME (`mutmut show NAME` there shows a mutant).
    """
    names = session.posargs or list(MUTATION_TARGETS)
    unknown = sorted(set(names) - set(MUTATION_TARGETS))
    if unknown:  # before the installs: a typo costs nothing
        session.error(f"unknown mutation target(s) {unknown}; known: {sorted(MUTATION_TARGETS)}")
    _install(session, "torch,jax,test")
    session.install(*CONSTRAINTS, "mutmut")
    env = {**HYPOTHESIS_ENV, "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "mutation"),
           "CEGPPO_STRICT": "1", "OMP_NUM_THREADS": "1",
           "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
    for name in names:
        target = MUTATION_TARGETS[name]
        args = ["python", "tools/mutation.py", "run", name, "--mutate", *target["mutate"], "--tests", *target["tests"]]
        args += [f"--pytest-arg={a}" for a in target["pytest_args"]]
        args += [f"--isolation={i}" for i in target.get("isolation", [])]
        session.run(*args, env=env)
    # All the scores together at the end; fails if a survivor is neither killed nor shown equivalent.
    session.run("python", "tools/mutation.py", "report", *names, "--strict", env=env)
