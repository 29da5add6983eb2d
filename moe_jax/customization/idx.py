"""The IDX file format of MNIST/EMNIST (optionally gzipped): reader, writer and an EMNIST loader.

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number of dimensions N),
then N big-endian uint32 sizes, then the array in C order, big-endian.

EMNIST ships `emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte.gz`; its images are
stored transposed relative to MNIST, so `load_emnist` turns them upright: [N, 28, 28] in [0, 1].
"""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from moe_jax.utils.errors import require

# IDX dtype code -> numpy dtype (big-endian where it matters).
_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {dt.newbyteorder("=").str.lstrip("<>|="): code for code, dt in _DTYPES.items()}


def _open(path: str, mode: str):
  return gzip.open(path, mode) if path.endswith(".gz") else open(path, mode)


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX (or .gz IDX) file into a native-endian numpy array."""
  with _open(path, "rb") as f:
    data = f.read()
  require(len(data) >= 4 and data[0] == 0 and data[1] == 0, "path",
          f"{path} is not an IDX file (bad magic number)", "pass an MNIST/EMNIST IDX file")
  code, ndim = data[2], data[3]
  require(code in _DTYPES, "path", f"{path} has unknown IDX dtype code {code:#x}",
          "pass an IDX file with a standard dtype code")
  shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
  dtype = _DTYPES[code]
  count = int(np.prod(shape, dtype=np.int64))
  offset = 4 + 4 * ndim
  require(len(data) - offset == count * dtype.itemsize, "path",
          f"{path} holds {len(data) - offset} payload bytes, header says {shape}",
          "re-download or re-write the file")
  array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
  return array.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes `array` as an IDX file (gzipped when `path` ends in .gz)."""
  array = np.asarray(array)
  key = array.dtype.newbyteorder("=").str.lstrip("<>|=")
  require(key in _CODES, "array", f"dtype {array.dtype} has no IDX code",
          "cast to uint8, int8, int16, int32, float32 or float64")
  code = _CODES[key]
  header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  with _open(path, "wb") as f:
    f.write(header + array.astype(_DTYPES[code]).tobytes())


def load_emnist(directory: str, split: str, subset: str) -> tuple[np.ndarray, np.ndarray]:
  """Loads one EMNIST split ('balanced', 'digits', ...) and subset ('train' or 'test').

  Returns:
    images [N, 28, 28] float32 in [0, 1], upright; labels [N] int32.
  """
  stem = os.path.join(directory, f"emnist-{split}-{subset}")
  paths = [f"{stem}-images-idx3-ubyte.gz", f"{stem}-labels-idx1-ubyte.gz"]
  for p in paths:
    require(os.path.exists(p), "data.emnist_dir", f"{p} does not exist",
            "download EMNIST's gzip IDX files into that directory, or use data.source='digits'")
  images = read_idx(paths[0])
  labels = read_idx(paths[1])
  require(images.ndim == 3 and len(images) == len(labels), "data.emnist_dir",
          f"images {images.shape} and labels {labels.shape} do not match", "check the files")
  images = np.transpose(images, (0, 2, 1)).astype(np.float32) / 255.0
  return images, labels.astype(np.int32)
