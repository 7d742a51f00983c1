"""Stage `compare` (`configs/compare.py`): baselines and reasoning modes on one dataset, over seeds.

  python -m lasar_jax.main --config=configs/compare.py --workdir=DIR [--config.data.*=...]

Every seed s is a whole chain in DIR/seed_<s>/ (its own SIDs, Stage 1, each mode's Stage 2, GRPO
for `compare.rl_modes`, the baselines of `lasar_jax.baselines`), so finished work is reused and
an interrupted comparison resumes with the same command. Every row is scored on the same users and
targets: valid (which selected it) and test at the first beam width, test again at each other
width (METHOD section 6 asks for 20 and 50). Writes DIR/results.json and DIR/results.md: per row
the test metrics as mean ± std over seeds, the valid NDCG@10, average depth, latency and training
time, and the paired bootstrap 95% interval over users of the test NDCG@10 difference between
`compare.reference` and the row (per-user differences averaged over seeds, then resampled).
"""

import json
import os
import pathlib
import platform
import time

import jax
import ml_collections
import numpy as np

from lasar_jax import atomic, distributed, reporting
from lasar_jax.baselines import runner as baselines
from lasar_jax.eval import bootstrap, scorer
from lasar_jax.stages import common, eval_stage, ground_stage, grpo_stage, latent_stage, sid_stage

MODES = ("none", "pause", "cot", "latent", "lasar")
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"


def parse_models(text: str) -> list[str]:
  """The row names of a comma-separated `compare.models`, checked, in the order given."""
  names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
  unknown = [name for name in names if name not in baselines.NAMES + MODES]
  if unknown or not names:
    raise ValueError(f"config.compare.models={text!r}: unknown model {unknown[0] if unknown else ''!r}"
                     f"; known: {', '.join(baselines.NAMES + MODES)}")
  return names


def seed_config(config: ml_collections.ConfigDict, seed: int, mode: str = "lasar",
                beam_width: int | None = None) -> ml_collections.ConfigDict:
  """`config` for one chain of the comparison: its seed, reasoning mode and beam width."""
  out = ml_collections.ConfigDict(config.to_dict())
  if out.data.synthetic.seed == -1:  # one data set for every seed: the seeds vary the models
    out.data.synthetic.seed = config.seed
  out.seed = seed
  out.reasoning.mode = mode
  out.eval.splits = ("valid", "test")  # valid selects, test reports
  if beam_width is not None:
    out.eval.beam_width = beam_width
  return out


def eval_dir(workdir: pathlib.Path, mode: str, beam_width: int, first_width: int) -> pathlib.Path:
  """Where the final model of `mode` is scored at `beam_width` (the first width: the eval stage's
  own directory, so `configs/eval.py` reuses it)."""
  name = eval_stage.eval_dir_name(mode)
  return workdir / (name if beam_width == first_width else f"{name}_beam{beam_width}")


def _read_json(path: pathlib.Path) -> dict:
  """A JSON file written by an earlier stage."""
  return json.loads(path.read_text())


def run_mode(config, workdir: pathlib.Path, seed: int, mode: str, data, codes) -> dict:
  """Trains (or reuses) `mode` for one seed and scores its final model; returns its record."""
  widths = tuple(config.compare.beam_widths)
  mode_config = seed_config(config, seed, mode)
  with_rl = mode in config.compare.rl_modes.split(",")
  stage1 = ground_stage.run(mode_config, workdir)
  stage2 = latent_stage.run(mode_config, workdir)
  stages = [stage1, stage2]
  final_dir = workdir / latent_stage.stage_name(mode)
  if with_rl:
    stages.append(grpo_stage.run(mode_config, workdir))
    final_dir = workdir / grpo_stage.stage_name(mode)
  record = {"rl": with_rl, "train_wall_s": sum(s.get("wall_s") or 0.0 for s in stages),
            "dirs": {}, "data": data}
  for width in widths:
    width_config = seed_config(config, seed, mode, width)
    if width != widths[0]:
      width_config.eval.splits = ("test",)  # valid selects at the first width only
    out_dir = eval_dir(workdir, mode, width, widths[0])
    eval_stage.evaluate_stage(width_config, workdir, data, codes, final_dir, mode, out_dir)
    record["dirs"][width] = str(out_dir)
  return record


