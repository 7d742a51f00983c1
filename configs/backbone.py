"""Builds the backbone and runs one compiled forward pass; prints its summary.

  python -m lasar_jax.main --config=configs/backbone.py --workdir=workdir
  python -m lasar_jax.main --config=configs/backbone.py --config.model.source=gguf \
      --config.model.checkpoint=smollm2
"""

from lasar_jax.configs import common


def get_config(variant: str = ""):
  """Config of the backbone check."""
  del variant
  config = common.base_config()
  config.stage = "backbone"
  return config
