"""CoT rationales: the template (deterministic, varying K, grounded in metadata), file, llm."""

import dataclasses
import json

import flax.linen as nn
import jax
import pytest

from lasar_jax import text_tokenizer
from lasar_jax.backbone import Backbone
from lasar_jax.configs.common import cot_config, data_config
from lasar_jax.cot import sources, template
from lasar_jax.data.prepare import prepare
from lasar_jax.data.sources.records import ItemText
from lasar_jax.model import transformer
from lasar_jax.model.config import PRESETS


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """The synthetic default shop, small: 60 items, 80 users."""
  cfg = data_config()
  cfg.synthetic.num_items, cfg.synthetic.num_users = 60, 80
  return prepare(cfg, 0, tmp_path_factory.mktemp("data"))


def _cot(**changes):
  cfg = cot_config()
  cfg.update(changes)
  return cfg


def test_template_is_deterministic_and_k_varies_within_bounds(data, tmp_path):
  first = sources.rationales_for_split(_cot(), data, "train", 3, tmp_path)
  assert first == sources.rationales_for_split(_cot(), data, "train", 3, tmp_path)
  assert len(first) == len(data.train)
  counts = [len(r) for r in first]
  assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) >= 2
  bounded = sources.rationales_for_split(_cot(min_steps=2, max_steps=3), data, "train", 3, tmp_path)
  assert {len(r) for r in bounded} == {2, 3}
  assert all(step.startswith(" ") and step.strip() for r in first for step in r)


def test_template_mentions_history_and_target_metadata(data):
  split = data.train
  rationales = template.template_rationales(data, split, 0, 1, 4, mentions_target=True)
  for n, steps in enumerate(rationales):
    history, target = split.history(n), data.items[split.targets[n]]
    assert data.titles[history[-1]] in "".join(steps)  # the last purchase
    assert f"{' > '.join(target.categories[:2])} from {target.brand}" in steps[-1]
    if len(history) >= 2:  # a focus step names a recent top-level category
      recent = {data.items[i].categories[0] for i in history[-template.RECENT_ITEMS:]}
      assert any(category in steps[0] for category in recent)
  plain = template.template_rationales(data, split, 0, 1, 4, mentions_target=False)
  assert all(" > " not in step for steps in plain for step in steps)
  assert sum(map(len, plain)) < sum(map(len, rationales))


def test_template_with_titles_only(data):
  bare = dataclasses.replace(data, items=tuple(ItemText() for _ in data.items))
  split = bare.train
  rationales = template.template_rationales(bare, split, 0, 2, 4)
  for n, steps in enumerate(rationales):
    assert 2 <= len(steps) <= 4
    assert data.titles[split.history(n)[-1]] in steps[0]
    assert data.titles[split.targets[n]] in steps[-1]


def test_parse_and_normalize_steps():
  assert sources.parse_steps("1. Likes knives.\n2) Buys Acme\n\n- Step 3: wants more.") == [
      "Likes knives.", "Buys Acme", "Step 3: wants more."]
  assert sources.parse_steps("1. Likes knives.\n2. Buys Acme.\n3. The next item is a 20") == [
      "Likes knives.", "Buys Acme."]  # the step cut by the token limit goes
  assert sources.parse_steps("Step 1: one line only") == ["one line only"]
  assert sources.parse_steps(" \n ") == []
  assert sources.normalize_steps(["a", " ", "b ", "c", "d", "e"], 3) == [" a", " b", " e"]


