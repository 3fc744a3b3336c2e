"""What the backend-parametrised suite (tests/backends) needs of a framework, one small namespace each.

A test of tests/backends takes the `backend` fixture and reaches torch or JAX only through it, the
way array-api-tests reaches an array library only through ``xp``: ``backend.cg`` is the backend's
public package (`cegppo.torch` or `cegppo.jax`), and the few framework operations a test needs
(make an array, read it back, differentiate, jit) are the methods below. Each framework is imported
when its namespace is built (in the fixture), never at collection: a venv with only one of them
collects the whole folder, and collection starts no JAX backend (tests/conftest.py).

Differentiation follows JAX's functional form for both: ``value_and_grad(fn, argnums, has_aux)``
returns a function. In torch, an input that the output does not depend on (a constant of the loss,
spec S4) gets a zero gradient, as in JAX.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cegppo
import numpy as np

__all__ = ["Backend", "jax_backend", "make_inputs", "torch_backend"]

# The reference's compute dtype for inputs rounded to each dtype (spec S9.5: at least float32).
NP_COMPUTE = {"float64": np.float64, "float32": np.float32, "bfloat16": np.float32, "float16": np.float32}


@dataclass(frozen=True)
class Backend:
    """One framework under test: its package and the operations the shared tests need."""

    name: str
    cg: Any
    """The backend's public package: cegppo.torch or cegppo.jax."""
    dtype: Callable[[str], Any]
    """The framework's dtype of a NumPy dtype name ("float32", "bfloat16", "bool" ...)."""
    asarray: Callable[..., Any]
    """``asarray(x, dtype=None)``: an array of the framework from a NumPy array, list or number; without
    `dtype` NumPy float64 stays float64 and a Python list takes the framework's default dtype."""
    value_and_grad: Callable[..., Callable[..., Any]]
    """``value_and_grad(fn, argnums=0, has_aux=False)``, as JAX's."""
    jit: Callable[[Callable[..., Any]], Callable[..., Any]]
    """jax.jit; torch runs eagerly (torch.compile has its own tests in tests/torch)."""
    fixed_shape: tuple[int, int] | None = None
    """The (B, T) of every drawn batch (JAX compiles per shape, so its tests draw values, not shapes)."""
    flushes_subnormals: bool = False
    """XLA on CPU reads a subnormal as 0, in comparisons too (docs/backends.md, "Subnormal numbers")."""
    requiring_grad: Callable[[Any], Any] = field(default=lambda x: x)
    """The array as an input that autograd tracks (torch's requires_grad_; JAX tracks by transformation)."""
    carries_graph: Callable[[Any], bool] = field(default=lambda x: False)
    """Whether an output is attached to an autograd graph (torch's requires_grad; JAX has no graph)."""
    recording_ops: Callable[[], contextlib.AbstractContextManager[list[Any]]] = field(
        default=lambda: contextlib.nullcontext([]))
    """A context that lists the tensor ops dispatched inside it (torch); JAX records none."""

    def __repr__(self) -> str:  # the parametrize id
        return self.name

    def to_np(self, x: Any) -> np.ndarray:
        """A NumPy copy, float64 for floating arrays (exact from every lower precision)."""
        if hasattr(x, "detach"):  # a torch tensor: NumPy has no bfloat16
            x = x.detach().cpu()
            x = x.double() if x.is_floating_point() else x
        a = np.asarray(x)
        return a.astype(np.float64) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else a

    def dtype_name(self, x: Any) -> str:
        """The NumPy name of an array's dtype ("float32", "bool" ...), the same in every framework."""
        return str(x.dtype).removeprefix("torch.")

    def policy_batches(self, *, logr_scale: float = 1.0) -> Any:
        """`backend_cases.policy_batches` as this framework draws them (fixed shape, subnormals as 0)."""
        from backend_cases import policy_batches

        return policy_batches(logr_scale=logr_scale, shape=self.fixed_shape,
                              no_subnormal_advantages=self.flushes_subnormals)

    def grad(self, fn: Callable[..., Any], argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
        """``grad(fn, argnums)``, as JAX's: the gradient(s) of a scalar `fn`."""
        run = self.value_and_grad(fn, argnums)
        return lambda *args: run(*args)[1]


def make_inputs(backend: Backend, case: dict[str, Any], dtype: str, cfg: cegppo.CEGPPOConfig, *,
                margin: float) -> tuple[tuple[Any, ...], tuple[np.ndarray, ...]]:
    """(log_prob, old_log_prob, advantages, mask) of `backend` in `dtype`, and the reference's inputs: the
    same rounded values in the reference's compute dtype. Log-ratios are kept `margin` from the kinks."""
    from backend_cases import away_from_kinks

    logr = away_from_kinks(case["logr"], cfg, margin)
    arrays = [backend.asarray(x, dtype) for x in (case["log_prob"], case["log_prob"] - logr, case["advantages"])]
    npdt = NP_COMPUTE[dtype]
    ref = tuple(backend.to_np(x).astype(npdt) for x in arrays)
    return (*arrays, backend.asarray(case["mask"])), (*ref, case["mask"])


def torch_backend() -> Backend:
    import cegppo.torch
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    def asarray(x: Any, dtype: str | None = None) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.clone() if dtype is None else x.to(getattr(torch, dtype))
        # torch.tensor copies, as jnp.asarray does a NumPy array; a Python float is read in `dtype` directly
        return torch.tensor(x, dtype=None if dtype is None else getattr(torch, dtype))

    def value_and_grad(fn: Callable[..., Any], argnums: int | Sequence[int] = 0,
                       has_aux: bool = False) -> Callable[..., Any]:
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)

        def run(*args: Any) -> Any:
            args_ = [a.detach().clone().requires_grad_(True) if i in nums else a for i, a in enumerate(args)]
            out = fn(*args_)
            value = out[0] if has_aux else out
            inputs = [args_[i] for i in nums]
            if value.requires_grad:
                grads = torch.autograd.grad(value, inputs, allow_unused=True, materialize_grads=True)
            else:  # nothing in the output depends on any input
                grads = tuple(torch.zeros_like(x) for x in inputs)
            out = (value.detach(), out[1]) if has_aux else value.detach()
            return out, grads[0] if isinstance(argnums, int) else tuple(grads)

        return run

    class RecordOps(TorchDispatchMode):
        """Lists the ops that produce tensors (not metadata queries such as promote_types)."""

        def __init__(self) -> None:
            super().__init__()
            self.ops: list[Any] = []

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) or (
                    isinstance(out, (tuple, list)) and any(isinstance(o, torch.Tensor) for o in out)):
                self.ops.append(func)
            return out

    @contextlib.contextmanager
    def recording_ops() -> Iterator[list[Any]]:
        with RecordOps() as mode:
            yield mode.ops

    return Backend("torch", cegppo.torch, lambda name: getattr(torch, name), asarray, value_and_grad,
                   jit=lambda fn: fn, requiring_grad=lambda x: x.detach().clone().requires_grad_(True),
                   carries_graph=lambda x: bool(x.requires_grad), recording_ops=recording_ops)


def jax_backend() -> Backend:
    import cegppo.jax
    import jax
    import jax.numpy as jnp

    def asarray(x: Any, dtype: str | None = None) -> jax.Array:
        return jnp.asarray(x) if dtype is None else jnp.asarray(x).astype(jnp.dtype(dtype))

    def value_and_grad(fn: Callable[..., Any], argnums: int | Sequence[int] = 0,
                       has_aux: bool = False) -> Callable[..., Any]:
        return jax.value_and_grad(fn, argnums=argnums if isinstance(argnums, int) else tuple(argnums), has_aux=has_aux)

    return Backend("jax", cegppo.jax, jnp.dtype, asarray, value_and_grad, jit=jax.jit, fixed_shape=(5, 7),
                   flushes_subnormals=True)
