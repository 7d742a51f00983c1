"""Stage 1, SID grounding: multi-task SFT (history -> SID, title <-> SID), loss on responses only.

  python -m lasar_jax.main --config=configs/sft_ground.py --workdir=workdir
  python -m lasar_jax.main --config=configs/sft_ground.py --workdir=workdir --config.sft.stage1_steps=2000

Runs the SID stage first when the workdir does not have it yet. Writes WORKDIR/stage1/.
"""

from lasar_jax.configs import chain


def get_config(variant: str = ""):
  """Config of Stage 1: the chain's settings (`configs/grpo.py`, `lasar_jax.configs.chain`, variant
  'tiny' too), so a stage run after the chain in its workdir reuses the stages it finished."""
  config = chain.get_config(variant)
  config.stage = "stage1"
  return config
