"""The published MoE LMs: their config.json (as on the Hugging Face Hub) and parameter counts.

`hf_config.from_hf(ZOO[name].config)` gives the LMConfig of the full-size model; with
`hf.count_params` (jax.eval_shape, nothing allocated) the counts can be checked against the
published ones without downloading a weight. Fields that do not change shapes (token ids,
dropout, the fp8 `quantization_config` of DeepSeek-V3's release) are left out; RoPE factor
lists are shortened to constants of the right length.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Published:
  """A public checkpoint: its config.json fields and its published total/active parameters."""
  repo: str
  config: dict
  total: float
  active: float
  source: str


_PHI_ROPE = dict(type="longrope", original_max_position_embeddings=4096,
                 short_factor=[1.0] * 64, long_factor=[1.0] * 64,
                 short_mscale=1.243163121016122, long_mscale=1.243163121016122)

ZOO = {
    "mixtral_8x7b": Published(
        "mistralai/Mixtral-8x7B-v0.1",
        dict(architectures=["MixtralForCausalLM"], vocab_size=32000, hidden_size=4096,
             intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
             num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2,
             max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1e6,
             sliding_window=None, tie_word_embeddings=False, hidden_act="silu"),
        46.7e9, 12.9e9, "Mistral AI, Mixtral of Experts (2024): 47B total, 13B active"),
    "qwen1.5_moe_a2.7b": Published(
        "Qwen/Qwen1.5-MoE-A2.7B",
        dict(architectures=["Qwen2MoeForCausalLM"], vocab_size=151936, hidden_size=2048,
             intermediate_size=5632, moe_intermediate_size=1408,
             shared_expert_intermediate_size=5632, num_hidden_layers=24,
             num_attention_heads=16, num_key_value_heads=16, num_experts=60,
             num_experts_per_tok=4, norm_topk_prob=False, decoder_sparse_step=1,
             max_position_embeddings=8192, rms_norm_eps=1e-6, rope_theta=1e6,
             use_sliding_window=False, tie_word_embeddings=False, hidden_act="silu"),
        14.3e9, 2.7e9, "Qwen team blog, Qwen1.5-MoE (2024): 14.3B total, 2.7B activated"),
    "olmoe_1b_7b": Published(
        "allenai/OLMoE-1B-7B-0924",
        dict(architectures=["OlmoeForCausalLM"], vocab_size=50304, hidden_size=2048,
             intermediate_size=1024, num_hidden_layers=16, num_attention_heads=16,
             num_key_value_heads=16, num_experts=64, num_experts_per_tok=8,
             norm_topk_prob=False, clip_qkv=None, max_position_embeddings=4096,
             rms_norm_eps=1e-5, rope_theta=1e4, tie_word_embeddings=False, hidden_act="silu"),
        6.92e9, 1.28e9, "Muennighoff et al., OLMoE (2024), Table 1: 6.9B total, 1.3B active"),
    "phi3.5_moe": Published(
        "microsoft/Phi-3.5-MoE-instruct",
        dict(architectures=["PhimoeForCausalLM"], vocab_size=32064, hidden_size=4096,
             intermediate_size=6400, num_hidden_layers=32, num_attention_heads=32,
             num_key_value_heads=8, num_local_experts=16, num_experts_per_tok=2,
             max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=1e4,
             rope_scaling=_PHI_ROPE, sliding_window=131072, attention_bias=True,
             lm_head_bias=True, router_jitter_noise=0.01, tie_word_embeddings=False,
             hidden_act="silu"),
        41.9e9, 6.6e9, "Microsoft, Phi-3 technical report (2024): 42B total, 6.6B active"),
    "deepseek_v3": Published(
        "deepseek-ai/DeepSeek-V3",
        dict(architectures=["DeepseekV3ForCausalLM"], vocab_size=129280, hidden_size=7168,
             intermediate_size=18432, moe_intermediate_size=2048, num_hidden_layers=61,
             num_attention_heads=128, num_key_value_heads=128, n_shared_experts=1,
             n_routed_experts=256, routed_scaling_factor=2.5, kv_lora_rank=512,
             q_lora_rank=1536, qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128,
             topk_method="noaux_tc", n_group=8, topk_group=4, num_experts_per_tok=8,
             moe_layer_freq=1, first_k_dense_replace=3, norm_topk_prob=True,
             scoring_func="sigmoid", max_position_embeddings=163840, rms_norm_eps=1e-6,
             rope_theta=1e4, rope_scaling=dict(type="yarn", factor=40, beta_fast=32,
                                               beta_slow=1, mscale=1.0, mscale_all_dim=1.0,
                                               original_max_position_embeddings=4096),
             tie_word_embeddings=False, hidden_act="silu"),
        671e9, 37e9, "DeepSeek-AI, DeepSeek-V3 technical report (2024): 671B total, 37B "
        "activated (without the 14B multi-token-prediction module)"),
}
