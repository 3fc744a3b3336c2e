"""cegppo.integrations.trl against the real TRL package (CPU, tiny random model, no downloads).

- training: two optimizer steps of `CEGPPOTrainer` on a randomly initialised 1-layer Llama built
  from a config, with a character tokenizer built here and a toy reward; the CE-GPPO region metrics
  are logged at every step (fractions summing to 1, clipped tokens present in the second step,
  which reuses the rollout: num_iterations=2) and the weights changed;
- the loss: `compute_loss` equals `cegppo.torch.policy_loss` on the model's own log-probs (value and
  gradient) for every TRL loss_type, and with the PPO preset (beta = 0) its gradient equals TRL's
  stock GRPO loss gradient with the same normaliser (spec S6.1), while the paper's betas differ
  from it exactly on the clipped tokens;
- configuration errors name the field.
"""

from __future__ import annotations

import math

import cegppo
import pytest
from integration_helpers import need

torch = need("torch")
need("trl")
need("datasets")
need("tokenizers")

import cegppo.torch as cg  # noqa: E402
from cegppo.integrations import trl as ct  # noqa: E402
from datasets import Dataset  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402
from trl import GRPOTrainer  # noqa: E402

CHARS = "abcdefghij "


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer built in memory (nothing downloaded)."""
    vocab = {"<pad>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(CHARS)}}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised one-layer Llama (about 1k parameters) built from a config."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(CHARS) + 2,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    return LlamaForCausalLM(cfg)


def length_reward(completions: list[str], **_: object) -> list[float]:
    """Toy reward: the completion's length in characters (varies within a group, so A != 0)."""
    return [float(len(c)) for c in completions]


def make_trainer(tmp_path, **overrides) -> ct.CEGPPOTrainer:
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=6,
        max_steps=2,
        learning_rate=0.3,
        num_iterations=2,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
        beta_low=0.5,
        beta_high=1.0,
        dual_clip=10.0,
    )
    kwargs.update(overrides)
    args = ct.CEGPPOTRLConfig(**kwargs)
    ds = Dataset.from_dict({"prompt": ["abc", "bcd", "cde", "def"] * 2})
    return ct.CEGPPOTrainer(
        model=tiny_model(),
        reward_funcs=length_reward,
        args=args,
        train_dataset=ds,
        processing_class=tiny_tokenizer(),
    )


def test_two_optimizer_steps_log_regions_and_change_weights(tmp_path) -> None:
    trainer = make_trainer(tmp_path)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    steps = [h for h in trainer.state.log_history if "loss" in h]
    assert len(steps) == 2, trainer.state.log_history
    for h in steps:
        for key in cegppo.METRIC_KEYS:
            assert ct.METRIC_PREFIX + key in h, (key, h)
        regions = sum(
            h[ct.METRIC_PREFIX + k]
            for k in ("clip_low_frac", "clip_high_frac", "dual_clip_frac", "inside_frac")
        )
        assert math.isclose(regions, 1.0, rel_tol=1e-6), h
        assert h["clip_ratio/region_mean"] == h[ct.METRIC_PREFIX + "clip_frac"]
    # Step 1 scores its own fresh rollout (ratio 1, all inside); step 2 reuses it after an update.
    assert steps[0][ct.METRIC_PREFIX + "inside_frac"] == 1.0
    assert steps[1][ct.METRIC_PREFIX + "clip_frac"] > 0.0, steps[1]
    assert steps[1][ct.METRIC_PREFIX + "approx_kl_k3"] > 0.0
    changed = [k for k, v in trainer.model.named_parameters() if not torch.equal(before[k], v.detach())]
    assert changed, "no weight changed in two optimizer steps"


# ----------------------------------------------------------------------------- the loss itself


def fixed_inputs(trainer: ct.CEGPPOTrainer, seed: int = 1) -> dict[str, torch.Tensor]:
    """A micro-batch in GRPOTrainer's format whose old log-probs put tokens in every region."""
    g = torch.Generator().manual_seed(seed)
    b, p, t = 4, 3, 6
    vocab = trainer.model.config.vocab_size
    prompt_ids = torch.randint(2, vocab, (b, p), generator=g)
    completion_ids = torch.randint(2, vocab, (b, t), generator=g)
    completion_mask = torch.ones(b, t, dtype=torch.long)
    completion_mask[1, 4:] = 0
    completion_mask[3, 2:] = 0
    logp = own_log_probs(trainer.model, prompt_ids, completion_ids, completion_mask).detach()
    old = logp + (torch.rand(b, t, generator=g) * 2 - 1) * 0.8  # |logr| <= 0.8: every region reached
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones(b, p, dtype=torch.long),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": torch.tensor([1.0, -1.5, 0.5, -0.25]),
        "old_per_token_logps": old,
        "num_items_in_batch": completion_mask.sum(),
    }


