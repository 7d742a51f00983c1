"""Independent scorer of exported ranked lists (METHOD.md section 6), for outside users too.

  python -m lasar_jax.eval.scorer --predictions=test_predictions.jsonl --targets=targets.json

Predictions: one JSON line per user, `{"user": <source user id>, "items": [<source item ids>,
best first]}`. Targets: a .json file holding one object `{<user id>: <target item id>, ...}`, or
a .jsonl file with one `{"user": <user id>, "item": <target item id>}` line per user. Ids are
strings or integers and are compared as strings. Prints Recall@K and NDCG@K (one relevant item,
NDCG = 1 / log2(rank + 2) for a hit at 0-based rank < K) averaged over the users, as JSON.

It shares no code with `lasar_jax.eval.metrics` (plain Python loops over the file) so that the two
check each other, and uses argparse rather than absl flags so that importing it defines no flags.
"""

import argparse
import json
import math
import sys

from lasar_jax.data.errors import DataError

DEFAULT_KS = (1, 5, 10, 20)


def _source_id(value, path, line: int | None, what: str) -> str:
  """A user or item id as a string; ids are JSON strings or integers."""
  if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
    return str(value)
  raise DataError(path, f"{what} must be a string or an integer; got {value!r}", line)


def _json_lines(path):
  """Yields (line number, parsed object) for every non-blank line of a JSONL file."""
  with open(path, encoding="utf-8") as f:
    for line_no, text in enumerate(f, start=1):
      if not text.strip():
        continue
      try:
        row = json.loads(text)
      except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e.msg})", line_no) from None
      if not isinstance(row, dict):
        raise DataError(path, f"expected a JSON object; got {type(row).__name__}", line_no)
      yield line_no, row


def _rejecting_duplicates(path):
  """json object_pairs_hook that refuses a key given twice."""
  def hook(pairs):
    out = {}
    for key, value in pairs:
      if key in out:
        raise DataError(path, f"user {key!r} is given twice")
      out[key] = value
    return out
  return hook


def load_targets(path) -> dict[str, str]:
  """{user id: target item id} from a .json object or a .jsonl file of {"user", "item"} lines."""
  if str(path).endswith(".jsonl"):
    targets, first_line = {}, {}
    for line_no, row in _json_lines(path):
      if "user" not in row or "item" not in row:
        raise DataError(path, 'expected keys "user" and "item"', line_no)
      user = _source_id(row["user"], path, line_no, "user")
      if user in targets:
        raise DataError(path, f"user {user!r} appears again (first on line {first_line[user]})",
                        line_no)
      targets[user], first_line[user] = _source_id(row["item"], path, line_no, "item"), line_no
    return targets
  with open(path, encoding="utf-8") as f:
    try:
      mapping = json.load(f, object_pairs_hook=_rejecting_duplicates(path))
    except json.JSONDecodeError as e:
      raise DataError(path, f"not valid JSON ({e.msg})", e.lineno) from None
  if not isinstance(mapping, dict):
    raise DataError(path, "expected one JSON object {user id: target item id}")
  return {user: _source_id(item, path, None, f"target of user {user!r}")
          for user, item in mapping.items()}


def target_ranks(predictions_jsonl_path, targets: dict[str, str]) -> dict[str, int]:
  """{user: 0-based position of its target in its list, or -1 when absent}, in file order.

  Every user of `targets` must have exactly one line and every line's user must be in `targets`;
  otherwise a `DataError` names the file (and line). Blank lines are skipped. A target listed
  more than once counts at its first position.
  """
  path = predictions_jsonl_path
  targets = {str(user): str(item) for user, item in targets.items()}
  if not targets:
    raise DataError(path, "no target users to score")
  ranks = {}
  first_line = {}
  for line_no, row in _json_lines(path):
    if "user" not in row or "items" not in row:
      raise DataError(path, 'expected keys "user" and "items"', line_no)
    user = _source_id(row["user"], path, line_no, "user")
    if user in first_line:
      raise DataError(path, f"user {user!r} appears again (first on line {first_line[user]})",
                      line_no)
    first_line[user] = line_no
    if user not in targets:
      raise DataError(path, f"user {user!r} has no target", line_no)
    if not isinstance(row["items"], list):
      raise DataError(path, f'"items" must be a list; got {type(row["items"]).__name__}', line_no)
    items = [_source_id(item, path, line_no, "item") for item in row["items"]]
    ranks[user] = items.index(targets[user]) if targets[user] in items else -1
  missing = [user for user in targets if user not in first_line]
  if missing:
    raise DataError(path, f"{len(missing)} target users have no line, e.g. {missing[:5]}")
  return ranks


def ndcg_gain(rank: int, k: int) -> float:
  """NDCG@k of one user whose target sits at 0-based `rank` (-1: absent)."""
  return 1.0 / math.log2(rank + 2) if 0 <= rank < k else 0.0


def score_predictions_file(predictions_jsonl_path, targets: dict[str, str],
                           ks=DEFAULT_KS) -> dict[str, float]:
  """Recall@K and NDCG@K of a predictions JSONL file, averaged over the users in `targets`
  (checked as `target_ranks` says; a list shorter than K is a miss beyond its end).

  Returns:
    {'recall@k': ..., 'ndcg@k': ...} for every k in `ks`, in that order.
  """
  ks = tuple(int(k) for k in ks)
  if any(k < 1 for k in ks):
    raise ValueError(f"every k must be >= 1; got {ks}")
  ranks = target_ranks(predictions_jsonl_path, targets)
  out = {}
  for k in ks:
    out[f"recall@{k}"] = sum(0 <= r < k for r in ranks.values()) / len(ranks)
    out[f"ndcg@{k}"] = sum(ndcg_gain(r, k) for r in ranks.values()) / len(ranks)
  return out


def main(argv: list[str] | None = None) -> None:
  """Command line: score --predictions against --targets and print the metrics as JSON."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--predictions", required=True, help="predictions JSONL file")
  parser.add_argument("--targets", required=True,
                      help=".json object {user: item} or .jsonl of {\"user\", \"item\"} lines")
  parser.add_argument("--ks", default=",".join(map(str, DEFAULT_KS)),
                      help="comma-separated cutoffs K (default %(default)s)")
  args = parser.parse_args(argv)
  try:
    ks = tuple(int(k) for k in args.ks.split(","))
  except ValueError:
    parser.error(f"--ks must be comma-separated integers; got {args.ks!r}")
  try:
    targets = load_targets(args.targets)
    metrics = score_predictions_file(args.predictions, targets, ks)
  except (ValueError, OSError) as e:  # DataError is a ValueError
    sys.exit(f"error: {e}")
  print(json.dumps({"users": len(targets), **metrics}, indent=1))


if __name__ == "__main__":
  main()
