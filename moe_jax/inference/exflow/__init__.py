"""ExFlow (Yao et al., IPDPS 2024, arXiv 2401.08383): expert placement from inter-layer affinity.

Modules (NumPy/SciPy on routing traces): `placement` (placement[L, E] -> device, its cost on a
trace, contiguous and random baselines, the permutation that applies it to a model), `ilp` (the
integer program: compact form with HiGHS, and the public solver's per-token form),
`hierarchical` (recursive bisection, the staged node-then-device solve), `local_search` (layer-by-
layer polishing), `exhaustive` (exact enumeration for tiny instances). Affinity itself:
`moe_jax.analysis.affinity`.
The model side (JAX): `apply` (a placement realised by permuting expert weights and router
columns), `coherent` (context-coherent expert parallelism: one all-to-all per MoE layer and one
all-gather per decode step, beside the standard path and one device), `packing` (mixed arrays in
one collective's buffer), `measure` (the decoders compared on a simulated mesh, collectives read
from HLO), `cost` (decode time per step on a link). The experiment: `exflow_experiment` (config,
recipe, claims), `exflow_study` (its measurements), `exflow_report` (tables, plots),
`checkpoints` (a base model's training checkpoints).
"""
