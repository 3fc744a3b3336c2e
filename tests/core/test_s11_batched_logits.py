"""The logit head on logits with more than one leading axis, (B, T, V), and its dtypes (docs/spec.md S11).

S11 defines every function over the last axis (the vocabulary) with any leading shape; the other
S11 tests use (N, V) logits, on which `shape[:-1]` and `shape[:1]`, or `axis=-1` and `axis=1`, are
the same thing. Mutation testing (`nox -s mutation`, docs/contributing.md) showed such mutants surviving.
"""

from __future__ import annotations

import cegppo
import numpy as np
import pytest

RNG = np.random.default_rng(7)
Z = RNG.normal(size=(2, 3, 5)) * 2.0  # (B, T, V)
IDS = RNG.integers(0, 5, size=(2, 3))
G = RNG.normal(size=(2, 3))


@pytest.mark.parametrize("grad_output", [None, G], ids=["default", "given"])
def test_S11_gradients_of_batched_logits_are_those_of_each_row(grad_output: np.ndarray | None) -> None:
    def g(b: int) -> np.ndarray | None:
        return None if grad_output is None else grad_output[b]

    full = cegppo.token_log_probs_grad(Z, IDS, grad_output)
    rows = np.stack([cegppo.token_log_probs_grad(Z[b], IDS[b], g(b)) for b in range(Z.shape[0])])
    np.testing.assert_allclose(full, rows, rtol=1e-14, atol=1e-15)
    full = cegppo.entropy_grad(Z, grad_output)
    rows = np.stack([cegppo.entropy_grad(Z[b], g(b)) for b in range(Z.shape[0])])
    np.testing.assert_allclose(full, rows, rtol=1e-14, atol=1e-15)


def test_S11_token_log_probs_grad_is_onehot_minus_softmax_on_batched_logits() -> None:
    p = np.exp(Z - Z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    onehot = np.eye(Z.shape[-1])[IDS]
    np.testing.assert_allclose(cegppo.token_log_probs_grad(Z, IDS), onehot - p, rtol=1e-13, atol=1e-15)
    h = -np.sum(p * np.log(p), axis=-1, keepdims=True)
    np.testing.assert_allclose(cegppo.entropy_grad(Z), -p * (np.log(p) + h), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("fn", ["token_log_probs_grad", "entropy_grad"])
def test_S11_grad_output_shape_is_named_in_the_error(fn: str) -> None:
    args = (Z, IDS) if fn == "token_log_probs_grad" else (Z,)
    with pytest.raises(ValueError, match=r"^grad_output must have shape \(2, 3\) .*got shape \(2,\)"):
        getattr(cegppo, fn)(*args, np.ones(2))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("given", [False, True])
def test_S9_5_gradients_keep_the_compute_dtype(dtype: type, given: bool) -> None:
    z = Z.astype(dtype)
    g = G.astype(np.float64) if given else None  # a float64 cotangent does not promote float32 logits
    expected = np.result_type(dtype, np.float32)
    assert cegppo.token_log_probs_grad(z, IDS, g).dtype == expected
    assert cegppo.entropy_grad(z, g).dtype == expected
