"""Recovery of a compressed model by knowledge distillation through the trainer's hooks.

Legend: B batch, S sequence, V vocabulary, T the temperature, alpha the KL weight.

MC-SMoE's recipe (repo `msmoe-merging.py`, `losparse-downstream.py`): the original model is the
frozen teacher and the compressed model trains on
  loss = CE(student, data) + alpha T^2 KL(softmax(z_teacher / T) || softmax(z_student / T)),
alpha = 0.2, T = 2 (moe_jax/train/distill.py kd_objective), with every router frozen. It runs
in the resumable loop (moe_jax/train/loop.py train_lm) from the compressed model's variables;
a `post_update` (LoSparse pruning) rides along. The budget of one run is
num_steps x batch_size x seq_len tokens of the training split.
"""
from __future__ import annotations

from typing import Callable, Optional

from moe_jax.models.loading import LoadedModel
from moe_jax.train.distill import distill_model, freeze, kd_objective
from moe_jax.train.loop import TrainConfig


def distill(student: LoadedModel, teacher: LoadedModel, train_tokens, eval_sets: dict,
            train: TrainConfig, workdir: str, *, alpha: float = 0.2, temperature: float = 2.0,
            trainable: Callable = freeze("router"), post_update: Optional[Callable] = None,
            init_hook_state: Optional[Callable] = None,
            desc: str = "kd") -> tuple[LoadedModel, dict]:
  """Trains `student` against `teacher` in `workdir` (resumes there): (trained model, run), as
  moe_jax.train.distill.distill_model (run carries the post-update's final "hook_state")."""
  hooks = kd_objective(teacher.module, teacher.variables, alpha=alpha, temperature=temperature,
                       trainable=trainable, post_update=post_update,
                       init_hook_state=init_hook_state)
  return distill_model(student, hooks, train, train_tokens, eval_sets, workdir, desc)
