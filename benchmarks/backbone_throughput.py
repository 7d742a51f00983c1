"""Backbone throughput: lasar_jax against transformers/PyTorch, same weights, same machine, same run.

Measures training tokens/second (forward + backward + AdamW update) and greedy decode
tokens/second (KV cache), prints a table with the ratio, and writes a JSON file.

  python benchmarks/backbone_throughput.py --preset=small
  python benchmarks/backbone_throughput.py --checkpoint=smollm2 --batch=4 --seq=128
"""

import json
import pathlib
import platform
import time

from absl import app, flags

_PRESET = flags.DEFINE_string("preset", "small", "Architecture preset (lasar_jax.model.config.PRESETS) "
                              "with random weights; ignored when --checkpoint is given.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "", "HF directory, .gguf file or 'smollm2' to "
                                  "benchmark a real checkpoint instead of a preset.")
_BATCH = flags.DEFINE_integer("batch", 8, "Training batch size (sequences).")
_SEQ = flags.DEFINE_integer("seq", 128, "Training sequence length (tokens).")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 10, "Timed training steps (after 2 warm-up steps).")
_DECODE_BATCH = flags.DEFINE_integer("decode_batch", 1, "Decode batch size (sequences).")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 32, "Decode prompt length (tokens).")
_DECODE_TOKENS = flags.DEFINE_integer("decode_tokens", 64, "Tokens generated per decode run.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed decode runs; the median is reported.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute and parameter dtype.")
_OUT = flags.DEFINE_string("out", "benchmarks/results/backbone_throughput.json", "JSON output path.")


def _median(values):
  values = sorted(values)
  return values[len(values) // 2]


def _build(seed: int = 0):
  """Model config and lasar_jax params (NumPy-convertible) of the preset or checkpoint."""
  import flax.linen as nn
  import jax

  from lasar_jax.model import transformer
  from lasar_jax.model.config import PRESETS

  if _CHECKPOINT.value:
    from lasar_jax.model.loading import load_pretrained

    pretrained = load_pretrained(_CHECKPOINT.value, dtype=_DTYPE.value, param_dtype=_DTYPE.value)
    return pretrained.cfg, pretrained.params, _CHECKPOINT.value
  cfg = PRESETS[_PRESET.value].replace(dtype=_DTYPE.value, param_dtype=_DTYPE.value)
  return cfg, nn.meta.unbox(transformer.init_params(cfg, jax.random.key(seed))), _PRESET.value


def bench_jax(cfg, params, tokens, decode_prompt) -> dict:
  """Training and decode throughput of lasar_jax."""
  import jax
  import jax.numpy as jnp
  import optax

  from lasar_jax import losses
  from lasar_jax.generation import greedy_generate
  from lasar_jax.model import transformer

  model = transformer.Decoder(cfg)
  optimizer = optax.adamw(1e-4)

  def loss_fn(p, batch_bt):
    mask_bt = jnp.ones_like(batch_bt, bool)
    logits_btv, _, _ = model.apply({"params": p}, batch_bt, mask=mask_bt,
                                   positions=transformer.positions_from_mask(mask_bt))
    return losses.token_cross_entropy(logits_btv[:, :-1], batch_bt[:, 1:], mask_bt[:, 1:])[0]

  @jax.jit
  def train_step(p, opt_state, batch_bt):
    loss, grads = jax.value_and_grad(loss_fn)(p, batch_bt)
    updates, opt_state = optimizer.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss

  train_step = jax.jit(train_step.__wrapped__, donate_argnums=(0, 1))
  p = jax.tree.map(jnp.array, params)
  opt_state = optimizer.init(p)
  batch = jnp.asarray(tokens)
  start = time.perf_counter()
  p, opt_state, first_loss = jax.block_until_ready(train_step(p, opt_state, batch))
  compile_s = time.perf_counter() - start
  p, opt_state, _ = jax.block_until_ready(train_step(p, opt_state, batch))
  start = time.perf_counter()
  for _ in range(_TRAIN_STEPS.value):
    p, opt_state, loss = train_step(p, opt_state, batch)
  jax.block_until_ready(loss)
  train_s = time.perf_counter() - start

  prompt = jnp.asarray(decode_prompt)
  prompt_mask = jnp.ones_like(prompt, bool)
  params_dev = jax.tree.map(jnp.asarray, params)
  generate = lambda: jax.block_until_ready(  # noqa: E731
      greedy_generate(params_dev, cfg, prompt, prompt_mask, _DECODE_TOKENS.value))
  start = time.perf_counter()
  generated = generate()
  decode_compile_s = time.perf_counter() - start
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    generate()
    times.append(time.perf_counter() - start)
  return {"train_tokens_per_s": tokens.size * _TRAIN_STEPS.value / train_s,
          "train_compile_s": compile_s, "first_loss": float(first_loss),
          "decode_tokens_per_s": prompt.shape[0] * _DECODE_TOKENS.value / _median(times),
          "decode_compile_s": decode_compile_s, "generated": generated.tolist()}


def bench_torch(cfg, params, tokens, decode_prompt) -> dict:
  """Training and decode throughput of the same model in transformers/PyTorch."""
  import numpy as np
  import torch
  import transformers

  from lasar_jax.model import convert

  hf_config = transformers.AutoConfig.for_model(**convert.config_to_hf(cfg))
  torch_dtype = torch.float32 if cfg.dtype == "float32" else torch.bfloat16
  model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch_dtype)
  state = {k: torch.from_numpy(np.asarray(v, np.float32)).to(torch_dtype)
           for k, v in convert.params_to_hf(params, cfg).items()}
  model.load_state_dict(state, strict=False)
  model.tie_weights()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
  batch = torch.from_numpy(np.asarray(tokens)).long()

  def train_step():
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss)

  model.train()
  first_loss = train_step()
  train_step()
  start = time.perf_counter()
  for _ in range(_TRAIN_STEPS.value):
    train_step()
  train_s = time.perf_counter() - start

  model.load_state_dict(state, strict=False)  # decode from the same weights as lasar_jax
  model.tie_weights()
  model.eval()
  prompt = torch.from_numpy(np.asarray(decode_prompt)).long()

  def generate():
    with torch.no_grad():
      return model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                            max_new_tokens=_DECODE_TOKENS.value, min_new_tokens=_DECODE_TOKENS.value,
                            pad_token_id=0)

  generated = generate()
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    generate()
    times.append(time.perf_counter() - start)
  return {"train_tokens_per_s": batch.numel() * _TRAIN_STEPS.value / train_s,
          "first_loss": first_loss,
          "decode_tokens_per_s": prompt.shape[0] * _DECODE_TOKENS.value / _median(times),
          "generated": generated[:, prompt.shape[1]:].tolist()}


