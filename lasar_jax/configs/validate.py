"""Checks a finished config before any work starts: one clear message naming the bad key."""

import ml_collections

# Keys whose value must be one of a fixed set. Later stages add their keys here.
CHOICES = {
    "model.source": ("scratch", "hf", "gguf"),
    "model.dtype": ("float32", "bfloat16"),
    "model.param_dtype": ("float32", "bfloat16"),
    "data.format": ("synthetic", "lcrec", "recbole", "p5", "movielens", "amazon_raw", "minionerec"),
    "sid.method": ("rqvae", "rqkmeans"),
    "reasoning.mode": ("none", "pause", "cot", "latent", "lasar"),
    "cot.source": ("template", "llm", "file"),
    "grpo.kl_kind": ("k1", "k2", "k3"),
    "grpo.aggregation": ("token_mean", "sequence_mean"),
    "grpo.depth_reward": ("expected", "sampled"),
}
# Keys whose value must be a positive integer.
POSITIVE = ("data.max_history", "sid.levels", "sid.codebook_size", "reasoning.max_depth",
            "reasoning.num_pause", "grpo.group_size", "grpo.prompts_per_step")


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key."""


def _get(config: ml_collections.ConfigDict, dotted: str):
  node = config
  for part in dotted.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first key whose value is out of range."""
  from lasar_jax.model.config import PRESETS  # local: keeps config parsing light

  for key, choices in CHOICES.items():
    value = _get(config, key)
    if value is not None and value not in choices:
      raise ConfigError(f"--config.{key}={value!r} is not one of {', '.join(choices)}")
  for key in POSITIVE:
    value = _get(config, key)
    if value is not None and (not isinstance(value, int) or value <= 0):
      raise ConfigError(f"--config.{key}={value!r} must be a positive integer")
  if config.model.source == "scratch" and config.model.preset not in PRESETS:
    raise ConfigError(f"--config.model.preset={config.model.preset!r} is not one of "
                      f"{', '.join(PRESETS)}")
  if config.model.source in ("hf", "gguf") and not config.model.checkpoint:
    raise ConfigError(f"--config.model.source={config.model.source!r} needs --config.model.checkpoint")
  if "reasoning" in config and not 0 <= config.reasoning.fixed_depth <= config.reasoning.max_depth:
    raise ConfigError(f"--config.reasoning.fixed_depth={config.reasoning.fixed_depth} must be in "
                      f"0..reasoning.max_depth ({config.reasoning.max_depth})")
  if "cot" in config and config.cot.max_steps > config.reasoning.max_depth:
    raise ConfigError(f"--config.cot.max_steps={config.cot.max_steps} exceeds "
                      f"--config.reasoning.max_depth={config.reasoning.max_depth}: each rationale "
                      "step needs a latent step to align with")
  if "reasoning" in config and config.reasoning.stage2_samples < 0:
    raise ConfigError(f"--config.reasoning.stage2_samples={config.reasoning.stage2_samples} must "
                      "be >= 0 (0 = every training sample)")
  for axis in ("data", "fsdp", "tensor"):
    size = config.mesh[axis]
    if size == 0 or size < -1:
      raise ConfigError(f"--config.mesh.{axis}={size} must be a positive size or -1 (all remaining)")
