"""The fused LM-head loss against the unfused path (spec S11.1): inputs, reference, adapter.

A fused head takes hidden states instead of log-probabilities,

    fused(hidden, weight, token_ids, old_log_prob, advantages, mask, cfg, *, bias, temperature,
          entropy_coef, agg, num_tokens, num_seqs, norm_length, chunk_size) -> (loss, metrics)

(the signature of `cegppo.torch.fused_linear_policy_loss` and `cegppo.jax.fused_linear_policy_loss`),
and must give the loss, metrics and gradients w.r.t. hidden, weight and bias of the unfused path

    z = (hidden W^T + b) / temperature,  l = token_log_probs(z, ids),  H = entropy(z)
    loss = policy_loss(l, old_log_prob, A, mask, cfg, agg, ...) - entropy_coef aggregate_loss(H, ...)

The reference is that composition in float64 NumPy with the analytic chain rule, in the spec
(`cegppo.fused_linear_policy_loss` / `_grad`, spec S11.1); `head_expected` adds the scale of each
value's rounding error. Tolerances scale with the sum of |terms|
of each reduction (Higham's dot-product bound) times the conditioning of log-softmax (1 + max|z| +
log V), so cancellation cannot make a check impossibly tight and no bug hides in a loose one.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cegppo
import numpy as np
from cegppo import AGG_MODES, CEGPPOConfig
from cegppo._fused import fused_head_terms
from cegppo._metrics import ENTROPY_REGION_KEYS, REGION_NAMES
from hypothesis import strategies as st

from ._adapters import FRAMEWORKS, Adapter, PortError
from ._cases import VALUE_TOL, check_elements, check_scalar, round_to

__all__ = [
    "HeadCase",
    "HeadExpected",
    "HeadResult",
    "draw_head_case",
    "fused_adapter",
    "head_expected",
]

ENTROPY_KEYS: tuple[str, ...] = ENTROPY_REGION_KEYS
COUNT_KEYS: tuple[str, ...] = (*(f"{r}_frac" for r in REGION_NAMES), "clip_frac")
"""Metrics that count tokens: exact, since drawn log-ratios keep away from the region boundaries."""


@dataclass(frozen=True, eq=False)
class HeadCase:
    """Inputs of one call of a fused head, as float64 NumPy holding values representable in `dtype`.

    Shapes: hidden (B, T, H), weight (V, H), bias (V,) or None, token_ids (B, T) int64,
    old_log_prob and mask (B, T), advantages (B, T) or (B,). Masked positions may hold garbage.
    """

    hidden: np.ndarray
    weight: np.ndarray
    bias: np.ndarray | None
    token_ids: np.ndarray
    old_log_prob: np.ndarray
    advantages: np.ndarray
    mask: np.ndarray
    cfg: CEGPPOConfig
    dtype: str = "float32"
    agg: str = "token-mean"
    num_tokens: float | None = None
    num_seqs: float | None = None
    norm_length: float | None = None
    temperature: float = 1.0
    entropy_coef: float = 0.0
    chunk_size: int | None = None
    note: str = field(default="", compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    def with_(self, **changes: Any) -> HeadCase:
        """A copy with some fields replaced."""
        return replace(self, **changes)

    def options(self) -> dict[str, Any]:
        """The keyword arguments of the fused call."""
        return {"temperature": self.temperature, "entropy_coef": self.entropy_coef, "agg": self.agg,
                "num_tokens": self.num_tokens, "num_seqs": self.num_seqs, "norm_length": self.norm_length,
                "chunk_size": self.chunk_size}

    def reproducer(self, adapter: Adapter) -> str:
        """A pasteable snippet that recomputes this call with `adapter`'s fused head."""
        return _head_reproducer(self, adapter)


@dataclass(frozen=True)
class HeadResult:
    """What a fused head returned, as float64: the loss, its metrics and d loss / d {hidden, weight, bias}."""

    value: float
    metrics: dict[str, float]
    grads: dict[str, np.ndarray]
    out_dtype: str


@dataclass(frozen=True)
class HeadExpected:
    """The reference: loss, metrics, gradients, and the scale of each one's rounding error (float64)."""

    value: float
    metrics: dict[str, float]
    grads: dict[str, np.ndarray]
    value_scale: float
    metric_scales: dict[str, float]
    grad_scales: dict[str, np.ndarray]


