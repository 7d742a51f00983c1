"""Where each training sample's rationale comes from (`config.cot.source`).

  template  written from item metadata (`lasar_jax.cot.template`); offline, the default.
  llm       generated greedily by an instruction LM (`rationale_llm`: the run's backbone or
            `cot.llm_checkpoint`) from an instruction listing the history titles and the target
            title (a chat turn where the tokenizer has a template), with the answer started as
            '1.' so that the LM writes a numbered list; the output is split into steps at line
            breaks / numbering (`parse_steps`). Raw generations are cached as JSONL under the
            cache dir, one file per (model key, generation settings), one line per sample
            identity (user, target, prompt digest), appended batch by batch: an interrupted run
            resumes with the samples not cached yet.
  file      a user JSONL, one `{"user": <source user id>, "target": <source item id>,
            "steps": ["...", ...]}` line per sample, matched to samples by (user, target); the
            first line of a pair is used. Samples the file has no line for are counted, reported,
            and get the template rationale.

Whatever the source, steps are stripped, empty ones dropped, each starts with a space, and a
rationale longer than `max_steps` keeps its first max_steps-1 steps and its last one (the
conclusion); `min_steps` bounds template rationales only. A generation with no usable text falls
back to the template too (counted, reported).
"""

import hashlib
import json
import pathlib
import re

import ml_collections
import numpy as np
import tqdm

from lasar_jax import backbone as backbone_lib
from lasar_jax.cot.template import template_rationales
from lasar_jax.data.prepare import PreparedData, Split
from lasar_jax.generation import greedy_generate
from lasar_jax.item_embeddings import bucket_length

LLM_PROMPT_VERSION = 1  # bump when the instruction prompt or the cache rows change
ANSWER_START = "1."  # the answer is started for the LM, so that it continues a numbered list
MAX_PROMPT_TITLE_CHARS = 100  # a longer history / target title is cut in the instruction prompt
_CLOSING = (".", "!", "?", '"', ")")  # how a finished sentence ends
_NUMBERING = re.compile(r"^\s*(?:(?:step\s*)?\d+\s*[.):]|[-*\u2022])\s*", re.IGNORECASE)


def normalize_steps(steps, max_steps: int) -> list[str]:
  """Steps stripped, empty ones dropped, each prefixed with a space; at most `max_steps` (the
  first max_steps-1 and the last are kept)."""
  steps = [" " + s.strip() for s in steps if s.strip()]
  if len(steps) > max_steps:
    steps = steps[:max_steps - 1] + steps[-1:]
  return steps


def parse_steps(text: str) -> list[str]:
  """Reasoning steps of a generated text: one per non-empty line, list numbering ('1.', '2)',
  'Step 3:', '-') removed. Text without line breaks is one step; blank text gives none. A last
  step without closing punctuation (cut by the token limit) is dropped when others remain."""
  steps = [_NUMBERING.sub("", line).strip() for line in text.splitlines()]
  steps = [s for s in steps if s]
  if len(steps) > 1 and not steps[-1].endswith(_CLOSING):
    steps.pop()
  return steps


# --- file source -------------------------------------------------------------------------------


def read_rationale_file(path) -> dict[tuple[str, str], list[str]]:
  """(user id, target item id) -> steps of a rationale JSONL; the first line of a pair wins.

  Raises ValueError naming `path:line` at the first malformed line.
  """
  path = pathlib.Path(path)
  rationales = {}
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{line_no}: not a JSON object ({e.msg})") from None
      steps = row.get("steps") if isinstance(row, dict) else None
      if (not isinstance(row, dict) or not {"user", "target"} <= row.keys()
          or not isinstance(steps, list) or not steps
          or not all(isinstance(s, str) and s.strip() for s in steps)):
        raise ValueError(f"{path}:{line_no}: expected {{\"user\": ..., \"target\": ..., "
                         f"\"steps\": [non-empty strings, at least one]}}, got "
                         f"{line.strip()[:200]}")
      rationales.setdefault((str(row["user"]), str(row["target"])), steps)
  return rationales


