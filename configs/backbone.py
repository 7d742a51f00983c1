"""Builds the backbone and runs one compiled forward pass; prints its summary.

  python -m lasar_jax.main --config=configs/backbone.py --workdir=workdir
  python -m lasar_jax.main --config=configs/backbone.py --config.model.source=gguf \
      --config.model.checkpoint=smollm2
"""

from lasar_jax.configs import chain


def get_config(variant: str = ""):
  """Config of the backbone check: the chain's settings (`configs/grpo.py`, `lasar_jax.configs.chain`, variant
  'tiny' too), so a stage run after the chain in its workdir reuses the stages it finished."""
  config = chain.get_config(variant)
  config.stage = "backbone"
  return config
