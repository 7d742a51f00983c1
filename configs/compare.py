"""The comparison run: baselines (most-popular, transitions, SASRec) and every reasoning mode on one
dataset, over seeds, scored on the same users; writes WORKDIR/results.md and results.json.

  python -m lasar_jax.main --config=configs/compare.py --workdir=runs/compare_office \
      --config.data.format=lcrec --config.data.path=../shared/data/amazon2014_office \
      --config.data.name=Office_Products
  python -m lasar_jax.main --config=configs/compare.py --workdir=runs/cmp --config.compare.models=sasrec,lasar
  python -m lasar_jax.main --config=configs/compare.py:tiny --workdir=/tmp/cmp_tiny   # smoke check

Each seed is the whole chain with the chain's settings (`lasar_jax.configs.chain`) in
WORKDIR/seed_<s>/; finished work is reused. See `lasar_jax.stages.compare_stage`.
"""

from lasar_jax.configs import chain


def get_config(variant: str = ""):
  """Config of the comparison: the chain's settings (variant 'tiny' too) plus `config.compare`."""
  config = chain.get_config(variant)
  config.stage = "compare"
  if variant == "tiny":
    config.compare.update(seeds=2, beam_widths=(10, 16), bootstrap_resamples=200)
    config.train.buckets = (64, 128, 256)  # cot's rationales are longer than the tiny chain's prompts
    config.baselines.list_length = 16
    config.baselines.sasrec.update(max_epochs=3, batch_size=64, hidden=16, inner=32, max_len=10)
  return config
