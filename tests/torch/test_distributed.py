"""Data parallelism over torch.distributed (spec S8.3): 2 CPU processes on gloo equal one process.

Every aggregation mode is linear in the per-token losses, loss = sum_t c_t l_t (spec S8), so with
the *global* normalizers N = sum_ranks n_tok and S = sum_ranks n_seq (`cg.global_counts`, one
all-reduce) the per-micro-batch losses of all ranks sum to the full-batch loss, and the
all-reduced (SUM) parameter gradients to the full-batch gradient. DDP *averages* gradients over the
W ranks, so `(loss * W).backward()` under DDP gives the full-batch gradient (the factor documented
in `cg.global_counts` and docs/backends.md).

Set-up: a tiny linear policy (logits = x @ W, log-probs by `cg.token_log_probs`) with shared
parameters W (D, V), float64. The batch of 7 sequences is split unevenly over 2 ranks (3 | 4 rows,
different mask densities, one fully masked row, NaN/inf garbage at masked positions), and each
rank splits its shard again into 2 micro-batches (gradient accumulation). The two workers are this
file run as a script (`--worker`), rendezvous through a `file://` store (no TCP port to pick).

The "local counts" runs (normalizers left to each micro-batch, the classic bug) must give a
different answer for every normalised mode: that is what shows these tests can fail.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import cegppo
import cegppo.torch as cg
import pytest
import torch

WORLD = 2
B, T, D, V = 7, 6, 4, 5
# rows of the global batch held by each rank, and each rank's micro-batches (row slices)
RANK_ROWS = {0: (0, 3), 1: (3, 7)}
MICRO_BATCHES = {0: [(0, 1), (1, 3)], 1: [(3, 5), (5, 7)]}
CFG = cegppo.presets.ce_gppo_official()
TIMEOUT_S = 120


def make_problem() -> dict[str, torch.Tensor]:
    """The global batch (deterministic: every process builds the same one)."""
    gen = torch.Generator().manual_seed(1234)
    f64 = torch.float64
    x = torch.randn(B, T, D, generator=gen, dtype=f64)
    ids = torch.randint(0, V, (B, T), generator=gen)
    w0 = torch.randn(D, V, generator=gen, dtype=f64) * 0.7
    with torch.no_grad():
        lp0 = cg.token_log_probs(x @ w0, ids)
    # old log-probs: a spread of log-ratios so that every region (clip_low, clip_high, dual clip,
    # inside) is populated
    logr = torch.randn(B, T, generator=gen, dtype=f64) * 0.8
    logr[0, 0], logr[4, 1] = 3.0, -3.0  # dual-clip / far below the interval
    old = lp0 - logr
    adv = torch.randn(B, T, generator=gen, dtype=f64)
    adv[0, 0] = -1.5  # with logr = 3 > log(c = 10): a dual-clip token
    # rank 0 (rows 0-2) dense, rank 1 (rows 3-6) sparse, row 5 fully masked
    mask = torch.rand(B, T, generator=gen) < torch.tensor([0.9, 0.9, 0.9, 0.4, 0.4, 0.0, 0.4])[:, None]
    mask[0, 0] = mask[3, 0] = True
    old = torch.where(mask, old, torch.tensor(float("nan"), dtype=f64))
    adv = torch.where(mask, adv, torch.tensor(float("inf"), dtype=f64))
    return {"x": x, "ids": ids, "w0": w0, "old": old, "adv": adv, "mask": mask}


class Policy(torch.nn.Module):
    """logits = x @ W; log pi(a | s) of the sampled ids."""

    def __init__(self, w0: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w0.clone())

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return cg.token_log_probs(x @ self.w, ids)


def _loss(model: Any, p: dict[str, torch.Tensor], rows: tuple[int, int], agg: str, n_tok: Any, n_seq: Any):
    s = slice(*rows)
    lp = model(p["x"][s], p["ids"][s])
    return cg.policy_loss(lp, p["old"][s], p["adv"][s], p["mask"][s], CFG, agg, n_tok, n_seq)


def full_batch(agg: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Single process, whole batch, default (local = global) normalizers: (loss, dloss/dW)."""
    p = make_problem()
    model = Policy(p["w0"])
    loss = _loss(model, p, (0, B), agg, None, None)
    loss.backward()
    return loss.detach(), model.w.grad.detach()


