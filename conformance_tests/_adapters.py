"""Adapters: run one `Case` through an implementation and return its loss and gradient as NumPy.

The properties are written once against this interface; an adapter wraps

- a project backend (`backend_adapter("numpy" | "torch" | "jax")`): ``policy_loss(log_prob,
  old_log_prob, advantages, mask, cfg, agg, num_tokens, num_seqs)``, every aggregation mode; the
  NumPy reference differentiates analytically (cegppo.policy_loss_grad), torch with autograd, jax
  with jax.grad;
- a third-party port (`port_adapter(fn, framework)`): ``fn(log_prob, old_log_prob, advantages,
  response_mask, *, eps_low, eps_high, beta_low, beta_high, clip_ratio_c)`` returning the
  token-mean loss; gradients by the framework's autodiff (none for NumPy ports).

Frameworks are imported only when an adapter for them is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from cegppo import AGG_MODES

from ._cases import Case, Mismatch

__all__ = ["Adapter", "Result", "backend_adapter", "port_adapter"]

FRAMEWORKS: tuple[str, ...] = ("numpy", "torch", "jax")


@dataclass(frozen=True)
class Result:
    """What one call returned: the loss as a float, d loss / d log_prob (float64, or None) and the loss's dtype."""

    value: float
    grad: np.ndarray | None
    out_dtype: str


class PortError(Mismatch):
    """The implementation raised, or returned something that is not a scalar loss."""


class Adapter:
    """Runs cases through one implementation. Subclasses implement `_run`.

    Attributes:
        name: what is checked (``cegppo.torch``, ``my_module:my_loss``), for the report header.
        framework: ``numpy``, ``torch`` or ``jax``.
        kind: ``backend`` (the full policy_loss API) or ``port`` (the standard port signature).
        dtypes: input dtypes this adapter can feed.
        aggs: aggregation modes it can evaluate (ports: token-mean only).
        has_grad: whether it returns gradients.
        compile_skip: None when `run(case, compiled=True)` is available, else the reason why not.
        mask_dtype: ``bool`` (default) or ``float``: how the mask is handed to a port.
        target: ``loss`` (a policy loss) or ``fused`` (a fused LM head, `FusedAdapter`).
    """

    target = "loss"

    def __init__(self, fn: Callable[..., Any], *, name: str, framework: str, kind: str,
                 mask_dtype: str = "bool") -> None:
        if framework not in FRAMEWORKS:
            raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
        if kind not in ("backend", "port"):
            raise ValueError(f"kind must be 'backend' or 'port', got {kind!r}")
        if mask_dtype not in ("bool", "float"):
            raise ValueError(f"mask_dtype must be 'bool' or 'float', got {mask_dtype!r}")
        self.fn, self.name, self.framework, self.kind, self.mask_dtype = fn, name, framework, kind, mask_dtype
        self.dtypes: tuple[str, ...] = ("float64", "float32", "bfloat16")
        self.aggs: tuple[str, ...] = AGG_MODES if kind == "backend" else ("token-mean",)
        self.has_grad = True
        self.compile_skip: str | None = None
        self.jit_by_default = False
        self.notes: list[str] = []
        self.last_case: Case | None = None

    # -- the call -----------------------------------------------------------------------------
    def _call(self, lp: Any, olp: Any, adv: Any, mask: Any, case: Case) -> Any:
        if self.kind == "backend":
            return self.fn(lp, olp, adv, mask, case.cfg, case.agg, case.num_tokens, case.num_seqs)
        if not case.is_port_call:
            raise ValueError("a port computes token-mean with its local normalizer only")
        c = case.cfg
        return self.fn(lp, olp, adv, mask, eps_low=c.eps_low, eps_high=c.eps_high, beta_low=c.beta_low,
                       beta_high=c.beta_high, clip_ratio_c=c.dual_clip)

    def run(self, case: Case, *, compiled: bool = False, eager: bool = False) -> Result:
        """The loss and its gradient for `case`; any exception of the implementation becomes a PortError.

        ``compiled=True`` runs it under torch.compile / jax.jit; ``eager=True`` runs it eagerly even
        when the adapter runs under jit by default (`JaxAdapter` with ``jit=True``).
        """
        if compiled and eager:
            raise ValueError("compiled and eager are exclusive")
        if case.dtype not in self.dtypes:
            raise ValueError(f"{self.name} cannot take {case.dtype} inputs")
        self.last_case = case
        try:
            return self._run(case, compiled or (self.jit_by_default and not eager))
        except Mismatch:
            raise
        except Exception as exc:  # the implementation raised: a failure, shown with its exception
            raise PortError("the implementation raised", case, "a scalar loss", f"{type(exc).__name__}: {exc}") from exc

    def _run(self, case: Case, compiled: bool) -> Result:  # pragma: no cover - abstract
        raise NotImplementedError

    #: Why `constant_grads` is not available (None when it is): NumPy has no autodiff.
    constants_skip: str | None = None

    def constant_grads(self, case: Case) -> dict[str, np.ndarray | None]:
        """d loss / d old_log_prob and d loss / d advantages, with both passed as differentiable inputs.

        torch: tensors with ``requires_grad=True``; jax: arguments of the differentiated function
        (traced). Spec S4 makes both constants, so a conforming implementation returns zeros or
        None (no gradient path at all). Any exception of the implementation becomes a PortError.
        """
        if self.constants_skip is not None:
            raise ValueError(f"{self.name}: {self.constants_skip}")
        if case.dtype not in self.dtypes:
            raise ValueError(f"{self.name} cannot take {case.dtype} inputs")
        self.last_case = case
        try:
            return self._constant_grads(case)
        except Mismatch:
            raise
        except Exception as exc:
            raise PortError("the implementation raised", case, "a scalar loss", f"{type(exc).__name__}: {exc}") from exc

    def _constant_grads(self, case: Case) -> dict[str, np.ndarray | None]:  # pragma: no cover - abstract
        raise NotImplementedError


