"""Tiny random transformers models of every supported family (references for parity checks).

Needs torch and transformers (test/experiment dependencies, not library ones). Every weight is
random, including norm scales and biases, so a dropped or misplaced tensor changes the output;
`router_scale` multiplies the router weights: large values give decisive routing (top-k far
from ties), so a wrong routing rule cannot hide behind near-uniform gates.
"""
from __future__ import annotations

from moe_jax.utils.errors import check_choice

VOCAB = 96
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, bos_token_id=None, eos_token_id=None, pad_token_id=None)

# name: (transformers config class, its fields beyond _COMMON, router logit scale).
FAMILIES = {
    "mixtral": ("MixtralConfig", dict(intermediate_size=24, num_local_experts=4,
                                      num_experts_per_tok=2, sliding_window=7), 8.0),
    "qwen2_moe": ("Qwen2MoeConfig", dict(intermediate_size=40, moe_intermediate_size=16,
                                         shared_expert_intermediate_size=24, num_experts=6,
                                         num_experts_per_tok=2, mlp_only_layers=[0],
                                         norm_topk_prob=False), 1.0),
    "qwen3_moe": ("Qwen3MoeConfig", dict(intermediate_size=40, moe_intermediate_size=16,
                                         num_experts=6, num_experts_per_tok=3, head_dim=16,
                                         norm_topk_prob=True, tie_word_embeddings=True), 8.0),
    "olmoe": ("OlmoeConfig", dict(intermediate_size=16, num_experts=8, num_experts_per_tok=2,
                                  clip_qkv=1.5, num_key_value_heads=4), 8.0),
    "phimoe": ("PhimoeConfig", dict(
        intermediate_size=24, num_local_experts=4, num_experts_per_tok=2, attention_bias=True,
        lm_head_bias=True, max_position_embeddings=512,
        rope_parameters=dict(rope_type="longrope", rope_theta=1e4,
                             original_max_position_embeddings=64, short_mscale=1.2,
                             long_mscale=1.2)), 1.0),  # factor lists: see build()
    "deepseek_v3": ("DeepseekV3Config", dict(
        intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3, n_routed_experts=8,
        num_experts_per_tok=3, n_group=4, topk_group=2, first_k_dense_replace=1,
        routed_scaling_factor=2.5, n_shared_experts=1, kv_lora_rank=12, q_lora_rank=20,
        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=12, num_key_value_heads=4), 8.0),
    "deepseek_v3_yarn": ("DeepseekV3Config", dict(
        intermediate_size=48, moe_intermediate_size=16, n_routed_experts=4,
        num_experts_per_tok=2, n_group=1, topk_group=1, first_k_dense_replace=0,
        routed_scaling_factor=1.0, n_shared_experts=2, kv_lora_rank=12, q_lora_rank=None,
        qk_rope_head_dim=8, qk_nope_head_dim=4, v_head_dim=8, num_key_value_heads=4,
        rope_interleave=False, norm_topk_prob=False, max_position_embeddings=256,
        rope_parameters=dict(rope_type="yarn", rope_theta=1e4, factor=4.0,
                             original_max_position_embeddings=64, beta_fast=32, beta_slow=1,
                             mscale=1.0, mscale_all_dim=0.7)), 1.0),
}


def randomize(model, router_scale: float, seed: int) -> None:
  """Overwrites every parameter and buffer of a torch model with seeded random values."""
  import torch  # pylint: disable=g-import-not-at-top
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
      if "inv_freq" in name:
        continue
      noise = torch.randn(p.shape, generator=g)
      if "norm" in name and name.endswith("weight"):
        p.copy_(1 + 0.3 * noise)
      elif name.endswith("bias"):
        p.copy_(0.3 * noise)
      elif name.endswith("gate.weight") or name.endswith("router.weight"):
        p.copy_(router_scale * noise / p.shape[-1] ** 0.5)
      else:
        p.copy_(noise / p.shape[-1] ** 0.5)


def build(name: str, path: str, seed: int = 0, **overrides):
  """Builds family `name`'s tiny model with random weights, saves it to `path`, returns it.

  `overrides` replace config fields (e.g. hidden_size=128, num_hidden_layers=4).
  """
  check_choice("family", name, FAMILIES)
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  cls, fields, router_scale = FAMILIES[name]
  fields = {**_COMMON, **fields, **overrides}
  rope = dict(fields.get("rope_parameters") or {})
  if rope.get("rope_type") == "longrope":  # one factor per frequency: 1 ... 4 (long: 2 ... 8)
    half = fields["hidden_size"] // fields["num_attention_heads"] // 2
    rope["short_factor"] = [1 + 3 * i / max(half - 1, 1) for i in range(half)]
    rope["long_factor"] = [2 * f for f in rope["short_factor"]]
    fields["rope_parameters"] = rope
  config = getattr(transformers, cls)(**fields)
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  randomize(model, router_scale, seed=seed + len(name))
  model.save_pretrained(path)
  return model