def head_expected(case: HeadCase) -> HeadExpected:
    """The unfused path in float64 with analytic gradients (spec S3, S4, S8, S10, S11), from the
    reference (`cegppo.fused_linear_policy_loss`, spec S11.1), with the scale of each rounding error."""
    t = fused_head_terms(case.hidden, case.weight, case.token_ids, case.old_log_prob, case.advantages, case.mask,
                         case.cfg, bias=case.bias, **case.options())
    m, z, ent, c, g_lp, k = t.mask, t.logits, t.entropy, t.coef, t.grad_log_prob, case.entropy_coef
    w, tau = np.asarray(case.weight, np.float64), case.temperature
    # Sums of |terms|: of dloss/dz (pi_j + [j = a] for pi - e_a; pi |log pi| + pi H for the entropy
    # term), then of each gradient's contraction with |W|, |h|.
    logpi = z - np.log(np.sum(np.exp(z - z.max(-1, keepdims=True)), -1, keepdims=True)) - z.max(-1, keepdims=True)
    pi = np.exp(logpi)
    onehot = np.eye(w.shape[0])[t.token_ids]
    abs_gz = (np.abs(g_lp)[..., None] * (pi + onehot)
              + np.abs(k * c)[..., None] * pi * (np.abs(logpi) + ent[..., None])) / tau
    cond = 1.0 + float(np.abs(z).max(initial=0.0)) + math.log(w.shape[0])  # |d log-softmax| per unit rounding
    grad_scales = {"hidden": cond * (abs_gz @ np.abs(w)), "weight": cond * np.einsum("btv,bth->vh", abs_gz, np.abs(t.hidden))}
    if case.bias is not None:
        grad_scales["bias"] = cond * abs_gz.sum((0, 1))
    j = cegppo.per_token_objective(t.log_prob, t.old_log_prob, t.advantages, case.cfg)
    value_scale = float(np.sum(np.where(m, np.abs(c * j) + abs(k) * c * ent + cond * (np.abs(g_lp) + abs(k) * c), 0.0)))
    n_valid = max(int(m.sum()), 1)
    regions = cegppo.token_regions(t.log_prob, t.old_log_prob, t.advantages, case.cfg)
    per_tok = np.abs(g_lp) * (np.take_along_axis(pi * (np.abs(logpi) + ent[..., None]), t.token_ids[..., None], -1)[..., 0]
                              + np.sum(pi * pi * (np.abs(logpi) + ent[..., None]), -1))
    metric_scales: dict[str, float] = {}
    for name, key in zip(REGION_NAMES, ENTROPY_KEYS, strict=True):
        metric_scales[key] = cond * float(np.sum(np.where(getattr(regions, name) & m, per_tok, 0.0)))
    metric_scales["entropy_mean"] = cond * float(np.sum(np.where(m, ent + 1.0, 0.0)) / n_valid)
    for key in COUNT_KEYS:  # count / n in the compute dtype; one miscounted token moves it by >= 1/15
        metric_scales[key] = 1.0
    for key in ("ratio_mean", "ratio_max", "approx_kl_k1", "approx_kl_k3", "grad_weight_abs_mean"):
        # each is a mean of terms in delta and logr, delta <= ratio_max: rounding is relative to those
        metric_scales[key] = cond * (1.0 + abs(t.metrics[key]) + abs(t.metrics["ratio_max"]))
    return HeadExpected(t.value, t.metrics, t.grads, value_scale, metric_scales, grad_scales)


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------

_LOGR_KINDS = ("near_lower", "near_upper", "near_dual", "around_zero", "far_below", "far_above")


