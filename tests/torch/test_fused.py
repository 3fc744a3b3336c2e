"""cegppo.torch.fused_linear_policy_loss (issue 5) beyond the conformance suite's S11.1 properties.

The fused loss, metrics and gradients against the float64 unfused path, chunk sizes, masked
garbage and all-masked batches of B, T >= 1 are S11.1 properties of the conformance suite
(`pytest tests/conformance --backend=torch`, tests/conformance/test_fused_conformance.py). Here:
central differences of the fused loss itself, empty shapes (B = 0, T = 0), dual-clip tokens,
bf16/fp16 inputs (which the fused adapter does not draw), micro-batch additivity, the (N, V)
allocation bound, the custom autograd function's contract (second backward, upstream gradient,
requires_grad) and argument checks. The reference (`reference`) is the float64 NumPy chain rule
through the full logits.
"""

from __future__ import annotations

import math
from typing import Any

import cegppo
import cegppo.torch as cg
import numpy as np
import pytest
import torch
from backend_cases import FUSED_BAD_OPTIONS
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch.utils._python_dispatch import TorchDispatchMode
from torch_cases import CONFIGS, TOL, away_from_kinks, to_np

REGIONS = ("clip_low", "clip_high", "dual_clip", "inside")
FINITE = {"allow_nan": False, "allow_infinity": False}


# --------------------------------------------------------------------------------------------
# inputs and the two reference paths
# --------------------------------------------------------------------------------------------


@st.composite
def fused_cases(
    draw: Any, *, max_b: int = 3, max_t: int = 5, max_h: int = 5, max_v: int = 9
) -> dict[str, Any]:
    """A float64 NumPy fused-head problem with every option drawn (all draws labelled).

    old_log_prob is set from the float64 log-probs of the drawn head and a drawn log-ratio, so
    every region of spec S2 is populated; the log-ratio is kept >= 1e-3 away from the kinks.
    """
    b = draw(st.integers(1, max_b), label="B")
    t = draw(st.integers(1, max_t), label="T")
    h = draw(st.integers(1, max_h), label="H")
    v = draw(st.integers(2, max_v), label="V")
    unit = st.floats(-1.5, 1.5, **FINITE)
    hidden = draw(hnp.arrays(np.float64, (b, t, h), elements=unit), label="hidden")
    weight = draw(hnp.arrays(np.float64, (v, h), elements=unit), label="weight")
    bias = draw(st.none() | hnp.arrays(np.float64, (v,), elements=unit), label="bias")
    ids = draw(hnp.arrays(np.int64, (b, t), elements=st.integers(0, v - 1)), label="token_ids")
    mask = draw(hnp.arrays(np.bool_, (b, t)), label="mask")
    cfg = draw(st.sampled_from(CONFIGS), label="cfg")
    per_seq = draw(st.booleans(), label="per-sequence advantages")
    adv = draw(
        hnp.arrays(
            np.float64, (b,) if per_seq else (b, t), elements=st.just(0.0) | st.floats(-2, 2, **FINITE)
        ),
        label="advantages",
    )
    logr = draw(hnp.arrays(np.float64, (b, t), elements=st.floats(-1.2, 1.2, **FINITE)), label="logr")
    tau = draw(st.sampled_from([1.0, 0.7, 1.6]), label="temperature")
    ecoef = draw(st.sampled_from([0.0, 0.01, -0.3]), label="entropy_coef")
    agg = draw(st.sampled_from(cegppo.AGG_MODES), label="agg")
    n_valid, n_rows = int(mask.sum()), int(mask.any(-1).sum())
    num_tokens = draw(st.none() | st.just(n_valid + 3), label="num_tokens")
    num_seqs = draw(st.none() | st.just(n_rows + 2), label="num_seqs")
    norm_length = (
        draw(st.none() | st.just(7.0), label="norm_length") if agg == "seq-mean-token-sum-norm" else None
    )
    chunk = draw(st.none() | st.integers(1, max(1, n_valid + 2)), label="chunk_size")
    z = (hidden @ weight.T + (0 if bias is None else bias)) / tau
    lp = cegppo.token_log_probs(z, ids)
    olp = lp - away_from_kinks(logr, cfg)
    return {
        "hidden": hidden, "weight": weight, "bias": bias, "token_ids": ids, "old_log_prob": olp,
        "advantages": adv, "mask": mask, "cfg": cfg, "temperature": tau, "entropy_coef": ecoef,
        "agg": agg, "num_tokens": num_tokens, "num_seqs": num_seqs, "norm_length": norm_length,
        "chunk_size": chunk,
    }  # fmt: skip


