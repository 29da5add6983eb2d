"""Test set-up: JAX on the host CPU in float32, one device unless a test module asks for more."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
