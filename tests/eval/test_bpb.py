"""Bits per byte and top-1 accuracy against NumPy cross-entropy, the trainer's own evaluation,
a subword tokenizer beside the model, and bad data refused in one line."""
import json
import math
import types

import jax
import numpy as np
import pytest

from moe_jax.data.corpus import DataConfig, Document
from moe_jax.eval.bpb import bits_per_byte, domain_windows
from moe_jax.eval.encoding import make_encoder
from moe_jax.eval.evaluate import EvalConfig, documents, evaluate
from moe_jax.models.loading import LoadedModel
from moe_jax.train.trainer import make_eval_fn
from moe_jax.utils.errors import ConfigError
from tests.eval.tiny import random_model

LETTERS = list("abcdefgh ijklmnop\nqrstuvwxyz.é")


@pytest.fixture(scope="module")
def model():
  return random_model(seed=int(np.random.default_rng().integers(1 << 30)))


def _docs(rng):
  text = lambda n: "".join(rng.choice(LETTERS, size=n))
  return [Document("e1", "english", text(150)), Document("p1", "python", text(90)),
          Document("e2", "english", text(70))]


def _reference(model, windows, bytes_per_token):
  """sum of -log p over the windows' next tokens (float64 NumPy), hits, tokens."""
  logits = np.asarray(jax.jit(model.module.apply)(model.variables, windows[:, :-1]), np.float64)
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  targets = windows[:, 1:]
  nats = -np.take_along_axis(logp, targets[..., None], -1).sum()
  hits = (logits.argmax(-1) == targets).sum()
  return nats, targets.size * bytes_per_token, hits, targets.size


def test_bits_per_byte_matches_numpy_cross_entropy(model):
  rng = np.random.default_rng()
  windows = domain_windows(_docs(rng), make_encoder("bytes", model), 24, 5)
  assert windows["english"][0].shape == (5, 25) and windows["english"][1] == 1.0
  got = bits_per_byte(model, windows, batch_size=4)  # 5 windows: the second batch is padded
  total = np.zeros(4)
  for domain, (w, bytes_per_token) in windows.items():
    ref = np.array(_reference(model, w, bytes_per_token))
    total += ref
    assert got["bpb"][domain] == pytest.approx(ref[0] / ref[1] / math.log(2), rel=1e-5)
    assert got["top1"][domain] == pytest.approx(ref[2] / ref[3])
    assert got["tokens"][domain] == ref[3]
  assert got["bpb"]["all"] == pytest.approx(total[0] / total[1] / math.log(2), rel=1e-5)
  assert got["top1"]["all"] == pytest.approx(total[2] / total[3])


def test_bits_per_byte_equals_the_trainers_evaluation(model):
  windows = domain_windows(_docs(np.random.default_rng()), make_encoder("bytes", model), 16, 8)
  ours = bits_per_byte(model, windows, batch_size=8)["bpb"]
  eval_fn = make_eval_fn(model.module)
  state = types.SimpleNamespace(params=model.variables["params"], extra={})
  for domain, (w, _) in windows.items():
    assert ours[domain] == pytest.approx(eval_fn(state, w, 8), rel=1e-5)


def _subword_model(tmp_path, rng):
  """A byte-pair tokenizer trained on the documents, saved beside a random model of its vocab."""
  tokenizers = pytest.importorskip("tokenizers")
  transformers = pytest.importorskip("transformers")
  docs = _docs(rng)
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  tok.train_from_iterator([d.text for d in docs], tokenizers.trainers.BpeTrainer(
      vocab_size=300, special_tokens=["[UNK]"],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
  transformers.PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(str(tmp_path))
  vocab = tok.get_vocab_size()
  model = random_model(seed=int(rng.integers(1 << 30)), vocab_size=vocab)
  return LoadedModel(model.module, model.variables, str(tmp_path)), docs, tok


def test_a_subword_tokenizer_divides_by_utf8_bytes(tmp_path):
  rng = np.random.default_rng()
  model, docs, tok = _subword_model(tmp_path, rng)
  encoder = make_encoder("auto", model)
  assert encoder.name == str(tmp_path)
  windows = domain_windows(docs, encoder, 12, 4)
  got = bits_per_byte(model, windows, batch_size=4)
  english = "\n\n".join(d.text for d in docs if d.domain == "english")
  ids = tok.encode(english).ids
  np.testing.assert_array_equal(windows["english"][0][0], ids[:13])
  nats, num_bytes, _, _ = _reference(model, windows["english"][0],
                                     len(english.encode("utf-8")) / len(ids))
  assert got["bpb"]["english"] == pytest.approx(nats / num_bytes / math.log(2), rel=1e-5)
  with pytest.raises(ConfigError, match=r"^tokenizer: token ids must be in \[0, \d+\)"):
    bits_per_byte(random_model(vocab_size=64), windows, 4)  # a vocab its ids do not fit


def test_empty_or_too_short_data_is_refused(tmp_path, model):
  empty = tmp_path / "empty.jsonl"
  empty.write_text("")
  few = tmp_path / "few.jsonl"
  few.write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(3)))
  files = lambda path, **kw: EvalConfig(data=DataConfig(sources=("files",), files=(str(path),)),
                                        tasks=(), **kw)
  cases = [(files(empty), r"^data\.sources: no documents were loaded"),
           (files(few), r"^split: the validation split has no documents"),
           (files(few, split="all"), r"^data: the user text \(\d+ tokens\) is shorter")]
  for config, message in cases:
    with pytest.raises(ConfigError, match=message) as error:
      evaluate(model, config)
    assert "\n" not in str(error.value) and "Fix: " in str(error.value)
  assert len(documents(files(few, split="all"))) == 3
