r"""Model zoo: greedy generation from Hugging Face MoE checkpoints, checked against transformers.

Families: Mixtral (Jiang et al. 2024), Qwen2-MoE / Qwen1.5-MoE and Qwen3-MoE (Qwen team 2024-25),
OLMoE (Muennighoff et al. 2024), Phi-3.5-MoE (Abdin et al. 2024; GRIN sparsemixer routing),
DeepSeek-V3 (DeepSeek-AI 2024; multi-head latent attention, sigmoid group-limited routing).

Command (default reproduction; random models of every family, widened to d_model 128, 4 layers):
  python -m experiments.generate --config=configs/generate.py --workdir=/tmp/moe_jax/generate
Quick smoke run (seconds, used by the tests): --config=configs/generate.py:quick
A real checkpoint (local directory; no download happens at run time):
  python -m experiments.generate --config=configs/generate.py --workdir=DIR \
      --config.hf_path=/models/OLMoE-1B-7B-0924 --config.dtype=bfloat16 --config.compare=False \
      --config.prompt_text="The capital of France is"

Data: random weights from moe_jax.convert.tiny (norms, biases and routers random; decisive
routers in mixtral/qwen3_moe/olmoe/deepseek_v3), random prompts; the reference is transformers'
own float32 implementation (transformers 5.24, torch 2.13 CPU).

Expected result (measured, default preset): logits relative max error 7e-7 (qwen2_moe) to
1.8e-5 (olmoe), all below the 1e-4 bound; identical 20-token greedy continuations (batch 2) for
all 7 models; full-size parameter counts by jax.eval_shape within 0.11% of the published totals
(Mixtral-8x7B 46,702,792,704 exactly as transformers counts it; DeepSeek-V3 671.03B) and
within 1.5% of the published active counts. Run time: 110 s of CPU (5-10 min wall on the
2 shared cores it was measured on); quick preset: 20 s of CPU.
"""
import ml_collections

FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "phimoe", "deepseek_v3",
            "deepseek_v3_yarn")


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.hf_path = ""            # a local HF model directory; empty: the random family models
  c.families = FAMILIES
  c.overrides = dict(hidden_size=128, num_hidden_layers=4)  # widen the tiny random models
  c.dtype = "float32"
  c.compare = True          # check against transformers (needs torch + transformers)
  c.prompt_text = ""        # with hf_path: encoded by the checkpoint's tokenizer
  c.prompt = ()             # token ids; empty: `prompt_len` random ids
  c.prompt_len = 8
  c.batch = 2
  c.max_new_tokens = 20
  c.check_len = 32          # tokens of the logits check
  c.seed = 0
  c.count_published = True  # the full-size parameter table (jax.eval_shape, ~30 s)
  if preset == "quick":
    c.count_published = False
    c.families = ("mixtral",)
    c.overrides = {}
    c.max_new_tokens = 8
    c.check_len = 12
  return c
