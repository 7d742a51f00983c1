"""Semantic IDs of the items: prepare the data, embed item text with the backbone, quantize.

  python -m lasar_jax.main --config=configs/sid.py --workdir=workdir
  python -m lasar_jax.main --config=configs/sid.py --workdir=runs/office \
      --config.data.format=lcrec --config.data.path=../shared/data/amazon2014_office \
      --config.data.name=Office_Products --config.model.preset=small

Writes WORKDIR/sid/sids.json (source item id -> codes) and WORKDIR/sid/stats.json.
"""

from lasar_jax.configs import chain


def get_config(variant: str = ""):
  """Config of the SID stage: the chain's settings (`configs/grpo.py`, `lasar_jax.configs.chain`, variant
  'tiny' too), so a stage run after the chain in its workdir reuses the stages it finished."""
  config = chain.get_config(variant)
  config.stage = "sid"
  return config
