"""Recommendation inference for every reasoning mode: prompt -> reasoning -> constrained SID decoding.

`reason` runs the mode's reasoning after the prompt and returns the logits that predict the first
SID token together with the KV cache to decode from:
  none    prompt                              -> logits at its last token
  pause   prompt + N <pause>                  -> logits at the last pause
  cot     prompt + <bot> + greedy rationale text up to <eot>  -> logits at <eot>
  latent  prompt + <bot> + d fixed latent steps + <eot>       -> logits at <eot>
  lasar   prompt + <bot> + d latent steps (d from the Policy Head) + <eot> -> logits at <eot>
The host appends the mode's suffix tokens (`<pause>`s, `<bot>`) to each prompt (`mode_prompt`),
so every prompt is one right-padded block; the rest runs inside one jitted function.
"""

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np

from lasar_jax.decoding import beam_search as beam_lib
from lasar_jax.model import transformer
from lasar_jax.model.config import ModelConfig
from lasar_jax.reasoning import latent, policy_head
from lasar_jax.sft.rec_vocab import RecVocab
from lasar_jax.sid.trie import SidTrie


@dataclasses.dataclass(frozen=True)
class ReasoningSpec:
  """Static description of how a model reasons (hashable: a static jit argument)."""

  mode: str  # 'none' | 'pause' | 'cot' | 'latent' | 'lasar'
  max_depth: int = 0  # K_max of the latent scan
  fixed_depth: int = 0  # depth of 'latent'
  num_pause: int = 0  # pause tokens of 'pause'
  max_rationale_tokens: int = 0  # 'cot': longest generated rationale (then <eot> is forced)
  policy_hidden: int = 256  # width of the Policy Head MLP ('lasar')
  bot_id: int = -1  # <bot>
  eot_id: int = -1  # <eot>
  pause_id: int = -1  # <pause>

  @property
  def reasoning_slots(self) -> int:
    """Cache slots the reasoning uses after the prompt block."""
    if self.mode in ("latent", "lasar"):
      return self.max_depth + 1
    if self.mode == "cot":
      return self.max_rationale_tokens + 1
    return 0


def reasoning_spec(reasoning_config, vocab: RecVocab, max_rationale_tokens: int = 0) -> ReasoningSpec:
  """The spec of `config.reasoning` with the vocabulary's special ids."""
  return ReasoningSpec(
      mode=reasoning_config.mode, max_depth=reasoning_config.max_depth,
      fixed_depth=reasoning_config.fixed_depth, num_pause=reasoning_config.num_pause,
      max_rationale_tokens=max_rationale_tokens, policy_hidden=reasoning_config.policy_hidden,
      bot_id=vocab.bot_id, eot_id=vocab.eot_id, pause_id=vocab.pause_id)


def mode_prompt(prompt: np.ndarray, spec: ReasoningSpec) -> np.ndarray:
  """The prompt plus what the mode appends before reasoning (`<pause>`s or `<bot>`). [n] int32"""
  if spec.mode == "pause":
    return np.append(prompt, np.full(spec.num_pause, spec.pause_id)).astype(np.int32)
  if spec.mode in ("cot", "latent", "lasar"):
    return np.append(prompt, spec.bot_id).astype(np.int32)
  return np.asarray(prompt, np.int32)


@flax.struct.dataclass
class Reasoned:
  """The state after reasoning, ready for SID decoding."""

  first_logits_bv: jax.Array  # [B, V] f32 logits predicting the first SID token
  cache: transformer.KVCache  # prompt, reasoning slots (invalid where a row did not use them)
  cache_index: jax.Array  # int32 scalar: first free slot (same for every row)
  pos_b: jax.Array  # [B] int32 RoPE position of each row's next token
  depth_b: jax.Array  # [B] int32 latent steps taken (0 for token modes)
  rationale_tokens_b: jax.Array  # [B] int32 rationale tokens generated ('cot'; else 0)


def _logits(params, cfg: ModelConfig, hidden_bd: jax.Array) -> jax.Array:
  """LM-head logits of one hidden state per row. [B, V] f32"""
  return transformer.Decoder(cfg).apply({"params": params}, hidden_bd[:, None],
                                        method=transformer.Decoder.logits)[:, 0]


def _step(params, cfg: ModelConfig, token_b, mask_b, pos_b, cache, index):
  """Feeds one token per row at slot `index`. Returns (logits [B, V], cache)."""
  logits_b1v, _, cache = transformer.Decoder(cfg).apply(
      {"params": params}, token_b[:, None], positions=pos_b[:, None], mask=mask_b[:, None],
      cache=cache, cache_index=index)
  return logits_b1v[:, 0], cache


