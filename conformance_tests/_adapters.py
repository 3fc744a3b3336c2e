"""Adapters: run one `Case` through an implementation and return its loss and gradient as NumPy.

The properties are written once against this interface; an adapter wraps

- a project backend (`backend_adapter("numpy" | "torch" | "jax")`): ``policy_loss(log_prob,
  old_log_prob, advantages, mask, cfg, agg, num_tokens, num_seqs)``, every aggregation mode; the
  NumPy reference differentiates analytically (cegppo.policy_loss_grad), torch with autograd, jax
  with jax.grad;
- a third-party port (`port_adapter(fn, framework)`): ``fn(log_prob, old_log_prob, advantages,
  response_mask, *, eps_low, eps_high, beta_low, beta_high, clip_ratio_c)`` returning the
  token-mean loss; gradients by the framework's autodiff (none for NumPy ports).

Either checks one objective (``objective=``, default CE-GPPO; docs/spec.md S14): a backend's
``family_policy_loss`` for another member, a port taking that member's keywords
(`OBJECTIVE_HYPERPARAMETERS`). The objective travels in the adapter's `Conventions`.

Frameworks are imported only when an adapter for them is built. Each call hands the implementation
fresh copies of the case's arrays, created on the adapter's device (torch and JAX), and checks
afterwards whether it modified them in place (`Result.mutated`); the case itself is read-only, so
what the reference and the reproducer see is always what the kit drew.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from cegppo import AGG_MODES

from ._cases import Case, Mismatch
from ._conventions import SPEC, Conventions, spec_conventions
from ._objectives import CE_GPPO, check_objective
from ._port import objective_of, port_keywords

__all__ = ["ADVANTAGE_FORMS", "Adapter", "Result", "backend_adapter", "port_adapter"]

FRAMEWORKS: tuple[str, ...] = ("numpy", "torch", "jax")
ADVANTAGE_FORMS: dict[str, tuple[str, ...]] = {
    "both": ("token", "sequence"),
    "token": ("token",),
    "sequence": ("sequence",),
}
"""What ``advantages=`` declares: per-token (B, T) advantages (verl, OpenRLHF), per-sequence (B,), or both."""
SHAPE_OF_FORM: dict[str, str] = {"token": "(B, T) per-token", "sequence": "(B,) per-sequence"}


@dataclass(frozen=True)
class Result:
    """What one call returned: the loss as a float, d loss / d log_prob (float64, or None), the loss's dtype,
    and the names of the inputs the call modified in place (empty for a well-behaved implementation)."""

    value: float
    grad: np.ndarray | None
    out_dtype: str
    mutated: tuple[str, ...] = ()

    def grad_or_fail(self, case: Any) -> np.ndarray:
        """The gradient, for a property that needs one: a PortError when the call returned none."""
        if self.grad is None:
            raise PortError("the implementation returned no gradient", case, "d loss / d log_prob", None)
        return self.grad


class PortError(Mismatch):
    """The implementation raised, or returned something that is not a scalar loss."""


class _HasDtype(Protocol):
    @property
    def dtype(self) -> str: ...


CaseT = TypeVar("CaseT", bound=_HasDtype)
ResultT = TypeVar("ResultT")


class Signature:
    """How an adapter calls its implementation: the port contract (`cegppo.conformance._port`), keywords and
    all, with what the port declares (`Conventions`). `_BackendSignature` is the project backends' full API."""

    kind = "port"
    declares_forms = True
    """Whether implementations of this signature declare the advantage shapes they take (ports do)."""

    def check_conventions(self, conventions: Conventions) -> None:
        """Raise ValueError when an implementation of this signature cannot declare `conventions` (a port may)."""

    def aggs(self, conventions: Conventions) -> tuple[str, ...]:
        """The aggregation modes the kit may draw: those declared."""
        return conventions.agg

    def global_normalizers(self, conventions: Conventions) -> bool:
        """Whether the kit may draw global normalizers (num_tokens, num_seqs): when declared."""
        return conventions.global_normalizers

    def call(self, fn: Callable[..., Any], arrays: tuple[Any, Any, Any, Any], case: Case,
             conventions: Conventions) -> Any:
        """fn on (log_prob, old_log_prob, advantages, mask) with the case's config, mode and normalizers."""
        conv = conventions
        if case.agg not in conv.agg or (case.num_tokens is not None and not conv.global_normalizers):
            raise ValueError(f"the port declares the modes {conv.agg} (global normalizers: "
                             f"{conv.global_normalizers}); the kit drew {case.agg!r}, num_tokens={case.num_tokens!r}")
        if objective_of(case.cfg) != conv.objective:
            raise ValueError(f"the port computes {conv.objective}; the kit drew a {type(case.cfg).__name__}")
        # a dual-clip declaration is CE-GPPO's only (`conventions` refuses it for another objective)
        if conv.dual_clip == "required" and case.cfg.dual_clip is None:
            raise ValueError("the port declares dual_clip='required'; the kit drew clip_ratio_c=None")
        if conv.dual_clip == "absent" and case.cfg.dual_clip is not None:
            raise ValueError(f"the port declares dual_clip='absent'; the kit drew clip_ratio_c={case.cfg.dual_clip!r}")
        kw: dict[str, Any] = port_keywords(case.cfg)
        if conv.agg_declared:  # verl's name for the mode; the normalizers as spec S8.2 names them
            kw["loss_agg_mode"] = case.agg
            if conv.global_normalizers:
                kw["num_tokens"], kw["num_seqs"] = case.num_tokens, case.num_seqs
        return fn(*arrays, **kw)


