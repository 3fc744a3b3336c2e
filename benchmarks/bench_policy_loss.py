"""Forward + backward of the CE-GPPO policy loss: cegppo.torch (eager, compiled), cegppo.jax (jit).

Every figure is measured in the same run, on the same inputs (fp32, (B, T) log-probs, per-token
advantages, ~80 % valid tokens with right padding, log-ratios ~ N(0, 0.3) so every region is
populated), against:

- the floor: a memcpy moving the bytes a fused kernel must move, 17 bytes per token (read
  log_prob, old_log_prob, advantages as fp32 and the bool mask, write the fp32 gradient), i.e.
  `dst.copy_(src)` of 8.5 bytes per token (a copy reads and writes each byte);
- a naive textbook PPO-clip loss written with the usual torch ops, as verl's `vanilla` policy
  loss does (ratio = exp(clamp(logp - old, -20, 20)), -A * ratio vs -A * clamp(ratio), max, dual
  clip, clip-fraction and KL metrics, masked token-mean): eager, compiled and in JAX (jit);
- verl's own `compute_policy_loss_vanilla`, when verl is installed.

Timed: `loss = f(...)` then the gradient w.r.t. log_prob (`torch.autograd.grad`,
`jax.value_and_grad`), median of `--repeats` runs after warm-up (compilation excluded, reported
separately). Memory: bytes saved for backward per token (torch, eager and compiled: unique storages captured by
`saved_tensors_hooks`, inputs excluded) and XLA's temp buffer size per token (JAX,
`compiled.memory_analysis()`); CPU has no allocator peak counter, so these are the honest figures.

    python benchmarks/bench_policy_loss.py            # (B, T) in {(64, 1024), (256, 4096), (512, 8192)}
    python benchmarks/bench_policy_loss.py --quick    # small sizes, few repeats (smoke test)

Prints Markdown tables (docs/benchmarks.md). CUDA is used when available (`--device cuda`).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import cegppo
import numpy as np

CFG = cegppo.presets.ce_gppo_official()  # eps 0.2/0.2, beta 0.75/1, dual clip c = 10
BYTES_PER_TOKEN = 4 + 4 + 4 + 1 + 4  # read lp, old, adv (fp32), mask (bool); write grad (fp32)
FULL_SIZES = [(64, 1024), (256, 4096), (512, 8192)]
QUICK_SIZES = [(16, 256), (64, 1024)]


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def make_inputs(b: int, t: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lp = -rng.exponential(1.0, (b, t)).astype(np.float32)
    logr = (rng.standard_normal((b, t)) * 0.3).astype(np.float32)
    adv = rng.standard_normal((b, t)).astype(np.float32)
    lengths = rng.integers(int(0.6 * t), t + 1, b)
    mask = np.arange(t)[None, :] < lengths[:, None]
    return {"lp": lp, "old": lp - logr, "adv": adv, "mask": mask}


# --------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------


def naive_ppo_torch(
    lp: Any, old: Any, adv: Any, mask: Any, clip_low: float = 0.2, clip_high: float = 0.2, c: float = 10.0
):
    """Textbook dual-clip PPO with masked token-mean, written like verl's `vanilla` loss."""
    import torch

    neg_kl = torch.clamp(lp - old, min=-20.0, max=20.0)
    ratio = torch.exp(neg_kl)
    m = mask.float()
    n = m.sum().clamp(min=1.0)
    losses1 = -adv * ratio
    losses2 = -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    clip1 = torch.maximum(losses1, losses2)
    clipfrac = (torch.gt(losses2, losses1).float() * m).sum() / n
    losses3 = -adv * c
    clip2 = torch.min(losses3, clip1)
    clipfrac_lower = (torch.gt(clip1, losses3).float() * (adv < 0).float() * m).sum() / n
    losses = torch.where(adv < 0, clip2, clip1)
    ppo_kl = (-neg_kl * m).sum() / n
    loss = (losses * m).sum() / n
    return loss, (clipfrac.detach(), clipfrac_lower.detach(), ppo_kl.detach())


def naive_ppo_jax(
    lp: Any, old: Any, adv: Any, mask: Any, clip_low: float = 0.2, clip_high: float = 0.2, c: float = 10.0
):
    """The same textbook loss in jax.numpy (returns the loss only: metrics under stop_gradient)."""
    import jax.numpy as jnp

    neg_kl = jnp.clip(lp - old, -20.0, 20.0)
    ratio = jnp.exp(neg_kl)
    m = mask.astype(jnp.float32)
    n = jnp.maximum(m.sum(), 1.0)
    losses1 = -adv * ratio
    losses2 = -adv * jnp.clip(ratio, 1 - clip_low, 1 + clip_high)
    clip1 = jnp.maximum(losses1, losses2)
    clip2 = jnp.minimum(-adv * c, clip1)
    losses = jnp.where(adv < 0, clip2, clip1)
    return (losses * m).sum() / n


