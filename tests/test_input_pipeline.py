"""The grain input pipeline: determinism, bucket shapes, padding, truncation, resumable state."""

import jax
import ml_collections
import numpy as np
import pytest

from lasar_jax import sharding
from lasar_jax.train import input_pipeline

BUCKETS = (8, 16, 32)
PAD = {"tokens": 63, "loss_mask": 0}


def _examples(n=40, max_len=30, seed=0):
  """Examples of random length with a fixed-size `index` field naming their position."""
  rng = np.random.RandomState(seed)
  out = []
  for i in range(n):
    length = rng.randint(2, max_len + 1)
    out.append({"tokens": rng.randint(0, 60, length).astype(np.int32),
                "loss_mask": (rng.rand(length) > 0.5).astype(np.int32),
                "index": np.array(i, np.int32)})
  return out


def _take(dataset_or_iterator, n):
  it = iter(dataset_or_iterator)
  return [next(it) for _ in range(n)]


def test_same_seed_same_batches_different_seed_different():
  examples = _examples()
  first = _take(input_pipeline.make_batches(examples, 4, BUCKETS, PAD, seed=1), 12)
  again = _take(input_pipeline.make_batches(examples, 4, BUCKETS, PAD, seed=1), 12)
  other = _take(input_pipeline.make_batches(examples, 4, BUCKETS, PAD, seed=2), 12)
  for a, b in zip(first, again):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert any(not np.array_equal(a["index"], b["index"]) for a, b in zip(first, other))


def test_epochs_cover_every_example_and_reshuffle():
  examples = _examples(n=12)
  batches = _take(input_pipeline.make_batches(examples, 4, BUCKETS, PAD, seed=0), 6)
  epoch1 = np.concatenate([b["index"] for b in batches[:3]])
  epoch2 = np.concatenate([b["index"] for b in batches[3:]])
  assert sorted(epoch1) == list(range(12)) and sorted(epoch2) == list(range(12))
  assert not np.array_equal(epoch1, epoch2)


@pytest.mark.parametrize("side", ["right", "left"])
def test_batches_use_smallest_bucket_and_pad_correctly(side):
  examples = _examples()
  batches = _take(input_pipeline.make_batches(examples, 4, BUCKETS, PAD, seed=3,
                                              padding_side=side), 20)
  seen = set()
  for batch in batches:
    length = batch["tokens"].shape[1]
    seen.add(length)
    assert batch["tokens"].shape == batch["loss_mask"].shape == batch["mask"].shape == (4, length)
    assert batch["index"].shape == (4,)
    assert batch["tokens"].dtype == np.int32 and batch["mask"].dtype == bool
    longest = max(len(examples[i]["tokens"]) for i in batch["index"])
    assert length == min(b for b in BUCKETS if b >= longest)
    for row, i in enumerate(batch["index"]):
      ex, mask = examples[i], batch["mask"][row]
      n = len(ex["tokens"])
      assert mask.sum() == n
      real = slice(0, n) if side == "right" else slice(length - n, length)
      assert mask[real].all()
      np.testing.assert_array_equal(batch["tokens"][row][real], ex["tokens"])
      np.testing.assert_array_equal(batch["loss_mask"][row][real], ex["loss_mask"])
      assert (batch["tokens"][row][~mask] == PAD["tokens"]).all()
      assert (batch["loss_mask"][row][~mask] == 0).all()
  assert seen <= set(BUCKETS) and len(seen) >= 2


def test_overlong_example_raises_naming_it_or_is_truncated():
  examples = _examples(n=10, max_len=20)
  examples[7] = {"tokens": np.arange(40, dtype=np.int32), "loss_mask": np.ones(40, np.int32),
                 "index": np.array(7, np.int32)}
  with pytest.raises(ValueError, match="example 7 has 40 positions"):
    input_pipeline.make_batches(examples, 2, BUCKETS, PAD, seed=0)
  batches = _take(input_pipeline.make_batches(examples, 10, BUCKETS, PAD, seed=0,
                                              truncation="left"), 1)
  row = list(batches[0]["index"]).index(7)
  assert batches[0]["tokens"].shape == (10, 32)
  np.testing.assert_array_equal(batches[0]["tokens"][row], np.arange(8, 40))


def test_mismatched_sequence_fields_name_the_example():
  examples = _examples(n=5)
  examples[3]["loss_mask"] = examples[3]["loss_mask"][:-1]
  with pytest.raises(ValueError, match="example 3: sequence fields have different lengths"):
    input_pipeline.make_batches(examples, 2, BUCKETS, PAD, seed=0)


def test_iterator_state_restores_the_position():
  dataset = input_pipeline.make_batches(_examples(), 4, BUCKETS, PAD, seed=5)
  it = iter(dataset)
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(5)]
  fresh = iter(dataset)
  fresh.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(fresh)["index"], want["index"])


def test_shards_are_the_row_blocks_of_the_global_batch():
  examples = _examples(n=16)
  whole = _take(input_pipeline.make_batches(examples, 4, BUCKETS, PAD, 0), 3)
  shards = [_take(input_pipeline.make_batches(examples, 4, BUCKETS, PAD, 0, shard, 2), 3)
            for shard in range(2)]
  for step, batch in enumerate(whole):
    for name, value in batch.items():
      np.testing.assert_array_equal(
          np.concatenate([shards[0][step][name], shards[1][step][name]]), value)


def test_global_batch_splits_the_leading_axis_over_data_and_fsdp():
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2)))
  local = _take(input_pipeline.make_batches(_examples(), 8, BUCKETS, PAD, seed=0), 1)[0]
  batch = input_pipeline.global_batch(local, mesh)
  assert batch["tokens"].shape == local["tokens"].shape
  assert batch["tokens"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"), None)
  assert batch["index"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
  np.testing.assert_array_equal(np.asarray(batch["tokens"]), local["tokens"])
