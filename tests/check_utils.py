"""Shared by the multi-device check scripts (ep_checks.py, sharded_train_checks.py)."""
from moe_jax.utils.errors import ConfigError


def config_error(fn) -> str:
  """The message of the ConfigError that fn() raises, or "no error"."""
  try:
    fn()
  except ConfigError as e:
    return str(e)
  return "no error"