def _kw(case: dict[str, Any]) -> dict[str, Any]:
    keys = ("temperature", "entropy_coef", "agg", "num_tokens", "num_seqs", "norm_length")
    return {k: case[k] for k in keys}


def reference(
    case: dict[str, Any],
    *,
    magnitudes: dict[str, Any] | None = None,
    logits_dtype: torch.dtype | None = None,
) -> tuple[float, dict[str, float], dict[str, np.ndarray | None]]:
    """Loss, metrics and gradients from the NumPy reference in float64 (analytic chain rule).

    dloss/dz = token_log_probs_grad(z, a, dloss/dl) + entropy_grad(z, -entropy_coef c)
    dloss/dh = (dloss/dz) W / tau,  dloss/dW = (dloss/dz)^T h / tau,  dloss/db = sum (dloss/dz) / tau

    With `logits_dtype`, h W^T + b is rounded to that dtype before the division by tau, as a GEMM
    with that output dtype does (the half-precision path of the fused head).
    """
    m = np.asarray(case["mask"], bool)
    hid = np.where(m[..., None], np.asarray(case["hidden"], np.float64), 0.0)  # garbage rows never reach z
    ids = np.where(m, case["token_ids"], 0)
    w_ = np.asarray(case["weight"], np.float64)
    b_ = None if case["bias"] is None else np.asarray(case["bias"], np.float64)
    olp, adv, cfg, tau = case["old_log_prob"], case["advantages"], case["cfg"], case["temperature"]
    agg_kw = {
        "num_tokens": case["num_tokens"],
        "num_seqs": case["num_seqs"],
        "norm_length": case["norm_length"],
    }
    z = _gemm_logits(hid, w_, b_, logits_dtype) / tau
    lp = cegppo.token_log_probs(z, ids)
    ent = cegppo.entropy(z)
    c = cegppo.aggregation_weights(m, case["agg"], **agg_kw)
    ecoef = case["entropy_coef"]
    loss = cegppo.policy_loss(lp, olp, adv, m, cfg, case["agg"], **agg_kw) - ecoef * cegppo.aggregate_loss(
        np.where(m, ent, 0.0), m, case["agg"], **agg_kw
    )
    g_lp = cegppo.policy_loss_grad(lp, olp, adv, m, cfg, case["agg"], **agg_kw)
    gz = (cegppo.token_log_probs_grad(z, ids, g_lp) + cegppo.entropy_grad(z, -ecoef * c)) / tau
    grads: dict[str, np.ndarray | None] = {
        "hidden": gz @ w_,
        "weight": np.einsum("btv,bth->vh", gz, hid),
        "bias": None if b_ is None else gz.sum((0, 1)),
    }
    if magnitudes is not None:  # sums of |terms| of each gradient GEMM: the scale of its rounding error
        magnitudes["hidden"] = np.abs(gz) @ np.abs(w_)
        magnitudes["weight"] = np.einsum("btv,bth->vh", np.abs(gz), np.abs(hid))
        magnitudes["bias"] = None if b_ is None else np.abs(gz).sum((0, 1))
    metrics = {k: float(v) for k, v in cegppo.policy_metrics(lp, olp, adv, m, cfg).items()}
    metrics["entropy_mean"] = float(np.sum(np.where(m, ent, 0.0)) / max(int(m.sum()), 1))
    dent = cegppo.entropy_change_first_order(z, ids, -g_lp)  # w_t = c_t F_t A_t = -dloss/dl_t
    regions = cegppo.token_regions(lp, olp, adv, cfg)
    for name in REGIONS:
        metrics[f"entropy_change_{name}"] = float(np.sum(np.where(getattr(regions, name) & m, dent, 0.0)))
    return float(loss), metrics, grads


