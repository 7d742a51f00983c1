"""Checks a finished config before any work starts: one clear message naming the bad key.

`validate` needs no jax and reads no data, so `lasar_jax.main` refuses a bad value in about a
second; `check_workdir` refuses a workdir that lasar_jax cannot write with ordinary file operations;
`check_devices` (which starts jax) what the devices rule out.
"""

import pathlib
import re

import ml_collections

# Keys whose value must be one of a fixed set. Later stages add their keys here.
CHOICES = {
    "model.source": ("scratch", "hf", "gguf"),
    "model.dtype": ("float32", "bfloat16"),
    "model.param_dtype": ("float32", "bfloat16"),
    "data.format": ("synthetic", "lcrec", "recbole", "p5", "movielens", "amazon_raw", "minionerec"),
    "data.missing_text": ("drop", "keep"),
    "sid.method": ("rqvae", "rqkmeans"),
    "sid.collision": ("extra_level", "balanced_last"),
    "sid.kmeans_init": ("kmeans++", "random"),
    "reasoning.mode": ("none", "pause", "cot", "latent", "lasar"),
    "cot.source": ("template", "llm", "file"),
    "train.schedule": ("cosine", "constant"),
    "train.padding_side": ("right", "left"),
    "train.truncation": ("none", "left", "right"),
    "grpo.kl_kind": ("k1", "k2", "k3"),
    "grpo.aggregation": ("token_mean", "sequence_mean"),
    "grpo.depth_reward": ("expected", "sampled"),
}
# Keys whose value must be a positive integer.
POSITIVE = (
    "data.max_history", "sid.levels", "sid.codebook_size", "sid.kmeans_iters", "sid.latent_dim",
    "sid.epochs", "sid.embed_max_length", "sid.embed_batch_size", "sft.max_title_tokens",
    "reasoning.max_depth", "reasoning.num_pause", "reasoning.policy_hidden", "cot.max_steps",
    "cot.min_steps", "cot.llm_max_new_tokens", "cot.max_step_tokens", "eval.beam_width",
    "eval.batch_size", "eval.max_rationale_tokens", "train.steps", "train.batch_size",
    "train.grad_accum", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
    "grpo.prompts_per_step", "grpo.steps", "grpo.log_every",
    "grpo.checkpoint_every")
# Keys whose value must be an integer >= 0 (0 meaning what the key's comment says).
NON_NEGATIVE = ("sft.stage1_steps", "reasoning.stage2_steps", "reasoning.stage2_samples",
                "eval.max_users", "train.warmup_steps", "grpo.warmup_steps", "data.kcore",
                "data.max_description_chars", "sid.dead_code_every", "train.data_threads")
# Keys whose value must be a number > 0.
POSITIVE_NUMBER = ("train.learning_rate", "grpo.learning_rate", "grpo.policy_learning_rate",
                   "grpo.temperature", "reasoning.tau")
# Keys whose value must be a non-empty tuple of positive integers.
POSITIVE_TUPLES = ("eval.ks", "train.buckets", "sid.hidden_dims", "compare.beam_widths")
SPLITS = ("valid", "test")  # what eval.splits may hold
GRPO_STAGES = ("chain", "grpo")  # stages that run GRPO (prefix credit, group size)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key."""


def _get(config: ml_collections.ConfigDict, dotted: str):
  """The value at a dotted key, or None when the config has no such key."""
  node = config
  for part in dotted.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def _is_int(value) -> bool:
  """Whether `value` is an int (bool excluded)."""
  return isinstance(value, int) and not isinstance(value, bool)


