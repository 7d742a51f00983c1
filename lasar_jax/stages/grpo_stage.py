"""Stage `grpo` (`configs/grpo.py`): GRPO with the adaptive-depth Policy Head after Stage 2.

Starts from the Stage-2 model of `config.reasoning.mode` (backbone, latent projection, Policy
Head), which is also the frozen KL reference; writes WORKDIR/grpo/ ('lasar'; another mode writes
WORKDIR/grpo_<mode>/, so modes share a workdir) (checkpoints, metrics.jsonl,
tensorboard/, model/ (Hugging Face directory), rec_vocab.json, reasoning_params.npz,
summary.json). 'lasar' aligns the final latent step with each train sample's last CoT anchor,
read from Stage 2's anchor cache. The modes none, pause, latent and lasar are supported.
"""

import pathlib

import ml_collections
import numpy as np

from lasar_jax import distributed, inference, reporting
from lasar_jax.configs.validate import ConfigError
from lasar_jax.eval import probe
from lasar_jax.model import transformer
from lasar_jax.rl import grpo_loss, trainer
from lasar_jax.rl import rollout as rollout_lib
from lasar_jax.sft import prompts, rec_model
from lasar_jax.sid import trie as trie_lib
from lasar_jax.stages import common, ground_stage, latent_stage, sid_stage

STAGE = "grpo"


def stage_name(mode: str) -> str:
  """Directory name of GRPO for `mode`."""
  return STAGE if mode == "lasar" else f"{STAGE}_{mode}"


def _last_anchors(config, workdir, data, stage1_key: str) -> tuple[np.ndarray, np.ndarray]:
  """(last CoT anchor a_K [N, D] f32, whether the sample has one [N] bool) of every training
  sample, from the Stage-2 examples (the anchor cache Stage 2 filled, same key)."""
  stage1 = rec_model.load_rec_model(workdir / ground_stage.STAGE, dtype=config.model.dtype,
                                    param_dtype=config.model.param_dtype)
  stage2_examples = latent_stage.build_examples(config, workdir, data, stage1, stage1_key)
  num_b = np.array([int(e["num_anchors"]) for e in stage2_examples])
  anchors_bkd = np.stack([e["anchors"] for e in stage2_examples])
  last_bd = anchors_bkd[np.arange(len(num_b)), np.maximum(num_b - 1, 0)]
  return last_bd.astype(np.float32), num_b > 0


def build_examples(config, workdir, data, rec: rec_model.RecModel, spec: inference.ReasoningSpec,
                   codes_il: np.ndarray, stage1_key: str) -> list[dict]:
  """GRPO examples, one per training sample of Stage 2 (`latent_stage.stage2_data`): the prompt
  block with the mode's suffix, the target's SID codes, and for 'lasar' the last CoT anchor."""
  pieces = prompts.make_pieces(rec.tokenizer, data.titles, config.sft.max_title_tokens)
  train = latent_stage.stage2_data(config, data).train
  examples = [{"prompt": inference.mode_prompt(prompts.history_prompt(train.history(i), pieces,
                                                                      rec.vocab), spec),
               "target_codes": codes_il[int(train.targets[i])].astype(np.int32)}
              for i in range(len(train))]
  if spec.mode == "lasar":
    last_nd, has_n = _last_anchors(config, workdir, data, stage1_key)
    for example, anchor_d, has in zip(examples, last_nd, has_n, strict=True):
      example.update(anchor=anchor_d, has_anchor=np.bool_(has))
  return examples


def _trainable(config, rec: rec_model.RecModel, stage2_dir: pathlib.Path) -> tuple[dict, dict]:
  """(plain params {'backbone', 'projection'?, 'policy'?} of Stage 2, their logical specs)."""
  reasoning_params = latent_stage.load_reasoning_params(
      stage2_dir / latent_stage.REASONING_PARAMS_FILE)
  specs = {"backbone": transformer.logical_specs(rec.cfg)}
  if reasoning_params:
    _, latent_specs, _ = latent_stage.init_trainable(config, rec)  # fresh init: only the specs
    specs = latent_specs
  return {"backbone": rec.params, **reasoning_params}, specs


def check_prefix_credit(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  """Raises ConfigError unless `config.grpo.prefix_credit` is () or has one value per SID code of
  the workdir's (finished) SIDs; the chain calls it before any training."""
  credit, levels = config.grpo.prefix_credit, sid_stage.load_codes(workdir).shape[1]
  if credit and len(credit) != levels:
    raise ConfigError(f"--config.grpo.prefix_credit={tuple(credit)} has {len(credit)} values but "
                     f"the SIDs in {workdir / 'sid'} have {levels} codes: give {levels} (credit "
                     f"for 0..{levels - 1} matched leading codes) or () for exact match only")


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Trains (or reuses) GRPO on the Stage-2 model of the configured reasoning mode."""
  mode = config.reasoning.mode
  rollout_lib.check_mode(mode)
  stage2 = latent_stage.run(config, workdir)  # runs the SID stage and Stage 1 first if needed
  check_prefix_credit(config, workdir)  # the chain checks it before training (pipeline.run)
  stage1_key = ground_stage.run(config, workdir)["fingerprint"]
  out_dir = workdir / stage_name(mode)
  inputs = common.stage_inputs(stage2=stage2["fingerprint"], grpo=config.grpo,
                               train=trainer.grpo_train_config(config),
                               reasoning=config.reasoning, seed=config.seed)
  key = common.fingerprint(inputs)
  done = common.finished_summary(out_dir, key)
  if done is not None:
    reporting.say(f"reusing GRPO ({mode}) in {out_dir}")
    return done
  common.claim_stage_dir(out_dir, key, inputs)
  data = common.prepared_data(config, workdir)
  stage2_dir = workdir / latent_stage.stage_name(mode)
  rec = rec_model.load_rec_model(stage2_dir, dtype=config.model.dtype,
                                 param_dtype=config.model.param_dtype)
  spec = inference.reasoning_spec(config.reasoning, rec.vocab)
  codes_il = sid_stage.load_codes(workdir)
  examples = build_examples(config, workdir, data, rec, spec, codes_il, stage1_key)
  params, specs = _trainable(config, rec, stage2_dir)
  state, summary = trainer.train(
      config, out_dir, cfg=rec.cfg, spec=spec, params=params, logical_specs=specs,
      reference=grpo_loss.reference_params(params), examples=examples,
      trie=trie_lib.build_trie(codes_il), code_token_ids=rec.vocab.code_token_ids,
      pad_id=rec.vocab.pad_id,
      probe=probe.make_probe(config, data, rec, codes_il, config.grpo.steps, mode))
  trained = distributed.to_host(state.params)
  distributed.write_on_primary("grpo model", lambda: latent_stage.save_trained(
      rec, trained, len(trained) > 1, out_dir))
  summary = {**summary, "mode": mode, "examples": len(examples), "fingerprint": key}
  common.write_summary(out_dir, summary)
  return summary
