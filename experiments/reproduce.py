r"""Runs every registered paper's experiment and prints one table of their claims.

  python -m experiments.reproduce --workdir=DIR [--only=home,dcm,...] [--preset=quick|default] \
      [--update_docs]

Each paper runs into DIR/<name>/ (results.json, results.md, plots); DIR/results.md and
DIR/results.json hold every claim with the paper's figure, ours and the verdict. The quick
preset only shows that each pipeline works; the default preset is the documented reproduction.
"""
import os

from absl import flags, logging

from moe_jax.utils import cli, reproduce

WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)
ONLY = flags.DEFINE_string("only", "", "Comma-separated experiment names (default: all).")
PRESET = flags.DEFINE_enum("preset", "quick", list(reproduce.PRESETS), "Which preset to run.")
UPDATE_DOCS = flags.DEFINE_bool("update_docs", False, "Rewrite the generated tables of "
                                "docs/results.md and docs/<name>.md from this run.")


def main(argv, overrides):
  del argv
  if overrides:
    cli.fail("reproduce takes no --config.* overrides. Fix: run the paper's own entry point, "
             "python -m experiments.<name>, to change its config")
  logging.set_verbosity(logging.WARNING)
  experiments = reproduce.select(reproduce.registered(), ONLY.value)
  results = reproduce.run_all(experiments, WORKDIR.value, PRESET.value)
  if UPDATE_DOCS.value:
    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
    for path in reproduce.update_docs(results, docs, WORKDIR.value):
      print(f"reproduce: updated {path}")


if __name__ == "__main__":
  cli.run(main)
