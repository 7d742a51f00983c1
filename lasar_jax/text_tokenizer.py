"""A byte-level BPE tokenizer trained on a data set's own text, for backbones trained from scratch.

Pretrained checkpoints bring their tokenizer; a scratch backbone gets this one, so that the same
code paths (item text, prompts, rationales) work for both. Byte-level: any text round-trips.
"""

import pathlib

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lasar_jax import atomic

PAD, EOS = "<pad>", "<eos>"


def train_tokenizer(texts, vocab_size: int) -> transformers.PreTrainedTokenizerFast:
  """Trains a byte-level BPE of at most `vocab_size` entries (incl. `<pad>`, `<eos>`) on `texts`."""
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tokenizer.train_from_iterator(texts, trainer)
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD,
                                              eos_token=EOS)


def load_or_train_tokenizer(directory: pathlib.Path, texts, vocab_size: int):
  """The tokenizer saved in `directory`, or a new one trained on `texts` and saved there."""
  directory = pathlib.Path(directory)
  if (directory / "tokenizer.json").exists():
    return transformers.PreTrainedTokenizerFast.from_pretrained(str(directory))
  tokenizer = train_tokenizer(texts, vocab_size)
  with atomic.directory(directory) as tmp:
    tokenizer.save_pretrained(str(tmp))
  return tokenizer
