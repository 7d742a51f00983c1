"""Evaluation: Recall@K and NDCG@K (K = 1, 5, 10, 20) on validation and test, most-popular beside.

  python -m lasar_jax.main --config=configs/eval.py --workdir=workdir
  python -m lasar_jax.main --config=configs/eval.py --workdir=workdir --config.reasoning.mode=pause

Scores the final model of the workdir (GRPO if trained, else Stage 2 of the mode) into
WORKDIR/eval/<split>_metrics.json and <split>_predictions.jsonl, and each earlier stage into
WORKDIR/<stage>/eval/.
"""

from lasar_jax.configs import chain


def get_config(variant: str = ""):
  """Config of the evaluation: the chain's settings (`configs/grpo.py`, `lasar_jax.configs.chain`, variant
  'tiny' too), so a stage run after the chain in its workdir reuses the stages it finished."""
  config = chain.get_config(variant)
  config.stage = "eval"
  return config
