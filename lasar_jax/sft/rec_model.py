"""The backbone made ready for recommendation: SID and special tokens added to model and tokenizer.

A stage's trained model is saved as a Hugging Face directory (`WORKDIR/<stage>/model/`, which
transformers loads as it is) plus `rec_vocab.json`; the next stage starts from it.
"""

import dataclasses
import pathlib

import jax
import numpy as np

from lasar_jax import backbone as backbone_lib
from lasar_jax.model import hf_io
from lasar_jax.model import vocab as vocab_lib
from lasar_jax.model.config import ModelConfig
from lasar_jax.sft.rec_vocab import RecVocab, build_rec_vocab, new_tokens

REC_VOCAB_FILE = "rec_vocab.json"


@dataclasses.dataclass(frozen=True)
class RecModel:
  """A recommendation model: backbone with the extended vocabulary, and its id tables."""

  cfg: ModelConfig
  params: dict  # plain arrays
  tokenizer: object
  vocab: RecVocab


def extend_for_recommendation(model: backbone_lib.Backbone, codes_il: np.ndarray,
                              noise_scale: float = 0.0, seed: int = 0) -> RecModel:
  """Adds the SID tokens of `codes_il` and `<bot>`, `<eot>`, `<pause>` to a plain backbone; their
  rows start at the mean of the old rows plus noise of `noise_scale` old-row standard deviations
  (see `vocab.extend_model_and_tokenizer`) drawn with `seed`."""
  tokenizer = model.tokenizer
  params, cfg, ids = vocab_lib.extend_model_and_tokenizer(
      jax.device_get(model.params), model.cfg, tokenizer, new_tokens(codes_il), noise_scale,
      jax.random.key(seed))
  if tokenizer.pad_token_id is None:
    tokenizer.pad_token = tokenizer.eos_token
  vocab = build_rec_vocab(ids, codes_il, eos_id=tokenizer.eos_token_id,
                          pad_id=tokenizer.pad_token_id)
  return RecModel(cfg, params, tokenizer, vocab)


def save_rec_model(rec: RecModel, params, directory) -> None:
  """Writes `params` (trained) with the tokenizer and id tables of `rec` to `directory/model`."""
  directory = pathlib.Path(directory)
  hf_io.save_hf_dir(jax.device_get(params), rec.cfg, directory / "model", rec.tokenizer,
                    overwrite=True)
  rec.vocab.save(directory / REC_VOCAB_FILE)


def is_saved(directory) -> bool:
  """Whether `directory` holds a complete saved recommendation model."""
  directory = pathlib.Path(directory)
  return (directory / "model" / hf_io.CONFIG_FILE).is_file() and (directory / REC_VOCAB_FILE).is_file()


def load_rec_model(directory, dtype: str = "float32", param_dtype: str = "float32") -> RecModel:
  """Reads a model written by `save_rec_model`."""
  directory = pathlib.Path(directory)
  cfg, params = hf_io.load_hf_dir(directory / "model", dtype=dtype, param_dtype=param_dtype)
  tokenizer = hf_io.load_tokenizer(directory / "model")
  return RecModel(cfg, params, tokenizer, RecVocab.load(directory / REC_VOCAB_FILE))