def draw_head_case(data: Any, *, dtypes: Sequence[str] = ("float64", "float32"),
                   aggs: Sequence[str] = AGG_MODES) -> HeadCase:
    """A fused-head problem with every option drawn (each draw labelled).

    B in 1..3, T in 1..5, H in 1..6, V in 2..12; hidden, weight, bias in [-1, 1] (so |z| stays
    small enough for float32 log-softmax to be accurate to ~1e-6); token ids anywhere in [0, V);
    masks with empty rows, prefixes, single tokens and holes; per-sequence and per-token
    advantages (A = 0 included); each token's log-ratio against the head's own log-probability
    drawn in a region of spec S2 (both sides of each boundary, far beyond) and kept MARGIN from
    the boundaries; every aggregation mode, global normalizers, norm_length, temperature, an
    entropy bonus of either sign, and chunk sizes that do and do not divide the token count.
    """
    from ._cases import MARGIN
    from ._strategies import _logr_strategy, advantage_values, draw_config, draw_mask, push_away

    b = data.draw(st.integers(1, 3), label="B")
    t = data.draw(st.integers(1, 5), label="T")
    h = data.draw(st.integers(1, 6), label="H")
    v = data.draw(st.integers(2, 12), label="V")
    dtype = data.draw(st.sampled_from(list(dtypes)), label="dtype")
    unit = st.floats(-1.0, 1.0)

    def arr(shape: tuple[int, ...], label: str) -> np.ndarray:
        n = int(np.prod(shape))
        return round_to(np.array(data.draw(st.lists(unit, min_size=n, max_size=n), label=label)).reshape(shape), dtype)

    hidden, weight = arr((b, t, h), "hidden"), arr((v, h), "weight")
    bias = arr((v,), "bias") if data.draw(st.booleans(), label="with bias") else None
    ids = np.array(data.draw(st.lists(st.integers(0, v - 1), min_size=b * t, max_size=b * t), label="token_ids"),
                   dtype=np.int64).reshape(b, t)
    cfg = draw_config(data)
    tau = data.draw(st.sampled_from([1.0, 0.7, 1.6]), label="temperature")
    k = data.draw(st.sampled_from([0.0, 0.01, -0.3]), label="entropy_coef")
    kinds = data.draw(st.lists(st.sampled_from(_LOGR_KINDS), min_size=b * t, max_size=b * t), label="log-ratio kinds")
    logr = np.array([data.draw(_logr_strategy(kind, cfg), label=f"log-ratio {i} ({kind})")
                     for i, kind in enumerate(kinds)]).reshape(b, t)
    logr = push_away(logr, np.zeros_like(logr), cfg, "float64" if dtype == "float64" else "float32")
    z = (hidden @ weight.T + (0.0 if bias is None else bias)) / tau
    olp = round_to(cegppo.token_log_probs(z, ids) - logr, dtype)
    # after rounding old_log_prob the log-ratio moved by one ulp of |olp| <= ~30, far below MARGIN
    assert np.all(np.abs((cegppo.token_log_probs(z, ids) - olp) - logr) < MARGIN[dtype] / 4)
    per_seq = data.draw(st.booleans(), label="per-sequence advantages")
    a_el = advantage_values(2.0)
    adv = np.array(data.draw(st.lists(a_el, min_size=b if per_seq else b * t, max_size=b if per_seq else b * t),
                             label="advantages"))
    adv = round_to(adv if per_seq else adv.reshape(b, t), dtype)
    mask = draw_mask(data, b, t, allow_empty=True)
    agg = data.draw(st.sampled_from(list(aggs)), label="agg")
    num_tokens = num_seqs = norm_length = None
    if data.draw(st.booleans(), label="global normalizers"):
        num_tokens = float(mask.sum() + data.draw(st.integers(0, 20), label="extra tokens elsewhere"))
        num_seqs = float(mask.any(-1).sum() + data.draw(st.integers(0, 5), label="extra sequences elsewhere"))
    if agg == "seq-mean-token-sum-norm":
        norm_length = data.draw(st.none() | st.just(7.0), label="norm_length")
    chunk = data.draw(st.none() | st.integers(1, max(1, int(mask.sum()) + 2)), label="chunk_size")
    return HeadCase(hidden, weight, bias, ids, olp, adv, mask, cfg, dtype, agg, num_tokens, num_seqs, norm_length,
                    tau, k, chunk)


def with_garbage(case: HeadCase, data: Any) -> HeadCase:
    """The case with garbage in every masked position: NaN/inf hidden rows, token id -100, NaN inputs."""
    m = case.mask
    junk = data.draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e30]), label="garbage in masked hidden rows")
    hidden = np.where(m[..., None], case.hidden, junk)
    ids = np.where(m, case.token_ids, -100)
    olp = np.where(m, case.old_log_prob, math.nan)
    adv = case.advantages if case.advantages.ndim == 1 else np.where(m, case.advantages, math.nan)
    return case.with_(hidden=hidden, token_ids=ids, old_log_prob=olp, advantages=adv, note="garbage in masked positions")


