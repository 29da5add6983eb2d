r"""EAQuant (arXiv 2506.13329): expert-aware W4A4 / W3A4 post-training quantization of MoE LMs.

Baseline (rotation + GPTQ, A4 per token, min-max W8A8 router), each of EAQuant's pieces alone
(smoothing aggregation, router logit alignment, calibration balance) and all three, at W4A4 and
W3A4 per-channel, on the fine-grained (fine_shared) and default (tiny_moe) base models, any other
by --config.models=<name or path>. Paper: +1.15 to +2.28 average accuracy points over the
baseline on three MoE models. Result (docs/eaquant.md): on our two models EAQuant does not beat
the baseline (+0.0005 to +0.0071 bits per byte more loss, W4A4 / W3A4, the size of GPTQ's
rounding noise); none of its three pieces helps alone. Run time: default 20.5 min on 2 CPU cores
(base models cached); quick ~1 min.

Command:
  python -m experiments.eaquant --config=configs/eaquant.py --workdir=/tmp/moe_jax/eaquant

Deviations for scale (docs/eaquant.md): the base is QuaRot's offline residual rotation (Hadamard
for power-of-two widths, random orthogonal otherwise: d_model 192) without its online Hadamards;
per-token dynamic activations (the code: per-tensor static, DuQuant rotations); GPTQ weights (the
code: RTN after OmniQuant-style clipping); 128 x 64 calibration tokens (the code: 128 x 4096);
balance target (k/E) x 64 x 2 with up to 2 further passes; GPTQ sees the top-up windows
uncapped (moe_jax/quant/apply.py takes no per-expert token cap). Presets: "quick" (the quick base
models, a small evaluation; the tests), "" (the documented reproduction).
"""
from configs import common
from moe_jax.quant.eaquant_experiment import EAQuantConfig
from moe_jax.utils.errors import check_choice


def get_config(preset: str = "") -> EAQuantConfig:
  check_choice("preset", preset, ("", "quick"))
  c = dict(models=("fine_shared", "tiny_moe"), settings=("w4a4", "w3a4"),
           recipe=dict(rotation="hadamard", alpha=0.6, router_term=True, clip_low=0.35,
                       clip_grid=101, balance_ratio=2.0, max_passes=2,
                       act=dict(clip_ratio=0.9, router_bits=8),
                       options=dict(mse_clip=True, damp=0.01, block_size=128, batch_size=16)),
           calibration=dict(num_samples=128, seq_len=64, seed=0, batch_size=16),
           eval=dict(data=common.shipped_text(max_eval_windows=128), seq_len=256, batch_size=16,
                     num_items=300))
  if preset == "quick":
    c.update(models=("fine_shared:quick", "tiny_moe:quick"),
             calibration=dict(num_samples=16, seq_len=32, batch_size=16),
             eval=dict(data=common.shipped_text(sources=("english",), max_eval_windows=4),
                       seq_len=128, batch_size=8, tasks=("continuation",), num_items=16))
    c["recipe"].update(clip_grid=21)
  return EAQuantConfig.from_dict(c)
