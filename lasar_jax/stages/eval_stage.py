"""Stage `eval` (`configs/eval.py`): Recall@K / NDCG@K of the trained models, with a most-popular
baseline, ranked lists exported as JSONL.

The final model (GRPO when it has been trained in the workdir, else Stage 2 of the configured
mode) is scored into WORKDIR/eval/ (WORKDIR/eval_<mode>/ for a mode other than 'lasar', so the
modes of one workdir keep their own scores); every other finished training stage is scored on the
validation split into WORKDIR/<stage>/eval/, so the summary compares them side by side where
choices are made (test is computed once, for the final model). A scored model is
not scored again unless it changed (its stage fingerprint) or the eval config did.
"""

import dataclasses
import json
import pathlib

import ml_collections

from lasar_jax import evaluation, trained
from lasar_jax.stages import common, grpo_stage, ground_stage, latent_stage, sid_stage

SUMMARY_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "avg_depth",
                   "latency_ms_per_user")


def eval_dir_name(mode: str) -> str:
  """Directory of the final model's scores for `mode` ('eval' for 'lasar', else 'eval_<mode>')."""
  return "eval" if mode == "lasar" else f"eval_{mode}"


def candidates(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> list[tuple]:
  """(name, model dir, reasoning mode, eval dir) of every finished stage, final model first."""
  mode = config.reasoning.mode
  found = []
  grpo_dir = workdir / grpo_stage.stage_name(mode)
  stage2_dir = workdir / latent_stage.stage_name(mode)
  stage1_dir = workdir / ground_stage.STAGE
  for name, directory, stage_mode in ((grpo_dir.name, grpo_dir, mode),
                                      (stage2_dir.name, stage2_dir, mode),
                                      ("stage1", stage1_dir, "none")):
    if (directory / common.SUMMARY_FILE).is_file() and common.manifest_problem(directory) is None:
      found.append((name, directory, stage_mode))
  if not found or found[0][0] == "stage1":
    # Stage 1 alone is not a model of `mode`: scoring it into eval_<mode>/ would pass it off as one.
    raise FileNotFoundError(
        f"no trained '{mode}' model in {workdir} (neither {grpo_dir.name}/ nor {stage2_dir.name}/ "
        f"is finished): run configs/sft_latent.py with --config.reasoning.mode={mode} first")
  final_name, final_dir, final_mode = found[0]
  return ([(final_name, final_dir, final_mode, workdir / eval_dir_name(mode))] +
          [(n, d, m, d / "eval") for n, d, m in found[1:]])


def evaluate_stage(config, workdir, data, codes, model_dir, mode, out_dir) -> dict:
  """Scores one trained model (reusing earlier scores of the same model and eval config)."""
  stage_key = json.loads((model_dir / common.SUMMARY_FILE).read_text())["fingerprint"]
  rec, reasoning_params, spec = trained.load_model(config, model_dir, mode)
  # Keyed on the spec scored (not config.reasoning): Stage 1 scored as 'none' is reused whichever
  # mode the run that scores it is configured for.
  key = common.fingerprint(stage_key, dataclasses.asdict(spec), config.eval)
  done = common.finished_summary(out_dir, key)
  if done is not None:
    return done
  results = evaluation.evaluate(rec, reasoning_params, spec, codes, data, config.eval,
                                config.sft.max_title_tokens, out_dir)
  summary = {"model": str(model_dir), "mode": mode, "fingerprint": key,
             **{f"{split}_{k}": v for split, m in results.items() for k, v in m.items()
                if k in SUMMARY_METRICS},
             **{f"{split}_most_popular_{k}": m["most_popular"][k] for split, m in results.items()
                for k in ("recall@10", "ndcg@10") if k in m["most_popular"]}}
  common.write_summary(out_dir, summary)
  return summary


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Scores every finished model of the run; returns the final model's summary with the others'
  headline figures."""
  data = common.prepared_data(config, workdir)
  sid_stage.run(config, workdir)
  codes = sid_stage.load_codes(workdir)
  summary = {}
  # Earlier stages are compared on the validation split alone (selection happens there; test is
  # computed once, for the final model), unless valid is not scored at all.
  earlier = ml_collections.ConfigDict(config.to_dict())
  earlier.eval.splits = tuple(s for s in config.eval.splits if s == "valid") or config.eval.splits
  for index, (name, model_dir, mode, out_dir) in enumerate(candidates(config, workdir)):
    result = evaluate_stage(config if index == 0 else earlier, workdir, data, codes, model_dir,
                            mode, out_dir)
    if index == 0:
      summary.update(result)
    else:
      summary.update({f"{name}_{k}": v for k, v in result.items()
                      if k.startswith(("valid_", "test_")) and "most_popular" not in k})
  return summary
