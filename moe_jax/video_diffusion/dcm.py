"""DCM's experiment (Lv et al. 2025, arXiv 2506.03123): one teacher, CM and DCM students per seed,
the expert swaps (the paper's Fig. 3 asked of our students) and the ablation, at few steps.

`run(config, workdir)` returns (and `execute` writes to results.json)
  methods.{teacher|cm|dcm}.<steps>.{fd, fd_teacher, temporal_err, detail_err, coherence},
  expert_swap.<SemE+VCM|VCM+DetE>.<metric> (at evaluation.ablation_steps), ablation.<variant>,
  discriminator, per_timestep, synthesis_timeline, expert_weight_difference, ...;
for cm, dcm and the swaps each metric is the mean over `distill.student_seeds` seeds, with
`<metric>_std` and `<metric>_per_seed` beside it. Plots: see `dcm_report.plots`.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from moe_jax.utils.experiment import Claim, Experiment
from moe_jax.utils.trees import param_count
from moe_jax.video_diffusion import data as vdata
from moe_jax.video_diffusion import (dcm_distill, dcm_experts, dcm_losses, dcm_paper, dcm_report,
                                     dcm_timeline, metrics)
from moe_jax.video_diffusion.dcm_config import DCMConfig
from moe_jax.video_diffusion.dcm_discriminator import Discriminator
from moe_jax.video_diffusion.dcm_variants import EXPERT_SWAPS, VARIANTS, Variant
from moe_jax.video_diffusion.dit import VideoDiT
from moe_jax.video_diffusion.sampler import euler_sample
from moe_jax.video_diffusion.schedule import DETAIL, SEMANTIC, resolution_equivalent_sigma


class Recipe:
  """The data, the trained teacher and the (hashable, built-once) functions every student shares;
  `train` distils one variant with one seed."""

  def __init__(self, c: DCMConfig):
    self.c = c
    self.schedule = c.schedule
    self.data, self.digits, self.directions = vdata.moving_digits(
        c.data.n_train, frames=c.data.frames, size=c.data.size, seed=c.seed)
    arch = dict(frames=c.data.frames, size=c.data.size, **dataclasses.asdict(c.model))
    self.model = model = VideoDiT(**arch)
    lora = dict(lora_rank=c.lora.rank, lora_alpha=c.lora.alpha)
    self.lora_models = {"lora": VideoDiT(**arch, **lora, lora_adaln=c.lora.adaln),
                        "attn_lora": VideoDiT(**arch, **lora)}
    self.full_apply = dcm_experts.expert_apply(model)
    self.lora_applies = {k: dcm_experts.expert_apply(m) for k, m in self.lora_models.items()}
    self.jit_apply = {f: jax.jit(f) for f in (self.full_apply, *self.lora_applies.values())}
    self.x1 = self.data[:1]
    self.s1 = np.ones((1,), np.float32)
    params = model.init(jax.random.PRNGKey(c.seed), self.x1, self.s1)["params"]
    self.teacher_params, self.teacher_losses = dcm_distill.train_teacher(
        lambda p, x, s: model.apply({"params": p}, x, s), params, self.data, self.schedule,
        **dataclasses.asdict(c.teacher), seed=c.seed)
    self.teacher = dcm_distill.TeacherFns(
        velocity=lambda p, x, s: model.apply({"params": p}, x, s),
        features=lambda p, x, s: model.apply({"params": p}, x, s, return_features=True)[1],
        decode=lambda p, h, s: model.apply({"params": p}, h, s, method=VideoDiT.decode))
    self.teacher_student = self.full_student(self.teacher_params, c.distill.lr_semantic)
    self.teacher_velocity = self.velocity(self.teacher_student, self.teacher_student)
    self.disc_module = Discriminator(c.model.depth // c.model.feature_stride,
                                     **dataclasses.asdict(c.discriminator))
    self.histories, self._semantic_cache = {}, {}

  def _losses(self, v: Variant) -> dict:
    w = self.c.losses
    return {SEMANTIC: dcm_distill.PhaseLosses(w, tc=v.tc),
            DETAIL: dcm_distill.PhaseLosses(w, gan=v.gan, fm=v.fm)}

  def _disc(self, v: Variant, seed: int):
    if not v.gan:
      return None
    taps = self.teacher.features(self.teacher_params, self.x1, self.s1)
    return dcm_distill.DiscriminatorState(
        apply=self.disc_module.apply, params=self.disc_module.init(jax.random.PRNGKey(seed), taps),
        opt=dcm_distill.make_optimizer(self.c.distill.lr_discriminator, b1=0.0))

  def _distill(self, name, plan, students, v: Variant, seed: int, disc_seed: int = 0):
    self.histories[name] = dcm_distill.distill(
        plan, students, self._losses(v), self.teacher, self.teacher_params, self.schedule,
        self.data, batch=self.c.distill.batch, seed=seed,
        disc=self._disc(v, disc_seed) if DETAIL in plan else None, desc=name)

  def full_student(self, params, lr):
    return dcm_distill.Student(self.full_apply, params, {}, dcm_distill.make_optimizer(lr))

  def _semantic_expert(self, v: Variant, seed: int, tag: str):
    """Stage 1 (full fine-tune from the teacher on the high-noise phase), shared by variants."""
    if (v.tc, seed) not in self._semantic_cache:
      d = self.c.distill
      st = self.full_student(self.teacher_params, d.lr_semantic)
      self._distill(f"semantic expert (tc={v.tc}){tag}", [SEMANTIC] * d.semantic_steps,
                    {SEMANTIC: st}, v, seed + 1)
      self._semantic_cache[v.tc, seed] = st
    return self._semantic_cache[v.tc, seed]

  def train(self, name: str, rep: int = 0):
    """Trains one variant with distillation seed `rep` (the teacher is shared); returns
    (semantic, detail) students (one object twice if unsplit)."""
    c, d, v = self.c, self.c.distill, VARIANTS[name]
    seed, tag = c.seed + 10 * rep, f" #{rep}" if rep else ""
    if not v.split:
      st = self.full_student(self.teacher_params, d.lr_semantic)
      plan = [SEMANTIC] * d.semantic_steps + [DETAIL] * d.detail_steps
      np.random.default_rng(seed + 3).shuffle(plan)
      self._distill(name + tag, plan, {SEMANTIC: st, DETAIL: st}, v, seed + 2, seed)
      return st, st
    sem = self._semantic_expert(v, seed, tag)
    if v.form in self.lora_models:
      trainable, frozen = dcm_experts.init_detail_expert(
          self.lora_models[v.form], sem.trainable, jax.random.PRNGKey(seed + 4), self.x1, self.s1)
      det = dcm_distill.Student(self.lora_applies[v.form], trainable, frozen,
                                dcm_distill.make_optimizer(d.lr_detail))
    else:
      det = self.full_student(sem.trainable, d.lr_semantic)
    self._distill(f"{name} detail expert{tag}", [DETAIL] * d.detail_steps, {DETAIL: det}, v,
                  seed + 2, seed)
    return sem, det

  def velocity(self, sem, det):
    """The routed sampler velocity v(x, s) of a (semantic, detail) pair."""
    bind = lambda st: lambda x, s: self.jit_apply[st.apply](st.trainable, st.frozen, x, s)
    return dcm_experts.dual_velocity(self.schedule, bind(sem), bind(det))

  def per_timestep(self, student):
    """(sigmas, loss, grad_norm) of `student` at every grid node (the paper's diagnosis)."""
    c = self.c
    return dcm_distill.per_timestep_stats(
        student, self.teacher, self.teacher_params, self.schedule,
        self.data[:c.evaluation.diag_batch], c.seed, c.losses.huber_c)


class Scorer:
  """Few-step samples from fixed noise, scored against held-out real clips (FD in a video
  classifier's features) and against the teacher's full-step samples from the same noise."""

  def __init__(self, c: DCMConfig, recipe: Recipe):
    e, shape = c.evaluation, (c.data.frames, c.data.size, c.data.size, 1)
    self.schedule = recipe.schedule
    test, test_digits, test_dirs = vdata.moving_digits(
        c.data.n_test, frames=c.data.frames, size=c.data.size, split="test", seed=c.seed + 100)
    self.clf, self.clf_params = metrics.train_classifier(
        recipe.data, recipe.digits, recipe.directions, steps=e.classifier_steps,
        batch=e.classifier_batch, lr=e.classifier_lr, seed=c.seed)
    self.classifier_acc = metrics.classifier_accuracy(self.clf, self.clf_params, test,
                                                      test_digits, test_dirs)
    self.real_feats = self._features(test)
    self.noise = np.asarray(jax.random.normal(jax.random.PRNGKey(c.seed + 7), (e.n_eval, *shape)))
    sigmas = self.schedule.teacher_sigmas()
    reference, path = euler_sample(recipe.teacher_velocity, self.noise, sigmas, return_path=True)
    self.reference = np.asarray(reference)
    self.timeline = dcm_timeline.synthesis_timeline(path, sigmas, e.timeline_pool)
    self.full_steps = len(sigmas) - 1
    self.reference_feats = self._features(self.reference)

  def _features(self, x):
    return metrics.features(self.clf, self.clf_params, x)

  def reference_scores(self) -> dict:
    """The teacher's full-step samples: its FD and coherence (the errors are 0 by definition)."""
    return {"fd": metrics.frechet_distance(self.reference_feats, self.real_feats),
            "fd_teacher": 0.0, "temporal_err": 0.0, "detail_err": 0.0,
            "coherence": metrics.frame_coherence(self.reference)}

  def __call__(self, velocity, steps: int):
    """(scores, samples [n_eval, T, H, W, 1]) of a `steps`-step Euler sampler."""
    x = np.asarray(euler_sample(velocity, self.noise, self.schedule.student_sigmas(steps)))
    feats = self._features(x)
    return {"fd": metrics.frechet_distance(feats, self.real_feats),
            "fd_teacher": metrics.frechet_distance(feats, self.reference_feats),
            "temporal_err": metrics.temporal_error(x, self.reference),
            "detail_err": metrics.detail_error(x, self.reference),
            "coherence": metrics.frame_coherence(x)}, x


def seed_summary(runs: list[dict]) -> dict:
  """Per-metric mean over distillation seeds, with `<metric>_std` and `<metric>_per_seed`."""
  out = {}
  for key in runs[0]:
    values = [float(r[key]) for r in runs]
    out.update({key: float(np.mean(values)), f"{key}_std": float(np.std(values)),
                f"{key}_per_seed": values})
  return out


def discriminator_summary(histories: dict, kind: str) -> dict:
  """Mean discriminator loss over the last quarter of each adversarial stage, beside the loss of
  one that cannot tell the student's jump from the teacher's target (`chance`)."""
  last = {}
  for name, history in histories.items():
    d = [h["gan_d"] for h in history if "gan_d" in h]
    if d:
      last[name] = float(np.mean(d[-max(1, len(d) // 4):]))
  return {"chance": dcm_losses.discriminator_chance_loss(kind), "last_quarter_loss": last}


def phase_stats(history: list[dict]) -> dict:
  """Mean CD loss and gradient norm per phase over a student's own training steps."""
  out = {}
  for phase in (SEMANTIC, DETAIL):
    rows = [h for h in history if h["phase"] == phase]
    out[phase] = {"mean_cd_loss": float(np.mean([h["cd"] for h in rows])),
                  "mean_grad_norm": float(np.mean([h["grad_norm"] for h in rows]))}
  return out


def _students(c: DCMConfig, recipe: Recipe, score: Scorer, samples: dict):
  """CM and DCM with each distillation seed, each scored at every step count, and the expert
  swaps of each seed's pair; returns (per-seed scores, swap scores, seed 0's students)."""
  per_seed, swaps, first = {"cm": [], "dcm": []}, {name: [] for name in EXPERT_SWAPS}, {}
  steps_ab = c.evaluation.ablation_steps
  for rep in range(c.distill.student_seeds):
    pairs = {}
    for name in ("cm", "dcm"):
      pairs[name] = recipe.train(name, rep)
      first.setdefault(name, pairs[name])
      velocity, scores = recipe.velocity(*pairs[name]), {}
      for steps in c.evaluation.eval_steps:
        scores[str(steps)], x = score(velocity, steps)
        if rep == 0 and steps == steps_ab:
          samples[f"{name} {steps}"] = x
      per_seed[name].append(scores)
    for name, (sem_from, det_from) in EXPERT_SWAPS.items():
      velocity = recipe.velocity(pairs[sem_from][0], pairs[det_from][1])
      swaps[name].append(score(velocity, steps_ab)[0])
  return per_seed, swaps, first


def run(config: DCMConfig, workdir: str) -> dict:
  """Trains and scores every student of `config`, writes the plots; returns the results."""
  c, steps_ab = config, config.evaluation.ablation_steps
  recipe = Recipe(c)
  score = Scorer(c, recipe)
  teacher = {str(score.full_steps): score.reference_scores()}
  samples = {f"teacher {score.full_steps}": score.reference}
  for steps in c.evaluation.eval_steps:
    teacher[str(steps)], x = score(recipe.teacher_velocity, steps)
    if steps == steps_ab:
      samples[f"teacher {steps}"] = x
  curves = {"CM at init (= teacher)": recipe.per_timestep(recipe.teacher_student)}
  per_seed, swaps, trained = _students(c, recipe, score, samples)
  methods, ablation = {"teacher": teacher}, {}
  for name, runs in per_seed.items():
    methods[name] = {steps: seed_summary([r[steps] for r in runs]) for steps in runs[0]}
    ablation[name] = runs[0][str(steps_ab)]  # the ablations' own seed
  for name in c.ablations:
    trained[name] = recipe.train(name)
    ablation[name], _ = score(recipe.velocity(*trained[name]), steps_ab)
  results = {"methods": methods, "ablation": ablation,
             "expert_swap": {name: seed_summary(runs) for name, runs in swaps.items()}}
  if "full_detail" in trained:  # where experts trained on one phase each differ (seed 0)
    results["expert_weight_difference"] = dcm_experts.weight_difference(
        *(st.trainable for st in trained["full_detail"]))
  curves["CM after distillation"] = recipe.per_timestep(trained["cm"][0])
  sem_curve, det_curve = (recipe.per_timestep(st) for st in trained["dcm"])
  mask = c.schedule.sigmas > c.schedule.boundary_sigma
  curves["DCM experts after distillation"] = tuple(
      np.where(mask, a, b) for a, b in zip(sem_curve, det_curve))
  d = c.data
  results.update({
      "discriminator": discriminator_summary(recipe.histories, c.losses.gan_loss),
      "synthesis_timeline": score.timeline,
      "per_timestep": {k: {"sigma": v[0], "loss": v[1], "grad_norm": v[2]}
                       for k, v in curves.items()},
      "cm_phase_stats": phase_stats(recipe.histories["cm"]),
      "classifier_test_acc": score.classifier_acc,
      "teacher_final_loss": float(np.mean(recipe.teacher_losses[-50:])),
      "trainable_params": {"teacher": param_count(recipe.teacher_params),
                           "dcm_detail_expert": param_count(trained["dcm"][1].trainable)},
      "boundary_sigma": c.schedule.boundary_sigma, "teacher_steps": score.full_steps,
      "paper_boundary_equivalent_sigma": float(resolution_equivalent_sigma(
          dcm_paper.BOUNDARY_SIGMA, dcm_paper.LATENT_DIMS, d.frames * d.size * d.size)),
      "paper_vbench_total_quality_semantic": dcm_paper.VBENCH,
      "paper_fig3_vbench": dcm_paper.FIG3,
      "data": (f"shipped: scikit-learn's 8x8 digits moving on a {d.size}x{d.size} canvas, "
               f"{d.frames} frames, {d.n_train} train / {d.n_test} test clips"),
      "scale": (f"DiT width {c.model.width}, depth {c.model.depth}; teacher "
                f"{c.teacher.steps} steps; {c.distill.semantic_steps} + "
                f"{c.distill.detail_steps} distillation steps x {c.distill.student_seeds} "
                "seeds")})
  dcm_report.plots(workdir, samples, curves, score.timeline, c.schedule.boundary_sigma, {
      "teacher flow matching": recipe.teacher_losses,
      **{f"{k}: cd": [h["cd"] for h in v] for k, v in recipe.histories.items()}})
  results["markdown"] = dcm_report.markdown(c, results)
  return results


def _table1(method: str, column: int = 0) -> float:
  """Table 1, HunyuanVideo at 4 steps: VBench total (0), quality (1) or semantic (2)."""
  return dcm_paper.VBENCH[f"HunyuanVideo {method}, 4 steps"][column]


_FIG3 = dcm_paper.FIG3
CLAIMS = (
    Claim("dcm_fd_below_cm", "at 4 steps DCM's FD is lower than the single-expert CM's (mean over "
          "seeds)", "methods.dcm.4.fd", "<", "methods.cm.4.fd",
          f"VBench total {_table1('DCM')} (DCM) vs {_table1('PCM')} (PCM), HunyuanVideo, "
          "4 steps (Table 1)"),
    Claim("dcm_temporal_below_cm", "at 4 steps DCM's temporal error is lower than CM's",
          "methods.dcm.4.temporal_err", "<", "methods.cm.4.temporal_err",
          f"VBench quality {_table1('DCM', 1)} (DCM) vs {_table1('PCM', 1)} (PCM), 4 steps "
          "(Table 1)"),
    Claim("dcm_detail_below_cm", "at 4 steps DCM's detail error is lower than CM's",
          "methods.dcm.4.detail_err", "<", "methods.cm.4.detail_err",
          f"VBench quality {_table1('DCM', 1)} (DCM) vs {_table1('PCM', 1)} (PCM), 4 steps "
          "(Table 1)"),
    Claim("semantic_expert_nearer_teacher", "DCM's semantic expert with CM's detail steps "
          "(SemE+VCM) brings the 4-step samples closer to the teacher's (FD to teacher) than CM",
          "expert_swap.SemE+VCM.fd_teacher", "<", "methods.cm.4.fd_teacher",
          f"Fig. 3: SemE+VCM {_FIG3['SemE+VCM']} vs VCM {_FIG3['VCM']} VBench total"),
    Claim("detail_expert_fd_below_cm", "CM's semantic steps with DCM's detail expert "
          "(VCM+DetE) give a lower 4-step FD than CM", "expert_swap.VCM+DetE.fd", "<",
          "methods.cm.4.fd",
          f"Fig. 3: VCM+DetE {_FIG3['VCM+DetE']} vs VCM {_FIG3['VCM']} VBench total"),
)

EXPERIMENT = Experiment(
    name="dcm",
    paper="DCM: Dual-Expert Consistency Model for video generation (Lv et al., ICCV 2025, "
          "arXiv 2506.03123)",
    config="configs/dcm.py",
    run=run,
    claims=CLAIMS,
)
