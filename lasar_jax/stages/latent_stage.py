"""Stage 2 (`configs/sft_latent.py`): SFT of the reasoning mode `config.reasoning.mode`.

Starts from the Stage-1 model. `lasar` (the chain's default) writes WORKDIR/stage2/; every other
mode writes WORKDIR/stage2_<mode>/ beside it, so all modes can share one workdir's SIDs and
Stage 1. Outputs: checkpoints, metrics.jsonl, tensorboard/, model/ (Hugging Face directory),
rec_vocab.json, reasoning_params.npz (latent projection, Policy Head), summary.json.
"""

import dataclasses
import pathlib

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from flax import traverse_util

from lasar_jax import atomic, distributed, reporting
from lasar_jax.cot import anchors as anchors_lib
from lasar_jax.cot import sources as cot_sources
from lasar_jax.data.prepare import PreparedData
from lasar_jax.eval import probe
from lasar_jax.model import transformer
from lasar_jax.reasoning import latent, policy_head
from lasar_jax.sft import prompts, rec_model, stage2_examples
from lasar_jax.sft.losses import latent_loss_fn, max_response_targets, response_loss_fn
from lasar_jax.stages import common, ground_stage, sid_stage
from lasar_jax.train import loop

REASONING_PARAMS_FILE = "reasoning_params.npz"


def stage_name(mode: str) -> str:
  """Directory name of Stage 2 for `mode`."""
  return "stage2" if mode == "lasar" else f"stage2_{mode}"


def save_reasoning_params(params: dict, path: pathlib.Path) -> None:
  """Writes the non-backbone parameters (projection, policy head) as a flat .npz, atomically."""
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  atomic.save_npz(path, {k: np.asarray(v) for k, v in flat.items()})


def load_reasoning_params(path: pathlib.Path) -> dict:
  """Reads what `save_reasoning_params` wrote (an empty dict when the mode has none)."""
  if not path.is_file():
    return {}
  with np.load(path) as npz:
    return traverse_util.unflatten_dict({k: npz[k] for k in npz.files}, sep="/")


def stage2_data(config, data: PreparedData) -> PreparedData:
  """`data` with its train split cut to `config.reasoning.stage2_samples` samples (a subset drawn
  with `config.seed`, kept in sample order), the samples Stage 2 and GRPO train on."""
  count, total = config.reasoning.stage2_samples, len(data.train)
  if count <= 0 or count >= total:
    return data
  keep = np.sort(np.random.default_rng(config.seed).choice(total, count, replace=False))
  return dataclasses.replace(data, train=data.train.subset(keep))


def _anchor_inputs(config, workdir, data, rec, prompt_list, model_key: str):
  """Per-sample rationale step tokens (and, for lasar, anchors and their counts) of the train split."""
  llm = None
  if config.cot.source == "llm":
    llm = cot_sources.rationale_llm(config.cot, common.text_backbone(config, workdir, data))
  rationales = distributed.primary_first(
      "cot rationales", lambda: cot_sources.rationales_for_split(
          config.cot, data, "train", config.seed, workdir / "cache" / "cot", llm=llm))
  step_tokens = anchors_lib.tokenize_steps(rec.tokenizer, rationales, config.cot.max_step_tokens)
  if config.reasoning.mode != "lasar":
    return step_tokens, None, None
  anchors, num_steps = distributed.primary_first(
      "cot anchors", lambda: anchors_lib.cached_anchors(
          workdir / "cache" / "anchors", model_key, rec.cfg, rec.params, prompt_list,
          rec.vocab.bot_id, step_tokens, config.reasoning.max_depth))
  return step_tokens, anchors, num_steps


def build_examples(config, workdir, data, rec, model_key: str) -> list[dict]:
  """Stage-2 examples of the configured mode, one per training sample (of `stage2_data`).

  `model_key` identifies the Stage-1 model the anchors are extracted with (for their cache).
  """
  mode, reasoning = config.reasoning.mode, config.reasoning
  data = stage2_data(config, data)
  pieces = prompts.make_pieces(rec.tokenizer, data.titles, config.sft.max_title_tokens)
  train = data.train
  prompt_list = [prompts.history_prompt(train.history(i), pieces, rec.vocab)
                 for i in range(len(train))]
  step_tokens = anchors = num_steps = None
  if mode in ("cot", "lasar"):
    step_tokens, anchors, num_steps = _anchor_inputs(config, workdir, data, rec, prompt_list,
                                                     model_key)
  examples = []
  for i, prompt in enumerate(prompt_list):
    target = int(train.targets[i])
    if mode in stage2_examples.TOKEN_MODES:
      examples.append(stage2_examples.token_mode_example(
          mode, prompt, target, rec.vocab, reasoning.num_pause,
          step_tokens[i] if step_tokens is not None else None))
    elif mode == "latent":
      examples.append(stage2_examples.latent_example(prompt, target, rec.vocab,
                                                     reasoning.fixed_depth))
    else:
      depth = int(num_steps[i])
      examples.append(stage2_examples.latent_example(prompt, target, rec.vocab, depth,
                                                     anchors[i], depth))
  return examples


