"""Stage-2 training examples for each reasoning mode (METHOD section 5).

Token modes (`none`, `pause`, `cot`) give `{tokens, loss_mask}` examples trained by the plain
response loss. Latent modes (`latent`, `lasar`) give `{prompt, suffix, depth}` (+ `anchors`,
`num_anchors` for `lasar`): `prompt` = history prompt + `<bot>` (padded field), `suffix` =
`<eot>` + SID + eos (fixed length), `depth` = latent steps of the row.
"""

import numpy as np

from lasar_jax.sft import prompts
from lasar_jax.sft.rec_vocab import RecVocab

TOKEN_MODES = ("none", "pause", "cot")
LATENT_MODES = ("latent", "lasar")
MODES = TOKEN_MODES + LATENT_MODES


def latent_suffix(target: int, vocab: RecVocab) -> np.ndarray:
  """`<eot>`, the target's SID tokens, eos. [L' + 2] int32"""
  return np.concatenate([[vocab.eot_id], vocab.item_tokens[target], [vocab.eos_id]]).astype(np.int32)


def reasoning_prefix(mode: str, vocab: RecVocab, num_pause: int, steps=None) -> np.ndarray:
  """What a token mode puts between the prompt and the SID: nothing, pauses, or a rationale."""
  if mode == "none":
    return np.zeros(0, np.int32)
  if mode == "pause":
    return np.full(num_pause, vocab.pause_id, np.int32)
  if mode == "cot":
    return np.concatenate([[vocab.bot_id], *steps, [vocab.eot_id]]).astype(np.int32)
  raise ValueError(f"{mode!r} is not a token mode ({TOKEN_MODES})")


def token_mode_example(mode: str, prompt: np.ndarray, target: int, vocab: RecVocab,
                       num_pause: int, steps=None) -> dict:
  """An example of `none`/`pause`/`cot`. The loss covers the rationale (cot) and the SID; pause
  tokens are inputs, not targets."""
  prefix = reasoning_prefix(mode, vocab, num_pause, steps)
  response = prompts.sid_response(target, vocab)
  if mode == "cot":
    return prompts.example(prompt, np.concatenate([prefix, response]))
  example = prompts.example(np.concatenate([prompt, prefix]), response)
  return example


def latent_example(prompt: np.ndarray, target: int, vocab: RecVocab, depth: int,
                   anchors_kd: np.ndarray | None = None, num_anchors: int = 0) -> dict:
  """An example of `latent`/`lasar`."""
  example = {"prompt": np.append(prompt, vocab.bot_id).astype(np.int32),
             "suffix": latent_suffix(target, vocab), "depth": np.int32(depth)}
  if anchors_kd is not None:
    example.update(anchors=anchors_kd.astype(np.float32), num_anchors=np.int32(num_anchors))
  return example
