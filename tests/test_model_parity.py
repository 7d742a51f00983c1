"""Logits of our decoder against transformers' Llama / Qwen2 / Qwen3 on tiny random models."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from lasar_jax.model import convert
from lasar_jax.model import transformer as T

VOCAB, LENGTH = 97, 24

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}

# name -> (config class, model class, extra config fields). Tying is architecture-independent in
# our code, so each family is run once; between them they cover tied and untied heads, llama3 RoPE
# scaling, QKV bias (Qwen2), QK-norm and head_dim != hidden / heads (Qwen3).
CASES = {
    "llama_untied": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                     dict(tie_word_embeddings=False)),
    "llama_tied_llama3_rope": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                               dict(tie_word_embeddings=True, rope_parameters=LLAMA3_ROPE)),
    "qwen2_tied": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                   dict(tie_word_embeddings=True)),
    "qwen3_untied": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM,
                     dict(tie_word_embeddings=False, head_dim=16)),
}


def tiny_hf_model(config_cls, model_cls, seed: int = 0, **extra):
  """A tiny random transformers model, weights ~ N(0, 0.2) so layout errors are not hidden."""
  hf_config = config_cls(vocab_size=VOCAB, hidden_size=48, intermediate_size=96,
                         num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                         rms_norm_eps=1e-6, **extra)
  hf_config.architectures = [model_cls.__name__]
  torch.manual_seed(seed)
  model = model_cls(hf_config).eval()
  with torch.no_grad():
    for p in model.parameters():
      torch.nn.init.normal_(p, std=0.2)
  return model


def to_ours(model):
  """(config, params) converted from a transformers model's state dict."""
  cfg = convert.config_from_hf(model.config.to_dict(), "test")
  tensors = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
  return cfg, convert.params_from_hf(tensors, cfg, "test")


@functools.partial(jax.jit, static_argnums=0)
def forward(cfg, params, tokens_bt, mask_bt):
  """Our logits [B, T, V] and hidden [B, T, D] without a cache."""
  logits, hidden, _ = T.Decoder(cfg).apply({"params": params}, tokens_bt,
                                           positions=T.positions_from_mask(mask_bt), mask=mask_bt)
  return logits, hidden


def hf_logits(model, tokens_bt: np.ndarray, mask_bt: np.ndarray | None) -> np.ndarray:
  """transformers logits; with a mask, positions count real tokens only (as `generate` does)."""
  with torch.no_grad():
    if mask_bt is None:
      return model(torch.tensor(tokens_bt)).logits.numpy()
    positions = np.maximum(np.cumsum(mask_bt, axis=1) - 1, 0)
    return model(torch.tensor(tokens_bt), attention_mask=torch.tensor(mask_bt.astype(np.int64)),
                 position_ids=torch.tensor(positions)).logits.numpy()


def padded_batch():
  """Tokens [3, T] and mask: row 0 unpadded, row 1 left-padded by 5, row 2 right-padded by 7."""
  tokens = np.random.RandomState(1).randint(0, VOCAB, (3, LENGTH))
  mask = np.ones((3, LENGTH), bool)
  mask[1, :5] = False
  mask[2, -7:] = False
  return tokens, mask


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case):
  config_cls, model_cls, extra = CASES[case]
  model = tiny_hf_model(config_cls, model_cls, **extra)
  cfg, params = to_ours(model)
  assert cfg.tie_embeddings == extra["tie_word_embeddings"]
  tokens, mask = padded_batch()

  ref = hf_logits(model, tokens, None)  # no padding at all
  ours, _ = forward(cfg, params, jnp.asarray(tokens), jnp.ones(tokens.shape, bool))
  assert np.abs(ref).max() > 1.0  # weights large enough for layout errors to show
  np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4, rtol=0)

  ref = hf_logits(model, tokens, mask)  # left and right padding; only real positions compared
  ours, _ = forward(cfg, params, jnp.asarray(tokens), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(ours)[mask], ref[mask], atol=1e-4, rtol=0)


def test_bf16_compute_close_to_f32():
  model = tiny_hf_model(transformers.Qwen3Config, transformers.Qwen3ForCausalLM,
                        tie_word_embeddings=False, head_dim=16)
  cfg, params = to_ours(model)
  tokens, mask = padded_batch()
  tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
  logits32, _ = forward(cfg, params, tokens, mask)
  logits16, hidden16 = forward(cfg.replace(dtype="bfloat16"), params, tokens, mask)
  assert hidden16.dtype == jnp.bfloat16 and logits16.dtype == jnp.float32
  real32, real16 = np.asarray(logits32)[np.asarray(mask)], np.asarray(logits16)[np.asarray(mask)]
  err = np.abs(real16 - real32).max() / np.abs(real32).max()
  assert 0 < err < 0.05, err  # really computed in bf16, and still close
  assert (real16.argmax(-1) == real32.argmax(-1)).mean() > 0.9
