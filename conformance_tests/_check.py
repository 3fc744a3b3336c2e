"""`check`: run the conformance properties on a port (or a project backend) and return a `Report`.

Each property runs as a Hypothesis test built programmatically (``given(data=st.data())`` under
``settings``): derandomized by default, or seeded with ``seed``; a failure is shrunk to a minimal
example, whose failing call becomes the report's reproducer. With a time limit (``timeout``) the
test runs in a daemon thread, so that a port that hangs is reported instead of waited for.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, Verbosity, given, reporting, settings
from hypothesis import seed as hyp_seed
from hypothesis import strategies as st

from ._adapters import SHAPE_OF_FORM, Adapter, PortError, port_adapter
from ._cases import Mismatch, _short
from ._conventions import conventions, use
from ._diagnose import diagnose
from ._objectives import CE_GPPO
from ._prop_inputs import InputsModified, advantage_form_message, probe_advantage_forms
from ._registry import PROPERTIES, Property, properties_of
from ._report import PropertyResult, Report, reproducer

__all__ = ["DEFAULT_TIMEOUT", "check", "prepare", "run_property", "select", "within"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 600.0
"""Seconds one property may run in `check`, the CLI and `pytest_suite` before the port is reported as hanging.

Ten minutes is several times what 100 examples of the slowest property (a million tokens, eager
JAX) take on a laptop CPU; raise it for ``thorough`` runs of slow ports, None (``--timeout 0``)
removes it."""

_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
_PHASES_NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target)


def _matches(prop_id: str, prefix: str) -> bool:
    # A clause prefix stops at a clause boundary ("S1" is not "S12"); a prefix with a space may end anywhere.
    if not prop_id.startswith(prefix):
        return False
    return " " in prefix or len(prop_id) == len(prefix) or prop_id[len(prefix)] in " ."


def select(only: Iterable[str] | str | None, properties: Sequence[Property] | None = None) -> list[Property]:
    """The properties whose id starts with one of `only` (e.g. ``["S5", "S8.3", "S9 deterministic"]``).

    A clause prefix selects its sub-clauses too (``"S9"`` selects S9.1, S9.3, ... and S9 itself,
    ``"S1"`` does not select S12); a single string is one prefix. None selects every property.
    `properties` is the list to select from: `PROPERTIES` (default) or `FUSED_PROPERTIES`.
    """
    if properties is None:
        properties = PROPERTIES
    if only is None:
        return list(properties)
    prefixes = [only] if isinstance(only, str) else list(only)
    bad = [o for o in prefixes if not isinstance(o, str) or not o.strip()]
    if bad or not prefixes:
        raise ValueError(f"only must be a non-empty list of property id prefixes (e.g. ['S5']), got {only!r}")
    prefixes = [o.strip() for o in prefixes]
    chosen = [p for p in properties if any(_matches(p.id, o) for o in prefixes)]
    if not chosen:
        raise ValueError(f"no property matches {prefixes}; ids are {[p.id for p in properties]}")
    return chosen


_KIT_DIR = os.path.dirname(os.path.abspath(__file__))


def _port_traceback(exc: BaseException) -> str:
    """The traceback of an exception raised by the implementation, without the kit's own frames."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_KIT_DIR)]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames[-6:])]
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


