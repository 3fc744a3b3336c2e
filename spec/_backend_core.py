"""The framework-free half of the torch and JAX backends, written once over a table of array primitives.

This is not the reference. The NumPy reference (the rest of `cegppo`, the oracle every backend is
checked against) never imports this module, so a slip here shows up as a disagreement with it
instead of being copied into it. Only `cegppo.torch` and `cegppo.jax` import it.

What is shared is the algorithm: which arguments are checked in which order, how inputs become the
compute dtype, how a normalizer becomes a divisor, how the aggregation weights and the aggregated
loss are formed (docs/spec.md clauses S8, S9). What stays in each backend is what differs by
framework: the primitives of `ArrayOps` (how a count is summed, how a number becomes a 0-d array on
the right device, what "a constant of the loss" means: `detach` or `lax.stop_gradient`, what
reading a value back to the host costs), and the autograd, jit and device-sync choices around them.

Why a private module of the core package rather than a package folder of its own: the core
installs with NumPy alone and the backends already read their shared rules from it
(`_validation`, `_aggregation_modes`, `_metrics`); this module imports neither framework (nor
NumPy), so `import cegppo.torch` still imports no JAX and `import cegppo.jax` no torch. A mapped
folder of its own would be treated as one more optional framework subpackage, which it is not.

Written in the style of einops' backends: one abstract primitive table, one subclass per framework
(`cegppo.torch._ops`, `cegppo.jax._ops`), and functions that take the table as their first argument.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ._aggregation_modes import AGG_TABLE, agg_length, read_normalizers
from ._config import CEGPPOConfig, check_config
from ._validation import check_normalizer_value, check_policy_shapes, require_finite

__all__ = [
    "ArrayOps",
    "aggregate",
    "aggregation_weights",
    "array_inputs",
    "local_count",
    "local_counts",
    "policy_inputs",
    "validate_loss",
    "validate_normalizers",
    "zero_masked",
]

Array = Any
"""A backend's array: a torch.Tensor, or a jax.Array or tracer."""


class ArrayOps(ABC):
    """The primitives of one framework that the shared algorithm is written over.

    Each method is the framework's own spelling of one operation; the shared functions of this
    module never touch a framework directly. Counts are returned in the dtype asked for, because how
    a backend sums a mask (in integers then cast, or in the float dtype) is part of its arithmetic.
    """

    index_dtype: Any
    """The integer dtype of a count read back to the host."""

    # ------------------------------------------------------------------ inputs (metadata only)

    @abstractmethod
    def as_bool_mask(self, mask: Any) -> Array:
        """A bool mask from a bool or integer 0/1 one (float masks refused by name)."""

    @abstractmethod
    def compute_dtype(self, *named: tuple[str, Any]) -> Any:
        """The promotion of the floating inputs, at least float32 (spec S9.5)."""

    @abstractmethod
    def as_float(self, name: str, x: Any, dtype: Any, *, floating_only: bool = True) -> Array:
        """`x` in `dtype`; floating-point only unless `floating_only` is False."""

    @abstractmethod
    def constant(self, x: Array) -> Array:
        """`x` with no gradient flowing into it (spec S4: old_log_prob and advantages)."""

    @abstractmethod
    def per_sequence_to_tokens(self, x: Array, shape: tuple[int, ...]) -> Array:
        """A (B,) per-sequence array broadcast over the tokens of its row, to (B, T)."""

    # ------------------------------------------------------------------ arithmetic (on the device)

    @abstractmethod
    def scalar(self, value: float, like: Array) -> Array:
        """A 0-d array holding `value` in `like`'s dtype (and on its device)."""

    @abstractmethod
    def all_false(self, like: Array) -> Array:
        """A bool array of `like`'s shape (and device), every element False: a region no token is in."""

    @abstractmethod
    def where(self, cond: Array, a: Array, b: Array) -> Array:
        """Elementwise select; its backward routes nothing to the branch not taken."""

    @abstractmethod
    def cast(self, x: Array, dtype: Any) -> Array:
        """`x` in `dtype`."""

    @abstractmethod
    def total(self, x: Array, dtype: Any = None) -> Array:
        """The sum of every element, 0-d; a mask's count in `dtype` when given."""

    @abstractmethod
    def row_total(self, x: Array, dtype: Any = None, *, keepdims: bool = False) -> Array:
        """The sum over the last axis, (B,) or (B, 1) with `keepdims`; in `dtype` when given."""

    @abstractmethod
    def any_per_row(self, m: Array) -> Array:
        """Whether each row of a (B, T) mask holds a valid token, (B,)."""

    @abstractmethod
    def normalizer(self, value: Any, like: Array) -> Array:
        """A caller's normalizer (a number or a 0-d array, already checked) as a 0-d array of `like`'s dtype."""

    @abstractmethod
    def scale(self, x: Array, factor: float) -> Array:
        """`x` times a Python float, in `x`'s dtype."""

    @abstractmethod
    def exp(self, x: Array) -> Array:
        """Elementwise e**x."""

    @abstractmethod
    def expm1(self, x: Array) -> Array:
        """Elementwise e**x - 1, without the cancellation of exp(x) - 1 near x = 0."""

    @abstractmethod
    def abs(self, x: Array) -> Array:
        """Elementwise |x|."""

    @abstractmethod
    def clip(self, x: Array, lower: float, upper: float) -> Array:
        """`x` clipped to [lower, upper], the bounds rounded to `x`'s dtype; NaN stays NaN."""

    @abstractmethod
    def ratio_over_sg_ratio(self, logr: Array) -> Array:
        """delta / sg(delta) = exp(logr - sg(logr)): value exactly 1, derivative 1, also at logr = +-inf.

        The gradient-preserving factor (arXiv 2509.20712 Eq. 8; spec S3, S9.1). A custom derivative in
        each framework, because the subtraction would give inf - inf = NaN at an infinite log-ratio.
        """

    # ------------------------------------------------------------------ validate=True (reads the data)

    def require_concrete(self, *named: tuple[str, Any]) -> None:  # noqa: B027 (a no-op unless traced)
        """Raise ValueError when a named array cannot be read (a traced value); eager frameworks pass."""

    @abstractmethod
    def all_finite(self, x: Array, m: Array) -> bool:
        """Whether `x` is finite at every valid position of `m` (reads the data: a host sync)."""

    @abstractmethod
    def read_float(self, value: Any) -> float:
        """A normalizer's value on the host (a host sync for a device array)."""

    @abstractmethod
    def read_int(self, x: Array) -> int:
        """A 0-d integer count on the host (a host sync for a device array)."""