class NumpyAdapter(Adapter):
    """The NumPy reference (analytic gradient) or a NumPy port (value only: NumPy has no autodiff)."""

    def __init__(self, fn: Callable[..., Any], **kw: Any) -> None:
        super().__init__(fn, framework="numpy", **kw)
        self.dtypes = ("float64", "float32")
        self.has_grad = self.kind == "backend"
        self.compile_skip = "NumPy has nothing to compile"
        self.constants_skip = "NumPy has no autodiff: no gradient can flow into old_log_prob or advantages"
        if self.kind == "port":
            self.notes.append("NumPy port: values only (no autodiff); gradient properties are skipped")

    def _run(self, case: Case, compiled: bool) -> Result:
        dt = np.dtype(case.dtype)
        lp, olp = case.log_prob.astype(dt), case.old_log_prob.astype(dt)
        adv = case.advantages.astype(dt)
        mask = case.mask if self.mask_dtype == "bool" else case.mask.astype(dt)
        with np.errstate(all="ignore"):
            out = self._call(lp, olp, adv, mask, case)
            arr = np.asarray(out)
            if arr.size != 1:
                raise PortError("the loss must be a scalar", case, "shape ()", f"shape {arr.shape}")
            grad = None
            if self.kind == "backend":
                import cegppo

                grad = np.asarray(cegppo.policy_loss_grad(lp, olp, adv, mask, case.cfg, case.agg, case.num_tokens,
                                                          case.num_seqs), dtype=np.float64)
        return Result(float(arr.reshape(())), grad, str(arr.dtype))


