"""Runs the stage a config names, or the whole chain for `grpo`; each stage writes WORKDIR/<stage>/.

A stage whose outputs are already complete in the workdir is reused, not recomputed, so a chain
can be resumed with the same command.
"""

import pathlib

import ml_collections

from lasar_jax import atomic
from lasar_jax import backbone as backbone_lib
from lasar_jax import reporting


def run_backbone(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Builds the backbone, runs one compiled forward pass, writes WORKDIR/backbone/summary.json."""
  model = backbone_lib.build_backbone(config.model, config.seed)
  cfg = model.cfg
  summary = {
      "architecture": cfg.architecture, "parameters": cfg.num_params, "layers": cfg.num_layers,
      "hidden_size": cfg.hidden_size, "heads": f"{cfg.num_heads}q/{cfg.num_kv_heads}kv",
      "vocab_size": cfg.vocab_size, "dtype": cfg.dtype, "source": config.model.source,
      **backbone_lib.smoke_forward(model),
  }
  atomic.write_json(workdir / "backbone" / "summary.json", summary)
  return summary


# Stage name -> function(config, workdir) -> summary dict.
STAGES = {
    "backbone": run_backbone,
}
# What the end-to-end job runs, in order (grows as stages are added).
CHAIN = ("backbone",)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, dict]:
  """Runs `config.stage` (or, for 'grpo', every stage of CHAIN) and prints a summary table."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  names = CHAIN if config.stage == "grpo" else (config.stage,)
  unknown = [n for n in names if n not in STAGES]
  if unknown:
    raise ValueError(f"config.stage={config.stage!r}: unknown stage {unknown[0]!r}; "
                     f"known: {', '.join(list(STAGES) + ['grpo'])}")
  summaries = {name: STAGES[name](config, workdir) for name in names}
  for name, summary in summaries.items():
    reporting.print_table(f"{name} ({workdir / name})", summary)
  return summaries