def main(argv):
  del argv
  import jax
  import numpy as np
  import torch

  from lasar_jax import reporting

  cfg, params, name = _build()
  rng = np.random.RandomState(0)
  tokens = rng.randint(0, cfg.vocab_size, (_BATCH.value, _SEQ.value)).astype(np.int32)
  decode_prompt = rng.randint(0, cfg.vocab_size, (_DECODE_BATCH.value, _PROMPT_LEN.value)).astype(np.int32)
  ours = bench_jax(cfg, params, tokens, decode_prompt)
  theirs = bench_torch(cfg, params, tokens, decode_prompt)
  same_tokens = float(np.mean(np.asarray(ours.pop("generated")) == np.asarray(theirs.pop("generated"))))
  rows = {}
  for key in ("train_tokens_per_s", "decode_tokens_per_s"):
    rows[key] = f"{ours[key]:10.1f}  {theirs[key]:10.1f}  {ours[key] / theirs[key]:6.2f}x"
  rows["first_loss"] = f"{ours['first_loss']:10.4f}  {theirs['first_loss']:10.4f}"
  rows["train_compile_s"] = f"{ours['train_compile_s']:10.2f}"
  rows["decode_compile_s"] = f"{ours['decode_compile_s']:10.2f}"
  rows["greedy_tokens_agree"] = f"{same_tokens:.3f}"
  device = jax.devices()[0]
  title = (f"{name}: {cfg.num_params / 1e6:.1f}M params, {cfg.dtype}, train batch {_BATCH.value}x"
           f"{_SEQ.value}, decode batch {_DECODE_BATCH.value} x {_DECODE_TOKENS.value} tokens; "
           f"{device.platform} ({platform.processor() or platform.machine()}), torch "
           f"{torch.__version__} threads={torch.get_num_threads()}\n"
           f"{'metric':<20}  {'lasar_jax':>10}  {'torch':>10}  ratio")
  reporting.print_table(title, rows)
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"model": name, "params": cfg.num_params, "dtype": cfg.dtype,
                             "device": str(device), "batch": _BATCH.value, "seq": _SEQ.value,
                             "decode_batch": _DECODE_BATCH.value, "decode_tokens": _DECODE_TOKENS.value,
                             "lasar_jax": ours, "torch": theirs,
                             "greedy_tokens_agree": same_tokens}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
