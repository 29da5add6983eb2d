"""ExFlow (Yao et al., IPDPS 2024, arXiv 2401.08383): expert placement from inter-layer affinity.

Modules (NumPy/SciPy on routing traces): `placement` (placement[L, E] -> device, its cost on a
trace, contiguous and random baselines, the permutation that applies it to a model), `ilp` (the
integer program: compact form with HiGHS, and the public solver's per-token form),
`hierarchical` (recursive bisection, the staged node-then-device solve), `local_search` (layer-by-
layer polishing), `exhaustive` (exact enumeration for tiny instances). Affinity itself:
`moe_jax.analysis.affinity`.
"""