class _BackendSignature(Signature):
    """A project backend: ``policy_loss(log_prob, old_log_prob, advantages, mask, cfg, agg, num_tokens,
    num_seqs)``, every mode and global normalizers, the spec's conventions only."""

    kind = "backend"
    declares_forms = False

    def check_conventions(self, conventions: Conventions) -> None:
        if not conventions.is_spec:
            raise ValueError("a project backend follows the spec: it declares no conventions")

    def aggs(self, conventions: Conventions) -> tuple[str, ...]:
        return AGG_MODES

    def global_normalizers(self, conventions: Conventions) -> bool:
        return True

    def call(self, fn: Callable[..., Any], arrays: tuple[Any, Any, Any, Any], case: Case,
             conventions: Conventions) -> Any:
        if objective_of(case.cfg) != conventions.objective:
            raise ValueError(f"the adapter checks {conventions.objective}; the kit drew a {type(case.cfg).__name__}")
        return fn(*arrays, case.cfg, case.agg, case.num_tokens, case.num_seqs)


SIGNATURES: dict[str, Signature] = {s.kind: s for s in (_BackendSignature(), Signature())}
"""An adapter's ``kind`` -> how it calls its implementation."""


class Adapter(Generic[CaseT, ResultT]):
    """Runs cases through one implementation. Subclasses implement `_run`.

    Generic in the case it takes and the result it returns: `Case` -> `Result` for a policy loss,
    `HeadCase` -> `HeadResult` for a fused head (`FusedAdapter`).

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
        device: where inputs are created (``cpu``, ``cuda``, ``cuda:1`` ...), or None for the
            framework's default; results come back to the CPU, where the reference runs in float64.
        advantages: the declared advantage shapes, ``token``, ``sequence`` or ``both``.
        declared_forms: the forms `advantages` declares; `forms` are those the strategies draw
            (`check` narrows them to the ones a port accepts, and says so in the report).
        conventions: what a port declares about its conventions (`Conventions`; backends: the spec's).
    """

    target = "loss"

    def __init__(self, fn: Callable[..., Any], *, name: str, framework: str, kind: str,
                 mask_dtype: str = "bool", device: str | None = None, advantages: str = "both",
                 conventions: Conventions = SPEC) -> None:
        if framework not in FRAMEWORKS:
            raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
        if kind not in SIGNATURES:
            raise ValueError(f"kind must be one of {tuple(SIGNATURES)}, got {kind!r}")
        if mask_dtype not in ("bool", "float"):
            raise ValueError(f"mask_dtype must be 'bool' or 'float', got {mask_dtype!r}")
        if device is not None and (not isinstance(device, str) or not device.strip()):
            raise TypeError(f"device must be a device name such as 'cpu' or 'cuda', or None, got {device!r}")
        if advantages not in ADVANTAGE_FORMS:
            raise ValueError(f"advantages must be one of {tuple(ADVANTAGE_FORMS)}, got {advantages!r}")
        if not isinstance(conventions, Conventions):
            raise TypeError(f"conventions must be a Conventions, got {type(conventions).__name__}")
        self.signature = SIGNATURES[kind]
        self.signature.check_conventions(conventions)
        self.fn, self.name, self.framework, self.kind, self.mask_dtype = fn, name, framework, kind, mask_dtype
        self.device = device
        self.advantages = advantages
        self.declared_forms: tuple[str, ...] = ADVANTAGE_FORMS[advantages]
        self.forms: tuple[str, ...] = self.declared_forms
        self.dtypes: tuple[str, ...] = ("float64", "float32", "bfloat16", "float16")
        self.conventions = conventions
        self.aggs: tuple[str, ...] = self.signature.aggs(conventions)
        self.has_grad = True
        self.compile_skip: str | None = None
        self.jit_by_default = False
        self._jit_cache: dict[tuple[Any, ...], tuple[Any, dict[str, Any]]] = {}
        self.notes: list[str] = []
        self.last_case: CaseT | None = None
        # JAX's x64 flag is thread-local (jax.enable_x64 in the caller's thread): the state seen
        # here is re-entered by `thread_context` in the worker threads of time-limited runs.
        self._x64 = bool(importlib.import_module("jax").config.jax_enable_x64) if framework == "jax" else False

    def thread_context(self) -> contextlib.AbstractContextManager[Any]:
        """The framework state of the thread that built the adapter, for calls from another thread."""
        if self.framework != "jax":
            return contextlib.nullcontext()
        import jax

        return jax.enable_x64(self._x64)

    @property
    def objective(self) -> str:
        """The objective checked (``ce_gppo``, ``cispo``, ...): which reference and which properties apply."""
        return self.conventions.objective

    @property
    def probes_advantages(self) -> bool:
        """Whether `check` first tries each declared advantage shape once (ports declare the shapes they take)."""
        return self.signature.declares_forms

    @property
    def global_normalizers(self) -> bool:
        """Whether the strategies may draw global normalizers (backends; ports that declare them)."""
        return self.signature.global_normalizers(self.conventions)

    # -- the call -----------------------------------------------------------------------------
    def _call(self, lp: Any, olp: Any, adv: Any, mask: Any, case: Case) -> Any:
        return self.signature.call(self.fn, (lp, olp, adv, mask), case, self.conventions)

    def run(self, case: CaseT, *, compiled: bool = False, eager: bool = False) -> ResultT:
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

    def _run(self, case: CaseT, compiled: bool) -> ResultT:  # pragma: no cover - abstract
        raise NotImplementedError

    def _jitted(self, kind: str, key: tuple[Any, ...], build: Callable[[], tuple[Any, dict[str, Any]]]) -> Any:
        """The jitted function (and the dict its trace fills) cached under (`kind`, `key`), built on a miss.

        A new Python function per call would defeat jax.jit's own cache, which is keyed on the function
        object: every call would trace and compile again. The cache is bounded (least recently used out).
        """
        entry = self._jit_cache.pop((kind, key), None)
        if entry is None:
            entry = build()
            if len(self._jit_cache) >= self.JIT_CACHE_SIZE:
                self._jit_cache.pop(next(iter(self._jit_cache)))
        self._jit_cache[(kind, key)] = entry
        return entry

    JIT_CACHE_SIZE = 64
    """Compiled programs an adapter keeps: a property's calls on one case reuse them; older ones are dropped."""

    #: Why `constant_grads` is not available (None when it is): NumPy has no autodiff.
    constants_skip: str | None = None

    def constant_grads(self, case: CaseT) -> dict[str, np.ndarray | None]:
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

    def _constant_grads(self, case: CaseT) -> dict[str, np.ndarray | None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _mask_of(self, case: Case, dt: Any) -> np.ndarray:
        """The mask as handed to the implementation: bool, or 0/1 in the log-prob dtype (verl)."""
        return case.mask.copy() if self.mask_dtype == "bool" else case.mask.astype(dt)

    @staticmethod
    def _mutated(case: Case, handed: dict[str, np.ndarray]) -> tuple[str, ...]:
        """The names of handed inputs whose values (read back after the call) differ from the case's."""
        out = []
        for name, after in handed.items():
            before = case.mask if name == "response_mask" else getattr(case, name)
            if not _same_values(np.asarray(before), np.asarray(after)):
                out.append(name)
        return tuple(out)


def _same_values(before: np.ndarray, after: np.ndarray) -> bool:
    """Equal shape and values, NaN equal to NaN (a float mask compares as 0/1)."""
    if before.shape != after.shape:
        return False
    if before.dtype == np.bool_ or after.dtype == np.bool_:
        return bool(np.array_equal(before.astype(np.float64), after.astype(np.float64)))
    a, b = before.astype(np.float64), after.astype(np.float64)
    return bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


class NumpyAdapter(Adapter[Case, Result]):
    """The NumPy reference (analytic gradient) or a NumPy port (value only: NumPy has no autodiff).

    `grad_fn` is the analytic gradient, called as `fn` is (the reference's `cegppo.policy_loss_grad`);
    without one the adapter has no gradients.
    """

    def __init__(self, fn: Callable[..., Any], *, grad_fn: Callable[..., Any] | None = None, **kw: Any) -> None:
        super().__init__(fn, framework="numpy", **kw)
        self.grad_fn = grad_fn
        if self.device not in (None, "cpu"):
            raise ValueError(f"device must be 'cpu' (or None) for framework='numpy', got {self.device!r}")
        self.dtypes = ("float64", "float32", "float16")
        self.has_grad = grad_fn is not None
        self.compile_skip = "NumPy has nothing to compile"
        self.constants_skip = "NumPy has no autodiff: no gradient can flow into old_log_prob or advantages"
        if not self.has_grad:
            self.notes.append("NumPy port: values only (no autodiff); gradient properties are skipped")

    def _run(self, case: Case, compiled: bool) -> Result:
        dt = np.dtype(case.dtype)
        # astype copies: the port gets arrays of its own, compared with the case's after the call.
        lp, olp = case.log_prob.astype(dt), case.old_log_prob.astype(dt)
        adv = case.advantages.astype(dt)
        mask = self._mask_of(case, dt)
        with np.errstate(all="ignore"):
            out = self._call(lp, olp, adv, mask, case)
            mutated = self._mutated(case, {"log_prob": lp, "old_log_prob": olp, "advantages": adv,
                                           "response_mask": mask})
            arr = np.asarray(out)
            if arr.size != 1:
                raise PortError("the loss must be a scalar", case, "shape ()", f"shape {arr.shape}")
            grad = None
            if self.grad_fn is not None:
                grad = np.asarray(self.signature.call(self.grad_fn, (lp, olp, adv, mask), case, self.conventions),
                                  dtype=np.float64)
        return Result(float(arr.reshape(())), grad, str(arr.dtype), mutated)


class TorchAdapter(Adapter[Case, Result]):
    """PyTorch: gradient by autograd; compiled runs use torch.compile (backend ``aot_eager``)."""

    def __init__(self, fn: Callable[..., Any], *, check_compiled: bool = False, **kw: Any) -> None:
        super().__init__(fn, framework="torch", **kw)
        import torch

        self.torch = torch
        self.torch_device = torch_device(self.device)
        if not check_compiled:
            self.compile_skip = "torch.compile costs seconds per shape; pass compile=True (--compile) to check it"
        self._compiled: dict[Any, Any] = {}

    def _tensor(self, x: np.ndarray, dt: Any, layout: str) -> Any:
        """`x` on the adapter's device in `layout` (`LAYOUTS`); NaN (False) in the slack of a sliced buffer,
        so that a kernel reading past the view's bounds is seen."""
        torch, dev = self.torch, self.torch_device
        row_constant = x.ndim == 2 and x.dtype != np.bool_ and np.array_equal(x, np.broadcast_to(x[:, :1], x.shape))
        if layout == "expanded" and row_constant:
            return torch.tensor(x[:, :1], dtype=dt, device=dev).expand(x.shape)  # stride 0 along T
        if layout in ("contiguous", "expanded") or (layout == "transposed" and x.ndim < 2):
            return torch.tensor(x, dtype=dt, device=dev)
        if layout == "transposed":
            return torch.tensor(np.ascontiguousarray(x.T), dtype=dt, device=dev).T
        fill = False if x.dtype == np.bool_ else np.nan
        wide = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(1, 2)], constant_values=fill)
        return torch.tensor(wide, dtype=dt, device=dev)[..., 1:-2]

    def _run(self, case: Case, compiled: bool) -> Result:
        torch = self.torch
        dt = getattr(torch, case.dtype)
        lay = case.layout
        # a view is not a leaf: its gradient is taken with torch.autograd.grad(out, lp) all the same
        lp = self._tensor(case.log_prob, dt, lay)
        lp = lp.requires_grad_(True) if lay == "contiguous" else lp.detach().requires_grad_(True)
        olp = self._tensor(case.old_log_prob, dt, lay)
        adv = self._tensor(case.advantages, dt, lay)
        mask = self._tensor(case.mask, None, lay)
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
            grad = np.zeros(case.shape) if g is None else _to_numpy(g)
        else:
            grad = np.zeros(case.shape)
        handed = {"log_prob": lp, "old_log_prob": olp, "advantages": adv, "response_mask": mask}
        mutated = self._mutated(case, {k: _to_numpy(v) for k, v in handed.items()})
        return Result(float(_to_numpy(out).reshape(())), grad, str(out.dtype).replace("torch.", ""), mutated)

    def _constant_grads(self, case: Case) -> dict[str, np.ndarray | None]:
        torch = self.torch
        dt, dev = getattr(torch, case.dtype), self.torch_device
        lp = torch.tensor(case.log_prob, dtype=dt, device=dev).requires_grad_(True)
        consts = {"old_log_prob": torch.tensor(case.old_log_prob, dtype=dt, device=dev).requires_grad_(True),
                  "advantages": torch.tensor(case.advantages, dtype=dt, device=dev).requires_grad_(True)}
        mask = torch.tensor(case.mask, device=dev)
        if self.mask_dtype == "float":
            mask = mask.to(dt)
        out = self._call(lp, consts["old_log_prob"], consts["advantages"], mask, case)
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            raise PortError("the loss must be a scalar torch.Tensor", case, "a 0-d tensor", type(out).__name__)
        if not out.requires_grad:
            return dict.fromkeys(consts)
        grads = torch.autograd.grad(out.reshape(()), list(consts.values()), allow_unused=True)
        return {k: None if g is None else _to_numpy(g) for k, g in zip(consts, grads, strict=True)}


