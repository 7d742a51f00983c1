"""Runs a baseline on a workdir's prepared data and scores it exactly like the generative models.

  runner.run(config, workdir, "sasrec")   # -> WORKDIR/baselines/sasrec/

Each baseline ranks `config.baselines.list_length` items for every user of `config.eval.splits`
(the same users, the same targets and the same `lasar_jax.eval.metrics` as
`lasar_jax.evaluation`), and writes `<split>_metrics.json`, `<split>_predictions.jsonl` (source
ids, best first) and `summary.json` into WORKDIR/baselines/<name>/. Nothing a baseline counts or
trains on comes from a held-out target. A finished baseline with the same inputs is reused.
"""

import pathlib
import time

import ml_collections
import numpy as np

from lasar_jax import evaluation, reporting
from lasar_jax.baselines import transition
from lasar_jax.data.prepare import PreparedData
from lasar_jax.eval import metrics as metrics_lib
from lasar_jax.eval import popularity
from lasar_jax.stages import common

NAMES = ("most_popular", "transition", "sasrec")
SUMMARY_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "latency_ms_per_user")


def baseline_dir(workdir: pathlib.Path, name: str) -> pathlib.Path:
  """WORKDIR/baselines/<name>."""
  return pathlib.Path(workdir) / "baselines" / name


def _ranker(name: str, config: ml_collections.ConfigDict, data: PreparedData, out_dir):
  """(rank(split) -> [N, k] item indices, fit summary) of baseline `name`, trained if it learns."""
  k = min(config.baselines.list_length, data.num_items)
  training = data.training_sequences()
  counts = popularity.count_items(training, data.num_items)
  if name == "most_popular":
    ranking = popularity.popularity_ranking(counts, data.num_items, k)
    return lambda split: np.tile(ranking, (len(split), 1)), {}
  if name == "transition":
    cfg = config.baselines.transition
    matrix = transition.transition_counts(training, data.num_items)
    return (lambda split: transition.rank(matrix, counts, split.histories, split.lengths, k,
                                          cfg.last_items, cfg.decay)), {}
  if name == "sasrec":
    from lasar_jax.baselines import sasrec  # local: the counting baselines need no jax
    cfg = config.baselines.sasrec
    params, fit_summary = sasrec.fit(data, cfg, config.seed, out_dir)
    return (lambda split: sasrec.rank(params, cfg, data.num_items, split, k,
                                      cfg.eval_batch_size)), fit_summary
  raise ValueError(f"unknown baseline {name!r}; known: {', '.join(NAMES)}")


def _split_head(split, max_users: int):
  """The first `max_users` samples of `split` (all when 0), as `evaluation` scores them."""
  return split if max_users <= 0 else split.subset(np.arange(min(max_users, len(split))))


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path, name: str) -> dict:
  """Fits (if it learns), ranks and scores baseline `name` on every split of `config.eval.splits`;
  returns its summary (reused when finished with the same inputs)."""
  if name not in NAMES:
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(NAMES)}")
  data = common.prepared_data(config, workdir)
  out_dir = baseline_dir(workdir, name)
  own = config.baselines[name] if name in config.baselines else {}
  key = common.fingerprint(data.stats["fingerprint"], name, own, config.baselines.list_length,
                           config.eval.splits, config.eval.ks, config.eval.max_users,
                           config.seed if name == "sasrec" else None)
  done = common.finished_summary(out_dir, key)
  if done is not None:
    reporting.say(f"reusing baseline {name} in {out_dir}")
    return done
  began = time.perf_counter()
  rank_split, fit_summary = _ranker(name, config, data, out_dir)
  summary = {"model": name, **fit_summary, "train_wall_s": time.perf_counter() - began}
  for split_name in config.eval.splits:
    split = _split_head(data.split(split_name), config.eval.max_users)
    if name == "sasrec":
      rank_split(split)  # compiles: the latency is that of the compiled ranking
    ranked_began = time.perf_counter()
    items_nk = rank_split(split)
    latency = 1e3 * (time.perf_counter() - ranked_began) / max(len(split), 1)
    split_metrics = metrics_lib.ranking_metrics(items_nk, split.targets, config.eval.ks)
    split_metrics.update(users=len(split), model=name, list_length=int(items_nk.shape[1]),
                         latency_ms_per_user=latency)
    evaluation.write_split(out_dir, split_name, split_metrics,
                           evaluation.prediction_rows(data, split.users, items_nk))
    summary.update({f"{split_name}_{k}": v for k, v in split_metrics.items()
                    if k in SUMMARY_METRICS})
  summary["fingerprint"] = key
  common.write_summary(out_dir, summary)
  return summary
