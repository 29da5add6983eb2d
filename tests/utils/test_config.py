"""Typed config sections: building from dicts, command-line overrides, one-line errors."""
from __future__ import annotations

import dataclasses

import pytest

from moe_jax.utils.config import Section, build, changed_fields, override, parse, to_dict
from moe_jax.utils.errors import ConfigError, require


@dataclasses.dataclass(frozen=True)
class Train(Section):
  steps: int = 10
  lr: float = 1e-3
  seeds: tuple[int, ...] = (0,)
  names: tuple[str, ...] = ("a", "b")
  layers: str | tuple[int, ...] = "all"
  head: int | None = None
  shuffle: bool = True

  def __post_init__(self):
    require(self.steps > 0, "steps", f"must be > 0, got {self.steps}", "set a positive value")


@dataclasses.dataclass(frozen=True)
class Mlp(Section):
  kind: str = "mlp"
  width: int = 8


@dataclasses.dataclass(frozen=True)
class Moe(Section):
  kind: str = "moe"
  experts: int = 4
  width: int = 8


@dataclasses.dataclass(frozen=True)
class Top(Section):
  train: Train = Train()
  models: dict[str, Mlp | Moe] = dataclasses.field(default_factory=dict)
  name: str = "x"


def top(**train) -> Top:
  return Top.from_dict(dict(train=train, models=dict(a=dict(kind="mlp"),
                                                     b=dict(kind="moe", experts=2))))


def test_build_types_and_defaults():
  c = top(steps=3, lr=1, seeds=[1, 2], layers=[0, 2])
  assert c.train == Train(steps=3, lr=1.0, seeds=(1, 2), layers=(0, 2))
  assert isinstance(c.train.lr, float)
  assert c.models == {"a": Mlp(), "b": Moe(experts=2)}
  assert build(Top, to_dict(c)) == c  # round trip


@pytest.mark.parametrize("data, message", [
    (dict(train=dict(stepz=3)), r"^train.stepz: unknown field \['stepz'\] in train. Fix: use "
                                r"only the fields of Train: head, layers, lr, names, seeds, "
                                r"shuffle, steps$"),
    (dict(train=dict(steps="3")), r"^train.steps: expected an integer, got '3'. Fix:"),
    (dict(train=dict(steps=True)), r"^train.steps: expected an integer, got True"),
    (dict(train=dict(seeds=[0, "1"])), r"^train.seeds\[1\]: expected an integer"),
    (dict(train=dict(seeds=3)), r"^train.seeds: expected a list, got 3"),
    (dict(train=dict(steps=0)), r"^train.steps: must be > 0, got 0. Fix: set a positive value$"),
    (dict(models=dict(a=dict(kind="rnn"))), r"^models.a.kind: unknown value 'rnn'. Fix: use one "
                                            r"of 'mlp', 'moe'$"),
    (dict(models=dict(a=dict(kind="mlp", experts=3))), r"^models.a.experts: unknown field"),
    (dict(train=[1]), r"^train: expected a section of fields"),
])
def test_build_errors_name_the_dotted_field(data, message):
  with pytest.raises(ConfigError, match=message):
    Top.from_dict(data)


@pytest.mark.parametrize("dotted, text, want", [
    ("train.steps", "7", 7),
    ("train.lr", "2e-4", 2e-4),
    ("train.seeds", "3,4, 5", (3, 4, 5)),
    ("train.seeds", "[3,4]", (3, 4)),
    ("train.seeds", "", ()),
    ("train.names", "english,python", ("english", "python")),
    ("train.names", "/data/a.jsonl", ("/data/a.jsonl",)),
    ("train.layers", "0,2", (0, 2)),
    ("train.layers", "none", "none"),
    ("train.head", "none", None),
    ("train.head", "5", 5),
    ("train.shuffle", "False", False),
    ("models.b.experts", "16", 16),
    ("name", "with spaces, and a comma", "with spaces, and a comma"),
])
def test_override_parses_by_annotation(dotted, text, want):
  c = override(top(), dotted, text)
  got = c
  for part in dotted.split("."):
    got = got[part] if isinstance(got, dict) else getattr(got, part)
  assert got == want
  assert to_dict(override(top(), dotted, text)) != {} and top() == top()  # inputs unchanged


@pytest.mark.parametrize("dotted, text, message", [
    ("train.stepz", "1", r"^train.stepz: unknown field of Train. Fix: use one of head, layers"),
    ("train.steps", "1.5", r"^train.steps: expected an integer, got '1.5'"),
    ("train.steps", "0", r"^train.steps: must be > 0, got 0"),
    ("train.shuffle", "maybe", r"^train.shuffle: expected true or false"),
    ("models.c.width", "3", r"^models.c: no entry 'c'. Fix: use one of a, b$"),
    ("models.a.experts", "3", r"^models.a.experts: unknown field of Mlp"),
    ("train.steps.x", "3", r"^train.steps: is not a section"),
])
def test_override_errors(dotted, text, message):
  with pytest.raises(ConfigError, match=message):
    override(top(), dotted, text)


def test_overrides_are_checked_together():
  """A check spanning two fields sees both new values, whatever their order."""
  @dataclasses.dataclass(frozen=True)
  class Pair(Section):
    low: int = 0
    high: int = 1

    def __post_init__(self):
      require(self.low < self.high, "low", f"{self.low} >= high={self.high}", "keep low < high")

  assert Pair().apply_overrides({"low": "5", "high": "9"}) == Pair(5, 9)
  assert Pair().apply_overrides({"high": "9", "low": "5"}) == Pair(5, 9)
  with pytest.raises(ConfigError, match="^low: 5 >= high=1"):
    Pair().override("low", "5")


def test_parse_unions_prefer_typed_members_over_str():
  assert parse(str | tuple[int, ...], "1,2", "x") == (1, 2)
  assert parse(str | tuple[int, ...], "all", "x") == "all"
  assert parse(int | None, "NONE", "x") is None


def test_changed_fields_leaves_out_defaults():
  """A stamp of the changed fields only: a field added later with its default leaves it equal."""
  config = top(steps=5, seeds=(0,), lr=2e-3)
  assert changed_fields(config) == {
      "train": {"steps": 5, "lr": 2e-3},
      "models": {"a": {"kind": "mlp", "width": 8}, "b": {"kind": "moe", "experts": 2, "width": 8}}}
  assert changed_fields(Top()) == {}
