"""A tiny decoder LM, toy data and loss shared by the training-machinery tests."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache

from lasar_jax import losses
from lasar_jax.configs import common
from lasar_jax.model import transformer
from lasar_jax.model.config import PRESETS

CFG = PRESETS["tiny"].replace(num_layers=2, vocab_size=64)
PAD = {"tokens": 0, "loss_mask": 0}


@pytest.fixture(scope="module", autouse=True)
def compilation_cache_dir(tmp_path_factory):
  """Identical programs (same step, config and shapes) compile once for the whole session."""
  saved = {name: getattr(jax.config, name) for name in
           ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
  compilation_cache.reset_cache()
  compilation_cache.set_cache_dir(str(tmp_path_factory.getbasetemp() / "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  yield
  for name, value in saved.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()


def train_config(**overrides):
  """A short run. eps=1e-3 keeps Adam's first update g / (|g| + eps) smooth in g, so gradients equal
  up to float rounding give parameters equal to 1e-5 (with eps=1e-8 it is about sign(g))."""
  c = common.train_config()
  c.update(dict(steps=30, batch_size=8, buckets=(16, 24), learning_rate=1e-2, eps=1e-3,
                warmup_steps=3, log_every=5, checkpoint_every=10, data_threads=1), **overrides)
  return c


def examples(n=64, seed=0, poison_index=None):
  """Arithmetic sequences (start, stride): every token after the second is predictable."""
  rng = np.random.RandomState(seed)
  out = []
  for i in range(n):
    length = rng.randint(8, 21)
    tokens = (rng.randint(1, 64) + rng.randint(1, 4) * np.arange(length)) % 63 + 1
    out.append({"tokens": tokens.astype(np.int32), "loss_mask": np.ones(length, np.int32),
                "poison": np.array(i == poison_index, np.int32), "index": np.array(i, np.int32)})
  return out


def loss_fn(params, batch, rng):
  """Next-token CE, plus a `penalty` term that is NaN for a batch holding a poisoned example;
  `checksum` identifies the batch's examples."""
  del rng
  tokens, mask = batch["tokens"], batch["mask"]
  logits, _, _ = transformer.Decoder(CFG).apply(
      {"params": params}, tokens, positions=transformer.positions_from_mask(mask), mask=mask)
  ce, aux = losses.token_cross_entropy(logits[:, :-1], tokens[:, 1:],
                                       mask[:, 1:] & (batch["loss_mask"][:, 1:] > 0))
  penalty = jnp.where(jnp.any(batch["poison"] > 0), jnp.nan, 0.0)
  checksum = jnp.sum(batch["index"] * (1 + jnp.arange(batch["index"].shape[0])))  # which examples
  return ce + penalty, {"ce": ce, "penalty": penalty, "accuracy": aux["accuracy"],
                        "checksum": checksum.astype(jnp.float32)}


@functools.cache
def boxed_params():
  """The tiny model's initial parameters, boxed with logical axes (computed once)."""
  return transformer.init_params(CFG, jax.random.key(0))
