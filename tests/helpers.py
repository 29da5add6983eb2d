"""Shared by the tests: the repository root and running an entry point as a user would."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Quick runs are dominated by XLA compiling a few steps; cheaper LLVM passes cut that ~3x.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def run_module(module: str, *args: str, fast_compile: bool = False, check: bool = True,
               env: dict | None = None) -> subprocess.CompletedProcess:
  """`python -m <module> <args>` from the repository root on the CPU; output captured."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
  if fast_compile:
    env["XLA_FLAGS"] = FAST_COMPILE
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, check=check,
                        capture_output=True, text=True, env=env)
