"""Stage 2: SFT of a reasoning mode on top of Stage 1.

  python -m lasar_jax.main --config=configs/sft_latent.py --workdir=workdir
  python -m lasar_jax.main --config=configs/sft_latent.py --workdir=workdir \
      --config.reasoning.mode=pause     # none | pause | cot | latent | lasar

Runs the SID stage and Stage 1 first when the workdir lacks them. `lasar` writes
WORKDIR/stage2/, another mode WORKDIR/stage2_<mode>/.
"""

from lasar_jax.configs import chain


def get_config(variant: str = ""):
  """Config of Stage 2: the chain's settings (`configs/grpo.py`, `lasar_jax.configs.chain`, variant
  'tiny' too), so a stage run after the chain in its workdir reuses the stages it finished."""
  config = chain.get_config(variant)
  config.stage = "stage2"
  return config
