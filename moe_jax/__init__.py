"""moe_jax: Mixture-of-Experts research in JAX/Flax on one shared MoE core."""

__version__ = "0.1.0"
