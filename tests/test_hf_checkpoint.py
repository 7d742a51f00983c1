"""Hugging Face checkpoint directories: load (single, sharded, bf16), export, and clear errors."""

import json
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from test_model_parity import forward, hf_logits, padded_batch, tiny_hf_model
from test_vocab import tiny_tokenizer

from lasar_jax.model import hf_io
from lasar_jax.model.convert import CheckpointError

LLAMA = (transformers.LlamaConfig, transformers.LlamaForCausalLM)
QWEN2 = (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)
QWEN3 = (transformers.Qwen3Config, transformers.Qwen3ForCausalLM)


def assert_logits_match(model, cfg, params):
  """Our logits equal the transformers model's on a left/right-padded batch (real positions)."""
  tokens, mask = padded_batch()
  ref = hf_logits(model, tokens, mask)
  ours, _ = forward(cfg, params, jnp.asarray(tokens), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(ours)[mask], ref[mask], atol=1e-4, rtol=0)


def _bits(x) -> np.ndarray:
  return np.ascontiguousarray(x).view(np.uint8)


def assert_trees_equal(a, b):
  """Same structure, dtypes and bits."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(_bits(x), _bits(y))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
  """(transformers model, directory) of an untied tiny Llama saved with `save_pretrained`."""
  model = tiny_hf_model(*LLAMA, tie_word_embeddings=False)
  directory = tmp_path_factory.mktemp("llama")
  model.save_pretrained(directory)
  return model, directory


@pytest.fixture(scope="module")
def sharded_dir(tmp_path_factory):
  """(transformers model, directory) of a tied tiny Qwen2 saved in many shards."""
  model = tiny_hf_model(*QWEN2, tie_word_embeddings=True)
  directory = tmp_path_factory.mktemp("qwen2_sharded")
  model.save_pretrained(directory, max_shard_size="20KB")
  return model, directory


def test_load_single_file(llama_dir):
  model, directory = llama_dir
  cfg, params = hf_io.load_hf_dir(directory)
  assert cfg.architecture == "llama" and not cfg.tie_embeddings
  assert all(isinstance(x, np.ndarray) and x.dtype == np.float32 for x in jax.tree.leaves(params))
  assert_logits_match(model, cfg, params)


def test_load_sharded(sharded_dir):
  model, directory = sharded_dir
  assert (directory / hf_io.INDEX_FILE).is_file() and not (directory / hf_io.WEIGHTS_FILE).exists()
  assert len(list(directory.glob("model-*.safetensors"))) > 2
  cfg, params = hf_io.load_hf_dir(directory)
  assert cfg.architecture == "qwen2" and cfg.tie_embeddings and cfg.qkv_bias
  assert_logits_match(model, cfg, params)


def test_load_bf16(tmp_path):
  model = tiny_hf_model(*QWEN3, tie_word_embeddings=False, head_dim=16).to(torch.bfloat16)
  model.save_pretrained(tmp_path)
  cfg, params = hf_io.load_hf_dir(tmp_path)  # default param_dtype float32: upcast exactly
  embed = model.model.embed_tokens.weight.detach().float().numpy()
  assert params["embedding"].dtype == np.float32
  np.testing.assert_array_equal(params["embedding"], embed)
  assert_logits_match(model.float(), cfg, params)
  cfg16, params16 = hf_io.load_hf_dir(tmp_path, dtype="bfloat16", param_dtype="bfloat16")
  assert cfg16.dtype == cfg16.param_dtype == "bfloat16"
  assert all(x.dtype == ml_dtypes.bfloat16 for x in jax.tree.leaves(params16))
  np.testing.assert_array_equal(params16["embedding"].astype(np.float32), embed)


@pytest.mark.parametrize("case", ["qwen3_untied", "qwen2_tied"])
def test_export_roundtrip(case, tmp_path):
  tied = case.endswith("_tied")
  config_cls, model_cls = QWEN3 if case.startswith("qwen3") else QWEN2
  extra = dict(head_dim=16) if case.startswith("qwen3") else {}
  source = tiny_hf_model(config_cls, model_cls, tie_word_embeddings=tied, **extra)
  source.save_pretrained(tmp_path / "source")
  cfg, params = hf_io.load_hf_dir(tmp_path / "source")
  tokenizer = tiny_tokenizer(tmp_path / "tokenizer")

  out = hf_io.save_hf_dir(jax.tree.map(jnp.asarray, params), cfg, tmp_path / "export", tokenizer)
  cfg2, params2 = hf_io.load_hf_dir(out)
  assert cfg2 == cfg
  assert_trees_equal(params2, params)
  assert hf_io.load_tokenizer(out).get_vocab() == tokenizer.get_vocab()
  exported = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  assert type(exported) is model_cls and exported.config.tie_word_embeddings == tied
  assert_logits_match(exported, cfg, params)


def test_export_bf16_roundtrip(sharded_dir, tmp_path):
  _, directory = sharded_dir
  cfg, params = hf_io.load_hf_dir(directory, param_dtype="bfloat16")  # an f32 checkpoint
  assert all(x.dtype == ml_dtypes.bfloat16 for x in jax.tree.leaves(params))
  hf_io.save_hf_dir(params, cfg, tmp_path / "export")
  with safetensors.safe_open(tmp_path / "export" / hf_io.WEIGHTS_FILE, framework="np") as f:
    assert f.get_tensor("model.norm.weight").dtype == ml_dtypes.bfloat16
  cfg2, params2 = hf_io.load_hf_dir(tmp_path / "export", param_dtype="bfloat16")
  assert cfg2 == cfg
  assert_trees_equal(params2, params)


class _FailingTokenizer:
  """Stands in for a tokenizer whose files cannot be written."""

  def save_pretrained(self, directory):
    pathlib.Path(directory, "tokenizer.json").write_text("{")  # half-written, then the failure
    raise OSError("disk full")


def test_save_is_atomic(llama_dir, tmp_path):
  cfg, params = hf_io.load_hf_dir(llama_dir[1])
  target = tmp_path / "export"
  with pytest.raises(OSError, match="disk full"):
    hf_io.save_hf_dir(params, cfg, target, tokenizer=_FailingTokenizer())
  assert os.listdir(tmp_path) == []  # neither the target nor a temporary sibling is left
  hf_io.save_hf_dir(params, cfg, target)
  with pytest.raises(FileExistsError):
    hf_io.save_hf_dir(params, cfg, target)
  with pytest.raises(OSError, match="disk full"):  # a failed overwrite keeps the old export
    hf_io.save_hf_dir(params, cfg, target, tokenizer=_FailingTokenizer(), overwrite=True)
  assert os.listdir(tmp_path) == ["export"] and hf_io.load_hf_dir(target)[0] == cfg
  params2 = jax.tree.map(lambda x: x + 1, params)
  hf_io.save_hf_dir(params2, cfg, target, overwrite=True)
  assert os.listdir(tmp_path) == ["export"]
  assert_trees_equal(hf_io.load_hf_dir(target)[1], params2)


# --- bad checkpoints: one CheckpointError naming the file and the tensor or key -------------------

def _rewrite_tensors(path, edit):
  """Rewrites a safetensors file with `edit(tensors)` applied."""
  with safetensors.safe_open(path, framework="np") as f:
    tensors = {k: f.get_tensor(k) for k in f.keys()}
  edit(tensors)
  safetensors.numpy.save_file(tensors, path, metadata={"format": "pt"})


def _last_tensor(path):
  """Name of the tensor stored last in a safetensors file (the first one a truncation cuts)."""
  header_len = int.from_bytes(path.read_bytes()[:8], "little")
  header = json.loads(path.read_bytes()[8:8 + header_len])
  header.pop("__metadata__", None)
  return max(header, key=lambda name: header[name]["data_offsets"][1])


def _missing_tensor(d):
  _rewrite_tensors(d / "model.safetensors", lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  return "model.safetensors", "model.layers.1.mlp.up_proj.weight"


def _wrong_shape(d):
  name = "model.layers.0.self_attn.k_proj.weight"
  _rewrite_tensors(d / "model.safetensors", lambda t: t.update({name: np.ascontiguousarray(t[name].T)}))
  return "model.safetensors", name


def _unexpected_tensor(d):
  name = "model.layers.0.mlp.up_proj.bias"
  _rewrite_tensors(d / "model.safetensors", lambda t: t.update({name: np.zeros(96, np.float32)}))
  return "model.safetensors", name


def _unknown_architecture(d):
  config = json.loads((d / "config.json").read_text())
  config["architectures"] = ["GPT2LMHeadModel"]
  (d / "config.json").write_text(json.dumps(config))
  return "config.json", "architectures"


def _bad_json(d):
  (d / "config.json").write_text('{"architectures": ["LlamaForCausalLM"],')
  return "config.json", "JSON"


def _no_config(d):
  (d / "config.json").unlink()
  return "config.json", "not found"


def _truncated(d):
  path = d / "model.safetensors"
  last = _last_tensor(path)
  path.write_bytes(path.read_bytes()[:-100])
  return "model.safetensors", last


def _truncated_header(d):
  path = d / "model.safetensors"
  path.write_bytes(path.read_bytes()[:50])
  return "model.safetensors", "truncated"


def _missing_shard(d):
  weight_map = json.loads((d / hf_io.INDEX_FILE).read_text())["weight_map"]
  shards = list(weight_map.values())
  name, shard = next((n, s) for n, s in weight_map.items() if shards.count(s) == 1)  # a 1-tensor shard
  (d / shard).unlink()
  return shard, name


BAD = {f.__name__.lstrip("_"): f for f in (
    _missing_tensor, _wrong_shape, _unexpected_tensor, _unknown_architecture, _bad_json,
    _no_config, _truncated, _truncated_header, _missing_shard)}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_checkpoint_raises_one_clear_error(case, llama_dir, sharded_dir, tmp_path):
  source = sharded_dir[1] if case == "missing_shard" else llama_dir[1]
  directory = shutil.copytree(source, tmp_path / "checkpoint")
  file_name, tensor_or_key = BAD[case](directory)
  result = None
  with pytest.raises(CheckpointError) as error:
    result = hf_io.load_hf_dir(directory)
  assert result is None
  assert file_name in str(error.value) and tensor_or_key in str(error.value), str(error.value)


def test_missing_tokenizer_is_a_clear_error(llama_dir, tmp_path):
  with pytest.raises(CheckpointError, match="tokenizer"):
    hf_io.load_tokenizer(llama_dir[1])  # weights only, no tokenizer files
  with pytest.raises(CheckpointError, match="not found"):
    hf_io.load_tokenizer(tmp_path / "absent")
