"""Builds the backbone a run asks for (`config.model`): a preset from scratch or a checkpoint."""

import dataclasses
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lasar_jax.model import transformer
from lasar_jax.model.config import PRESETS, ModelConfig


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A ready model: its architecture, parameters (device arrays) and tokenizer (None if scratch)."""

  cfg: ModelConfig
  params: dict
  tokenizer: object | None


def build_backbone(model_config: ml_collections.ConfigDict, seed: int) -> Backbone:
  """Random init of `model_config.preset` (seeded), or the checkpoint at `model_config.checkpoint`."""
  runtime = dict(dtype=model_config.dtype, param_dtype=model_config.param_dtype,
                 remat=model_config.remat)
  if model_config.source == "scratch":
    cfg = PRESETS[model_config.preset].replace(**runtime)
    params = nn.meta.unbox(transformer.init_params(cfg, jax.random.key(seed)))
    return Backbone(cfg, params, None)
  from lasar_jax.model.loading import load_pretrained  # local: pulls in transformers

  pretrained = load_pretrained(model_config.checkpoint, **runtime)
  return Backbone(pretrained.cfg, pretrained.params, pretrained.tokenizer)


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
