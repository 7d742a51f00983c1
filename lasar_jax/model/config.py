"""Architecture description of the decoder backbone (Llama / Qwen2 / Qwen3 families)."""

import dataclasses

ARCHITECTURES = ("llama", "qwen2", "qwen3")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static architecture of a decoder; hashable, so it can be a static argument of `jax.jit`."""

  architecture: str  # 'llama' | 'qwen2' | 'qwen3' (decides the HF class on export)
  vocab_size: int  # rows of the embedding table (and of the LM head)
  hidden_size: int  # model width D
  intermediate_size: int  # SwiGLU hidden width F
  num_layers: int  # decoder layers L
  num_heads: int  # query heads N
  num_kv_heads: int  # key/value heads K (GQA: N is a multiple of K)
  head_dim: int  # width of one head H
  rope_theta: float = 10000.0  # RoPE base
  rope_scaling_type: str = ""  # '' | 'linear' | 'llama3'
  rope_scaling_factor: float = 1.0  # position interpolation factor
  rope_low_freq_factor: float = 1.0  # llama3 scaling: low-frequency boundary
  rope_high_freq_factor: float = 4.0  # llama3 scaling: high-frequency boundary
  rope_original_max_positions: int = 8192  # llama3 scaling: original context length
  rms_norm_eps: float = 1e-6  # epsilon of every RMSNorm
  tie_embeddings: bool = False  # LM head shares the embedding table
  qkv_bias: bool = False  # biases on the q/k/v projections (Qwen2)
  qk_norm: bool = False  # RMSNorm on each query/key head before RoPE (Qwen3)
  max_position_embeddings: int = 8192  # longest sequence the checkpoint was trained for
  bos_token_id: int | None = None  # carried through to the exported config.json
  eos_token_id: int | None = None  # carried through to the exported config.json
  dtype: str = "float32"  # compute dtype: 'float32' | 'bfloat16'
  param_dtype: str = "float32"  # storage dtype of the parameters
  remat: bool = False  # rematerialize each layer in the backward pass

  def __post_init__(self):
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f"unknown architecture {self.architecture!r}; expected one of {ARCHITECTURES}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"model {name} must be one of {DTYPES}, got {getattr(self, name)!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
    if self.rope_scaling_type not in ("", "linear", "llama3"):
      raise ValueError(f"unsupported rope scaling {self.rope_scaling_type!r}; supported: linear, llama3")

  def replace(self, **changes) -> "ModelConfig":
    """Returns a copy with `changes` applied (validated again)."""
    return dataclasses.replace(self, **changes)

  @property
  def num_params(self) -> int:
    """Number of parameters of a model with this config."""
    d, f, h = self.hidden_size, self.intermediate_size, self.head_dim
    attn = d * h * (2 * self.num_heads + 2 * self.num_kv_heads)
    if self.qkv_bias:
      attn += h * (self.num_heads + 2 * self.num_kv_heads)
    if self.qk_norm:
      attn += 2 * h
    layer = attn + 3 * d * f + 2 * d
    head = 0 if self.tie_embeddings else self.vocab_size * d
    return self.vocab_size * d + self.num_layers * layer + d + head


# Named architectures. `tiny` is the CPU-scale default trained from scratch; the others describe
# real checkpoints (their weights come from `lasar_jax.model.checkpoint`).
PRESETS = {
    "tiny": ModelConfig(
        architecture="llama", vocab_size=1024, hidden_size=128, intermediate_size=384,
        num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=2048),
    "small": ModelConfig(
        architecture="llama", vocab_size=4096, hidden_size=256, intermediate_size=768,
        num_layers=6, num_heads=8, num_kv_heads=4, head_dim=32, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=2048),
    "smollm2-135m": ModelConfig(
        architecture="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
        num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64, rope_theta=100000.0,
        rms_norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=8192),
    "qwen2.5-0.5b": ModelConfig(
        architecture="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
        num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_embeddings=True, qkv_bias=True, max_position_embeddings=32768),
    "qwen3-0.6b": ModelConfig(
        architecture="qwen3", vocab_size=151936, hidden_size=1024, intermediate_size=3072,
        num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_embeddings=True, qk_norm=True, max_position_embeddings=40960),
}