# ---------------------------------------------------------------------- inputs


def policy_inputs(
    ops: ArrayOps,
    log_prob: Any,
    old_log_prob: Any,
    advantages: Any,
    cfg: CEGPPOConfig,
    mask: Any = None,
    validate: bool = False,
) -> tuple[Array, Array, Array, Array | None]:
    """Check the policy inputs (metadata only), cast them to the compute dtype (spec S9.5, S9.6).

    Returns (log_prob, old_log_prob, advantages, mask): old_log_prob and advantages as constants of
    the loss (spec S4), (B,) advantages broadcast to (B, T) (spec S1), the mask as bool (None when
    none is given). Nothing is masked yet. `validate=True` also reads the data: every input must be
    finite at the valid positions (ValueError naming it; a host sync).
    """
    check_config(cfg)
    return array_inputs(ops, log_prob, old_log_prob, advantages, mask, validate)


def array_inputs(
    ops: ArrayOps,
    log_prob: Any,
    old_log_prob: Any,
    advantages: Any,
    mask: Any = None,
    validate: bool = False,
) -> tuple[Array, Array, Array, Array | None]:
    """`policy_inputs` without a config: the argument rules every family member shares (spec S9.5, S9.6, S14).

    The members of the family differ from CE-GPPO in their config type only, so they check theirs
    apart and share this. Same returns as `policy_inputs`.
    """
    check_policy_shapes(log_prob, old_log_prob, advantages, mask)
    m = None if mask is None else ops.as_bool_mask(mask)
    dt = ops.compute_dtype(("log_prob", log_prob), ("old_log_prob", old_log_prob), ("advantages", advantages))
    lp = ops.as_float("log_prob", log_prob, dt)
    olp = ops.constant(ops.as_float("old_log_prob", old_log_prob, dt))
    adv = ops.constant(ops.as_float("advantages", advantages, dt, floating_only=False))
    if adv.ndim == 1:
        adv = ops.per_sequence_to_tokens(adv, tuple(lp.shape))
    if validate and m is not None:
        named = (("log_prob", lp), ("old_log_prob", olp), ("advantages", adv))
        ops.require_concrete(*named, ("mask", m))
        for name, x in named:
            require_finite(name, ops.all_finite(x, m))
    return lp, olp, adv, m


def zero_masked(ops: ArrayOps, m: Array, *xs: Array) -> tuple[Array, ...]:
    """Each of `xs` with its masked positions replaced by 0 before any arithmetic (spec S9.3).

    A select, not a product: NaN or inf at a masked position reaches neither the value nor, through
    the select's backward, any gradient.
    """
    zero = ops.scalar(0.0, xs[0])
    return tuple(ops.where(m, x, zero) for x in xs)


# ---------------------------------------------------------------------- aggregation (spec S8)


def local_count(ops: ArrayOps, m: Array, name: str, dtype: Any) -> Array:
    """This batch's own value of normalizer `name`: its valid tokens (N) or its non-empty rows (S)."""
    return ops.total(m if name == "num_tokens" else ops.any_per_row(m), dtype)


