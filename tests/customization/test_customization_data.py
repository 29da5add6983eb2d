"""The digits stand-in, its split, and the simulated users' writing styles."""
import numpy as np
import pytest
import scipy.ndimage

from moe_jax.customization import data, digits, idx, users
from moe_jax.utils.errors import ConfigError


def _style(**kw):
  base = dict(slant=0.0, stroke=0, elastic_alpha=0.0, elastic_sigma=4.0, jitter_alpha=0.0,
              glyph_class=-1, glyph="", seed=0)
  return users.WritingStyle(**{**base, **kw})


def test_upsample_puts_the_digit_in_a_centred_box():
  rng = np.random.default_rng(0)
  images8 = rng.integers(0, 17, (3, 8, 8))
  out = digits.upsample(images8, box=20)
  assert out.shape == (3, 28, 28) and out.dtype == np.float32
  assert out.min() >= 0.0 and out.max() <= 1.0
  assert not out[:, :4].any() and not out[:, 24:].any()
  want = np.clip(scipy.ndimage.zoom(images8[1] / 16.0, 2.5, order=1), 0, 1)
  np.testing.assert_allclose(out[1, 4:24, 4:24], want, atol=1e-6)


def test_load_digits28():
  images, labels = digits.load_digits28()
  assert images.shape == (1797, 28, 28) and labels.shape == (1797,)
  assert set(np.unique(labels)) == set(range(10))


def test_stratified_split_is_disjoint_and_per_class():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 4, 200)
  parts = data.stratified_split(labels, {"a": 5, "b": 7}, seed=3)
  for name, n in (("a", 5), ("b", 7)):
    assert np.bincount(labels[parts[name]], minlength=4).tolist() == [n] * 4
  joined = np.concatenate(list(parts.values()))
  assert sorted(joined.tolist()) == list(range(200))
  again = data.stratified_split(labels, {"a": 5, "b": 7}, seed=3)
  assert all(np.array_equal(parts[k], again[k]) for k in parts)
  with pytest.raises(ConfigError, match="per-class"):
    data.stratified_split(labels, {"a": 100}, seed=0)


def test_per_class_draw_is_disjoint_and_from_the_pool():
  rng = np.random.default_rng(5)
  labels = np.repeat(np.arange(3), 20)
  pool = np.arange(0, 60, 2)  # 10 per class
  a, b = data.per_class_draw(pool, labels, (4, 6), rng)
  assert np.bincount(labels[a]).tolist() == [4] * 3 and np.bincount(labels[b]).tolist() == [6] * 3
  assert not set(a) & set(b) and set(a) | set(b) <= set(pool)
  with pytest.raises(ConfigError, match="users.train_per_class"):
    data.per_class_draw(pool, labels, (8, 3), rng)


def test_load_emnist_source(tmp_path):
  rng = np.random.default_rng(6)
  for subset, n in (("train", 5), ("test", 3)):
    stem = tmp_path / f"emnist-digits-{subset}"
    idx.write_idx(f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), np.uint8))
    idx.write_idx(f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
  images, labels, name = data.load("emnist", emnist_dir=str(tmp_path), emnist_split="digits")
  assert images.shape == (8, 28, 28) and labels.shape == (8,) and name == "EMNIST-digits"
  with pytest.raises(ConfigError, match="data.source"):
    data.load("mnist")


def test_neutral_style_is_the_identity():
  rng = np.random.default_rng(2)
  images = rng.uniform(size=(3, 28, 28)).astype(np.float32)
  out = users.render(images, np.zeros(3, int), _style(), seed=0)
  np.testing.assert_allclose(out, images, atol=1e-6)


def test_slant_shears_rows_about_the_centre():
  image = np.zeros((1, 28, 28), np.float32)
  image[0, :, 14] = 1.0  # a vertical stroke
  out = users.render(image, np.zeros(1, int), _style(slant=0.25), seed=0)[0]
  top, bottom = out[1], out[26]
  # Leaning right: the stroke sits right of centre at the top, left of it at the bottom.
  assert np.argmax(top) > 14 > np.argmax(bottom)


def test_stroke_is_grey_dilation():
  rng = np.random.default_rng(3)
  images = rng.uniform(size=(2, 28, 28)).astype(np.float32) * (rng.uniform(size=(2, 28, 28)) > 0.9)
  out = users.render(images, np.zeros(2, int), _style(stroke=2), seed=0)
  want = np.stack([scipy.ndimage.grey_dilation(im, size=(3, 3)) for im in images])
  np.testing.assert_allclose(out, want, atol=1e-6)


def test_personal_glyph_only_on_its_class_and_style_is_fixed():
  rng = np.random.default_rng(4)
  images = rng.uniform(size=(4, 28, 28)).astype(np.float32)
  labels = np.array([3, 5, 3, 1])
  out = users.render(images, labels, _style(glyph_class=3, glyph="mirror"), seed=0)
  np.testing.assert_allclose(out[[0, 2]], images[[0, 2], :, ::-1], atol=1e-6)
  np.testing.assert_allclose(out[[1, 3]], images[[1, 3]], atol=1e-6)
  np.testing.assert_array_equal(users.personal_glyph(images[0], "rotate"), np.rot90(images[0]))
  style = _style(elastic_alpha=15.0, jitter_alpha=5.0, seed=7)
  a = users.render(images, labels, style, seed=1)
  np.testing.assert_array_equal(a, users.render(images, labels, style, seed=1))
  assert not np.allclose(a, users.render(images, labels, style, seed=2))  # jitter differs


def test_make_styles():
  styles = users.make_styles(10, slant=(0.1, 0.3), stroke_max=2, elastic_alpha=(5.0, 9.0),
                             elastic_sigma=4.0, jitter_alpha=2.0, glyph_fraction=0.5, seed=0)
  assert len(styles) == 10 and sum(s.glyph_class >= 0 for s in styles) == 5
  for s in styles:
    assert 0.1 <= abs(s.slant) <= 0.3 and 0 <= s.stroke <= 2 and 5.0 <= s.elastic_alpha <= 9.0
    assert s.glyph_class < 0 or (s.glyph_class in users.GLYPH_CLASSES and s.glyph in users.GLYPHS)
