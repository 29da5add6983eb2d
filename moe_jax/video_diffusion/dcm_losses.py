"""Losses of DCM: flow matching (teacher), pseudo-Huber consistency distance, Temporal Coherence
Loss, GAN (hinge as in the code; non-saturating as an option) and Feature Matching.

Videos are [B, T, H, W, C]; discriminator logits are lists of arrays (one per feature tap).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def flow_matching_loss(v_pred, x0, eps):
  """Rectified-flow regression of v = eps - x0 (the teacher's objective)."""
  return jnp.mean((v_pred - (eps - x0)) ** 2)


def pseudo_huber(pred, target, c: float = 1e-3):
  """mean(sqrt((pred - target)^2 + c^2) - c), elementwise as in DCM's code (c = 0.001)."""
  return jnp.mean(jnp.sqrt((pred - target) ** 2 + c * c) - c)


def temporal_coherence_loss(pred, target, stride: int = 3):
  """DCM's Temporal Coherence Loss: MSE between frame differences x[t+k] - x[t] of pred and target.

  The code uses k = 3 latent frames and skips the loss when the clip has no more than k frames.
  """
  if pred.shape[1] <= stride:
    return jnp.zeros((), pred.dtype)
  diff = lambda x: x[:, stride:] - x[:, :-stride]
  return jnp.mean((diff(pred) - diff(target)) ** 2)


def gan_generator_loss(fake_logits, kind: str = "hinge"):
  """Hinge: mean relu(1 - D(fake)); non-saturating: mean softplus(-D(fake)). Averaged over heads."""
  if kind == "hinge":
    per_head = [jnp.mean(jax.nn.relu(1.0 - f)) for f in fake_logits]
  else:
    per_head = [jnp.mean(jax.nn.softplus(-f)) for f in fake_logits]
  return sum(per_head) / len(per_head)


def gan_discriminator_loss(fake_logits, real_logits, kind: str = "hinge"):
  """Hinge: mean relu(1 + D(fake)) + mean relu(1 - D(real)); non-saturating: logistic."""
  per_head = []
  for f, r in zip(fake_logits, real_logits):
    if kind == "hinge":
      per_head.append(jnp.mean(jax.nn.relu(1.0 + f)) + jnp.mean(jax.nn.relu(1.0 - r)))
    else:
      per_head.append(jnp.mean(jax.nn.softplus(f)) + jnp.mean(jax.nn.softplus(-r)))
  return sum(per_head) / len(per_head)


def discriminator_chance_loss(kind: str = "hinge") -> float:
  """The discriminator loss of logits that are 0 everywhere (2 for hinge, 2 log 2 for the logistic
  loss). It is also the lowest loss any discriminator can reach when real and fake taps come from
  one distribution, so a discriminator that stays near it is not telling them apart."""
  return 2.0 if kind == "hinge" else 2.0 * math.log(2.0)


def feature_matching_loss(fake_feats, real_feats):
  """Mean over taps of MSE between decoded teacher features of the fake and the real clip."""
  return sum(jnp.mean((f - r) ** 2) for f, r in zip(fake_feats, real_feats)) / len(fake_feats)
