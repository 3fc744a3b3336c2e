"""Input coercion for cegppo.jax: the dtype rules of docs/spec.md clause S9.5, on metadata only.

Nothing here reads array values, so everything here works on tracers (under `jax.jit`,
`jax.grad`, `jax.vmap`, `shard_map`) and never synchronises a device (spec S9.6).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cegppo._validation import check_input_dtype

import jax
import jax.numpy as jnp

__all__ = [
    "as_bool_mask",
    "as_float",
    "check_array",
    "compute_dtype",
    "default_float",
    "is_tracer",
    "require_concrete",
]


def check_array(name: str, x: Any) -> Any:
    """`x` must be an array (jax.Array, tracer or NumPy array): TypeError naming the argument otherwise."""
    if not (isinstance(x, (jax.Array, np.ndarray, np.generic)) or is_tracer(x)):
        raise TypeError(f"{name} must be a jax.Array or numpy.ndarray, got {type(x).__name__}")
    return x


def is_tracer(x: Any) -> bool:
    """True for an abstract value (inside jit, grad, vmap, shard_map, ...): its data cannot be read."""
    return isinstance(x, jax.core.Tracer)


def require_concrete(what: str, *named: tuple[str, Any]) -> None:
    """Raise a clear ValueError when a data-dependent check meets a traced array."""
    for name, x in named:
        if is_tracer(x):
            raise ValueError(
                f"{what} reads array values, but {name} is a traced value (inside jax.jit, jax.grad, "
                "jax.vmap or shard_map). Run the check eagerly on concrete arrays, outside the transform, "
                "e.g. call policy_loss(..., validate=True) once before jitting the training step."
            )


def default_float() -> np.dtype:
    """float64 when jax_enable_x64 is on, else float32 (what JAX gives a Python float)."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def compute_dtype(*named: tuple[str, Any]) -> np.dtype:
    """The dtype to compute in: the promotion of the floating inputs, at least float32 (spec S9.5).

    bfloat16/float16 inputs are computed in float32; float64 stays float64 when `jax_enable_x64`
    is on (without it JAX has no float64 and everything is float32). Integer or bool inputs
    (advantages) take part as float32. Complex inputs are refused with a TypeError.
    """
    dtypes: list[Any] = [jnp.float32]
    for name, x in named:
        check_array(name, x)
        dt = np.dtype(x.dtype)
        if jnp.issubdtype(dt, jnp.floating):
            dtypes.append(dt)
        elif not (jnp.issubdtype(dt, jnp.integer) or dt == np.bool_):
            raise TypeError(f"{name} must be a real numeric array, got dtype {dt}")
    return np.dtype(jnp.result_type(*dtypes))


def as_float(name: str, x: Any, dtype: Any, *, floating_only: bool = True) -> jax.Array:
    """`x` as a jax array of `dtype` (no copy when it already is); log-probs and logits must be floating."""
    check_array(name, x)
    check_input_dtype(name, x.dtype, floating_only=floating_only)
    return jnp.asarray(x).astype(dtype)


def as_bool_mask(mask: Any) -> jax.Array:
    """A mask is bool, or integer 0/1 (nonzero = valid). Float masks are refused: they are often weights."""
    check_array("mask", mask)
    dt = np.dtype(mask.dtype)
    if dt == np.bool_:
        return jnp.asarray(mask)
    if jnp.issubdtype(dt, jnp.integer):
        return jnp.asarray(mask) != 0
    raise TypeError(f"mask must be a bool (or integer 0/1) array, got dtype {dt}; use mask.astype(bool)")
