"""Simulated users: a fixed, per-user writing style applied to held-out handwriting.

A style is a slant (shear), a stroke width (grey dilation), a fixed personal elastic distortion (one
smooth displacement field per user, after Simard et al. 2003) plus a small per-sample elastic
jitter, and for some users a personal glyph for one class (the class is always written mirrored,
rotated, or with a crossbar). The paper's 10 real users are not available; this is our stand-in.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.ndimage

from moe_jax.utils.errors import check_choice

GLYPHS = ("mirror", "rotate", "crossbar")
# Classes whose personal glyph differs visibly from the generic one under every kind in GLYPHS.
GLYPH_CLASSES = (2, 3, 4, 5, 7, 9)


@dataclasses.dataclass(frozen=True)
class WritingStyle:
  """One user's handwriting.

  Attributes:
    slant: horizontal shear per row; > 0 leans right (x_in = x + slant * (y - centre)).
    stroke: extra stroke width in pixels (grey dilation with a (stroke+1)^2 window).
    elastic_alpha: amplitude in pixels of the user's fixed displacement field.
    elastic_sigma: smoothness (Gaussian std in pixels) of both displacement fields.
    jitter_alpha: amplitude of a fresh per-sample displacement field.
    glyph_class: the class written with a personal glyph, or -1 for none.
    glyph: one of GLYPHS, used when glyph_class >= 0.
    seed: seeds the user's fixed field.
  """
  slant: float
  stroke: int
  elastic_alpha: float
  elastic_sigma: float
  jitter_alpha: float
  glyph_class: int
  glyph: str
  seed: int

  def describe(self) -> str:
    glyph = f", {self.glyph} {self.glyph_class}" if self.glyph_class >= 0 else ""
    return (f"slant {self.slant:+.2f}, stroke +{self.stroke}, "
            f"elastic {self.elastic_alpha:.0f}{glyph}")


def make_styles(num_users: int, *, slant: tuple[float, float], stroke_max: int,
                elastic_alpha: tuple[float, float], elastic_sigma: float, jitter_alpha: float,
                glyph_fraction: float, seed: int) -> list[WritingStyle]:
  """Draws `num_users` styles; magnitudes uniform in the given ranges, slant sign random.

  The first round(glyph_fraction * num_users) users get a personal glyph (`glyph_fraction` in
  [0, 1], checked by `config.UsersConfig`).
  """
  rng = np.random.default_rng(seed)
  n_glyph = int(round(glyph_fraction * num_users))
  styles = []
  for u in range(num_users):
    has_glyph = u < n_glyph
    styles.append(WritingStyle(
        slant=float(rng.choice([-1.0, 1.0]) * rng.uniform(*slant)),
        stroke=int(rng.integers(0, stroke_max + 1)),
        elastic_alpha=float(rng.uniform(*elastic_alpha)),
        elastic_sigma=elastic_sigma,
        jitter_alpha=jitter_alpha,
        glyph_class=int(rng.choice(GLYPH_CLASSES)) if has_glyph else -1,
        glyph=str(GLYPHS[u % len(GLYPHS)]) if has_glyph else "",
        seed=int(rng.integers(2**31))))
  return styles


def _field(rng: np.random.Generator, shape: tuple[int, int], alpha: float,
           sigma: float) -> np.ndarray:
  """A smooth random displacement field [2, H, W] in pixels (Simard et al. 2003)."""
  noise = rng.uniform(-1.0, 1.0, (2, *shape))
  return alpha * np.stack([scipy.ndimage.gaussian_filter(n, sigma) for n in noise])


def personal_glyph(image: np.ndarray, glyph: str) -> np.ndarray:
  """The user's own way of writing a class: [H, W] -> [H, W]."""
  check_choice("users.glyph", glyph, GLYPHS)
  if glyph == "mirror":
    return image[:, ::-1].copy()
  if glyph == "rotate":
    return np.rot90(image).copy()
  h, w = image.shape
  out = image.copy()
  out[h // 2 - 1:h // 2 + 1, w // 4:w - w // 4] = 1.0
  return out


def render(images: np.ndarray, labels: np.ndarray, style: WritingStyle,
           seed: int) -> np.ndarray:
  """Writes `images` [N, H, W] (values in [0, 1]) in `style`; `seed` draws the per-sample jitter."""
  n, h, w = images.shape
  fixed = _field(np.random.default_rng(style.seed), (h, w), style.elastic_alpha,
                 style.elastic_sigma)
  rng = np.random.default_rng(seed)
  rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                           indexing="ij")
  out = np.empty_like(images, dtype=np.float32)
  for i in range(n):
    image = images[i]
    if labels[i] == style.glyph_class:
      image = personal_glyph(image, style.glyph)
    dy, dx = fixed + _field(rng, (h, w), style.jitter_alpha, style.elastic_sigma)
    src_cols = cols + style.slant * (rows - (h - 1) / 2) + dx
    image = scipy.ndimage.map_coordinates(image, [rows + dy, src_cols], order=1, cval=0.0)
    if style.stroke > 0:
      image = scipy.ndimage.grey_dilation(image, size=(style.stroke + 1, style.stroke + 1))
    out[i] = np.clip(image, 0.0, 1.0)
  return out
