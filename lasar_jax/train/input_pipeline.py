"""Batches of variable-length examples for training: a grain pipeline padded to fixed buckets.

An example is a dict of NumPy arrays. Fields named in `pad_values` are 1-D sequences of one common
length per example (e.g. `tokens`, `loss_mask`); every other field has the same shape in every
example (e.g. a depth label) and is stacked as is. A batch is padded to the smallest bucket length
that holds its longest example, so a jitted step compiles once per bucket, and gains a `mask` field
([B, L] bool, True on real positions): the model takes its RoPE positions from it, so either
padding side works.

The pipeline is `source -> seed/shuffle -> repeat forever -> batch(pad) -> this process's rows
-> iterator` (google/flax `examples/gemma/input_pipeline_grain.py`). Each epoch is shuffled
differently but deterministically from `seed`, and the iterator's position is a small JSON state
(`get_state`/`set_state`) that `lasar_jax.train.checkpoint` saves with the model.

Over several processes, every process forms the same global batch (padded to one bucket length)
and keeps its contiguous block of rows, so the global batch, and the training run, do not depend on
the number of processes, and every process's iterator is at the same position.
"""

import functools
from collections.abc import Mapping, Sequence

import grain
import jax
import numpy as np

from lasar_jax import sharding

MASK_FIELD = "mask"  # name of the added [B, L] bool field of real (non-padding) positions
PADDING_SIDES = ("right", "left")
TRUNCATIONS = ("none", "left", "right")


def example_length(example: Mapping[str, np.ndarray], padded_fields: Sequence[str],
                   index: int) -> int:
  """The common length of an example's sequence fields; ValueError naming `index` if they differ."""
  lengths = {field: len(example[field]) for field in padded_fields}
  if len(set(lengths.values())) > 1:
    raise ValueError(f"example {index}: sequence fields have different lengths {lengths}")
  return next(iter(lengths.values()))


