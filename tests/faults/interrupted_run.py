"""`python -m tests.faults.interrupted_run WORKDIR`: tests/train's tiny model through the command
line's runner (moe_jax.utils.cli.run), saving every step on a slow disk (each save takes 0.3 s
more), so that a signal sent once step 2 is saved arrives during the run and its saves."""
import dataclasses
import time

from moe_jax.train import checkpoint
from moe_jax.train.loop import train_lm
from moe_jax.utils import cli
from tests.faults.helpers import RUN, toy_data
from tests.train.conftest import MODEL


def main(argv, overrides):
  del overrides
  save = checkpoint.Checkpointer.save

  def slow_save(self, *args, **kwargs):
    out = save(self, *args, **kwargs)
    time.sleep(0.3)
    return out

  checkpoint.Checkpointer.save = slow_save
  train_lm(MODEL, dataclasses.replace(RUN, save_every=1), *toy_data(RUN.seq_len), argv[1])


if __name__ == "__main__":
  cli.run(main)
