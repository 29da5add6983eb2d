"""Sample-quality metrics for tiny videos [N, T, H, W, C] in [-1, 1].

- fd: Frechet distance (Heusel et al. 2017) between Gaussian fits of real and generated clips in the
  penultimate features of a small 3-D conv classifier trained on the same data to predict the digit
  class and the motion direction (an FVD stand-in at this scale).
- temporal_err: mean squared error of frame differences x[t+1] - x[t] against the teacher's
  full-step sample from the same noise.
- detail_err: relative error of high-frequency energy (spatial FFT, radius > `cutoff` cycles/pixel)
  per clip against that same teacher sample.
- frame_coherence: how well each frame is its predecessor moved (best correlation over small
  shifts); 1.0 on the moving-digit data, about 0.4 for clips whose frames come from different
  clips. It needs no reference, so it scores the teacher itself.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import optax
import scipy.linalg

from moe_jax.utils.reporting import progress


class VideoClassifier(nn.Module):
  """[B, T, H, W, C] -> (features [B, F], digit logits [B, 10], direction logits [B, 8])."""
  width: int = 8
  features: int = 64

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(self.width, (3, 3, 3))(x))
    h = nn.avg_pool(h, (1, 2, 2), (1, 2, 2))
    h = nn.relu(nn.Conv(2 * self.width, (3, 3, 3))(h))
    h = nn.avg_pool(h, (2, 2, 2), (2, 2, 2))
    h = nn.relu(nn.Conv(4 * self.width, (3, 3, 3))(h))
    feats = nn.relu(nn.Dense(self.features)(h.mean(axis=(1, 2, 3))))
    return feats, nn.Dense(10, name="digit")(feats), nn.Dense(8, name="direction")(feats)


def train_classifier(videos, digits, directions, *, steps: int, batch: int, lr: float, seed: int):
  """Trains the feature network with cross-entropy on both labels; returns (model, params)."""
  model = VideoClassifier()
  params = model.init(jax.random.PRNGKey(seed), videos[:1])
  opt = optax.adam(lr)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, x, yd, ym):
    def loss_fn(p):
      _, ld, lm = model.apply(p, x)
      return (optax.softmax_cross_entropy_with_integer_labels(ld, yd).mean()
              + optax.softmax_cross_entropy_with_integer_labels(lm, ym).mean())
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  for _ in progress(range(steps), desc="classifier"):
    i = rng.integers(0, len(videos), batch)
    params, opt_state, _ = step(params, opt_state, videos[i], digits[i], directions[i])
  return model, params


def classifier_accuracy(model, params, videos, digits, directions) -> dict:
  _, ld, lm = model.apply(params, videos)
  return {"digit_acc": float(np.mean(np.argmax(ld, -1) == digits)),
          "direction_acc": float(np.mean(np.argmax(lm, -1) == directions))}


def features(model, params, videos, batch: int = 256) -> np.ndarray:
  apply = jax.jit(lambda x: model.apply(params, x)[0])
  return np.concatenate([np.asarray(apply(videos[i:i + batch]))
                         for i in range(0, len(videos), batch)]).astype(np.float64)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
  """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of [N, F] feature sets."""
  mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
  cov_a, cov_b = np.cov(feats_a, rowvar=False), np.cov(feats_b, rowvar=False)
  covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
  covmean = np.real(covmean)
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * covmean))


def temporal_error(videos, reference) -> float:
  """Mean squared error of consecutive-frame differences against the reference clips."""
  d = lambda x: np.asarray(x[:, 1:] - x[:, :-1], np.float64)
  return float(np.mean((d(videos) - d(reference)) ** 2))


def frame_coherence(videos, max_shift: int = 2) -> float:
  """Mean over clips and consecutive frame pairs of max_{|dy|,|dx| <= max_shift} corr(roll(x_t,
  (dy, dx)), x_{t+1}), Pearson correlation over the pixels of a frame."""
  x = np.asarray(videos, np.float64).mean(axis=-1)
  prev, nxt = x[:, :-1], x[:, 1:]
  centre = lambda a: a - a.mean(axis=(2, 3), keepdims=True)
  nxt_c = centre(nxt)
  nxt_norm = np.sqrt((nxt_c ** 2).sum(axis=(2, 3)))
  best = np.full(prev.shape[:2], -1.0)
  for dy in range(-max_shift, max_shift + 1):
    for dx in range(-max_shift, max_shift + 1):
      moved = centre(np.roll(prev, (dy, dx), axis=(2, 3)))
      num = (moved * nxt_c).sum(axis=(2, 3))
      den = np.sqrt((moved ** 2).sum(axis=(2, 3))) * nxt_norm + 1e-12
      best = np.maximum(best, num / den)
  return float(best.mean())


def high_frequency_energy(videos, cutoff: float = 0.25) -> np.ndarray:
  """[N] mean per-frame spatial spectral energy above `cutoff` cycles/pixel."""
  x = np.asarray(videos, np.float64)
  spec = np.abs(np.fft.fft2(x, axes=(2, 3))) ** 2
  fy = np.fft.fftfreq(x.shape[2])[:, None]
  fx = np.fft.fftfreq(x.shape[3])[None, :]
  mask = (np.sqrt(fy ** 2 + fx ** 2) > cutoff)[None, None, :, :, None]
  return (spec * mask).sum(axis=(2, 3, 4)).mean(axis=1) / (x.shape[2] * x.shape[3])


def detail_error(videos, reference, cutoff: float = 0.25) -> float:
  """mean |E_hf(x) - E_hf(ref)| / mean E_hf(ref) over clips."""
  e, e_ref = high_frequency_energy(videos, cutoff), high_frequency_energy(reference, cutoff)
  return float(np.mean(np.abs(e - e_ref)) / np.mean(e_ref))
