"""A tiny MoE LM, a short training recipe and a toy byte stream shared by the train tests."""
import numpy as np
import pytest

from moe_jax.data import tokenizer
from moe_jax.data.iterator import eval_windows
from moe_jax.layers.moe import MoEConfig
from moe_jax.models.config import LMConfig
from moe_jax.train.loop import TrainConfig

MODEL = LMConfig(vocab_size=256, d_model=16, num_layers=2, num_heads=2, num_kv_heads=1,
                 d_ff=32, max_len=32, moe=MoEConfig(num_experts=4, top_k=2, d_ff=16))
TRAIN = TrainConfig(num_steps=6, batch_size=4, seq_len=16, warmup_steps=2, log_every=1,
                    eval_every=3, eval_batch_size=4, save_every=2, keep=2)


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  stream = tokenizer.encode("".join(rng.choice(list("abcdefgh \n"), size=4000)))
  return stream, {"toy": eval_windows(stream[:600], TRAIN.seq_len)}