def test_file_source_matches_by_user_and_target(data, tmp_path, capsys):
  split = data.train
  path = tmp_path / "rationales.jsonl"
  chosen = [0, 5, 9]
  keys = {(str(data.user_ids[split.users[n]]), str(data.item_ids[split.targets[n]]))
          for n in chosen}
  lines = [{"user": user, "target": target, "steps": [f"because {user}", "so", target, "x", "y"]}
           for user, target in sorted(keys)]
  path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
  found, missing = sources.file_rationales(path, data, split)
  matched = [n for n, steps in enumerate(found) if steps is not None]
  assert set(chosen) <= set(matched) and missing == len(split) - len(matched)
  assert all((str(data.user_ids[split.users[n]]), str(data.item_ids[split.targets[n]])) in keys
             for n in matched)
  rationales = sources.rationales_for_split(_cot(source="file", path=str(path)), data, "train", 0,
                                            tmp_path)
  assert f"{missing} of {len(split)} train samples have no rationale" in capsys.readouterr().out
  user = str(data.user_ids[split.users[5]])
  target = str(data.item_ids[split.targets[5]])
  assert rationales[5] == [f" because {user}", " so", f" {target}", " y"]  # clipped to 4
  template_rationales = template.template_rationales(data, split, 0, 1, 4)
  unmatched = next(n for n, steps in enumerate(found) if steps is None)
  assert rationales[unmatched] == template_rationales[unmatched]


@pytest.mark.parametrize("bad, problem", [
    ('{"user": "U1", "target": "I1", "steps": []}', "non-empty strings"),
    ('{"user": "U1", "steps": ["a"]}', "expected"),
    ('{"user": "U1", "target": "I1", "steps": ["a", 3]}', "expected"),
    ("not json", "not a JSON object"),
])
def test_file_source_malformed_line_names_file_and_line(tmp_path, bad, problem):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"user": "U0", "target": "I0", "steps": ["ok"]}\n\n' + bad + "\n")
  with pytest.raises(ValueError, match=f"{path}:3: .*{problem}"):
    sources.read_rationale_file(path)


def test_llm_source_generates_caches_and_resumes(tmp_path, capsys):
  cfg = data_config()  # 12 users, short histories: 12 valid samples, short prompts
  cfg.synthetic.num_items, cfg.synthetic.num_users, cfg.max_history = 60, 12, 3
  data = prepare(cfg, 0, tmp_path / "data")
  tokenizer = text_tokenizer.train_tokenizer([str(t) for t in data.item_texts], vocab_size=400)
  model = PRESETS["tiny"].replace(vocab_size=len(tokenizer), num_layers=2, hidden_size=64,
                                  intermediate_size=128, head_dim=16,
                                  eos_token_id=tokenizer.eos_token_id)
  params = nn.meta.unbox(transformer.init_params(model, jax.random.key(0)))
  llm = Backbone(model, params, tokenizer, key="tiny-test")
  cot = _cot(source="llm", llm_max_new_tokens=4)
  first = sources.rationales_for_split(cot, data, "valid", 0, tmp_path, llm=llm)
  assert len(first) == len(data.valid) and all(1 <= len(r) <= 4 for r in first)
  (cache,) = tmp_path.glob("llm_*.jsonl")
  rows = cache.read_text().splitlines()
  assert len(rows) == len(data.valid)  # one line per sample
  sentinel = Backbone(cfg=None, params=None, tokenizer=None, key="tiny-test")  # fails if used
  capsys.readouterr()
  assert sources.rationales_for_split(cot, data, "valid", 0, tmp_path, llm=sentinel) == first
  texts = sources.llm_texts(sentinel, data, data.valid, 4, 4, tmp_path)  # cached, sample order
  assert "generating" not in capsys.readouterr().out
  assert all(text.startswith(sources.ANSWER_START) for text in texts)
  fallback = template.template_rationales(data, data.valid, 0, 1, 4)
  assert first == [sources.normalize_steps(sources.parse_steps(text), 4) or default
                   for text, default in zip(texts, fallback)]
  cache.write_text("\n".join(rows[:5]) + '\n{"user": "torn')  # interrupted after 5 samples
  sources.rationales_for_split(cot, data, "valid", 0, tmp_path, llm=llm)
  assert f"generating {len(data.valid) - 5} rationales (5 cached)" in capsys.readouterr().out
  assert len(sources.read_llm_cache(cache)) == len(data.valid)
  assert len(cache.read_text().splitlines()) == 6 + len(data.valid) - 5  # only the rest appended
  other = Backbone(cfg=None, params=None, tokenizer=None, key="other-model")
  with pytest.raises(Exception):  # another model's key does not read this cache: it generates
    sources.rationales_for_split(cot, data, "valid", 0, tmp_path, llm=other)
  assert f"generating {len(data.valid)} rationales (0 cached)" in capsys.readouterr().out
