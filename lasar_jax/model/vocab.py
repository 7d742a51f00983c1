"""Vocabulary extension: special and Semantic-ID tokens, new embedding rows, tokenizer agreement.

Token strings: `<bot>` / `<eot>` open and close a latent-reasoning span, `<pause>` is a filler
step, and SID code `c` of level `l` is `<{letter(l)}_{c}>` (`<a_17>`, `<b_3>`, ...).

New embedding rows (and LM-head columns when untied) start at the mean of the existing rows, so a
new token is initially an "average" input and gets an average logit; old rows are never touched,
so the model's outputs over old tokens are unchanged. With `noise_scale > 0` each new row adds
Gaussian noise of `noise_scale` times the old rows' per-dimension standard deviation: identical
rows for hundreds of SID tokens are a symmetry that training breaks only slowly.
"""

import string

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lasar_jax.model.config import ModelConfig

BOT = "<bot>"  # begin of thought: latent reasoning starts after it
EOT = "<eot>"  # end of thought: the answer (the SID) follows
PAUSE = "<pause>"  # a filler step
SPECIAL_TOKENS = (BOT, EOT, PAUSE)


def sid_token(level: int, code: int) -> str:
  """Token string of code `code` at SID level `level`: level 0 -> `<a_{code}>`, 1 -> `<b_...>`."""
  if not 0 <= level < len(string.ascii_lowercase):
    raise ValueError(f"SID level {level} out of range [0, 26)")
  if code < 0:
    raise ValueError(f"SID code {code} is negative")
  return f"<{string.ascii_lowercase[level]}_{code}>"


def sid_tokens(levels: int, codebook_size: int) -> list[str]:
  """All SID token strings, level by level: `<a_0> .. <a_{K-1}>, <b_0> ..`; levels*K of them."""
  return [sid_token(level, code) for level in range(levels) for code in range(codebook_size)]


def _vocab_tables(cfg: ModelConfig) -> tuple[tuple[str, int], ...]:
  """(param name, vocabulary axis) of every table indexed by token id."""
  tables = (("embedding", 0),)  # [V, D]
  if not cfg.tie_embeddings:
    tables += (("lm_head", 1),)  # [D, V]
  return tables


def _with_mean_rows(table, axis: int, num_rows: int, start: int, stop: int, noise_scale: float,
                    key: jax.Array | None):
  """`table` grown to `num_rows` along its vocab `axis`, rows [start, stop) set to the mean row
  (plus `noise_scale` x per-dimension std x N(0, 1) when `noise_scale > 0`, drawn with `key`).

  Mean and std are over the original rows, computed in f32. NumPy stays NumPy, jax stays jax.
  """
  xp = np if isinstance(table, np.ndarray) else jnp
  rows_vd = table if axis == 0 else table.T
  old_rows, width = rows_vd.shape
  old_vd = rows_vd.astype(np.float32)
  mean_d = old_vd.mean(axis=0)
  fresh_vd = xp.broadcast_to(mean_d, (num_rows, width))
  if noise_scale > 0:
    if key is None:
      raise ValueError("noise_scale > 0 needs a PRNG key")
    noise_vd = jax.random.normal(key, (num_rows, width), jnp.float32) * old_vd.std(axis=0)
    fresh_vd = fresh_vd + noise_scale * (np.asarray(noise_vd) if xp is np else noise_vd)
  fresh_vd = fresh_vd.astype(rows_vd.dtype)
  grown_vd = xp.concatenate([rows_vd, fresh_vd[old_rows:]])
  ids_v1 = xp.arange(num_rows)[:, None]
  is_new_v1 = (ids_v1 >= start) & (ids_v1 < stop)
  out_vd = xp.where(is_new_v1, fresh_vd, grown_vd)
  return out_vd if axis == 0 else out_vd.T


def _reset_rows(params: dict, cfg: ModelConfig, num_rows: int, start: int, stop: int,
                noise_scale: float = 0.0, key: jax.Array | None = None
                ) -> tuple[dict, ModelConfig]:
  """Params and config with `num_rows` vocabulary rows, rows [start, stop) at the mean (+ noise)."""
  if num_rows < cfg.vocab_size:
    raise ValueError(f"cannot shrink the vocabulary from {cfg.vocab_size} to {num_rows} rows")
  params = dict(params)
  for index, (name, axis) in enumerate(_vocab_tables(cfg)):
    leaf = params[name]
    table_key = None if key is None else jax.random.fold_in(key, index)
    value = _with_mean_rows(nn.meta.unbox(leaf), axis, num_rows, start, stop, noise_scale,
                            table_key)
    params[name] = leaf.replace_boxed(value) if isinstance(leaf, nn.meta.AxisMetadata) else value
  return params, cfg.replace(vocab_size=num_rows)


def extend_vocab(params: dict, cfg: ModelConfig, num_new: int) -> tuple[dict, ModelConfig]:
  """Adds `num_new` rows to the embedding (and LM-head columns when untied) at their mean.

  Old rows are unchanged. Works on plain or boxed (`nn.LogicallyPartitioned`) params and keeps the
  boxing; returns the new params and the config with the larger `vocab_size`.
  """
  if num_new < 0:
    raise ValueError(f"num_new must be >= 0, got {num_new}")
  v = cfg.vocab_size
  return _reset_rows(params, cfg, v + num_new, v, v + num_new)


def extend_tokenizer(tokenizer, new_tokens) -> dict[str, int]:
  """Adds `new_tokens` to a Hugging Face tokenizer as special tokens; returns each one's id.

  Special added tokens are never split or normalized, so `<a_17>` is always one token. Tokens the
  tokenizer already has keep their id. The tokenizer is modified in place.
  """
  import tokenizers  # local: only tokenizer users need it

  tokenizer.add_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in new_tokens],
                       special_tokens=True)
  ids = {t: tokenizer.convert_tokens_to_ids(t) for t in new_tokens}
  missing = [t for t, i in ids.items() if i is None or i == tokenizer.unk_token_id]
  if missing:
    raise ValueError(f"tokenizer did not add {missing}")
  return ids


def extend_model_and_tokenizer(params: dict, cfg: ModelConfig, tokenizer, new_tokens,
                               noise_scale: float = 0.0, key: jax.Array | None = None
                               ) -> tuple[dict, ModelConfig, dict[str, int]]:
  """Adds `new_tokens` to the tokenizer and gives each new id an embedding row at the mean (plus
  noise of `noise_scale` old-row standard deviations, drawn with `key`, when `noise_scale > 0`).

  Ids are assigned by the tokenizer (`len(tokenizer)` onwards). Some checkpoints (Qwen) have more
  embedding rows than tokenizer entries: new ids then land on those spare rows, which are reset to
  the mean of all the original rows; the table grows only by the ids past its end. Spare rows no
  new token uses, and every row of an existing token, are left as they were.

  Returns (params, config, token -> id); modifies the tokenizer in place.
  """
  first_new = len(tokenizer)
  if first_new > cfg.vocab_size:
    raise ValueError(f"tokenizer has {first_new} tokens but the embedding only {cfg.vocab_size} "
                     "rows: its ids do not all index rows")
  ids = extend_tokenizer(tokenizer, new_tokens)
  end_new = len(tokenizer)
  params, cfg = _reset_rows(params, cfg, max(cfg.vocab_size, end_new), first_new, end_new,
                            noise_scale, key)
  return params, cfg, ids