# ----------------------------------------------------------------------------------------------
# adapters
# ----------------------------------------------------------------------------------------------


class FusedAdapter(Adapter[HeadCase, HeadResult]):
    """Runs `HeadCase`s through a fused head and returns a `HeadResult` (gradients by autodiff).

    ``target == "fused"``: `check` runs the S11.1 properties (`FUSED_PROPERTIES`) on it.
    """

    target = "fused"

    def __init__(self, fn: Callable[..., Any], *, name: str, framework: str, kind: str, jit: bool = False) -> None:
        if framework not in ("torch", "jax"):
            raise ValueError(f"framework must be 'torch' or 'jax' for a fused head, got {framework!r}")
        super().__init__(fn, name=name, framework=framework, kind=kind)
        self.dtypes = ("float64", "float32")
        self.aggs = AGG_MODES
        self.compile_skip = "not checked for fused heads"
        if framework == "jax":
            import jax

            self.jit_by_default = jit
            if jit:
                self.notes.append("every call under jax.jit")
            if not jax.config.jax_enable_x64:  # type: ignore[attr-defined]  # a flag the stubs do not list
                self.dtypes = ("float32",)
                self.notes.append("jax_enable_x64 is off: float64 inputs not checked")
        elif jit:
            raise ValueError("jit=True is for framework='jax' only")

    probes_advantages = False  # the S11.1 strategies draw both advantage shapes; the head must take both

    def _run(self, case: HeadCase, compiled: bool) -> HeadResult:
        return self._run_torch(case) if self.framework == "torch" else self._run_jax(case, compiled)

    def _result(self, loss: Any, metrics: Any, grads: dict[str, Any], case: HeadCase) -> HeadResult:
        if not hasattr(loss, "shape") or int(np.prod(loss.shape)) != 1:
            raise PortError("the loss must be a scalar", case, "a 0-d tensor", type(loss).__name__)
        if not isinstance(metrics, dict):
            raise PortError("the second result must be a metrics dict", case, "dict", type(metrics).__name__)
        to64 = (lambda x: x.detach().double().cpu().numpy()) if self.framework == "torch" else (
            lambda x: np.asarray(x, dtype=np.float64))
        return HeadResult(float(to64(loss).reshape(())), {k: float(to64(v).reshape(())) for k, v in metrics.items()},
                          {k: to64(g) for k, g in grads.items()}, str(loss.dtype).replace("torch.", ""))

    def _run_torch(self, case: HeadCase) -> HeadResult:
        import torch

        dt = {"float64": torch.float64, "float32": torch.float32}[case.dtype]
        leaves = {"hidden": torch.tensor(case.hidden, dtype=dt, requires_grad=True),
                  "weight": torch.tensor(case.weight, dtype=dt, requires_grad=True)}
        if case.bias is not None:
            leaves["bias"] = torch.tensor(case.bias, dtype=dt, requires_grad=True)
        loss, metrics = self.fn(leaves["hidden"], leaves["weight"], torch.tensor(case.token_ids),
                                torch.tensor(case.old_log_prob, dtype=dt), torch.tensor(case.advantages, dtype=dt),
                                torch.tensor(case.mask), case.cfg, bias=leaves.get("bias"), **case.options())
        if not isinstance(loss, torch.Tensor):
            raise PortError("the loss must be a torch.Tensor", case, "a 0-d tensor", type(loss).__name__)
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))
        return self._result(loss, metrics, grads, case)

    def _constant_grads(self, case: HeadCase) -> dict[str, np.ndarray | None]:
        """d loss / d old_log_prob and d advantages, both passed as differentiable inputs (spec S4)."""
        if self.framework == "torch":
            import torch

            dt = {"float64": torch.float64, "float32": torch.float32}[case.dtype]
            consts = {"old_log_prob": torch.tensor(case.old_log_prob, dtype=dt, requires_grad=True),
                      "advantages": torch.tensor(case.advantages, dtype=dt, requires_grad=True)}
            loss, _ = self.fn(torch.tensor(case.hidden, dtype=dt, requires_grad=True), torch.tensor(case.weight, dtype=dt),
                              torch.tensor(case.token_ids), consts["old_log_prob"], consts["advantages"],
                              torch.tensor(case.mask), case.cfg,
                              bias=None if case.bias is None else torch.tensor(case.bias, dtype=dt), **case.options())
            if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
                return dict.fromkeys(consts)
            grads = torch.autograd.grad(loss.reshape(()), list(consts.values()), allow_unused=True)
            return {k: None if g is None else g.detach().double().numpy() for k, g in zip(consts, grads, strict=True)}
        import jax
        import jax.numpy as jnp

        dt = {"float64": jnp.float64, "float32": jnp.float32}[case.dtype]
        bias = None if case.bias is None else jnp.asarray(case.bias, dt)
        opts = case.options()

        hidden, weight = jnp.asarray(case.hidden, dt), jnp.asarray(case.weight, dt)
        ids, mask = jnp.asarray(case.token_ids, jnp.int32), jnp.asarray(case.mask)
        olp, adv = jnp.asarray(case.old_log_prob, dt), jnp.asarray(case.advantages, dt)

        def build() -> tuple[Any, dict[str, Any]]:
            def f(olp: Any, adv: Any, hidden: Any, weight: Any, bias: Any, ids: Any, mask: Any) -> Any:
                loss, _ = self.fn(hidden, weight, ids, olp, adv, mask, case.cfg, bias=bias, **opts)
                return jnp.reshape(loss, ())

            grad = jax.grad(f, argnums=(0, 1))
            return (jax.jit(grad) if self.jit_by_default else grad), {}

        arrays = (olp, adv, hidden, weight, bias, ids, mask)
        grad = (self._jitted("constant_grads", _program_key(case, *arrays), build)[0] if self.jit_by_default
                else build()[0])
        g_olp, g_adv = grad(*arrays)
        return {"old_log_prob": np.asarray(g_olp, dtype=np.float64), "advantages": np.asarray(g_adv, dtype=np.float64)}

    def _run_jax(self, case: HeadCase, compiled: bool) -> HeadResult:
        import jax
        import jax.numpy as jnp

        dt = {"float64": jnp.float64, "float32": jnp.float32}[case.dtype]
        params = {"hidden": jnp.asarray(case.hidden, dt), "weight": jnp.asarray(case.weight, dt)}
        if case.bias is not None:
            params["bias"] = jnp.asarray(case.bias, dt)
        rest = (jnp.asarray(case.token_ids, jnp.int32), jnp.asarray(case.old_log_prob, dt),
                jnp.asarray(case.advantages, dt), jnp.asarray(case.mask))
        opts = case.options()

        def build() -> tuple[Any, dict[str, Any]]:
            def f(p: dict[str, Any], ids: Any, olp: Any, adv: Any, mask: Any) -> Any:
                return self.fn(p["hidden"], p["weight"], ids, olp, adv, mask, case.cfg, bias=p.get("bias"), **opts)

            vg = jax.value_and_grad(f, has_aux=True)
            return (jax.jit(vg) if compiled else vg), {}

        vg = (self._jitted("value_and_grad", _program_key(case, *params.values(), *rest), build)[0] if compiled
              else build()[0])
        (loss, metrics), grads = vg(params, *rest)
        return self._result(loss, metrics, grads, case)


