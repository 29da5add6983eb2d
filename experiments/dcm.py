"""DCM reproduction: teacher, single-expert CM and DCM at 1, 2 and 4 steps, plus the ablation.

  python -m experiments.dcm --config=configs/dcm.py[:quick|:medium] --workdir=DIR

Writes DIR/results.json ({"methods": {"teacher"|"cm"|"dcm": {"<steps>": {fd, fd_teacher,
temporal_err, detail_err, coherence}}}, "expert_swap": ..., "ablation": ..., "per_timestep": ...};
for cm, dcm and the expert swaps each metric is the mean over `student_seeds` distillation seeds,
with `<metric>_std` and `<metric>_per_seed` beside it), DIR/results.md, samples.png, samples.gif,
per_timestep.png, synthesis_timeline.png and training.png.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from moe_jax.utils import cli
from moe_jax.utils.errors import check_choice, check_positive, require
from moe_jax.utils.reporting import markdown_table, write_results
from moe_jax.video_diffusion import data as vdata
from moe_jax.video_diffusion import distill, experts, losses, metrics, plots, timeline
from moe_jax.video_diffusion.dit import VideoDiT
from moe_jax.video_diffusion.discriminator import Discriminator
from moe_jax.video_diffusion.sampler import euler_sample
from moe_jax.video_diffusion.schedule import (DETAIL, SEMANTIC, FlowSchedule,
                                              resolution_equivalent_sigma)

_CONFIG = config_flags.DEFINE_config_file("config", "configs/dcm.py", "Experiment config.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/dcm", "Output directory.")

# Paper Table 1 (VBench Total / Quality / Semantic) and Fig. 3 (VBench total, read off the chart).
PAPER_VBENCH = {
    "HunyuanVideo teacher, 50 steps": (83.87, 85.00, 79.34),
    "HunyuanVideo LCM, 4 steps": (80.33, 80.83, 78.32),
    "HunyuanVideo PCM, 4 steps": (80.93, 81.94, 76.90),
    "HunyuanVideo DCM, 4 steps": (83.83, 85.12, 78.67),
    "CogVideoX teacher, 50 steps": (80.59, 81.93, 75.23),
    "CogVideoX LCM, 4 steps": (78.88, 80.07, 74.12),
    "CogVideoX PCM, 4 steps": (79.09, 80.33, 74.14),
    "CogVideoX DCM, 4 steps": (79.99, 81.35, 74.56),
}
# The HunyuanVideo recipe's phase boundary (sigmas_prev[38], shift 17) and the size of the latent it
# was set on: 29 frames of 720x1280 through HunyuanVideo's VAE (4x time, 8x space, 16 channels).
PAPER_BOUNDARY_SIGMA, PAPER_LATENT_DIMS = 0.98176, 8 * 90 * 160 * 16
PAPER_FIG3 = {"VCM": 80.3, "SemE+VCM": 82.4, "VCM+DetE": 81.2, "SemE+DetE": 83.0}
# The paper's Fig. 3 question asked of our trained students, per seed: which half of the sampler
# (the semantic steps above the boundary, the detail steps below it) each DCM expert improves.
# name: (student whose semantic expert runs the high-noise steps, student whose detail expert runs
# the low-noise steps); "cm"/"cm" is VCM and "dcm"/"dcm" is SemE+DetE.
EXPERT_SWAPS = {"SemE+VCM": ("dcm", "cm"), "VCM+DetE": ("cm", "dcm")}


@dataclasses.dataclass(frozen=True)
class Variant:
  """One student recipe: expert split or not, detail-expert form and which extra losses are on.

  form: "lora" (the config's LoRA targets), "attn_lora" (attention only, the paper's targets) or
  "full" (an unshared copy of the whole network).
  """
  split: bool = True
  form: str = "lora"
  tc: bool = True
  gan: bool = True
  fm: bool = True


VARIANTS = {
    "cm": Variant(split=False, tc=False, gan=False, fm=False),
    "dcm": Variant(),
    "no_tc": Variant(tc=False),
    "no_gan": Variant(gan=False),
    "no_fm": Variant(fm=False),
    "no_gan_fm": Variant(gan=False, fm=False),
    "full_detail": Variant(form="full"),
    "attn_lora": Variant(form="attn_lora"),
    "no_split": Variant(split=False),
}
ABLATION_LABELS = {
    "dcm": "DCM (all components)", "no_tc": "- Temporal Coherence Loss", "no_gan": "- GAN loss",
    "no_fm": "- Feature Matching loss", "no_gan_fm": "- GAN and FM", "full_detail":
    "full detail expert (no LoRA sharing)", "attn_lora": "LoRA on attention only (paper's "
    "targets; no adaLN adapters)", "no_split": "- expert split (one student, all losses)",
    "cm": "single-expert CM (no DCM component)"}


def _check(c) -> None:
  for field in ("frames", "size", "n_train", "n_test", "teacher_steps", "batch", "n_eval",
                "semantic_steps", "detail_steps", "lora_rank", "classifier_steps", "diag_batch",
                "student_seeds", "timeline_pool"):
    check_positive(field, c[field])
  require(c.size % c.patch == 0, "patch", f"{c.patch} does not divide size {c.size}",
          "use a patch size that divides the canvas")
  require(c.size % c.timeline_pool == 0, "timeline_pool", f"{c.timeline_pool} does not divide "
          f"size {c.size}", "use a divisor of the canvas size")
  require(c.width % (4 * c.heads) == 0, "heads", f"head width {c.width}/{c.heads} is not a "
          "multiple of 4 (rotary pairs over two spatial axes)",
          "use width divisible by 4 * heads")
  require(c.disc_hidden % c.disc_groups == 0, "disc_groups", "must divide disc_hidden",
          "pick a divisor of disc_hidden")
  require(c.depth >= c.feature_stride, "feature_stride", "no block would be tapped",
          "use feature_stride <= depth")
  check_choice("gan_loss", c.gan_loss, ("hinge", "nonsaturating"))
  for name in c.ablations:
    check_choice("ablations", name, [k for k in VARIANTS if k not in ("cm", "dcm")])
  require(c.ablation_steps in c.eval_steps, "ablation_steps", "not among eval_steps",
          "add it to eval_steps")
  require(c.lora_adaln or "attn_lora" not in c.ablations, "ablations", "attn_lora equals DCM when "
          "lora_adaln is off", "drop attn_lora from ablations or set lora_adaln=True")


class Run:
  """Holds the data, teacher and the (hashable, built-once) functions every variant shares."""

  def __init__(self, c):
    self.c = c
    self.schedule = FlowSchedule(c.shift, c.euler_steps, c.boundary_index)
    self.data, self.digits, self.directions = vdata.moving_digits(
        c.n_train, frames=c.frames, size=c.size, seed=c.seed)
    arch = dict(frames=c.frames, size=c.size, patch=c.patch, width=c.width, depth=c.depth,
                heads=c.heads, mlp_ratio=c.mlp_ratio, feature_stride=c.feature_stride)
    self.model = VideoDiT(**arch)
    lora = dict(lora_rank=c.lora_rank, lora_alpha=c.lora_alpha)
    self.lora_models = {"lora": VideoDiT(**arch, **lora, lora_adaln=c.lora_adaln),
                        "attn_lora": VideoDiT(**arch, **lora)}
    self.full_apply = experts.expert_apply(self.model)
    self.lora_applies = {k: experts.expert_apply(m) for k, m in self.lora_models.items()}
    self.jit_apply = {f: jax.jit(f) for f in (self.full_apply, *self.lora_applies.values())}
    self.x1 = self.data[:1]
    self.s1 = np.ones((1,), np.float32)
    params = self.model.init(jax.random.PRNGKey(c.seed), self.x1, self.s1)["params"]
    model = self.model
    self.teacher_params, self.teacher_losses = distill.train_teacher(
        lambda p, x, s: model.apply({"params": p}, x, s), params, self.data, self.schedule,
        steps=c.teacher_steps, batch=c.teacher_batch, lr=c.teacher_lr, ema=c.teacher_ema,
        seed=c.seed)
    self.teacher = distill.TeacherFns(
        velocity=lambda p, x, s: model.apply({"params": p}, x, s),
        features=lambda p, x, s: model.apply({"params": p}, x, s, return_features=True)[1],
        decode=lambda p, h, s: model.apply({"params": p}, h, s, method=VideoDiT.decode))
    disc = Discriminator(c.depth // c.feature_stride, c.disc_hidden, c.disc_groups)
    self.disc_module, self.disc_apply = disc, disc.apply
    self.histories, self._semantic_cache = {}, {}

  def _losses(self, v: Variant):
    c = self.c
    common = dict(huber_c=c.huber_c, adv_weight=c.adv_weight, gan_weight=c.gan_weight,
                  fm_weight=c.fm_weight, gan_loss=c.gan_loss, tc_stride=c.tc_stride)
    return {SEMANTIC: distill.PhaseLosses(tc_weight=c.tc_weight if v.tc else 0.0, **common),
            DETAIL: distill.PhaseLosses(gan=v.gan, fm=v.fm, **common)}

  def _disc(self, v: Variant, seed: int):
    if not v.gan:
      return None
    taps = self.teacher.features(self.teacher_params, self.x1, self.s1)
    return distill.DiscriminatorState(
        apply=self.disc_apply, params=self.disc_module.init(jax.random.PRNGKey(seed), taps),
        opt=distill.make_optimizer(self.c.lr_discriminator, b1=0.0))

  def _distill(self, name, plan, students, v: Variant, seed: int, disc_seed: int = 0):
    self.histories[name] = distill.distill(
        plan, students, self._losses(v), self.teacher, self.teacher_params, self.schedule,
        self.data, batch=self.c.batch, seed=seed,
        disc=self._disc(v, disc_seed) if DETAIL in plan else None, desc=name)

  def full_student(self, params, lr):
    return distill.Student(self.full_apply, params, {}, distill.make_optimizer(lr))

  def _semantic_expert(self, v: Variant, seed: int, tag: str):
    """Stage 1 (full fine-tune from the teacher on the high-noise phase), shared by variants."""
    if (v.tc, seed) not in self._semantic_cache:
      st = self.full_student(self.teacher_params, self.c.lr_semantic)
      self._distill(f"semantic expert (tc={v.tc}){tag}", [SEMANTIC] * self.c.semantic_steps,
                    {SEMANTIC: st}, v, seed + 1)
      self._semantic_cache[v.tc, seed] = st
    return self._semantic_cache[v.tc, seed]

  def train(self, name: str, rep: int = 0):
    """Trains one variant with distillation seed `rep` (the teacher is shared); returns
    (semantic, detail) students (one object twice if unsplit)."""
    c, v = self.c, VARIANTS[name]
    seed, tag = c.seed + 10 * rep, f" #{rep}" if rep else ""
    if not v.split:
      st = self.full_student(self.teacher_params, c.lr_semantic)
      plan = [SEMANTIC] * c.semantic_steps + [DETAIL] * c.detail_steps
      np.random.default_rng(seed + 3).shuffle(plan)
      self._distill(name + tag, plan, {SEMANTIC: st, DETAIL: st}, v, seed + 2, seed)
      return st, st
    sem = self._semantic_expert(v, seed, tag)
    if v.form in self.lora_models:
      trainable, frozen = experts.init_detail_expert(
          self.lora_models[v.form], sem.trainable, jax.random.PRNGKey(seed + 4), self.x1, self.s1)
      det = distill.Student(self.lora_applies[v.form], trainable, frozen,
                            distill.make_optimizer(c.lr_detail))
    else:
      det = self.full_student(sem.trainable, c.lr_semantic)
    self._distill(f"{name} detail expert{tag}", [DETAIL] * c.detail_steps, {DETAIL: det}, v,
                  seed + 2, seed)
    return sem, det

  def velocity(self, sem, det):
    """The routed sampler velocity v(x, s) of a (semantic, detail) pair."""
    bind = lambda st: lambda x, s: self.jit_apply[st.apply](st.trainable, st.frozen, x, s)
    return experts.dual_velocity(self.schedule, bind(sem), bind(det))


def main(_):
  c = _CONFIG.value
  _check(c)
  start = time.time()
  run = Run(c)
  sched, workdir = run.schedule, _WORKDIR.value

  test, test_digits, test_dirs = vdata.moving_digits(c.n_test, frames=c.frames, size=c.size,
                                                     split="test", seed=c.seed + 100)
  clf, clf_params = metrics.train_classifier(run.data, run.digits, run.directions,
                                             steps=c.classifier_steps, batch=c.classifier_batch,
                                             lr=c.classifier_lr, seed=c.seed)
  clf_acc = metrics.classifier_accuracy(clf, clf_params, test, test_digits, test_dirs)
  real_feats = metrics.features(clf, clf_params, test)

  noise = np.asarray(jax.random.normal(jax.random.PRNGKey(c.seed + 7),
                                       (c.n_eval, c.frames, c.size, c.size, 1)))
  teacher_st = run.full_student(run.teacher_params, c.lr_semantic)
  teacher_v = run.velocity(teacher_st, teacher_st)
  teacher_sigmas = sched.teacher_sigmas()
  reference, path = euler_sample(teacher_v, noise, teacher_sigmas, return_path=True)
  reference = np.asarray(reference)
  synthesis = timeline.synthesis_timeline(path, teacher_sigmas, c.timeline_pool)
  del path
  full_steps = len(teacher_sigmas) - 1

  reference_feats = metrics.features(clf, clf_params, reference)

  def evaluate(velocity, steps):
    x = np.asarray(euler_sample(velocity, noise, sched.student_sigmas(steps)))
    feats = metrics.features(clf, clf_params, x)
    return {"fd": metrics.frechet_distance(feats, real_feats),
            "fd_teacher": metrics.frechet_distance(feats, reference_feats),
            "temporal_err": metrics.temporal_error(x, reference),
            "detail_err": metrics.detail_error(x, reference),
            "coherence": metrics.frame_coherence(x)}, x

  results = {"methods": {"teacher": {}, "cm": {}, "dcm": {}}, "ablation": {}}
  samples = {f"teacher {full_steps}": reference}
  results["methods"]["teacher"][str(full_steps)] = {
      "fd": metrics.frechet_distance(reference_feats, real_feats), "fd_teacher": 0.0,
      "temporal_err": 0.0, "detail_err": 0.0, "coherence": metrics.frame_coherence(reference)}
  for steps in c.eval_steps:
    results["methods"]["teacher"][str(steps)], x = evaluate(teacher_v, steps)
    if steps == c.ablation_steps:
      samples[f"teacher {steps}"] = x

  # Single-expert CM, with the per-timestep diagnosis before and after distillation.
  diag_x0 = run.data[:c.diag_batch]
  stats = lambda st: distill.per_timestep_stats(st, run.teacher, run.teacher_params, sched, diag_x0,
                                                c.seed, c.huber_c)
  curves = {"CM at init (= teacher)": stats(teacher_st)}
  trained, per_seed = {}, {"cm": [], "dcm": []}
  swaps = {name: [] for name in EXPERT_SWAPS}
  for rep in range(c.student_seeds):  # CM and DCM with each distillation seed, one teacher
    pairs = {}
    for name in ("cm", "dcm"):
      pairs[name] = run.train(name, rep)
      trained.setdefault(name, pairs[name])
      velocity, scores = run.velocity(*pairs[name]), {}
      for steps in c.eval_steps:
        scores[str(steps)], x = evaluate(velocity, steps)
        if rep == 0 and steps == c.ablation_steps:
          samples[f"{name} {steps}"] = x
      per_seed[name].append(scores)
    for name, (sem_from, det_from) in EXPERT_SWAPS.items():
      velocity = run.velocity(pairs[sem_from][0], pairs[det_from][1])
      swaps[name].append(evaluate(velocity, c.ablation_steps)[0])
  for name, runs in per_seed.items():
    results["methods"][name] = {steps: _seed_summary([r[steps] for r in runs])
                                for steps in runs[0]}
    results["ablation"][name] = runs[0][str(c.ablation_steps)]  # the ablations' own seed
  results["expert_swap"] = {name: _seed_summary(runs) for name, runs in swaps.items()}
  for name in c.ablations:
    trained[name] = run.train(name)
    results["ablation"][name], _ = evaluate(run.velocity(*trained[name]), c.ablation_steps)
  if "full_detail" in trained:  # where experts trained on one phase each differ (seed 0)
    results["expert_weight_difference"] = experts.weight_difference(
        *(st.trainable for st in trained["full_detail"]))
  curves["CM after distillation"] = stats(trained["cm"][0])
  sem_curve, det_curve = (stats(st) for st in trained["dcm"])
  mask = sched.sigmas > sched.boundary_sigma
  curves["DCM experts after distillation"] = tuple(
      np.where(mask, a, b) for a, b in zip(sem_curve, det_curve))

  # Gradient-norm statistics per phase from the single-expert CM's own training steps.
  phase_stats = {}
  for phase in (SEMANTIC, DETAIL):
    rows = [h for h in run.histories["cm"] if h["phase"] == phase]
    phase_stats[phase] = {"mean_cd_loss": float(np.mean([h["cd"] for h in rows])),
                          "mean_grad_norm": float(np.mean([h["grad_norm"] for h in rows]))}

  results.update({
      "discriminator": _discriminator_summary(run.histories, c.gan_loss),
      "synthesis_timeline": synthesis,
      "per_timestep": {k: {"sigma": v[0], "loss": v[1], "grad_norm": v[2]}
                       for k, v in curves.items()},
      "cm_phase_stats": phase_stats, "classifier_test_acc": clf_acc,
      "teacher_final_loss": float(np.mean(run.teacher_losses[-50:])),
      "trainable_params": {"teacher": experts.count_params(run.teacher_params),
                           "dcm_detail_expert": experts.count_params(trained["dcm"][1].trainable)},
      "boundary_sigma": sched.boundary_sigma, "teacher_steps": full_steps,
      "paper_boundary_equivalent_sigma": float(resolution_equivalent_sigma(
          PAPER_BOUNDARY_SIGMA, PAPER_LATENT_DIMS, c.frames * c.size * c.size)),
      "paper_vbench_total_quality_semantic": PAPER_VBENCH, "paper_fig3_vbench": PAPER_FIG3,
      "data": f"moving sklearn digits, {c.frames}x{c.size}x{c.size}x1, {c.n_train} train clips",
      "preset": c.preset, "runtime_s": time.time() - start})

  plots.sample_grid(workdir, "samples", samples)
  plots.sample_gif(workdir, "samples", samples)
  plots.per_timestep_plot(workdir, "per_timestep", curves, sched.boundary_sigma)
  plots.timeline_plot(workdir, "synthesis_timeline", synthesis, sched.boundary_sigma)
  plots.training_curves(workdir, "training", {
      "teacher flow matching": run.teacher_losses,
      **{f"{k}: cd": [h["cd"] for h in v] for k, v in run.histories.items()}})
  write_results(workdir, results, _markdown(c, results, full_steps))


def _seed_summary(runs: list[dict]) -> dict:
  """Per-metric mean over distillation seeds, with `<metric>_std` and `<metric>_per_seed`."""
  out = {}
  for key in runs[0]:
    values = [float(r[key]) for r in runs]
    out.update({key: float(np.mean(values)), f"{key}_std": float(np.std(values)),
                f"{key}_per_seed": values})
  return out


def _discriminator_summary(histories: dict, kind: str) -> dict:
  """Mean discriminator loss over the last quarter of each adversarial stage, beside the loss of
  one that cannot tell the student's jump from the teacher's target (`chance`)."""
  last = {}
  for name, history in histories.items():
    d = [h["gan_d"] for h in history if "gan_d" in h]
    if d:
      last[name] = float(np.mean(d[-max(1, len(d) // 4):]))
  return {"chance": losses.discriminator_chance_loss(kind), "last_quarter_loss": last}


def _standard_error(d: np.ndarray) -> float:
  """Standard error of the mean of paired differences (nan for a single seed)."""
  return float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def _paired_cells(a: dict, b: dict, keys) -> list[str]:
  """'mean ± standard error (k/n)' of a - b per metric, paired by seed (k: seeds where a < b)."""
  cells = []
  for key in keys:
    d = np.subtract(a[key + "_per_seed"], b[key + "_per_seed"])
    cells.append(f"{d.mean():+.4g} ± {_standard_error(d):.2g} ({int((d < 0).sum())}/{len(d)})")
  return cells


def _markdown(c, r, full_steps) -> str:
  m = r["methods"]
  header = (
      f"# DCM on moving digits ({r['data']}; preset {c.preset}; {r['runtime_s'] / 60:.1f} min)\n\n"
      f"Tiny unconditional rectified-flow DiT teacher (flow shift {c.shift} instead of 17, "
      f"{c.euler_steps}-step Euler grid, boundary index {c.boundary_index} -> s = "
      f"{r['boundary_sigma']:.3f}; the paper's boundary s = {PAPER_BOUNDARY_SIGMA} on HunyuanVideo "
      f"latents carried to this clip size at equal signal-to-noise per dimension (SD3 eq. 23): s = "
      f"{r['paper_boundary_equivalent_sigma']:.3f}); students get {c.semantic_steps} semantic + "
      f"{c.detail_steps} detail phase steps (batch {c.batch}); LoRA r={c.lora_rank}. Reference: "
      f"the teacher's {full_steps}-step Euler sample from the same noise (its temporal/detail "
      f"errors are 0 by construction). FD in the features of a video classifier (test digit acc "
      f"{r['classifier_test_acc']['digit_acc']:.2f}, direction acc "
      f"{r['classifier_test_acc']['direction_acc']:.2f}) against {c.n_test} held-out real clips; "
      f"{c.n_eval} samples per row; CM and DCM: mean ± std over {c.student_seeds} "
      f"distillation seeds on one teacher. Scale deviations from the paper's code: pixel clips "
      f"instead of VAE latents, no text / CFG, a width-{c.width} DiT, LoRA r={c.lora_rank}"
      f"{' on attention and adaLN (paper: attention only)' if c.lora_adaln else ''}, "
      f"learning rates {c.lr_semantic:g}/{c.lr_detail:g}/{c.lr_discriminator:g} (paper "
      f"1e-6/5e-6/1e-5) and "
      f"{c.semantic_steps} + {c.detail_steps} instead of 1500 + 1000 steps. FD to teacher: the "
      f"same classifier's FD against the teacher's {full_steps}-step samples instead of real "
      f"clips (how close a student's samples are to its teacher's as a set). FD, FD to teacher, "
      f"temporal and detail err: lower is better; frame coherence (how well each frame is its "
      f"predecessor moved by up to 2 px): 1.0 on real clips, higher is better.\n")
  keys = ("fd", "fd_teacher", "temporal_err", "detail_err", "coherence")
  cell = lambda v, k: (f"{v[k]:.4g} ± {v[k + '_std']:.2g}" if k + "_std" in v else f"{v[k]:.4g}")
  rows = [(name, steps, *(cell(m[name][steps], k) for k in keys))
          for name in ("teacher", "cm", "dcm") for steps in m[name]]
  main_t = markdown_table(["method", "steps", "FD", "FD to teacher", "temporal err", "detail err",
                           "frame coherence"], rows)
  lower = keys[:-1]  # lower is better
  wins = [(steps, *_paired_cells(m["dcm"][steps], m["cm"][steps], lower)) for steps in m["dcm"]]
  wins_t = markdown_table(["DCM - CM, paired by seed (mean ± standard error)", "FD (DCM lower in)",
                           "FD to teacher", "temporal err", "detail err"], wins)
  ablate = str(c.ablation_steps)
  fig3 = r["paper_fig3_vbench"]
  half = lambda sem, det: f"{sem.upper()}'s semantic steps, {det.upper()}'s detail steps"
  swap_rows = [(f"VCM: {half('cm', 'cm')}", f"{fig3['VCM']:.1f}", *(["0"] * len(lower)))]
  swap_rows += [(f"{name}: {half(*EXPERT_SWAPS[name])}", f"{fig3[name]:.1f}",
                 *_paired_cells(v, m["cm"][ablate], lower))
                for name, v in r["expert_swap"].items()]
  swap_rows.append((f"SemE+DetE: {half('dcm', 'dcm')}", f"{fig3['SemE+DetE']:.1f}",
                    *_paired_cells(m["dcm"][ablate], m["cm"][ablate], lower)))
  swap_t = markdown_table(["sampler halves (paper Fig. 3 name)", "paper VBench total",
                           "FD - CM (lower in)", "FD to teacher - CM", "temporal err - CM",
                           "detail err - CM"], swap_rows)
  abl = [(ABLATION_LABELS[k], *(v[x] for x in ("fd", "temporal_err", "detail_err")))
         for k, v in r["ablation"].items()]
  abl_t = markdown_table([f"variant ({c.ablation_steps} steps)", "FD", "temporal err",
                          "detail err"], abl)
  wdiff = r.get("expert_weight_difference", {})
  wdiff_t = markdown_table(["layer (all blocks)", "‖W_detail − W_semantic‖ / ‖W_semantic‖"],
                           sorted(wdiff.items(), key=lambda kv: -kv[1]), floatfmt=".3f")
  disc = r["discriminator"]
  disc_t = markdown_table(["stage with the GAN loss", "discriminator loss, last quarter"],
                          list(disc["last_quarter_loss"].items()), floatfmt=".3f")
  ps = r["cm_phase_stats"]
  diag = markdown_table(["CM training steps on phase", "mean CD loss", "mean grad norm"],
                        [(k, v["mean_cd_loss"], v["mean_grad_norm"]) for k, v in ps.items()])
  curve_rows = []
  for label, v in r["per_timestep"].items():
    sem = np.asarray(v["sigma"]) > r["boundary_sigma"]
    loss, grad = np.asarray(v["loss"]), np.asarray(v["grad_norm"])
    curve_rows.append((label, loss[sem].mean(), loss[~sem].mean(), grad[sem].mean(),
                       grad[~sem].mean()))
  curve_t = markdown_table(["per-timestep sweep, mean over grid nodes", "loss semantic phase",
                            "loss detail phase", "grad norm semantic", "grad norm detail"],
                           curve_rows, floatfmt=".2e")
  tl = r["synthesis_timeline"]
  at_boundary = int(np.argmin(np.abs(np.subtract(tl["sigma"], r["boundary_sigma"]))))
  nodes = sorted(set(range(0, len(tl["sigma"]), 5)) | {at_boundary})
  tl_t = markdown_table(["teacher path: noise level s", "layout corr", "motion corr"],
                        [(("-> " if k == at_boundary else "") + f"{tl['sigma'][k]:.3f}",
                          tl["layout"][k], tl["motion"][k]) for k in nodes], floatfmt=".3f")
  paper = markdown_table(["paper (VBench, Table 1)", "total", "quality", "semantic"],
                         [(k, *v) for k, v in r["paper_vbench_total_quality_semantic"].items()],
                         floatfmt=".2f")
  return "\n\n".join([header, main_t, wins_t,
                      f"Which DCM expert helps (paper Fig. 3 asked of our students): the {ablate}-"
                      "step sampler with its semantic steps (above the boundary) and detail steps "
                      "(below) taken from CM or DCM of the same seed; paired differences against "
                      "CM as above. Paper: VBench total (higher is better) of separately trained "
                      "students, read off its chart.", swap_t,
                      f"Ablation (each DCM component off; distillation seed 0, "
                      f"{c.ablation_steps} steps):", abl_t,
                      *(["Where two experts trained apart differ (the full detail expert of the "
                         "ablation against its semantic expert; the paper's reason for the "
                         "detail expert's form):", wdiff_t] if wdiff else []),
                      f"Discriminator ({c.gan_loss} loss; {disc['chance']:.3f} is the floor of "
                      "one that cannot tell the student's jump from the teacher's target; near "
                      "it, the discriminator has found no difference to teach the detail "
                      "expert):", disc_t,
                      "Per-phase dynamics of the single-expert CM (see per_timestep.png):", diag,
                      curve_t,
                      "Synthesis timeline (synthesis_timeline.png): correlation of the teacher's "
                      "clean-clip estimate x0_hat = x - s v at each node with its final sample, "
                      f"{c.timeline_pool}x{c.timeline_pool}-pooled frames (layout) and frame "
                      "differences (motion); -> marks the phase boundary:", tl_t,
                      "Paper figures, for direction (higher VBench is better; ours: lower is "
                      "better):",
                      paper])


if __name__ == "__main__":
  cli.run(main)
