"""Our GPTQ next to llm-compressor's (the PyTorch toolkit users run on Mixtral and Qwen-MoE).

  pip install -e '.[bench]'     # llm-compressor, its own extra (torch pinned as in the test extra)
  python -m benchmarks.quantize [--models=tiny_moe,deep_top1,fine_shared] [--samples=16]
                                [--seq_len=64] [--workdir=DIR]

For each base model of the suite (default: all three; Mixtral, Qwen3-MoE and Qwen2-MoE layouts,
16 to 32 experts, fine_shared with a shared expert), saved as a HF directory, the
same calibration windows of the shipped corpus' training split through both sides, W4A16: 4-bit
symmetric integer weights in groups of g (128, or the largest group every input width allows),
min-max scales, static act-order (its GPTQModifier default; our act_order with static groups),
damp 0.01, block 128, lm_head, the routers and the shared expert's gate in float. Calibration
policy as llm-compressor's default (`moe_calibrate_all_experts`: every calibration token through
every expert, so each expert's Hessian comes from all tokens): ours with options.all_experts.
Beside it, ours with the routed-only policy (each expert's Hessian from the tokens routed to it;
an expert without any is RTN-quantized, where llm-compressor with that flag off would save it as
zeros).
Printed per model: wall times (ours on a first call after clearing JAX's caches, so with all its
compilation, and on a second, warm call; llm-compressor's oneshot), held-out bits per byte of
the float model and of each quantized one (llm-compressor's saved pack-quantized directory is
read back by our loader), each expert's calibration tokens (routed) and the experts under
GPTQModel's RTN-fallback threshold (0.5% of the calibration tokens), and `<model>: vs_llmcompressor_time=
<theirs / ours with compilation>x bpb_delta=<ours - theirs>`. The last line is that of the
worst model: `quantize: vs_llmcompressor_time=<r>x bpb_delta=<d>`. Other processes on the
machine change the times.
"""
from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags
import jax
import numpy as np

from configs import common
from moe_jax.convert.hf import load_pretrained
from moe_jax.eval import EvalConfig, evaluate
from moe_jax.models import base_models
from moe_jax.models.loading import LoadedModel, load_model
from moe_jax.quant import apply, calibrate
from moe_jax.utils.reporting import markdown_table, write_results

THRESHOLD = 0.005  # GPTQModel: an expert under 0.5% of the calibration tokens falls back to RTN
IGNORE = ["lm_head", "re:.*mlp.gate$", "re:.*block_sparse_moe.gate$", "re:.*shared_expert_gate$"]

flags.DEFINE_list("models", list(base_models.BASE_MODELS), "base-model names (e.g. tiny_moe:quick)")
flags.DEFINE_integer("samples", 16, "calibration windows")
flags.DEFINE_integer("seq_len", 64, "tokens per calibration window")
flags.DEFINE_integer("group", 128, "wanted group size (the largest divisor of every width)")
flags.DEFINE_integer("eval_windows", 64, "held-out windows per domain for bits per byte")
flags.DEFINE_string("workdir", "/tmp/moe_jax/bench_quantize", "output folder")
FLAGS = flags.FLAGS


def _theirs(hf_dir: str, tokens: np.ndarray, group: int, out: str) -> float:
  """llm-compressor's oneshot GPTQ of hf_dir on `tokens`, saved compressed to `out`; seconds."""
  import torch  # pylint: disable=g-import-not-at-top
  from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme  # pylint: disable=g-import-not-at-top
  from llmcompressor import oneshot  # pylint: disable=g-import-not-at-top
  from llmcompressor.modifiers.quantization import GPTQModifier  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group",
                             group_size=group, actorder="static")
  recipe = GPTQModifier(config_groups={"group_0": QuantizationScheme(targets=["Linear"],
                                                                     weights=weights)},
                        ignore=IGNORE, block_size=128, dampening_frac=0.01)
  data = torch.utils.data.DataLoader([{"input_ids": torch.tensor(t, dtype=torch.long),
                                       "attention_mask": torch.ones(len(t), dtype=torch.long)}
                                      for t in tokens], batch_size=1)
  start = time.perf_counter()
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  oneshot(model=model, dataset=data, recipe=recipe, num_calibration_samples=len(tokens),
          processor=object(),  # a byte-level model has no tokenizer; the windows are ids
          max_seq_length=tokens.shape[1], moe_calibrate_all_experts=True,
          shuffle_calibration_samples=False)
  seconds = time.perf_counter() - start
  model.save_pretrained(out, save_compressed=True)
  return seconds


def _family(hf_dir: str) -> str:
  with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
    return json.load(f)["model_type"]


