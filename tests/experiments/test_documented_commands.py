"""The commands README.md, WORKSPACE.md and docs/ show load their configs as written."""
import glob
import os
import re

import pytest

from moe_jax.utils.experiment import load_config
from tests.helpers import ROOT

COMMAND = re.compile(r"python3? -m experiments\.(\w+)")
SPEC = re.compile(r"--config=([\w./:-]+)")
OVERRIDE = re.compile(r"--config\.([\w.]+)=(\"[^\"]*\"|'[^']*'|[^\s\"`]+)")


def documented_commands():
  """(file, command text) for every `python -m experiments.X --config=...` in the docs."""
  files = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "WORKSPACE.md"),
           *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))),
           *sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))]
  for path in files:
    text = open(path).read().replace("\\\n", " ")
    for line in text.splitlines():
      if COMMAND.search(line) and SPEC.search(line):
        yield pytest.param(line, id=f"{os.path.basename(path)}:{COMMAND.search(line).group(1)}")


@pytest.mark.parametrize("line", list(documented_commands()))
def test_documented_command_loads(line):
  spec = SPEC.search(line).group(1)
  overrides = {k: v.strip("\"'") for k, v in OVERRIDE.findall(line)}
  load_config(spec, overrides=overrides)


def test_commands_were_found():
  assert len(list(documented_commands())) >= 15
