"""`pytest_suite`: the conformance properties as individual pytest tests in a user's test module.

    import cegppo.conformance as cc
    from my_pkg.losses import my_loss
    test_my_loss = cc.pytest_suite(my_loss, framework="torch", advantages="token")

pytest collects ``test_my_loss`` as one test per property, the property id in the test id
(``test_my_loss[S5 gradient bound clip_high]``), so ``-k clip_high``, ``--junitxml`` and CI
dashboards see each property; a failure's message is the kit's report of that property, with
its reproducer. Importing this module imports neither pytest nor a framework.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._adapters import Adapter, port_adapter
from ._check import DEFAULT_TIMEOUT, _check_run_args, prepare, run_property, select, within
from ._conventions import conventions
from ._registry import Property, properties_of
from ._report import Report

__all__ = ["pytest_suite"]

_NOT_FOR_PYTEST = ("progress", "fail_fast")
CONVENTION_OPTIONS = ("normalizer_eps", "dual_clip", "compute_dtype", "agg", "global_normalizers", "objective")
"""The options of `pytest_suite` that build the port's `Conventions` (the objective travels with them)."""


class _Suite:
    """The state shared by the tests of one `pytest_suite`: the adapter, its probe, and a hang if any."""

    def __init__(self, adapter: Adapter, options: dict[str, Any]) -> None:
        self.adapter = adapter
        self.max_examples: int = options.get("max_examples", 100)
        self.seed: int | None = options.get("seed")
        self.shrink: bool = options.get("shrink", True)
        self.timeout: float | None = options.get("timeout", DEFAULT_TIMEOUT)
        self.notes: list[str] | None = None  # None until the probe ran
        self.hung = ""

    def run(self, p: Property) -> None:
        import pytest

        if self.hung:
            pytest.skip(f"not run: the implementation hung in {self.hung!r}")
        if self.notes is None:
            done, notes = within(self.timeout, lambda: prepare(self.adapter), self.adapter)
            if not done:
                self.hung = "the advantage-shape probe"
                pytest.fail(f"{p.id}: the first call of the implementation returned nothing after "
                            f"{self.timeout:g}s (it hangs, or raise timeout=)", pytrace=False)
            self.notes = notes or []
        r = run_property(p, self.adapter, max_examples=self.max_examples, seed=self.seed, shrink=self.shrink,
                         timeout=self.timeout)
        if r.timed_out:
            self.hung = p.id
        if r.status in ("SKIP", "DECLARED"):
            pytest.skip(f"{p.id}: {r.reason}")
        if r.status == "FAIL":
            ad = self.adapter
            report = Report(ad.name, ad.framework, ad.kind, self.max_examples, self.seed, [r], list(self.notes),
                            device=ad.device, advantages=ad.advantages, objective=ad.objective)
            pytest.fail(report.format(), pytrace=False)


def pytest_suite(port: Callable[..., Any] | Adapter, framework: str = "torch", **options: Any) -> Callable[..., None]:
    """A pytest test function, parametrized over the conformance properties, checking `port`.

    Assign it to a name starting with ``test`` in a test module; pytest collects one test per
    property (``only=`` restricts them). `options` are those of `check` (``max_examples``,
    ``seed``, ``only``, ``mask_dtype``, ``compile``, ``jit``, ``name``, ``shrink``, ``device``,
    ``advantages``, ``timeout``, the declarations ``normalizer_eps``, ``dual_clip``,
    ``compute_dtype``, ``agg``, ``global_normalizers``, and ``objective``: ``"cispo"``, ``"cispo_cap"``,
    ``"sapo"`` or ``"gspo"`` for a port of that member, spec S14), checked here, so that a bad option fails at collection;
    ``progress`` and ``fail_fast`` do not apply (pytest reports progress, ``-x`` stops early).
    The adapter (and the framework import) is built at collection too: a device that is not
    available is a collection error naming it.
    """
    import pytest

    given = sorted(k for k in options if k in _NOT_FOR_PYTEST)
    if given:
        raise TypeError(f"pytest_suite does not take {given}: pytest shows progress itself, and -x stops early")
    allowed = {"max_examples", "seed", "only", "mask_dtype", "compile", "jit", "name", "shrink", "device",
               "advantages", "timeout", *CONVENTION_OPTIONS}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"pytest_suite got unknown options {unknown}; it takes {sorted(allowed)}")
    _check_run_args(options.get("max_examples", 100), options.get("seed"), options.get("shrink", True),
                    options.get("timeout", DEFAULT_TIMEOUT))
    conv = conventions(**{k: options[k] for k in CONVENTION_OPTIONS if k in options})
    if isinstance(port, Adapter):
        if conv.objective != port.objective and "objective" in options:
            raise ValueError(f"objective={conv.objective!r}, but the adapter checks {port.objective!r}")
        if not conv.is_spec:
            raise ValueError("conventions are declared on the adapter when an Adapter is passed")
        adapter = port
    else:
        adapter = port_adapter(port, framework, name=options.get("name"), mask_dtype=options.get("mask_dtype", "bool"),
                               compile=options.get("compile", False), jit=options.get("jit", False),
                               device=options.get("device"), advantages=options.get("advantages", "both"),
                               conventions=conv)
    props = select(options.get("only"), properties_of(adapter))
    suite = _Suite(adapter, options)

    @pytest.mark.parametrize("cegppo_property", props, ids=[p.id for p in props])
    def test_conformance(cegppo_property: Property) -> None:
        suite.run(cegppo_property)

    test_conformance.__doc__ = f"cegppo conformance of {adapter.name}: one test per property."
    return test_conformance
