"""`python -m cegppo`: the loss, its gradient weights by region and the metrics on a built-in batch.

A four-sequence batch is built so that every region of spec clause S2 is populated; the demo
prints what CE-GPPO does to each region next to what PPO-clip does.
"""

from __future__ import annotations

import argparse

import numpy as np

from . import AGG_MODES, policy_loss, policy_loss_grad, policy_metrics, presets, token_regions


def example_batch() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(log_prob, old_log_prob, advantages, mask) with tokens in every region and some padding."""
    old = np.log(np.array([[0.50, 0.30, 0.20, 0.10], [0.40, 0.60, 0.05, 0.90], [0.70, 0.20, 0.30, 0.25], [0.10, 0.80, 0.5, 0.5]]))
    ratio = np.array([[1.05, 0.60, 1.50, 1.00], [0.70, 1.40, 12.0, 0.95], [1.10, 2.00, 0.50, 1.00], [1.30, 0.90, 1.0, 1.0]])
    advantages = np.array([1.0, -1.0, 0.5, -0.5])
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], dtype=bool)
    return old + np.log(ratio), old, advantages, mask


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cegppo", description=__doc__)
    # The demo compares CE-GPPO's regions with PPO's, so it takes CE-GPPO's presets (a CEGPPOConfig) only.
    parser.add_argument("--preset", default="ce_gppo_official", choices=sorted(presets.CE_GPPO_PRESETS))
    parser.add_argument("--agg", default="token-mean", choices=AGG_MODES)
    args = parser.parse_args(argv)
    cfg = presets.CE_GPPO_PRESETS[args.preset]()
    lp, old, adv, mask = example_batch()
    print(f"CE-GPPO demo  preset={args.preset}  {cfg}")
    print(f"ratio delta = pi/pi_old:\n{np.round(np.exp(lp - old), 3)}\nadvantages per sequence: {adv}\n")
    regions = token_regions(lp, old, adv, cfg)
    ppo = presets.ppo(eps_low=cfg.eps_low, eps_high=cfg.eps_high, dual_clip=cfg.dual_clip)
    grad = policy_loss_grad(lp, old, adv, mask, cfg, args.agg)
    grad_ppo = policy_loss_grad(lp, old, adv, mask, ppo, args.agg)
    print("gradient mass per region, sum |dL/dlog_prob| (PPO: same eps and dual clip, beta = 0)")
    print(f"{'region':<10} {'tokens':>6} {'CE-GPPO':>10} {'PPO':>10}")
    for name in regions._fields:
        sel = getattr(regions, name) & mask
        print(f"{name:<10} {int(sel.sum()):>6} {np.abs(grad[sel]).sum():>10.5f} {np.abs(grad_ppo[sel]).sum():>10.5f}")
    print(f"\nloss ({args.agg}): CE-GPPO {float(policy_loss(lp, old, adv, mask, cfg, args.agg)):.6f}"
          f"   PPO {float(policy_loss(lp, old, adv, mask, ppo, args.agg)):.6f}")
    print("\nmetrics:")
    for key, value in policy_metrics(lp, old, adv, mask, cfg).items():
        print(f"  {key:<22} {float(value):.6f}")


if __name__ == "__main__":
    main()
