"""Figures: sample grids (PNG), animated grids (GIF), per-timestep loss / gradient-norm plots, the
teacher's synthesis timeline."""
from __future__ import annotations

import os
from typing import Sequence

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
from PIL import Image  # pylint: disable=g-import-not-at-top,wrong-import-position

from moe_jax.utils.reporting import save_figure


def _tile(clip_rows: Sequence[np.ndarray], frame: int) -> np.ndarray:
  """Rows of clips [N, T, H, W, 1] -> one uint8 image of frame `frame` with 1-pixel gutters."""
  rows = []
  for clips in clip_rows:
    tiles = [np.pad(c[frame, ..., 0], 1, constant_values=-1) for c in clips]
    rows.append(np.concatenate(tiles, axis=1))
  img = np.concatenate(rows, axis=0)
  return ((np.clip(img, -1, 1) + 1) * 127.5).astype(np.uint8)


def sample_grid(workdir: str, name: str, rows: dict, clips: int = 4) -> str:
  """PNG: one row per method, `clips` clips each shown as its frames side by side."""
  frames = next(iter(rows.values())).shape[1]
  figsize = (1.6 * clips * frames / 4, 1.0 * len(rows) + 0.5)
  fig, axes = plt.subplots(len(rows), clips, figsize=figsize, squeeze=False)
  for r, (label, videos) in enumerate(rows.items()):
    for c in range(clips):
      strip = np.concatenate([np.pad(f[..., 0], 1, constant_values=-1) for f in videos[c]], axis=1)
      axes[r, c].imshow(strip, cmap="gray", vmin=-1, vmax=1)
      axes[r, c].set_xticks([])
      axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
  fig.suptitle("samples from the same noise (frames left to right)", fontsize=9)
  return save_figure(fig, workdir, name)


def sample_gif(workdir: str, name: str, rows: dict, clips: int = 4, scale: int = 4) -> str:
  """Animated GIF of the same layout as `sample_grid` (one row per method, `clips` clips)."""
  frames = next(iter(rows.values())).shape[1]
  images = []
  for t in range(frames):
    img = _tile([v[:clips] for v in rows.values()], t)
    images.append(Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale),
                                              Image.NEAREST))
  path = os.path.join(workdir, name if name.endswith(".gif") else name + ".gif")
  images[0].save(path, save_all=True, append_images=images[1:], duration=200, loop=0)
  return path


def per_timestep_plot(workdir: str, name: str, curves: dict, boundary_sigma: float) -> str:
  """Loss and gradient norm against the noise level, one line per curve label (log scale; exact
  zeros, e.g. the teacher at a phase's first node, are left out)."""
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
  positive = lambda y: np.where(np.asarray(y) > 0, y, np.nan)
  for label, (sigmas, loss, grad) in curves.items():
    axes[0].plot(sigmas, positive(loss), marker=".", label=label)
    axes[1].plot(sigmas, positive(grad), marker=".", label=label)
  for ax, title in zip(axes, ("consistency loss", "gradient norm")):
    ax.axvline(boundary_sigma, color="gray", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("noise level s (dashed: semantic/detail boundary)")
    ax.set_title(title, fontsize=9)
  axes[0].legend(fontsize=7)
  return save_figure(fig, workdir, name)


def timeline_plot(workdir: str, name: str, timeline: dict, boundary_sigma: float) -> str:
  """Layout / motion correlation of the teacher's clean-clip estimate with its final sample."""
  fig, ax = plt.subplots(figsize=(5, 3.2))
  for key in ("layout", "motion"):
    ax.plot(timeline["sigma"], timeline[key], marker=".", label=key)
  ax.axvline(boundary_sigma, color="gray", ls="--", lw=1)
  ax.invert_xaxis()
  ax.set_xlabel("noise level s along the teacher's path (dashed: boundary)")
  ax.set_ylabel("correlation with the final clip")
  ax.legend(fontsize=7)
  return save_figure(fig, workdir, name)


def training_curves(workdir: str, name: str, curves: dict) -> str:
  """Per-step training losses (moving average over 20 steps), one line per label."""
  fig, ax = plt.subplots(figsize=(5, 3))
  for i, (label, values) in enumerate(curves.items()):
    values = np.asarray(values)
    k = min(20, len(values))
    ax.plot(np.convolve(values, np.ones(k) / k, mode="valid"), label=label,
            ls=("-", "--", ":")[i // 10 % 3])
  ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.legend(fontsize=7)
  return save_figure(fig, workdir, name)
