"""The customized model: frozen GE, the user's LE and GN, hard-gated (arXiv:1811.00056).

y(x) = LE(h(x)) if g(h(x)) > threshold else GE(x), with h(x) the GE's features.
Shapes: B batch, H = W image side, F GE feature width, K classes.
"""
from __future__ import annotations

import flax.linen as nn
import jax

from moe_jax.customization import gating

# The three predictors a run compares: GE alone, LE alone, GE+LE+GN; each -> its key in `predict`.
METHODS = {"ge": "ge_logits", "le": "le_logits", "moe": "logits"}


def predict(ge: nn.Module, ge_params, le: nn.Module, le_params, gn: nn.Module, gn_params,
            images: jax.Array, threshold: float) -> dict[str, jax.Array]:
  """[B, H, W] images -> {'logits', 'ge_logits', 'le_logits' [B, K], 'gate' [B], 'to_local' [B]}."""
  ge_logits, features = ge.apply({"params": ge_params}, images)
  le_logits = le.apply({"params": le_params}, features)
  gate = gn.apply({"params": gn_params}, features)
  to_local = gating.route_to_local(gate, threshold)
  return {"logits": gating.combine(ge_logits, le_logits, to_local), "ge_logits": ge_logits,
          "le_logits": le_logits, "gate": gate, "to_local": to_local}
