"""Stage `backbone`: builds the run's backbone and checks one compiled forward pass."""

import pathlib

import ml_collections

from lasar_jax import atomic, distributed
from lasar_jax import backbone as backbone_lib
from lasar_jax.stages import common


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Builds the backbone, runs one compiled forward pass, writes WORKDIR/backbone/summary.json."""
  model = common.text_backbone(config, workdir, common.prepared_data(config, workdir))
  cfg = model.cfg
  summary = {
      "architecture": cfg.architecture, "parameters": cfg.num_params, "layers": cfg.num_layers,
      "hidden_size": cfg.hidden_size, "heads": f"{cfg.num_heads}q/{cfg.num_kv_heads}kv",
      "vocab_size": cfg.vocab_size, "dtype": cfg.dtype, "source": config.model.source,
      **backbone_lib.smoke_forward(model),
  }
  distributed.write_on_primary("backbone summary", lambda: atomic.write_json(
      workdir / "backbone" / "summary.json", summary))
  return summary