class TorchAdapter(Adapter):
    """PyTorch: gradient by autograd; compiled runs use torch.compile (backend ``aot_eager``)."""

    def __init__(self, fn: Callable[..., Any], *, compile_ports: bool = False, **kw: Any) -> None:
        super().__init__(fn, framework="torch", **kw)
        import torch

        self.torch = torch
        if self.kind == "port" and not compile_ports:
            self.compile_skip = "torch.compile costs seconds per shape; pass compile=True (--compile) to check it"
        self._compiled: dict[Any, Any] = {}

    def _run(self, case: Case, compiled: bool) -> Result:
        torch = self.torch
        dt = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}[case.dtype]
        lp = torch.tensor(case.log_prob, dtype=dt).requires_grad_(True)
        olp = torch.tensor(case.old_log_prob, dtype=dt)
        adv = torch.tensor(case.advantages, dtype=dt)
        mask = torch.tensor(case.mask)
        if self.mask_dtype == "float":
            mask = mask.to(dt)
        call = self._call
        if compiled:
            key = (case.cfg, case.agg, case.num_tokens, case.num_seqs)
            if key not in self._compiled:
                self._compiled[key] = torch.compile(
                    lambda a, b, c, d: call(a, b, c, d, case), backend="aot_eager", dynamic=True, fullgraph=False
                )
            out = self._compiled[key](lp, olp, adv, mask)
        else:
            out = call(lp, olp, adv, mask, case)
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            got = f"{type(out).__name__}" + (f" of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else "")
            raise PortError("the loss must be a scalar torch.Tensor", case, "a 0-d tensor", got)
        if out.requires_grad:
            (g,) = torch.autograd.grad(out.reshape(()), lp, allow_unused=True)
            grad = np.zeros(case.shape) if g is None else g.detach().to(torch.float64).numpy()
        else:
            grad = np.zeros(case.shape)
        return Result(float(out.detach().to(torch.float64).reshape(())), grad, str(out.dtype).replace("torch.", ""))

    def _constant_grads(self, case: Case) -> dict[str, np.ndarray | None]:
        torch = self.torch
        dt = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}[case.dtype]
        lp = torch.tensor(case.log_prob, dtype=dt).requires_grad_(True)
        consts = {"old_log_prob": torch.tensor(case.old_log_prob, dtype=dt).requires_grad_(True),
                  "advantages": torch.tensor(case.advantages, dtype=dt).requires_grad_(True)}
        mask = torch.tensor(case.mask)
        if self.mask_dtype == "float":
            mask = mask.to(dt)
        out = self._call(lp, consts["old_log_prob"], consts["advantages"], mask, case)
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            raise PortError("the loss must be a scalar torch.Tensor", case, "a 0-d tensor", type(out).__name__)
        if not out.requires_grad:
            return dict.fromkeys(consts)
        grads = torch.autograd.grad(out.reshape(()), list(consts.values()), allow_unused=True)
        return {k: None if g is None else g.detach().to(torch.float64).numpy() for k, g in zip(consts, grads,
                                                                                                 strict=True)}


