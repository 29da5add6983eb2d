"""Moving digits and the video-folder loader (on a small folder the test writes)."""
import os

import numpy as np
import pytest
from PIL import Image

from moe_jax.utils.errors import ConfigError
from moe_jax.video_diffusion.data import DIRECTIONS, load_video_folder, moving_digits


def test_moving_digits_keep_the_digit_on_canvas_and_move_as_labelled():
  videos, digits, directions = moving_digits(64, frames=6, size=16, seed=1)
  assert videos.shape == (64, 6, 16, 16, 1) and videos.dtype == np.float32
  assert videos.min() >= -1.0 and videos.max() <= 1.0
  assert set(digits) <= set(range(10)) and set(directions) <= set(range(8))
  ink = (videos + 1.0).sum(axis=(2, 3, 4))
  np.testing.assert_allclose(ink, ink[:, :1].repeat(6, axis=1), rtol=1e-5)   # never clipped
  ys, xs = np.mgrid[:16, :16]
  com = lambda f: np.array([((f + 1) * ys).sum(), ((f + 1) * xs).sum()]) / (f + 1).sum()
  for v, d in zip(videos[:, :, :, :, 0], directions):
    steps = np.round(np.array([com(v[t + 1]) - com(v[t]) for t in range(5)]))
    # Reflection happens before the move, so every frame moves by speed (1 or 2) along exactly the
    # axes the direction label moves on; bounces flip only the sign.
    speed = np.abs(steps).max()
    assert speed in (1.0, 2.0)
    np.testing.assert_array_equal(np.abs(steps), speed * np.abs(DIRECTIONS[d])[None].repeat(5, 0))


def test_splits_use_disjoint_digit_images():
  a, _, _ = moving_digits(8, split="test", seed=0)
  b, _, _ = moving_digits(8, split="test", seed=0)
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ConfigError, match="split"):
    moving_digits(4, split="val")


def test_video_folder_loader_reads_npy_and_png_clips(tmp_path):
  rng = np.random.default_rng(0)
  npy = rng.integers(0, 256, (6, 16, 16), dtype=np.uint8)
  np.save(tmp_path / "a_clip.npy", npy)
  png = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)
  os.makedirs(tmp_path / "b_clip")
  for i, frame in enumerate(png):
    Image.fromarray(frame).save(tmp_path / "b_clip" / f"{i:03d}.png")
  (tmp_path / "notes.txt").write_text("ignored")
  clips = load_video_folder(str(tmp_path), frames=4, size=16)
  assert clips.shape == (2, 4, 16, 16, 1)
  np.testing.assert_allclose(clips[0, ..., 0], npy[:4] / 127.5 - 1.0, atol=1e-6)
  np.testing.assert_allclose(clips[1, ..., 0], png[:4] / 127.5 - 1.0, atol=1e-6)
  small = load_video_folder(str(tmp_path), frames=4, size=8)
  assert small.shape == (2, 4, 8, 8, 1)
  with pytest.raises(ConfigError, match="frames"):
    load_video_folder(str(tmp_path), frames=6, size=16)
  with pytest.raises(ConfigError, match="data_dir"):
    load_video_folder(str(tmp_path / "missing"), frames=4, size=16)
