"""cegppo.conformance: the CE-GPPO conformance suite and the kit for third-party ports (docs/conformance.md).

Named Hypothesis properties, each tied to a clause of docs/spec.md, written once against an
adapter, so the same property checks the NumPy reference, `cegppo.torch`, `cegppo.jax` (in the
project's tests) and any port (with `check` or the ``cegppo-conformance`` CLI):

    import cegppo.conformance as cc
    report = cc.check(my_loss, framework="torch", max_examples=100, seed=0)
    print(report)            # PASS/FAIL per property; minimal reproducer for each failure
    assert report.ok

    test_my_loss = cc.pytest_suite(my_loss, framework="torch")   # in a test module: one test per property

A port has the signature ``port(log_prob, old_log_prob, advantages, response_mask, *, eps_low,
eps_high, beta_low, beta_high, clip_ratio_c)`` and returns the token-mean loss as a scalar of its
framework (clip_ratio_c=None: no dual clip). A port of another member of the family (docs/spec.md
S14) is checked with ``objective="cispo" | "cispo_cap" | "sapo" | "gspo"`` and takes that member's
keywords (`OBJECTIVE_HYPERPARAMETERS`), returning its paper aggregation unless it declares ``agg=``. A port written in a framework's conventions declares
them (``normalizer_eps=``, ``dual_clip="required"``, ``compute_dtype="float32"``, ``agg=``; see
`conventions`), and every failure comes with a diagnosis and a defect class (`Report.verdict`).
Importing this package imports no framework; an adapter imports torch or jax when it is built.
"""

from __future__ import annotations

from cegppo._extras import require

require(__name__, "conformance", ["hypothesis"])  # first: a missing one is named with its extra

from . import (  # registers
    _prop_aggregation,
    _prop_bounds,
    _prop_family,
    _prop_fused,
    _prop_inputs,
    _prop_numerics,
    _prop_objective,
    _prop_scale,
    _prop_special,
)
from ._adapters import ADVANTAGE_FORMS, Adapter, Result, backend_adapter, port_adapter
from ._cases import DTYPES, GRAD_TOL, MARGIN, VALUE_TOL, Case, Expected, Mismatch, expected
from ._check import DEFAULT_TIMEOUT, check, run_property, select
from ._conventions import SPEC, Conventions, conventions, spec_conventions
from ._frameworks import port_from_openrlhf, port_from_skyrl, port_from_tunix, port_from_verl_loss
from ._fused import (
    FusedAdapter,
    HeadCase,
    HeadExpected,
    HeadResult,
    draw_head_case,
    fused_adapter,
    head_expected,
)
from ._objectives import FAMILY_OBJECTIVES, OBJECTIVES
from ._port import OBJECTIVE_HYPERPARAMETERS
from ._pytest import pytest_suite
from ._registry import FUSED_PROPERTIES, MEMBER_PROPERTIES, PROPERTIES, Property, objective_properties
from ._report import PropertyResult, Report, reproducer
from ._strategies import (
    BLOCK_B,
    BLOCK_T,
    LARGE_SHAPES,
    REGIONS,
    draw_case,
    draw_config,
    draw_mask,
    draw_member_config,
    draw_region_case,
    draw_scale_case,
    scale_case,
)
from ._targets import load_port

del _prop_aggregation, _prop_bounds, _prop_family, _prop_fused, _prop_inputs, _prop_numerics, _prop_objective, _prop_scale
del _prop_special

# Spec order (S9 without a sub-clause last in its chapter); sort is stable.
for _listed in (PROPERTIES, MEMBER_PROPERTIES):
    _listed.sort(key=lambda p: [int(x) for x in (p.clause[1:] + (".99" if "." not in p.clause else "")).split(".")])
del _listed

__all__ = [
    "ADVANTAGE_FORMS",
    "BLOCK_B",
    "BLOCK_T",
    "DEFAULT_TIMEOUT",
    "DTYPES",
    "FAMILY_OBJECTIVES",
    "FUSED_PROPERTIES",
    "GRAD_TOL",
    "LARGE_SHAPES",
    "MARGIN",
    "MEMBER_PROPERTIES",
    "OBJECTIVES",
    "OBJECTIVE_HYPERPARAMETERS",
    "PROPERTIES",
    "REGIONS",
    "SPEC",
    "VALUE_TOL",
    "Adapter",
    "Case",
    "Conventions",
    "Expected",
    "FusedAdapter",
    "HeadCase",
    "HeadExpected",
    "HeadResult",
    "Mismatch",
    "Property",
    "PropertyResult",
    "Report",
    "Result",
    "backend_adapter",
    "check",
    "conventions",
    "draw_case",
    "draw_config",
    "draw_head_case",
    "draw_mask",
    "draw_member_config",
    "draw_region_case",
    "draw_scale_case",
    "expected",
    "fused_adapter",
    "head_expected",
    "load_port",
    "objective_properties",
    "port_adapter",
    "port_from_openrlhf",
    "port_from_skyrl",
    "port_from_tunix",
    "port_from_verl_loss",
    "pytest_suite",
    "reproducer",
    "run_property",
    "scale_case",
    "select",
    "spec_conventions",
]