def _gemm_logits(
    hidden: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, dtype: torch.dtype | None
) -> np.ndarray:
    """h W^T + b in float64, then rounded to `dtype` when one is given."""
    z = hidden @ weight.T + (0 if bias is None else bias)
    return z if dtype is None else to_np(torch.tensor(z).to(dtype)).astype(np.float64)


def tensors(case: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """The case as torch tensors; hidden, weight, bias in `dtype` with requires_grad."""

    def leaf(x: np.ndarray | None) -> torch.Tensor | None:
        return None if x is None else torch.tensor(x, dtype=dtype).requires_grad_()

    return {
        "hidden": leaf(case["hidden"]),
        "weight": leaf(case["weight"]),
        "bias": leaf(case["bias"]),
        "token_ids": torch.tensor(case["token_ids"]),
        "old_log_prob": torch.tensor(case["old_log_prob"], dtype=dtype),
        "advantages": torch.tensor(case["advantages"], dtype=dtype),
        "mask": torch.tensor(case["mask"]),
    }


def run_fused(
    case: dict[str, Any], t: dict[str, Any], **over: Any
) -> tuple[torch.Tensor, dict[str, Any], dict]:
    kw = {**_kw(case), "chunk_size": case["chunk_size"], **over}
    loss, metrics = cg.fused_linear_policy_loss(
        t["hidden"], t["weight"], t["token_ids"], t["old_log_prob"], t["advantages"], t["mask"], case["cfg"],
        bias=t["bias"], **kw,
    )  # fmt: skip
    leaves = {k: t[k] for k in ("hidden", "weight", "bias") if t[k] is not None}
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))
    return loss, metrics, grads


def rounded(case: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """The case with its floating inputs rounded to `dtype` (what the backend actually sees)."""
    out = dict(case)
    for k in ("hidden", "weight", "bias", "old_log_prob", "advantages"):
        if out[k] is not None:
            out[k] = to_np(torch.tensor(out[k]).to(dtype))
    return out


def assert_close(name: str, got: Any, want: Any, tol: tuple[float, float]) -> None:
    got_np, want_np = np.asarray(to_np(got) if isinstance(got, torch.Tensor) else got), np.asarray(want)
    np.testing.assert_allclose(got_np, want_np, rtol=tol[0], atol=tol[1], err_msg=name)


# --------------------------------------------------------------------------------------------
# equality with the reference and the unfused path
# --------------------------------------------------------------------------------------------


@settings(max_examples=8)
@given(case=fused_cases(max_b=2, max_t=3, max_h=3, max_v=5))
def test_central_differences_float64(case: dict[str, Any]) -> None:
    """gradcheck-style: the gradients equal float64 central differences of the fused loss itself.

    (torch.autograd.gradcheck proper runs backward twice on one graph, which this function refuses
    by design: its gradients are computed in forward and scaled in place.) The step 1e-6 moves a
    log-ratio far less than the 1e-2 gap kept from the region boundaries.

    Every valid log-ratio is moved inside the trust interval: in the clipped regions the value is
    constant while the gradient is beta (1 +- eps) A by design (spec S3, S4), so there the gradient
    is not the value's derivative; S11.1's gradient property checks those regions against the
    analytic reference. Here the chain rule through the head (hidden, weight, bias, temperature,
    entropy bonus, chunks) is checked against the loss itself.
    """
    cfg = case["cfg"]
    z = _gemm_logits(case["hidden"], case["weight"], case["bias"], None) / case["temperature"]
    lp = cegppo.token_log_probs(z, case["token_ids"])
    inside = np.clip(lp - case["old_log_prob"], cfg.log_lower + 1e-2, cfg.log_upper - 1e-2)
    case = dict(case, old_log_prob=lp - inside)
    t = tensors(case, torch.float64)
    _, _, grads = run_fused(case, t)
    t = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in t.items()}
    step = 1e-6
    for name, g in grads.items():
        x = t[name].detach()
        fd = torch.zeros_like(x).view(-1)
        for i in range(x.numel()):
            vals = []
            for sign in (1.0, -1.0):
                t2 = dict(t)
                xp = x.clone().view(-1)
                xp[i] += sign * step
                t2[name] = xp.view_as(x)
                vals.append(float(cg.fused_linear_policy_loss(
                    t2["hidden"], t2["weight"], t2["token_ids"], t2["old_log_prob"], t2["advantages"],
                    t2["mask"], case["cfg"], bias=t2["bias"], chunk_size=case["chunk_size"], **_kw(case),
                )[0]))  # fmt: skip
            fd[i] = (vals[0] - vals[1]) / (2 * step)
        np.testing.assert_allclose(to_np(g).reshape(-1), to_np(fd), rtol=1e-6, atol=1e-8, err_msg=name)