def _ours(model: LoadedModel, tokens: np.ndarray, recipe: apply.QuantRecipe):
  """(quantized model, first call's seconds, second call's seconds)."""
  first = apply.quantize_model(model, recipe, tokens)
  start = time.perf_counter()
  apply.quantize_model(model, recipe, tokens)
  return first, first.report["seconds"], time.perf_counter() - start


def compare(name: str, data: dict) -> tuple[dict, str]:
  """One base model through both sides: (its results, its markdown)."""
  jax.clear_caches()  # each model's first call compiles all it needs
  hf_dir = base_models.ensure(name)
  model = load_model(name, dtype="float32")
  tokens = calibrate.corpus_windows(model, EvalConfig.from_dict({"data": data}).data,
                                    FLAGS.samples, FLAGS.seq_len, seed=0)
  group = apply.largest_group(model, FLAGS.group)
  options = dict(mse_clip=False, act_order=True)
  recipes = {policy: apply.QuantRecipe(bits=4, group_size=group, options=apply.QuantOptions(
      **options, all_experts=policy == "all experts")) for policy in ("all experts", "routed")}
  ours = {policy: _ours(model, tokens, r) for policy, r in recipes.items()}
  theirs_dir = os.path.join(FLAGS.workdir, name.replace(":", "-"), "llmcompressor")
  theirs_seconds = _theirs(hf_dir, tokens, group, theirs_dir)
  theirs = LoadedModel(*load_pretrained(theirs_dir, "float32"), theirs_dir)
  eval_config = EvalConfig.from_dict({"data": data, "seq_len": 128, "tasks": [],
                                      "agreement": False})
  bpb = lambda m: evaluate(m, eval_config)["bpb"]["all"]
  float_bpb, theirs_bpb = bpb(model), bpb(theirs)
  rows = [["float", "-", "-", float_bpb]]
  ours_bpb = {}
  for policy, (qm, cold, warm) in ours.items():
    ours_bpb[policy] = bpb(qm.model)
    rows.append([f"ours, {policy}", f"{cold:.2f}", f"{warm:.2f}", ours_bpb[policy]])
  rows.append(["llm-compressor, all experts", f"{theirs_seconds:.2f}", "-", theirs_bpb])
  counts = ours["routed"][0].report["tokens_per_expert"]
  under = {layer: [e for e, n in enumerate(c) if n < THRESHOLD * tokens.size]
           for layer, c in counts.items()}
  m = model.cfg
  ratio = theirs_seconds / ours["all experts"][1]
  delta = ours_bpb["all experts"] - theirs_bpb
  text = "\n\n".join([
      f"## {name}\n\n{m.num_layers} layers, d_model {m.d_model}, {m.moe.num_experts} experts of "
      f"width {m.moe.d_ff}, top-{m.moe.top_k}"
      f"{', a shared expert' if m.moe.shared_d_ff else ''} (HF family "
      f"{_family(hf_dir)}), W4A16 g{group}, {FLAGS.samples} x {FLAGS.seq_len} "
      "calibration tokens; bpb on held-out shipped text.",
      markdown_table(["model", "quantize s (cold)", "quantize s (warm)", "bpb"], rows),
      markdown_table(["layer", "calibration tokens per expert (routed)",
                      f"experts < {THRESHOLD:.1%} of {tokens.size} tokens"],
                     [[layer, " ".join(map(str, c)), under[layer] or "-"]
                      for layer, c in counts.items()]),
      f"{name}: vs_llmcompressor_time={ratio:.2f}x bpb_delta={delta:+.4f}"])
  result = {"ours": {p: {"seconds": o[1], "warm_seconds": o[2], "bpb": ours_bpb[p]}
                     for p, o in ours.items()},
            "theirs_seconds": theirs_seconds, "float_bpb": float_bpb, "theirs_bpb": theirs_bpb,
            "bpb_delta": delta, "time_ratio": ratio, "tokens_per_expert": counts,
            "under_threshold": under}
  return result, text


def main(argv):
  del argv
  os.makedirs(FLAGS.workdir, exist_ok=True)
  data = common.shipped_text(max_eval_windows=FLAGS.eval_windows)
  results, texts = {}, []
  for name in FLAGS.models:
    results[name], text = compare(name, data)
    texts.append(text)
  worst = min(results, key=lambda n: results[n]["time_ratio"])
  line = (f"quantize: vs_llmcompressor_time={results[worst]['time_ratio']:.2f}x "
          f"bpb_delta={results[worst]['bpb_delta']:+.4f}")
  write_results(FLAGS.workdir, {"models": results, "worst": worst},
                "\n\n".join(texts) + f"\n\nWorst model: {worst}.\n\n{line}")


if __name__ == "__main__":
  app.run(main)
