"""Hugging Face <-> lasar_jax conversion of configs and weights, written as tables.

`WEIGHT_TABLE` maps each Hugging Face tensor name (per layer `{i}`) to our parameter path and the
reshape between the two layouts; import and export read the same table, one direction each.
Everything here works on NumPy arrays: nothing touches a device until the caller places the result.
"""

import dataclasses
import re
from typing import Callable

import ml_dtypes  # noqa: F401  (registers bfloat16 with NumPy)
import numpy as np

from lasar_jax.model.config import ModelConfig

HF_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}


class CheckpointError(ValueError):
  """A checkpoint that cannot be loaded; the message names the file and the tensor or key."""


@dataclasses.dataclass(frozen=True)
class WeightRule:
  """One tensor: HF name pattern, our path, layout converters both ways, and when it exists."""

  hf_name: str  # HF tensor name; `{i}` is the layer index for per-layer tensors
  path: tuple[str, ...]  # path in our params pytree (per-layer tensors are stacked on axis 0)
  to_ours: Callable[[np.ndarray, ModelConfig], np.ndarray]  # HF layout -> our layout
  to_hf: Callable[[np.ndarray, ModelConfig], np.ndarray]  # our layout -> HF layout
  applies: Callable[[ModelConfig], bool] = lambda cfg: True  # whether cfg has this tensor

  @property
  def per_layer(self) -> bool:
    return "{i}" in self.hf_name

  def hf_shape(self, cfg: ModelConfig) -> tuple[int, ...]:
    """Expected shape of the HF tensor (one layer)."""
    return _HF_SHAPES[self.path](cfg)


def _identity(w, cfg):
  return w


def _heads_in(num_heads: Callable[[ModelConfig], int]):
  """[heads*H, D] (torch Linear) -> [D, heads, H], and back."""
  def to_ours(w, cfg):
    return w.T.reshape(cfg.hidden_size, num_heads(cfg), cfg.head_dim)

  def to_hf(w, cfg):
    return w.reshape(cfg.hidden_size, -1).T
  return to_ours, to_hf


def _bias_heads(num_heads: Callable[[ModelConfig], int]):
  """[heads*H] -> [heads, H], and back."""
  return (lambda w, cfg: w.reshape(num_heads(cfg), cfg.head_dim), lambda w, cfg: w.reshape(-1))


def _transpose(w, cfg):
  return w.T


def _o_to_ours(w, cfg):  # [D, N*H] -> [N, H, D]
  return w.T.reshape(cfg.num_heads, cfg.head_dim, cfg.hidden_size)


def _o_to_hf(w, cfg):  # [N, H, D] -> [D, N*H]
  return w.reshape(-1, cfg.hidden_size).T


_q_heads = lambda cfg: cfg.num_heads  # noqa: E731
_kv_heads = lambda cfg: cfg.num_kv_heads  # noqa: E731
_attn = "model.layers.{i}.self_attn."
_mlp = "model.layers.{i}.mlp."

WEIGHT_TABLE: tuple[WeightRule, ...] = (
    WeightRule("model.embed_tokens.weight", ("embedding",), _identity, _identity),
    WeightRule("lm_head.weight", ("lm_head",), _transpose, _transpose,
               lambda cfg: not cfg.tie_embeddings),
    WeightRule("model.norm.weight", ("final_norm", "scale"), _identity, _identity),
    WeightRule("model.layers.{i}.input_layernorm.weight", ("layers", "attn_norm", "scale"),
               _identity, _identity),
    WeightRule("model.layers.{i}.post_attention_layernorm.weight", ("layers", "mlp_norm", "scale"),
               _identity, _identity),
    WeightRule(_attn + "q_proj.weight", ("layers", "attn", "q_proj"), *_heads_in(_q_heads)),
    WeightRule(_attn + "k_proj.weight", ("layers", "attn", "k_proj"), *_heads_in(_kv_heads)),
    WeightRule(_attn + "v_proj.weight", ("layers", "attn", "v_proj"), *_heads_in(_kv_heads)),
    WeightRule(_attn + "o_proj.weight", ("layers", "attn", "o_proj"), _o_to_ours, _o_to_hf),
    WeightRule(_attn + "q_proj.bias", ("layers", "attn", "q_bias"), *_bias_heads(_q_heads),
               lambda cfg: cfg.qkv_bias),
    WeightRule(_attn + "k_proj.bias", ("layers", "attn", "k_bias"), *_bias_heads(_kv_heads),
               lambda cfg: cfg.qkv_bias),
    WeightRule(_attn + "v_proj.bias", ("layers", "attn", "v_bias"), *_bias_heads(_kv_heads),
               lambda cfg: cfg.qkv_bias),
    WeightRule(_attn + "q_norm.weight", ("layers", "attn", "q_norm", "scale"), _identity, _identity,
               lambda cfg: cfg.qk_norm),
    WeightRule(_attn + "k_norm.weight", ("layers", "attn", "k_norm", "scale"), _identity, _identity,
               lambda cfg: cfg.qk_norm),
    WeightRule(_mlp + "gate_proj.weight", ("layers", "mlp", "gate_proj"), _transpose, _transpose),
    WeightRule(_mlp + "up_proj.weight", ("layers", "mlp", "up_proj"), _transpose, _transpose),
    WeightRule(_mlp + "down_proj.weight", ("layers", "mlp", "down_proj"), _transpose, _transpose),
)

