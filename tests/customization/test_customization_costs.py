"""Counted costs match a hand count of LeNet5 (and of the LE and GN)."""
import jax
import numpy as np
import pytest

from moe_jax.customization import costs, gating, lenet, local_expert

# Hand count of LeNet5 on a 28x28 input padded to 32x32, 10 classes, per example.
#   layer   output       params                 MACs                    reads = params + inputs
#   conv1   28x28x6      6*(5*5*1+1)   =   156  28*28*6*5*5*1 = 117600     156 + 32*32*1 =  1180
#   conv2   10x10x16     16*(5*5*6+1)  =  2416  10*10*16*5*5*6 = 240000   2416 + 14*14*6 =  3592
#   fc1     120          400*120+120   = 48120  400*120       =  48000   48120 + 5*5*16 = 48520
#   fc2     84           120*84+84     = 10164  120*84        =  10080   10164 + 120    = 10284
#   head    10           84*10+10      =   850  84*10         =    840     850 + 84     =   934
#   total                               61706                 416520                    64510
# FLOPs = 2 * 416520 = 833040; energy (read_weight 1) = 833040 + 64510 = 897550.
LENET5_HAND = [("conv1", 156, 117600, 1180), ("conv2", 2416, 240000, 3592),
               ("fc1", 48120, 48000, 48520), ("fc2", 10164, 10080, 10284),
               ("head", 850, 840, 934)]


def test_lenet5_matches_hand_count():
  ge = lenet.LeNet5(10)
  x = np.zeros((3, 28, 28), np.float32)
  params = jax.eval_shape(ge.init, jax.random.key(0), x)["params"]  # shapes suffice.
  layers = costs.layer_costs(ge, params, x)
  assert [(l.name, l.params, l.macs, l.reads) for l in layers] == LENET5_HAND
  total = costs.total_cost(layers)
  assert total == {"params": 61706, "flops": 833040, "reads": 64510, "energy": 897550}
  assert total["params"] == sum(np.prod(v.shape) for v in jax.tree.leaves(params))
  assert costs.total_cost(layers, read_weight=3.0)["energy"] == 833040 + 3 * 64510


def test_le_and_gn_on_fc1_features_and_overhead():
  f = np.zeros((1, 120), np.float32)
  le, gn = local_expert.LocalExpert(10), gating.GatingNetwork()
  le_params = le.init(jax.random.key(0), f)["params"]  # real arrays work too.
  le_cost = costs.total_cost(costs.layer_costs(le, le_params, f))
  gn_params = jax.eval_shape(gn.init, jax.random.key(0), f)["params"]
  gn_cost = costs.total_cost(costs.layer_costs(gn, gn_params, f))
  # LE: 120*10+10 = 1210 params, 1200 MACs, 1210+120 reads. GN: 120+1 params, 120 MACs, 241 reads.
  assert le_cost == {"params": 1210, "flops": 2400, "reads": 1330, "energy": 3730}
  assert gn_cost == {"params": 121, "flops": 240, "reads": 241, "energy": 481}
  ge_cost = {"params": 61706, "flops": 833040, "reads": 64510, "energy": 897550}
  over = costs.overhead([le_cost, gn_cost], ge_cost)
  assert over["params"] == pytest.approx(1331 / 61706)
  assert over["energy"] == pytest.approx(4211 / 897550)
  # A hidden layer of 16: 120*16+16 + 16*10+10 = 2106 params.
  le16 = local_expert.LocalExpert(10, hidden=16)
  p16 = jax.eval_shape(le16.init, jax.random.key(0), f)["params"]
  assert costs.total_cost(costs.layer_costs(le16, p16, f))["params"] == 2106
