"""Shared strategies, tolerances and helpers for the cegppo.torch tests (not collected: no test_ prefix).

Tolerances (docs/backends.md "Dtype rules and tolerances"): values and gradients are compared with
the NumPy reference evaluated on the same (dtype-rounded) inputs.
"""

from __future__ import annotations

from typing import Any

import cegppo
import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# (rtol, atol) per dtype: values and gradients (the reference runs in the same compute dtype).
TOL: dict[torch.dtype, dict[str, tuple[float, float]]] = {
    torch.float64: {"value": (1e-10, 1e-10), "grad": (1e-10, 1e-10)},
    torch.float32: {"value": (1e-5, 1e-5), "grad": (1e-5, 1e-5)},
    # bf16/fp16 inputs: computed in float32 on the rounded inputs, so the value is float32-accurate;
    # the gradient is returned in the input dtype, so it carries that dtype's rounding (2^-8 for
    # bf16, 2^-11 for fp16, relative) on top.
    torch.bfloat16: {"value": (1e-5, 1e-5), "grad": (2**-8, 1e-6)},
    torch.float16: {"value": (1e-5, 1e-5), "grad": (2**-11, 1e-6)},
}

NP_COMPUTE = {
    torch.float64: np.float64,
    torch.float32: np.float32,
    torch.bfloat16: np.float32,
    torch.float16: np.float32,
}

CONFIGS = [
    cegppo.CEGPPOConfig(),
    cegppo.presets.ce_gppo_7b(),
    cegppo.presets.ce_gppo_official(),
    cegppo.presets.ppo(),
    cegppo.presets.dual_clip_ppo(),
    cegppo.presets.dapo(),
    cegppo.presets.gppo(),
    cegppo.CEGPPOConfig(eps_low=0.3, eps_high=0.5, beta_low=0.75, beta_high=2.0, dual_clip=1.5),
]


def to_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64 if t.dtype.is_floating_point else t.dtype).numpy()


def away_from_kinks(logr: np.ndarray, cfg: cegppo.CEGPPOConfig, gap: float = 1e-3) -> np.ndarray:
    """Move log-ratios within `gap` of a region boundary (clip bounds, dual clip) out of that band."""
    out = np.array(logr, dtype=np.float64)
    bounds = [cfg.log_lower, cfg.log_upper] + ([] if cfg.log_dual_clip is None else [cfg.log_dual_clip])
    for b in bounds:
        near = np.abs(out - b) < gap
        out = np.where(near, b + np.where(out >= b, 2 * gap, -2 * gap), out)
    return out


@st.composite
def policy_batches(
    draw: Any, *, logr_scale: float = 1.0, per_sequence: bool | None = None, max_b: int = 6, max_t: int = 9
) -> dict[str, Any]:
    """Float64 NumPy inputs of policy_loss: log_prob, old_log_prob, advantages, mask (all labelled)."""
    b = draw(st.integers(1, max_b), label="B")
    t = draw(st.integers(1, max_t), label="T")
    finite = {"allow_nan": False, "allow_infinity": False}
    lp = draw(hnp.arrays(np.float64, (b, t), elements=st.floats(-8, 0, **finite)), label="log_prob")
    logr = draw(
        hnp.arrays(np.float64, (b, t), elements=st.floats(-2 * logr_scale, 2 * logr_scale, **finite)),
        label="logr",
    )
    seq = draw(st.booleans(), label="per_sequence") if per_sequence is None else per_sequence
    adv_shape = (b,) if seq else (b, t)
    adv = draw(
        hnp.arrays(np.float64, adv_shape, elements=st.one_of(st.just(0.0), st.floats(-3, 3, **finite))),
        label="advantages",
    )
    mask = draw(hnp.arrays(np.bool_, (b, t)), label="mask")
    return {"log_prob": lp, "logr": logr, "advantages": adv, "mask": mask}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ddp_worker(
    rank: int, world: int, port: int, data: dict[str, np.ndarray], aggs: list[str], out: str
) -> None:
    """One rank of the 2-process gloo equivalence test (run with torch.multiprocessing.spawn).

    Rank r takes rows `data["rows"][r]` of the batch. For every aggregation mode it computes the
    global counts with `global_counts`, the local loss with the global normalizers and
    (a) the gradient w.r.t. its own log_prob rows, (b) the gradient of a DDP-wrapped linear model
    producing log_prob, with the loss multiplied by the world size (docs/backends.md).
    """
    import datetime
    import os

    import cegppo.torch as cg
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
    try:
        rows = data["rows"][rank]
        cfg = cegppo.CEGPPOConfig(**data["cfg"])
        lp = torch.tensor(data["log_prob"][rows])
        olp = torch.tensor(data["old_log_prob"][rows])
        adv = torch.tensor(data["advantages"][rows])
        mask = torch.tensor(data["mask"][rows])
        feats = torch.tensor(data["features"][rows])
        results: dict[str, Any] = {}
        for agg in aggs:
            num_tokens, num_seqs = cg.global_counts(mask)
            x = lp.clone().requires_grad_()
            loss = cg.policy_loss(x, olp, adv, mask, cfg, agg, num_tokens, num_seqs)
            loss.backward()
            total = loss.detach().clone()
            dist.all_reduce(total)
            torch.manual_seed(0)
            model = torch.nn.Linear(feats.shape[-1], 1, bias=False).double()
            with torch.no_grad():
                model.weight.copy_(torch.tensor(data["weight"]))
            ddp = DistributedDataParallel(model)
            logp = lp + ddp(feats).squeeze(-1)
            world_size = dist.get_world_size()
            (cg.policy_loss(logp, olp, adv, mask, cfg, agg, num_tokens, num_seqs) * world_size).backward()
            results[agg] = {
                "loss_sum": float(total),
                "grad_rows": x.grad.numpy().copy(),
                "ddp_weight_grad": model.weight.grad.numpy().copy(),
                "counts": (int(num_tokens), int(num_seqs)),
            }
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def isclose_or_same_nonfinite(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    same_nonfinite = np.array_equal(np.isfinite(a), np.isfinite(b)) and np.array_equal(
        a[~np.isfinite(a)], b[~np.isfinite(b)], equal_nan=True
    )
    fin = np.isfinite(a) & np.isfinite(b)
    return bool(same_nonfinite and np.allclose(a[fin], b[fin], rtol=rtol, atol=atol))


__all__ = [
    "CONFIGS",
    "NP_COMPUTE",
    "TOL",
    "away_from_kinks",
    "ddp_worker",
    "free_port",
    "isclose_or_same_nonfinite",
    "policy_batches",
    "to_np",
]
