"""Chapter S1: the inputs (spec S1 Symbols): the advantage shapes a port takes, and inputs left unchanged.

S1 gives advantages as (B, T), or (B,) broadcast over the row's tokens. Ports written for verl or
OpenRLHF take (B, T) only; a port declares what it takes with ``advantages="token" | "sequence" |
"both"`` (default both), and the kit draws only those forms. `probe_advantage_forms` tries each
declared form once before the properties run, so that a port rejecting one of them gets one
line saying which and what to declare, instead of every property failing with its exception.

The inputs are the caller's tensors: a port that masks or normalizes them in place corrupts the
caller's batch (verl reuses it for the next micro-batch and for its metrics). The kit hands each
call copies and compares them afterwards (`Result.mutated`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cegppo import CEGPPOConfig
from hypothesis import strategies as st

from ._adapters import SHAPE_OF_FORM, Adapter, PortError
from ._cases import LAYOUTS, Case, Mismatch, compare_grad, compare_value, expected, round_to
from ._objectives import CE_GPPO, default_config
from ._prop_objective import common_dtypes
from ._registry import prop
from ._strategies import draw_case

__all__ = ["InputsModified", "advantage_form_message", "probe_advantage_forms"]

# Non-zero values (NaN too) at masked positions, so that zeroing padding in place is seen.
_PADDING = (float("nan"), float("inf"), -3.5, 7.25, -1e30)


class InputsModified(Mismatch):
    """The implementation changed one of its inputs in place."""


def advantage_form_message(declared: tuple[str, ...], rejected: tuple[str, ...]) -> str:
    """One line: which declared advantage form the port rejected and what it should declare instead."""
    if set(rejected) == set(declared) and len(declared) == 2:
        return "rejects advantages of both shapes, (B, T) and (B,): the standard port takes at least one"
    form = rejected[0]
    if len(declared) == 1:
        other = "sequence" if form == "token" else "token"
        return (f"rejects {SHAPE_OF_FORM[form]} advantages, the only form it declares (advantages={form!r}); "
                f"if it takes {SHAPE_OF_FORM[other]} ones, declare advantages={other!r} (--advantages {other})")
    other = "sequence" if form == "token" else "token"
    return (f"rejects {SHAPE_OF_FORM[form]} advantages; if it takes {SHAPE_OF_FORM[other]} advantages only, "
            f"declare advantages={other!r} (--advantages {other})")


def _probe_cases(ad: Adapter) -> list[Case]:
    """Small all-valid batches with one advantage per row: (2, 3), square (3, 3) and (1, 1).

    A port that cannot take a form rejects it at every shape; one that raises only where B != T
    (broadcasting (B,) along the wrong axis) has a bug, which the properties must see, not a
    capability to declare. The square batch tells the two apart.
    """
    dtype = "float32" if "float32" in ad.dtypes else ad.dtypes[0]
    rng = np.random.default_rng(0)
    cases = []
    for b, t in ((2, 3), (3, 3), (1, 1)):
        lp = round_to(-rng.uniform(0.1, 2.0, size=(b, t)), dtype)
        olp = round_to(lp + rng.uniform(-0.3, 0.3, size=(b, t)), dtype)
        adv = round_to(rng.choice([-1.0, 0.5, 1.0], size=b), dtype)
        cfg = probe_config(ad)
        cases.append(Case(lp, olp, adv, np.ones((b, t), dtype=bool), cfg, dtype, agg=ad.aggs[0]))
    return cases


def probe_config(ad: Adapter) -> Any:
    """The config of the probe calls: the defaults of the adapter's objective (spec S14); a CE-GPPO port
    without an off switch for the dual clip (dual_clip='required') is probed with it on."""
    if ad.objective != CE_GPPO:
        return default_config(ad.objective)
    return CEGPPOConfig(dual_clip=3.0 if ad.conventions.dual_clip == "required" else None)


def _by_form(case: Case) -> dict[str, Case]:
    return {"sequence": case, "token": case.with_(advantages=case.adv_2d())}


def probe_advantage_forms(ad: Adapter) -> dict[str, PortError]:
    """The declared advantage forms the implementation rejects at every probe shape, with its first error.

    A form rejected at some shapes only is not reported here (the properties find that bug).
    """
    rejected: dict[str, PortError] = {}
    for form in ad.declared_forms:
        errors = []
        for case in _probe_cases(ad):
            try:
                ad.run(_by_form(case)[form])
            except PortError as exc:
                errors.append(exc)
            else:
                break
        else:
            rejected[form] = errors[0]
    return rejected


@prop("S1", "declared advantage shapes are accepted", "inputs", max_examples=2)
def declared_advantage_shapes(ad: Adapter, data: Any) -> None:
    """The port takes every advantage shape it declares: (B, T) per token and/or (B,) per sequence (advantages=)."""
    case = draw_case(data, dtypes=common_dtypes(ad), aggs=ad.aggs, adv_forms=("sequence",))
    cases = _by_form(case)
    rejected: dict[str, PortError] = {}
    for form in ad.declared_forms:
        try:
            ad.run(cases[form])
        except PortError as exc:
            rejected[form] = exc
    if rejected:
        form = next(iter(rejected))
        err = rejected[form]
        if form in probe_advantage_forms(ad):  # rejected at every shape: a capability to declare
            what = advantage_form_message(ad.declared_forms, tuple(rejected))
        else:  # taken at other shapes: a bug (e.g. (B,) broadcast along T), not a declaration
            what = (f"raised on {SHAPE_OF_FORM[form]} advantages at (B, T) = {case.shape}, a form it takes "
                    "at other shapes")
        raise Mismatch(what, cases[form], f"a loss for {SHAPE_OF_FORM[form]} advantages", err.got) from err.__cause__


# A port that writes to its inputs does so on every call: a few examples find it.
@prop("S1", "inputs are not modified", "inputs", max_examples=6,
      skip=lambda ad: "JAX arrays are immutable" if ad.framework == "jax" else None)
def inputs_not_modified(ad: Adapter, data: Any) -> None:
    """The call leaves log_prob, old_log_prob, advantages and response_mask as it got them (no in-place masking)."""
    case = draw_case(data, dtypes=common_dtypes(ad), aggs=ad.aggs, global_normalizers=ad.global_normalizers,
                     adv_forms=ad.forms)
    mask = case.mask
    if mask.all():  # at least one padded position, where in-place masking would write
        mask = mask.copy()
        mask[-1, -1] = False
    holes = ~mask
    changes: dict[str, np.ndarray] = {"mask": mask}
    for name in ("log_prob", "old_log_prob", "advantages"):
        arr = getattr(case, name)
        if arr.shape != case.shape:
            continue
        vals = data.draw(st.lists(st.sampled_from(_PADDING), min_size=int(holes.sum()), max_size=int(holes.sum())),
                         label=f"values of {name} at masked positions")
        new = arr.copy()
        new[holes] = round_to(np.array(vals, dtype=np.float64), case.dtype)
        changes[name] = new
    case = case.with_(**changes)
    got = ad.run(case)
    if got.mutated:
        raise InputsModified(f"the call modified {', '.join(got.mutated)} in place", case,
                             "every input unchanged after the call", f"{', '.join(got.mutated)} changed")


# Layouts are a property of the torch adapter: NumPy ports get copies, JAX arrays have no user-visible strides.
# An eighth of the examples: a layout slip shows on the first view of any batch.
@prop("S1", "inputs as views (sliced, transposed)", "inputs", share=0.125,
      skip=lambda ad: None if ad.framework == "torch" else f"{ad.framework} inputs have no strided views to hand")
def inputs_as_views(ad: Adapter, data: Any) -> None:
    """Inputs handed as a slice of a wider buffer, a transposed one or (B,) advantages expanded to (B, T) (as frameworks hand them) give the loss and gradient of contiguous ones."""
    layouts = LAYOUTS[1:] if "token" in ad.forms else tuple(x for x in LAYOUTS[1:] if x != "expanded")
    layout = data.draw(st.sampled_from(layouts), label="memory layout")
    forms = ("sequence",) if layout == "expanded" else ad.forms
    case = draw_case(data, dtypes=common_dtypes(ad), aggs=ad.aggs, global_normalizers=ad.global_normalizers,
                     adv_forms=forms)
    if layout == "expanded":  # one advantage per row, handed per token as a stride-0 view
        case = case.with_(advantages=case.adv_2d())
    # compared with the port's own contiguous result, so that only the layout is under test
    flat = ad.run(case)
    case = case.with_(layout=layout)
    got = ad.run(case)
    scale = expected(case).scale
    compare_value(f"loss of {case.layout} views vs contiguous inputs", case, got.value, flat.value, scale)
    if ad.has_grad:
        compare_grad(f"d loss / d log_prob of {case.layout} views vs contiguous inputs", case, got.grad_or_fail(case),
                     flat.grad_or_fail(case))
