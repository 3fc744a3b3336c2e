"""The softmax head: log-probs, entropy, their analytic gradients, first-order entropy change.

docs/spec.md clause S11 ("Logit head and entropy analysis"); after Cui et al. 2025 (arXiv 2505.22617, Lemma 1)
and arXiv 2509.20712 Eq. 7. Everything is over the last axis (the vocabulary, size V).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from ._arrays import as_float, compute_dtype
from ._validation import check_id_range, check_logits_shapes

__all__ = [
    "entropy",
    "entropy_change_first_order",
    "entropy_grad",
    "token_log_probs",
    "token_log_probs_grad",
]


def _logits(logits: Any) -> np.ndarray:
    check_logits_shapes(logits)
    return as_float("logits", logits, compute_dtype(("logits", logits)))


def _ids(ids: Any, logits: np.ndarray) -> np.ndarray:
    check_logits_shapes(logits, ids)
    arr = np.asarray(ids)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"ids must be an integer array, got dtype {arr.dtype}")
    if arr.size:  # the reference has no device: it reads the ids always (spec S9.6)
        check_id_range("ids", int(arr.min()), int(arr.max()), logits.shape[-1])
    return arr


def _grad_output(grad_output: Any, z: np.ndarray) -> np.ndarray:
    """The cotangent of a (...)-shaped output: default 1; its shape must be logits' without V."""
    if grad_output is None:
        return np.ones(z.shape[:-1], z.dtype)
    shape = np.shape(grad_output)
    if shape != z.shape[:-1]:
        raise ValueError(f"grad_output must have shape {z.shape[:-1]} (logits without the vocab axis), got shape {shape}")
    return as_float("grad_output", grad_output, z.dtype, floating_only=False)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    zmax = np.max(z, axis=-1, keepdims=True)
    zmax = np.where(np.isfinite(zmax), zmax, 0)
    shifted = z - zmax
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
        # An all -inf row (every token banned) has no distribution: its log-probs stay -inf
        # (probabilities 0, entropy 0) instead of -inf - (-inf) = NaN.
        return np.where(np.isneginf(lse), -np.inf, shifted - lse)


def _p_logp(logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p, p * log p) with 0 * log 0 = 0, for logits that hold -inf (banned tokens)."""
    p = np.exp(logp)
    return p, np.where(p > 0, p * np.where(p > 0, logp, 0), 0)


def token_log_probs(logits: Any, ids: Any) -> np.ndarray:
    """log softmax(z)[a] for each position: log pi(a | s) = z_a - logsumexp(z).

    Args:
        logits: (..., V) floating-point logits z.
        ids: (...) integer token ids a in [0, V).

    Returns:
        (...) log-probs in the compute dtype.
    """
    z = _logits(logits)
    a = _ids(ids, z)
    return np.take_along_axis(_log_softmax(z), a[..., None], axis=-1)[..., 0]


def token_log_probs_grad(logits: Any, ids: Any, grad_output: Any = None) -> np.ndarray:
    """d token_log_probs / d logits, as a vector-Jacobian product (..., V):

        d log pi_a / d z_j = 1[j = a] - pi_j,   returned times grad_output (default 1).
    """
    z = _logits(logits)
    a = _ids(ids, z)
    g = _grad_output(grad_output, z)
    onehot = np.zeros_like(z)
    np.put_along_axis(onehot, a[..., None], 1, axis=-1)
    return cast(np.ndarray, g[..., None] * (onehot - np.exp(_log_softmax(z))))


def entropy(logits: Any) -> np.ndarray:
    """Shannon entropy of softmax(z) in nats: H = -sum_j pi_j log pi_j. Shape (...)."""
    z = _logits(logits)
    _, plogp = _p_logp(_log_softmax(z))
    return cast(np.ndarray, -np.sum(plogp, axis=-1))


def entropy_grad(logits: Any, grad_output: Any = None) -> np.ndarray:
    """d entropy / d logits, as a vector-Jacobian product (..., V):

        d H / d z_j = -pi_j (log pi_j + H),   returned times grad_output (default 1).
    """
    z = _logits(logits)
    logp = _log_softmax(z)
    p, plogp = _p_logp(logp)
    h = -np.sum(plogp, axis=-1, keepdims=True)
    g = _grad_output(grad_output, z)
    return cast(np.ndarray, g[..., None] * -(plogp + p * h))


def entropy_change_first_order(logits: Any, ids: Any, weight: Any) -> np.ndarray:
    """First-order entropy change when token a's logits take the step dz = weight (e_a - pi).

        dH = weight * ( -pi_a (log pi_a + H) + sum_j pi_j^2 (log pi_j + H) )

    This is the policy-gradient step of one sampled token on a softmax head (the direction
    d log pi_a / d z) scaled by `weight` = eta * w, where w is the token's weight in the objective
    (for CE-GPPO, w = c_t F_t A_t: spec S4, S8). It is the per-token form of arXiv 2509.20712 Eq. 7
    (after arXiv 2505.22617): entropy falls when a likely token is pushed up or an unlikely one down,
    and rises in the opposite cases. Exact to first order: H(z + dz) - H(z) = dH + O(|dz|^2).

    Args:
        logits: (..., V) logits z.
        ids: (...) sampled token ids a.
        weight: (...) step size along (e_a - pi), i.e. learning rate times loss weight.

    Returns:
        (...) first-order entropy change per position.
    """
    z = _logits(logits)
    a = _ids(ids, z)
    check_logits_shapes(z, None, weight)
    w = as_float("weight", weight, z.dtype, floating_only=False)
    logp = _log_softmax(z)
    p, plogp = _p_logp(logp)
    h = -np.sum(plogp, axis=-1, keepdims=True)
    # s_j = pi_j (log pi_j + H): the entropy gradient is -s (see entropy_grad).
    s = plogp + p * h
    s_a = np.take_along_axis(s, a[..., None], axis=-1)[..., 0]
    return cast(np.ndarray, w * (-s_a + np.sum(p * s, axis=-1)))
