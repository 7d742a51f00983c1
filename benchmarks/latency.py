"""Per-user recommendation latency of every reasoning mode, and of transformers' constrained beams.

Scores test users of a trained workdir with the real jitted inference (`inference.recommend`:
prompt, the mode's reasoning, trie-constrained beam search of width `config.eval.beam_width`) at
batch 1 and batch 64, and prints the per-user latency with its ratio to `none`, the mean depth and
the mean rationale length (`cot`). Compile time is excluded (each shape is run once first).

Beside it, the way PyTorch peers decode (transformers `generate` with `num_beams` and a
`prefix_allowed_tokens_fn` over the same SID trie) runs on the same weights as `none`, with the
ratio to lasar_jax and the agreement of the two ranked lists.

  python benchmarks/latency.py --workdir=workdir
  python benchmarks/latency.py --workdir=runs/office --config.data.format=lcrec \
      --config.data.path=../shared/data/amazon2014_office --config.data.name=Office_Products

Pass the same `--config` and overrides as the run that trained the workdir. A mode's weights are
its own trained stage (GRPO when trained, else Stage 2); a mode not trained in the
workdir runs on the Stage-1 weights with freshly initialized reasoning parameters (marked
`stage1*` in the table: its latency is meaningful, its depth and rationale length are not).
Writes WORKDIR/latency.json: mode -> {"batch1_ms": ..., "batch64_ms": ..., ...}.
"""

import pathlib
import platform
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/grpo.py", "Config of the run that trained --workdir (same overrides).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding the trained stages.")
_MODES = flags.DEFINE_list("modes", "none,pause,cot,latent,lasar", "Reasoning modes to time.")
_USERS_BATCH1 = flags.DEFINE_integer("users_batch1", 32, "Test users timed one at a time.")
_USERS_BATCH64 = flags.DEFINE_integer("users_batch64", 256, "Test users timed in batches of 64.")
_TRANSFORMERS = flags.DEFINE_bool(
    "transformers", True, "Also time transformers generate(num_beams, prefix_allowed_tokens_fn) "
    "on the `none` weights (needs torch, from the test extra).")
_HF_USERS = flags.DEFINE_integer("hf_users", 64, "Test users transformers decodes in batches of 64.")
_HF_USERS_BATCH1 = flags.DEFINE_integer("hf_users_batch1", 16,
                                        "Test users transformers decodes one at a time.")
flags.mark_flags_as_required(["workdir"])

BATCH_SIZES = (1, 64)


def model_dir_for(workdir: pathlib.Path, mode: str) -> tuple[pathlib.Path, bool]:
  """(directory of the model `mode` is timed with, whether it was trained for that mode)."""
  from lasar_jax.sft import rec_model
  from lasar_jax.stages import common, ground_stage, grpo_stage, latent_stage

  candidates = [workdir / grpo_stage.stage_name(mode), workdir / latent_stage.stage_name(mode)]
  for directory in candidates:
    if (directory / common.SUMMARY_FILE).is_file() and rec_model.is_saved(directory):
      return directory, True
  stage1 = workdir / ground_stage.STAGE
  if not rec_model.is_saved(stage1):
    raise FileNotFoundError(f"no trained model in {workdir}: run configs/grpo.py there first")
  return stage1, False


def fresh_reasoning_params(config, rec) -> dict:
  """Freshly initialized projection / Policy Head of `config.reasoning.mode` (for a stand-in
  model; {} for token modes)."""
  from lasar_jax.stages import latent_stage

  params, _, _ = latent_stage.init_trainable(config, rec)
  return {k: v for k, v in params.items() if k != "backbone"} if "backbone" in params else {}


def time_mode(config, workdir, data, codes, mode: str) -> dict:
  """Latency per user at each batch size, mean depth and rationale length of one mode."""
  import ml_collections

  from lasar_jax import evaluation, trained
  from lasar_jax.sid import trie as trie_lib

  model_dir, own = model_dir_for(workdir, mode)
  rec, reasoning_params, spec = trained.load_model(config, model_dir, mode)
  if not own:
    mode_config = ml_collections.ConfigDict(config.to_dict())
    mode_config.reasoning.mode = mode
    reasoning_params = fresh_reasoning_params(mode_config, rec)
  trie = trie_lib.build_trie(codes)
  users = max(_USERS_BATCH1.value, _USERS_BATCH64.value)
  prompt_list, _, _ = evaluation.split_prompts(data, "test", rec, spec, config.sft.max_title_tokens,
                                               users)
  row = {"weights": model_dir.name if own else f"{model_dir.name}*"}
  for batch, count in zip(BATCH_SIZES, (_USERS_BATCH1.value, _USERS_BATCH64.value)):
    ranked = evaluation.rank(rec, reasoning_params, spec, trie, prompt_list[:count],
                             config.eval.beam_width, batch, desc=f"{mode} batch {batch}")
    row[f"batch{batch}_ms"] = ranked["latency_ms_per_user"]
    if batch == BATCH_SIZES[-1]:
      row.update(avg_depth=float(ranked["depth"].mean()),
                 avg_rationale_tokens=float(ranked["rationale_tokens"].mean()),
                 items=ranked["items"])
  return row


def allowed_tokens_fn(item_tokens, prompt_width: int):
  """`prefix_allowed_tokens_fn` over the SID trie of `item_tokens` [I, L'] (token ids)."""
  children: dict[tuple, list[int]] = {}
  for sid in item_tokens.tolist():
    for depth in range(len(sid)):
      children.setdefault(tuple(sid[:depth]), [])
      if sid[depth] not in children[tuple(sid[:depth])]:
        children[tuple(sid[:depth])].append(sid[depth])

  def allowed(batch_id, input_ids):
    del batch_id
    return children.get(tuple(input_ids[prompt_width:].tolist()), [])

  return allowed


