"""Ports for the kit's own tests: one correct port per framework and deliberately broken ones.

Each broken port differs from the correct one by a single realistic bug. The tables below are
plain data (no framework import), so tests can be parametrized over them in any venv: port name ->
(bug class, the property id prefix expected to catch it).
"""

from __future__ import annotations

__all__ = ["CONVENTION_DEFECTS", "CONVENTION_PORTS", "CORRECT", "FAMILY_CORRECT", "FAMILY_TORCH_BROKEN",
           "FUSED_TORCH_BROKEN", "JAX_BROKEN", "NUMPY_BROKEN", "TORCH_BROKEN", "TORCH_DIAGNOSES"]

CORRECT: dict[str, str] = {
    "correct": "both",
    "token_advantages_only": "token",
    "sequence_advantages_only": "sequence",
}
"""Correct ports of torch_ports.py (and numpy_ports.py), with the advantage shapes each declares."""

TORCH_BROKEN: dict[str, tuple[str, str]] = {
    "wrong_region_sign": ("wrong region condition", "S3"),
    "swapped_betas": ("swapped hyperparameters", "S4"),
    "swapped_eps": ("swapped hyperparameters", "S3"),
    "no_stop_gradient": ("missing stop-gradient", "S6.2 beta = 1 gives GPPO's gradient"),
    "misplaced_stop_gradient": ("misplaced stop-gradient", "S5 gradient bound"),
    "naive_quotient": ("unsafe stop-gradient quotient", "S5 gradient bound clip_low"),
    "mean_over_padding": ("normalization", "S8.3"),
    "seq_mean_instead_of_token_mean": ("normalization", "S8.1"),
    "mask_after_arithmetic": ("masking", "S9.3"),
    "unsafe_exp_where": ("unsafe exponential", "S9.1"),
    "clamped_log_ratio": ("clamped log-ratio", "S9.1"),
    "float32_always": ("dtype slip", "S9.5 float64"),
    "bf16_arithmetic": ("dtype slip", "S9.5 bfloat16"),
    "dual_clip_any_sign": ("dual-clip slip", "S7"),
    "dual_clip_on_log_ratio": ("dual-clip slip", "S7"),
    "per_sequence_broadcast": ("broadcasting", "S3"),
    "wrong_loss_sign": ("sign of the loss", "S3"),
    "constants_not_detached": ("gradient into constants", "S4 old_log_prob and advantages are constants"),
    "block_tail_dropped": ("kernel block tail", "S3 value and gradient across kernel block sizes"),
    "large_batch_fast_path": ("size-dependent fast path", "S3 value and gradient at a million tokens"),
    "fp16_arithmetic": ("dtype slip", "S9.5 float16"),
    "zeroes_padding_in_place": ("input mutation", "S1 inputs are not modified"),
    "contiguity_assumed": ("memory layout", "S1 inputs as views"),
}
"""torch_ports.py: every broken port, its bug class, and the property (id prefix) expected to catch it."""

TORCH_DIAGNOSES: dict[str, tuple[str, str]] = {
    "no_stop_gradient": ("wrong gradient by region", "the gradient of clipped tokens is 0"),
    "wrong_loss_sign": ("wrong value", "opposite sign"),
    "mean_over_padding": ("aggregation", "B * T"),
    "clamped_log_ratio": ("wrong gradient by region", "clamped"),
    "mask_after_arithmetic": ("non-finite", "garbage at masked positions"),
    "unsafe_exp_where": ("non-finite", "only where the ratio overflows or underflows"),
    "naive_quotient": ("non-finite", "only where the ratio overflows or underflows"),
    "constants_not_detached": ("contract/harness", "constants of the loss"),
    "contiguity_assumed": ("contract/harness", "assumes contiguous row-major memory"),
    "zeroes_padding_in_place": ("contract/harness", "writes into its inputs"),
}
"""Broken torch ports whose failure must carry this diagnosis: (defect class, a phrase of the diagnosis)."""

FAMILY_CORRECT: dict[str, str] = {
    "cispo_correct": "cispo",
    "cispo_cap_correct": "cispo_cap",
    "sapo_correct": "sapo",
    "gspo_correct": "gspo",
}
"""family_torch_ports.py: the correct port of each member of the family (spec S14) -> its objective."""

FAMILY_TORCH_BROKEN: dict[str, tuple[str, str, str]] = {
    "cispo_weight_not_detached": ("cispo", "missing stop-gradient", "S14.2 gradient equals the reference"),
    "cispo_clips_by_sign": ("cispo", "wrong region condition", "S14.2 gradient bound"),
    "sapo_taus_swapped": ("sapo", "swapped hyperparameters", "S14.3 value equals the reference"),
    "gspo_mean_over_padding": ("gspo", "normalization", "S14.4 value equals the reference"),
    "gspo_no_stop_gradient": ("gspo", "missing stop-gradient", "S14.4 gradient equals the reference"),
}
"""family_torch_ports.py: every broken port -> (its objective, bug class, the property id prefix expected to catch it)."""

