r"""Model zoo: greedy generation from Hugging Face MoE checkpoints, checked against transformers.

Families: Mixtral (Jiang et al. 2024), Qwen2-MoE / Qwen1.5-MoE and Qwen3-MoE (Qwen team 2024-25),
OLMoE (Muennighoff et al. 2024), Phi-3.5-MoE (Abdin et al. 2024; GRIN sparsemixer routing),
DeepSeek-V3 (DeepSeek-AI 2024; multi-head latent attention, sigmoid group-limited routing).

Command (random models of every family, widened to d_model 128, 4 layers):
  python -m experiments.generate --config=configs/generate.py --workdir=/tmp/moe_jax/generate
A real checkpoint (local directory; no download happens at run time):
  python -m experiments.generate --config=configs/generate.py --workdir=DIR \
      --config.hf_path=/models/OLMoE-1B-7B-0924 --config.dtype=bfloat16 --config.compare=False \
      --config.prompt_text="The capital of France is"

Data: random weights from moe_jax.convert.tiny, random prompts; the reference is transformers'
own float32 implementation. Result (docs/generate.md): logits relative max error 7e-7 to 1.8e-5,
all below 1e-4; identical 20-token greedy continuations for all 7 models; full-size parameter
counts within 0.11% of the published totals. Run time: 5-10 min on 2 CPU cores; quick: 20 s.
"""
from moe_jax.convert.generate_experiment import GenerateConfig
from moe_jax.utils.errors import check_choice


def get_config(preset: str = "") -> GenerateConfig:
  check_choice("preset", preset, ("", "quick"))
  c = dict(overrides=dict(hidden_size=128, num_hidden_layers=4))
  if preset == "quick":
    c.update(count_published=False, families=("mixtral",), overrides={}, max_new_tokens=8,
             check_len=12)
  return GenerateConfig.from_dict(c)
