"""Token sequences of the SFT tasks, assembled from pre-tokenized pieces (no per-sample tokenizing).

Every example is a dict of 1-D int32 arrays: `tokens` (prompt then response) and `loss_mask`
(True on response tokens: the loss is on the response only). Prompts list the history as SIDs,
most recent last (METHOD section 4), optionally with titles.
"""

import dataclasses

import numpy as np

from lasar_jax.sft.rec_vocab import RecVocab

HISTORY_PREFIX = "The user bought, oldest first:"
HISTORY_SUFFIX = " Next item:"
ITEM_SEPARATOR = ","
TITLE_PREFIX = "Item:"
TITLE_SUFFIX = " Its ID:"
SID_PREFIX = "Item"
SID_SUFFIX = " is titled:"


@dataclasses.dataclass(frozen=True)
class PromptPieces:
  """Token ids of the fixed text pieces and of every item's title, for one tokenizer."""

  history_prefix: np.ndarray  # [n] ids of HISTORY_PREFIX
  history_suffix: np.ndarray  # [n] ids of HISTORY_SUFFIX
  item_separator: np.ndarray  # [n] ids between history items
  title_prefix: np.ndarray  # [n] ids of TITLE_PREFIX
  title_suffix: np.ndarray  # [n] ids of TITLE_SUFFIX
  sid_prefix: np.ndarray  # [n] ids of SID_PREFIX
  sid_suffix: np.ndarray  # [n] ids of SID_SUFFIX
  titles: tuple[np.ndarray, ...]  # [I] ids of each item's title (" " + title, truncated)


def _ids(tokenizer, text: str) -> np.ndarray:
  return np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], np.int32)


def make_pieces(tokenizer, titles, max_title_tokens: int) -> PromptPieces:
  """Tokenizes the fixed pieces once and every title once (batched)."""
  title_ids = tokenizer([" " + str(t) for t in titles], add_special_tokens=False)["input_ids"]
  return PromptPieces(
      history_prefix=_ids(tokenizer, HISTORY_PREFIX), history_suffix=_ids(tokenizer, HISTORY_SUFFIX),
      item_separator=_ids(tokenizer, ITEM_SEPARATOR), title_prefix=_ids(tokenizer, TITLE_PREFIX),
      title_suffix=_ids(tokenizer, TITLE_SUFFIX), sid_prefix=_ids(tokenizer, SID_PREFIX),
      sid_suffix=_ids(tokenizer, SID_SUFFIX),
      titles=tuple(np.asarray(t[:max_title_tokens], np.int32) for t in title_ids))


def history_prompt(history: np.ndarray, pieces: PromptPieces, vocab: RecVocab,
                   with_titles: bool = False) -> np.ndarray:
  """Prompt listing `history` (item indices, oldest first) as SIDs, then 'Next item:'. [n] int32"""
  parts = [pieces.history_prefix]
  for position, item in enumerate(history):
    if position:
      parts.append(pieces.item_separator)
    if with_titles:
      parts.append(pieces.titles[item])
    parts.append(vocab.item_tokens[item])
  parts.append(pieces.history_suffix)
  return np.concatenate(parts).astype(np.int32)


def sid_response(item: int, vocab: RecVocab) -> np.ndarray:
  """The response of a recommendation: the item's SID tokens then end-of-sequence. [L'+1] int32"""
  return np.append(vocab.item_tokens[item], vocab.eos_id).astype(np.int32)


def example(prompt: np.ndarray, response: np.ndarray) -> dict[str, np.ndarray]:
  """An SFT example: tokens = prompt + response, loss on the response tokens only."""
  tokens = np.concatenate([prompt, response]).astype(np.int32)
  loss_mask = np.concatenate([np.zeros(len(prompt), bool), np.ones(len(response), bool)])
  return {"tokens": tokens, "loss_mask": loss_mask}


def history_to_sid(history, target: int, pieces, vocab, with_titles: bool = False) -> dict:
  """Task: the history (as SIDs, optionally with titles) -> the next item's SID."""
  return example(history_prompt(history, pieces, vocab, with_titles), sid_response(target, vocab))


def title_to_sid(item: int, pieces: PromptPieces, vocab: RecVocab) -> dict:
  """Task: an item's title -> its SID (grounds SID tokens in item text)."""
  prompt = np.concatenate([pieces.title_prefix, pieces.titles[item], pieces.title_suffix])
  return example(prompt, sid_response(item, vocab))


def sid_to_title(item: int, pieces: PromptPieces, vocab: RecVocab) -> dict:
  """Task: an item's SID -> its title."""
  prompt = np.concatenate([pieces.sid_prefix, vocab.item_tokens[item], pieces.sid_suffix])
  return example(prompt, np.append(pieces.titles[item], vocab.eos_id))
