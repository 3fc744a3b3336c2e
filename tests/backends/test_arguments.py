"""Arguments of cegppo.torch and cegppo.jax (spec S9.6): the reference's TypeError for a bad type, named,
before any computation; a complex weight refused; public signatures that extend the reference's.

The ValueErrors are checked per framework (tests/torch: before any op is dispatched; tests/jax: while
tracing)."""

from __future__ import annotations

import re

import cegppo
import numpy as np
import pytest
from array_backends import Backend
from backend_cases import BAD_TYPE_CALLS, bad_type_argument, signature_drift


def good_batch() -> tuple[np.ndarray, ...]:
    """(log_prob, old_log_prob, advantages, mask) of shape (2, 3) that policy_loss accepts."""
    return np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), np.ones((2, 3), bool)


@pytest.mark.parametrize("name", sorted(BAD_TYPE_CALLS))
def test_S9_6_type_errors_name_the_argument(backend: Backend, name: str) -> None:
    """Same exception type as the reference; the message starts with the argument's name; no tensor op ran first."""
    cfg = cegppo.CEGPPOConfig()
    ref_args, ref_kwargs = BAD_TYPE_CALLS[name](*good_batch(), cfg, lambda x, dtype: x.astype(dtype))
    with pytest.raises(TypeError):
        cegppo.policy_loss(*ref_args, **ref_kwargs)
    args, kwargs = BAD_TYPE_CALLS[name](*(backend.asarray(x) for x in good_batch()), cfg, backend.asarray)
    with backend.recording_ops() as ops, pytest.raises(TypeError) as got:
        backend.cg.policy_loss(*args, **kwargs)
    assert str(got.value).startswith(bad_type_argument(name) + " "), got.value
    assert ops == [], ops


def test_S9_6_the_aggregation_functions_name_an_array_of_another_framework(backend: Backend) -> None:
    """aggregate_loss and global_counts refuse an array of another framework, naming the argument."""
    with pytest.raises(TypeError, match=r"^per_token_loss must be a \S+( or \S+)?, got ForeignArray$"):
        backend.cg.aggregate_loss(ForeignArray(), backend.asarray(np.ones((1, 1), bool)))
    with pytest.raises(TypeError, match=r"^mask must be a \S+( or \S+)?, got ForeignArray$"):
        backend.cg.global_counts(ForeignArray())


@pytest.mark.parametrize("name", ["log_prob", "old_log_prob", "advantages"])
def test_S9_6_validate_names_the_input_that_is_not_finite(backend: Backend, name: str) -> None:
    """validate=True reads each input at the valid positions and names the first one that is not finite."""
    batch = dict(zip(("log_prob", "old_log_prob", "advantages"), good_batch()[:3], strict=True))
    batch[name] = batch[name].copy()
    batch[name][0, 1] = np.nan
    args = [backend.asarray(batch[k]) for k in ("log_prob", "old_log_prob", "advantages")]
    with pytest.raises(ValueError, match=rf"^{name} holds non-finite values at valid \(mask = True\) positions$"):
        backend.cg.policy_loss(*args, backend.asarray(good_batch()[3]), cegppo.CEGPPOConfig(), validate=True)


def test_a_complex_weight_is_refused_not_truncated(backend: Backend) -> None:
    """The shared dtype rule: integer weights are fine, complex ones would lose their imaginary part in a
    cast, so they are refused by name."""
    z, ids = backend.asarray(np.zeros((2, 4))), backend.asarray(np.array([1, 3]))
    backend.cg.entropy_change_first_order(z, ids, backend.asarray(np.array([2, -1])))
    dtype = re.escape(str(backend.dtype("complex64")))
    with pytest.raises(TypeError, match=rf"^weight must be a real numeric array, got dtype {dtype}$"):
        backend.cg.entropy_change_first_order(z, ids, backend.asarray(np.array([1j, 1], np.complex64)))


def test_public_signatures_extend_the_reference_s(backend: Backend) -> None:
    assert signature_drift(backend.cg) == []



class ForeignArray:
    """An array of another framework (a NumPy array is one for torch): a shape and a dtype, nothing else."""

    shape = (1, 1)
    dtype = np.dtype(bool)


def test_S11_the_fused_head_refuses_an_array_of_another_framework_before_reading_its_shape(backend: Backend) -> None:
    """Each argument meets the backend's type check first: a foreign mask of the wrong shape is refused by
    type, naming the argument, not by its shape."""
    rng = np.random.default_rng(0)
    arrays = [backend.asarray(x) for x in (rng.normal(size=(2, 3, 4)), rng.normal(size=(5, 4)), np.zeros((2, 3), np.int64),
                                           np.full((2, 3), -1.5), np.array([1.0, -1.0]))]
    with pytest.raises(TypeError, match=r"^mask must be a \S+( or \S+)?, got ForeignArray$"):
        backend.cg.fused_linear_policy_loss(*arrays, ForeignArray(), cegppo.CEGPPOConfig())
