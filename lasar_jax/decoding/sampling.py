"""Trie-constrained sampling of Semantic IDs with temperature (GRPO rollouts), inside `jax.jit`.

Shape letters and the slot layout as in `lasar_jax.decoding.beam_search`: the caller hands over
the logits predicting the first SID token and a cache whose next free slot is `cache_index`;
level l's sampled token is fed at slot `cache_index + l`, position `pos_b + l` (l < L'-1).

At level l a row draws code c with probability softmax over the codes the trie allows from its
prefix of `logits[token(l, c)] / temperature` (the temperature-scaled distribution restricted to
valid continuations and renormalized), so every sample is a valid item. For G rollouts of a prompt,
repeat its cache rows G times (`beam_search.repeat_cache`) and give each row its own draw.

Randomness: row b at level l uses `fold_in(fold_in(key, b), l)`, so a row's draws depend on
(key, b) only, not on the batch size or on the other rows.
"""

import functools

import flax
import jax
import jax.numpy as jnp

from lasar_jax.decoding import beam_search as beam_lib
from lasar_jax.model.config import ModelConfig
from lasar_jax.model.transformer import KVCache
from lasar_jax.sid import trie as trie_lib


@flax.struct.dataclass
class SampleResult:
  """What `sample_sids` returns: one sampled SID per row."""

  items: jax.Array  # [B] int32 item index of the sampled SID (always a real item)
  codes: jax.Array  # [B, L'] int32 sampled code per level
  token_ids: jax.Array  # [B, L'] int32 vocabulary id of each sampled code
  # [B, L'] f32 log-prob of each sampled token under the distribution it was drawn from: the
  # temperature-scaled softmax restricted to the trie's allowed codes and renormalized. Their sum
  # is the log-prob of the whole sample.
  logprobs: jax.Array
  # [B, L'] f32 log-prob of each sampled token under the model's plain distribution: temperature
  # 1, softmax over the full vocabulary, no trie mask (what a teacher-forced forward of the same
  # tokens gives, e.g. the old-policy log-probs of a GRPO ratio).
  model_logprobs: jax.Array


@flax.struct.dataclass
class SampleState:
  """Carry of the level loop."""

  cache: KVCache  # [L, B, S, K, H] prompt plus the SID tokens fed so far
  logits_bv: jax.Array  # [B, V] f32 logits predicting each row's next SID token
  nodes_b: jax.Array  # [B] int32 trie node of each row's sampled prefix
  codes_bl: jax.Array  # [B, L'] int32 sampled codes (columns >= the level: 0)
  token_ids_bl: jax.Array  # [B, L'] int32 their token ids (columns >= the level: 0)
  logprobs_bl: jax.Array  # [B, L'] f32 sampling-distribution log-probs (see SampleResult)
  model_logprobs_bl: jax.Array  # [B, L'] f32 plain full-vocabulary log-probs (see SampleResult)


def _draw(state: SampleState, level, row_keys_b: jax.Array, trie: trie_lib.SidTrie,
          table_lc: jax.Array, temperature: jax.Array, forced_bl: jax.Array | None) -> SampleState:
  """Samples level `level`'s code of every row (or takes `forced_bl[:, level]`) and records it
  (cache and logits untouched)."""
  tokens_c = table_lc[level]
  allowed_bc = trie_lib.allowed_mask(trie, state.nodes_b)
  logq_bc = beam_lib.code_log_probs(state.logits_bv / temperature, tokens_c, allowed_bc,
                                    renormalize=True)
  if forced_bl is None:
    keys_b = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys_b, level)
    code_b = jax.vmap(jax.random.categorical)(keys_b, logq_bc).astype(jnp.int32)
  else:
    code_b = forced_bl[:, level].astype(jnp.int32)
  token_b = tokens_c[code_b]
  model_logp_b = (jnp.take_along_axis(state.logits_bv, token_b[:, None], axis=1)[:, 0]
                  - jax.nn.logsumexp(state.logits_bv, axis=-1))
  return state.replace(
      nodes_b=trie_lib.advance(trie, state.nodes_b, code_b),
      codes_bl=state.codes_bl.at[:, level].set(code_b),
      token_ids_bl=state.token_ids_bl.at[:, level].set(token_b),
      logprobs_bl=state.logprobs_bl.at[:, level].set(
          jnp.take_along_axis(logq_bc, code_b[:, None], axis=1)[:, 0]),
      model_logprobs_bl=state.model_logprobs_bl.at[:, level].set(model_logp_b))