def time_transformers(config, workdir, data, codes, jax_items) -> dict:
  """transformers `generate` with constrained beams on the `none` weights: latency per user at
  each batch size, and agreement of its ranked items with lasar_jax's (same users)."""
  import numpy as np
  import torch
  import transformers

  from lasar_jax import evaluation, inference
  from lasar_jax.sft import rec_model

  model_dir, _ = model_dir_for(workdir, "none")
  rec = rec_model.load_rec_model(model_dir, dtype=config.model.dtype)
  spec = inference.ReasoningSpec(mode="none")
  model = transformers.AutoModelForCausalLM.from_pretrained(model_dir / "model",
                                                            dtype=torch.float32).eval()
  prompt_list, _, _ = evaluation.split_prompts(data, "test", rec, spec, config.sft.max_title_tokens,
                                               _HF_USERS.value)
  sid_to_item = {tuple(t): i for i, t in enumerate(rec.vocab.item_tokens.tolist())}
  beam, sid_len = config.eval.beam_width, rec.vocab.sid_length
  row, items = {"torch_threads": torch.get_num_threads()}, np.full((len(prompt_list), beam), -1)
  for batch, count in zip(BATCH_SIZES, (_HF_USERS_BATCH1.value, _HF_USERS.value)):
    elapsed, warm = 0.0, False
    for start in range(0, min(count, len(prompt_list)), batch):
      chunk = prompt_list[start:min(start + batch, count)]
      width = max(len(p) for p in chunk)
      tokens = np.full((len(chunk), width), rec.vocab.pad_id, np.int64)
      mask = np.zeros((len(chunk), width), np.int64)
      for j, p in enumerate(chunk):  # left padding, as HF decoder-only generation expects
        tokens[j, width - len(p):], mask[j, width - len(p):] = p, 1
      run = lambda: model.generate(  # noqa: E731
          input_ids=torch.from_numpy(tokens), attention_mask=torch.from_numpy(mask),
          num_beams=beam, num_return_sequences=beam, do_sample=False, max_new_tokens=sid_len,
          min_new_tokens=sid_len, early_stopping=True, length_penalty=0.0,
          prefix_allowed_tokens_fn=allowed_tokens_fn(rec.vocab.item_tokens, width),
          pad_token_id=rec.vocab.pad_id, eos_token_id=rec.vocab.eos_id)
      with torch.no_grad():
        if not warm:
          run()
          warm = True
        began = time.perf_counter()
        out = run()
        elapsed += time.perf_counter() - began
      generated = out[:, width:].numpy().reshape(len(chunk), beam, sid_len)
      for j in range(len(chunk)):
        items[start + j] = [sid_to_item.get(tuple(s), -1) for s in generated[j].tolist()]
    row[f"batch{batch}_ms"] = 1e3 * elapsed / min(count, len(prompt_list))
  ours = jax_items[:len(items)]
  row["top1_agreement"] = float(np.mean(items[:, 0] == ours[:, 0]))
  row["top20_overlap"] = float(np.mean([len(set(a) & set(b)) / beam for a, b in zip(items, ours)]))
  row["valid_sids"] = float(np.mean(items >= 0))
  return row


def main(argv) -> None:
  """Times every mode (and transformers), prints the table and writes WORKDIR/latency.json."""
  del argv
  from lasar_jax import atomic, reporting
  from lasar_jax.stages import common, sid_stage

  reporting.hide_library_info_logs()
  config = _CONFIG.value
  workdir = pathlib.Path(_WORKDIR.value).resolve()
  data = common.prepared_data(config, workdir)
  codes = sid_stage.load_codes(workdir)
  results = {mode: time_mode(config, workdir, data, codes, mode) for mode in _MODES.value}
  if _TRANSFORMERS.value and "none" in results:
    hf = time_transformers(config, workdir, data, codes, results["none"]["items"])
    results["transformers_generate"] = hf
  for row in results.values():
    row.pop("items", None)
  base = results.get("none")
  if base:
    for row in results.values():
      for batch in BATCH_SIZES:
        row[f"batch{batch}_vs_none"] = row[f"batch{batch}_ms"] / base[f"batch{batch}_ms"]
  if "cot" in results and "lasar" in results:
    for batch in BATCH_SIZES:
      results["lasar"][f"batch{batch}_cot_over_lasar"] = (results["cot"][f"batch{batch}_ms"] /
                                                          results["lasar"][f"batch{batch}_ms"])
  columns = ("weights", "batch1_ms", "batch1_vs_none", "batch64_ms", "batch64_vs_none",
             "avg_depth", "avg_rationale_tokens", "batch1_cot_over_lasar", "batch64_cot_over_lasar",
             "top1_agreement", "top20_overlap")
  header = "| " + " | ".join(("mode",) + columns) + " |"
  print(f"\nlatency per user ({platform.machine()}, {workdir}, beam {config.eval.beam_width})")
  print(header + "\n|" + "---|" * (len(columns) + 1))
  for mode, row in results.items():
    cells = [reporting.format_value(row[c]) if c in row else "" for c in columns]
    print("| " + " | ".join([mode] + cells) + " |")
  results["_meta"] = {"machine": platform.machine(), "beam_width": config.eval.beam_width,
                      "users_batch1": _USERS_BATCH1.value, "users_batch64": _USERS_BATCH64.value}
  atomic.write_json(workdir / "latency.json", results)
  print(f"wrote {workdir / 'latency.json'}")


if __name__ == "__main__":
  app.run(main)