def own_log_probs(model, prompt_ids, completion_ids, completion_mask) -> torch.Tensor:
    """Log-probs of the completion tokens by a plain forward pass (independent of TRL's code path)."""
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    att = torch.cat([torch.ones_like(prompt_ids), completion_mask], dim=1)
    logits = model(input_ids=ids, attention_mask=att).logits[:, prompt_ids.shape[1] - 1 : -1]
    return cg.token_log_probs(logits.float(), completion_ids)


def grads(model, loss: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


@pytest.fixture(scope="module")
def trainer(tmp_path_factory) -> ct.CEGPPOTrainer:
    tr = make_trainer(tmp_path_factory.mktemp("trl"), dual_clip=None)
    tr.current_gradient_accumulation_steps = 1  # set by Trainer.train(); the unit tests call compute_loss
    tr.model.train()
    return tr


def expected_loss(trainer, inputs, cfg: cegppo.CEGPPOConfig, loss_type: str) -> torch.Tensor:
    """CE-GPPO on the model's own log-probs with TRL's normaliser for `loss_type` (one micro-batch, 1 process)."""
    lp = own_log_probs(
        trainer.model, inputs["prompt_ids"], inputs["completion_ids"], inputs["completion_mask"]
    )
    mask = inputs["completion_mask"].bool()
    agg = ct.LOSS_TYPE_AGG[loss_type]
    extra = {}
    if loss_type == "dapo":
        extra["num_tokens"] = inputs["num_items_in_batch"]
    if loss_type == "dr_grpo":
        extra["norm_length"] = float(trainer.args.max_completion_length)
    return cg.policy_loss(
        lp, inputs["old_per_token_logps"], inputs["advantages"], mask, cfg, agg=agg, **extra
    )


@pytest.mark.parametrize("loss_type", sorted(ct.LOSS_TYPE_AGG))
def test_compute_loss_is_cegppo(trainer, loss_type: str, monkeypatch) -> None:
    monkeypatch.setattr(trainer.args, "loss_type", loss_type)
    monkeypatch.setattr(trainer, "loss_type", loss_type)
    monkeypatch.setattr(trainer, "loss_agg_mode", ct.LOSS_TYPE_AGG[loss_type])
    inputs = fixed_inputs(trainer)
    got = trainer.compute_loss(trainer.model, inputs)
    want = expected_loss(trainer, inputs, trainer.cegppo_config, loss_type)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads(trainer.model, got), grads(trainer.model, want), rtol=1e-4, atol=1e-6)
    # The inputs reach every region (else this test would not tell CE-GPPO from PPO).
    m = trainer._metrics["train"]
    assert m[ct.METRIC_PREFIX + "clip_low_frac"][-1] > 0 and m[ct.METRIC_PREFIX + "clip_high_frac"][-1] > 0


@pytest.mark.parametrize(("accum", "steps_per_generation"), [(1, 1), (2, 4)])
@pytest.mark.parametrize("loss_type", sorted(ct.LOSS_TYPE_AGG))
def test_ppo_preset_gradient_equals_trl_stock_loss(
    trainer, loss_type: str, accum: int, steps_per_generation: int, monkeypatch
) -> None:
    """beta = 0 is PPO-clip's gradient (spec S6.1): equal to TRL's own GRPO loss, for each normaliser,
    with and without gradient accumulation (a micro-batch's loss is its share of the step's loss)."""
    monkeypatch.setattr(trainer, "current_gradient_accumulation_steps", accum)
    monkeypatch.setattr(trainer.args, "steps_per_generation", steps_per_generation)
    monkeypatch.setattr(trainer.args, "loss_type", loss_type)
    monkeypatch.setattr(trainer, "loss_type", loss_type)
    monkeypatch.setattr(trainer, "loss_agg_mode", ct.LOSS_TYPE_AGG[loss_type])
    inputs = fixed_inputs(trainer)
    stock = grads(trainer.model, GRPOTrainer._compute_loss(trainer, trainer.model, inputs))
    monkeypatch.setattr(trainer, "cegppo_config", cegppo.presets.ppo())
    ppo = trainer.compute_loss(trainer.model, inputs)
    torch.testing.assert_close(grads(trainer.model, ppo), stock, rtol=1e-4, atol=1e-7)
    # The paper's betas keep the clipped tokens' gradient: a different update.
    monkeypatch.setattr(trainer, "cegppo_config", cegppo.presets.ce_gppo_1p5b())
    ours = trainer.compute_loss(trainer.model, inputs)
    diff = (grads(trainer.model, ours) - stock).abs().max()
    assert diff > 1e-4, diff