def _check_examples(examples: Sequence[Mapping[str, np.ndarray]], padded_fields: Sequence[str],
                    max_length: int, truncation: str) -> None:
  """Validates every example up front, so a bad one fails before training, not mid-run."""
  if not examples:
    raise ValueError("no examples to batch")
  for index, example in enumerate(examples):
    missing = [f for f in padded_fields if f not in example]
    if missing:
      raise ValueError(f"example {index} lacks the padded field(s) {missing}")
    if MASK_FIELD in example:
      raise ValueError(f"example {index} has a field named {MASK_FIELD!r}, which batching adds")
    length = example_length(example, padded_fields, index)
    if truncation == "none" and length > max_length:
      raise ValueError(f"example {index} has {length} positions, more than the largest bucket "
                       f"{max_length}; add a bucket or set train.truncation to 'left' or 'right'")


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= `length` (`buckets` sorted ascending; `length` fits the largest)."""
  return next(b for b in buckets if b >= length)


def pad_batch(examples: Sequence[Mapping[str, np.ndarray]], *, buckets: Sequence[int],
              pad_values: Mapping[str, int], padding_side: str = "right",
              truncation: str = "none") -> dict[str, np.ndarray]:
  """Stacks examples into one batch padded to a bucket length L.

  Returns the padded fields as [B, L] arrays (their own dtypes), the other fields stacked
  ([B, ...]), and `mask` [B, L] bool marking real positions.
  """
  max_length = buckets[-1]
  if truncation == "left":
    trim = slice(-max_length, None)
  elif truncation == "right":
    trim = slice(0, max_length)
  else:
    trim = slice(None)
  lengths = [min(len(ex[next(iter(pad_values))]), max_length) for ex in examples]
  length_l = bucket_length(max(lengths), buckets)
  batch = {}
  for field, value in pad_values.items():
    dtype = examples[0][field].dtype
    padded_bl = np.full((len(examples), length_l), value, dtype)
    for row, ex in enumerate(examples):
      seq = np.asarray(ex[field])[trim]
      if padding_side == "right":
        padded_bl[row, :len(seq)] = seq
      else:
        padded_bl[row, length_l - len(seq):] = seq
    batch[field] = padded_bl
  positions_l = np.arange(length_l)
  lengths_b1 = np.asarray(lengths)[:, None]
  if padding_side == "right":
    batch[MASK_FIELD] = positions_l[None, :] < lengths_b1  # [B, L]
  else:
    batch[MASK_FIELD] = positions_l[None, :] >= length_l - lengths_b1  # [B, L]
  for field in examples[0]:
    if field not in pad_values:
      batch[field] = np.stack([np.asarray(ex[field]) for ex in examples])
  return batch


def _take_rows(batch: Mapping[str, np.ndarray], rows: slice) -> dict[str, np.ndarray]:
  """The rows `rows` of every field of a batch."""
  return {name: value[rows] for name, value in batch.items()}


def make_batches(examples: Sequence[Mapping[str, np.ndarray]], batch_size: int,
                 buckets: Sequence[int], pad_values: Mapping[str, int], seed: int,
                 shard_index: int = 0, shard_count: int = 1, *, padding_side: str = "right",
                 truncation: str = "none", num_threads: int = 2) -> grain.IterDataset:
  """An endless, shuffled, bucket-padded stream of batches of `batch_size` examples.

  Args:
    examples: the training examples (see the module docstring for their fields).
    batch_size: examples per global batch, over all processes (drop_remainder: shapes are
      static).
    buckets: allowed padded lengths.
    pad_values: padded field name -> padding value (e.g. {'tokens': pad_id, 'loss_mask': 0}).
    seed: shuffle seed; the same seed gives the same batches.
    shard_index, shard_count: this process's rows of every batch: block `shard_index` of
      `shard_count` equal blocks (`batch_size` must divide evenly).
    padding_side: 'right' (default) or 'left'.
    truncation: 'none' raises for an example longer than the largest bucket (naming its index);
      'left' / 'right' cut positions from that side instead.
    num_threads: grain threads preparing batches ahead (0: in the caller's thread).
  Returns:
    A grain IterDataset; `iter()` of it is a checkpointable DatasetIterator.
  """
  buckets = tuple(sorted(int(b) for b in buckets))
  if not pad_values:
    raise ValueError("pad_values must name at least one sequence field to pad")
  if padding_side not in PADDING_SIDES:
    raise ValueError(f"padding_side={padding_side!r} is not one of {PADDING_SIDES}")
  if truncation not in TRUNCATIONS:
    raise ValueError(f"truncation={truncation!r} is not one of {TRUNCATIONS}")
  if not buckets or buckets[0] <= 0:
    raise ValueError(f"buckets must be positive lengths, got {buckets}")
  if batch_size <= 0 or batch_size % shard_count:
    raise ValueError(f"batch_size must be a positive multiple of shard_count={shard_count}, got "
                     f"{batch_size}")
  _check_examples(examples, tuple(pad_values), buckets[-1], truncation)
  collate = functools.partial(pad_batch, buckets=buckets, pad_values=dict(pad_values),
                              padding_side=padding_side, truncation=truncation)
  dataset = grain.MapDataset.source(examples).seed(seed).shuffle().repeat()
  dataset = dataset.batch(batch_size, drop_remainder=True, batch_fn=collate)
  if shard_count > 1:
    rows = batch_size // shard_count
    dataset = dataset.map(functools.partial(_take_rows, rows=slice(shard_index * rows,
                                                                    (shard_index + 1) * rows)))
  return dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                   prefetch_buffer_size=max(2 * num_threads, 1)))


def global_batch(local_batch: Mapping[str, np.ndarray],
                 mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Global arrays from this process's batch: leading axis split over data x fsdp of `mesh`."""
  return {name: jax.make_array_from_process_local_data(
              sharding.batch_sharding(mesh, np.ndim(value)), value)
          for name, value in local_batch.items()}