def _check_run_args(max_examples: Any, seed: Any, shrink: Any, timeout: Any = None) -> None:
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max_examples must be an int >= 1, got {max_examples!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__} {seed!r}")
    if not isinstance(shrink, bool):
        raise TypeError(f"shrink must be a bool, got {type(shrink).__name__} {shrink!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
        raise TypeError(f"timeout must be a number of seconds or None, got {type(timeout).__name__} {timeout!r}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds (None for no limit), got {timeout!r}")


def run_property(p: Property, adapter: Adapter, *, max_examples: int = 100, seed: int | None = None,
                 shrink: bool = True, timeout: float | None = None) -> PropertyResult:
    """Run one property on `adapter` with Hypothesis and return its result (never raises for a failing port).

    Args:
        p: the property (an element of `PROPERTIES`).
        adapter: the implementation (`backend_adapter` or `port_adapter`).
        max_examples: Hypothesis examples (a costly property runs its share, see `Property.examples`).
        seed: a Hypothesis seed; None runs derandomized.
        shrink: shrink a failing example to a minimal one (default). False reports the first
            failing example as found: much faster on a broken port, but the reproducer is larger.
        timeout: seconds after which the property is reported as FAIL with ``timed_out`` set
            (its reproducer is the call that did not return); None (default) waits for it.
            The hung call is left running in a daemon thread: run nothing else on this adapter.
    """
    if not isinstance(p, Property):
        raise TypeError(f"p must be a Property, got {type(p).__name__}")
    if not isinstance(adapter, Adapter):
        raise TypeError(f"adapter must be an Adapter (backend_adapter/port_adapter), got {type(adapter).__name__}")
    _check_run_args(max_examples, seed, shrink, timeout)
    res = PropertyResult(p.id, p.clause, p.name, p.doc, "PASS")
    reason = p.skip_reason(adapter)
    if reason:
        res.status, res.reason = "SKIP", reason
        return res
    declared = p.declared_reason(adapter)
    if declared:
        res.status, res.reason = "DECLARED", declared
        return res
    n = p.examples(max_examples)
    count = [0]
    abandoned = threading.Event()

    def body(data: Any) -> None:
        if abandoned.is_set():  # timed out earlier: once the hung call returns, end without another call
            raise _Abandoned
        count[0] += 1
        adapter.last_case = None
        with use(adapter.conventions):  # every case drawn carries the port's declarations
            p(adapter, data)

    cfg = settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=seed is None,
        print_blob=False,
        report_multiple_bugs=False,
        verbosity=Verbosity.normal,
        suppress_health_check=list(HealthCheck),
        phases=_PHASES if shrink else _PHASES_NO_SHRINK,
    )
    test = given(data=st.data())(cfg(body))
    if seed is not None:
        test = hyp_seed(seed)(test)
    captured: list[object] = []

    def run_test() -> None:
        with reporting.with_reporter(captured.append):
            test()

    t0 = time.perf_counter()
    failure: BaseException | None = None
    try:
        done, _ = within(timeout, run_test, adapter, name=f"cegppo-conformance {p.id}")
    except BaseException as exc:  # the property's verdict (or an interrupt, re-raised by _record_failure)
        done, failure = True, exc
    res.seconds = time.perf_counter() - t0
    res.examples = count[0]
    res.hypothesis_output = "\n".join(map(str, captured))
    if not done:  # still running: the implementation hangs (or is slower than the limit)
        abandoned.set()
        res.status, res.timed_out = "FAIL", True
        res.defect_class, res.diagnosis = "contract/harness", "the port hangs (or is slower than the time limit)"
        res.message = (f"timed out: no result after {timeout:g}s (example {count[0]}); the implementation hangs or "
                       "is slower than the time limit (raise it with timeout= / --timeout)")
        if adapter.last_case is not None:
            res.reproducer = reproducer(adapter.last_case, adapter)
        return res
    if failure is not None:
        _record_failure(res, failure, adapter)
    return res


class _Abandoned(BaseException):
    """Ends a timed-out property's Hypothesis run (a BaseException: Hypothesis neither shrinks nor reports it)."""


def _record_failure(res: PropertyResult, exc: BaseException, adapter: Adapter) -> None:
    """Fill `res` from the exception a property's Hypothesis test ended with."""
    if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not the port's verdict
        raise exc
    res.status = "FAIL"
    if isinstance(exc, Mismatch):
        case = exc.case or adapter.last_case
        res.message = exc.what + (f" ({exc.detail})" if exc.detail and not isinstance(exc, PortError) else "")
        if isinstance(exc, PortError):
            res.exception = str(exc.got)
        else:
            res.expected, res.got = _short(exc.want), _short(exc.got)
        if exc.__cause__ is not None:  # the implementation's own exception, without the kit's frames
            res.exception = _port_traceback(exc.__cause__)
        if case is not None:
            res.reproducer = reproducer(case, adapter, show_mutation=isinstance(exc, InputsModified))
        _add_diagnosis(res, case, adapter, exc)
        return
    # the implementation misbehaved outside a comparison (e.g. Flaky)
    res.defect_class = "contract/harness"
    res.diagnosis = "the port misbehaved outside a comparison (e.g. results that change between identical calls)"
    res.message = f"{type(exc).__name__}: {exc}".splitlines()[0]
    res.exception = "".join(traceback.format_exception(exc)[-8:]).rstrip()
    if adapter.last_case is not None:
        res.reproducer = reproducer(adapter.last_case, adapter)


def _add_diagnosis(res: PropertyResult, case: Any, adapter: Adapter, exc: BaseException) -> None:
    """Fill the failure's diagnosis and defect class (the port is called again on the failing case)."""
    with adapter.thread_context():  # JAX's x64 flag as the property saw it
        d = diagnose(res.id, case, adapter, exc)
    res.diagnosis, res.defect_class = d.text, d.defect_class


def prepare(adapter: Adapter) -> list[str]:
    """Try each advantage form the adapter declares once; narrow `adapter.forms` to those it accepts.

    Returns notes for the report: when a port rejects one of two declared forms, the properties
    draw the other only (S1 ``declared advantage shapes are accepted`` still fails, in one line);
    when it rejects every form, nothing is narrowed and the properties show its exception.
    """
    if not adapter.probes_advantages:
        return []
    with use(adapter.conventions):
        rejected = probe_advantage_forms(adapter)
    accepted = tuple(f for f in adapter.declared_forms if f not in rejected)
    if not rejected or not accepted:
        return []
    adapter.forms = accepted
    line = advantage_form_message(adapter.declared_forms, tuple(rejected))
    return [f"the port {line}; the other properties draw {SHAPE_OF_FORM[accepted[0]]} advantages only"]


