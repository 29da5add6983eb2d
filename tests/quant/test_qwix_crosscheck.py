"""Our GPTQ against qwix's (google/qwix 0.1.8, `qwix.contrib.gptq_core`) on small symmetric layers.

qwix quantizes one column at a time in a Python loop (eager here), symmetric int4 / int8 with
the same scale convention (absmax / (qmax + 0.5)). Its groups are read from weights that lack the
current block's updates, so the groups here start at block boundaries (g = block size), where the
two definitions agree. Skipped when qwix is not installed.
"""
import jax.numpy as jnp
import numpy as np
import pytest

from moe_jax.quant import core, gptq, hessian

gptq_core = pytest.importorskip("qwix.contrib.gptq_core")
qarray = pytest.importorskip("qwix._src.core.qarray")


@pytest.mark.parametrize("bits,group_size", [(4, None), (4, 8), (8, None)])
def test_matches_qwix(bits, group_size):
  rng = np.random.default_rng(bits + (group_size or 0))
  w = jnp.asarray(rng.standard_normal((8, 16)), jnp.float32)
  x = rng.standard_normal((64, 16)) @ (np.eye(16) + 0.5 * rng.standard_normal((16, 16)))
  h = hessian.hessian(jnp.asarray(x, jnp.float32))
  tiled = {} if group_size is None else {1: group_size}
  how = qarray.HowToQuantize(qtype=jnp.int4 if bits == 4 else jnp.int8, channelwise_axes=(0,),
                             tiled_axes=tiled)
  theirs, _ = gptq_core.quantize_weight(w, h, how, blocksize=8, percdamp=0.01)
  q, scale, _ = gptq.gptq(w, h, core.QuantSpec(bits=bits, group_size=group_size), block_size=8)
  np.testing.assert_array_equal(q, np.asarray(theirs.qvalue).astype(np.int8))
  np.testing.assert_allclose(scale, theirs.scale, rtol=1e-6)