@pytest.mark.parametrize("agg", ["token-sum", "token-mean", "seq-mean-token-sum"])
def test_explicit_loss_agg_mode_overrides_loss_type(trainer, agg: str, monkeypatch) -> None:
    """loss_agg_mode (verl's names) wins over loss_type; token-mean then uses the global normaliser."""
    monkeypatch.setattr(trainer.args, "loss_type", "bnpo")
    monkeypatch.setattr(trainer.args, "loss_agg_mode", agg)
    monkeypatch.setattr(trainer, "loss_agg_mode", ct._agg_mode(trainer.args))
    assert trainer.loss_agg_mode == agg
    inputs = fixed_inputs(trainer)
    inputs["num_items_in_batch"] = inputs["completion_mask"].sum() * 3  # a global batch 3x this micro-batch
    got = trainer.compute_loss(trainer.model, inputs)
    lp = own_log_probs(
        trainer.model, inputs["prompt_ids"], inputs["completion_ids"], inputs["completion_mask"]
    )
    extra = {"num_tokens": inputs["num_items_in_batch"]} if agg == "token-mean" else {}
    want = cg.policy_loss(
        lp,
        inputs["old_per_token_logps"],
        inputs["advantages"],
        inputs["completion_mask"].bool(),
        trainer.cegppo_config,
        agg=agg,
        **extra,
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_kl_term_is_aggregated_like_the_loss(trainer, monkeypatch) -> None:
    """beta > 0 adds TRL's k3 KL (with its default importance-sampling bias correction), same normaliser."""
    inputs = fixed_inputs(trainer)
    lp = own_log_probs(
        trainer.model, inputs["prompt_ids"], inputs["completion_ids"], inputs["completion_mask"]
    )
    inputs["ref_per_token_logps"] = lp.detach() - 0.3
    monkeypatch.setattr(trainer, "beta", 0.1)
    assert trainer.args.use_bias_correction_kl
    got = trainer.compute_loss(trainer.model, inputs)
    mask = inputs["completion_mask"].bool()
    ref = inputs["ref_per_token_logps"]
    kl = (torch.exp(ref - lp) - (ref - lp) - 1) * torch.exp(lp - inputs["old_per_token_logps"])
    want = expected_loss(trainer, inputs, trainer.cegppo_config, "dapo") + 0.1 * cg.aggregate_loss(
        kl, mask, "token-mean", num_tokens=inputs["num_items_in_batch"]
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert trainer._metrics["train"]["kl"][-1] > 0
    # With the PPO preset, the whole gradient (policy + KL) is TRL's own.
    stock = grads(trainer.model, GRPOTrainer._compute_loss(trainer, trainer.model, inputs))
    monkeypatch.setattr(trainer, "cegppo_config", cegppo.presets.ppo())
    ppo = grads(trainer.model, trainer.compute_loss(trainer.model, inputs))
    torch.testing.assert_close(ppo, stock, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------- configuration


def test_config_maps_to_cegppo_config() -> None:
    cpu = {"output_dir": "unused", "use_cpu": True, "bf16": False}
    args = ct.CEGPPOTRLConfig(**cpu, epsilon=0.2, epsilon_high=0.28, beta_low=0.75, dual_clip=10.0)
    assert ct.cegppo_config_from_trl(args) == cegppo.CEGPPOConfig(
        eps_low=0.2, eps_high=0.28, beta_low=0.75, beta_high=1.0, dual_clip=10.0
    )
    with pytest.raises(ValueError, match="beta_high"):
        ct.cegppo_config_from_trl(ct.CEGPPOTRLConfig(**cpu, beta_high=-1.0))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"importance_sampling_level": "sequence", "loss_type": "grpo"}, "importance_sampling_level"),
        ({"entropy_coef": 0.01}, "entropy_coef"),
        ({"loss_type": "cispo"}, "loss_type"),
        ({"loss_agg_mode": "token-median"}, "loss_agg_mode"),
        ({"dual_clip": 0.5}, "dual_clip"),
    ],
)
def test_unsupported_settings_raise_naming_the_field(tmp_path, overrides, field) -> None:
    with pytest.raises(ValueError, match=field):
        make_trainer(tmp_path, **overrides)
