"""Knowledge distillation objectives for the train loop's `Hooks` (a frozen teacher).

Legend: B batch, S sequence, V vocabulary.

  loss = ce_weight * CE(student, data)
         + alpha * T^2 * KL(softmax(z_teacher / T) || softmax(z_student / T))   (Hinton et al. 2015)

The teacher's variables travel as the step's `objective_args` (an argument of the jitted step,
not a constant folded into it), and the objective compares by value (teacher module and loss
settings), so one compiled step serves every run of the same shapes and settings.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from moe_jax.models.loading import LoadedModel
from moe_jax.train.loop import TrainConfig, train_lm
from moe_jax.train.trainer import Hooks
from moe_jax.utils.errors import require

# Non-parameter collections a trained student keeps (slot maps, DeepSeek-V3 routing bias).
KEPT = ("slots", "moe_bias")


def kl_divergence(teacher_logits: jax.Array, student_logits: jax.Array, temperature: float,
                  top_k: Optional[int] = None) -> jax.Array:
  """Mean over tokens of KL(p_teacher || p_student) at `temperature`, logits [B, S, V].

  top_k: compare on the teacher's k largest logits only (both renormalised over them), as
  SlimMoE's top-8-logit distillation loss does.
  """
  t = teacher_logits.astype(jnp.float32) / temperature
  s = student_logits.astype(jnp.float32) / temperature
  if top_k:
    t, index = jax.lax.top_k(t, top_k)
    s = jnp.take_along_axis(s, index, axis=-1)
  log_p, log_q = jax.nn.log_softmax(t), jax.nn.log_softmax(s)
  return jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1))


@dataclasses.dataclass(frozen=True)
class KDLoss:
  """objective(logits, batch, teacher_variables) -> (loss, {"ce", "kl"}) of kd_objective;
  hashable and equal for equal settings (a jitted step built for one is reused for another)."""
  teacher: Any  # the teacher's (hashable) flax module
  alpha: float
  temperature: float
  ce_weight: float
  top_k: Optional[int]

  def __call__(self, logits, batch, variables):
    teacher_logits = jax.lax.stop_gradient(self.teacher.apply(variables, batch[:, :-1]))
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]))
    kl = kl_divergence(teacher_logits, logits, self.temperature, self.top_k)
    return self.ce_weight * ce + self.alpha * self.temperature ** 2 * kl, {"ce": ce, "kl": kl}


def kd_objective(teacher, teacher_variables, *, alpha: float = 0.2, temperature: float = 2.0,
                 ce_weight: float = 1.0, top_k: Optional[int] = None, trainable=None,
                 post_update=None, init_hook_state=None) -> Hooks:
  """Hooks whose objective is ce_weight * CE + alpha * T^2 * KL(teacher || student).

  MC-SMoE's recovery recipe is the default (CE + 0.2 KL at T = 2); ce_weight=0 gives pure
  distillation. The teacher module runs inside the step on the same inputs.
  """
  require(temperature > 0, "temperature", f"must be > 0, got {temperature}", "use e.g. 2.0")
  require(alpha >= 0 and ce_weight >= 0 and alpha + ce_weight > 0, "alpha",
          f"alpha={alpha}, ce_weight={ce_weight}", "give non-negative weights, not both 0")
  return Hooks(objective=KDLoss(teacher, alpha, temperature, ce_weight, top_k),
               objective_args=teacher_variables, trainable=trainable,
               post_update=post_update, init_hook_state=init_hook_state)


def freeze(*names: str):
  """trainable(path) that freezes every parameter whose path contains one of `names`
  (e.g. freeze("router") keeps MC-SMoE's routers fixed)."""
  return lambda path: not any(name in path for name in names)


def distill_model(student: LoadedModel, hooks: Hooks, train: TrainConfig, train_tokens,
                  eval_sets: dict, workdir: str, desc: str = "kd") -> tuple[LoadedModel, dict]:
  """Trains `student` with `hooks` (e.g. kd_objective's) in `workdir`, resuming there:
  (the trained model, train_lm's result without its state, plus "hook_state": the post-update's
  final state)."""
  run = train_lm(student.cfg, train, train_tokens, eval_sets, workdir, desc=desc, hooks=hooks,
                 variables=student.variables)
  state = run.pop("state")
  # on the host, like the untrained models: equal models are then scored by one compilation
  # (the optimizer state stays behind)
  variables, run["hook_state"] = jax.device_get((
      {"params": state.params,
       **{k: v for k, v in state.extra.items() if k in KEPT and k in student.variables}},
      state.hook_state))
  return LoadedModel(student.module, variables, student.source), run
