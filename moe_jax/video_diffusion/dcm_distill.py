"""Teacher training (rectified flow) and DCM's phased consistency distillation.

One distillation step on phase p with end level s_e (DCM code, PCM-style
`euler_style_multiphase_pred` with one phase per expert), for a grid index i drawn uniformly from
the phase:
  x_s = s_i eps + (1 - s_i) x0,               pred = x_s + (s_e - s_i) v_theta(x_s, s_i),
  x_prev = x_s + (s'_i - s_i) v_T(x_s, s_i), target = x_prev + (s_e - s'_i) sg[v_th(x_prev, s'_i)]
(v_T the teacher, v_th = v_theta, s'_i = sigmas_prev[i]; the target uses the online student, no
EMA, as `--use_ema` is off), and
  L = pseudo_huber(pred, target) + w_tc L_TC(pred, target)                     (semantic expert)
  L = pseudo_huber(pred, target) + w_adv (w_G L_G + w_FM L_FM)                  (detail expert)
The adversarial pair re-noises pred and target from s_e to s_adv = sigmas_prev[k], k ~ U{0..b-1}:
  y_adv = ((1 - s_adv) y + (s_adv - s_e) n) / (1 - s_e),  shared n,
and reads both through the frozen teacher's tapped blocks; each generator step is followed by one
discriminator step. Optimiser: AdamW (0.9, 0.999), wd 1e-3, warm-up 10, clip 1.0; the
discriminator's AdamW uses betas (0, 0.999).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from moe_jax.utils.config import Section
from moe_jax.utils.errors import check_choice, check_positive
from moe_jax.utils.reporting import progress
from moe_jax.video_diffusion import dcm_losses
from moe_jax.video_diffusion.schedule import DETAIL, SEMANTIC, FlowSchedule


@functools.lru_cache(maxsize=None)
def make_optimizer(lr: float, warmup: int = 10, b1: float = 0.9, weight_decay: float = 1e-3,
                   clip: float = 1.0) -> optax.GradientTransformation:
  """AdamW with linear warm-up to a constant rate and global-norm clipping (DCM's settings).

  Cached, so equal settings give the same (hashable) object and jitted steps are not recompiled.
  """
  sched = optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
  return optax.chain(optax.clip_by_global_norm(clip),
                     optax.adamw(sched, b1=b1, b2=0.999, eps=1e-8, weight_decay=weight_decay))


def _bc(a):
  return a[:, None, None, None, None]


def train_teacher(apply: Callable, params, data: np.ndarray, schedule: FlowSchedule, *, steps: int,
                  batch: int, lr: float, ema: float, seed: int, desc: str = "teacher"):
  """Flow matching with s = shift(u), u ~ U(0, 1); returns (EMA params, per-step losses)."""
  opt = make_optimizer(lr, warmup=min(100, steps // 10 + 1), weight_decay=0.0)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, ema_params, opt_state, x0, rng):
    k_s, k_e = jax.random.split(rng)
    s = schedule.shift_sigma(jax.random.uniform(k_s, (x0.shape[0],)))
    eps = jax.random.normal(k_e, x0.shape)
    loss, grads = jax.value_and_grad(
        lambda p: dcm_losses.flow_matching_loss(apply(p, _bc(s) * eps + (1 - _bc(s)) * x0, s), x0,
                                                eps)
    )(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    ema_params = jax.tree.map(lambda e, p: ema * e + (1 - ema) * p, ema_params, params)
    return params, ema_params, opt_state, loss

  rng, data_rng = jax.random.PRNGKey(seed), np.random.default_rng(seed)
  ema_params, history = params, []
  for _ in progress(range(steps), desc=desc):
    rng, key = jax.random.split(rng)
    x0 = data[data_rng.integers(0, len(data), batch)]
    params, ema_params, opt_state, loss = step(params, ema_params, opt_state, x0, key)
    history.append(float(loss))
  return ema_params, np.asarray(history)


@dataclasses.dataclass(frozen=True)
class LossWeights(Section):
  """The distillation losses' settings; the defaults are DCM's code (HunyuanVideo recipe).

  huber_c: pseudo-Huber c; tc_weight, tc_stride: Temporal Coherence Loss (semantic expert);
  adv_weight scales gan_weight L_G + fm_weight L_FM (detail expert); gan_loss: "hinge" (code) or
  "nonsaturating".
  """
  huber_c: float = 1e-3
  tc_weight: float = 1.0
  tc_stride: int = 3
  adv_weight: float = 0.1
  gan_weight: float = 5.0
  fm_weight: float = 1.0
  gan_loss: str = "hinge"

  def __post_init__(self):
    check_positive("huber_c", self.huber_c)
    check_positive("tc_stride", self.tc_stride)
    check_choice("gan_loss", self.gan_loss, ("hinge", "nonsaturating"))


@dataclasses.dataclass(frozen=True)
class PhaseLosses:
  """Which extra losses one phase's step adds to the consistency distance (hashable: a static
  argument of the jitted step)."""
  weights: LossWeights = LossWeights()
  tc: bool = False
  gan: bool = False
  fm: bool = False

  @property
  def adversarial(self) -> bool:
    return self.gan or self.fm


@dataclasses.dataclass(frozen=True)
class TeacherFns:
  """The frozen teacher's functions of (teacher params, ...).

  velocity: v(x, s); features: the tapped block states (list of [B, T, P, D]); decode(h, s): a state
  through norm_out + proj_out. Hashable, so jitted steps take it as a static argument.
  """
  velocity: Callable
  features: Callable
  decode: Callable


@dataclasses.dataclass
class Student:
  """One expert in training: apply(trainable, frozen, x, s) -> v, weight halves, optimiser."""
  apply: Callable
  trainable: Any
  frozen: Any
  opt: optax.GradientTransformation
  opt_state: Any = None

  def __post_init__(self):
    self.opt_state = self.opt.init(self.trainable)


@dataclasses.dataclass
class DiscriminatorState:
  apply: Callable
  params: Any
  opt: optax.GradientTransformation
  opt_state: Any = None

  def __post_init__(self):
    self.opt_state = self.opt.init(self.params)


def cd_pair(apply, trainable, frozen, velocity, teacher_params, schedule: FlowSchedule, s_end,
            x0, eps, idx):
  """(pred, target) of the phased consistency step at grid indices idx [B] towards level s_end."""
  sig = jnp.asarray(schedule.sigmas, jnp.float32)[idx]
  sig_prev = jnp.asarray(schedule.sigmas_prev, jnp.float32)[idx]
  x_s = _bc(sig) * eps + (1 - _bc(sig)) * x0
  pred = x_s + _bc(s_end - sig) * apply(trainable, frozen, x_s, sig)
  x_prev = x_s + _bc(sig_prev - sig) * jax.lax.stop_gradient(velocity(teacher_params, x_s, sig))
  v_tgt = apply(jax.lax.stop_gradient(trainable), frozen, x_prev, sig_prev)
  target = jax.lax.stop_gradient(x_prev + _bc(s_end - sig_prev) * v_tgt)
  return pred, target


@functools.partial(jax.jit, static_argnames=("apply", "opt", "teacher", "disc_apply", "schedule",
                                             "phase", "cfg"))
def generator_step(trainable, opt_state, frozen, teacher_params, d_params, x0, rng, *, apply, opt,
                   teacher: TeacherFns, disc_apply, schedule: FlowSchedule, phase: str,
                   cfg: PhaseLosses):
  """One student update on `phase`; returns (trainable, opt_state, metrics, (fake, real) taps)."""
  lo, hi = schedule.index_range(phase)
  w = cfg.weights
  sig_prev_all = jnp.asarray(schedule.sigmas_prev, jnp.float32)

  def loss_fn(trainable):
    k_idx, k_eps, k_adv, k_n = jax.random.split(rng, 4)
    idx = jax.random.randint(k_idx, (x0.shape[0],), lo, hi)
    eps = jax.random.normal(k_eps, x0.shape)
    s_end = schedule.phase_end(phase)
    pred, target = cd_pair(apply, trainable, frozen, teacher.velocity, teacher_params, schedule,
                           s_end, x0, eps, idx)
    metrics = {"cd": dcm_losses.pseudo_huber(pred, target, w.huber_c)}
    loss = metrics["cd"]
    if cfg.tc:
      metrics["tc"] = dcm_losses.temporal_coherence_loss(pred, target, w.tc_stride)
      loss = loss + w.tc_weight * metrics["tc"]
    taps = None
    if cfg.adversarial:
      s_adv = sig_prev_all[jax.random.randint(k_adv, (x0.shape[0],), 0, schedule.boundary_index)]
      noise = jax.random.normal(k_n, x0.shape)
      renoise = lambda y: (_bc(1 - s_adv) * y + _bc(s_adv - s_end) * noise) / (1 - s_end)
      # One teacher pass over [fake; real] (the real half carries no gradient: target is stop-grad).
      both = teacher.features(teacher_params, jnp.concatenate([renoise(pred), renoise(target)]),
                              jnp.concatenate([s_adv, s_adv]))
      fake_taps = [h[:x0.shape[0]] for h in both]
      real_taps = [jax.lax.stop_gradient(h[x0.shape[0]:]) for h in both]
      if cfg.gan:
        metrics["gan_g"] = dcm_losses.gan_generator_loss(disc_apply(d_params, fake_taps),
                                                         w.gan_loss)
        loss = loss + w.adv_weight * w.gan_weight * metrics["gan_g"]
      if cfg.fm:
        s2 = jnp.concatenate([s_adv, s_adv])
        dec = [teacher.decode(teacher_params, h, s2) for h in both]
        metrics["fm"] = dcm_losses.feature_matching_loss([d[:x0.shape[0]] for d in dec],
                                                     [jax.lax.stop_gradient(d[x0.shape[0]:])
                                                      for d in dec])
        loss = loss + w.adv_weight * w.fm_weight * metrics["fm"]
      taps = (jax.lax.stop_gradient(fake_taps), real_taps)
    metrics["loss"] = loss
    return loss, (metrics, taps)

  grads, (metrics, taps) = jax.grad(loss_fn, has_aux=True)(trainable)
  metrics["grad_norm"] = optax.global_norm(grads)
  updates, opt_state = opt.update(grads, opt_state, trainable)
  return optax.apply_updates(trainable, updates), opt_state, metrics, taps


@functools.partial(jax.jit, static_argnames=("disc_apply", "opt", "kind"))
def discriminator_step(d_params, opt_state, taps, *, disc_apply, opt, kind: str):
  """One discriminator update on stop-gradient (fake, real) teacher taps."""
  fake, real = taps
  loss_fn = lambda d: dcm_losses.gan_discriminator_loss(disc_apply(d, fake), disc_apply(d, real),
                                                        kind)
  loss, grads = jax.value_and_grad(loss_fn)(d_params)
  updates, opt_state = opt.update(grads, opt_state, d_params)
  return optax.apply_updates(d_params, updates), opt_state, loss


def distill(plan: Sequence[str], students: dict, phase_losses: dict, teacher: TeacherFns,
            teacher_params, schedule: FlowSchedule, data: np.ndarray, *, batch: int, seed: int,
            disc: DiscriminatorState | None = None, desc: str = "distill") -> list[dict]:
  """Runs one generator step per entry of `plan` (a phase name), updating `students[phase]` in
  place; each step of a phase with the GAN loss is followed by one discriminator step.

  The same Student may serve both phases (single-expert CM); DCM passes one per phase. Returns the
  per-step metrics.
  """
  rng, data_rng = jax.random.PRNGKey(seed), np.random.default_rng(seed)
  history = []
  for phase in progress(plan, desc=desc):
    st, cfg = students[phase], phase_losses[phase]
    rng, key = jax.random.split(rng)
    x0 = data[data_rng.integers(0, len(data), batch)]
    st.trainable, st.opt_state, metrics, taps = generator_step(
        st.trainable, st.opt_state, st.frozen, teacher_params, disc.params if disc else None, x0,
        key, apply=st.apply, opt=st.opt, teacher=teacher, disc_apply=disc.apply if disc else None,
        schedule=schedule, phase=phase, cfg=cfg)
    metrics = {k: float(v) for k, v in metrics.items()}
    if cfg.gan:
      disc.params, disc.opt_state, d_loss = discriminator_step(
          disc.params, disc.opt_state, taps, disc_apply=disc.apply, opt=disc.opt,
          kind=cfg.weights.gan_loss)
      metrics["gan_d"] = float(d_loss)
    history.append({"phase": phase, **metrics})
  return history


@functools.partial(jax.jit, static_argnames=("apply", "velocity", "schedule", "huber_c"))
def _loss_and_grad_norm(trainable, frozen, teacher_params, x0, eps, idx, s_end, *, apply, velocity,
                        schedule, huber_c):
  def loss_fn(trainable):
    pred, target = cd_pair(apply, trainable, frozen, velocity, teacher_params, schedule, s_end, x0,
                           eps, idx)
    return dcm_losses.pseudo_huber(pred, target, huber_c)
  loss, grads = jax.value_and_grad(loss_fn)(trainable)
  return loss, optax.global_norm(grads)


def per_timestep_stats(student: Student, teacher: TeacherFns, teacher_params,
                       schedule: FlowSchedule, x0, seed: int, huber_c: float = 1e-3):
  """Consistency loss and gradient norm of one student at every grid index (the paper's diagnosis).

  Each index uses its own phase end (the single-expert CM is phased like DCM). Returns (sigmas [N],
  loss [N], grad_norm [N]) with the whole batch x0 placed at each index.
  """
  eps = jax.random.normal(jax.random.PRNGKey(seed), x0.shape)
  out = []
  for i in range(schedule.euler_steps):
    phase = DETAIL if i < schedule.boundary_index else SEMANTIC
    out.append(_loss_and_grad_norm(
        student.trainable, student.frozen, teacher_params, x0, eps, jnp.full((x0.shape[0],), i),
        jnp.float32(schedule.phase_end(phase)), apply=student.apply, velocity=teacher.velocity,
        schedule=schedule, huber_c=huber_c))
  loss, grad_norm = np.asarray(out, np.float64).T
  return schedule.sigmas, loss, grad_norm
