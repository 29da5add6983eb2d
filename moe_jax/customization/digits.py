"""scikit-learn's 8x8 digits upsampled to 28x28: the shipped stand-in for EMNIST.

The 1,797 digits are the UCI optdigits test set (13 writers); scikit-learn does not keep writer ids,
so the simulated users write held-out samples, not held-out writers' samples (see `data.py`).
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage

from moe_jax.utils.errors import require


def upsample(images8: np.ndarray, box: int = 20, size: int = 28) -> np.ndarray:
  """[N, 8, 8] counts in 0..16 -> [N, size, size] float32 in [0, 1], the digit in a centred box.

  Like MNIST: the glyph fills a `box` x `box` square (bilinear zoom) padded to `size` x `size`.
  """
  require(box <= size, "data.box", f"box {box} exceeds image size {size}", "use box <= 28")
  zoomed = scipy.ndimage.zoom(images8.astype(np.float32) / 16.0, (1, box / 8, box / 8), order=1)
  lo = (size - box) // 2
  out = np.zeros((len(images8), size, size), np.float32)
  out[:, lo:lo + box, lo:lo + box] = np.clip(zoomed, 0.0, 1.0)
  return out


def load_digits28(box: int = 20) -> tuple[np.ndarray, np.ndarray]:
  """Returns images [1797, 28, 28] float32 in [0, 1] and labels [1797] int32."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  return upsample(digits.images, box), digits.target.astype(np.int32)
