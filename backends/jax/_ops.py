"""JAX's row of the backends' primitive table (`cegppo._backend_core.ArrayOps`).

Every primitive is traceable (jit, grad, vmap, shard_map): a mask is counted in the dtype asked for,
normalizers may be traced 0-d arrays. Reading values back (`all_finite`, `read_*`) happens only with
``validate=True``, after `require_concrete` has refused traced values by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cegppo._backend_core import ArrayOps

import jax
import jax.numpy as jnp

from ._common import as_bool_mask, as_float, compute_dtype, require_concrete

__all__ = ["OPS"]


class _JaxOps(ArrayOps):
    index_dtype = jnp.int32

    def as_bool_mask(self, mask: Any) -> jax.Array:
        return as_bool_mask(mask)

    def compute_dtype(self, *named: tuple[str, Any]) -> np.dtype:
        return compute_dtype(*named)

    def as_float(self, name: str, x: Any, dtype: Any, *, floating_only: bool = True) -> jax.Array:
        return as_float(name, x, dtype, floating_only=floating_only)

    def constant(self, x: jax.Array) -> jax.Array:
        return jax.lax.stop_gradient(x)

    def per_sequence_to_tokens(self, x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        return jnp.broadcast_to(x[:, None], shape)

    def scalar(self, value: float, like: jax.Array) -> jax.Array:
        return jnp.full((), value, like.dtype)

    def all_false(self, like: jax.Array) -> jax.Array:
        return jnp.zeros_like(like, dtype=bool)

    def where(self, cond: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.where(cond, a, b)

    def cast(self, x: jax.Array, dtype: Any) -> jax.Array:
        return x.astype(dtype)

    def total(self, x: jax.Array, dtype: Any = None) -> jax.Array:
        return jnp.sum(x, dtype=dtype)

    def row_total(self, x: jax.Array, dtype: Any = None, *, keepdims: bool = False) -> jax.Array:
        return jnp.sum(x, axis=-1, dtype=dtype, keepdims=keepdims)

    def any_per_row(self, m: jax.Array) -> jax.Array:
        return jnp.any(m, axis=-1)

    def normalizer(self, value: Any, like: jax.Array) -> jax.Array:
        return jnp.reshape(jnp.asarray(value).astype(like.dtype), ())

    def scale(self, x: jax.Array, factor: float) -> jax.Array:
        return x * np.asarray(factor, x.dtype)

    def exp(self, x: jax.Array) -> jax.Array:
        return jnp.exp(x)

    def expm1(self, x: jax.Array) -> jax.Array:
        return jnp.expm1(x)

    def abs(self, x: jax.Array) -> jax.Array:
        return jnp.abs(x)

    def clip(self, x: jax.Array, lower: float, upper: float) -> jax.Array:
        return jnp.clip(x, np.asarray(lower, x.dtype), np.asarray(upper, x.dtype))

    def ratio_over_sg_ratio(self, logr: jax.Array) -> jax.Array:
        from ._objective import _ratio_over_sg_ratio  # the module that uses it first; it imports this one

        return _ratio_over_sg_ratio(logr)

    def require_concrete(self, *named: tuple[str, Any]) -> None:
        require_concrete("validate=True", *named)

    def all_finite(self, x: jax.Array, m: jax.Array) -> bool:
        return bool(np.all(np.isfinite(np.asarray(x)[np.asarray(m)])))

    def read_float(self, value: Any) -> float:
        return float(np.asarray(value).reshape(()))

    def read_int(self, x: jax.Array) -> int:
        return int(np.asarray(x))


OPS: ArrayOps = _JaxOps()
"""The primitive table the JAX backend passes to the shared algorithm."""