def _program_key(case: HeadCase, *arrays: Any) -> tuple[Any, ...]:
    """What a traced fused call depends on besides the arrays' values (see `Adapter._jitted`): the config, the
    options and the arrays' shapes and dtypes (a missing bias is part of the shape)."""
    return (case.cfg, tuple(sorted(case.options().items())),
            tuple(None if a is None else (a.shape, str(a.dtype)) for a in arrays))


def fused_adapter(fused: str | Callable[..., Any], framework: str | None = None, *, name: str | None = None,
                  jit: bool = False) -> FusedAdapter:
    """An adapter for a fused LM-head loss: ``"torch"`` / ``"jax"`` (the project's), or a callable.

    A callable must have the signature of `cegppo.torch.fused_linear_policy_loss` and return
    ``(loss, metrics)``; pass its ``framework``. ``jit=True`` (jax) runs every call under jax.jit.
    Run the S11.1 properties with ``cegppo.conformance.check(fused_adapter(...))``.
    """
    if isinstance(fused, str):
        if fused not in ("torch", "jax"):
            raise ValueError(f"fused must be 'torch', 'jax' or a callable, got {fused!r}")
        if framework not in (None, fused):
            raise ValueError(f"framework {framework!r} does not match the {fused!r} backend")
        module = importlib.import_module(f"cegppo.{fused}")
        return FusedAdapter(module.fused_linear_policy_loss, name=f"cegppo.{fused}.fused_linear_policy_loss",
                            framework=fused, kind="backend", jit=jit)
    if not callable(fused):
        raise TypeError(f"fused must be 'torch', 'jax' or a callable, got {type(fused).__name__}")
    if framework not in FRAMEWORKS or framework == "numpy":
        raise ValueError(f"framework must be 'torch' or 'jax' for a fused head, got {framework!r}")
    label = name or f"{getattr(fused, '__module__', '?')}:{getattr(fused, '__qualname__', repr(fused))}"
    return FusedAdapter(fused, name=label, framework=framework, kind="port", jit=jit)


