r"""GE / LE / GN low-cost customization (Zhang, Davoodi & Hu, arXiv:1811.00056).

A LeNet5 global expert (GE) is trained once on a generic handwriting set and frozen; for each of ten
simulated users a local expert (LE) and a gating network (GN) are trained on that user's few samples
(20 per class) on GE's features, and GN sends each input to GE or LE (hard gate).

Command:
  python -m experiments.customization --config=configs/customization.py --workdir=/tmp/customization

Result (default; docs/customization.md): mean over 10 users, user accuracy GE 0.794 -> GE+LE+GN
0.936, generic accuracy 0.975 -> 0.969; LE + GN cost 0.47% of GE's energy proxy, 2.16% of its
parameters (paper: "around 2.5%"). 26 s on 2 idle CPU cores (under a minute when they are
shared); quick: ~15 s.

Deviations (the abstract is all that is readable; each choice is a field of
moe_jax/customization/config.py): scikit-learn's digits stand in for EMNIST (`data.source='emnist'`
reads EMNIST's gzip IDX files); users are simulated writing styles on held-out samples, not real
writers; LE and GN read GE's fc1 features; GN's headline target 'source' also sees a small generic
reference set ('ge_error', user data only, is reported beside it).
Presets: "quick" (seconds, used by the tests), "" (the documented reproduction).
"""
from moe_jax.customization.config import CustomizationConfig
from moe_jax.utils.errors import check_choice


def get_config(preset: str = "") -> CustomizationConfig:
  check_choice("preset", preset, ("", "quick"))
  if preset == "quick":
    return CustomizationConfig.from_dict(dict(
        data=dict(ge_train_per_class=30, generic_test_per_class=10),
        users=dict(num_users=2, train_per_class=5, test_per_class=5),
        ge=dict(steps=60), le=dict(steps=20), gn=dict(steps=20, reference_per_class=5)))
  return CustomizationConfig()
