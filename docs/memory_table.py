"""Prints the parameter counts and per-device memory tables of docs/scaling.md.

  JAX_PLATFORMS=cpu python docs/memory_table.py

Counts come from the model presets (`lasar_jax.model.config.PRESETS`) and from the published
Qwen2.5-1.5B / Qwen2.5-7B shapes below; per-device bytes apply the real sharding rules
(`lasar_jax.sharding.LOGICAL_RULES`, uneven dimensions left replicated) to the real parameter
shapes, taken with `jax.eval_shape` (nothing is allocated).
"""

import math
import types

import flax.linen as nn
import jax
import numpy as np

from lasar_jax import sharding
from lasar_jax.model import transformer
from lasar_jax.model.config import PRESETS, ModelConfig

GIB = 2**30
# Shapes of the Hugging Face config.json of Qwen/Qwen2.5-1.5B and Qwen/Qwen2.5-7B (not presets).
PUBLISHED = {
    "qwen2.5-1.5b": ModelConfig(
        architecture="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
        num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128, tie_embeddings=True,
        qkv_bias=True),
    "qwen2.5-7b": ModelConfig(
        architecture="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
        num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128, tie_embeddings=False,
        qkv_bias=True),
}
MODELS = ("tiny", "smollm2-135m", "qwen2.5-0.5b", "qwen3-0.6b", "qwen2.5-1.5b", "qwen2.5-7b")
# Bytes per parameter of the training state: params, grads, AdamW mu and nu (optax keeps the
# moments in the parameter dtype), and GRPO's frozen reference copy on top.
STATE_BYTES = {"float32": 4 + 4 + 4 + 4, "bfloat16": 2 + 2 + 2 + 2}
REFERENCE_BYTES = {"float32": 4, "bfloat16": 2}
FSDP_SIZES = (1, 2, 4, 8, 16, 32, 64)
DEVICES = {"TPU v5e (16 GiB)": 16, "TPU v4 (32 GiB)": 32, "H100 (80 GB = 74.5 GiB)": 80e9 / GIB}


def config_of(name: str) -> ModelConfig:
  """A preset or a published shape, by name."""
  return PRESETS[name] if name in PRESETS else PUBLISHED[name]


def counted_params(cfg: ModelConfig) -> int:
  """Parameters of the real module (abstract init), cross-checked against `num_params`."""
  abstract = nn.meta.unbox(jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0))))
  count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(abstract))
  assert count == cfg.num_params, (count, cfg.num_params)
  return count


def params_per_device(cfg: ModelConfig, data: int, fsdp: int, tensor: int) -> int:
  """Largest per-device share of the parameters under LOGICAL_RULES on a (data, fsdp, tensor) mesh."""
  mesh = types.SimpleNamespace(shape={"data": data, "fsdp": fsdp, "tensor": tensor})
  boxed = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  specs, values = nn.get_partition_spec(boxed), nn.meta.unbox(boxed)
  total = 0
  for spec, value in zip(jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)),
                         jax.tree.leaves(values)):
    mesh_spec = sharding._fit_spec(nn.logical_to_mesh_axes(tuple(spec), sharding.LOGICAL_RULES),
                                   value.shape, mesh)
    per_dim = [dim // math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
               for dim, axes in zip(value.shape, tuple(mesh_spec) + (None,) * len(value.shape))]
    total += int(np.prod(per_dim))
  return total


def activation_bytes_per_token(cfg: ModelConfig, dtype_bytes: int, seq_len: int) -> tuple[int, int]:
  """Rough saved-activation bytes per token: (with model.remat, without).

  With remat only each layer's input is kept (L x D) plus one layer recomputed; without it each
  layer keeps its matmul inputs and outputs (about 4D + 2(N+2K)H + 3F values) and the f32
  attention probabilities (N x T). The f32 logits, log-softmax and their gradient (3 x V x 4
  bytes) come on top in both cases.
  """
  d, f, h = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
  layer = (4 * d + 2 * (cfg.num_heads + 2 * cfg.num_kv_heads) * h + 3 * f) * dtype_bytes
  layer += cfg.num_heads * seq_len * 4
  logits = 3 * cfg.vocab_size * 4
  with_remat = cfg.num_layers * d * dtype_bytes + layer + logits
  return with_remat, cfg.num_layers * layer + logits


def main():
  """Prints the markdown tables."""
  print("| model | params | of which embedding + head | f32 state (16 B/param) | bf16 state (8 B/param) |")
  print("|---|---:|---:|---:|---:|")
  for name in MODELS:
    cfg = config_of(name)
    n = counted_params(cfg)
    emb = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_embeddings else 2)
    print(f"| {name} | {n:,} | {emb:,} ({100 * emb / n:.0f}%) | {n * 16 / GIB:.2f} GiB | "
          f"{n * 8 / GIB:.2f} GiB |")

  print("\nTraining state per device (GiB; f32 / bf16, SFT; GRPO adds the reference: +4 / +2 B per "
        "parameter), mesh data=N/fsdp, fsdp=F, tensor=1:\n")
  print("| model | " + " | ".join(f"F={f}" for f in FSDP_SIZES) + " |")
  print("|---|" + "---:|" * len(FSDP_SIZES))
  for name in MODELS:
    cfg = config_of(name)
    cells = []
    for f in FSDP_SIZES:
      p = params_per_device(cfg, 1, f, 1)
      cells.append(f"{p * 16 / GIB:.2f} / {p * 8 / GIB:.2f}")
    print(f"| {name} | " + " | ".join(cells) + " |")

  print("\nWith tensor=T (fsdp=F*T devices would give the same split of the big matrices):\n")
  print("| model | F=8,T=1 | F=4,T=2 | F=2,T=4 | F=16,T=1 | F=8,T=2 | F=4,T=4 |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for name in ("qwen2.5-1.5b", "qwen2.5-7b"):
    cfg = config_of(name)
    cells = [f"{params_per_device(cfg, 1, f, t) * 16 / GIB:.2f}"
             for f, t in ((8, 1), (4, 2), (2, 4), (16, 1), (8, 2), (4, 4))]
    print(f"| {name} (f32 state, GiB) | " + " | ".join(cells) + " |")

  print("\nSaved activations per token (MiB, bf16 compute, T=256): with remat / without\n")
  print("| model | remat | no remat | tokens per device in 8 GiB (remat) |")
  print("|---|---:|---:|---:|")
  for name in MODELS:
    cfg = config_of(name)
    remat, plain = activation_bytes_per_token(cfg, 2, 256)
    print(f"| {name} | {remat / 2**20:.2f} | {plain / 2**20:.2f} | {int(8 * GIB // remat):,} |")


if __name__ == "__main__":
  main()
