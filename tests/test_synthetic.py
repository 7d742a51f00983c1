"""The synthetic dataset: deterministic, real-looking, and learnable by a simple sequence model."""

import numpy as np

from lasar_jax.configs import common
from lasar_jax.data import prepare, synthetic


def synthetic_config(**knobs):
  """The default data config with some synthetic knobs changed."""
  cfg = common.data_config()
  for key, value in knobs.items():
    setattr(cfg.synthetic, key, value)
  return cfg


def test_same_seed_same_data_other_seed_other_data():
  small = synthetic_config(num_items=120, num_users=80).synthetic
  first, again = synthetic.generate(small, seed=3), synthetic.generate(small, seed=3)
  other = synthetic.generate(small, seed=4)
  assert first == again
  assert first.sequences != other.sequences and first.items != other.items


def test_own_seed_knob_overrides_the_run_seed():
  small = synthetic_config(num_items=120, num_users=80, seed=11).synthetic
  assert synthetic.generate(small, seed=0) == synthetic.generate(small, seed=5)


def test_catalog_text_and_sequence_lengths_look_like_a_shop():
  cfg = synthetic_config()
  raw = synthetic.generate(cfg.synthetic, seed=0)
  assert len(raw.items) == cfg.synthetic.num_items and len(raw.sequences) == cfg.synthetic.num_users
  lengths = [len(items) for items in raw.sequences.values()]
  assert min(lengths) >= cfg.synthetic.min_length and max(lengths) <= cfg.synthetic.max_length
  titles = [item.title for item in raw.items.values()]
  assert len(set(titles)) == len(titles)
  for item in raw.items.values():
    department, subcategory, kind = item.categories
    assert item.brand in synthetic.DEPARTMENTS[department]
    assert (department, subcategory) in synthetic.SUBCATEGORIES
    assert item.title.startswith(item.brand) and kind in item.title
    assert item.brand in item.description and len(item.description) > 30


def recall_ndcg_at_10(scores: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
  """Recall@10 and NDCG@10 of one target per row under item scores [N, I]."""
  top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
  hits = top == targets[:, None]
  return float(hits.any(axis=1).mean()), float((hits / np.log2(np.arange(2, 12))).sum(1).mean())


def test_learnable_item_transitions_beat_most_popular_by_3x():
  data, _ = prepare.build(prepare.load_source(synthetic_config(), seed=0), common.data_config(),
                          key="")
  train, test = data.train, data.test
  last_train = train.histories[np.arange(len(train)), train.lengths - 1]
  transitions = np.zeros((data.num_items, data.num_items))
  np.add.at(transitions, (last_train, train.targets), 1.0)
  popularity = np.bincount(np.concatenate([train.histories[train.histories >= 0], train.targets]),
                           minlength=data.num_items).astype(float)
  last_test = test.histories[np.arange(len(test)), test.lengths - 1]
  popular = recall_ndcg_at_10(np.tile(popularity, (len(test), 1)), test.targets)
  # Transition counts from the last item, ties broken by popularity.
  markov = recall_ndcg_at_10(transitions[last_test] + 1e-3 * popularity / popularity.max(),
                             test.targets)
  print(f"\nsynthetic default, leave-one-out test ({len(test)} users):"
        f"\n  most popular      Recall@10 {popular[0]:.4f}  NDCG@10 {popular[1]:.4f}"
        f"\n  item transitions  Recall@10 {markov[0]:.4f}  NDCG@10 {markov[1]:.4f}")
  assert markov[0] >= 3 * popular[0] and markov[1] >= 3 * popular[1]
