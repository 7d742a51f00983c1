"""Builds the backbone a run asks for (`config.model`): a preset from scratch or a checkpoint."""

import dataclasses
import hashlib
import pathlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lasar_jax import text_tokenizer
from lasar_jax.model import transformer
from lasar_jax.model.config import PRESETS, ModelConfig


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A ready model: architecture, parameters (device arrays), tokenizer and a stable identity."""

  cfg: ModelConfig
  params: dict
  tokenizer: object
  key: str  # identifies weights + tokenizer, for caches of things computed with this model


def _file_identity(path: str) -> str:
  resolved = pathlib.Path(path).resolve()
  stat = resolved.stat()
  return f"{resolved}:{stat.st_size}:{int(stat.st_mtime)}"


def build_backbone(model_config: ml_collections.ConfigDict, seed: int, workdir=None,
                   corpus=None) -> Backbone:
  """Random init of `model_config.preset`, or the checkpoint at `model_config.checkpoint`.

  A scratch backbone gets a byte-level BPE tokenizer trained on `corpus` (texts of the data set)
  and saved in `workdir/tokenizer`; its vocabulary size comes from that tokenizer, at most the
  preset's.
  """
  runtime = dict(dtype=model_config.dtype, param_dtype=model_config.param_dtype,
                 remat=model_config.remat)
  if model_config.source == "scratch":
    preset = PRESETS[model_config.preset]
    if workdir is None or corpus is None:
      raise ValueError("a scratch backbone needs a workdir and a text corpus for its tokenizer")
    tokenizer = text_tokenizer.load_or_train_tokenizer(
        pathlib.Path(workdir) / "tokenizer", corpus, preset.vocab_size)
    cfg = preset.replace(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, **runtime)
    params = nn.meta.unbox(transformer.init_params(cfg, jax.random.key(seed)))
    vocab_digest = hashlib.sha256(str(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    key = f"scratch:{model_config.preset}:seed{seed}:{cfg.param_dtype}:{vocab_digest[:16]}"
    return Backbone(cfg, params, tokenizer, key)
  from lasar_jax.model.loading import checkpoint_path, load_pretrained  # local: transformers

  pretrained = load_pretrained(model_config.checkpoint, **runtime)
  key = f"{_file_identity(checkpoint_path(model_config.checkpoint))}:{pretrained.cfg.param_dtype}"
  return Backbone(pretrained.cfg, pretrained.params, pretrained.tokenizer, key)


def smoke_forward(backbone: Backbone, batch: int = 2, length: int = 16) -> dict:
  """Compiles and runs one forward pass on dummy tokens; returns timings and the logits' finiteness."""
  cfg = backbone.cfg
  tokens = jnp.zeros((batch, length), jnp.int32)
  mask = jnp.ones((batch, length), bool)
  forward = jax.jit(lambda p, t, m: transformer.Decoder(cfg).apply(
      {"params": p}, t, positions=transformer.positions_from_mask(m), mask=m)[0])
  start = time.perf_counter()
  compiled = forward.lower(backbone.params, tokens, mask).compile()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  logits = jax.block_until_ready(compiled(backbone.params, tokens, mask))
  return {"compile_s": compile_s, "forward_s": time.perf_counter() - start,
          "logits_finite": bool(jnp.isfinite(logits).all())}
