"""The recommendation vocabulary: SID tokens and special tokens added to a backbone's tokenizer.

SID level l, code c is the token `sid_token(l, c)` (`<a_17>`, `<b_3>`, ...). `RecVocab` holds the
id tables that prompt building, decoding and the trie need; it is saved beside the tokenizer.
"""

import dataclasses
import json
import pathlib

import numpy as np

from lasar_jax import atomic
from lasar_jax.model import vocab as vocab_lib


@dataclasses.dataclass(frozen=True)
class RecVocab:
  """Token ids of the SID codes and of the special tokens, for one (tokenizer, SID table) pair."""

  code_token_ids: np.ndarray  # [L', C] int32: token id of code c at level l (-1: no such code)
  item_tokens: np.ndarray  # [I, L'] int32: the SID token ids of each item
  bot_id: int  # <bot>: latent or explicit reasoning starts after it
  eot_id: int  # <eot>: the SID follows
  pause_id: int  # <pause>: PauseRec filler
  eos_id: int  # end of a response
  pad_id: int  # padding id (never attended: masks hide it)

  @property
  def sid_length(self) -> int:
    """Tokens per SID (levels, including a disambiguation level)."""
    return self.code_token_ids.shape[0]

  def to_json(self) -> dict:
    """A JSON-able dict (see `from_json`)."""
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
            for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_json(cls, payload: dict) -> "RecVocab":
    """Inverse of `to_json`."""
    arrays = {k: np.asarray(payload[k], np.int32) for k in ("code_token_ids", "item_tokens")}
    return cls(**{**payload, **arrays})

  def save(self, path) -> None:
    """Writes the vocabulary tables as JSON, atomically."""
    atomic.write_json(path, self.to_json())

  @classmethod
  def load(cls, path) -> "RecVocab":
    """Reads a vocabulary written by `save`."""
    return cls.from_json(json.loads(pathlib.Path(path).read_text()))


def codebook_sizes(codes_il: np.ndarray) -> list[int]:
  """Codes needed per level: the largest code used + 1."""
  return [int(c) + 1 for c in codes_il.max(axis=0)]


def new_tokens(codes_il: np.ndarray) -> list[str]:
  """Every token the recommendation vocabulary adds: the used range of codes per level, then the
  special tokens (`<bot>`, `<eot>`, `<pause>`)."""
  sid = [vocab_lib.sid_token(l, c) for l, size in enumerate(codebook_sizes(codes_il))
         for c in range(size)]
  return sid + list(vocab_lib.SPECIAL_TOKENS)


def build_rec_vocab(token_ids: dict[str, int], codes_il: np.ndarray, eos_id: int,
                    pad_id: int) -> RecVocab:
  """Id tables from the token -> id map returned by the vocabulary extension."""
  levels = codes_il.shape[1]
  table = np.full((levels, max(codebook_sizes(codes_il))), -1, np.int32)  # [L', C]
  for (level, code), _ in np.ndenumerate(table):
    table[level, code] = token_ids.get(vocab_lib.sid_token(level, code), -1)
  item_tokens = table[np.arange(levels)[None, :], codes_il]  # [I, L']
  if (item_tokens < 0).any():
    raise ValueError("an item uses a SID code that has no token")
  return RecVocab(code_token_ids=table, item_tokens=item_tokens.astype(np.int32),
                  bot_id=token_ids[vocab_lib.BOT], eot_id=token_ids[vocab_lib.EOT],
                  pause_id=token_ids[vocab_lib.PAUSE], eos_id=int(eos_id), pad_id=int(pad_id))