def check(
    port: Callable[..., Any] | Adapter,
    framework: str = "torch",
    *,
    max_examples: int = 100,
    seed: int | None = None,
    only: Iterable[str] | None = None,
    mask_dtype: str = "bool",
    compile: bool = False,
    jit: bool = False,
    name: str | None = None,
    progress: Callable[[PropertyResult], None] | None = None,
    fail_fast: bool = False,
    shrink: bool = True,
    device: str | None = None,
    advantages: str = "both",
    timeout: float | None = DEFAULT_TIMEOUT,
    normalizer_eps: float = 0.0,
    dual_clip: str = "optional",
    compute_dtype: str | None = None,
    agg: str | Sequence[str] | None = None,
    global_normalizers: bool = False,
    objective: str | None = None,
) -> Report:
    """Check a port of CE-GPPO (or of another member of the family) against every conformance property (docs/conformance.md).

    Args:
        port: ``port(log_prob, old_log_prob, advantages, response_mask, *, eps_low, eps_high,
            beta_low, beta_high, clip_ratio_c)`` returning the token-mean loss as a scalar of its
            framework; ``clip_ratio_c=None`` means no dual clip. log_prob etc. are (B, T) tensors,
            advantages (B, T) or (B,), response_mask a (B, T) bool tensor. An `Adapter` (e.g.
            ``backend_adapter("torch")``) is accepted too; a `fused_adapter` (a fused LM-head loss)
            is checked against the S11.1 properties (`FUSED_PROPERTIES`) instead.
        framework: ``torch``, ``jax`` or ``numpy`` (NumPy ports are checked on values only).
        max_examples: Hypothesis examples per property (the cap of costly properties is lower).
        seed: a seed for Hypothesis; None runs derandomized (the same examples every time).
        only: property id prefixes to run (``["S5", "S8.3"]``); None runs all.
        mask_dtype: ``bool`` (default) hands the mask as a bool tensor; ``float`` as 0/1 in the
            log-prob dtype (verl's convention).
        compile: also check torch.compile against eager for torch ports (slow).
        jit: JAX ports: run every call under jax.jit (several times faster; the port must be
            jittable). Eager vs jit is still compared by ``S9 compiled agrees with eager``.
        name: the implementation's name in the report (default ``module:qualname``).
        progress: called with each PropertyResult as it completes.
        fail_fast: stop after the first failing property (the others are not reported). For
            telling a broken port from a good one quickly; the default runs every property.
        shrink: shrink each failure to a minimal example (default). ``shrink=False`` reports the
            first failing example as drawn, which is much faster on a broken port.
        device: torch and JAX ports: the device the inputs are created on (``"cuda"``,
            ``"cuda:1"``, ``"cpu"``; None: the framework's default). ValueError when it is not
            available. The reference always runs in float64 NumPy on the CPU.
        advantages: the advantage shapes the port takes: ``"token"`` ((B, T), as verl and
            OpenRLHF pass them), ``"sequence"`` ((B,)) or ``"both"`` (default).
        timeout: seconds one property may run before the port is reported as hanging (the
            remaining properties are then not run); None waits forever.
        normalizer_eps: the port divides by count + normalizer_eps (verl's old masked_mean: 1e-8);
            the reference does the same (docs/conformance.md, "Conventions").
        dual_clip: ``"required"`` when the port cannot turn the dual clip off: the kit never passes
            ``clip_ratio_c=None``; ``"absent"`` when it has no dual clip: the kit always passes
            ``clip_ratio_c=None`` and S7 and the dual-clip bound report DECLARED. Default ``"optional"``.
        compute_dtype: ``"float32"`` when the port computes float64 inputs in float32: float64
            draws are compared at float32 tolerance and S9.5 float64 reports DECLARED.
        agg: the aggregation modes the port takes as ``loss_agg_mode=`` (a comma list of verl's
            names, a sequence, or ``"all"``); None: the objective's paper aggregation only (token-mean for
            CE-GPPO and CISPO, seq-mean-token-mean for SAPO and GSPO), no ``loss_agg_mode`` passed.
        global_normalizers: the port also takes ``num_tokens=`` and ``num_seqs=`` (spec S8.2).
        objective: what the port computes (docs/spec.md S14): ``"ce_gppo"`` (None, the default: an
            Adapter's own), ``"cispo"``, ``"cispo_cap"``, ``"sapo"`` or ``"gspo"``. A port of another
            member takes that member's keywords instead of CE-GPPO's (`OBJECTIVE_HYPERPARAMETERS`:
            ``eps_low, eps_high``; ``cap``; ``tau_pos, tau_neg``; ``eps_low, eps_high``); its clause
            of S14 replaces CE-GPPO's S3-S7, and no dual clip may be declared.

    Returns:
        A `Report`; ``report.ok`` is True when every property passed (skips allowed).
    """
    _check_run_args(max_examples, seed, shrink, timeout)
    if not isinstance(fail_fast, bool):
        raise TypeError(f"fail_fast must be a bool, got {type(fail_fast).__name__} {fail_fast!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable or None, got {type(progress).__name__}")
    if isinstance(port, Adapter) and objective not in (None, port.objective):
        raise ValueError(f"objective={objective!r}, but the adapter checks {port.objective!r}: the objective is "
                         "given to the adapter when an Adapter is passed (backend_adapter(..., objective=...))")
    conv = conventions(normalizer_eps=normalizer_eps, dual_clip=dual_clip, compute_dtype=compute_dtype, agg=agg,
                       global_normalizers=global_normalizers, objective=objective or CE_GPPO)
    if isinstance(port, Adapter) and not conv.is_spec:
        raise ValueError("conventions are declared on the adapter when an Adapter is passed "
                         "(port_adapter(..., conventions=cc.conventions(...)))")
    adapter = port if isinstance(port, Adapter) else port_adapter(
        port, framework, name=name, mask_dtype=mask_dtype, compile=compile, jit=jit, device=device,
        advantages=advantages, conventions=conv)
    props = select(only, properties_of(adapter))
    report = new_report(adapter, max_examples, seed)
    t0 = time.perf_counter()
    hung = ""
    done, notes = within(timeout, lambda: prepare(adapter), adapter)
    if done:
        report.notes += notes or []
    else:
        report.results.append(_probe_timed_out(adapter, timeout))
        hung = "the advantage-shape probe"
    for p in props:
        if hung:
            r = PropertyResult(p.id, p.clause, p.name, p.doc, "SKIP",
                               reason=f"not run: the implementation hung in {hung!r}")
        else:
            r = run_property(p, adapter, max_examples=max_examples, seed=seed, shrink=shrink, timeout=timeout)
            hung = p.id if r.timed_out else ""
        report.results.append(r)
        if progress is not None:
            progress(r)
        if fail_fast and r.status == "FAIL":
            report.stopped_early = True
            break
    report.seconds = time.perf_counter() - t0
    return report