def init_trainable(config, rec, max_targets: int = 0) -> tuple[dict, dict, object]:
  """(params, logical specs, loss_fn) of the mode: backbone alone, or with projection / head.

  `max_targets`: the token modes' `response_loss_fn` LM head runs on that many loss positions per
  row (`max_response_targets` of the examples; 0: every position)."""
  mode, reasoning = config.reasoning.mode, config.reasoning
  backbone_specs = transformer.logical_specs(rec.cfg)
  if mode in stage2_examples.TOKEN_MODES:
    return rec.params, backbone_specs, response_loss_fn(rec.cfg, max_targets)
  key_projection, key_policy = jax.random.split(jax.random.key(config.seed))
  boxed = {}
  if reasoning.projection:
    boxed["projection"] = latent.init_projection(rec.cfg, key_projection)
  if mode == "lasar":
    head = policy_head.PolicyHead(reasoning.max_depth, reasoning.policy_hidden)
    boxed["policy"] = policy_head.init_policy_head(head, key_policy, rec.cfg.hidden_size)
  params = {"backbone": rec.params, **nn.meta.unbox(boxed)}
  specs = {"backbone": backbone_specs, **nn.get_partition_spec(boxed)}
  return params, specs, latent_loss_fn(rec.cfg, reasoning, aligned=mode == "lasar")


def save_trained(rec, params: dict, with_reasoning: bool, out_dir: pathlib.Path) -> None:
  """Writes the trained backbone (and the reasoning parameters when the mode has them)."""
  rec_model.save_rec_model(rec, params["backbone"] if with_reasoning else params, out_dir)
  if with_reasoning:
    save_reasoning_params({k: v for k, v in params.items() if k != "backbone"},
                          out_dir / REASONING_PARAMS_FILE)


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Trains (or reuses) Stage 2 of the configured reasoning mode."""
  mode = config.reasoning.mode
  stage1 = ground_stage.run(config, workdir)
  out_dir = workdir / stage_name(mode)
  train_config = common.stage_train_config(config, config.reasoning.stage2_steps)
  uses_cot = mode in ("cot", "lasar")
  inputs = common.stage_inputs(stage1=stage1["fingerprint"], reasoning=config.reasoning,
                               cot=config.cot if uses_cot else None, train=train_config,
                               seed=config.seed)
  key = common.fingerprint(inputs)
  done = common.finished_summary(out_dir, key)
  if done is not None:
    reporting.say(f"reusing Stage 2 ({mode}) in {out_dir}")
    return done
  common.claim_stage_dir(out_dir, key, inputs)
  data = common.prepared_data(config, workdir)
  rec = rec_model.load_rec_model(workdir / ground_stage.STAGE, dtype=config.model.dtype,
                                 param_dtype=config.model.param_dtype)
  examples = build_examples(config, workdir, data, rec, stage1["fingerprint"])
  padded = "tokens" if mode in stage2_examples.TOKEN_MODES else "prompt"
  params, specs, loss_fn = init_trainable(
      config, rec, max_response_targets(examples) if padded == "tokens" else 0)
  pad_values = {padded: rec.vocab.pad_id}
  if padded == "tokens":
    pad_values["loss_mask"] = False
  state, summary = loop.train(loss_fn, params, examples, train_config, seed=config.seed,
                              stage_dir=out_dir, pad_values=pad_values, mesh_config=config.mesh,
                              logical_specs=specs,
                              probe=probe.make_probe(config, data, rec,
                                                     sid_stage.load_codes(workdir),
                                                     train_config.steps, mode))
  trained = distributed.to_host(state.params)
  distributed.write_on_primary(f"{out_dir.name} model",
                               lambda: save_trained(rec, trained, padded == "prompt", out_dir))
  depths = [int(e["depth"]) for e in examples if "depth" in e]
  summary = {**summary, "mode": mode, "examples": len(examples), "fingerprint": key}
  if depths:
    summary["avg_target_depth"] = float(np.mean(depths))
  common.write_summary(out_dir, summary)
  return summary
