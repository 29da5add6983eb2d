"""MC-SMoE (Li et al., ICLR 2024, arXiv 2310.01334): merge experts by their routing, then compress.

Pure functions on one layer's stacked expert weights (wi_gate/wi_up [E, D, F], wo [E, F, D]):
`alignment` (weight matching of hidden units against a reference expert), `grouping` (the global
group budget, routing-guided groups, random and drop baselines), `merging` (frequency-weighted or
uniform merging, slot -> merged-expert map, slot-duplicated form), `losparse` (W = L R + S with S
pruned in whole rows on a cubic schedule). Usage frequencies and router-logit similarity live in
`moe_jax.analysis.similarity`.
"""