def _to_numpy(t: Any) -> np.ndarray:
    """A torch tensor on any device as a NumPy array on the CPU (floats as float64, exactly)."""
    import torch

    t = t.detach()
    return t.to("cpu", torch.float64 if t.dtype.is_floating_point else t.dtype).numpy()


def torch_device(device: str | None) -> Any:
    """`device` as a torch.device; ValueError naming it when it is malformed or not available here."""
    import torch

    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r} ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: CUDA is not available to torch {torch.__version__} on this machine "
                             "(torch.cuda.is_available() is False); use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type != "cpu":
        try:  # mps, xpu, ...: a tensor there must be creatable
            torch.zeros((), device=dev)
        except Exception as exc:
            raise ValueError(f"device={device!r} is not available to torch {torch.__version__}: {exc}") from None
    return dev


class JaxAdapter(Adapter[Case, Result]):
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
        self.jax_device = jax_device(self.device)
        if not isinstance(jit, bool):
            raise TypeError(f"jit must be a bool, got {type(jit).__name__} {jit!r}")
        self.jit_by_default = jit
        if jit:
            self.notes.append("every call under jax.jit (eager checked by 'S9 compiled agrees with eager')")
        if not jax.config.jax_enable_x64:  # type: ignore[attr-defined]  # a flag the stubs do not list
            self.dtypes = ("float32", "bfloat16")
            self.notes.append("jax_enable_x64 is off: float64 inputs not checked")

    def _put(self, x: np.ndarray, dt: Any) -> Any:
        """A case array on the adapter's device, floats in `dt` (bool masks stay bool)."""
        if self.jax_device is None:
            return self.jnp.asarray(x, dtype=None if x.dtype == np.bool_ else dt)
        # straight from host memory to the device (jnp.asarray would go through the default device)
        return self.jax.device_put(x if x.dtype == np.bool_ else x.astype(np.dtype(dt)), self.jax_device)

    def _program_key(self, case: Case, *arrays: Any) -> tuple[Any, ...]:
        """What a traced call of `case` depends on besides the arrays' values: equal keys trace to one program.

        The call reads the case only through its config, aggregation and normalizers (`_call`); the arrays
        enter by shape and dtype. Keying jitted functions on this compiles once per program, not once per
        call: the properties that call twice on one shape (a moved or dirtied padding, micro-batch parts,
        determinism) and the two dtypes of a case share one compilation.
        """
        return (case.cfg, case.agg, case.num_tokens, case.num_seqs, case.is_port_call,
                tuple((a.shape, str(a.dtype)) for a in arrays))

    def _run(self, case: Case, compiled: bool) -> Result:
        jax, jnp = self.jax, self.jnp
        dt = getattr(jnp, case.dtype)

        def put(x: np.ndarray) -> Any:
            return self._put(x, dt)

        lp, olp, adv = put(case.log_prob), put(case.old_log_prob), put(case.advantages)
        mask = put(case.mask)
        if self.mask_dtype == "float":
            mask = mask.astype(dt)

        def build() -> tuple[Any, dict[str, Any]]:
            holder: dict[str, Any] = {}  # filled while tracing: what the call returned, if not a scalar

            # The arrays are arguments, not constants closed over: under jit XLA would constant-fold
            # through them, which takes seconds at 10^6 tokens.
            def f(lp: Any, olp: Any, adv: Any, mask: Any) -> Any:
                out = self._call(lp, olp, adv, mask, case)
                if not hasattr(out, "shape") or int(np.prod(out.shape)) != 1:
                    holder["bad"] = f"{type(out).__name__} of shape {getattr(out, 'shape', None)}"
                    return jnp.zeros((), lp.dtype)
                return jnp.reshape(out, ())

            vg = jax.value_and_grad(f)
            return (jax.jit(vg) if compiled else vg), holder

        if compiled:
            vg, holder = self._jitted("value_and_grad", self._program_key(case, lp, olp, adv, mask), build)
        else:
            vg, holder = build()
        val, g = vg(lp, olp, adv, mask)
        if "bad" in holder:
            raise PortError("the loss must be a scalar jax.Array", case, "a 0-d array", holder["bad"])
        return Result(float(np.asarray(val, dtype=np.float64)), np.asarray(g, dtype=np.float64), str(val.dtype))

    def _constant_grads(self, case: Case) -> dict[str, np.ndarray | None]:
        jax, jnp = self.jax, self.jnp
        dt = getattr(jnp, case.dtype)
        mask = self._put(case.mask, dt)
        if self.mask_dtype == "float":
            mask = mask.astype(dt)
        lp, olp, adv = (self._put(x, dt) for x in (case.log_prob, case.old_log_prob, case.advantages))

        def build() -> tuple[Any, dict[str, Any]]:
            def f(lp: Any, olp: Any, adv: Any, mask: Any) -> Any:
                out = self._call(lp, olp, adv, mask, case)
                return jnp.reshape(out, ()) if hasattr(out, "shape") and int(np.prod(out.shape)) == 1 else out

            grad = jax.grad(f, argnums=(1, 2))
            return (jax.jit(grad) if self.jit_by_default else grad), {}

        if self.jit_by_default:
            grad = self._jitted("constant_grads", self._program_key(case, lp, olp, adv, mask), build)[0]
        else:
            grad = build()[0]
        g_olp, g_adv = grad(lp, olp, adv, mask)
        return {"old_log_prob": np.asarray(g_olp, dtype=np.float64), "advantages": np.asarray(g_adv, dtype=np.float64)}


