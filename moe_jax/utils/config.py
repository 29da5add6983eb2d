"""Typed config sections: frozen dataclasses built from nested dicts and overridden by flags.

Every experiment's config is one tree of frozen dataclasses (`Section`s). A config file builds it
from a nested mapping (a dict or an ml_collections ConfigDict):

  def get_config(preset: str = "") -> HomeConfig:
    c = dict(seeds=(0, 1, 2), train=dict(steps=1000, ...), ...)
    return HomeConfig.from_dict(c)

`build` checks every key against the dataclass's fields and every value against the field's type
annotation, and runs the dataclass's own checks (`__post_init__`); each failure is one
ConfigError naming the dotted field ("train.steps: must be > 0, got 0. Fix: ..."). A command-line
override `--config.train.steps=100` is text parsed by the same annotation (`override`):

  int, float ("1e-3"), str, bool ("true"/"false"/"1"/"0"), X | None ("none"),
  tuple[X, ...]: comma-separated ("english,python"; "" is the empty tuple; brackets optional),
  str | tuple[int, ...] and other unions of those: the first member that parses, str last,
  dict[str, Section]: one entry per key (`--config.models.home.expert_norm=false`),
  a union of Sections: chosen by the value of their `kind` field.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Mapping

from moe_jax.utils.errors import ConfigError

_NONE_TEXT = ("none", "null")
_BOOL_TEXT = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class Section:
  """Mixin of the config dataclasses: `from_dict`, `to_dict` and `override`."""

  @classmethod
  def from_dict(cls, data: Any, path: str = ""):
    return build(cls, data, path)

  def to_dict(self) -> dict:
    return to_dict(self)

  def override(self, dotted: str, text: str):
    return override(self, dotted, text)

  def apply_overrides(self, overrides: Mapping[str, str]):
    return apply_overrides(self, overrides)


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _fields(cls) -> dict[str, Any]:
  hints = _hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _join(path: str, name: str) -> str:
  return f"{path}.{name}" if path else name


def _fail(path: str, problem: str, fix: str):
  raise ConfigError(f"{path or 'config'}: {problem}. Fix: {fix}")


def _members(annotation) -> tuple:
  if typing.get_origin(annotation) in (typing.Union, types.UnionType):
    return typing.get_args(annotation)
  return (annotation,)


def _is_section(annotation) -> bool:
  return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _kind_of(cls) -> Any:
  field = {f.name: f for f in dataclasses.fields(cls)}.get("kind")
  return None if field is None else field.default


def _describe(annotation) -> str:
  if annotation is type(None):
    return "none"
  if isinstance(annotation, type):
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        annotation, annotation.__name__)
  if typing.get_origin(annotation) is tuple:
    return "a comma-separated list"
  return " or ".join(_describe(m) for m in _members(annotation))


def _section_for(annotation, data: Any, path: str):
  """The Section class a mapping builds: the annotation, or the union member of its `kind`."""
  sections = [m for m in _members(annotation) if _is_section(m)]
  if len(sections) == 1:
    return sections[0]
  kinds = {_kind_of(c): c for c in sections}
  kind = data.get("kind") if isinstance(data, Mapping) else None
  if kind not in kinds:
    _fail(_join(path, "kind"), f"unknown value {kind!r}",
          f"use one of {', '.join(repr(k) for k in kinds)}")
  return kinds[kind]


def _as_mapping(data: Any, path: str) -> dict:
  if hasattr(data, "to_dict"):  # ConfigDict
    data = data.to_dict()
  if dataclasses.is_dataclass(data) and not isinstance(data, type):
    data = {f.name: getattr(data, f.name) for f in dataclasses.fields(data) if f.init}
  if not isinstance(data, Mapping):
    _fail(path, f"expected a section of fields, got {data!r}", "give a dict of fields")
  return dict(data)


def build(cls, data: Any, path: str = ""):
  """An instance of the dataclass `cls` from a nested mapping, every field checked.

  Missing fields take their defaults; unknown fields, values of the wrong type and values the
  dataclass's checks refuse raise a ConfigError naming the dotted field.
  """
  data = _as_mapping(data, path)
  fields = _fields(cls)
  unknown = sorted(set(data) - set(fields))
  if unknown:
    _fail(_join(path, unknown[0]), f"unknown field{'s' if len(unknown) > 1 else ''} {unknown}"
          f" in {path or 'the config'}", f"use only the fields of {cls.__name__}: "
          f"{', '.join(sorted(fields))}")
  kwargs = {name: _value(fields[name], value, _join(path, name)) for name, value in data.items()}
  try:
    return cls(**kwargs)
  except ConfigError as e:  # the section's own checks name its fields: prefix the section
    message = str(e)
    if path and not message.startswith(path + "."):
      message = f"{path}.{message}"
    raise ConfigError(message) from None
  except TypeError as e:
    _fail(path, str(e), f"check the fields of {cls.__name__}")


def _value(annotation, value: Any, path: str) -> Any:
  """`value` checked against `annotation` (sections built, lists made tuples)."""
  if annotation is Any:
    return value
  if any(_is_section(m) for m in _members(annotation)) and value is not None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
      value = _as_mapping(value, path)
    return build(_section_for(annotation, value, path), value, path)
  origin = typing.get_origin(annotation)
  if origin in (typing.Union, types.UnionType):
    return _first_member(_value, annotation, _members(annotation), value, path)
  if origin is tuple:
    if hasattr(value, "to_dict") or not isinstance(value, (list, tuple)):
      _fail(path, f"expected a list, got {value!r}", "give a list or tuple of values")
    return _items(_value, annotation, value, path)
  if origin is dict:
    key_type, item_type = typing.get_args(annotation)
    mapping = _as_mapping(value, path)
    return {_value(key_type, k, path): _value(item_type, v, _join(path, str(k)))
            for k, v in mapping.items()}
  if annotation is tuple and isinstance(value, list):
    return tuple(value)
  if annotation is type(None):
    if value is not None:
      _fail(path, f"expected none, got {value!r}", "leave it unset")
    return None
  if annotation is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if annotation in (int, float) and isinstance(value, bool):
    _fail(path, f"expected {_describe(annotation)}, got {value!r}",
          f"give {_describe(annotation)}")
  if isinstance(annotation, type) and not isinstance(value, annotation):
    if annotation is int and hasattr(value, "__index__"):  # numpy integers
      return int(value)
    _fail(path, f"expected {_describe(annotation)}, got {value!r}",
          f"give {_describe(annotation)}")
  return value


def _first_member(convert, annotation, members, value, path: str) -> Any:
  """convert(member, value, path) for the first union member that accepts `value`."""
  for member in members:
    try:
      return convert(member, value, path)
    except ConfigError:
      continue
  _fail(path, f"expected {_describe(annotation)}, got {value!r}", f"give {_describe(annotation)}")


def _items(convert, annotation, items, path: str) -> tuple:
  """The tuple `annotation` (tuple[X, ...] or tuple[X, Y, ...]) of the converted `items`."""
  args = typing.get_args(annotation)
  if len(args) == 2 and args[1] is Ellipsis:
    args = (args[0],) * len(items)
  if len(args) != len(items):
    _fail(path, f"expected {len(args)} values, got {len(items)}", f"give {len(args)} values")
  return tuple(convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, items)))


def parse(annotation, text: str, path: str) -> Any:
  """Command-line `text` as a value of `annotation` (see the module docstring)."""
  text = text.strip()
  if annotation is Any:
    return text
  origin = typing.get_origin(annotation)
  if origin in (typing.Union, types.UnionType):
    members = sorted(_members(annotation), key=lambda m: m is str)  # str last: it takes anything
    return _first_member(parse, annotation, members, text, path)
  if origin is tuple:
    inner = text[1:-1] if text[:1] + text[-1:] in ("()", "[]") else text
    items = [t.strip().strip("'\"") for t in inner.split(",")] if inner.strip() else []
    return _items(parse, annotation, items, path)
  if annotation is type(None):
    if text.lower() not in _NONE_TEXT:
      _fail(path, f"expected none, got {text!r}", "write none")
    return None
  if annotation is bool:
    if text.lower() not in _BOOL_TEXT:
      _fail(path, f"expected true or false, got {text!r}", "write true or false")
    return _BOOL_TEXT[text.lower()]
  if annotation in (int, float):
    try:
      return annotation(text)
    except ValueError:
      _fail(path, f"expected {_describe(annotation)}, got {text!r}",
            f"give {_describe(annotation)}")
  if annotation is str:
    return text
  _fail(path, f"cannot be set from the command line ({_describe(annotation)})",
        "set it in the config file")


def override(config, dotted: str, text: str):
  """A copy of the Section tree `config` with the field at `dotted` parsed from `text`."""
  return apply_overrides(config, {dotted: text})


def apply_overrides(config, overrides: Mapping[str, str]):
  """A copy of the Section tree `config` with each dotted field parsed from its text.

  Every value is set first and the whole tree is rebuilt once, so the checks see all the new
  values together (their order on the command line does not matter).
  """
  data = to_dict(config)
  for dotted, text in overrides.items():
    _set(data, type(config), dotted, text)
  return build(type(config), data)


def _set(data: dict, cls, dotted: str, text: str) -> None:
  """Sets data[dotted] to `text` parsed by the annotation of that field of `cls`."""
  node, annotation = data, None
  parts = dotted.split(".")
  for depth, name in enumerate(parts):
    path = ".".join(parts[:depth + 1])
    if cls is not None:  # a section: `name` is a field
      fields = _fields(cls)
      if name not in fields:
        _fail(path, f"unknown field of {cls.__name__}",
              f"use one of {', '.join(sorted(fields))}")
      annotation = fields[name]
    else:  # a dict[str, X]: `name` is a key
      if name not in node:
        _fail(path, f"no entry {name!r}", f"use one of {', '.join(sorted(node))}")
      annotation = typing.get_args(annotation)[1]
    if depth < len(parts) - 1:
      child = node.get(name)
      if not isinstance(child, dict):
        _fail(path, f"is not a section (cannot set {dotted})", f"set {path} itself")
      node = child
      is_dict = typing.get_origin(annotation) is dict
      cls = None if is_dict else _section_for(annotation, child, path)
  node[parts[-1]] = parse(annotation, text, dotted)


def changed_fields(config) -> dict:
  """The fields of a Section tree that differ from their declared defaults, as nested plain dicts.

  A stamp built from it survives adding a field whose default keeps the old behaviour.
  """
  out = {}
  for f in dataclasses.fields(config):
    if not f.init:
      continue
    value = getattr(config, f.name)
    if dataclasses.is_dataclass(value):
      if sub := changed_fields(value):
        out[f.name] = sub
      continue
    if f.default is not dataclasses.MISSING:
      default = f.default
    elif f.default_factory is not dataclasses.MISSING:
      default = f.default_factory()
    else:
      out[f.name] = to_dict(value)
      continue
    if to_dict(value) != to_dict(default):
      out[f.name] = to_dict(value)
  return out


def to_dict(config) -> Any:
  """A Section tree as nested plain dicts (tuples stay tuples)."""
  if dataclasses.is_dataclass(config) and not isinstance(config, type):
    return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)
            if f.init}
  if isinstance(config, dict):
    return {k: to_dict(v) for k, v in config.items()}
  if isinstance(config, tuple):
    return tuple(to_dict(v) for v in config)
  return config
