"""Trie-constrained beam search over Semantic IDs, inside one `jax.jit`.

Shape letters as in `lasar_jax.model.transformer` and `lasar_jax.sid.trie`, plus W beams per row,
N = B * W decoder rows (row b's beams are rows b*W .. b*W + W-1), C codes per level (the trie's
child-table width) and L' SID levels (the trie depth).

Starting point: the caller has run the prompt (and any pause tokens, latent steps, `<eot>` or
reasoning text) into a KV cache, and holds the logits that predict the first SID token. Level l's
chosen token is then fed at slot `cache_index + l` and RoPE position `pos_b + l` of its row, for
l = 0 .. L'-2 (the last level's token is never fed), so the cache needs
`cache_index + L' - 1` slots at least.

Scores. A beam's score is the sum over its levels of log p(token), with p the softmax of the
logits over the FULL vocabulary (temperature 1): the model's own probability of emitting that SID,
so that scores of different SIDs, rows and models are comparable and the ranking is that of the
model's unconstrained likelihood restricted to real items. Codes the trie does not allow from a
beam's prefix get -inf *after* that log-softmax (so the probability mass the model puts on
non-SID tokens or invalid codes is not redistributed). `renormalize=True` instead takes the
log-softmax over the allowed codes only (the probability under the trie-masked distribution,
the one `sampling.sample_sids` draws from at temperature 1).

Beam search never samples: it is a deterministic function of its inputs. Ties between equal
candidate scores go to the lower flat index `parent_beam * C + code` (the documented behaviour of
`jax.lax.top_k`): the better-ranked parent prefix first, then the smaller code.
"""

import functools

import flax
import jax
import jax.numpy as jnp

from lasar_jax.model.config import ModelConfig
from lasar_jax.model.transformer import Decoder, KVCache
from lasar_jax.sid import trie as trie_lib


@flax.struct.dataclass
class BeamResult:
  """What `beam_search` returns, best beam first in each row."""

  items: jax.Array  # [B, W] int32 item index of each beam; -1 where the row has fewer valid SIDs
  codes: jax.Array  # [B, W, L'] int32 SID codes of each beam; -1 on padding beams
  scores: jax.Array  # [B, W] f32 sum of the per-level log-probs; -inf on padding beams


@flax.struct.dataclass
class BeamState:
  """Carry of the level loop; rows of the cache and logits are the N = B * W beams, beam-major
  within each batch row."""

  cache: KVCache  # [L, N, S, K, H] prompt plus the SID tokens fed so far, reordered by parent
  logits_nv: jax.Array  # [N, V] f32 logits predicting each beam's next SID token
  scores_bw: jax.Array  # [B, W] f32 cumulative log-prob of each beam; -inf for dead beams
  nodes_bw: jax.Array  # [B, W] int32 trie node of each beam's prefix; -1 for dead beams
  codes_bwl: jax.Array  # [B, W, L'] int32 codes chosen so far (columns >= the level: 0)


def repeat_cache(cache: KVCache, n: int) -> KVCache:
  """Each row of the cache repeated n times consecutively (row b -> rows b*n .. b*n + n-1)."""
  return KVCache(k=jnp.repeat(cache.k, n, axis=1), v=jnp.repeat(cache.v, n, axis=1),
                 valid=jnp.repeat(cache.valid, n, axis=0))


def take_rows(cache: KVCache, rows_n: jax.Array) -> KVCache:
  """The cache rows `rows_n` [N] (a gather along the batch axis of k, v and valid)."""
  return KVCache(k=jnp.take(cache.k, rows_n, axis=1), v=jnp.take(cache.v, rows_n, axis=1),
                 valid=jnp.take(cache.valid, rows_n, axis=0))


def code_table(trie: trie_lib.SidTrie, code_token_ids: jax.Array) -> jax.Array:
  """The [L', C] token id table cut or padded (with -1) to the trie's width C. [L', C] int32

  Codes past the table have no token and codes past the trie's width are no valid SID, so either
  adjustment drops nothing a real SID uses.
  """
  table_lc = jnp.asarray(code_token_ids, jnp.int32)
  if table_lc.ndim != 2 or table_lc.shape[0] != trie.depth:
    raise ValueError(f"code_token_ids {table_lc.shape} must be [L', C] with L' = trie depth "
                     f"{trie.depth}")
  width = trie.children.shape[1]
  table_lc = table_lc[:, :width]
  return jnp.pad(table_lc, ((0, 0), (0, width - table_lc.shape[1])), constant_values=-1)


