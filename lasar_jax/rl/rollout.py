"""GRPO rollouts (METHOD.md section 4): G sampled recommendations per prompt, in one `jax.jit`.

Shape letters: B prompts, G rollouts per prompt (the group), N = B * G rollout rows, T prompt
columns, L' SID levels, K = K_max. Row n = b * G + g is rollout g of prompt b, so a [N] array
reshapes to [B, G] groups.

Each prompt block (the prompt plus the mode's suffix, `inference.mode_prompt`, right padded) is
prefilled once and its cache repeated G times. Then every rollout row
  1. takes a depth: 'lasar' samples d ~ Categorical(Policy Head(h0)); 'latent' uses its fixed
     depth; the token modes 'none' / 'pause' use 0 ('cot' is not supported: its rationale text
     would have to be sampled and scored too);
  2. runs the mode's reasoning (d latent steps then `<eot>`) from the repeated cache;
  3. samples a SID under the trie constraint at `temperature` (`decoding.sampling.sample_sids`),
     and walks the prompt's target SID through the same distribution
     (`decoding.sampling.sid_path_log_probs`): how likely this rollout's depth made the target.

Randomness: the depths draw from `fold_in(key, 0)`, the SIDs from `fold_in(key, 1)`.
"""

import functools

import flax
import jax
import jax.numpy as jnp

from lasar_jax import inference
from lasar_jax.decoding import beam_search as beam_lib
from lasar_jax.decoding import sampling
from lasar_jax.model.config import ModelConfig
from lasar_jax.reasoning import policy_head
from lasar_jax.sid.trie import SidTrie

SUPPORTED_MODES = ("none", "pause", "latent", "lasar")
BACKBONE = "backbone"  # key of the decoder parameters in the GRPO parameter tree


@flax.struct.dataclass
class Rollout:
  """What `rollout` returns; row n = b * G + g."""

  depth: jax.Array  # [N] int32 latent steps taken (0 in the token modes)
  items: jax.Array  # [N] int32 sampled item (always a real item)
  codes: jax.Array  # [N, L'] int32 SID codes of the sampled item
  sid_tokens: jax.Array  # [N, L'] int32 vocabulary ids of those codes (what the loss scores)
  # [N, L'] f32 log-prob of each SID token under the model's plain distribution (full vocabulary,
  # temperature 1), the distribution the GRPO loss scores with a teacher-forced forward
  model_logprobs: jax.Array
  # [N, L'] f32 log-prob of each code of the prompt's target SID given the target codes before it,
  # under the distribution the SID was sampled from at this row's depth (the expected reward given
  # the depth follows from it: `rewards.expected_sid_reward`)
  target_logprobs: jax.Array


def check_mode(mode: str) -> None:
  """Raises for a reasoning mode GRPO does not support."""
  if mode not in SUPPORTED_MODES:
    raise ValueError(f"GRPO supports the reasoning modes {SUPPORTED_MODES}, not {mode!r} ('cot' "
                     "would need its sampled rationale text scored in the policy loss)")


def split_params(params: dict) -> tuple[dict, dict]:
  """(decoder params, reasoning params: 'projection' and 'policy' where present)."""
  return params[BACKBONE], {k: v for k, v in params.items() if k != BACKBONE}


def _repeat(prefilled: inference.Prefilled, group_size: int) -> inference.Prefilled:
  """Every row of a prefilled prompt block repeated G times consecutively."""
  return inference.Prefilled(
      h0_bd=jnp.repeat(prefilled.h0_bd, group_size, axis=0),
      cache=beam_lib.repeat_cache(prefilled.cache, group_size),
      cache_index=prefilled.cache_index,
      pos_b=jnp.repeat(prefilled.pos_b, group_size, axis=0))


@functools.partial(jax.jit, static_argnames=("cfg", "spec", "group_size"))
def rollout(params: dict, trie: SidTrie, code_token_ids: jax.Array, prompt_bt: jax.Array,
            mask_bt: jax.Array, target_codes_bl: jax.Array, key: jax.Array, temperature, *,
            cfg: ModelConfig, spec: inference.ReasoningSpec, group_size: int) -> Rollout:
  """G rollouts of every prompt with the current policy. One compile per shape.

  Args:
    params: {'backbone': decoder params, 'projection'?: ..., 'policy'?: ...} (plain arrays).
    trie: the SidTrie of the valid SIDs (depth L').
    code_token_ids: [L', C] int token id of code c at level l.
    prompt_bt: [B, T] int prompt blocks with the mode's suffix (`inference.mode_prompt`).
    mask_bt: [B, T] bool, True on real tokens.
    target_codes_bl: [B, L'] int SID codes of each prompt's target item (a valid SID).
    key: PRNG key of this batch of rollouts.
    temperature: > 0, SID sampling temperature (traced: no recompile per value).
    cfg: the decoder's ModelConfig.
    spec: the reasoning spec (mode in `SUPPORTED_MODES`).
    group_size: G.

  Returns:
    a `Rollout` of N = B * G rows.
  """
  check_mode(spec.mode)
  backbone, reasoning_params = split_params(params)
  prefilled = inference.prefill_prompt(backbone, cfg, spec, prompt_bt, mask_bt,
                                       extra_slots=trie.depth)
  prefilled = _repeat(prefilled, group_size)
  depth_n = None
  if spec.mode == "lasar":
    depth_logits_nk = inference.policy_depth(reasoning_params, spec, prefilled.h0_bd)
    depth_n = policy_head.choose_depth(depth_logits_nk, "sample", jax.random.fold_in(key, 0))
  reasoned = inference.reason_from_prefill(backbone, reasoning_params, cfg, spec, prefilled,
                                           depth_n)
  sample = sampling.sample_sids(backbone, cfg, reasoned.first_logits_bv, reasoned.cache,
                                reasoned.cache_index, reasoned.pos_b, trie, code_token_ids,
                                jax.random.fold_in(key, 1), temperature)
  target_logprobs_nl = sampling.sid_path_log_probs(
      backbone, cfg, reasoned.first_logits_bv, reasoned.cache, reasoned.cache_index,
      reasoned.pos_b, trie, code_token_ids, jnp.repeat(target_codes_bl, group_size, axis=0),
      temperature)
  return Rollout(depth=reasoned.depth_b, items=sample.items, codes=sample.codes,
                 sid_tokens=sample.token_ids, model_logprobs=sample.model_logprobs,
                 target_logprobs=target_logprobs_nl)