def within(timeout: float | None, fn: Callable[[], T], adapter: Adapter, *,
           name: str = "cegppo-conformance probe") -> tuple[bool, T | None]:
    """Run fn() with `adapter`'s framework state: (True, its result), or (False, None) when it is still
    running after `timeout` seconds (None: no limit, fn runs in this thread).

    The one runner of every call into an implementation that may hang: with a limit, fn runs in a daemon
    thread that is abandoned, not killed, when it overruns (Python cannot stop a thread), so the caller
    reports the hang and runs nothing else on the adapter. An exception of fn is raised here.
    """
    box: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            with adapter.thread_context():
                box.append((True, fn()))
        except BaseException as exc:  # handed to the calling thread
            box.append((False, exc))

    if timeout is None:
        target()
    else:
        worker = threading.Thread(target=target, name=name, daemon=True)
        worker.start()
        worker.join(timeout)
    if not box:
        return False, None
    ok, value = box[0]
    if not ok:
        raise value
    return True, value


def _probe_timed_out(adapter: Adapter, timeout: float | None) -> PropertyResult:
    """The result reported when the first call of the implementation (the advantage-shape probe) never returns."""
    p = next(q for q in PROPERTIES if q.id == "S1 declared advantage shapes are accepted")
    res = PropertyResult(p.id, p.clause, p.name, p.doc, "FAIL", timed_out=True, defect_class="contract/harness",
                         diagnosis="the port hangs on its first call")
    res.message = (f"timed out: the first call of the implementation returned nothing after {timeout:g}s; "
                   "it hangs or is slower than the time limit (raise it with timeout= / --timeout)")
    if adapter.last_case is not None:
        res.reproducer = reproducer(adapter.last_case, adapter)
    return res


def new_report(adapter: Adapter, max_examples: int, seed: int | None) -> Report:
    """An empty `Report` for `adapter`, with its notes (float mask, device, declared advantages)."""
    report = Report(adapter.name, adapter.framework, adapter.kind, max_examples, seed, notes=list(adapter.notes),
                    device=adapter.device, advantages=adapter.advantages, declared=adapter.conventions.lines(),
                    objective=adapter.objective)
    if adapter.mask_dtype == "float":
        report.notes.append("mask passed as a 0/1 float tensor (mask_dtype='float')")
    report.notes += [f"declared: {line}" for line in report.declared]
    return report