def verl_vanilla() -> Callable[..., Any] | None:
    """verl's compute_policy_loss_vanilla with an actor config for eps 0.2 and c = 10, or None."""
    try:
        from verl.trainer.ppo import core_algos  # type: ignore[import-not-found]
    except Exception:
        return None
    fn = getattr(core_algos, "compute_policy_loss_vanilla", None)
    if fn is None:
        return None
    try:
        from verl.workers.config import ActorConfig  # type: ignore[import-not-found]

        config: Any = ActorConfig(
            strategy="fsdp",
            rollout_n=1,
            ppo_micro_batch_size_per_gpu=1,
            clip_ratio=0.2,
            clip_ratio_low=0.2,
            clip_ratio_high=0.2,
            clip_ratio_c=10.0,
            loss_agg_mode="token-mean",
        )
    except Exception:
        return None

    def run(lp: Any, old: Any, adv: Any, mask: Any) -> Any:
        out = fn(
            old_log_prob=old,
            log_prob=lp,
            advantages=adv,
            response_mask=mask,
            loss_agg_mode="token-mean",
            config=config,
        )
        return out[0]

    return run


# --------------------------------------------------------------------------------------------
# timing helpers
# --------------------------------------------------------------------------------------------


def timeit(fn: Callable[[], Any], repeats: int, warmup: int) -> tuple[float, float]:
    """(median ms, first-call ms) of fn(); the first call includes any compilation.

    The median (not the mean) so that a stray pause of the shared machine does not move it."""
    t0 = time.perf_counter()
    fn()
    first = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), first


class Row:
    """One implementation's figures: median and first-call ms, memory per token (torch: bytes saved for
    backward; JAX: XLA temp buffers), or a note when it did not run."""

    def __init__(
        self,
        name: str,
        ms: float | None,
        first_ms: float | None = None,
        saved: float | None = None,
        *,
        xla_temp: float | None = None,
        note: str = "",
    ) -> None:
        self.name, self.ms, self.first_ms, self.note = name, ms, first_ms, note
        self.saved, self.xla_temp = saved, xla_temp