JAX_BROKEN: dict[str, tuple[str, str]] = {
    "missing_stop_gradient": ("missing stop-gradient", "S6.2 beta = 1 gives GPPO's gradient"),
    "unsafe_exp_where": ("unsafe exponential", "S9.1"),
    "mean_over_padding": ("normalization", "S8.3"),
    "dual_clip_any_sign": ("dual-clip slip", "S7"),
    "constants_not_stopped": ("gradient into constants", "S4 old_log_prob and advantages are constants"),
    "block_tail_dropped": ("kernel block tail", "S3 value and gradient across kernel block sizes"),
}
"""jax_ports.py: the same for JAX ports."""

NUMPY_BROKEN: dict[str, tuple[str, str]] = {
    "mean_over_padding": ("normalization", "S3"),
    "mutates_mask_after_loss": ("input mutation", "S1 inputs are not modified"),
}
"""numpy_ports.py: broken NumPy ports (values only), each with the property that must catch it."""

FUSED_TORCH_BROKEN: dict[str, tuple[str, str]] = {
    "temperature_ignored": ("temperature", "S11.1 fused value"),
    "bias_ignored": ("bias", "S11.1 fused value"),
    "entropy_detached": ("entropy gradient", "S11.1 fused gradients"),
    "entropy_bonus_sign": ("entropy bonus sign", "S11.1 fused value"),
    "entropy_mean_over_padding": ("metric normalization", "S11.1 fused metrics"),
    "entropy_change_unweighted": ("entropy-change weight", "S11.1 fused metrics"),
    "mask_by_multiplication": ("masking", "S11.1 fused masked garbage"),
    "log_ratio_precomputed": ("gradient into constants", "S11.1 fused old_log_prob and advantages are constants"),
}
"""fused_torch_ports.py: every broken fused head, its bug class, and the S11.1 property expected to catch it."""

CONVENTION_PORTS: dict[str, tuple[str, dict[str, object]]] = {
    "verl02_style": ("torch", {"normalizer_eps": 1e-8, "dual_clip": "required", "advantages": "token",
                               "mask_dtype": "float"}),
    "openrlhf_style": ("torch", {"advantages": "token", "agg": "token-mean,seq-mean-token-mean"}),
    "float32_everywhere": ("torch", {"compute_dtype": "float32", "advantages": "sequence"}),
    "seq_mean_token_mean": ("torch", {"agg": "seq-mean-token-mean"}),
    "tunix_style": ("jax", {"compute_dtype": "float32", "advantages": "token"}),
    "every_mode": ("torch", {"agg": "all", "global_normalizers": True}),
    "skyrl_style": ("torch", {"dual_clip": "absent", "compute_dtype": "float32", "advantages": "token"}),
}
"""convention_torch_ports.py (and convention_jax_ports.py): ports correct under their declared conventions,
each with its framework and the `check` keywords that declare them."""

CONVENTION_DEFECTS: dict[str, tuple[str, str, str, str]] = {
    "verl02_ratio_quotient": ("verl02_style", "S9.1", "non-finite", "only where the ratio overflows or underflows"),
    "verl02_mask_multiplied": ("verl02_style", "S9.3", "non-finite", "from garbage at masked positions"),
    "verl02_half_arithmetic": ("verl02_style", "S9.5 bfloat16", "precision", "consistent with computing in bfloat16"),
    "openrlhf_unclamped_counts": ("openrlhf_style", "S8.4", "non-finite", "an all-masked batch gives a loss of nan"),
    "float32_clamped_log_ratio": ("float32_everywhere", "S9.1", "wrong gradient by region", "log-ratio is clamped"),
    "seq_mean_per_row_counts": ("seq_mean_token_mean", "S8.2", "aggregation", "from an empty row"),
    "drgrpo_longest_row": ("every_mode", "S8.2", "aggregation", "divides by"),
    "skyrl_half_arithmetic": ("skyrl_style", "S9.5 bfloat16", "precision", "consistent with computing in bfloat16"),
    "skyrl_ratio_in_input_dtype": ("skyrl_style", "S8.4", "non-finite", "where the ratio overflows float16"),
    "tunix_ppo_clip": ("tunix_style", "S6.2 beta = 1 gives GPPO's gradient", "wrong gradient by region",
                       "the gradient of clipped tokens is 0"),
}
"""Defective variants of the convention ports: variant -> (the correct port whose declarations it keeps, the
property id prefix that must fail, the defect class and a phrase of the diagnosis that must name it)."""
