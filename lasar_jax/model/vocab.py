"""Vocabulary extension: special and Semantic-ID tokens, new embedding rows, tokenizer agreement.

Token strings: `<bot>` / `<eot>` open and close a latent-reasoning span, `<pause>` is a filler
step, and SID code `c` of level `l` is `<{letter(l)}_{c}>` (`<a_17>`, `<b_3>`, ...).

New embedding rows (and LM-head columns when untied) start at the mean of the existing rows, so a
new token is initially an "average" input and gets an average logit; old rows are never touched,
so the model's outputs over old tokens are unchanged.
"""

import string

import flax.linen as nn
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


def _with_mean_rows(table, axis: int, num_rows: int, start: int, stop: int):
  """`table` grown to `num_rows` along its vocab `axis`, rows [start, stop) set to the mean row.

  The mean is over the original rows, computed in f32. NumPy stays NumPy, jax stays jax.
  """
  xp = np if isinstance(table, np.ndarray) else jnp
  rows_vd = table if axis == 0 else table.T
  old_rows, width = rows_vd.shape
  mean_d = rows_vd.astype(np.float32).mean(axis=0).astype(rows_vd.dtype)
  grown_vd = xp.concatenate([rows_vd, xp.broadcast_to(mean_d, (num_rows - old_rows, width))])
  ids_v1 = xp.arange(num_rows)[:, None]
  fresh_v1 = (ids_v1 >= start) & (ids_v1 < stop)
  out_vd = xp.where(fresh_v1, mean_d[None], grown_vd)
  return out_vd if axis == 0 else out_vd.T


def _reset_rows(params: dict, cfg: ModelConfig, num_rows: int, start: int, stop: int
                ) -> tuple[dict, ModelConfig]:
  """Params and config with `num_rows` vocabulary rows, rows [start, stop) at the mean."""
  if num_rows < cfg.vocab_size:
    raise ValueError(f"cannot shrink the vocabulary from {cfg.vocab_size} to {num_rows} rows")
  params = dict(params)
  for name, axis in _vocab_tables(cfg):
    leaf = params[name]
    value = _with_mean_rows(nn.meta.unbox(leaf), axis, num_rows, start, stop)
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


def extend_model_and_tokenizer(params: dict, cfg: ModelConfig, tokenizer, new_tokens
                               ) -> tuple[dict, ModelConfig, dict[str, int]]:
  """Adds `new_tokens` to the tokenizer and gives each new id an embedding row at the mean.

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
  params, cfg = _reset_rows(params, cfg, max(cfg.vocab_size, end_new), first_new, end_new)
  return params, cfg, ids
