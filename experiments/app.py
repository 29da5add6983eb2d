"""The two flags every experiment takes, defined once, and the runner of an `Experiment`.

  python -m experiments.<name> --config=configs/<name>.py[:preset] --workdir=DIR \
      [--config.<field>=<value> ...]
"""
from __future__ import annotations

from absl import flags, logging

from moe_jax.utils import cli
from moe_jax.utils.experiment import Experiment, execute, load_config

CONFIG = flags.DEFINE_string(
    "config", None, "Config file and preset, configs/<name>.py[:preset]; set any field with "
    "--config.<field>=<value> (lists comma-separated).", required=True)
WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (results.json, results.md, "
                              "plots; checkpoints where the experiment trains).", required=True)


def run(experiment: Experiment) -> None:
  """The `__main__` of experiments/<name>.py: config + overrides -> experiment -> results."""
  def main(argv, overrides):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    execute(experiment, load_config(CONFIG.value, overrides=overrides), WORKDIR.value)

  cli.run(main)
