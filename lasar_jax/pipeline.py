"""Runs the stage a config names, or the whole chain for `grpo`; each stage writes WORKDIR/<stage>/.

A stage whose outputs are already complete in the workdir is reused, not recomputed, so a chain
can be resumed with the same command.
"""

import contextlib
import pathlib

import ml_collections

from lasar_jax import distributed, reporting, workdir_lock
from lasar_jax.configs import validate
from lasar_jax.stages import (backbone_stage, compare_stage, eval_stage, grpo_stage, ground_stage,
                              latent_stage, sid_stage)


# Stage name -> function(config, workdir) -> summary dict.
STAGES = {
    "backbone": backbone_stage.run,
    "sid": sid_stage.run,
    "stage1": ground_stage.run,
    "stage2": latent_stage.run,
    "grpo": grpo_stage.run,
    "eval": eval_stage.run,
    "compare": compare_stage.run,
}
# What the end-to-end job runs, in order (grows as stages are added).
CHAIN = ("sid", "stage1", "stage2", "grpo", "eval")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, dict]:
  """Runs `config.stage` (or, for 'chain', every stage of CHAIN) and prints a summary table."""
  names = CHAIN if config.stage == "chain" else (config.stage,)
  unknown = [n for n in names if n not in STAGES]
  if unknown:
    raise validate.ConfigError(f"config.stage={config.stage!r}: unknown stage {unknown[0]!r}; "
                               f"known: {', '.join(list(STAGES) + ['chain'])}")
  validate.validate(config)
  validate.check_workdir(workdir)
  validate.check_devices(config)
  workdir = pathlib.Path(workdir).resolve()  # orbax needs absolute checkpoint paths
  workdir.mkdir(parents=True, exist_ok=True)
  summaries = {}
  with workdir_lock.hold(workdir) if distributed.is_primary() else contextlib.nullcontext():
    for name in names:
      summaries[name] = STAGES[name](config, workdir)
      if name == "sid" and "grpo" in names:  # a GRPO setting the SIDs rule out fails early
        grpo_stage.check_prefix_credit(config, workdir)
  for name, summary in summaries.items():
    reporting.print_table(f"{name} ({workdir})", summary)
  return summaries