def run_baseline(config, workdir: pathlib.Path, seed: int, name: str, data) -> dict:
  """Fits (or reuses) baseline `name` for one seed; its one list serves every beam width."""
  summary = baselines.run(seed_config(config, seed), workdir, name)
  out_dir = str(baselines.baseline_dir(workdir, name))
  return {"rl": False, "train_wall_s": summary["train_wall_s"],
          "dirs": {width: out_dir for width in config.compare.beam_widths}, "data": data}


def scored_users(data, max_users: int) -> int:
  """How many test users the evaluation scores (the first `max_users`; 0: all)."""
  return len(data.test) if max_users <= 0 else min(max_users, len(data.test))


def per_user_ndcg(out_dir, data, max_users: int = 0, k: int = 10) -> np.ndarray:
  """Test NDCG@k of every scored test user (the first `max_users`; 0: all), in `data.test` order,
  read back from the exported lists by the independent scorer. [U] float64"""
  count = scored_users(data, max_users)
  targets = {str(data.user_ids[u]): str(data.item_ids[t])
             for u, t in zip(data.test.users[:count], data.test.targets[:count])}
  ranks = scorer.target_ranks(pathlib.Path(out_dir) / "test_predictions.jsonl", targets)
  return np.array([scorer.ndcg_gain(ranks[user], k) for user in targets], np.float64)


def mean_std(values) -> dict:
  """{'mean', 'std'} of per-seed values (std None for one seed: nothing to estimate it from)."""
  values = np.asarray(values, np.float64)
  return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else None}


def reported_metrics(ks) -> list[str]:
  """The test columns: Recall@K and NDCG@K for every cutoff K > 1 of `eval.ks`."""
  return [f"{metric}@{k}" for k in ks if k > 1 for metric in ("recall", "ndcg")]


def summarize_row(name: str, records: list[dict], widths, reported: list[str]) -> dict:
  """One results row from the per-seed records of model `name`."""
  row = {"model": name, "rl": records[0]["rl"], "seeds": len(records)}
  for width in widths:
    test = [_read_json(pathlib.Path(r["dirs"][width]) / "test_metrics.json") for r in records]
    row[f"test_beam{width}"] = {m: mean_std([t[m] for t in test]) for m in reported}
  first = [pathlib.Path(r["dirs"][widths[0]]) for r in records]
  valid = [_read_json(d / "valid_metrics.json") for d in first if (d / "valid_metrics.json").is_file()]
  row["valid_ndcg@10"] = mean_std([v["ndcg@10"] for v in valid]) if valid else None
  test_first = [_read_json(d / "test_metrics.json") for d in first]
  row["avg_depth"] = mean_std([t.get("avg_depth", 0.0) for t in test_first])
  row["latency_ms_per_user"] = mean_std([t["latency_ms_per_user"] for t in test_first])
  row["train_wall_s"] = mean_std([r["train_wall_s"] for r in records])
  return row


def add_intervals(rows: list[dict], records: dict, config, widths) -> None:
  """Adds to each row the bootstrap interval of reference's NDCG@10 minus the row's (first width)."""
  reference = config.compare.reference
  if reference not in records:
    return
  per_user = {name: np.stack([per_user_ndcg(r["dirs"][widths[0]], r["data"],
                                            config.eval.max_users) for r in recs])
              for name, recs in records.items()}
  for row in rows:
    diff_u = bootstrap.paired_differences(per_user[reference], per_user[row["model"]])
    mean, low, high = bootstrap.bootstrap_interval(diff_u, config.compare.bootstrap_resamples,
                                                   config.compare.bootstrap_seed)
    row[f"{reference}_minus_ndcg@10"] = {"mean": mean, "low": low, "high": high}


