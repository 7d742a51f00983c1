"""Local Hugging Face checkpoint directories: load, save, and their tokenizers.

A directory holds `config.json` and either `model.safetensors` or `model.safetensors.index.json`
plus the shards it lists. Loading validates everything (config, shard files, safetensors headers,
tensor names and shapes) before reading any tensor data, so a bad checkpoint raises one
`CheckpointError` naming the file and the tensor or key, and nothing half-loaded is returned.
Tensors are read as NumPy arrays (BF16 through `ml_dtypes`); nothing is placed on a device here.
"""

import json
import math
import os
import pathlib
import shutil
import struct
import tempfile

import ml_dtypes  # noqa: F401  (registers bfloat16 with NumPy: safetensors reads BF16 through it)
import numpy as np
import safetensors
import safetensors.numpy

from lasar_jax.model import convert
from lasar_jax.model.config import ModelConfig
from lasar_jax.model.convert import CheckpointError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# Element sizes (bytes) of the safetensors dtypes we read (all that NumPy can represent).
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1}


def _read_json(path: pathlib.Path) -> dict:
  """A JSON object from `path`; CheckpointError naming the file when absent or unparseable."""
  if not path.is_file():
    raise CheckpointError(f"{path}: file not found")
  try:
    value = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(value, dict):
    raise CheckpointError(f"{path}: expected a JSON object, got {type(value).__name__}")
  return value


def _weight_files(directory: pathlib.Path) -> tuple[pathlib.Path, dict[pathlib.Path, list[str]]]:
  """The file that lists the tensors (index or single file) and, per weight file, its tensors.

  For a single file the tensor list is empty (read from its header); for a sharded checkpoint it is
  the names the index assigns to that shard, so a missing shard can be reported with its tensors.
  """
  index_path = directory / INDEX_FILE
  if index_path.is_file():
    weight_map = _read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
      raise CheckpointError(f"{index_path}: key 'weight_map': missing or empty")
    shards: dict[pathlib.Path, list[str]] = {}
    for name, shard in weight_map.items():
      shards.setdefault(directory / shard, []).append(name)
    for shard, names in shards.items():
      if not shard.is_file():
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        raise CheckpointError(f"{shard}: shard listed in {index_path.name} is missing (it holds "
                              f"{', '.join(repr(n) for n in names[:3])}{more})")
    return index_path, shards
  single = directory / WEIGHTS_FILE
  if not single.is_file():
    raise CheckpointError(f"{single}: file not found (nor {INDEX_FILE}) in {directory}")
  return single, {single: []}


def read_safetensors_header(path: pathlib.Path) -> dict[str, tuple[str, tuple[int, ...]]]:
  """Tensor name -> (safetensors dtype, shape) from a file's header, checking the file is whole.

  Raises CheckpointError naming the file (and the first tensor whose bytes lie past the end of a
  truncated file) instead of the library's generic deserialization error.
  """
  size = path.stat().st_size
  with open(path, "rb") as f:
    prefix = f.read(8)
    if len(prefix) < 8:
      raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({size} bytes, no header)")
    (header_len,) = struct.unpack("<Q", prefix)
    if 8 + header_len > size:
      raise CheckpointError(f"{path}: truncated or corrupt safetensors file (header of {header_len} "
                            f"bytes, file of {size})")
    try:
      header = json.loads(f.read(header_len))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
  data_bytes = size - 8 - header_len
  entries = {}
  for name, entry in header.items():
    if name == "__metadata__":
      continue
    try:
      dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
    except (KeyError, TypeError, ValueError):
      raise CheckpointError(f"{path}: tensor {name!r}: malformed header entry {entry!r}") from None
    if end > data_bytes:
      raise CheckpointError(f"{path}: truncated safetensors file: tensor {name!r} needs bytes "
                            f"{begin}..{end} of the data section, only {data_bytes} present")
    if dtype not in _DTYPE_BYTES:
      raise CheckpointError(f"{path}: tensor {name!r}: unsupported dtype {dtype!r}")
    if end - begin != math.prod(shape) * _DTYPE_BYTES[dtype]:
      raise CheckpointError(f"{path}: tensor {name!r}: corrupt header entry {entry!r}")
    entries[name] = (dtype, shape)
  return entries


def _tensor_locations(shards: dict[pathlib.Path, list[str]]
                      ) -> dict[str, tuple[pathlib.Path, tuple[int, ...]]]:
  """Tensor name -> (file holding it, shape), from the headers; checks the index against them."""
  locations = {}
  for shard, listed in shards.items():
    header = read_safetensors_header(shard)
    for name in listed:
      if name not in header:
        raise CheckpointError(f"{shard}: missing tensor {name!r} (listed in {INDEX_FILE})")
    for name, (_, shape) in header.items():
      if name in locations:
        raise CheckpointError(f"{shard}: tensor {name!r} is also in {locations[name][0]}")
      locations[name] = (shard, shape)
  return locations