# --------------------------------------------------------------------------------------------
# masks, empty batches, dual clip, bf16
# --------------------------------------------------------------------------------------------


def test_dual_clip_tokens_have_no_gradient() -> None:
    """S7: a token with A < 0 and delta > c has F = 0: it moves neither hidden nor weight."""
    torch.manual_seed(0)
    cfg = cegppo.presets.ce_gppo_official()  # c = 10
    hid = torch.randn(1, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([[1, 3]])
    with torch.no_grad():
        lp = cg.token_log_probs(hid @ w.T, ids)
    olp = lp - torch.tensor([[3.0, 0.05]], dtype=torch.float64)  # delta = e^3 > 10 (dual clip), then inside
    adv = torch.tensor([[-1.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True]])
    loss, metrics = cg.fused_linear_policy_loss(hid, w, ids, olp, adv, mask, cfg, agg="token-sum")
    loss.backward()
    assert float(metrics["dual_clip_frac"]) == 0.5
    assert float(metrics["entropy_change_dual_clip"]) == 0.0
    assert not bool(hid.grad[0, 0].any()) and bool(hid.grad[0, 1].any())
    assert float(loss) == pytest.approx(10.0 - math.exp(0.05), rel=1e-12)  # -(cA) - delta A


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@settings(max_examples=15)
@given(case=fused_cases())
def test_half_inputs_compute_in_float32(dtype: torch.dtype, case: dict[str, Any]) -> None:
    """S9.5: bf16/fp16 hidden and weight: float32 loss and metrics, gradients in the input dtype.

    The backend sees hidden, weight and bias rounded to `dtype`, and its GEMM rounds the logits to
    `dtype` (as `nn.Linear` in that dtype does); old_log_prob and advantages are passed in float32.
    The reference is the float64 computation on exactly that: rounded inputs, rounded logits. The
    drawn log-ratios are re-anchored on the rounded logits so they keep their distance from the
    region boundaries (rounding a logit by one bf16 ulp moves a log-prob by up to 2^-8 |z|, far more
    than that distance). What is left is float32 arithmetic, the rounding of the gradient GEMMs'
    inputs and outputs to `dtype`, and the accumulation order of the logits GEMM, which can round a
    logit one `dtype` ulp the other way.
    """
    r = half_precision_case(case, dtype)
    t = tensors(r, dtype)
    for k in ("old_log_prob", "advantages"):  # float32 as given: never via the half dtype
        t[k] = torch.tensor(r[k], dtype=torch.float32)
    got = run_fused(r, t)
    assert got[0].dtype == torch.float32 and all(v.dtype == torch.float32 for v in got[1].values())
    mags: dict[str, Any] = {}
    loss_ref, metrics_ref, grads_ref = reference(r, magnitudes=mags, logits_dtype=dtype)
    # one half-dtype ulp of the largest logit moves a log-prob by at most twice that much
    z = np.abs(_gemm_logits(r["hidden"], r["weight"], r["bias"], dtype)).max() / case["temperature"]
    ulp = float(torch.finfo(dtype).eps)
    atol = 4 * ulp * max(z, 1.0)
    assert_close("loss", got[0], loss_ref, (ulp, atol * 4))
    # H = -sum pi log pi moves by at most |dz|max (1 + log V) when every logit moves by |dz|max
    assert_close("entropy_mean", got[1]["entropy_mean"], metrics_ref["entropy_mean"],
                 (ulp, atol * (1 + np.log(case["weight"].shape[0]))))  # fmt: skip
    for k, g in grads_ref.items():
        if g is not None:
            assert got[2][k].dtype == dtype
            # A half-dtype GEMM of the (rounded) logits gradient: its error is bounded by ulp times the
            # sum of |terms| (Higham's dot-product bound), not by the result, which can cancel to 0.
            scale = max(float(np.abs(mags[k]).max()), 1e-3)
            assert_close(f"grad {k}", got[2][k].double(), g, (4 * ulp, 8 * atol * scale))


def half_precision_case(case: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """The case with hidden/weight/bias rounded to `dtype` and old_log_prob re-anchored so that the
    log-ratios against the `dtype`-rounded logits are the drawn ones (kept away from the kinks)."""
    r = rounded(case, dtype)
    tau, ids = case["temperature"], case["token_ids"]
    drawn_logr = cegppo.token_log_probs(_gemm_logits(case["hidden"], case["weight"], case["bias"], None) / tau,
                                        ids) - case["old_log_prob"]  # fmt: skip
    lp_seen = cegppo.token_log_probs(_gemm_logits(r["hidden"], r["weight"], r["bias"], dtype) / tau, ids)
    r["old_log_prob"] = lp_seen - drawn_logr
    r["advantages"] = case["advantages"]
    return r


# --------------------------------------------------------------------------------------------
# the tests can fail; no (N, V) buffer; misuse
# --------------------------------------------------------------------------------------------


def _small_case(seed: int = 0, **over: Any) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    b, t, h, v = 2, 3, 4, 7
    hidden, weight = rng.normal(size=(b, t, h)), rng.normal(size=(v, h))
    ids = rng.integers(0, v, (b, t))
    z = hidden @ weight.T
    case = {
        "hidden": hidden, "weight": weight, "bias": rng.normal(size=v), "token_ids": ids,
        "old_log_prob": cegppo.token_log_probs(z, ids) - rng.normal(0, 0.4, (b, t)),
        "advantages": rng.normal(size=(b, t)), "mask": np.array([[1, 1, 0], [1, 0, 1]], bool),
        "cfg": cegppo.presets.ce_gppo_official(), "temperature": 1.0, "entropy_coef": 0.05, "agg": "token-mean",
        "num_tokens": None, "num_seqs": None, "norm_length": None, "chunk_size": 2,
    }  # fmt: skip
    case.update(over)
    return case


def test_micro_batches_sum_to_the_full_batch() -> None:
    """S8.3: with the global num_tokens / num_seqs, the losses and gradients of two halves add up."""
    for agg in cegppo.AGG_MODES:
        case = _small_case(agg=agg, chunk_size=None)
        n_tok, n_seq = int(case["mask"].sum()), int(case["mask"].any(-1).sum())
        full = run_fused(case, tensors(case, torch.float64))
        parts = []
        for rows in (slice(0, 1), slice(1, 2)):
            part = dict(case, num_tokens=n_tok, num_seqs=n_seq, norm_length=3.0)
            for k in ("hidden", "token_ids", "old_log_prob", "advantages", "mask"):
                part[k] = case[k][rows]
            parts.append(run_fused(part, tensors(part, torch.float64)))
        full_l = run_fused(dict(case, norm_length=3.0), tensors(case, torch.float64))
        tol = TOL[torch.float64]["value"]
        assert_close(f"{agg} loss", parts[0][0] + parts[1][0], to_np(full_l[0]), tol)
        assert_close(f"{agg} grad weight", parts[0][2]["weight"] + parts[1][2]["weight"],
                     to_np(full_l[2]["weight"]), tol)  # fmt: skip
        assert full[0].isfinite()


class _LargestAllocation(TorchDispatchMode):
    """Records the largest number of elements of any tensor produced by an op."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(x, torch.Tensor):
                self.largest = max(self.largest, x.numel())
        return out


def test_no_tokens_by_vocab_tensor_is_ever_allocated() -> None:
    """Issue 5: peak extra memory is O(chunk x V): no op, forward or backward, yields N x V elements.

    N = 256 valid tokens, V = 300, H = 8, chunk 16: the largest tensors allowed are the weight
    gradient (V x H = 2400) and a chunk's logits (16 x 300 = 4800); the unfused path's logits hold
    N x V = 76800 elements, which the same probe sees (so the probe can fail).
    """
    torch.manual_seed(0)
    b, t, h, v = 4, 64, 8, 300
    hid = torch.randn(b, t, h, requires_grad=True)
    w = torch.randn(v, h, requires_grad=True)
    ids = torch.randint(0, v, (b, t))
    olp = -torch.rand(b, t) * 5
    adv = torch.randn(b, t)
    mask = torch.ones(b, t, dtype=torch.bool)
    cfg = cegppo.presets.ce_gppo_official()
    with _LargestAllocation() as probe:
        loss, _ = cg.fused_linear_policy_loss(
            hid, w, ids, olp, adv, mask, cfg, chunk_size=16, entropy_coef=0.01
        )
        loss.backward()
    assert probe.largest <= 16 * v, probe.largest
    with _LargestAllocation() as probe_unfused:
        lp = cg.token_log_probs(hid @ w.T, ids)
        cg.policy_loss(lp, olp, adv, mask, cfg).backward()
    assert probe_unfused.largest >= b * t * v


def test_second_backward_is_refused() -> None:
    """The gradients are computed in forward and scaled in place: a second backward would be wrong."""
    case = _small_case()
    t = tensors(case, torch.float64)
    loss, _ = cg.fused_linear_policy_loss(
        t["hidden"], t["weight"], t["token_ids"], t["old_log_prob"], t["advantages"], t["mask"], case["cfg"]
    )
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


def test_gradient_scales_with_the_upstream_gradient_and_respects_requires_grad() -> None:
    """d(3 loss) = 3 d loss; only the leaves that require grad receive one."""
    case = _small_case()
    t = tensors(case, torch.float64)
    t["weight"].requires_grad_(False)
    loss, _ = cg.fused_linear_policy_loss(
        t["hidden"], t["weight"], t["token_ids"], t["old_log_prob"], t["advantages"], t["mask"], case["cfg"],
        bias=t["bias"],
    )  # fmt: skip
    (3 * loss).backward()
    _, _, want = reference(dict(case, entropy_coef=0.0))
    assert t["weight"].grad is None
    assert_close("hidden", t["hidden"].grad, 3 * want["hidden"], TOL[torch.float64]["grad"])
    assert_close("bias", t["bias"].grad, 3 * want["bias"], TOL[torch.float64]["grad"])


def _args() -> tuple[list[Any], Any]:
    case = _small_case()
    t = tensors(case, torch.float32)
    return [t["hidden"], t["weight"], t["token_ids"], t["old_log_prob"], t["advantages"], t["mask"]], case[
        "cfg"
    ]


BAD_CALLS: list[tuple[str, Any, type[Exception], str]] = [
    ("hidden 2-D", lambda a: a.__setitem__(0, a[0][0]), ValueError, "hidden"),
    ("hidden not a tensor", lambda a: a.__setitem__(0, a[0].detach().numpy()), TypeError, "hidden"),
    ("hidden integer", lambda a: a.__setitem__(0, a[0].detach().long()), TypeError, "hidden"),
    ("weight wrong H", lambda a: a.__setitem__(1, a[1][:, :2]), ValueError, "weight"),
    ("weight 1-D", lambda a: a.__setitem__(1, a[1][0]), ValueError, "weight"),
    ("token_ids float", lambda a: a.__setitem__(2, a[2].double()), TypeError, "token_ids"),
    ("token_ids shape", lambda a: a.__setitem__(2, a[2][:, :2]), ValueError, "token_ids"),
    ("old_log_prob shape", lambda a: a.__setitem__(3, a[3][:1]), ValueError, "old_log_prob"),
    ("old_log_prob int", lambda a: a.__setitem__(3, a[3].long()), TypeError, "old_log_prob"),
    ("advantages shape", lambda a: a.__setitem__(4, a[4][:, :1]), ValueError, "advantages"),
    ("mask shape", lambda a: a.__setitem__(5, a[5][:1]), ValueError, "mask"),
    ("mask float", lambda a: a.__setitem__(5, a[5].float()), TypeError, "mask"),
]


@pytest.mark.parametrize("what,edit,exc,name", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_arrays_are_refused_naming_the_argument(
    what: str, edit: Any, exc: type[Exception], name: str
) -> None:
    """S9.6: shape/dtype errors raise ValueError/TypeError naming the argument."""
    args, cfg = _args()
    edit(args)
    with pytest.raises(exc, match=name):
        cg.fused_linear_policy_loss(*args, cfg)


BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"bias": torch.zeros(3)}, ValueError, "bias"),
    ({"bias": torch.zeros(7, dtype=torch.long)}, TypeError, "bias"),
    *FUSED_BAD_OPTIONS,
]


@pytest.mark.parametrize("kw,exc,name", BAD_OPTIONS, ids=[f"{next(iter(k))}={next(iter(k.values()))!r}"[:40]
                                                          for k, _, _ in BAD_OPTIONS])  # fmt: skip
def test_bad_options_are_refused_naming_the_argument(
    kw: dict[str, Any], exc: type[Exception], name: str
) -> None:
    """S9.6: invalid hyperparameters raise ValueError/TypeError naming the argument."""
    args, cfg = _args()
    with pytest.raises(exc, match=name):
        cg.fused_linear_policy_loss(*args, cfg, **kw)


def test_validate_checks_token_ids_and_finite_values() -> None:
    """validate=True: ids outside [0, V) and non-finite old log-probs at valid positions are refused."""
    args, cfg = _args()
    args[2] = args[2].clone()
    args[2][0, 0] = 7  # V = 7, and (0, 0) is valid
    with pytest.raises(ValueError, match="token_ids"):
        cg.fused_linear_policy_loss(*args, cfg, validate=True)
    args, cfg = _args()
    args[3] = args[3].clone()
    args[3][1, 0] = float("inf")
    with pytest.raises(ValueError, match="old_log_prob"):
        cg.fused_linear_policy_loss(*args, cfg, validate=True)
    args[3][1, 0] = 0.0
    args[3][0, 2] = float("nan")  # masked: fine
    cg.fused_linear_policy_loss(*args, cfg, validate=True)


def test_bad_config_is_refused() -> None:
    args, _ = _args()
    with pytest.raises(TypeError, match="cfg"):
        cg.fused_linear_policy_loss(*args, {"eps_low": 0.2})


def test_family_head_under_torch_compile_equals_eager() -> None:
    """torch.compile (Dynamo, backend "eager"; graph breaks allowed at the mask's nonzero) of GSPO's fused head
    gives the eager value, metrics and gradients. GSPO is the member with every code path: its F comes from
    a log-prob pass over whole rows, then the chunk loop (one compiled case: Dynamo costs seconds per call)."""
    cfg = cegppo.GSPOConfig(eps_low=0.05, eps_high=0.05)
    case = _small_case(3, cfg=cfg, agg=None)
    names = ("token_ids", "old_log_prob", "advantages", "mask")
    rest = [torch.tensor(case[k]) for k in names]
    opts = {k: case[k] for k in ("temperature", "entropy_coef", "agg", "chunk_size")}

    def run(fn: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor]]:
        params = [torch.tensor(case[k], requires_grad=True) for k in ("hidden", "weight", "bias")]
        loss, metrics = fn(params[0], params[1], *rest, cfg, bias=params[2], **opts)
        loss.backward()
        return loss.detach(), metrics, [p.grad for p in params]

    torch._dynamo.reset()
    eager = run(cg.fused_linear_policy_loss)
    compiled = run(torch.compile(cg.fused_linear_policy_loss, backend="eager"))
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-12, atol=1e-12)
    assert compiled[1].keys() == eager[1].keys()
    for key in eager[1]:
        torch.testing.assert_close(compiled[1][key], eager[1][key], rtol=1e-12, atol=1e-12, msg=key)
    for got, want in zip(compiled[2], eager[2], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    want_loss = cegppo.fused_linear_policy_loss(case["hidden"], case["weight"], *(case[k] for k in names), cfg,
                                                bias=case["bias"], **opts)[0]
    np.testing.assert_allclose(eager[0].numpy(), want_loss, rtol=1e-12)