def _worker(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    p = make_problem()
    lo, hi = RANK_ROWS[rank]
    results: dict[str, Any] = {}
    n_tok, n_seq = cg.global_counts(p["mask"][lo:hi])  # one all-reduce
    results["counts"] = (n_tok.clone(), n_seq.clone())
    for agg in cegppo.AGG_MODES:
        # 1. plain data parallelism: local backward per micro-batch, then all-reduce SUM.
        for counts in ("global", "local"):
            model = Policy(p["w0"])
            total = torch.zeros((), dtype=torch.float64)
            for rows in MICRO_BATCHES[rank]:
                norms = (n_tok, n_seq) if counts == "global" else (None, None)
                loss = _loss(model, p, rows, agg, *norms)
                loss.backward()
                total += loss.detach()
            grad = model.w.grad.clone()
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            results[f"{agg}/{counts}"] = (total, grad)
        # 2. DDP (averages gradients): scale the local loss by the world size.
        ddp = DDP(Policy(p["w0"]))
        total = torch.zeros((), dtype=torch.float64)
        (first, last) = MICRO_BATCHES[rank]
        with ddp.no_sync():  # gradient accumulation: synchronise on the last micro-batch only
            loss = _loss(ddp, p, first, agg, n_tok, n_seq)
            (loss * dist.get_world_size()).backward()
            total += loss.detach()
        loss = _loss(ddp, p, last, agg, n_tok, n_seq)
        (loss * dist.get_world_size()).backward()
        total += loss.detach()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        results[f"{agg}/ddp"] = (total, ddp.module.w.grad.clone())
    # every rank must hold the same DDP gradient; rank 0 writes the results
    grads = [torch.zeros(D, V, dtype=torch.float64) for _ in range(WORLD)]
    dist.all_gather(grads, results["token-mean/ddp"][1])
    results["ddp_ranks_agree"] = bool(torch.equal(grads[0], grads[1]))
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def dist_results() -> dict[str, Any]:
    """Run the 2 gloo workers once for the whole module; return rank 0's results."""
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out = os.path.join(tmp, "store"), os.path.join(tmp, "results.pt")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if sys.platform.startswith("linux"):
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        procs = [
            subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker", str(r), init_file, out],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for r in range(WORLD)
        ]
        logs = []
        try:
            for proc in procs:
                logs.append(proc.communicate(timeout=TIMEOUT_S)[0])
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        codes = [proc.returncode for proc in procs]
        assert codes == [0] * WORLD, f"gloo workers failed (exit codes {codes}):\n" + "\n".join(logs)
        return torch.load(out)


def test_S8_3_global_counts_all_reduce(dist_results):
    """global_counts on each rank's shard gives the whole batch's (valid tokens, non-empty sequences)."""
    n_tok, n_seq = dist_results["counts"]
    assert n_tok.dtype == n_seq.dtype == torch.int64
    assert (int(n_tok), int(n_seq)) == cegppo.local_counts(make_problem()["mask"].numpy())


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
@pytest.mark.parametrize("how", ["global", "ddp"])
def test_S8_3_rank_losses_and_grads_equal_full_batch(dist_results, agg, how):
    """With global normalizers the all-reduce SUM of micro-batch losses and W-gradients is the full batch's
    (float64) ("global"); under DDP, which averages, (loss * world_size).backward() gives the full-batch
    gradient on every rank ("ddp")."""
    full_loss, full_grad = full_batch(agg)
    total, grad = dist_results[f"{agg}/{how}"]
    torch.testing.assert_close(total, full_loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, full_grad, rtol=1e-12, atol=1e-14)
    if how == "ddp":
        assert dist_results["ddp_ranks_agree"]


@pytest.mark.parametrize("agg", cegppo.AGG_MODES)
def test_S8_3_local_counts_are_wrong(dist_results, agg):
    """Negative control: per-micro-batch (local) normalizers do NOT give the full batch (except token-sum)."""
    full_loss, full_grad = full_batch(agg)
    total, grad = dist_results[f"{agg}/local"]
    if agg == "token-sum":  # no normaliser: local and global coincide
        torch.testing.assert_close(total, full_loss, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(grad, full_grad, rtol=1e-12, atol=1e-14)
    else:
        assert not torch.allclose(total, full_loss, rtol=1e-3, atol=0)
        assert not torch.allclose(grad, full_grad, rtol=1e-3, atol=0)


def test_full_batch_matches_reference():
    """The single-process baseline equals the NumPy reference's loss, and the batch visits every region."""
    p = make_problem()
    with torch.no_grad():
        lp = cg.token_log_probs(p["x"] @ p["w0"], p["ids"])
    metrics = cg.policy_metrics(lp, p["old"], p["adv"], p["mask"], CFG)
    for region in ("clip_low_frac", "clip_high_frac", "dual_clip_frac", "inside_frac"):
        assert float(metrics[region]) > 0, region
    for agg in cegppo.AGG_MODES:
        ref = cegppo.policy_loss(lp.numpy(), p["old"].numpy(), p["adv"].numpy(), p["mask"].numpy(), CFG, agg)
        assert abs(float(full_batch(agg)[0]) - float(ref)) <= 1e-12 * max(1.0, abs(float(ref)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="gloo worker of tests/torch/test_distributed.py")
    parser.add_argument("--worker", type=int, required=True, help="rank")
    parser.add_argument("init_file")
    parser.add_argument("out")
    args = parser.parse_args()
    _worker(args.worker, args.init_file, args.out)