@functools.partial(jax.jit, static_argnames="cfg")
def _sample(params, cfg: ModelConfig, first_logits_bv, cache: KVCache, cache_index, pos_b,
            trie: trie_lib.SidTrie, code_token_ids, key, temperature,
            forced_bl: jax.Array | None = None) -> SampleResult:
  """`sample_sids` after the argument checks (temperature traced: no recompile per value), or
  with `forced_bl` [B, L'] the walk down those codes instead of drawn ones (`key` unused)."""
  depth = trie.depth
  table_lc = beam_lib.code_table(trie, code_token_ids)
  b = first_logits_bv.shape[0]
  row_keys_b = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(b))
  pos_b = jnp.asarray(pos_b, jnp.int32)
  zeros_bl = jnp.zeros((b, depth), jnp.int32)
  state = SampleState(
      cache=cache, logits_bv=first_logits_bv.astype(jnp.float32),
      nodes_b=jnp.full((b,), trie_lib.ROOT, jnp.int32), codes_bl=zeros_bl, token_ids_bl=zeros_bl,
      logprobs_bl=zeros_bl.astype(jnp.float32), model_logprobs_bl=zeros_bl.astype(jnp.float32))

  def level_step(level, state: SampleState) -> SampleState:
    state = _draw(state, level, row_keys_b, trie, table_lc, temperature, forced_bl)
    logits_bv, cache = beam_lib.feed_tokens(params, cfg, state.cache, state.token_ids_bl[:, level],
                                            pos_b + level, cache_index + level)
    return state.replace(cache=cache, logits_bv=logits_bv)

  state = jax.lax.fori_loop(0, depth - 1, level_step, state)
  state = _draw(state, depth - 1, row_keys_b, trie, table_lc, temperature, forced_bl)
  return SampleResult(items=trie_lib.item_of(trie, state.nodes_b), codes=state.codes_bl,
                      token_ids=state.token_ids_bl, logprobs=state.logprobs_bl,
                      model_logprobs=state.model_logprobs_bl)


def _check(cache: KVCache, cache_index, trie: trie_lib.SidTrie, temperature) -> None:
  """Raises for a concrete temperature <= 0 or a cache without room for the SID tokens."""
  if not isinstance(temperature, jax.core.Tracer) and not float(temperature) > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  beam_lib.check_room(cache, cache_index, trie.depth)


def sample_sids(params, cfg: ModelConfig, first_logits_bv: jax.Array, cache: KVCache, cache_index,
                pos_b: jax.Array, trie: trie_lib.SidTrie, code_token_ids: jax.Array,
                key: jax.Array, temperature=1.0) -> SampleResult:
  """One trie-constrained SID sample per row, at `temperature`.

  Jitted once per (params structure, cfg, shapes, trie depth); the key, the temperature, the
  cache index and every array are traced. Callable inside an outer `jax.jit`.

  Args:
    params: decoder parameters (plain, unboxed pytree).
    cfg: the decoder's ModelConfig.
    first_logits_bv: [B, V] logits predicting the first SID token of each row.
    cache: KVCache of the B rows, with at least `cache_index + L' - 1` slots.
    cache_index: int scalar (may be traced), the first free slot (the same for every row).
    pos_b: [B] int RoPE position of each row's first SID token.
    trie: the SidTrie of valid SIDs (depth L').
    code_token_ids: [L', C] int token id of code c at level l (-1: none).
    key: a PRNG key; row b uses `fold_in(key, b)`.
    temperature: > 0 (float scalar; a concrete value <= 0 raises: there is no greedy mode here,
      use `beam_search` with width 1). A traced value cannot be checked.

  Returns:
    a `SampleResult`.
  """
  _check(cache, cache_index, trie, temperature)
  return _sample(params, cfg, first_logits_bv, cache, cache_index, pos_b, trie, code_token_ids,
                 key, jnp.asarray(temperature, jnp.float32))


def sid_path_log_probs(params, cfg: ModelConfig, first_logits_bv: jax.Array, cache: KVCache,
                       cache_index, pos_b: jax.Array, trie: trie_lib.SidTrie,
                       code_token_ids: jax.Array, codes_bl: jax.Array, temperature=1.0) -> jax.Array:
  """Log-prob of each code of the valid SIDs `codes_bl` [B, L'] under the distribution
  `sample_sids` draws from at `temperature`, given the codes before it (teacher forced through
  the same cache and trie). Their cumulative sums are the log-probs that a sample starts with the
  first 1 .. L' of these codes. Arguments as in `sample_sids`. [B, L'] f32
  """
  _check(cache, cache_index, trie, temperature)
  return _sample(params, cfg, first_logits_bv, cache, cache_index, pos_b, trie, code_token_ids,
                 jax.random.key(0), jnp.asarray(temperature, jnp.float32),
                 jnp.asarray(codes_bl, jnp.int32)).logprobs
