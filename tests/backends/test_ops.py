"""The primitive table (`cegppo._backend_core.ArrayOps`) of each backend, against its own contract.

The shared algorithm runs on these primitives; the suites of the public functions check them only
through their results, where a framework's promotion rules can hide a slip (JAX's Python scalars
are weakly typed, so a scalar made in the wrong dtype still combines into the right one). The
contract of each primitive is its docstring in `ArrayOps`; these cases pin the ones such rules hide.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from array_backends import Backend

FLOAT_DTYPES = ["float64", "float32", "bfloat16", "float16"]


def _ops(backend: Backend) -> Any:
    return importlib.import_module(f"{backend.cg.__name__}._ops").OPS


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_scalar_is_0d_in_likes_dtype(backend: Backend, dtype: str) -> None:
    like = backend.asarray([1.0, 2.0], dtype=dtype)
    s = _ops(backend).scalar(0.75, like)
    assert tuple(s.shape) == ()
    assert backend.dtype_name(s) == dtype
    assert float(backend.to_np(s)) == 0.75  # exact in every floating dtype


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_normalizer_is_0d_in_likes_dtype(backend: Backend, dtype: str) -> None:
    like = backend.asarray([1.0, 2.0], dtype=dtype)
    for value in (3, 3.0, backend.asarray(3.0)):
        n = _ops(backend).normalizer(value, like)
        assert tuple(n.shape) == ()
        assert backend.dtype_name(n) == dtype
        assert float(backend.to_np(n)) == 3.0