def code_log_probs(logits_nv: jax.Array, tokens_c: jax.Array, allowed_nc: jax.Array,
                   renormalize: bool) -> jax.Array:
  """Log-probs of each code's token, -inf where not allowed (or where the code has no token).

  renormalize=False: log-softmax over the full vocabulary; True: over the allowed codes only
  (rows with no allowed code stay all -inf). [N, C] f32
  """
  logits_nv = logits_nv.astype(jnp.float32)
  allowed_nc = allowed_nc & (tokens_c >= 0)[None, :]
  logp_nc = (jnp.take(logits_nv, jnp.maximum(tokens_c, 0), axis=1)
             - jax.nn.logsumexp(logits_nv, axis=-1, keepdims=True))
  logp_nc = jnp.where(allowed_nc, logp_nc, -jnp.inf)
  if renormalize:
    norm_n1 = jax.nn.logsumexp(logp_nc, axis=-1, keepdims=True)  # -inf on rows with none allowed
    logp_nc = jnp.where(allowed_nc, logp_nc - norm_n1, -jnp.inf)
  return logp_nc


def feed_tokens(params, cfg: ModelConfig, cache: KVCache, tokens_n: jax.Array,
                positions_n: jax.Array, slot) -> tuple[jax.Array, KVCache]:
  """One decoder step: token n goes to `slot` at its position. Returns (logits [N, V] f32, cache).

  Negative token ids (codes without a token, only on dead rows) are fed as token 0.
  """
  tokens_n1 = jnp.maximum(tokens_n, 0)[:, None]
  logits_n1v, _, cache = Decoder(cfg).apply(
      {"params": params}, tokens_n1, positions=positions_n[:, None],
      mask=jnp.ones_like(tokens_n1, bool), cache=cache, cache_index=slot)
  return logits_n1v[:, 0], cache


def check_room(cache: KVCache, cache_index, depth: int) -> None:
  """Raises unless the cache has slots for the L' - 1 fed SID tokens after `cache_index` (checked
  when `cache_index` is concrete; a traced one is only checked against the cache length)."""
  slots, needed = cache.valid.shape[1], depth - 1
  first = 0 if isinstance(cache_index, jax.core.Tracer) else int(cache_index)
  if first + needed > slots:
    raise ValueError(f"the cache holds {slots} slots: {needed} SID tokens from slot {first} do "
                     "not fit")


def _initial_state(first_logits_bv: jax.Array, cache: KVCache, depth: int,
                   beam_width: int) -> BeamState:
  """W copies of every row, only beam 0 live (the others -inf), so level 0 yields no duplicates."""
  b = first_logits_bv.shape[0]
  live_w = jnp.arange(beam_width) == 0
  return BeamState(
      cache=repeat_cache(cache, beam_width),
      logits_nv=jnp.repeat(first_logits_bv.astype(jnp.float32), beam_width, axis=0),
      scores_bw=jnp.where(live_w, 0.0, -jnp.inf)[None, :].repeat(b, axis=0),
      nodes_bw=jnp.where(live_w, trie_lib.ROOT, -1)[None, :].repeat(b, axis=0).astype(jnp.int32),
      codes_bwl=jnp.zeros((b, beam_width, depth), jnp.int32))


def _select(state: BeamState, level, trie: trie_lib.SidTrie, table_lc: jax.Array,
            renormalize: bool) -> tuple[BeamState, jax.Array, jax.Array]:
  """Extends every beam by every allowed code and keeps the top W of the W * C candidates.

  Returns (state with new scores, nodes and codes (cache and logits untouched), parent beam of
  each new beam [B, W] int32, its code [B, W] int32).
  """
  b, w = state.scores_bw.shape
  c = table_lc.shape[1]
  allowed_nc = trie_lib.allowed_mask(trie, state.nodes_bw.reshape(-1))
  logp_bwc = code_log_probs(state.logits_nv, table_lc[level], allowed_nc,
                            renormalize).reshape(b, w, c)
  candidates_bm = (state.scores_bw[:, :, None] + logp_bwc).reshape(b, w * c)  # M = W * C
  scores_bw, flat_bw = jax.lax.top_k(candidates_bm, w)  # ties: lower flat index first
  parent_bw, code_bw = flat_bw // c, flat_bw % c
  live_bw = scores_bw > -jnp.inf
  parent_nodes_bw = jnp.take_along_axis(state.nodes_bw, parent_bw, axis=1)
  nodes_bw = jnp.where(live_bw, trie_lib.advance(trie, parent_nodes_bw.reshape(-1),
                                                 code_bw.reshape(-1)).reshape(b, w), -1)
  codes_bwl = jnp.take_along_axis(state.codes_bwl, parent_bw[:, :, None], axis=1)
  codes_bwl = codes_bwl.at[:, :, level].set(code_bw)
  state = state.replace(scores_bw=scores_bw, nodes_bw=nodes_bw, codes_bwl=codes_bwl)
  return state, parent_bw, code_bw


