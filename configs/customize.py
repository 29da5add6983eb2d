r"""GE / LE / GN low-cost customization (Zhang, Davoodi & Hu, arXiv:1811.00056).

A LeNet5 global expert (GE) is trained once on a generic handwriting set and frozen; for each of ten
simulated users a local expert (LE) and a gating network (GN) are trained on that user's few samples
(20 per class), and GN sends each input to GE or LE (hard gate).

Command:
  python -m experiments.customize --config=configs/customize.py --workdir=/tmp/customize

Expected result (default preset; 2 CPU cores shared with other jobs, ~70 s wall; quick: ~25 s):
  mean over 10 users           GE      LE      GE+LE+GN   paper (abstract)
  user test accuracy           0.794   0.940   0.936      "significantly enhanced"
  generic test accuracy        0.975   0.843   0.969      "almost no degradation"
  LE + GN overhead             energy proxy 0.47%, parameters 2.16%, FLOPs 0.32%; paper ~2.5%
  GN target 'ge_error' (user data only): user 0.890, generic 0.932 (-4.3 points).
  Other seeds (--config.seed=1 / 2): user 0.776 -> 0.923 / 0.809 -> 0.912, generic
  0.960 -> 0.952 / 0.977 -> 0.976.

Data: the paper uses EMNIST and ten real users' handwriting; neither can be downloaded here. The
default uses scikit-learn's 1,797 digits (8x8, upsampled to a 20x20 box in 28x28, MNIST-like) with a
class-stratified split: GE trains on 90 per class, the generic test set is 40 per class, the rest is
the held-out pool the users write from (scikit-learn keeps no writer ids, so users are held-out
samples, not held-out writers). Each user re-writes pool samples in a fixed style (slant, stroke
width, a fixed personal elastic field plus per-sample jitter, and for half the users a personal
glyph for one class); a user's train and test samples are disjoint, and users draw independently
from the same pool (~48 per class), so two users may re-write one base sample in their own styles.
`data.source='emnist'` with `data.emnist_dir` runs the same pipeline on EMNIST's gzip IDX files
(train and test concatenated, then split the same way).

What the paper fixes (abstract): GE = LeNet5 on EMNIST; LE and GN trained on the device from the
user's small set with GE frozen; ten users; LE + GN cost ~2.5% of GE in energy and size. Everything
else is open (only the abstract is readable from here) and is a field below with our reason.
"""
import ml_collections

from moe_jax.utils.errors import check_choice


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  """Returns the default reproduction config, or the `quick` preset used by tests."""
  check_choice("preset", preset, ("", "quick"))
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.source = "digits"  # 'digits' (shipped stand-in) or 'emnist' (IDX gzip files).
  c.data.emnist_dir = ""
  c.data.emnist_split = "digits"  # Paper: alphanumerics (47 or 62 classes); which split is open.
  c.data.box = 20  # Side of the upsampled digit inside 28x28, as MNIST's 20x20 box.
  c.data.ge_train_per_class = 90
  c.data.generic_test_per_class = 40

  c.users = ml_collections.ConfigDict()
  c.users.num_users = 10  # Paper: 10 users.
  # "Tens of samples per class" on the device; test set disjoint from train.
  c.users.train_per_class = 20
  c.users.test_per_class = 20
  # Style ranges: chosen so GE loses ~25 points on users' data (a visible but realistic shift).
  c.users.slant = (0.1, 0.35)  # |shear| per row, sign random.
  c.users.stroke_max = 2  # Extra stroke width in pixels, uniform in 0..stroke_max.
  c.users.elastic_alpha = (8.0, 20.0)  # Fixed personal field amplitude (pixels).
  c.users.elastic_sigma = 4.0  # Field smoothness, as Simard et al. 2003 use for 28x28 digits.
  c.users.jitter_alpha = 8.0  # Fresh per-sample field: a user never writes a glyph twice alike.
  c.users.glyph_fraction = 0.5  # Share of users with a personal glyph for one class.

  # GE: LeNet5. Paper fixes only "LeNet5"; input padding to 32x32 as the original, modern ReLU and
  # max pooling (the original's tanh/average pooling are the alternatives).
  c.ge = ml_collections.ConfigDict()
  c.ge.input_pad = 2
  c.ge.activation = "relu"
  c.ge.pooling = "max"
  # LE and GN read GE's fc1 features (120): our choice, so that LE + GN stay a few percent of GE
  # (a separate CNN on pixels within ~2.5% of LeNet5's FLOPs would be far too weak).
  c.ge.feature_layer = "fc1"
  c.ge.steps = 1500
  c.ge.batch_size = 64
  c.ge.learning_rate = 1e-3
  c.ge.weight_decay = 1e-4

  # LE: softmax regression on GE features (hidden=0), trained on the user's samples only.
  c.le = ml_collections.ConfigDict()
  c.le.hidden = 0
  c.le.steps = 300
  c.le.batch_size = 1024  # >= the user's set: full-batch steps.
  c.le.learning_rate = 1e-2
  c.le.weight_decay = 1e-3

  # GN: logistic regression on GE features, hard gate at `threshold`.
  # targets[0] is the headline; the others are reported as an ablation from the same run.
  # 'source' (default): user samples vs a small generic reference set shipped with the GE (public
  # data; no user data leaves the device). 'ge_error': user data only, target = GE wrong. At our
  # scale 'ge_error' sends ~20% of generic inputs to LE and loses ~5 points generic, so the headline
  # uses 'source' (a deviation from "user's set only", reported beside it).
  c.gn = ml_collections.ConfigDict()
  c.gn.hidden = 0
  c.gn.targets = ("source", "ge_error")
  c.gn.reference_per_class = 20  # Drawn from GE's training set.
  c.gn.threshold = 0.5
  c.gn.balance = True  # Weight positives by #neg/#pos (classes are unbalanced for both targets).
  c.gn.steps = 300
  c.gn.batch_size = 1024
  c.gn.learning_rate = 1e-2
  c.gn.weight_decay = 1e-3

  c.costs = ml_collections.ConfigDict()
  c.costs.read_weight = 1.0  # Energy proxy = FLOPs + read_weight x memory reads.

  if preset == "quick":
    c.data.ge_train_per_class = 30
    c.data.generic_test_per_class = 10
    c.users.num_users = 2
    c.users.train_per_class = 5
    c.users.test_per_class = 5
    c.ge.steps = 60
    c.le.steps = 20
    c.gn.steps = 20
    c.gn.reference_per_class = 5
  return c
