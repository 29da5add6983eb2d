"""Multi-task recommendation: shared-bottom, MMoE, CGC/PLE and HoME on one expert/gate layer.

Modules (math): `features` (embedding tables + dense features), `layers` (stacked experts, masked
gates, feature-gates, self-gates, towers), `shared_bottom`, `mmoe`, `ple`, `home`.
Data: `synthetic` (the MMoE generator, many tasks in groups, dense-to-sparse labels), `kuairand`
(the public KuaiRand CSV log). `metrics` (AUC, GAUC, expert diagnostics), `train` (an optax loop
that trains several seeds at once with `jax.vmap`), `models` (build a model from its config entry).
HoME's reproduction: `home_experiment` (config, recipe, claims), `home_report` (tables, plots).
"""