def _check_kinds(config: ml_collections.ConfigDict) -> None:
  """The per-key checks of the tables above."""
  for key, choices in CHOICES.items():
    value = _get(config, key)
    if value is not None and value not in choices:
      raise ConfigError(f"--config.{key}={value!r} is not one of {', '.join(choices)}")
  for key in POSITIVE:
    value = _get(config, key)
    if value is not None and (not _is_int(value) or value <= 0):
      raise ConfigError(f"--config.{key}={value!r} must be a positive integer")
  for key in NON_NEGATIVE:
    value = _get(config, key)
    if value is not None and (not _is_int(value) or value < 0):
      raise ConfigError(f"--config.{key}={value!r} must be an integer >= 0 (0: see its comment "
                        "in lasar_jax/configs/common.py)")
  for key in POSITIVE_NUMBER:
    value = _get(config, key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not value > 0):
      raise ConfigError(f"--config.{key}={value!r} must be a number > 0")
  for key in POSITIVE_TUPLES:
    value = _get(config, key)
    if value is not None and (not isinstance(value, (tuple, list)) or not value
                              or not all(_is_int(v) and v > 0 for v in value)):
      raise ConfigError(f"--config.{key}={value!r} must be a non-empty tuple of positive "
                        "integers")


def _check_model(config: ml_collections.ConfigDict) -> None:
  """The backbone: a known preset, or a pretrained checkpoint that exists."""
  from lasar_jax.model.config import PRESETS  # local: keeps config parsing light

  model = config.model
  if model.source == "scratch" and model.preset not in PRESETS:
    raise ConfigError(f"--config.model.preset={model.preset!r} is not one of {', '.join(PRESETS)}")
  if model.source in ("hf", "gguf") and not model.checkpoint:
    raise ConfigError(f"--config.model.source={model.source!r} needs --config.model.checkpoint")
  if (model.source in ("hf", "gguf") and model.checkpoint != "smollm2"
      and not pathlib.Path(model.checkpoint).expanduser().exists()):
    raise ConfigError(f"--config.model.checkpoint={model.checkpoint!r} does not exist")


def _check_data(config: ml_collections.ConfigDict) -> None:
  """The source folder of a non-synthetic format, and the interactions a user needs."""
  data = config.data
  if data.format != "synthetic" and not data.path:
    raise ConfigError(f"--config.data.path is empty: the {data.format!r} format reads a folder; "
                      "set --config.data.path=DIR")
  if data.format != "synthetic" and not pathlib.Path(data.path).expanduser().is_dir():
    raise ConfigError(f"--config.data.path={data.path!r} is not a folder")
  if data.min_interactions < 3:
    raise ConfigError(f"--config.data.min_interactions={data.min_interactions} must be >= 3 "
                      "(leave-one-out needs a train, a valid and a test item per user)")
  if config.cot.source == "file" and not pathlib.Path(config.cot.path).expanduser().is_file():
    raise ConfigError(f"--config.cot.path={config.cot.path!r} is not a file (needed by "
                      "--config.cot.source='file')")


def _check_reasoning(config: ml_collections.ConfigDict) -> None:
  """Depths and sample counts of the reasoning modes."""
  reasoning = config.reasoning
  if not 0 <= reasoning.fixed_depth <= reasoning.max_depth:
    raise ConfigError(f"--config.reasoning.fixed_depth={reasoning.fixed_depth} must be in "
                      f"0..reasoning.max_depth ({reasoning.max_depth})")
  if config.cot.max_steps > reasoning.max_depth:
    raise ConfigError(f"--config.cot.max_steps={config.cot.max_steps} exceeds "
                      f"--config.reasoning.max_depth={reasoning.max_depth}: each rationale "
                      "step needs a latent step to align with")


def _check_eval(config: ml_collections.ConfigDict) -> None:
  """Splits, and cutoffs no longer than the ranked lists they are taken from."""
  splits = config.eval.splits
  if not isinstance(splits, (tuple, list)) or not splits or not set(splits) <= set(SPLITS):
    raise ConfigError(f"--config.eval.splits={splits!r} must be a non-empty tuple of "
                      f"{', '.join(SPLITS)}")
  widths = {"eval.beam_width": (config.eval.beam_width,)}
  if _get(config, "compare.beam_widths") is not None:
    widths["compare.beam_widths"] = tuple(config.compare.beam_widths)
  largest_k = max(config.eval.ks)
  for key, values in widths.items():
    if largest_k > min(values):
      raise ConfigError(f"--config.eval.ks={tuple(config.eval.ks)} has K={largest_k} but "
                        f"--config.{key}={values if len(values) > 1 else values[0]} ranks only "
                        f"{min(values)} items: Recall/NDCG@{largest_k} would come from shorter "
                        "lists than the baselines'")