def _cell(stat: dict | None, digits: int = 4) -> str:
  """'mean ± std' of a summarized value ('mean' alone for one seed; '-' for none)."""
  if stat is None:
    return "-"
  if stat["std"] is None:
    return f"{stat['mean']:.{digits}f}"
  return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def results_markdown(results: dict) -> str:
  """The comparison as a Markdown table, with what it compares written above it."""
  widths, reference, reported = (results["beam_widths"], results["reference"],
                                 results["reported"])
  first = widths[0]
  head = (["model", "RL", "valid N@10"] + [f"test {m.replace('recall', 'R').replace('ndcg', 'N')}"
                                            for m in reported] +
          [f"test N@10 beam {w}" for w in widths[1:]] +
          ["avg depth", "ms/user", "train s", f"{reference} − row, N@10 [95% CI]"])
  lines = [f"# Comparison on {results['dataset']}", "",
           f"{results['users']:,} test users, {results['items']:,} items; seeds "
           f"{', '.join(map(str, results['seeds']))}"
           f"{' (mean ± std over seeds)' if len(results['seeds']) > 1 else ' (one seed: no std)'}; "
           f"test columns at beam "
           f"{first} (baselines rank {results['list_length']} items, whatever the beam); the last "
           f"column is a paired bootstrap over users ({results['bootstrap_resamples']} resamples) "
           f"of the per-user test NDCG@10 difference averaged over seeds. Train s: Stage 1 + "
           f"Stage 2 (+ GRPO) for a mode, fitting for a baseline. Machine: {results['machine']}; "
           f"this invocation: {results['wall_s'] / 60:.1f} min (work finished earlier is reused, "
           f"so each row's own cost is its train s).", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row in results["rows"]:
    interval = row.get(f"{reference}_minus_ndcg@10")
    cells = ([row["model"], "yes" if row["rl"] else "no", _cell(row["valid_ndcg@10"])] +
             [_cell(row[f"test_beam{first}"][m]) for m in reported] +
             [_cell(row[f"test_beam{w}"]["ndcg@10"]) for w in widths[1:]] +
             [_cell(row["avg_depth"], 2), _cell(row["latency_ms_per_user"], 1),
              _cell(row["train_wall_s"], 0),
              "-" if interval is None else
              f"{interval['mean']:+.4f} [{interval['low']:+.4f}, {interval['high']:+.4f}]"])
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """Runs every model of `compare.models` over `compare.seeds` and writes the results table."""
  began = time.perf_counter()
  c = config.compare
  names = parse_models(c.models)
  widths = tuple(int(w) for w in c.beam_widths)
  records = {name: [] for name in names}
  for seed in range(c.seeds):
    seed_dir = workdir / f"seed_{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    base = seed_config(config, seed)
    data = common.prepared_data(base, seed_dir)
    if any(name in MODES for name in names):
      sid_stage.run(base, seed_dir)
      codes = sid_stage.load_codes(seed_dir)
    for name in names:
      reporting.say(f"compare: seed {seed}, {name}")
      if name in MODES:
        records[name].append(run_mode(config, seed_dir, seed, name, data, codes))
      else:
        records[name].append(run_baseline(config, seed_dir, seed, name, data))
  reported = reported_metrics(config.eval.ks)
  rows = [summarize_row(name, records[name], widths, reported) for name in names]
  add_intervals(rows, records, config, widths)
  results = {"dataset": data.stats.get("name") or data.stats.get("path") or data.stats["format"],
             "users": scored_users(data, config.eval.max_users),
             "items": data.num_items, "seeds": list(range(c.seeds)),
             "beam_widths": list(widths), "reference": c.reference, "reported": reported,
             "list_length": config.baselines.list_length,
             "bootstrap_resamples": c.bootstrap_resamples, "rows": rows,
             "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                        f"{jax.device_count()} {jax.default_backend()} device(s)",
             "wall_s": time.perf_counter() - began}
  markdown = results_markdown(results)

  def write():
    """results.json and results.md."""
    atomic.write_json(workdir / RESULTS_JSON, results)
    atomic.write_text(workdir / RESULTS_MD, markdown)

  distributed.write_on_primary("comparison results", write)
  reporting.say(markdown)
  return {"results": str(workdir / RESULTS_MD), "rows": len(rows), "seeds": c.seeds}