def file_rationales(path, data: PreparedData, split: Split) -> tuple[list[list[str] | None], int]:
  """Each sample's steps from the file (None where it has no line), and how many have none."""
  table = read_rationale_file(path)
  found = [table.get((str(data.user_ids[u]), str(data.item_ids[t])))
           for u, t in zip(split.users, split.targets)]
  return found, sum(steps is None for steps in found)


# --- llm source --------------------------------------------------------------------------------


def rationale_llm(cot_config: ml_collections.ConfigDict,
                  backbone: backbone_lib.Backbone) -> backbone_lib.Backbone:
  """The LM that writes rationales: `backbone` (the run's) when `cot.llm_checkpoint` is '', else
  that checkpoint (HF directory, .gguf file or 'smollm2'), in `backbone`'s dtypes."""
  checkpoint = cot_config.llm_checkpoint
  if not checkpoint:
    return backbone
  gguf = checkpoint == "smollm2" or checkpoint.endswith(".gguf")
  model_config = ml_collections.ConfigDict({
      "source": "gguf" if gguf else "hf", "checkpoint": checkpoint, "preset": "",
      "dtype": backbone.cfg.dtype, "param_dtype": backbone.cfg.param_dtype, "remat": False})
  return backbone_lib.build_backbone(model_config, seed=0)


def _cut(title: str) -> str:
  return str(title)[:MAX_PROMPT_TITLE_CHARS]


def instruction(history_titles, target_title: str, max_steps: int) -> str:
  """The instruction asking for at most `max_steps` short numbered reasoning steps."""
  lines = "\n".join(f"- {_cut(t)}" for t in history_titles) or "- (nothing yet)"
  return (f"A shopper bought these items, oldest first:\n{lines}\n"
          f"The next item they bought was: {_cut(target_title)}\n"
          f"In at most {max_steps} short numbered steps, one sentence each, explain what in the "
          "shopper's history leads to this next purchase.")


def instruction_ids(tokenizer, text: str) -> list[int]:
  """Token ids of an instruction then ANSWER_START: one user turn of the chat template and the
  assistant's turn opened when the tokenizer has a template, else the text then a 'Steps:' line."""
  if getattr(tokenizer, "chat_template", None):
    text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)
  else:
    text += "\nSteps:\n"
  return tokenizer(text + ANSWER_START, add_special_tokens=False)["input_ids"]


def generate_texts(llm: backbone_lib.Backbone, prompts: list[list[int]], max_new_tokens: int,
                   batch_size: int = 16, progress: bool = True):
  """Yields (prompt indices, decoded greedy continuations) batch by batch.

  Prompts are sorted by length and right-padded to bucket lengths (one compile per bucket);
  a continuation stops at the LM's end token.
  """
  eos_id = llm.cfg.eos_token_id
  if eos_id is None:
    eos_id = llm.tokenizer.eos_token_id
  order = np.argsort([len(p) for p in prompts], kind="stable")
  longest = max(len(p) for p in prompts)
  for start in tqdm.tqdm(range(0, len(order), batch_size), desc="generating rationales",
                         unit="batch", disable=not progress):
    rows = order[start:start + batch_size]
    width = bucket_length(max(len(prompts[r]) for r in rows), longest)
    tokens = np.zeros((batch_size, width), np.int32)  # [B, T]
    mask = np.zeros((batch_size, width), bool)  # [B, T]
    mask[:, 0] = True  # filler rows of the last batch: one token, output dropped
    for j, r in enumerate(rows):
      tokens[j, :len(prompts[r])] = prompts[r]
      mask[j, :len(prompts[r])] = True
    out = np.asarray(greedy_generate(llm.params, llm.cfg, tokens, mask, max_new_tokens,
                                     eos_id))  # [B, N]
    texts = []
    for row in out[:len(rows)]:
      ends = np.flatnonzero(row == eos_id)
      texts.append(llm.tokenizer.decode(row[:ends[0] if ends.size else len(row)].tolist(),
                                        skip_special_tokens=True))
    yield rows, texts


def _digest(payload) -> str:
  return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def llm_cache_path(cache_dir, model_key: str, max_new_tokens: int) -> pathlib.Path:
  """The JSONL cache of one LM and its generation settings."""
  return pathlib.Path(cache_dir) / (
      f"llm_{_digest([model_key, max_new_tokens, LLM_PROMPT_VERSION])}.jsonl")