def sid_code_counts(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The numbers of codes per SID the SID stage can produce: levels, plus the extra level that
  'extra_level' always appends and 'balanced_last' appends when a prefix is full."""
  levels = config.sid.levels
  return (levels + 1,) if config.sid.collision == "extra_level" else (levels, levels + 1)


def _check_grpo(config: ml_collections.ConfigDict) -> None:
  """GRPO settings of a run that trains GRPO (the chain or the grpo stage)."""
  if config.stage not in GRPO_STAGES:
    return
  grpo = config.grpo
  if grpo.group_size < 2:
    raise ConfigError(f"--config.grpo.group_size={grpo.group_size} must be >= 2 (advantages are "
                      "relative to the group)")
  credit, counts = tuple(grpo.prefix_credit), sid_code_counts(config)
  if credit and len(credit) not in counts:
    raise ConfigError(f"--config.grpo.prefix_credit={credit} has {len(credit)} values but the "
                      f"SIDs will have {' or '.join(map(str, counts))} codes (sid.levels="
                      f"{config.sid.levels}, sid.collision={config.sid.collision!r}): give one "
                      "value per code or () for exact match only")


def _check_batches(config: ml_collections.ConfigDict) -> None:
  """Batch sizes that split into their micro-batches, and a valid mesh."""
  train = config.train
  if train.batch_size % train.grad_accum:
    raise ConfigError(f"--config.train.batch_size={train.batch_size} is not divisible by "
                      f"--config.train.grad_accum={train.grad_accum}")
  for axis in ("data", "fsdp", "tensor"):
    size = config.mesh[axis]
    if size == 0 or size < -1:
      raise ConfigError(f"--config.mesh.{axis}={size} must be a positive size or -1 (all "
                        "remaining)")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first key whose value cannot work (no jax, no data read)."""
  _check_kinds(config)
  _check_model(config)
  _check_data(config)
  _check_reasoning(config)
  _check_eval(config)
  _check_grpo(config)
  _check_batches(config)


def check_workdir(workdir: str) -> None:
  """Raises ConfigError for a workdir given as a URL (lasar_jax writes it with ordinary file
  operations: temporary file or directory, then rename)."""
  if _URL.match(str(workdir)):
    raise ConfigError(f"--workdir={workdir} is a URL; lasar_jax writes its workdir with ordinary "
                      "file operations: mount the bucket (launch/tpu_setup.sh --bucket=BUCKET "
                      "mounts it at /mnt/BUCKET) and pass the mounted path")


def check_devices(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for what the devices rule out: a mesh they cannot form, batches that do
  not split over it, a mode GRPO cannot train. Starts jax: call it after `validate` (and after
  jax.distributed has started, in a multi-process run)."""
  import jax  # local: `validate` stays free of jax

  from lasar_jax import sharding
  from lasar_jax.rl import rollout

  try:
    shape = sharding.mesh_shape(config.mesh, jax.device_count())
    if config.stage in GRPO_STAGES:
      rollout.check_mode(config.reasoning.mode)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  check_layout(config, dict(zip(sharding.MESH_AXES, shape)), jax.process_count())


def check_layout(config: ml_collections.ConfigDict, mesh_shape: dict[str, int],
                 process_count: int) -> None:
  """Raises ConfigError unless the batches split over the mesh's data x fsdp devices and the
  processes (`mesh_shape`: axis name -> size, resolved against the devices)."""
  split = mesh_shape["data"] * mesh_shape["fsdp"]
  micro = config.train.batch_size // config.train.grad_accum
  if micro % split or micro % process_count:
    raise ConfigError(f"--config.train.batch_size={config.train.batch_size} (micro-batch {micro} "
                      f"with grad_accum={config.train.grad_accum}) must be divisible by data x "
                      f"fsdp = {split} devices and by {process_count} processes")
  prompts = config.grpo.prompts_per_step
  if config.stage in GRPO_STAGES and (prompts % split or prompts % process_count):
    raise ConfigError(f"--config.grpo.prompts_per_step={prompts} must be divisible by data x "
                      f"fsdp = {split} devices and by {process_count} processes")
