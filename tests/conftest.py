"""Test set-up: JAX on the host CPU in float32, one device unless a test module asks for more;
one temporary base-model cache for the whole run (quick base models train once per run and the
user's own cache is never touched)."""
import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["MOE_JAX_CACHE"] = tempfile.mkdtemp(prefix="moe_jax_test_cache_")