def torch_rows(x: dict[str, np.ndarray], args: argparse.Namespace) -> tuple[list[Row], dict[str, float]]:
    import cegppo.torch as cg
    import torch

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    lp0 = torch.from_numpy(x["lp"]).to(dev)
    old = torch.from_numpy(x["old"]).to(dev)
    adv = torch.from_numpy(x["adv"]).to(dev)
    mask = torch.from_numpy(x["mask"]).to(dev)
    lp = lp0.clone().requires_grad_()
    n = lp.numel()
    rows: list[Row] = []
    losses: dict[str, float] = {}

    # floor: a memcpy of the 17 B/token traffic (8.5 B/token read + written)
    src = torch.empty(int(n * BYTES_PER_TOKEN // 2), dtype=torch.uint8, device=dev).random_(0, 255)
    dst = torch.empty_like(src)

    def floor() -> None:
        dst.copy_(src)
        sync()

    ms, _ = timeit(floor, args.repeats, args.warmup)
    rows.append(Row(f"floor: memcpy of {BYTES_PER_TOKEN} B/token traffic", ms))

    def fwd_bwd(f: Callable[..., Any], key: str) -> Callable[[], None]:
        def run() -> None:
            loss = f(lp, old, adv, mask)
            loss = loss[0] if isinstance(loss, tuple) else loss
            torch.autograd.grad(loss, lp)
            sync()
            losses[key] = float(loss.detach())

        return run

    def saved_bytes(f: Callable[..., Any]) -> float:
        """Unique storages saved for backward, inputs excluded, per token."""
        inputs = {t.untyped_storage().data_ptr() for t in (lp, old, adv, mask)}
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            s = t.untyped_storage()
            if s.data_ptr() not in inputs:
                seen[s.data_ptr()] = s.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = f(lp, old, adv, mask)
        del out
        return sum(seen.values()) / n

    cegppo_eager = functools.partial(cg.policy_loss, cfg=CFG, agg="token-mean")
    ms, first = timeit(fwd_bwd(cegppo_eager, "cegppo.torch"), args.repeats, args.warmup)
    rows.append(Row("cegppo.torch eager", ms, first, saved_bytes(cegppo_eager)))
    ms, first = timeit(fwd_bwd(naive_ppo_torch, "naive.torch"), args.repeats, args.warmup)
    rows.append(Row("naive PPO, torch eager (baseline)", ms, first, saved_bytes(naive_ppo_torch)))
    if not args.no_compile:
        torch._dynamo.reset()
        compiled = torch.compile(cegppo_eager, fullgraph=True)
        ms, first = timeit(fwd_bwd(compiled, "cegppo.torch.compile"), args.repeats, args.warmup)
        rows.append(Row("cegppo.torch torch.compile", ms, first, saved_bytes(compiled)))
        naive_c = torch.compile(naive_ppo_torch, fullgraph=True)
        ms, first = timeit(fwd_bwd(naive_c, "naive.torch.compile"), args.repeats, args.warmup)
        rows.append(Row("naive PPO, torch.compile", ms, first, saved_bytes(naive_c)))
    verl = verl_vanilla()
    if verl is None:
        rows.append(Row("verl vanilla (compute_policy_loss_vanilla)", None, note="verl not installed"))
    else:
        ms, first = timeit(fwd_bwd(verl, "verl"), args.repeats, args.warmup)
        rows.append(Row("verl vanilla (compute_policy_loss_vanilla)", ms, first, saved_bytes(verl)))
    return rows, losses


def jax_rows(x: dict[str, np.ndarray], args: argparse.Namespace) -> tuple[list[Row], dict[str, float]]:
    import cegppo.jax as cgj
    import jax
    import jax.numpy as jnp

    arrs = [jnp.asarray(x[k]) for k in ("lp", "old", "adv", "mask")]
    n = x["lp"].size
    rows: list[Row] = []
    losses: dict[str, float] = {}
    for name, key, f in (
        ("cegppo.jax jit", "cegppo.jax", functools.partial(cgj.policy_loss, cfg=CFG, agg="token-mean")),
        ("naive PPO, jax jit", "naive.jax", naive_ppo_jax),
    ):
        vg = jax.jit(jax.value_and_grad(f))
        mem = vg.lower(*arrs).compile().memory_analysis()
        temp = None if mem is None else mem.temp_size_in_bytes / n

        def run(vg: Any = vg, key: str = key) -> None:
            val, g = vg(*arrs)
            g.block_until_ready()
            losses[key] = float(val)

        ms, first = timeit(run, args.repeats, args.warmup)
        rows.append(Row(name, ms, first, xla_temp=temp))
    return rows, losses


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def report(b: int, t: int, rows: list[Row], losses: dict[str, float]) -> None:
    n = b * t
    by = {r.name: r.ms for r in rows if r.ms is not None}
    floor = rows[0].ms
    naive = by.get("naive PPO, torch eager (baseline)")
    print(f"\n### (B, T) = ({b}, {t}): {n:,} tokens, fp32\n")
    print(
        "| implementation | fwd+bwd ms (median) | x floor | speed-up vs naive torch eager | first call ms "
        "| saved for backward B/token | XLA temp B/token |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.ms is None:
            print(f"| {r.name} | {r.note} | | | | | |")
            continue
        speed = None if naive is None or r is rows[0] else naive / r.ms
        print(
            f"| {r.name} | {r.ms:.3f} | {r.ms / floor:.2f} | {_fmt(speed)} | {_fmt(r.first_ms, '.0f')} "
            f"| {_fmt(r.saved, '.1f')} | {_fmt(r.xla_temp, '.1f')} |"
        )
    tc, jj = by.get("cegppo.torch torch.compile"), by.get("cegppo.jax jit")
    if tc and jj:
        print(f"\ncegppo.jax jit / cegppo.torch compiled = {jj / tc:.2f}")
    ref = losses.get("cegppo.torch")
    if ref is not None:
        diffs = {k: abs(v - ref) for k, v in losses.items() if k.startswith("cegppo")}
        print("max |loss - cegppo.torch eager| over cegppo variants: " + f"{max(diffs.values()):.2e}")
    if "verl" in losses and "naive.torch" in losses:
        print(f"|naive PPO torch - verl vanilla| loss difference: {abs(losses['verl'] - losses['naive.torch']):.2e}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats (smoke test, seconds)")
    p.add_argument("--sizes", default=None, help="comma-separated BxT list, e.g. 64x1024,512x8192")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per implementation (median)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs after the first call")
    p.add_argument("--device", default="cpu", help="torch device (cpu or cuda); JAX uses its default device")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--no-jax", action="store_true", help="skip JAX")
    args = p.parse_args(argv)
    if args.sizes:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    else:
        sizes = QUICK_SIZES if args.quick else FULL_SIZES
    args.repeats = args.repeats or (3 if args.quick else 15)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)

    import torch

    print("## policy_loss forward + backward (benchmarks/bench_policy_loss.py)\n")
    print(
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, python {platform.python_version()}"
    )
    versions = f"torch {torch.__version__}"
    if not args.no_jax:
        import jax

        versions += f", jax {jax.__version__} ({jax.default_backend()})"
    print(f"- {versions}; torch device {args.device}; config ce_gppo_official, agg token-mean")
    print(
        f"- median of {args.repeats} runs after {args.warmup} warm-up runs; first call includes compilation"
    )
    for b, t in sizes:
        x = make_inputs(b, t)
        rows, losses = torch_rows(x, args)
        if not args.no_jax:
            jrows, jlosses = jax_rows(x, args)
            rows += jrows
            losses.update(jlosses)
        report(b, t, rows, losses)


if __name__ == "__main__":
    main()
