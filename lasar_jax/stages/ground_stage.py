"""Stage 1, SID grounding (`configs/sft_ground.py`): multi-task SFT, loss on response tokens only.

Starts from the run's backbone with SID and special tokens added; writes WORKDIR/stage1/
(checkpoints, metrics.jsonl, tensorboard/, model/ (a Hugging Face directory), rec_vocab.json,
summary.json).
"""

import pathlib

import ml_collections

from lasar_jax import distributed, reporting
from lasar_jax.eval import probe
from lasar_jax.model import transformer
from lasar_jax.sft import prompts, rec_model, tasks
from lasar_jax.sft.losses import max_response_targets, response_loss_fn
from lasar_jax.stages import common, sid_stage
from lasar_jax.train import loop

STAGE = "stage1"


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Trains (or reuses) the Stage-1 model."""
  sid_summary = sid_stage.run(config, workdir)
  out_dir = workdir / STAGE
  inputs = common.stage_inputs(
      sid=sid_summary.get("fingerprint"), model=config.model, sft=config.sft,
      train=common.stage_train_config(config, config.sft.stage1_steps), seed=config.seed)
  key = common.fingerprint(inputs)
  done = common.finished_summary(out_dir, key)
  if done is not None:
    reporting.say(f"reusing Stage 1 in {out_dir}")
    return done
  common.claim_stage_dir(out_dir, key, inputs)
  data = common.prepared_data(config, workdir)
  rec = rec_model.extend_for_recommendation(common.text_backbone(config, workdir, data),
                                            sid_stage.load_codes(workdir),
                                            config.sft.new_token_noise, config.seed)
  pieces = prompts.make_pieces(rec.tokenizer, data.titles, config.sft.max_title_tokens)
  examples, counts = tasks.stage1_examples(data, pieces, rec.vocab, config.sft.tasks, config.seed)
  train_config = common.stage_train_config(config, config.sft.stage1_steps)
  state, summary = loop.train(
      response_loss_fn(rec.cfg, max_response_targets(examples)), rec.params, examples,
      train_config, seed=config.seed,
      stage_dir=out_dir, pad_values={"tokens": rec.vocab.pad_id, "loss_mask": False},
      mesh_config=config.mesh, logical_specs=transformer.logical_specs(rec.cfg),
      probe=probe.make_probe(config, data, rec, sid_stage.load_codes(workdir), train_config.steps,
                             "none"))
  params = distributed.to_host(state.params)
  distributed.write_on_primary("stage1 model",
                               lambda: rec_model.save_rec_model(rec, params, out_dir))
  summary = {**summary, **{f"examples_{t}": n for t, n in counts.items()}, "fingerprint": key}
  common.write_summary(out_dir, summary)
  return summary
