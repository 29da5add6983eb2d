"""Video data: moving handwritten digits (scikit-learn's 8x8 digits, no download) and a loader for a
folder of real clips. Videos are float32 [N, T, H, W, C] in [-1, 1].
"""
from __future__ import annotations

import os

import numpy as np

from moe_jax.utils.errors import require

# Eight motion directions (dy, dx): index = label.
DIRECTIONS = np.array([(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)])


def moving_digits(n: int, *, frames: int = 8, size: int = 16, split: str = "train", seed: int = 0):
  """Digits bouncing on a size x size canvas, one per clip.

  Each clip draws an 8x8 digit image (train: the first 1400 of sklearn's 1797, test: the rest), a
  start position, one of 8 directions and a speed of 1 or 2 px / frame, and reflects off the
  borders.

  Returns:
    videos [n, frames, size, size, 1] in [-1, 1], digit labels [n], direction labels [n].
  """
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  require(size >= 10, "size", f"canvas {size} leaves an 8x8 digit no room to move",
          "use size >= 10")
  require(split in ("train", "test"), "split", f"unknown split {split!r}", "use 'train' or 'test'")
  digits = load_digits()
  images, targets = digits.images / 16.0, digits.target
  pool = np.arange(1400) if split == "train" else np.arange(1400, len(images))
  rng = np.random.default_rng(seed)
  pick = rng.choice(pool, n)
  direction = rng.integers(0, len(DIRECTIONS), n)
  speed = rng.integers(1, 3, n)
  room = size - 8
  pos = rng.integers(0, room + 1, (n, 2))
  vel = DIRECTIONS[direction] * speed[:, None]
  videos = np.zeros((n, frames, size, size), np.float32)
  for t in range(frames):
    for i in range(n):
      y, x = pos[i]
      videos[i, t, y:y + 8, x:x + 8] = images[pick[i]]
    nxt = pos + vel
    bounce = (nxt < 0) | (nxt > room)
    vel = np.where(bounce, -vel, vel)
    pos = np.clip(pos + vel, 0, room)
  return videos[..., None] * 2.0 - 1.0, targets[pick], direction


def _to_unit(frames: np.ndarray) -> np.ndarray:
  frames = frames.astype(np.float32)
  return frames / 127.5 - 1.0 if frames.max() > 1.0 else frames * 2.0 - 1.0


def load_video_folder(path: str, *, frames: int, size: int, channels: int = 1) -> np.ndarray:
  """Loads clips from `path`: each `*.npy` is one clip [T, H, W] or [T, H, W, C] (uint8 0..255 or
  float 0..1), each sub-folder holds one clip as PNG frames sorted by name. Clips are cut to the
  first `frames` frames, resized to size x size and converted to `channels` (1 = grey, 3 = RGB).

  Returns [N, frames, size, size, channels] float32 in [-1, 1].
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  require(os.path.isdir(path), "data_dir", f"{path!r} is not a folder",
          "point it at a folder of clips")
  mode = {1: "L", 3: "RGB"}[channels]

  def resize(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 3 and frame.shape[-1] == 1:
      frame = frame[..., 0]
    if frame.dtype != np.uint8:
      frame = np.clip(frame * 255.0 if frame.max() <= 1.0 else frame, 0, 255).astype(np.uint8)
    img = Image.fromarray(frame).convert(mode).resize((size, size), Image.BILINEAR)
    return np.asarray(img).reshape(size, size, channels)

  clips = []
  for name in sorted(os.listdir(path)):
    full = os.path.join(path, name)
    if name.endswith(".npy"):
      raw = list(np.load(full))
    elif os.path.isdir(full):
      pngs = sorted(f for f in os.listdir(full) if f.lower().endswith(".png"))
      raw = [np.asarray(Image.open(os.path.join(full, f))) for f in pngs]
    else:
      continue
    require(len(raw) >= frames, "frames",
            f"clip {name!r} has {len(raw)} frames, fewer than {frames}",
            "lower config.frames or drop short clips")
    clips.append(np.stack([resize(f) for f in raw[:frames]]))
  require(bool(clips), "data_dir", f"no .npy clips or PNG-frame folders in {path!r}",
          "add clips as <name>.npy or <name>/<frame>.png")
  return _to_unit(np.stack(clips).astype(np.uint8))
