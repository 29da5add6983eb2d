"""SlimMoE's multi-stage schedule: the token budget, the config's checks, a two-stage run."""
import dataclasses

import jax
import numpy as np
import pytest

from moe_jax.compress.slimmoe.schedule import ScheduleConfig, run_schedule, stage_steps
from moe_jax.train.loop import TrainConfig
from moe_jax.utils.errors import ConfigError
from tests.eval.tiny import random_model


def test_stage_steps_spend_exactly_the_budget():
  rng = np.random.default_rng()
  for _ in range(50):
    stages = int(rng.integers(1, 4))
    shares = 1 + rng.random(stages)  # each share >= 1 / (2 stages): every stage gets a step
    shares /= shares.sum()
    total = int(rng.integers(3 * stages, 1000))
    steps = stage_steps(total, tuple(shares))
    assert sum(steps) == total and min(steps) >= 1
    np.testing.assert_allclose(steps, total * shares, atol=1.0)
  with pytest.raises(ConfigError, match="num_steps"):
    stage_steps(2, (0.5, 0.3, 0.2))


@pytest.mark.parametrize("fields, name", [
    (dict(expert_ratios=(0.5, 0.5), token_shares=(0.5, 0.5)), "expert_ratios"),
    (dict(expert_ratios=(0.5, 0.25), token_shares=(0.5, 0.4)), "token_shares"),
    (dict(expert_ratios=(0.5,), token_shares=(0.5, 0.5)), "token_shares"),
    (dict(attention_ratio=0.0), "attention_ratio"),
    (dict(score="fisher"), "score")])
def test_bad_schedules_are_refused_naming_the_field(fields, name):
  with pytest.raises(ConfigError, match=name):
    ScheduleConfig(**fields)


@pytest.mark.slow
def test_two_stage_run_slims_distils_and_spends_the_budget(tmp_path):
  teacher = random_model(0, moe=dict(num_experts=4, d_ff=16, shared_d_ff=8,
                                     load_balance_coef=0.0))
  rng = np.random.default_rng()
  tokens = rng.integers(0, 256, 4000).astype(np.uint8)
  eval_sets = {"held": rng.integers(0, 256, (4, 17)).astype(np.int32)}
  train = TrainConfig(num_steps=5, batch_size=2, seq_len=16, warmup_steps=1, log_every=1,
                      eval_every=5, save_every=5, eval_batch_size=4)
  config = ScheduleConfig(expert_ratios=(0.5, 0.25), token_shares=(0.6, 0.4), kd_top_k=4)
  student, records = run_schedule(teacher, config, train, tokens, eval_sets, str(tmp_path))
  assert [r["d_ff"] for r in records] == [8, 4] and [r["steps"] for r in records] == [3, 2]
  assert student.cfg.moe.d_ff == 4 and student.cfg.moe.shared_d_ff == 2
  assert student.variables["params"]["layer_0"]["moe"]["experts"]["wo"].shape == (4, 4, 16)
  assert records[1]["params"] < records[0]["params"]
  assert all(np.isfinite(r["bpb_all"]) for r in records)
  assert np.all(np.isfinite(jax.jit(student.module.apply)(student.variables,
                                                          eval_sets["held"][:, :-1])))
  with pytest.raises(ConfigError):  # a finished stage's workdir refuses another model's shape
    run_schedule(teacher, dataclasses.replace(config, expert_ratios=(0.75, 0.25)), train,
                 tokens, eval_sets, str(tmp_path))
