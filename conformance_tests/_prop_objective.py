"""Chapter S2-S4: the objective's value and its gradient equal the reference (spec S2 Regions, S3, S4).

Inputs reach every region (both sides of every boundary, far beyond, A = 0, asymmetric eps, beta
in [0, 2], dual clip on and off) in float64 and float32; compared log-ratios stay MARGIN away from
the clip boundaries, where the objective jumps and rounding may legitimately go either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from ._adapters import Adapter
from ._cases import Case, Mismatch, compare_grad, compare_value, expected
from ._registry import CE_GPPO_ONLY, prop
from ._strategies import draw_case

__all__: list[str] = []


def common_dtypes(ad: Adapter, wanted: tuple[str, ...] = ("float64", "float32")) -> tuple[str, ...]:
    """The dtypes of `wanted` that the adapter can feed."""
    return tuple(d for d in wanted if d in ad.dtypes)


def in_declared_mode(ad: Adapter, data: Any, case: Case) -> Case:
    """`case` in an aggregation mode the adapter takes: strategies that draw no mode give token-mean,
    which a port declaring other modes (agg=) may not take; with several modes one is drawn."""
    if case.agg in ad.aggs and len(ad.aggs) == 1:
        return case
    return case.with_(agg=data.draw(st.sampled_from(list(ad.aggs)), label="agg"))


def draw_general(ad: Adapter, data: Any, **kw: Any):
    """A general case for `ad`: its aggregation modes, global normalizers for backends."""
    return draw_case(data, dtypes=common_dtypes(ad), aggs=ad.aggs, global_normalizers=ad.global_normalizers,
                     adv_forms=ad.forms, **kw)


@prop("S3", "value equals the reference", "objective", objectives=CE_GPPO_ONLY)
def value_equals_reference(ad: Adapter, data: Any) -> None:
    """The loss equals the NumPy reference within VALUE_TOL of the dtype, in every region."""
    case = draw_general(ad, data)
    got = ad.run(case)
    want = expected(case)
    compare_value("loss", case, got.value, want.value, want.scale)


@prop("S4", "gradient equals the reference", "objective", needs_grad=True, objectives=CE_GPPO_ONLY)
def gradient_equals_reference(ad: Adapter, data: Any) -> None:
    """d loss / d log_prob equals the reference's analytic -c_t F_t A_t within GRAD_TOL, in every region."""
    case = draw_general(ad, data)
    got = ad.run(case)
    want = expected(case)
    compare_grad("d loss / d log_prob", case, got.grad_or_fail(case), want.grad)


@prop("S4", "old_log_prob and advantages are constants", "objective", needs_grad=True,
      skip=lambda ad: ad.constants_skip, objectives=CE_GPPO_ONLY)
def constants_have_no_gradient(ad: Adapter, data: Any) -> None:
    """Passed as differentiable inputs (torch requires_grad, jax traced), old_log_prob and advantages get no or a zero gradient."""
    case = draw_general(ad, data)
    for name, got in ad.constant_grads(case).items():
        if got is None:  # no gradient path at all (torch: detached)
            continue
        want = np.zeros(np.shape(getattr(case, name)))
        if np.shape(got) != want.shape or not np.all(got == 0):  # NaN counts as a gradient
            raise Mismatch(f"d loss / d {name}", case, want, np.asarray(got),
                           f"{name} is a constant of the loss (spec S4): detach it (torch) or wrap it in "
                           "jax.lax.stop_gradient (jax) so that no gradient flows into it when the caller "
                           "passes a requires_grad / traced value")
