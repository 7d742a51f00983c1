"""Stage `sid`: item text -> backbone embeddings -> Semantic IDs, written to WORKDIR/sid/.

Outputs: `sids.json` (source item id -> list of codes), `codes.npy` ([I, L'] int32 by item index),
`stats.json` (num_items, collision_rate, unique_ratio, usage_per_level, ...), and the
`manifest.json` of the first two. A finished stage with the same inputs (data, backbone, sid
config, seed) and its files intact is reused.
"""

import hashlib
import json
import pathlib

import ml_collections
import numpy as np

from lasar_jax import atomic, distributed, item_embeddings, reporting, sid
from lasar_jax.stages import common

SUMMARY_KEYS = ("num_items", "collision_rate", "unique_ratio", "levels", "codebook_sizes")


def fingerprint(config: ml_collections.ConfigDict, data_key: str, model_key: str) -> str:
  """Identity of this stage's inputs."""
  payload = json.dumps([data_key, model_key, config.sid.to_dict(), config.seed], sort_keys=True)
  return hashlib.sha256(payload.encode()).hexdigest()[:24]


def load_codes(workdir: pathlib.Path) -> np.ndarray:
  """Codes [I, L'] int32 of a finished sid stage, by item index."""
  return np.load(pathlib.Path(workdir) / "sid" / "codes.npy")


def summarize(stats: dict) -> dict:
  """The headline figures of the stage, with per-level usage flattened."""
  summary = {k: stats[k] for k in SUMMARY_KEYS + ("fingerprint",) if k in stats}
  for level, usage in enumerate(stats.get("usage_per_level", [])):
    summary[f"level{level}_codes_used"] = (f"{usage['used_fraction']:.3f} "
                                           f"(perplexity {usage['perplexity']:.1f})")
  return summary


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Computes (or reuses) the Semantic IDs of the run's items (process 0 computes them, the
  others then reuse its files)."""
  data = common.prepared_data(config, workdir)
  model = common.text_backbone(config, workdir, data)
  return distributed.primary_first("sid", lambda: _fit_or_reuse(config, workdir, data, model))


def _fit_or_reuse(config, workdir, data, model) -> dict:
  """The stage's work on one process: reuses finished SIDs of the same inputs or fits them."""
  out_dir = workdir / "sid"
  key = fingerprint(config, data.stats["fingerprint"], model.key)
  stats_path = out_dir / "stats.json"
  stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
  if stats.get("fingerprint") == key and common.intact(out_dir):
    reporting.say(f"reusing Semantic IDs in {out_dir}")
    return summarize(stats)
  texts = [str(t) for t in data.item_texts]
  embeddings = item_embeddings.cached_embed_texts(
      workdir / "cache" / "item_embeddings", model.key, model.cfg, model.params, model.tokenizer,
      texts, max_length=config.sid.embed_max_length, batch_size=config.sid.embed_batch_size)
  codes, stats = sid.fit_sids(embeddings, config.sid, config.seed)
  stats = {**stats, "fingerprint": key, "embedding_model": model.key}
  atomic.save_npy(out_dir / "codes.npy", codes.astype(np.int32))
  atomic.write_json(out_dir / "sids.json",
                    {str(item): [int(c) for c in row] for item, row in zip(data.item_ids, codes)})
  common.write_manifest(out_dir)
  atomic.write_json(stats_path, stats)  # written last: its fingerprint marks the stage complete
  return summarize(stats)