class JaxAdapter(Adapter):
    """JAX: gradient by jax.value_and_grad; compiled runs wrap it in jax.jit.

    float64 cases need ``jax_enable_x64``; without it they are not drawn (the report says so).
    With ``jit=True`` every call runs under jax.jit: eager JAX compiles each primitive for each new
    shape (tens of compilations per call), jit compiles one program, several times faster; the
    `S9 compiled agrees with eager` property still compares with a truly eager call.
    """

    def __init__(self, fn: Callable[..., Any], *, jit: bool = False, **kw: Any) -> None:
        super().__init__(fn, framework="jax", **kw)
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        if not isinstance(jit, bool):
            raise TypeError(f"jit must be a bool, got {type(jit).__name__} {jit!r}")
        self.jit_by_default = jit
        if jit:
            self.notes.append("every call under jax.jit (eager checked by 'S9 compiled agrees with eager')")
        if not jax.config.jax_enable_x64:
            self.dtypes = ("float32", "bfloat16")
            self.notes.append("jax_enable_x64 is off: float64 inputs not checked")

    def _run(self, case: Case, compiled: bool) -> Result:
        jax, jnp = self.jax, self.jnp
        dt = {"float64": jnp.float64, "float32": jnp.float32, "bfloat16": jnp.bfloat16}[case.dtype]
        olp = jnp.asarray(case.old_log_prob, dtype=dt)
        adv = jnp.asarray(case.advantages, dtype=dt)
        mask = jnp.asarray(case.mask)
        if self.mask_dtype == "float":
            mask = mask.astype(dt)
        holder: dict[str, Any] = {}

        def f(lp: Any) -> Any:
            out = self._call(lp, olp, adv, mask, case)
            if not hasattr(out, "shape") or int(np.prod(out.shape)) != 1:
                holder["bad"] = f"{type(out).__name__} of shape {getattr(out, 'shape', None)}"
                return jnp.zeros((), lp.dtype)
            return jnp.reshape(out, ())

        vg = jax.value_and_grad(f)
        if compiled:
            vg = jax.jit(vg)
        val, g = vg(jnp.asarray(case.log_prob, dtype=dt))
        if "bad" in holder:
            raise PortError("the loss must be a scalar jax.Array", case, "a 0-d array", holder["bad"])
        return Result(float(np.asarray(val, dtype=np.float64)), np.asarray(g, dtype=np.float64), str(val.dtype))

    def _constant_grads(self, case: Case) -> dict[str, np.ndarray | None]:
        jax, jnp = self.jax, self.jnp
        dt = {"float64": jnp.float64, "float32": jnp.float32, "bfloat16": jnp.bfloat16}[case.dtype]
        mask = jnp.asarray(case.mask)
        if self.mask_dtype == "float":
            mask = mask.astype(dt)

        def f(lp: Any, olp: Any, adv: Any) -> Any:
            out = self._call(lp, olp, adv, mask, case)
            return jnp.reshape(out, ()) if hasattr(out, "shape") and int(np.prod(out.shape)) == 1 else out

        grad = jax.grad(f, argnums=(1, 2))
        if self.jit_by_default:
            grad = jax.jit(grad)
        g_olp, g_adv = grad(*(jnp.asarray(x, dtype=dt) for x in (case.log_prob, case.old_log_prob, case.advantages)))
        return {"old_log_prob": np.asarray(g_olp, dtype=np.float64), "advantages": np.asarray(g_adv, dtype=np.float64)}


_ADAPTERS = {"numpy": NumpyAdapter, "torch": TorchAdapter, "jax": JaxAdapter}


def backend_adapter(backend: str, *, jit: bool = False) -> Adapter:
    """An adapter for a project backend: ``numpy`` (the reference, cegppo), ``torch`` or ``jax``.

    ``jit=True`` (jax only) runs every call under jax.jit (see `JaxAdapter`).
    """
    if backend not in FRAMEWORKS:
        raise ValueError(f"backend must be one of {FRAMEWORKS}, got {backend!r}")
    if jit and backend != "jax":
        raise ValueError(f"jit=True is for the jax backend only, got backend={backend!r}")
    module = importlib.import_module("cegppo" if backend == "numpy" else f"cegppo.{backend}")
    name = "cegppo (NumPy reference)" if backend == "numpy" else f"cegppo.{backend}"
    kw: dict[str, Any] = {"jit": jit} if backend == "jax" else {}
    return _ADAPTERS[backend](module.policy_loss, name=name, kind="backend", **kw)


def port_adapter(fn: Callable[..., Any], framework: str, *, name: str | None = None, mask_dtype: str = "bool",
                 compile: bool = False, jit: bool = False) -> Adapter:
    """An adapter for a port with the standard signature (DESIGN.md section 6).

    ``compile=True`` (torch): also check torch.compile against eager. ``jit=True`` (jax): run every
    call under jax.jit, several times faster for jittable ports (see `JaxAdapter`).
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
    if jit and framework != "jax":
        raise ValueError(f"jit=True is for framework='jax' only, got framework={framework!r}")
    if not callable(fn):
        raise TypeError(f"port must be callable, got {type(fn).__name__}")
    label = name or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
    kw: dict[str, Any] = {"name": label, "kind": "port", "mask_dtype": mask_dtype}
    if framework == "torch":
        kw["compile_ports"] = compile
    if framework == "jax":
        kw["jit"] = jit
    return _ADAPTERS[framework](fn, **kw)
