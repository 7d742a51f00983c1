"""Scores a trained recommender on leave-one-out splits (METHOD section 6) and exports its lists.

For each split: every user's history prompt (with the mode's reasoning suffix) runs through
`inference.recommend` in fixed-size, bucket-padded batches; the ranked items are scored with
Recall@K / NDCG@K and written as `<split>_predictions.jsonl` (source user and item ids, best first)
beside `<split>_metrics.json`. A most-popular baseline is scored on the same users.

Over several processes, each ranks a contiguous block of the users, the ranked lists are gathered
on every process, and process 0 writes the files.
"""

import pathlib
import time

import jax
import numpy as np
import tqdm

from lasar_jax import atomic, distributed, inference, item_embeddings
from lasar_jax.data.prepare import PreparedData
from lasar_jax.eval import metrics as metrics_lib
from lasar_jax.eval import popularity
from lasar_jax.sft import prompts
from lasar_jax.sft.rec_model import RecModel
from lasar_jax.sid import trie as trie_lib


def split_prompts(data: PreparedData, split_name: str, rec: RecModel, spec, max_title_tokens: int,
                  max_users: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
  """(prompts with the mode's suffix, user indices, target items) of a split's samples."""
  split = data.split(split_name)
  count = len(split) if max_users <= 0 else min(max_users, len(split))
  pieces = prompts.make_pieces(rec.tokenizer, data.titles, max_title_tokens)
  prompt_list = [inference.mode_prompt(prompts.history_prompt(split.history(i), pieces, rec.vocab),
                                       spec) for i in range(count)]
  return prompt_list, split.users[:count], split.targets[:count]


def rank(rec: RecModel, reasoning_params: dict, spec, trie, prompt_list, beam_width: int,
         batch_size: int, desc: str = "ranking") -> dict:
  """Ranked items [N, W], depths [N], rationale lengths [N] and latency of every prompt.

  Batches are padded to `batch_size` rows and a bucket length
  (`item_embeddings.bucket_length`); each shape compiles once
  (warm-up excluded from the latency, which is wall time per user over the timed batches). With
  several processes, each ranks its block of the prompts sorted by length, on its own devices;
  the results are gathered on every process.
  """
  n = len(prompt_list)
  order = np.argsort([len(p) for p in prompt_list], kind="stable")
  mine = order[distributed.row_slice(jax.process_index(), n)]
  items = np.full((n, beam_width), -1, np.int32)
  depth, rationale = np.zeros(n, np.int32), np.zeros(n, np.int32)
  compiled_shapes, timed_s, timed_users = set(), 0.0, 0
  for start in tqdm.trange(0, len(mine), batch_size, desc=desc, unit="batch",
                           disable=not distributed.is_primary()):
    rows = mine[start:start + batch_size]
    width = item_embeddings.bucket_length(max(len(prompt_list[r]) for r in rows), 1 << 30,
                                          smallest=32)
    tokens = np.full((batch_size, width), rec.vocab.pad_id, np.int32)
    mask = np.zeros((batch_size, width), bool)
    for j, r in enumerate(rows):
      tokens[j, :len(prompt_list[r])] = prompt_list[r]
      mask[j, :len(prompt_list[r])] = True
    mask[len(rows):, 0] = True  # filler rows: one real token, results discarded
    run = lambda: jax.block_until_ready(inference.recommend(  # noqa: E731
        rec.params, reasoning_params, trie, rec.vocab.code_token_ids, tokens, mask, cfg=rec.cfg,
        spec=spec, beam_width=beam_width))
    if width not in compiled_shapes:
      run()
      compiled_shapes.add(width)
    began = time.perf_counter()
    batch_items, _, batch_depth, batch_rationale = run()
    timed_s += time.perf_counter() - began
    timed_users += len(rows)
    items[rows] = np.asarray(batch_items)[:len(rows)]
    depth[rows] = np.asarray(batch_depth)[:len(rows)]
    rationale[rows] = np.asarray(batch_rationale)[:len(rows)]
  if jax.process_count() > 1:
    items[order] = distributed.gather_rows(items[mine], n)
    depth[order] = distributed.gather_rows(depth[mine], n)
    rationale[order] = distributed.gather_rows(rationale[mine], n)
    timed_s, timed_users = distributed.gather_rows(
        np.array([[timed_s, timed_users]]), jax.process_count()).sum(axis=0)
  return {"items": items, "depth": depth, "rationale_tokens": rationale,
          "latency_ms_per_user": float(1e3 * timed_s / max(timed_users, 1))}


def train_item_counts(data: PreparedData) -> np.ndarray:
  """Training interactions per item: each user's sequence without its held-out targets. [I] int64"""
  return popularity.count_items(data.training_sequences(), data.num_items)


def prediction_rows(data: PreparedData, users: np.ndarray, items_nr: np.ndarray) -> list[dict]:
  """One `{"user", "items"}` row per user: source ids, best first, -1 holes dropped."""
  return [{"user": str(data.user_ids[u]), "items": [str(data.item_ids[i]) for i in row if i >= 0]}
          for u, row in zip(users, items_nr)]


def write_split(out_dir, split_name: str, split_metrics: dict, predictions: list[dict]) -> None:
  """Writes `<split>_metrics.json` and `<split>_predictions.jsonl` into `out_dir` (process 0)."""
  out_dir = pathlib.Path(out_dir)

  def write():
    """The split's metrics and ranked lists."""
    atomic.write_json(out_dir / f"{split_name}_metrics.json", split_metrics)
    atomic.write_jsonl(out_dir / f"{split_name}_predictions.jsonl", predictions)

  distributed.write_on_primary(f"eval {split_name}", write)


def evaluate(rec: RecModel, reasoning_params: dict, spec, codes_il: np.ndarray,
             data: PreparedData, eval_config, max_title_tokens: int, out_dir) -> dict:
  """Scores every split of `eval_config.splits`; writes metrics and predictions to `out_dir`."""
  trie = trie_lib.build_trie(codes_il)
  popular = popularity.popularity_ranking(train_item_counts(data), data.num_items,
                                          max(eval_config.ks))
  results = {}
  for split_name in eval_config.splits:
    prompt_list, users, targets = split_prompts(data, split_name, rec, spec, max_title_tokens,
                                                eval_config.max_users)
    ranked = rank(rec, reasoning_params, spec, trie, prompt_list, eval_config.beam_width,
                  eval_config.batch_size, desc=f"eval {split_name}")
    split_metrics = metrics_lib.ranking_metrics(ranked["items"], targets, eval_config.ks)
    split_metrics.update(
        avg_depth=float(ranked["depth"].mean()),
        latency_ms_per_user=ranked["latency_ms_per_user"],
        avg_rationale_tokens=float(ranked["rationale_tokens"].mean()),
        users=len(targets), mode=spec.mode, beam_width=eval_config.beam_width,
        depth_histogram=np.bincount(ranked["depth"], minlength=spec.max_depth + 1).tolist())
    split_metrics["most_popular"] = metrics_lib.ranking_metrics(
        np.tile(popular, (len(targets), 1)), targets, eval_config.ks)
    write_split(out_dir, split_name, split_metrics,
                prediction_rows(data, users, ranked["items"]))
    results[split_name] = split_metrics
  return results
