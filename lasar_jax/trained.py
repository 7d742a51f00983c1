"""A finished training stage of a workdir, loaded for inference and inspection (notebooks, scripts).

  stage = trained.load_stage(config, workdir, "grpo")
  prompts, users, targets = stage.split_prompts("test", max_users=8)
  tokens, mask = trained.prompt_block(prompts, stage.rec.vocab.pad_id)
  trace = inference.trace_latent_steps(stage.rec.params, stage.reasoning_params, tokens, mask,
                                       cfg=stage.rec.cfg, spec=stage.spec)
"""

import dataclasses
import pathlib

import ml_collections
import numpy as np

from lasar_jax import evaluation, inference
from lasar_jax.data.prepare import PreparedData, load_prepared
from lasar_jax.sft import rec_model
from lasar_jax.stages import ground_stage, grpo_stage, latent_stage, sid_stage


@dataclasses.dataclass(frozen=True)
class TrainedStage:
  """A trained model of a workdir with what inference needs beside it."""

  name: str  # stage directory name: 'stage1', 'stage2', 'stage2_<mode>' or 'grpo'
  directory: pathlib.Path  # WORKDIR/<name>
  rec: rec_model.RecModel  # backbone with the SID vocabulary, tokenizer and id tables
  reasoning_params: dict  # latent projection / Policy Head ({} for token modes)
  spec: inference.ReasoningSpec  # how the model reasons (mode of the stage)
  data: PreparedData  # the workdir's prepared data set
  codes_il: np.ndarray  # [I, L'] int32 SID codes of every item
  max_title_tokens: int  # title tokens kept in prompts (config.sft.max_title_tokens)

  def split_prompts(self, split: str, max_users: int = 0):
    """(prompts with the mode's suffix, user indices [N], target items [N]) of a split's samples,
    the first `max_users` of them (0: all)."""
    return evaluation.split_prompts(self.data, split, self.rec, self.spec, self.max_title_tokens,
                                    max_users)


def stage_mode(name: str, config: ml_collections.ConfigDict) -> str:
  """Reasoning mode of the model in stage directory `name` (as the eval stage scores it)."""
  if name == ground_stage.STAGE:
    return "none"
  if name == grpo_stage.STAGE:
    return config.reasoning.mode
  if name.startswith(f"{grpo_stage.STAGE}_"):
    return name.removeprefix(f"{grpo_stage.STAGE}_")
  if name == latent_stage.stage_name("lasar"):
    return "lasar"
  if name.startswith("stage2_"):
    return name.removeprefix("stage2_")
  raise ValueError(f"unknown stage directory {name!r}: expected stage1, stage2, stage2_<mode>, "
                   "grpo or grpo_<mode>")


def needed_reasoning_params(reasoning: ml_collections.ConfigDict, mode: str) -> tuple[str, ...]:
  """What a saved model of `mode` keeps in its reasoning_params.npz: the latent projection (latent
  modes with `reasoning.projection`) and the Policy Head ('lasar')."""
  needed = ("latent projection",) if mode in ("latent", "lasar") and reasoning.projection else ()
  return needed + (("Policy Head",) if mode == "lasar" else ())


def load_model(config: ml_collections.ConfigDict, directory, mode: str
               ) -> tuple[rec_model.RecModel, dict, inference.ReasoningSpec]:
  """(model, reasoning parameters, reasoning spec) of the model saved in `directory`, reasoning in
  `mode` with the other settings of `config.reasoning` and `config.eval.max_rationale_tokens`."""
  directory = pathlib.Path(directory)
  params_file = directory / latent_stage.REASONING_PARAMS_FILE
  needed = needed_reasoning_params(config.reasoning, mode)
  if needed and not params_file.is_file():
    raise FileNotFoundError(f"{params_file} is missing: the {mode!r} model needs its "
                            f"{' and '.join(needed)}; rerun its stage to rebuild it")
  rec = rec_model.load_rec_model(directory, dtype=config.model.dtype)
  reasoning_params = latent_stage.load_reasoning_params(params_file)
  reasoning = ml_collections.ConfigDict(config.reasoning.to_dict())
  reasoning.mode = mode
  return rec, reasoning_params, inference.reasoning_spec(reasoning, rec.vocab,
                                                         config.eval.max_rationale_tokens)


def load_stage(config: ml_collections.ConfigDict, workdir, name: str = "grpo") -> TrainedStage:
  """Loads the trained model of WORKDIR/<name> (written by `pipeline.run` with `config`), its
  reasoning parameters, the prepared data and the SID codes.

  `config` supplies what the workdir does not store: the reasoning settings (K_max, Policy Head
  width, ...) and `eval.max_rationale_tokens`, `sft.max_title_tokens`, `model.dtype`.
  """
  workdir = pathlib.Path(workdir)
  directory = workdir / name
  if not rec_model.is_saved(directory):
    raise FileNotFoundError(f"no trained model in {directory}: run lasar_jax.pipeline.run first")
  rec, reasoning_params, spec = load_model(config, directory, stage_mode(name, config))
  return TrainedStage(name=name, directory=directory, rec=rec, reasoning_params=reasoning_params,
                      spec=spec, data=load_prepared(workdir / "data"),
                      codes_il=sid_stage.load_codes(workdir),
                      max_title_tokens=config.sft.max_title_tokens)


def prompt_block(prompt_list, pad_id: int, width: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Right-padded prompt block and its mask, width the longest prompt (or `width` when larger).

  Returns (tokens [N, T] int32, mask [N, T] bool).
  """
  width = max(width, max(len(p) for p in prompt_list))
  tokens = np.full((len(prompt_list), width), pad_id, np.int32)
  mask = np.zeros((len(prompt_list), width), bool)
  for row, prompt in enumerate(prompt_list):
    tokens[row, :len(prompt)] = prompt
    mask[row, :len(prompt)] = True
  return tokens, mask