def _generate_rationale(params, cfg, spec: ReasoningSpec, first_logits_bv, cache, index, pos_b):
  """Greedy rationale text until each row has fed <eot> (forced after max_rationale_tokens).

  Returns (logits after <eot> [B, V], cache, next index, next positions, tokens generated [B]).
  """
  batch = first_logits_bv.shape[0]

  def cond(state):
    return jnp.any(state["active_b"]) & (state["step"] <= spec.max_rationale_tokens)

  def body(state):
    token_b, active_b = state["token_b"], state["active_b"]
    logits_bv, cache = _step(params, cfg, token_b, active_b, state["pos_b"], state["cache"],
                             index + state["step"])
    fed_eot_b = active_b & (token_b == spec.eot_id)
    out_logits_bv = jnp.where(fed_eot_b[:, None], logits_bv, state["out_logits_bv"])
    generated_b = state["generated_b"] + (active_b & ~fed_eot_b)
    next_b = jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
    next_b = jnp.where(generated_b >= spec.max_rationale_tokens, spec.eot_id, next_b)
    return {"token_b": next_b, "active_b": active_b & ~fed_eot_b, "cache": cache,
            "pos_b": state["pos_b"] + active_b, "generated_b": generated_b,
            "out_logits_bv": out_logits_bv, "step": state["step"] + 1}

  first_b = jnp.argmax(first_logits_bv, axis=-1).astype(jnp.int32)
  state = {"token_b": first_b, "active_b": jnp.ones(batch, bool), "cache": cache, "pos_b": pos_b,
           "generated_b": jnp.zeros(batch, jnp.int32), "out_logits_bv": first_logits_bv,
           "step": jnp.int32(0)}
  state = jax.lax.while_loop(cond, body, state)
  next_index = index + spec.max_rationale_tokens + 1  # every row's slots end here
  return state["out_logits_bv"], state["cache"], next_index, state["pos_b"], state["generated_b"]


def policy_depth(reasoning_params: dict, spec: ReasoningSpec, h0_bd: jax.Array) -> jax.Array:
  """Depth logits of the Policy Head for prompt states. [B, K_max + 1] f32"""
  head = policy_head.PolicyHead(spec.max_depth, spec.policy_hidden)
  return head.apply({"params": reasoning_params["policy"]}, h0_bd)


@flax.struct.dataclass
class Prefilled:
  """The prompt block in a fresh cache, before the mode's reasoning."""

  h0_bd: jax.Array  # [B, D] hidden state at each row's last real prompt token (Policy Head input)
  cache: transformer.KVCache  # prompt in slots 0..T-1; room for the reasoning and `extra_slots`
  cache_index: jax.Array  # int32 scalar: T, the first free slot
  pos_b: jax.Array  # [B] int32 real prompt tokens per row (RoPE position of the next token)


def prefill_prompt(params, cfg: ModelConfig, spec: ReasoningSpec, prompt_bt, mask_bt,
                   extra_slots: int) -> Prefilled:
  """Runs the prompt block into a cache sized for the mode's reasoning plus `extra_slots`."""
  batch, length = prompt_bt.shape
  cache = transformer.init_cache(cfg, batch, length + spec.reasoning_slots + extra_slots)
  h0_bd, pos_b, cache = latent.prefill(params, cfg, prompt_bt, mask_bt, cache)
  return Prefilled(h0_bd, cache, jnp.int32(length), pos_b)


def reason_from_prefill(params, reasoning_params: dict, cfg: ModelConfig, spec: ReasoningSpec,
                        prefilled: Prefilled, depth_b=None) -> Reasoned:
  """The mode's reasoning after `prefill_prompt`. `depth_b` [B] overrides the Policy Head's argmax
  depth in 'lasar' (GRPO samples it from `policy_depth(..., prefilled.h0_bd)`)."""
  h0_bd, cache, pos_b = prefilled.h0_bd, prefilled.cache, prefilled.pos_b
  index = prefilled.cache_index
  batch = h0_bd.shape[0]
  zeros_b = jnp.zeros(batch, jnp.int32)
  if spec.mode in ("none", "pause"):
    return Reasoned(_logits(params, cfg, h0_bd), cache, index, pos_b, zeros_b, zeros_b)
  if spec.mode == "cot":
    logits_bv, cache, index, pos_b, generated_b = _generate_rationale(
        params, cfg, spec, _logits(params, cfg, h0_bd), cache, index, pos_b)
    return Reasoned(logits_bv, cache, index, pos_b, zeros_b, generated_b)
  if depth_b is None:
    depth_b = (jnp.full(batch, spec.fixed_depth, jnp.int32) if spec.mode == "latent" else
               policy_head.choose_depth(policy_depth(reasoning_params, spec, h0_bd)))
  result = latent.run_latent_steps(params, cfg, cache, index, h0_bd, pos_b, depth_b,
                                   spec.max_depth, reasoning_params.get("projection"))
  eot_b = jnp.full(batch, spec.eot_id, jnp.int32)
  logits_bv, cache = _step(params, cfg, eot_b, jnp.ones(batch, bool), result.next_pos_b,
                           result.cache, result.next_cache_index)
  return Reasoned(logits_bv, cache, result.next_cache_index + 1, result.next_pos_b + 1,
                  depth_b.astype(jnp.int32), zeros_b)