# Shapes of the HF tensors (one layer), used to reject a wrong checkpoint before converting it.
_HF_SHAPES = {
    ("embedding",): lambda c: (c.vocab_size, c.hidden_size),
    ("lm_head",): lambda c: (c.vocab_size, c.hidden_size),
    ("final_norm", "scale"): lambda c: (c.hidden_size,),
    ("layers", "attn_norm", "scale"): lambda c: (c.hidden_size,),
    ("layers", "mlp_norm", "scale"): lambda c: (c.hidden_size,),
    ("layers", "attn", "q_proj"): lambda c: (c.num_heads * c.head_dim, c.hidden_size),
    ("layers", "attn", "k_proj"): lambda c: (c.num_kv_heads * c.head_dim, c.hidden_size),
    ("layers", "attn", "v_proj"): lambda c: (c.num_kv_heads * c.head_dim, c.hidden_size),
    ("layers", "attn", "o_proj"): lambda c: (c.hidden_size, c.num_heads * c.head_dim),
    ("layers", "attn", "q_bias"): lambda c: (c.num_heads * c.head_dim,),
    ("layers", "attn", "k_bias"): lambda c: (c.num_kv_heads * c.head_dim,),
    ("layers", "attn", "v_bias"): lambda c: (c.num_kv_heads * c.head_dim,),
    ("layers", "attn", "q_norm", "scale"): lambda c: (c.head_dim,),
    ("layers", "attn", "k_norm", "scale"): lambda c: (c.head_dim,),
    ("layers", "mlp", "gate_proj"): lambda c: (c.intermediate_size, c.hidden_size),
    ("layers", "mlp", "up_proj"): lambda c: (c.intermediate_size, c.hidden_size),
    ("layers", "mlp", "down_proj"): lambda c: (c.hidden_size, c.intermediate_size),
}


def _rope_from_hf(hf: dict, source: str) -> dict:
  """RoPE fields from either `rope_parameters` (transformers >= 5) or `rope_theta`/`rope_scaling`."""
  params = dict(hf.get("rope_parameters") or {})
  if not params:
    params = dict(hf.get("rope_scaling") or {})
    params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
  rope_type = params.get("rope_type", params.get("type", "default"))
  out = {"rope_theta": float(params.get("rope_theta") or hf.get("rope_theta") or 10000.0)}
  if rope_type in ("default", None):
    return out
  if rope_type not in ("linear", "llama3"):
    raise CheckpointError(f"{source}: key 'rope_parameters': unsupported rope_type {rope_type!r} "
                          "(supported: default, linear, llama3)")
  out.update(rope_scaling_type=rope_type, rope_scaling_factor=float(params["factor"]))
  if rope_type == "llama3":
    out.update(rope_low_freq_factor=float(params["low_freq_factor"]),
               rope_high_freq_factor=float(params["high_freq_factor"]),
               rope_original_max_positions=int(params["original_max_position_embeddings"]))
  return out


def _token_id(value):
  """First id when a config lists several (e.g. several eos ids), else the id or None."""
  return value[0] if isinstance(value, list) and value else value if isinstance(value, int) else None