def jax_device(device: str | None) -> Any:
    """`device` as a jax.Device (None: JAX's default); ValueError naming it when it is not available here.

    ``cuda`` and ``gpu`` name JAX's GPU platform; ``cuda:1`` picks its second device.
    """
    if device is None:
        return None
    import jax

    platform, _, index = device.partition(":")
    platform = "gpu" if platform == "cuda" else platform
    if not index.isdigit() and index:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N', 'gpu' or 'tpu', got {device!r}")
    try:
        devices = jax.devices(platform)
    except RuntimeError as exc:
        raise ValueError(f"device={device!r}: JAX {jax.__version__} has no {platform} backend on this machine "
                         f"({str(exc).splitlines()[0]}); use device='cpu'") from None
    k = int(index or 0)
    if k >= len(devices):
        raise ValueError(f"device={device!r}: JAX sees only {len(devices)} {platform} device(s)")
    return devices[k]


_ADAPTERS = {"numpy": NumpyAdapter, "torch": TorchAdapter, "jax": JaxAdapter}


def backend_adapter(backend: str, *, jit: bool = False, device: str | None = None,
                    objective: str = CE_GPPO) -> Adapter:
    """An adapter for a project backend: ``numpy`` (the reference, cegppo), ``torch`` or ``jax``.

    ``jit=True`` (jax only) runs every call under jax.jit (see `JaxAdapter`). ``device`` (torch,
    jax): where the inputs are created, e.g. ``"cuda"``; ValueError when it is not available.
    ``objective``: which member of the family is checked (docs/spec.md S14): ``ce_gppo`` (default)
    checks ``policy_loss``, any other the backend's ``family_policy_loss`` with that member's configs.
    """
    if backend not in FRAMEWORKS:
        raise ValueError(f"backend must be one of {FRAMEWORKS}, got {backend!r}")
    if jit and backend != "jax":
        raise ValueError(f"jit=True is for the jax backend only, got backend={backend!r}")
    check_objective(objective)
    module = importlib.import_module("cegppo" if backend == "numpy" else f"cegppo.{backend}")
    name = "cegppo (NumPy reference)" if backend == "numpy" else f"cegppo.{backend}"
    loss, grad = ("policy_loss", "policy_loss_grad") if objective == CE_GPPO else (
        "family_policy_loss", "family_policy_loss_grad")
    options: dict[str, dict[str, Any]] = {"numpy": {"grad_fn": getattr(module, grad, None)},
                                          "torch": {"check_compiled": True}, "jax": {"jit": jit}}
    kw = options[backend]
    return _ADAPTERS[backend](getattr(module, loss), name=name, kind="backend", device=device,
                              conventions=spec_conventions(objective), **kw)


