"""Fate (Fang et al. 2025, arXiv 2502.12224): offloaded MoE inference with cross-layer prefetching.

Modules: `cache` (ARC and LRU expert caches), `allocation` (shallow-favouring and uniform expert
slots per layer), `link` (host-to-device copy time), `prefetch` (prefetch_k, prefill ranking, INT2
choice, the activation-path baseline), `timeline` (two-stream replay of a routing trace), `store`
(experts in host memory at full precision, INT4 and INT2), `offload` (the real offloaded decoder);
the experiment: `fate_study` (its measurements), `fate_experiment` (config, recipe, claims),
`fate_report` (tables, plot). The cross-layer prediction and its scores live in
`moe_jax.analysis.cross_layer`.
"""