@functools.partial(jax.jit, static_argnames=("cfg", "beam_width", "renormalize"))
def _beam_search(params, cfg: ModelConfig, first_logits_bv, cache: KVCache, cache_index, pos_b,
                 trie: trie_lib.SidTrie, code_token_ids, beam_width: int,
                 renormalize: bool) -> BeamResult:
  """`beam_search` after the argument checks (jitted: one compile per shapes and static args)."""
  depth = trie.depth
  table_lc = code_table(trie, code_token_ids)
  pos_n = jnp.repeat(jnp.asarray(pos_b, jnp.int32), beam_width)  # [N]
  state = _initial_state(first_logits_bv, cache, depth, beam_width)
  first_beam_n = jnp.arange(pos_n.shape[0]) // beam_width * beam_width  # [N] row's beam 0

  def level_step(level, state: BeamState) -> BeamState:
    state, parent_bw, code_bw = _select(state, level, trie, table_lc, renormalize)
    cache = take_rows(state.cache, first_beam_n + parent_bw.reshape(-1))  # reorder by parent
    tokens_n = table_lc[level][code_bw.reshape(-1)]
    logits_nv, cache = feed_tokens(params, cfg, cache, tokens_n, pos_n + level,
                                   cache_index + level)
    return state.replace(cache=cache, logits_nv=logits_nv)

  state = jax.lax.fori_loop(0, depth - 1, level_step, state)
  state, _, _ = _select(state, depth - 1, trie, table_lc, renormalize)
  live_bw = state.nodes_bw >= 0
  return BeamResult(items=trie_lib.item_of(trie, state.nodes_bw),
                    codes=jnp.where(live_bw[:, :, None], state.codes_bwl, -1),
                    scores=state.scores_bw)


def beam_search(params, cfg: ModelConfig, first_logits_bv: jax.Array, cache: KVCache, cache_index,
                pos_b: jax.Array, trie: trie_lib.SidTrie, code_token_ids: jax.Array,
                beam_width: int, renormalize: bool = False) -> BeamResult:
  """Top `beam_width` valid SIDs of each row by beam search over the prefix trie.

  One XLA computation per (params structure, cfg, shapes, trie depth, beam_width, renormalize):
  prompts, cache contents, `cache_index`, positions, trie contents and the code table are traced.
  Callable inside an outer `jax.jit`. The cache is repeated to B * W rows once; each level
  reorders its rows by parent beam. Beams are distinct valid SIDs. When W >= the number of valid
  SIDs nothing is ever pruned, so every SID comes out, in exact score order, and the remaining
  beams are padding (item -1, codes -1, score -inf). See the module docstring for the score and
  the tie-breaking rule.

  Args:
    params: decoder parameters (plain, unboxed pytree).
    cfg: the decoder's ModelConfig.
    first_logits_bv: [B, V] logits predicting the first SID token of each row.
    cache: KVCache of the B rows, with at least `cache_index + L' - 1` slots.
    cache_index: int scalar (may be traced), the first free slot (the same for every row).
    pos_b: [B] int RoPE position of each row's first SID token.
    trie: the SidTrie of valid SIDs (depth L').
    code_token_ids: [L', C] int token id of code c at level l (-1: none), e.g.
      `RecVocab.code_token_ids`.
    beam_width: W >= 1, beams kept per row.
    renormalize: score by the log-softmax over the allowed codes instead of the full vocabulary.

  Returns:
    a `BeamResult`, best beam first.
  """
  if beam_width < 1:
    raise ValueError(f"beam_width must be >= 1, got {beam_width}")
  check_room(cache, cache_index, trie.depth)
  return _beam_search(params, cfg, first_logits_bv, cache, cache_index, pos_b, trie,
                      code_token_ids, beam_width=beam_width, renormalize=renormalize)
