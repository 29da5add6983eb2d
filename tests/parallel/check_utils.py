"""Shared by the multi-device check scripts (ep_checks.py, sharded_train_checks.py).

Import it before JAX: it gives the process 8 simulated CPU devices.
"""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from moe_jax.utils.errors import ConfigError  # pylint: disable=g-import-not-at-top


def config_error(fn) -> str:
  """The message of the ConfigError that fn() raises, or "no error"."""
  try:
    fn()
  except ConfigError as e:
    return str(e)
  return "no error"