def config_from_hf(hf: dict, source: str = "config.json", **overrides) -> ModelConfig:
  """ModelConfig from a Hugging Face `config.json` dict; `overrides` set runtime fields (dtype...)."""
  archs = hf.get("architectures") or []
  if not archs or archs[0] not in HF_ARCHITECTURES:
    raise CheckpointError(f"{source}: key 'architectures': unknown architecture {archs!r}; "
                          f"supported: {sorted(HF_ARCHITECTURES)}")
  arch = HF_ARCHITECTURES[archs[0]]
  try:
    heads = int(hf["num_attention_heads"])
    fields = dict(
        architecture=arch,
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        intermediate_size=int(hf["intermediate_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(hf.get("head_dim") or hf["hidden_size"] // heads),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=True if arch == "qwen2" else bool(hf.get("attention_bias", False)),
        qk_norm=arch == "qwen3",
        max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
        bos_token_id=_token_id(hf.get("bos_token_id")),
        eos_token_id=_token_id(hf.get("eos_token_id")),
        **_rope_from_hf(hf, source),
    )
  except KeyError as e:
    raise CheckpointError(f"{source}: missing key {e.args[0]!r}") from None
  if hf.get("mlp_bias"):
    raise CheckpointError(f"{source}: key 'mlp_bias': MLP biases are not supported")
  if hf.get("use_sliding_window"):
    raise CheckpointError(f"{source}: key 'use_sliding_window': sliding-window attention is not supported")
  fields.update(overrides)
  return ModelConfig(**fields)


def config_to_hf(cfg: ModelConfig) -> dict:
  """A Hugging Face `config.json` dict that transformers loads as the matching *ForCausalLM."""
  arch_name = {v: k for k, v in HF_ARCHITECTURES.items()}[cfg.architecture]
  rope = {"rope_theta": cfg.rope_theta, "rope_type": cfg.rope_scaling_type or "default"}
  if cfg.rope_scaling_type:
    rope["factor"] = cfg.rope_scaling_factor
  if cfg.rope_scaling_type == "llama3":
    rope.update(low_freq_factor=cfg.rope_low_freq_factor, high_freq_factor=cfg.rope_high_freq_factor,
                original_max_position_embeddings=cfg.rope_original_max_positions)
  hf = {
      "architectures": [arch_name],
      "model_type": cfg.architecture,
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.hidden_size,
      "intermediate_size": cfg.intermediate_size,
      "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim,
      "hidden_act": "silu",
      "rms_norm_eps": cfg.rms_norm_eps,
      "tie_word_embeddings": cfg.tie_embeddings,
      "max_position_embeddings": cfg.max_position_embeddings,
      "rope_theta": cfg.rope_theta,
      "rope_parameters": rope,
      "rope_scaling": None if not cfg.rope_scaling_type else {k: v for k, v in rope.items()
                                                               if k != "rope_theta"},
      "torch_dtype": cfg.param_dtype,
      "bos_token_id": cfg.bos_token_id,
      "eos_token_id": cfg.eos_token_id,
  }
  if cfg.architecture == "llama":
    hf.update(attention_bias=cfg.qkv_bias, mlp_bias=False)
  else:
    hf.update(use_sliding_window=False, attention_bias=cfg.qkv_bias)
  return hf


def _set_path(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get_path(tree: dict, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def expected_hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Every HF tensor name the config needs, with its shape."""
  shapes = {}
  for rule in WEIGHT_TABLE:
    if not rule.applies(cfg):
      continue
    names = [rule.hf_name.format(i=i) for i in range(cfg.num_layers)] if rule.per_layer else [rule.hf_name]
    for name in names:
      shapes[name] = rule.hf_shape(cfg)
  return shapes


def check_hf_tensors(shapes: dict[str, tuple[int, ...]], cfg: ModelConfig, source: str) -> None:
  """Raises CheckpointError naming the file and tensor for a missing or wrongly shaped tensor."""
  for name, want in expected_hf_shapes(cfg).items():
    if name not in shapes:
      raise CheckpointError(f"{source}: missing tensor {name!r} (expected shape {want})")
    if tuple(shapes[name]) != want:
      raise CheckpointError(f"{source}: tensor {name!r} has shape {tuple(shapes[name])}, "
                            f"expected {want}")


_IGNORED_HF = re.compile(r".*rotary_emb\.inv_freq$")


def params_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig, source: str,
                   dtype=None) -> dict:
  """Our params pytree (NumPy, unboxed) from HF-named tensors; validates names and shapes first.

  Unknown extra tensors are an error too (they usually mean a different architecture), except the
  rotary `inv_freq` buffers some exports carry. A tied checkpoint that also stores `lm_head.weight`
  is accepted when that tensor equals the embedding.
  """
  dtype = np.dtype(dtype or cfg.param_dtype)  # NumPy knows 'bfloat16' once ml_dtypes is imported
  check_hf_tensors({k: v.shape for k, v in tensors.items()}, cfg, source)
  known = set(expected_hf_shapes(cfg))
  for name in tensors:
    if name in known or _IGNORED_HF.match(name):
      continue
    if name == "lm_head.weight" and cfg.tie_embeddings:
      continue
    raise CheckpointError(f"{source}: unexpected tensor {name!r} for a {cfg.architecture} config")
  params: dict = {}
  for rule in WEIGHT_TABLE:
    if not rule.applies(cfg):
      continue
    if rule.per_layer:
      value = np.stack([rule.to_ours(np.asarray(tensors[rule.hf_name.format(i=i)]), cfg)
                        for i in range(cfg.num_layers)])
    else:
      value = rule.to_ours(np.asarray(tensors[rule.hf_name]), cfg)
    _set_path(params, rule.path, value.astype(dtype))
  return params


def params_to_hf(params: dict, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """HF-named NumPy tensors from our params pytree (plain or boxed leaves, any device)."""
  import flax.linen as nn  # local: keeps this module importable without initializing jax devices

  params = nn.meta.unbox(params)
  tensors = {}
  for rule in WEIGHT_TABLE:
    if not rule.applies(cfg):
      continue
    value = np.asarray(_get_path(params, rule.path))
    if rule.per_layer:
      for i in range(cfg.num_layers):
        tensors[rule.hf_name.format(i=i)] = np.ascontiguousarray(rule.to_hf(value[i], cfg))
    else:
      tensors[rule.hf_name] = np.ascontiguousarray(rule.to_hf(value, cfg))
  return tensors
