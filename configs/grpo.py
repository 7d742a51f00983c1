"""The end-to-end job: data, Semantic IDs, SFT stages, GRPO and evaluation, in one command.

  python -m lasar_jax.main --config=configs/grpo.py --workdir=workdir
  python -m lasar_jax.main --config=configs/grpo.py:tiny --workdir=/tmp/tiny   # smoke check
  python -m lasar_jax.main --config=configs/grpo.py --config.data.format=lcrec \
      --config.data.path=../shared/data/amazon2014_office --config.data.name=Office_Products

Stages finished in the workdir are reused; the chain is `lasar_jax.pipeline.CHAIN`. Step counts
are sized for a laptop CPU; raise them for real runs (`--config.sft.stage1_steps=...`,
`--config.reasoning.stage2_steps=...`). The settings live in `lasar_jax.configs.chain`.
"""

from lasar_jax.configs import chain


def get_config(variant: str = ""):
  """Config of the end-to-end job; `configs/grpo.py:tiny` is the smallest variant."""
  return chain.get_config(variant)
