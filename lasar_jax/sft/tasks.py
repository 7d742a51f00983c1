"""The Stage-1 task mixture (METHOD section 4): which examples, how many of each.

A task weight w is the expected number of copies of each base unit: every training sample for
the history tasks, every item for the item tasks. w = 1.5 gives each unit one copy plus a second
copy for a random half of them.
"""

import ml_collections
import numpy as np

from lasar_jax.data.prepare import PreparedData
from lasar_jax.sft import prompts
from lasar_jax.sft.rec_vocab import RecVocab

TASKS = ("history_to_sid", "title_to_sid", "sid_to_title", "title_history_to_sid")


def copies(weight: float, count: int, rng: np.random.Generator) -> np.ndarray:
  """Indices of `count` units repeated `weight` times on average (fractional part at random)."""
  whole = int(np.floor(weight))
  extra = rng.random(count) < weight - whole
  return np.concatenate([np.tile(np.arange(count), whole), np.flatnonzero(extra)])


def stage1_examples(data: PreparedData, pieces: prompts.PromptPieces, vocab: RecVocab,
                    weights: ml_collections.ConfigDict, seed: int) -> tuple[list[dict], dict]:
  """All Stage-1 examples (unshuffled) and the count per task."""
  unknown = set(weights.keys()) - set(TASKS)
  if unknown:
    raise ValueError(f"config.sft.tasks: unknown task(s) {sorted(unknown)}; known: {TASKS}")
  rng = np.random.default_rng(seed)
  train = data.train
  makers = {
      "history_to_sid": (len(train), lambda i: prompts.history_to_sid(
          train.history(i), train.targets[i], pieces, vocab)),
      "title_history_to_sid": (len(train), lambda i: prompts.history_to_sid(
          train.history(i), train.targets[i], pieces, vocab, with_titles=True)),
      "title_to_sid": (data.num_items, lambda i: prompts.title_to_sid(i, pieces, vocab)),
      "sid_to_title": (data.num_items, lambda i: prompts.sid_to_title(i, pieces, vocab)),
  }
  examples, counts = [], {}
  for task in TASKS:
    count, make = makers[task]
    chosen = copies(float(weights.get(task, 0.0)), count, rng)
    examples += [make(int(i)) for i in chosen]
    counts[task] = len(chosen)
  return examples, counts