def read_llm_cache(path: pathlib.Path) -> dict[tuple[str, str, str], str]:
  """(user, target, prompt digest) -> generated text; a torn last line (interrupted write) is
  ignored."""
  cached = {}
  if path.exists():
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          continue
        cached[(row["user"], row["target"], row["prompt"])] = row["text"]
  return cached


def _ends_mid_line(path: pathlib.Path) -> bool:
  """Whether the file exists and its last byte is not a line break."""
  if not path.exists() or not path.stat().st_size:
    return False
  with open(path, "rb") as f:
    f.seek(-1, 2)
    return f.read() != b"\n"


def llm_texts(llm: backbone_lib.Backbone, data: PreparedData, split: Split, max_steps: int,
              max_new_tokens: int, cache_dir, batch_size: int = 16) -> list[str]:
  """The generated rationale text of every sample, from the cache of `llm.key` or generated (and
  appended to it). Only `llm.key` is read when every sample is cached."""
  instructions = [instruction([data.titles[i] for i in split.history(n)],
                              data.titles[split.targets[n]], max_steps) for n in range(len(split))]
  keys = [(str(data.user_ids[u]), str(data.item_ids[t]), _digest(text))
          for u, t, text in zip(split.users, split.targets, instructions)]
  path = llm_cache_path(cache_dir, llm.key, max_new_tokens)
  cached = read_llm_cache(path)
  todo = list({key: n for n, key in enumerate(keys) if key not in cached}.values())
  if todo:
    print(f"generating {len(todo)} rationales ({len(keys) - len(todo)} cached) into {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    prompts = [instruction_ids(llm.tokenizer, instructions[n]) for n in todo]
    torn = _ends_mid_line(path)
    with open(path, "a", encoding="utf-8") as f:
      if torn:  # end the line an interrupted write left open
        f.write("\n")
      for rows, texts in generate_texts(llm, prompts, max_new_tokens, batch_size):
        for r, text in zip(rows, texts):
          user, target, prompt = keys[todo[r]]
          text = ANSWER_START + text
          cached[keys[todo[r]]] = text
          f.write(json.dumps({"user": user, "target": target, "prompt": prompt, "text": text},
                             ensure_ascii=False) + "\n")
        f.flush()
  return [cached[key] for key in keys]


# --- dispatch ----------------------------------------------------------------------------------


def rationales_for_split(cot_config: ml_collections.ConfigDict, data: PreparedData,
                         split_name: str, seed: int, cache_dir,
                         llm: backbone_lib.Backbone | None = None,
                         batch_size: int = 16) -> list[list[str]]:
  """One rationale (1..cot.max_steps step strings) per sample of split `split_name`.

  Args:
    cot_config: `config.cot`.
    data: the prepared data.
    split_name: 'train', 'valid' or 'test'.
    seed: the run's seed (template phrasings).
    cache_dir: where the llm source caches its generations.
    llm: the LM of the llm source (see `rationale_llm`); only its key is read when every
      sample is cached.
    batch_size: prompts per generation batch (llm source).
  """
  split = data.split(split_name)
  template = template_rationales(data, split, seed, cot_config.min_steps, cot_config.max_steps,
                                 cot_config.template_mentions_target)
  if cot_config.source == "template":
    return template
  if cot_config.source == "file":
    found, missing = file_rationales(cot_config.path, data, split)
    if missing:
      print(f"cot: {missing} of {len(split)} {split_name} samples have no rationale in "
            f"{cot_config.path}; they use the template")
  elif cot_config.source == "llm":
    if llm is None:
      raise ValueError("config.cot.source 'llm' needs the LM (`rationale_llm`); its key names the "
                       "cache")
    texts = llm_texts(llm, data, split, cot_config.max_steps, cot_config.llm_max_new_tokens,
                      cache_dir, batch_size)
    found = [parse_steps(text) or None for text in texts]
    missing = sum(steps is None for steps in found)
    if missing:
      print(f"cot: {missing} of {len(split)} {split_name} generations have no text; they use the "
            "template")
  else:
    raise ValueError(f"config.cot.source {cot_config.source!r} is not template, llm or file")
  return [normalize_steps(steps, cot_config.max_steps) if steps else default
          for steps, default in zip(found, template)]
