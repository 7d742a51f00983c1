"""RQ-VAE SID fitting speed and quality on ~12k items (CPU scale).

Times one `lasar_jax.sid.fit_sids` call (compilation, k-means codebook init, training, encoding,
collision handling), prints a table and writes a JSON with the SID stats and the training curve.
Epochs, batch size and the rest default to `sid_config()`.

  python benchmarks/rqvae_speed.py                          # structured random [12000, 576]
  python benchmarks/rqvae_speed.py --embeddings=items.npy --epochs=60

Synthetic embeddings are hierarchical clusters (topics, sub-topics, items) in a low-rank latent,
mapped to the width of SmolLM2-135M's hidden state (576) and L2-normalized.
"""

import json
import pathlib
import time

from absl import app, flags
import jax
import numpy as np

from lasar_jax import reporting, sid
from lasar_jax.configs import common

_DEFAULTS = common.sid_config()
_EMBEDDINGS = flags.DEFINE_string("embeddings", "", ".npy item embeddings [I, E]; empty = synthetic.")
_ITEMS = flags.DEFINE_integer("items", 12000, "Synthetic items.")
_DIM = flags.DEFINE_integer("dim", 576, "Synthetic embedding width.")
_EPOCHS = flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "RQ-VAE epochs.")
_BATCH = flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Items per step; <= 0 = full.")
_LEVELS = flags.DEFINE_integer("levels", _DEFAULTS.levels, "Residual levels.")
_CODES = flags.DEFINE_integer("codebook_size", _DEFAULTS.codebook_size, "Codes per level.")
_COLLISION = flags.DEFINE_enum("collision", _DEFAULTS.collision, ["extra_level", "balanced_last"],
                               "Collision handling.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic data and of the fit.")
_OUT = flags.DEFINE_string("out", "benchmarks/results/rqvae_speed.json", "JSON output path.")


def synthetic_embeddings(seed: int, num_items: int, dim: int, rank: int = 64, topics: int = 48,
                         subtopics: int = 12) -> np.ndarray:
  """Hierarchical clusters in a `rank`-dim latent with a decaying spectrum (topic, sub-topic and
  item offsets), mapped linearly to `dim` plus a little isotropic noise; rows L2-normalized.
  [num_items, dim] float32"""
  rng = np.random.default_rng(seed)
  scale_r = (1.0 + np.arange(rank)) ** -0.5
  topic_tr = rng.normal(size=(topics, rank)) * scale_r
  sub_tsr = topic_tr[:, None] + 0.6 * rng.normal(size=(topics, subtopics, rank)) * scale_r
  pick_n = rng.integers(0, topics * subtopics, num_items)
  z_nr = sub_tsr.reshape(-1, rank)[pick_n] + 0.4 * rng.normal(size=(num_items, rank)) * scale_r
  x_nd = z_nr @ rng.normal(size=(rank, dim)) + 0.05 * rng.normal(size=(num_items, dim))
  return (x_nd / np.linalg.norm(x_nd, axis=1, keepdims=True)).astype(np.float32)


def main(argv):
  """Fits SIDs once, prints the table and writes the JSON."""
  del argv
  if _EMBEDDINGS.value:
    x_ne = np.load(_EMBEDDINGS.value).astype(np.float32)
  else:
    x_ne = synthetic_embeddings(_SEED.value, _ITEMS.value, _DIM.value)
  cfg = common.sid_config()
  cfg.method, cfg.collision = "rqvae", _COLLISION.value
  cfg.levels, cfg.codebook_size = _LEVELS.value, _CODES.value
  cfg.epochs, cfg.batch_size = _EPOCHS.value, _BATCH.value

  start = time.perf_counter()
  codes, stats = sid.fit_sids(x_ne, cfg, _SEED.value)
  seconds = time.perf_counter() - start
  history = stats.pop("history")
  mean_predictor = float(np.mean(np.sum((x_ne - x_ne.mean(0)) ** 2, axis=1)))
  rows = {"items": x_ne.shape[0], "dim": x_ne.shape[1], "epochs": cfg.epochs,
          "batch_size": cfg.batch_size, "seconds": seconds,
          "reconstruction_error": history["final_recon"][0],
          "mean_predictor_error": mean_predictor, "collision_rate": stats["collision_rate"],
          "unique_ratio": stats["unique_ratio"], "sid_levels": codes.shape[1]}
  for level, usage in enumerate(stats["usage_per_level"]):
    rows[f"level{level}_used/perplexity"] = (f"{usage['used_fraction']:.3f} / "
                                             f"{usage['perplexity']:.1f}")
  device = jax.devices()[0]
  reporting.print_table(f"RQ-VAE {cfg.levels} x {cfg.codebook_size}, {cfg.collision}; "
                        f"{device.platform}", rows)
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({**rows, "device": str(device), "stats": stats, "history": history},
                            indent=1))
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
