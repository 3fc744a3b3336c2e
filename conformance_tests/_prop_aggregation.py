"""Chapter S8: aggregation (spec S8.1 modes, S8.3 micro-batch additivity, S8.4 empty batch).

For a port with local normalizers additivity reads: splitting the rows into micro-batches whose
mode divides by D_k (n_k valid tokens for token-mean, S_k non-empty rows for the seq-mean modes,
1 for token-sum; + the declared epsilon) and D the full batch's,

    loss(full) = sum_k (D_k / D) loss(micro-batch k),   grad(full) rows = (D_k / D) grad(micro-batch k)

Backends, and ports declaring global normalizers, get (num_tokens, num_seqs) of the full batch
instead, in every mode: loss(full) = sum_k loss(micro-batch k).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from cegppo._aggregation_modes import AGG_TABLE
from hypothesis import strategies as st

from ._adapters import Adapter
from ._cases import Case, Mismatch, compare_grad, compare_value, expected
from ._objectives import rows_coupled
from ._prop_objective import common_dtypes
from ._registry import prop
from ._strategies import draw_case

__all__: list[str] = []


@prop("S8.1", "token permutation invariance", "aggregation")
def permutation_invariance(ad: Adapter, data: Any) -> None:
    """Permuting tokens (across the batch for token modes, within rows for seq modes and GSPO) permutes the gradient and keeps the loss."""
    case = draw_case(data, dtypes=common_dtypes(ad), aggs=ad.aggs, global_normalizers=ad.global_normalizers,
                     adv_forms=ad.forms)
    b, t = case.shape
    if "token" not in ad.forms:  # one advantage per row: permute the rows, then the tokens within each row
        return _permute_rows_then_tokens(ad, data, case)
    case = case.with_(advantages=case.adv_2d())
    if case.agg.startswith("token") and not rows_coupled(case.cfg):  # GSPO's s_i: a token keeps its row
        perm = np.array(data.draw(st.permutations(range(b * t)), label="token permutation"))
        idx = np.unravel_index(perm, (b, t))

        def apply(x: np.ndarray) -> np.ndarray:
            return x[idx].reshape(b, t)
    else:
        perms = [np.array(data.draw(st.permutations(range(t)), label=f"row {i} permutation")) for i in range(b)]

        def apply(x: np.ndarray) -> np.ndarray:
            return np.stack([x[i, p] for i, p in enumerate(perms)])

    moved = case.with_(log_prob=apply(case.log_prob), old_log_prob=apply(case.old_log_prob),
                       advantages=apply(case.advantages), mask=apply(case.mask))
    r0, r1 = ad.run(case), ad.run(moved)
    scale = expected(case).scale
    compare_value("loss of the permuted batch vs the original", moved, r1.value, r0.value, scale)
    if ad.has_grad:
        compare_grad("gradient of the permuted batch vs the permuted gradient", moved, r1.grad_or_fail(moved), apply(r0.grad_or_fail(moved)))


def _permute_rows_then_tokens(ad: Adapter, data: Any, case: Case) -> None:
    """S8.1 for a port that takes (B,) advantages only: rows and tokens within rows are permuted."""
    b, t = case.shape
    rows = np.array(data.draw(st.permutations(range(b)), label="row permutation"))
    perms = [np.array(data.draw(st.permutations(range(t)), label=f"row {i} permutation")) for i in range(b)]

    def apply(x: np.ndarray) -> np.ndarray:
        return np.stack([x[rows[i], p] for i, p in enumerate(perms)])

    moved = case.with_(log_prob=apply(case.log_prob), old_log_prob=apply(case.old_log_prob),
                       advantages=case.advantages[rows], mask=apply(case.mask))
    r0, r1 = ad.run(case), ad.run(moved)
    compare_value("loss of the permuted batch vs the original", moved, r1.value, r0.value, expected(case).scale)
    if ad.has_grad:
        compare_grad("gradient of the permuted batch vs the permuted gradient", moved, r1.grad_or_fail(moved), apply(r0.grad_or_fail(moved)))


@prop("S8.3", "micro-batch additivity", "aggregation")
def micro_batch_additivity(ad: Adapter, data: Any) -> None:
    """Splitting the rows into micro-batches and combining them (global normalizers / token-count weights) gives the full batch."""
    case = draw_case(data, dtypes=common_dtypes(ad), aggs=ad.aggs, max_b=6, adv_forms=ad.forms)
    b, _ = case.shape
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(b - 1, 1)), max_size=3), label="micro-batch cuts")))
    edges = [0, *[c for c in cuts if 0 < c < b], b]
    n_total = int(case.mask.sum())
    s_total = int(case.mask.any(-1).sum())
    full = ad.run(case)
    total, grads, parts = 0.0, [], []
    for lo, hi in itertools.pairwise(edges):
        part = case.with_(log_prob=case.log_prob[lo:hi], old_log_prob=case.old_log_prob[lo:hi],
                          advantages=case.advantages[lo:hi], mask=case.mask[lo:hi])
        n_k = int(part.mask.sum())
        if ad.global_normalizers:
            part = part.with_(num_tokens=float(n_total), num_seqs=float(s_total))
            weight = 1.0
        else:
            weight = local_divisor(part) / local_divisor(case)
        r = ad.run(part)
        if not np.isfinite(r.value):
            raise Mismatch("micro-batch loss finite", part, "a finite loss", r.value,
                           "a micro-batch with no valid token must give 0 (S8.4)" if n_k == 0 else "")
        total += weight * r.value
        parts.append(part)
        if ad.has_grad:
            grads.append(weight * r.grad_or_fail(case))
    scale = expected(case).scale
    compare_value(f"sum of {len(parts)} micro-batch losses (rows split at {edges[1:-1]}) vs the full batch",
                  case, total, full.value, scale)
    if ad.has_grad:
        compare_grad("micro-batch gradients vs the full batch", case, np.concatenate(grads, axis=0), full.grad_or_fail(case))


def local_divisor(case: Case) -> float:
    """The count the case's mode divides by with local normalizers (spec S8.1, S8.2), + the declared
    epsilon; 1 for token-sum. A count of 0 (no valid token) is divided by as 1, as the reference does."""
    mode = AGG_TABLE[case.agg]
    if mode.normalizer is None:
        return 1.0
    count = float(case.mask.sum() if mode.normalizer == "num_tokens" else case.mask.any(-1).sum())
    eps = case.conventions.normalizer_eps
    return count + eps if eps else max(count, 1.0)


@prop("S8.4", "all-masked batch gives zero loss and zero gradient", "aggregation")
def empty_batch(ad: Adapter, data: Any) -> None:
    """With no valid token the loss is exactly 0 and the gradient exactly 0 (not NaN)."""
    case = draw_case(data, dtypes=ad.dtypes, aggs=ad.aggs, global_normalizers=ad.global_normalizers,
                     adv_forms=ad.forms)
    case = case.with_(mask=np.zeros(case.shape, dtype=bool))
    if case.num_tokens is not None:
        case = case.with_(num_tokens=0.0, num_seqs=0.0)
    got = ad.run(case)
    if got.value != 0.0:
        raise Mismatch("loss of an all-masked batch", case, 0.0, got.value)
    if got.grad is not None and not np.all(got.grad == 0):
        raise Mismatch("gradient of an all-masked batch", case, np.zeros(case.shape), got.grad)



def _padded(case: Case, rows: int, cols: int, at: int) -> Case:
    """`case` with `rows` empty rows inserted before row `at` and `cols` masked columns appended (padding -1.0)."""
    b, t = case.shape

    def grow(x: np.ndarray, fill: float) -> np.ndarray:
        x = np.hstack([x, np.full((b, cols), fill)]) if x.ndim == 2 else x
        extra = np.full((rows, *x.shape[1:]), fill)
        return np.concatenate([x[:at], extra, x[at:]], axis=0)

    mask = np.hstack([case.mask, np.zeros((b, cols), dtype=bool)])
    mask = np.concatenate([mask[:at], np.zeros((rows, t + cols), dtype=bool), mask[at:]], axis=0)
    return case.with_(log_prob=grow(case.log_prob, -1.0), old_log_prob=grow(case.old_log_prob, -1.0),
                      advantages=grow(case.advantages, 0.0), mask=mask)


# An eighth of the examples: every example inserts empty rows and padded columns, in every declared mode.
@prop("S8.2", "empty rows and padded columns", "aggregation", share=0.125)
def empty_rows_and_padding(ad: Adapter, data: Any) -> None:
    """In every declared mode, empty rows count for nothing (not in S, no 0/0) and padded columns only enter as L = T."""
    case = draw_case(data, dtypes=common_dtypes(ad), aggs=ad.aggs, max_b=4, adv_forms=ad.forms)
    rows = data.draw(st.integers(1, 2), label="empty rows inserted")
    cols = data.draw(st.integers(1, 3), label="masked columns appended")
    at = data.draw(st.integers(0, case.shape[0]), label="where the empty rows go")
    # A port declaring several modes is checked in each on the same batch: a defect of one mode (a
    # length normalizer read off the batch) must not wait for the draw of that mode. Backends are
    # checked in every mode by their own suites, and each mode is a compilation under jit.
    modes = ad.aggs if ad.conventions.agg_declared else (case.agg,)
    for mode in modes:
        big = _padded(case.with_(agg=mode), rows, cols, at)
        got = ad.run(big)
        want = expected(big)  # the reference of the padded batch: equal to the original's but for L = T (S8.2)
        what = f"{rows} empty row(s) at row {at} and {cols} masked column(s), {mode}"
        if not np.isfinite(got.value):
            raise Mismatch(f"loss finite with {what}", big, want.value, got.value,
                           "an empty row must weigh 0, not 0 / 0")
        compare_value(f"loss with {what}", big, got.value, want.value, want.scale)
        if ad.has_grad:
            compare_grad(f"gradient with {what}", big, got.grad_or_fail(big), want.grad)
