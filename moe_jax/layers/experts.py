"""Expert feed-forward networks with stacked weights.

Legend: E experts, D model width, F hidden width, R rows of tokens in whatever layout the
dispatch uses ([A, D] sorted by expert, or [E, C, D] capacity buffers).

Gated activations (SwiGLU, GeGLU; Shazeer 2020): h = act(x W_gate) * (x W_up), y = h W_down.
Plain activations (GELU, ReLU, SiLU): h = act(x W_up), y = h W_down.
Weights: wi_gate/wi_up [E, D, F], wo [E, F, D] (logical axes expert, embed, mlp). The dispatch
supplies `matmul_in(x, w)` (for W_gate, W_up) and `matmul_out(h, w)` (for W_down) that multiply
each row by its own expert's matrix, so one expert definition serves every dispatch; the dropless
dispatch's pair also moves the rows (gathers token rows in, scatter-adds weighted outputs out).
`matmul_in` takes a tuple (W_gate, W_up) and returns both products: the dropless grouped matmul
reads each row once for both (`per_matrix` gives any other matmul that form).
"""
from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from moe_jax.utils.errors import check_choice

ACTIVATIONS: dict[str, tuple[Callable[[jax.Array], jax.Array], bool]] = {
    # name: (nonlinearity, gated)
    "swiglu": (jax.nn.silu, True),
    "geglu": (lambda x: jax.nn.gelu(x, approximate=True), True),
    "gelu": (lambda x: jax.nn.gelu(x, approximate=True), False),
    "relu": (jax.nn.relu, False),
    "silu": (jax.nn.silu, False),
}


def per_matrix(matmul: Callable) -> Callable:
  """matmul(x, w) extended to a tuple of matrices w: a tuple of products, one call each."""
  return lambda x, w: tuple(matmul(x, m) for m in w) if isinstance(w, tuple) else matmul(x, w)


def hidden(activation: str, products: tuple) -> jax.Array:
  """h from the input products: act(x W_gate) * (x W_up) for a gated FFN, else act(x W_up)."""
  fn, gated = ACTIVATIONS[activation]
  return fn(products[0]) * products[1] if gated else fn(products[0])


def ffn_hidden(x: jax.Array, matmul, w_gate, w_up, activation: str) -> jax.Array:
  """The hidden activations h of one FFN; `w_gate` is None for plain activations. One call
  matmul(x, (w_gate, w_up)) (or (w_up,)) gives the products."""
  return hidden(activation, matmul(x, (w_up,) if w_gate is None else (w_gate, w_up)))


class Experts(nn.Module):
  """E expert FFNs with weights stacked on a leading expert axis.

  __call__(x, matmul_in, matmul_out=matmul_in, ffn=None) -> (y, zero_frac): y = matmul_out(h,
  W_down); zero_frac[R] is the fraction of exact zeros in each row's hidden activations h (the
  expert-collapse diagnostic). A dispatch that runs the whole FFN in one pass passes
  ffn(x, w_in, W_down, hidden) -> (y, zero_frac), w_in = (W_gate, W_up) or (W_up,) and
  hidden(products) -> h (the dropless dispatch's grouped_ffn); matmul_in/out then go unused.
  """
  num_experts: int
  d_ff: int
  activation: str = "swiglu"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal(batch_axis=(0,))

  def __post_init__(self):
    check_choice("activation", self.activation, ACTIVATIONS)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, matmul_in, matmul_out=None,
               ffn=None) -> tuple[jax.Array, jax.Array]:
    d = x.shape[-1]
    e, f = self.num_experts, self.d_ff
    gated = ACTIVATIONS[self.activation][1]
    w_in = nn.with_logical_partitioning(self.kernel_init, ("expert", "embed", "mlp"))
    w_out = nn.with_logical_partitioning(self.kernel_init, ("expert", "mlp", "embed"))
    w_gate = self.param("wi_gate", w_in, (e, d, f), self.param_dtype) if gated else None
    w_up = self.param("wi_up", w_in, (e, d, f), self.param_dtype)
    w_down = self.param("wo", w_out, (e, f, d), self.param_dtype)
    cast = lambda w: None if w is None else w.astype(self.dtype)
    if ffn is not None:
      w_in = (cast(w_up),) if w_gate is None else (cast(w_gate), cast(w_up))
      return ffn(x.astype(self.dtype), w_in, cast(w_down),
                 functools.partial(hidden, self.activation))
    h = ffn_hidden(x.astype(self.dtype), matmul_in, cast(w_gate), cast(w_up), self.activation)
    zero_frac = jnp.mean((h == 0).astype(jnp.float32), axis=-1)
    return (matmul_out or matmul_in)(h, cast(w_down)), zero_frac


class MlpBlock(nn.Module):
  """A dense FFN [..., D] -> [..., D] (the dense layers of an LM and MoE shared experts).

  Weights wi_gate/wi_up [D, F], wo [F, D]: the Experts layout without the expert axis.
  """
  d_ff: int
  activation: str = "swiglu"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()

  def __post_init__(self):
    check_choice("activation", self.activation, ACTIVATIONS)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d, f = x.shape[-1], self.d_ff
    gated = ACTIVATIONS[self.activation][1]
    w_in = nn.with_logical_partitioning(self.kernel_init, ("embed", "mlp"))
    w_out = nn.with_logical_partitioning(self.kernel_init, ("mlp", "embed"))
    w_gate = self.param("wi_gate", w_in, (d, f), self.param_dtype) if gated else None
    w_up = self.param("wi_up", w_in, (d, f), self.param_dtype)
    w_down = self.param("wo", w_out, (f, d), self.param_dtype)
    cast = lambda w: None if w is None else w.astype(self.dtype)
    h = ffn_hidden(x.astype(self.dtype), per_matrix(jnp.dot), cast(w_gate), cast(w_up),
                   self.activation)
    return jnp.dot(h, cast(w_down))


class SharedExperts(nn.Module):
  """Always-on shared experts (DeepSeekMoE; Qwen2-MoE), one FFN of width `d_ff`.

  With `gated`, the output is scaled by sigmoid(x w_g), w_g [D, 1] (Qwen2-MoE's shared_expert_gate).
  """
  d_ff: int
  activation: str = "swiglu"
  gated: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = MlpBlock(self.d_ff, self.activation, self.dtype, self.param_dtype, name="mlp")(x)
    if self.gated:
      gate = nn.Dense(1, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                      kernel_init=nn.with_logical_partitioning(nn.linear.default_kernel_init,
                                                               ("embed", None)),
                      name="gate")(x)
      y = jax.nn.sigmoid(gate) * y
    return y
