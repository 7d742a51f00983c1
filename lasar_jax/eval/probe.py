"""A cheap validation score during training: NDCG@10 / Recall@10 on a fixed subset of valid users.

Every training stage calls its probe `eval.probe_times` times, evenly spaced over its updates
(the last at the final update), with the parameters being trained. The subset
(`eval.probe_users`, drawn once with the run's seed) and the ranking (`evaluation.rank`, beam
`eval.beam_width`, batches of `eval.batch_size`) are the final evaluation's, so its compiled
search is reused there; the scores go into that update's row of metrics.jsonl and TensorBoard
(`valid_ndcg@10`, `valid_recall@10`). Test users are never touched.
"""

import dataclasses

import ml_collections
import numpy as np

from lasar_jax import evaluation, inference
from lasar_jax.data.prepare import PreparedData
from lasar_jax.eval import metrics as metrics_lib
from lasar_jax.sft import prompts
from lasar_jax.sft.rec_model import RecModel
from lasar_jax.sid import trie as trie_lib

PROBE_K = 10


def probe_updates(steps: int, times: int) -> frozenset[int]:
  """The updates (1-based) at which a stage of `steps` updates is probed `times` times."""
  if times <= 0 or steps <= 0:
    return frozenset()
  return frozenset(int(np.ceil(steps * i / times)) for i in range(1, times + 1))


def split_params(params) -> tuple[dict, dict]:
  """(backbone params, reasoning params) of a training stage's parameter tree: Stage 1 and token
  modes train the backbone alone, latent modes {'backbone', 'projection'?, 'policy'?}."""
  if isinstance(params, dict) and "backbone" in params:
    return params["backbone"], {k: v for k, v in params.items() if k != "backbone"}
  return params, {}


@dataclasses.dataclass
class Probe:
  """Scores the parameters of a training stage on a fixed subset of validation users."""

  rec: RecModel  # the model being trained (its params are replaced by the probed ones)
  spec: object  # inference.ReasoningSpec of the stage's mode
  trie: object  # SidTrie of the items' SIDs
  prompt_list: list  # [P] prompts of the probed users, with the mode's suffix
  targets: np.ndarray  # [P] their validation targets
  beam_width: int  # constrained beam width (the final evaluation's)
  batch_size: int  # users per inference batch (the final evaluation's)
  updates: frozenset  # updates at which the probe runs

  def due(self, update: int) -> bool:
    """True when `update` is one of the probed updates."""
    return update in self.updates

  def __call__(self, params) -> dict[str, float]:
    """{'valid_ndcg@10', 'valid_recall@10'} of `params` on the probed users."""
    backbone, reasoning_params = split_params(params)
    ranked = evaluation.rank(dataclasses.replace(self.rec, params=backbone), reasoning_params,
                             self.spec, self.trie, self.prompt_list, self.beam_width,
                             self.batch_size, desc="validation probe")
    scores = metrics_lib.ranking_metrics(ranked["items"], self.targets, (PROBE_K,))
    return {f"valid_{name}": value for name, value in scores.items()}


def make_probe(config, data: PreparedData, rec: RecModel, codes_il: np.ndarray, steps: int,
               mode: str) -> Probe | None:
  """The probe of a stage of `steps` updates training a `mode` model (Stage 1: 'none'); None when
  `eval.probe_times` or `eval.probe_users` is 0."""
  e = config.eval
  reasoning = ml_collections.ConfigDict(config.reasoning.to_dict())
  reasoning.mode = mode
  spec = inference.reasoning_spec(reasoning, rec.vocab, e.max_rationale_tokens)
  updates = probe_updates(steps, e.probe_times)
  if not updates or e.probe_users <= 0:
    return None
  valid = data.split("valid")
  count = min(e.probe_users, len(valid))
  chosen = np.sort(np.random.default_rng(config.seed).choice(len(valid), count, replace=False))
  pieces = prompts.make_pieces(rec.tokenizer, data.titles, config.sft.max_title_tokens)
  prompt_list = [inference.mode_prompt(prompts.history_prompt(valid.history(i), pieces, rec.vocab),
                                       spec) for i in chosen]
  return Probe(rec=rec, spec=spec, trie=trie_lib.build_trie(codes_il), prompt_list=prompt_list,
               targets=valid.targets[chosen], beam_width=e.beam_width, batch_size=e.batch_size,
               updates=updates)
