"""The IDX reader round-trips files the writer makes; the EMNIST loader reads written files."""
import gzip
import struct

import numpy as np
import pytest

from moe_jax.customization import idx
from moe_jax.utils.errors import ConfigError


@pytest.mark.parametrize("name", ["a-idx3-ubyte.gz", "a-idx3-ubyte"])
@pytest.mark.parametrize("dtype,shape", [(np.uint8, (5, 28, 28)), (np.uint8, (7,)),
                                         (np.int32, (3, 4)), (np.float32, (2, 3, 4, 5)),
                                         (np.float64, (6,)), (np.int16, (2, 2))])
def test_round_trip(tmp_path, name, dtype, shape):
  rng = np.random.default_rng(0)
  array = (rng.normal(size=shape) * 100).astype(dtype)
  path = str(tmp_path / name)
  idx.write_idx(path, array)
  back = idx.read_idx(path)
  assert back.dtype == np.dtype(dtype) and back.shape == shape
  np.testing.assert_array_equal(back, array)


def test_header_is_the_standard_one(tmp_path):
  """Bytes written by hand in MNIST's layout: magic 0x00000803, big-endian sizes, payload."""
  array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  path = tmp_path / "x.gz"
  with gzip.open(path, "wb") as f:
    f.write(b"\x00\x00\x08\x03" + struct.pack(">III", 2, 3, 4) + array.tobytes())
  np.testing.assert_array_equal(idx.read_idx(str(path)), array)
  labels = np.array([1, 2, 3], np.int32)
  idx.write_idx(str(tmp_path / "y"), labels)
  raw = (tmp_path / "y").read_bytes()
  assert raw[:8] == b"\x00\x00\x0c\x01" + struct.pack(">I", 3)
  assert raw[8:] == labels.astype(">i4").tobytes()


def test_bad_files_raise_clear_errors(tmp_path):
  (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
  with pytest.raises(ConfigError, match="bad magic"):
    idx.read_idx(str(tmp_path / "bad"))
  (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01")
  with pytest.raises(ConfigError, match="payload"):
    idx.read_idx(str(tmp_path / "short"))
  with pytest.raises(ConfigError, match="data.emnist_dir"):
    idx.load_emnist(str(tmp_path), "balanced", "train")


def test_load_emnist_transposes_to_upright(tmp_path):
  rng = np.random.default_rng(1)
  upright = rng.integers(0, 256, (4, 28, 28)).astype(np.uint8)
  labels = np.array([0, 9, 46, 3], np.uint8)
  idx.write_idx(str(tmp_path / "emnist-balanced-test-images-idx3-ubyte.gz"),
                upright.transpose(0, 2, 1))
  idx.write_idx(str(tmp_path / "emnist-balanced-test-labels-idx1-ubyte.gz"), labels)
  images, got = idx.load_emnist(str(tmp_path), "balanced", "test")
  assert images.dtype == np.float32 and got.dtype == np.int32
  np.testing.assert_allclose(images, upright / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(got, labels)