def _check_tensors(locations: dict[str, tuple[pathlib.Path, tuple[int, ...]]], cfg: ModelConfig,
                   listing: pathlib.Path) -> None:
  """CheckpointError for a missing tensor (naming the listing file) or a wrong shape (its file)."""
  for name, want in convert.expected_hf_shapes(cfg).items():
    if name not in locations:
      raise CheckpointError(f"{listing}: missing tensor {name!r} (expected shape {want})")
    file, shape = locations[name]
    if shape != want:
      raise CheckpointError(f"{file}: tensor {name!r} has shape {shape}, expected {want}")


def _read_tensors(locations: dict[str, tuple[pathlib.Path, tuple[int, ...]]]) -> dict[str, np.ndarray]:
  """Every tensor as a NumPy array; library errors re-raised naming the file and tensor."""
  by_file: dict[pathlib.Path, list[str]] = {}
  for name, (file, _) in locations.items():
    by_file.setdefault(file, []).append(name)
  tensors = {}
  for file, names in by_file.items():
    name = None
    try:
      with safetensors.safe_open(file, framework="np") as f:
        for name in names:
          tensors[name] = f.get_tensor(name)
    except (safetensors.SafetensorError, OSError, TypeError, ValueError) as e:
      raise CheckpointError(f"{file}: cannot read tensor {name!r}: {e}") from None
  return tensors


def load_hf_dir(path, **overrides) -> tuple[ModelConfig, dict]:
  """(config, NumPy params) from a local Hugging Face checkpoint directory.

  `overrides` set runtime config fields (`dtype='bfloat16'`, `param_dtype=...`, `remat=True`).
  The tensors are cast to the config's `param_dtype` (float32 unless overridden), whatever their
  stored dtype (F32, F16 or BF16). Raises CheckpointError naming the file and tensor or key.
  """
  directory = pathlib.Path(path)
  if not directory.is_dir():
    raise CheckpointError(f"{directory}: checkpoint directory not found")
  config_path = directory / CONFIG_FILE
  cfg = convert.config_from_hf(_read_json(config_path), str(config_path), **overrides)
  listing, shards = _weight_files(directory)
  locations = _tensor_locations(shards)
  _check_tensors(locations, cfg, listing)
  tensors = _read_tensors(locations)
  params = convert.params_from_hf(tensors, cfg, str(listing))
  return cfg, params


def load_tokenizer(path):
  """The tokenizer saved in a local directory (`transformers.AutoTokenizer`, no downloads)."""
  import transformers  # local: importing transformers is slow and only tokenizer users need it

  directory = pathlib.Path(path)
  if not directory.is_dir():
    raise CheckpointError(f"{directory}: tokenizer directory not found")
  try:
    return transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
  except (OSError, ValueError, KeyError) as e:
    raise CheckpointError(f"{directory}: no loadable tokenizer ({type(e).__name__}: {e})") from None


def _write_dir(directory: pathlib.Path, params: dict, cfg: ModelConfig, tokenizer) -> None:
  """Writes config.json, model.safetensors (in the config's param dtype) and the tokenizer."""
  dtype = np.dtype(cfg.param_dtype)
  tensors = {name: np.ascontiguousarray(value.astype(dtype))
             for name, value in convert.params_to_hf(params, cfg).items()}
  (directory / CONFIG_FILE).write_text(json.dumps(convert.config_to_hf(cfg), indent=2) + "\n")
  safetensors.numpy.save_file(tensors, directory / WEIGHTS_FILE, metadata={"format": "pt"})
  if tokenizer is not None:
    tokenizer.save_pretrained(str(directory))


def save_hf_dir(params: dict, cfg: ModelConfig, path, tokenizer=None, overwrite: bool = False
                ) -> pathlib.Path:
  """Writes a Hugging Face checkpoint directory that `AutoModelForCausalLM` loads; returns its path.

  The directory is written as a temporary sibling and renamed into place, so `path` is never
  half-written. An existing `path` is an error unless `overwrite`, which replaces it once the new
  directory is complete. `params` may be boxed or plain, on any device.
  """
  target = pathlib.Path(path)
  if target.exists() and not overwrite:
    raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
  target.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
  staging.chmod(0o755)  # mkdtemp makes it private; the export is an ordinary directory
  try:
    _write_dir(staging, params, cfg, tokenizer)
    if target.exists():
      old = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
      os.replace(target, old / target.name)
      os.replace(staging, target)
      shutil.rmtree(old)
    else:
      os.replace(staging, target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return target