# ----------------------------------------------------------------------------------------------
# comparisons and the reproducer
# ----------------------------------------------------------------------------------------------


def _bound(case: HeadCase, scale: Any) -> Any:
    """rtol * scale + the smallest normal of the compute dtype: the rounding error of a sum whose |terms| add to
    `scale` (Higham), for a value or per gradient element."""
    tiny = float(np.finfo(np.float32 if case.dtype == "float32" else np.float64).tiny)
    return VALUE_TOL[case.dtype][0] * scale + tiny


def compare_head_value(what: str, case: HeadCase, got: float, want: float, scale: float) -> None:
    """Raise Mismatch unless |got - want| <= rtol * scale (+ the smallest normal)."""
    check_scalar(what, case, got, want, _bound(case, scale))


def compare_head_grad(what: str, case: HeadCase, got: np.ndarray, want: np.ndarray, scale: np.ndarray) -> None:
    """Raise Mismatch unless every element is within rtol * (its sum of |terms| x conditioning)."""
    check_elements(what, case, got, want, _bound(case, scale))


def _head_reproducer(case: HeadCase, adapter: Adapter) -> str:
    from ._report import _arr, _tensor, config_expr, import_lines

    fw, dt = adapter.framework, case.dtype
    lines = [*import_lines(fw), "import cegppo"]
    if fw == "jax" and dt == "float64":
        lines.append('jax.config.update("jax_enable_x64", True)')
    if adapter.kind == "backend":
        lines.append(f"from cegppo.{fw} import fused_linear_policy_loss as fused")
    else:
        module, _, func = adapter.name.rpartition(":")
        lines.append(f"from {module} import {func} as fused" if module and "<" not in adapter.name
                     else f"fused = ...  # {adapter.name}")
    lines.append('nan, inf = float("nan"), float("inf")')
    for name, x in (("hidden", case.hidden), ("weight", case.weight), ("bias", case.bias)):  # differentiated
        lines.append(f"{name} = None" if x is None else _tensor(fw, name, _arr(x), False, dt, grad=True))
    lines.append(f"token_ids = torch.tensor({_arr(case.token_ids)})" if fw == "torch"
                 else f"token_ids = jnp.asarray({_arr(case.token_ids)}, dtype=jnp.int32)")
    lines += [_tensor(fw, "old_log_prob", _arr(case.old_log_prob), False, dt),
              _tensor(fw, "advantages", _arr(case.advantages), False, dt),
              _tensor(fw, "mask", _arr(case.mask), True, dt), f"cfg = {config_expr(case.cfg)}"]
    opts = ", ".join(f"{k}={v!r}" for k, v in case.options().items())
    call = f"fused(hidden, weight, token_ids, old_log_prob, advantages, mask, cfg, bias=bias, {opts})"
    if fw == "torch":
        lines += [f"loss, metrics = {call}", "loss.backward()", "print(loss.item(), hidden.grad, weight.grad)"]
    else:
        lines += ["def f(hidden, weight, bias):", f"    return {call}",
                  "(loss, metrics), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(hidden, weight, bias)",
                  "print(loss, grads)"]
    try:
        with np.errstate(all="ignore"):
            e = head_expected(case)
        lines.append(f"# reference (unfused path, float64 on these numbers): loss = {e.value!r}")
    except Exception as exc:  # pragma: no cover - the reference accepts every drawn case
        lines.append(f"# (reference unavailable: {exc})")
    return "\n".join(lines)
