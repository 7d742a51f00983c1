"""Stage 1, SID grounding: multi-task SFT (history -> SID, title <-> SID), loss on responses only.

  python -m lasar_jax.main --config=configs/sft_ground.py --workdir=workdir
  python -m lasar_jax.main --config=configs/sft_ground.py --workdir=workdir --config.train.steps=2000

Runs the SID stage first when the workdir does not have it yet. Writes WORKDIR/stage1/.
"""

from lasar_jax.configs import common


def get_config(variant: str = ""):
  """Config of Stage 1."""
  del variant
  config = common.base_config()
  config.stage = "stage1"
  return config
