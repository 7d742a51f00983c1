"""Training throughput of Stage 2 (each reasoning mode) against Stage 1 on the same model.

Runs the real jitted train step (`lasar_jax.train.loop.make_train_step`) with the real loss of
each stage on batches shaped like the synthetic default's (history prompt of P tokens, SID of L'
tokens), and reports tokens/second (positions processed, latent steps included), the step time,
the ratio to Stage 1 (the overhead of the reasoning mode) and the compile time of each step.
`stage1 full head` is Stage 1 with the LM head on every position instead of the loss positions.

  python benchmarks/sft_throughput.py
  python benchmarks/sft_throughput.py --preset=smollm2-135m --batch=8 --prompt_len=128
"""

import json
import pathlib
import platform
import time

from absl import app, flags

_PRESET = flags.DEFINE_string("preset", "tiny", "Architecture preset (random weights).")
_BATCH = flags.DEFINE_integer("batch", 32, "Examples per step.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 96, "History prompt tokens (P).")
_SID_LEN = flags.DEFINE_integer("sid_len", 4, "SID tokens (L').")
_RATIONALE_LEN = flags.DEFINE_integer("rationale_len", 60, "Rationale tokens of the `cot` mode.")
_MAX_DEPTH = flags.DEFINE_integer("max_depth", 4, "K_max of the latent modes.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per configuration (after one warm-up).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_OUT = flags.DEFINE_string("out", "benchmarks/results/sft_throughput.json", "JSON output path.")

MODES = ("none", "pause", "cot", "latent", "lasar")


def _rec_model(cfg, vocab_extra: int):
  """A RecModel with random weights and made-up token ids (shapes are all that matter here)."""
  import flax.linen as nn
  import jax
  import numpy as np

  from lasar_jax.model import transformer
  from lasar_jax.sft.rec_model import RecModel
  from lasar_jax.sft.rec_vocab import RecVocab

  cfg = cfg.replace(vocab_size=cfg.vocab_size + vocab_extra)
  params = nn.meta.unbox(transformer.init_params(cfg, jax.random.key(0)))
  v = cfg.vocab_size
  vocab = RecVocab(code_token_ids=np.arange(v - vocab_extra, v - 3).reshape(_SID_LEN.value, -1),
                   item_tokens=np.zeros((1, _SID_LEN.value), np.int32), bot_id=v - 3,
                   eot_id=v - 2, pause_id=v - 1, eos_id=0, pad_id=0)
  return RecModel(cfg, params, None, vocab)


def _batch(mode: str, rng, model_cfg, config) -> tuple[dict, int]:
  """A padded batch for `mode` and the number of positions it processes."""
  import numpy as np

  b, p, s = _BATCH.value, _PROMPT_LEN.value, _SID_LEN.value
  vocab_size = model_cfg.vocab_size
  if mode in ("stage1", "none", "pause", "cot"):
    extra = {"stage1": 0, "none": 0, "pause": config.reasoning.num_pause,
             "cot": _RATIONALE_LEN.value + 2}[mode]
    length = p + extra + s + 1
    tokens = rng.randint(1, vocab_size, (b, length)).astype(np.int32)
    loss_mask = np.zeros((b, length), bool)
    loss_mask[:, p + (extra if mode != "cot" else 0):] = True
    return {"tokens": tokens, "loss_mask": loss_mask, "mask": np.ones((b, length), bool)}, b * length
  depth = np.full(b, config.reasoning.fixed_depth, np.int32) if mode == "latent" else \
      rng.randint(1, _MAX_DEPTH.value + 1, b).astype(np.int32)
  batch = {"prompt": rng.randint(1, vocab_size, (b, p + 1)).astype(np.int32),
           "mask": np.ones((b, p + 1), bool),
           "suffix": rng.randint(1, vocab_size, (b, s + 2)).astype(np.int32), "depth": depth}
  if mode == "lasar":
    batch["anchors"] = rng.randn(b, _MAX_DEPTH.value, model_cfg.hidden_size).astype(np.float32)
    batch["num_anchors"] = depth
  return batch, int(b * (p + 1 + s + 2) + depth.sum())


def bench(name, loss_fn, params, specs, batch, positions, train_config, mesh) -> dict:
  """Compile time and steady-state speed of one real train step."""
  import jax

  from lasar_jax.train import loop, optim

  optimizer, _ = optim.make_optimizer(train_config)
  params, params_sharding = loop.param_shardings(params, mesh, specs)
  shardings = loop.state_shardings(optimizer, params, params_sharding, mesh)
  state = loop.init_train_state(params, optimizer, 0, shardings)
  step = loop.make_train_step(loss_fn, optimizer, shardings, mesh)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - start) / _STEPS.value
  return {"name": name, "compile_s": compile_s, "step_ms": step_s * 1e3,
          "tokens_per_s": positions / step_s, "positions_per_step": positions}


def main(argv):
  del argv
  import jax
  import numpy as np

  from lasar_jax import sharding
  from lasar_jax.configs import common
  from lasar_jax.model import transformer
  from lasar_jax.model.config import PRESETS
  from lasar_jax.sft.losses import max_response_targets, response_loss_fn
  from lasar_jax.stages import latent_stage

  config = common.base_config()
  config.reasoning.max_depth = _MAX_DEPTH.value
  cfg = PRESETS[_PRESET.value].replace(dtype=_DTYPE.value)
  rec = _rec_model(cfg, vocab_extra=_SID_LEN.value * 16 + 3)
  mesh = sharding.make_mesh(config.mesh)
  rng = np.random.RandomState(0)
  results = []
  batch, positions = _batch("stage1", rng, rec.cfg, config)
  targets = max_response_targets([{"loss_mask": row} for row in batch["loss_mask"]])
  for name, max_targets in (("stage1", targets), ("stage1 full head", 0)):
    results.append(bench(name, response_loss_fn(rec.cfg, max_targets), rec.params,
                         transformer.logical_specs(rec.cfg), batch, positions, config.train, mesh))
  for mode in MODES:
    config.reasoning.mode = mode
    batch, positions = _batch(mode, rng, rec.cfg, config)
    targets = (max_response_targets([{"loss_mask": row} for row in batch["loss_mask"]])
               if "loss_mask" in batch else 0)
    params, specs, loss_fn = latent_stage.init_trainable(config, rec, targets)
    results.append(bench(f"stage2 {mode}", loss_fn, params, specs, batch, positions,
                         config.train, mesh))
  base = results[0]["tokens_per_s"]
  device = jax.devices()[0]
  print(f"{_PRESET.value} ({rec.cfg.num_params / 1e6:.1f}M params, {_DTYPE.value}), batch "
        f"{_BATCH.value}, prompt {_PROMPT_LEN.value}, SID {_SID_LEN.value}, K_max "
        f"{_MAX_DEPTH.value}; {len(jax.devices())} x {device.platform} "
        f"({platform.processor() or platform.machine()})")
  print(f"{'step':<16} {'compile s':>9} {'step ms':>9} {'tokens/s':>10} {'vs stage1':>9}")
  for r in results:
    print(f"{r['name']:<16} {r['compile_s']:9.2f} {r['step_ms']:9.1f} {r['tokens_per_s']:10.0f} "
          f"{r['tokens_per_s'] / base:8.2f}x")
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"preset": _PRESET.value, "dtype": _DTYPE.value, "batch": _BATCH.value,
                             "device": str(device), "results": results}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
