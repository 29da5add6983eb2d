"""Losses against float64 NumPy references; the Temporal Coherence Loss's defining properties."""
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.video_diffusion import dcm_losses


def _clip(rng, b=3, t=8, h=6, w=6, c=1):
  return rng.normal(size=(b, t, h, w, c)).astype(np.float32)


@pytest.mark.parametrize("seed", range(3))
def test_temporal_coherence_loss_matches_numpy(seed):
  rng = np.random.default_rng(seed)
  a, b = _clip(rng), _clip(rng)
  k = int(rng.integers(1, 4))
  da = a[:, k:].astype(np.float64) - a[:, :-k]
  db = b[:, k:].astype(np.float64) - b[:, :-k]
  assert float(dcm_losses.temporal_coherence_loss(a, b, k)) == pytest.approx(
      np.mean((da - db) ** 2), rel=1e-5)


def test_temporal_coherence_loss_zero_for_identical_positive_for_shifted():
  rng = np.random.default_rng(0)
  x = _clip(rng)
  assert float(dcm_losses.temporal_coherence_loss(x, x)) == 0.0
  # A per-clip constant offset leaves every frame difference unchanged.
  assert float(dcm_losses.temporal_coherence_loss(x + 0.7, x)) == pytest.approx(0.0, abs=1e-10)
  # Shifted in time or in space: the frame differences change, so the loss is positive.
  assert float(dcm_losses.temporal_coherence_loss(np.roll(x, 1, axis=1), x)) > 0.1
  assert float(dcm_losses.temporal_coherence_loss(np.roll(x, 2, axis=2), x)) > 0.1
  # Clips no longer than the stride have no frame pair: the code skips the loss.
  assert float(dcm_losses.temporal_coherence_loss(x[:, :3], x[:, :3] + 1.0, 3)) == 0.0


def test_pseudo_huber_and_flow_matching_match_numpy():
  rng = np.random.default_rng(1)
  a, b = _clip(rng), _clip(rng)
  c = 1e-3
  ref = np.mean(np.sqrt((a.astype(np.float64) - b) ** 2 + c * c) - c)
  assert float(dcm_losses.pseudo_huber(a, b, c)) == pytest.approx(ref, rel=1e-5)
  x0, eps, v = _clip(rng), _clip(rng), _clip(rng)
  assert float(dcm_losses.flow_matching_loss(v, x0, eps)) == pytest.approx(
      np.mean((v.astype(np.float64) - (eps - x0)) ** 2), rel=1e-5)


def test_gan_and_feature_matching_losses_match_numpy():
  rng = np.random.default_rng(2)
  fake = [rng.normal(size=(2, 4, 5)).astype(np.float32) for _ in range(3)]
  real = [rng.normal(size=(2, 4, 5)).astype(np.float32) for _ in range(3)]
  relu = lambda z: np.maximum(z, 0.0)
  softplus = lambda z: np.log1p(np.exp(z))
  g = np.mean([relu(1 - f).mean() for f in fake])
  d = np.mean([relu(1 + f).mean() + relu(1 - r).mean() for f, r in zip(fake, real)])
  assert float(dcm_losses.gan_generator_loss(fake)) == pytest.approx(g, rel=1e-5)
  assert float(dcm_losses.gan_discriminator_loss(fake, real)) == pytest.approx(d, rel=1e-5)
  g_ns = np.mean([softplus(-f).mean() for f in fake])
  d_ns = np.mean([softplus(f).mean() + softplus(-r).mean() for f, r in zip(fake, real)])
  assert float(dcm_losses.gan_generator_loss(fake, "nonsaturating")) == pytest.approx(g_ns,
                                                                                   rel=1e-5)
  assert float(dcm_losses.gan_discriminator_loss(fake, real, "nonsaturating")) == pytest.approx(
      d_ns, rel=1e-5)
  fm = np.mean([np.mean((f.astype(np.float64) - r) ** 2) for f, r in zip(fake, real)])
  assert float(dcm_losses.feature_matching_loss(fake, real)) == pytest.approx(fm, rel=1e-5)
  assert float(dcm_losses.feature_matching_loss(real, real)) == 0.0
  assert float(jnp.asarray(dcm_losses.gan_discriminator_loss(fake, real))) >= 0.0


@pytest.mark.parametrize("kind", ["hinge", "nonsaturating"])
def test_discriminator_chance_loss_is_the_floor_when_real_and_fake_look_alike(kind):
  rng = np.random.default_rng(3)
  chance = dcm_losses.discriminator_chance_loss(kind)
  zeros = [np.zeros((2, 4, 5), np.float32)]
  assert float(dcm_losses.gan_discriminator_loss(zeros, zeros, kind)) == pytest.approx(chance)
  for scale in (0.1, 1.0, 5.0):  # any logits, the same on real and fake: never below chance
    logits = [rng.normal(scale=scale, size=(2, 4, 5)).astype(np.float32) for _ in range(2)]
    assert float(dcm_losses.gan_discriminator_loss(logits, logits, kind)) >= chance - 1e-6
  apart = float(dcm_losses.gan_discriminator_loss([np.full((3,), -3.0)], [np.full((3,), 3.0)],
                                                  kind))
  assert apart < 0.2 * chance  # a discriminator that separates them goes well below it
