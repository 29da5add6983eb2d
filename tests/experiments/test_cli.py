"""Every entry point: a misspelt key, a wrong type and a bad value on the command line each end
in one line naming the field (exit status 2), before anything is written to the workdir."""
from __future__ import annotations

import dataclasses
import os

import pytest

from moe_jax.utils.errors import ConfigError
from moe_jax.utils.experiment import load_config
from tests.helpers import run_module

# entry point -> (config, an override whose value the config's checks refuse, the field named)
ENTRIES = {
    "train": ("configs/lm_tiny.py:quick", "train.eval_every=-5", "train.eval_every"),
    "generate": ("configs/generate.py:quick", "families=mixtral,gpt2", "families"),
    "customization": ("configs/customization.py:quick", "users.slant=0.5,0.1", "users.slant"),
    "home": ("configs/home.py:quick", "data.p_within=1.5", "data.p_within"),
    "dcm": ("configs/dcm.py:quick", "model.patch=3", "model.patch"),
    "moequant": ("configs/moequant.py:quick", "settings=w9", "settings"),
    "fate": ("configs/fate.py:quick", "offload.int2_rate=2", "offload.int2_rate"),
    "exflow": ("configs/exflow.py:quick", "traces.windows=1", "traces.windows"),
    "eaquant": ("configs/eaquant.py:quick", "settings=w4x4", "settings"),
    "mcsmoe": ("configs/mcsmoe.py:quick", "targets=0", "targets"),
    "slimmoe": ("configs/slimmoe.py:quick", "targets=0.5,0.75", "targets"),
}


def _first_int_field(config, prefix=""):
  """The dotted path of the first int field of a config tree (for the wrong-type case)."""
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    if dataclasses.is_dataclass(value):
      found = _first_int_field(value, f"{prefix}{f.name}.")
      if found:
        return found
    elif isinstance(value, int) and not isinstance(value, bool):
      return prefix + f.name
  return None


def _cases():
  for entry, (spec, bad, field) in ENTRIES.items():
    config = load_config(spec)
    section = next((f.name + "." for f in dataclasses.fields(config)
                    if dataclasses.is_dataclass(getattr(config, f.name))), "")
    number = _first_int_field(config)
    yield pytest.param(spec, f"{section}definitely_not_a_field", "1",
                       f"{section}definitely_not_a_field", id=f"{entry}-misspelt")
    yield pytest.param(spec, number, "abc", number, id=f"{entry}-wrong-type")
    name, _, text = bad.partition("=")
    yield pytest.param(spec, name, text, field, id=f"{entry}-bad-value")


@pytest.mark.parametrize("spec, dotted, text, field", list(_cases()))
def test_bad_override_names_the_field(spec, dotted, text, field):
  with pytest.raises(ConfigError, match=f"^{field.replace('.', '[.]')}"):
    load_config(spec, overrides={dotted: text})


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_cli_prints_one_line_and_writes_nothing(entry, tmp_path):
  spec, bad, field = ENTRIES[entry]
  (tmp_path / "earlier.txt").write_text("a user's file")
  proc = run_module(f"experiments.{entry}", f"--config={spec}", f"--workdir={tmp_path}",
                    f"--config.{bad}", check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), proc.stderr[-2000:]
  assert sorted(os.listdir(tmp_path)) == ["earlier.txt"]
  assert (tmp_path / "earlier.txt").read_text() == "a user's file"
