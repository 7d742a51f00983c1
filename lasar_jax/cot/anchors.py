"""Hidden-state anchors of CoT steps (METHOD section 4).

Each sample's sequence `[prompt, <bot>, step_1 ... step_K]` is teacher-forced through the Stage-1
model (inference only: no gradient ever flows into the anchors); anchor a_k is the last-layer
hidden state (the final-norm output, what the LM head reads) at the last token of step k.

Sequences are sorted by length and run in fixed-size batches right-padded to bucket
lengths, so the jitted forward compiles once per (model config, batch size, bucket). Results are
cached on disk under a key made of the model's identity and the exact token sequences.
"""

import functools
import hashlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from lasar_jax.item_embeddings import bucket_length
from lasar_jax import atomic
from lasar_jax.model import transformer
from lasar_jax.model.config import ModelConfig


def tokenize_steps(tokenizer, rationales: list[list[str]],
                   max_step_tokens: int) -> list[list[np.ndarray]]:
  """Token ids of every step (one batched tokenizer call), each cut to `max_step_tokens`.

  Returns one list per rationale of [n_k] int32 arrays, 1 <= n_k <= max_step_tokens.
  """
  flat = [step for steps in rationales for step in steps]
  ids = tokenizer(flat, add_special_tokens=False, truncation=True,
                  max_length=max_step_tokens)["input_ids"] if flat else []
  out, start = [], 0
  for n, steps in enumerate(rationales):
    row = [np.asarray(ids[start + k], np.int32) for k in range(len(steps))]
    for k, step in enumerate(row):
      if not step.size:
        raise ValueError(f"step {k} of rationale #{n} ({steps[k]!r}) tokenizes to nothing")
    out.append(row)
    start += len(steps)
  return out


def anchor_sequences(prompts: list[np.ndarray], bot_id: int,
                     step_tokens: list[list[np.ndarray]]) -> tuple[list[np.ndarray],
                                                                   list[np.ndarray]]:
  """Teacher-forced sequences `[prompt, <bot>, step_1 ... step_K]` and the position of each step's
  last token in them.

  Returns:
    (tokens: per sample [T_n] int32, step_end_positions: per sample [K_n] int32).
  """
  tokens, ends = [], []
  for prompt, steps in zip(prompts, step_tokens, strict=True):
    lengths = np.array([len(s) for s in steps], np.int64)
    tokens.append(np.concatenate([np.asarray(prompt, np.int32), [bot_id], *steps]).astype(np.int32))
    ends.append((len(prompt) + np.cumsum(lengths)).astype(np.int32))  # <bot> at len(prompt)
  return tokens, ends


@functools.partial(jax.jit, static_argnames="cfg")
def _anchors(params, tokens_bt, mask_bt, ends_bk, valid_bk, *, cfg: ModelConfig):
  """The last hidden state at each end position, zero where not valid. [B, K, D] f32"""
  _, hidden_btd, _ = transformer.Decoder(cfg).apply(
      {"params": params}, tokens_bt, mask=mask_bt,
      positions=transformer.positions_from_mask(mask_bt), return_logits=False)
  picked_bkd = jnp.take_along_axis(hidden_btd, ends_bk[..., None], axis=1).astype(jnp.float32)
  return jnp.where(valid_bk[..., None], picked_bkd, 0.0)


def extract_anchors(cfg: ModelConfig, params, prompts: list[np.ndarray], bot_id: int,
                    step_tokens: list[list[np.ndarray]], max_steps: int, batch_size: int = 64,
                    max_length: int = 1024, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Anchors of every sample, in input order.

  Args:
    cfg, params: the Stage-1 model (plain params pytree).
    prompts: per sample [P_n] int32 prompt ids (without `<bot>`).
    bot_id: id of `<bot>`.
    step_tokens: per sample K_n <= max_steps arrays of step ids (`tokenize_steps`).
    max_steps: K_max.
    batch_size: sequences per jitted forward.
    max_length: longest sequence allowed (and largest bucket); a longer one is an error.

  Returns:
    (anchors [N, K_max, D] f32, zero past K_n; num_steps [N] int32 = K_n).
  """
  tokens, ends = anchor_sequences(prompts, bot_id, step_tokens)
  num_steps = np.array([len(e) for e in ends], np.int32)
  for n, (row, k) in enumerate(zip(tokens, num_steps)):
    if len(row) > max_length or not 1 <= k <= max_steps:
      raise ValueError(f"sample #{n}: {len(row)} tokens (at most {max_length}) and {k} steps "
                       f"(1..{max_steps} allowed)")
  out = np.zeros((len(tokens), max_steps, cfg.hidden_size), np.float32)
  order = np.argsort([len(row) for row in tokens], kind="stable")
  batches = range(0, len(order), batch_size)
  for start in tqdm.tqdm(batches, desc="CoT anchors", unit="batch", disable=not progress):
    rows = order[start:start + batch_size]
    width = bucket_length(max(len(tokens[r]) for r in rows), max_length)
    tokens_bt = np.zeros((batch_size, width), np.int32)
    mask_bt = np.zeros((batch_size, width), bool)
    ends_bk = np.zeros((batch_size, max_steps), np.int32)
    valid_bk = np.zeros((batch_size, max_steps), bool)
    for j, r in enumerate(rows):
      tokens_bt[j, :len(tokens[r])] = tokens[r]
      mask_bt[j, :len(tokens[r])] = True
      ends_bk[j, :num_steps[r]] = ends[r]
      valid_bk[j, :num_steps[r]] = True
    out[rows] = np.asarray(_anchors(params, tokens_bt, mask_bt, ends_bk, valid_bk,
                                    cfg=cfg))[:len(rows)]
  return out, num_steps


def cache_key(model_key: str, prompts: list[np.ndarray], bot_id: int,
              step_tokens: list[list[np.ndarray]], max_steps: int) -> str:
  """Hex digest identifying (model, exact token sequences and step boundaries, K_max)."""
  digest = hashlib.sha256(f"{model_key}|{bot_id}|{max_steps}|{len(prompts)}".encode())
  for prompt, steps in zip(prompts, step_tokens, strict=True):
    digest.update(np.asarray([len(prompt), len(steps), *(len(s) for s in steps)], np.int64))
    digest.update(np.asarray(prompt, np.int32).tobytes())
    for step in steps:
      digest.update(np.asarray(step, np.int32).tobytes())
  return digest.hexdigest()[:24]


def cached_anchors(cache_dir, model_key: str, cfg: ModelConfig, params, prompts: list[np.ndarray],
                   bot_id: int, step_tokens: list[list[np.ndarray]], max_steps: int,
                   batch_size: int = 64, max_length: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """`extract_anchors`, read from `cache_dir/anchors_<key>.npz` when already computed for this
  model (`model_key`) and these exact sequences; `params` is not used then."""
  path = pathlib.Path(cache_dir) / (
      f"anchors_{cache_key(model_key, prompts, bot_id, step_tokens, max_steps)}.npz")
  if path.exists():
    with np.load(path) as cached:
      if cached["anchors"].shape == (len(prompts), max_steps, cfg.hidden_size):
        return cached["anchors"], cached["num_steps"]
  anchors, num_steps = extract_anchors(cfg, params, prompts, bot_id, step_tokens, max_steps,
                                       batch_size=batch_size, max_length=max_length)
  atomic.save_npz(path, {"anchors": anchors, "num_steps": num_steps})
  return anchors, num_steps
