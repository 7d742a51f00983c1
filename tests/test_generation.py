"""greedy_generate against a cache-free reference loop, on a tiny random decoder; and end to end
from a saved transformers directory through load_pretrained and the CLI's continue_text."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
import torch
import transformers

from lasar_jax import generate, generation
from lasar_jax.model import convert
from lasar_jax.model.loading import load_pretrained
from lasar_jax.model.config import ModelConfig
from lasar_jax.model.transformer import Decoder

CFG = ModelConfig(architecture="llama", vocab_size=64, hidden_size=32, intermediate_size=64,
                  num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, rms_norm_eps=1e-5)
N = 6  # new tokens per row
# Real tokens of each prompt and where they sit in a width-8 batch: left-padded, right-padded,
# padded on both sides and in the middle.
PROMPTS = ([5, 9, 14, 3, 22], [7, 1, 40], [11, 2, 33, 8, 19, 4])
MASKS = ([0, 0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0, 0], [0, 1, 1, 0, 1, 1, 1, 1])


@pytest.fixture(scope="module")
def params():
  """Random weights, large enough that the greedy choices are decisive (no near-ties)."""
  rng = np.random.default_rng(0)
  tensors = {name: (rng.normal(0.0, 0.3, shape) if len(shape) > 1 else 1.0 + rng.normal(0.0, 0.1, shape))
             for name, shape in convert.expected_hf_shapes(CFG).items()}
  return convert.params_from_hf(tensors, CFG, "random")


@pytest.fixture(scope="module")
def reference(params):
  """Greedy tokens of each prompt alone, from full forward passes without a cache. [B, N]"""
  width = max(map(len, PROMPTS)) + N
  forward = jax.jit(lambda tokens: Decoder(CFG).apply(
      {"params": params}, tokens, positions=jnp.arange(width)[None], mask=jnp.ones_like(tokens, bool))[0])
  rows = []
  for prompt in PROMPTS:
    seq = list(prompt)
    for _ in range(N):
      # Columns after the last real token are junk, invisible to it through the causal mask.
      logits_v = forward(jnp.asarray([seq + [0] * (width - len(seq))]))[0, len(seq) - 1]
      top2 = np.sort(np.asarray(logits_v))[-2:]
      assert top2[1] - top2[0] > 1e-3, "near-tie in the reference: choose another seed"
      seq.append(int(jnp.argmax(logits_v)))
    rows.append(seq[len(prompt):])
  return np.asarray(rows)


def _batch():
  """The prompts laid out according to MASKS (padding holds token 63). [B, T] each"""
  mask = np.asarray(MASKS, bool)
  tokens = np.full(mask.shape, 63, np.int32)
  for row, prompt in enumerate(PROMPTS):
    tokens[row, mask[row]] = prompt
  return tokens, mask


def test_matches_full_forward_loop(params, reference):
  tokens, mask = _batch()
  out = generation.greedy_generate(params, CFG, tokens, mask, N)
  np.testing.assert_array_equal(np.asarray(out), reference)


def test_eos_row_keeps_emitting_eos(params, reference):
  tokens, mask = _batch()
  eos = int(reference[0, 2])  # row 0 stops at its third token; other rows where it first appears
  expected = reference.copy()
  for row in expected:
    hits = np.flatnonzero(row == eos)
    if hits.size:
      row[hits[0]:] = eos
  out = generation.greedy_generate(params, CFG, tokens, mask, N, eos_id=eos)
  np.testing.assert_array_equal(np.asarray(out), expected)


def test_all_rows_done_stops_early_with_eos_fill(params, reference):
  tokens, mask = _batch()
  eos = int(reference[0, 0])
  out = generation.greedy_generate(params, CFG, tokens[:1], mask[:1], N, eos_id=eos)
  np.testing.assert_array_equal(np.asarray(out), [[eos] * N])


def test_one_compile_for_new_prompts_and_eos(params, monkeypatch):
  """The decode step is traced once; other prompts, padding and eos of the same shape reuse it."""
  monkeypatch.setattr(generation, "_decode_step", chex.assert_max_traces(generation._decode_step, n=1))
  tokens, mask = _batch()
  # One more padding column and token: a shape no other test compiled, so the first call traces.
  tokens, mask = np.pad(tokens, ((0, 0), (1, 0))), np.pad(mask, ((0, 0), (1, 0)))
  generation.greedy_generate(params, CFG, tokens, mask, N + 1)
  generation.greedy_generate(params, CFG, tokens[:, ::-1], mask[:, ::-1], N + 1, eos_id=3)
  generation.greedy_generate(params, CFG, (tokens + 1) % 64, np.ones_like(mask), N + 1, eos_id=5)


def _save_word_tokenizer(directory, words):
  """A whitespace word-level tokenizer over `words` (`</s>` and `<unk>` first), saved."""
  backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(
      {w: i for i, w in enumerate(words)}, unk_token="<unk>"))
  backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  backend.decoder = tokenizers.decoders.WordPiece()  # joins words with spaces
  transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>",
                                       eos_token="</s>").save_pretrained(str(directory))


def test_hf_directory_continuation_matches_torch_generate(tmp_path):
  """load_pretrained(HF dir) + continue_text == transformers' greedy generate, decoded."""
  words = ["</s>", "<unk>"] + [f"w{i}" for i in range(2, 64)]
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, initializer_range=0.5,
      tie_word_embeddings=True, eos_token_id=0, bos_token_id=None, pad_token_id=None)).eval()
  model.save_pretrained(str(tmp_path))
  _save_word_tokenizer(tmp_path, words)
  prompt = "w5 w17 w3 w42"
  ids = torch.tensor([[words.index(w) for w in prompt.split()]])
  with torch.no_grad():
    theirs = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                            max_new_tokens=8)[0, ids.shape[1]:].tolist()
  theirs = theirs[:theirs.index(0)] if 0 in theirs else theirs
  assert len(theirs) >= 4, "the reference stops too soon to test much: choose another seed"
  pretrained = load_pretrained(str(tmp_path))
  assert pretrained.cfg.tie_embeddings and pretrained.cfg.eos_token_id == 0
  assert generate.continue_text(pretrained, prompt, 8) == " ".join(words[i] for i in theirs)