def local_counts(ops: ArrayOps, m: Array) -> tuple[Array, Array]:
    """(valid tokens, rows with a valid token) of a (B, T) mask, 0-d counts in `ops.index_dtype`."""
    return local_count(ops, m, "num_tokens", ops.index_dtype), local_count(ops, m, "num_seqs", ops.index_dtype)


def validate_normalizers(ops: ArrayOps, agg: str, m: Array, num_tokens: Any, num_seqs: Any) -> None:
    """validate=True: the value rule of spec S8.2 on the normalizers `agg` reads (host syncs)."""
    for name, value in read_normalizers(agg, num_tokens, num_seqs):
        if value is None:
            continue
        ops.require_concrete((name, value), ("mask", m))
        local = ops.read_int(local_count(ops, m, name, ops.index_dtype))
        check_normalizer_value(name, ops.read_float(value), local)


def validate_loss(
    ops: ArrayOps, agg: str, m: Array, per_token_loss: Array, num_tokens: Any, num_seqs: Any
) -> None:
    """`aggregate_loss(validate=True)`: the loss finite at valid positions, and the normalizers (S8.2)."""
    ops.require_concrete(("per_token_loss", per_token_loss), ("mask", m))
    require_finite("per_token_loss", ops.all_finite(per_token_loss, m))
    validate_normalizers(ops, agg, m, num_tokens, num_seqs)


def _denominator(ops: ArrayOps, value: Any, local: Array) -> Array:
    """A normalizer the mode reads (default: this batch's count `local`) as a divisor (spec S8.2).

    On the device, traceable, without reading anything back:

        den > 0                               -> den
        den = 0 and this batch has no token   -> 1   (the numerator is 0 too: loss 0, spec S8.4)
        anything else (0 with valid tokens, negative, NaN)  -> NaN, so the loss is NaN

    Never silently 1: a bad normalizer poisons the loss instead. Python and NumPy values were
    already checked (finite, >= 0) by `check_normalizer`; with validate=True the device values are
    too (`validate_normalizers`), which needs a host sync that the default path never makes.
    """
    den = local if value is None else ops.normalizer(value, local)
    undefined = ops.where((den == 0) & (local == 0), ops.scalar(1.0, den), ops.scalar(float("nan"), den))
    return ops.where(den > 0, den, undefined)


def _divisor(
    ops: ArrayOps, m: Array, agg: str, num_tokens: Any, num_seqs: Any, norm_length: float | None, dtype: Any
) -> Array | None:
    """N, S or S L: what mode `agg` divides by after any per-row mean (`AGG_TABLE`), None for token-sum."""
    for name, value in read_normalizers(agg, num_tokens, num_seqs):
        den = _denominator(ops, value, local_count(ops, m, name, dtype))
        return ops.scale(den, agg_length(norm_length, m.shape[-1])) if AGG_TABLE[agg].by_length else den
    return None


def _row_counts(ops: ArrayOps, m: Array, dtype: Any, *, keepdims: bool = False) -> Array:
    """n_i, the valid tokens of each row, with 1 for an empty row (whose sum is 0 anyway)."""
    per_row = ops.row_total(m, dtype, keepdims=keepdims)
    return ops.where(per_row > 0, per_row, ops.scalar(1.0, per_row))


def aggregation_weights(
    ops: ArrayOps, m: Array, agg: str, num_tokens: Any, num_seqs: Any, norm_length: float | None, dtype: Any
) -> Array:
    """The aggregation weights (B, T) of mode `agg` (no checks; spec S8, `AggMode`):

        c_t = m_t / ([n_i if per_row_mean] * [N or S] * [L if by_length])
    """
    weights = ops.cast(m, dtype)
    if AGG_TABLE[agg].per_row_mean:
        weights = weights / _row_counts(ops, m, dtype, keepdims=True)
    den = _divisor(ops, m, agg, num_tokens, num_seqs, norm_length, dtype)
    return weights if den is None else weights / den


def aggregate(
    ops: ArrayOps,
    masked_loss: Array,
    m: Array,
    agg: str,
    num_tokens: Any,
    num_seqs: Any,
    norm_length: float | None,
) -> Array:
    """sum_t c_t l_t for a per-token loss already 0 at masked positions (no checks; spec S8).

    Sums first and divides once: the same value as sum(c * l) up to rounding, without the (B, T)
    weights ever being written and read back.
    """
    dt = masked_loss.dtype
    if AGG_TABLE[agg].per_row_mean:  # each row's mean over its valid tokens, summed over rows
        total = ops.total(ops.row_total(masked_loss) / _row_counts(ops, m, dt))
    else:
        total = ops.total(masked_loss)
    den = _divisor(ops, m, agg, num_tokens, num_seqs, norm_length, dt)
    return total if den is None else total / den