def port_adapter(fn: Callable[..., Any], framework: str, *, name: str | None = None, mask_dtype: str = "bool",
                 compile: bool = False, jit: bool = False, device: str | None = None,
                 advantages: str = "both", conventions: Conventions = SPEC, objective: str | None = None) -> Adapter:
    """An adapter for a port with the standard signature (docs/conformance.md).

    ``compile=True`` (torch): also check torch.compile against eager. ``jit=True`` (jax): run every
    call under jax.jit, several times faster for jittable ports (see `JaxAdapter`). ``device``
    (torch, jax): where the inputs are created (``"cuda"``, ``"cuda:1"``, ``"cpu"``); ValueError
    when it is not available. ``advantages``: the advantage shapes the port takes, ``"token"``
    ((B, T), as verl and OpenRLHF pass them), ``"sequence"`` ((B,)) or ``"both"`` (default).
    ``conventions``: what the port declares (`cegppo.conformance.conventions(...)`, docs/conformance.md).
    ``objective``: the member of the family the port computes (docs/spec.md S14; None: the one of
    `conventions`, CE-GPPO by default); with declared conventions, declare it there
    (``conventions(..., objective=...)``).
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
    if not isinstance(conventions, Conventions):
        raise TypeError(f"conventions must be a Conventions, got {type(conventions).__name__}")
    if objective is not None and check_objective(objective) != conventions.objective:
        if conventions != SPEC:
            raise ValueError(f"objective={objective!r} but conventions declare objective={conventions.objective!r}: "
                             "pass it to conventions(..., objective=...) with the other declarations")
        conventions = spec_conventions(objective)
    if jit and framework != "jax":
        raise ValueError(f"jit=True is for framework='jax' only, got framework={framework!r}")
    if not callable(fn):
        raise TypeError(f"port must be callable, got {type(fn).__name__}")
    label = name or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
    kw: dict[str, Any] = {"name": label, "kind": "port", "mask_dtype": mask_dtype, "device": device,
                          "advantages": advantages, "conventions": conventions}
    if framework == "torch":
        kw["check_compiled"] = compile
    if framework == "jax":
        kw["jit"] = jit
    return _ADAPTERS[framework](fn, **kw)
