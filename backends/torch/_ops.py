"""PyTorch's row of the backends' primitive table (`cegppo._backend_core.ArrayOps`).

A mask is counted in int64 and then cast (exact for any batch); a host number becomes a 0-d tensor on
the mask's device, while a normalizer tensor stays on its own device (a 0-d CPU tensor mixes with CUDA
ones, and moving it would synchronise). Reading values back (`all_finite`, `read_*`) happens only with
``validate=True``.
"""

from __future__ import annotations

from typing import Any

from cegppo._backend_core import ArrayOps

import torch

from ._common import as_bool_mask, as_float, compute_dtype

__all__ = ["OPS"]


class _TorchOps(ArrayOps):
    index_dtype = torch.int64

    def as_bool_mask(self, mask: Any) -> torch.Tensor:
        return as_bool_mask(mask)

    def compute_dtype(self, *named: tuple[str, Any]) -> torch.dtype:
        return compute_dtype(*named)

    def as_float(self, name: str, x: Any, dtype: Any, *, floating_only: bool = True) -> torch.Tensor:
        return as_float(name, x, dtype, floating_only=floating_only)

    def constant(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()

    def per_sequence_to_tokens(self, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return x[:, None].expand(shape)

    def scalar(self, value: float, like: torch.Tensor) -> torch.Tensor:
        return torch.full((), value, dtype=like.dtype, device=like.device)

    def all_false(self, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(like, dtype=torch.bool)

    def where(self, cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(cond, a, b)

    def cast(self, x: torch.Tensor, dtype: Any) -> torch.Tensor:
        return x.to(dtype)

    def total(self, x: torch.Tensor, dtype: Any = None) -> torch.Tensor:
        return x.sum() if dtype is None else x.sum().to(dtype)

    def row_total(self, x: torch.Tensor, dtype: Any = None, *, keepdims: bool = False) -> torch.Tensor:
        rows = x.sum(dim=-1, keepdim=keepdims)
        return rows if dtype is None else rows.to(dtype)

    def any_per_row(self, m: torch.Tensor) -> torch.Tensor:
        return m.any(dim=-1)

    def normalizer(self, value: Any, like: torch.Tensor) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.reshape(()).to(like.dtype)
        return torch.full((), self.read_float(value), dtype=like.dtype, device=like.device)

    def scale(self, x: torch.Tensor, factor: float) -> torch.Tensor:
        return x * factor

    def exp(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)

    def expm1(self, x: torch.Tensor) -> torch.Tensor:
        return torch.expm1(x)

    def abs(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)

    def clip(self, x: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
        return torch.clamp(x, min=lower, max=upper)

    def ratio_over_sg_ratio(self, logr: torch.Tensor) -> torch.Tensor:
        from ._objective import _RatioOverSgRatio  # the module that uses it first; it imports this one

        return _RatioOverSgRatio.apply(logr)

    def all_finite(self, x: torch.Tensor, m: torch.Tensor) -> bool:
        return bool(torch.isfinite(x.detach())[m].all())

    def read_float(self, value: Any) -> float:
        return float(value.reshape(())) if hasattr(value, "reshape") else float(value)

    def read_int(self, x: torch.Tensor) -> int:
        return int(x)


OPS: ArrayOps = _TorchOps()
"""The primitive table the torch backend passes to the shared algorithm."""