def reason(params, reasoning_params: dict, cfg: ModelConfig, spec: ReasoningSpec, prompt_bt,
           mask_bt, extra_slots: int, depth_b=None) -> Reasoned:
  """Runs the prompt block and the mode's reasoning. `extra_slots`: slots left for decoding.

  `depth_b` overrides the Policy Head's argmax depth in 'lasar' (GRPO samples it).
  """
  prefilled = prefill_prompt(params, cfg, spec, prompt_bt, mask_bt, extra_slots)
  return reason_from_prefill(params, reasoning_params, cfg, spec, prefilled, depth_b)


@functools.partial(jax.jit, static_argnames=("cfg", "spec", "beam_width"))
def recommend(params, reasoning_params, trie: SidTrie, code_token_ids, prompt_bt, mask_bt, *,
              cfg: ModelConfig, spec: ReasoningSpec, beam_width: int):
  """Top-`beam_width` items per prompt (best first) with reasoning. One compile per shape.

  Returns (items [B, W] int32 (-1 past the valid SIDs), scores [B, W], depth [B],
  rationale tokens [B]).
  """
  reasoned = reason(params, reasoning_params, cfg, spec, prompt_bt, mask_bt,
                    extra_slots=trie.depth)
  beams = beam_lib.beam_search(params, cfg, reasoned.first_logits_bv, reasoned.cache,
                               reasoned.cache_index, reasoned.pos_b, trie, code_token_ids,
                               beam_width)
  return beams.items, beams.scores, reasoned.depth_b, reasoned.rationale_tokens_b


@flax.struct.dataclass
class LatentTrace:
  """What the latent steps of a prompt produce, for inspection (`trace_latent_steps`)."""

  depth_logits_bk: jax.Array  # [B, K+1] f32 Policy Head logits over depths 0..K_max ('latent': 0 at
  #   fixed_depth, -inf elsewhere)
  depth_b: jax.Array  # [B] int32 depth inference takes (head argmax; fixed_depth for 'latent')
  hidden_bkd: jax.Array  # [B, K, D] hidden state of every one of the K_max steps, all run whatever
  #   depth_b: steps k < depth_b are the ones inference uses, later ones show where the chain goes
  logits_bkv: jax.Array  # [B, K, V] f32 LM-head logits of hidden_bkd (what BKL compares)


@functools.partial(jax.jit, static_argnames=("cfg", "spec"))
def trace_latent_steps(params, reasoning_params: dict, prompt_bt, mask_bt, *, cfg: ModelConfig,
                       spec: ReasoningSpec) -> LatentTrace:
  """Runs all K_max latent steps of 'latent' / 'lasar' prompts (from `mode_prompt`, ending in
  `<bot>`) and returns the Policy Head's depth logits, every step's hidden state and its LM-head
  logits. A step's state does not depend on the depth (each step sees only earlier slots), so the
  first `depth_b` steps are exactly those `recommend` runs."""
  if spec.mode not in ("latent", "lasar"):
    raise ValueError(f"trace_latent_steps needs mode 'latent' or 'lasar', not {spec.mode!r}")
  prefilled = prefill_prompt(params, cfg, spec, prompt_bt, mask_bt, extra_slots=0)
  batch = prompt_bt.shape[0]
  if spec.mode == "lasar":
    depth_logits_bk = policy_depth(reasoning_params, spec, prefilled.h0_bd)
  else:
    one_hot_k = jnp.arange(spec.max_depth + 1) == spec.fixed_depth
    depth_logits_bk = jnp.broadcast_to(jnp.where(one_hot_k, 0.0, -jnp.inf),
                                       (batch, spec.max_depth + 1))
  result = latent.run_latent_steps(params, cfg, prefilled.cache, prefilled.cache_index,
                                   prefilled.h0_bd, prefilled.pos_b,
                                   jnp.full(batch, spec.max_depth, jnp.int32), spec.max_depth,
                                   reasoning_params.get("projection"))
  logits_bkv = transformer.Decoder(cfg).apply({"params": params}, result.hidden_bkd,
                                              method=transformer.Decoder.logits)
  return LatentTrace(depth_logits_bk=depth_logits_bk,
                     depth_b=policy_head.choose_depth(depth_logits_bk),
                     hidden_bkd=result.hidden_bkd, logits_bkv=logits_bkv)
