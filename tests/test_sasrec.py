"""SASRec baseline: parity with an independent PyTorch SASRec, padding invariance, ranking against
brute force, and a tiny end-to-end fit on sequences that follow an item cycle."""

import functools

import jax
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lasar_jax.baselines import sasrec
from lasar_jax.configs import baselines, common
from lasar_jax.data import prepare
from lasar_jax.data.sources.records import ItemText, RawDataset
from lasar_jax.eval import metrics as ranking
from lasar_jax.eval import popularity
from lasar_jax.train import metrics as train_metrics

NUM_ITEMS = 7


def tiny_config(**overrides):
  """The default config shrunk to the parity case (7 items, max_len 5, D 8, no dropout)."""
  cfg = baselines.sasrec_config()
  cfg.update({"max_len": 5, "hidden": 8, "layers": 2, "heads": 2, "inner": 12,
              "hidden_dropout": 0.0, "attn_dropout": 0.0, "init_std": 0.3, **overrides})
  return cfg


def random_params(cfg, seed: int = 0):
  """Initialized parameters with every leaf (LayerNorms and biases too) moved off its init."""
  params = sasrec.init_params(sasrec.make_model(cfg, NUM_ITEMS), jax.random.key(seed))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda leaf: np.asarray(leaf) + rng.normal(0, 0.2, leaf.shape).astype(
      np.float32), params)


@functools.partial(jax.jit, static_argnums=0)
def scores(model, params, items_bl, lengths_b):
  """[B, I] scores of the model without dropout."""
  return model.apply({"params": params}, items_bl, lengths_b, False)


def random_split(rng: np.random.Generator, n: int, width: int) -> prepare.Split:
  """n samples with 1..width random history items (right-padded with -1) and random targets."""
  lengths = rng.integers(1, width + 1, n).astype(np.int32)
  items = rng.integers(0, NUM_ITEMS, (n, width))
  histories = np.where(np.arange(width) < lengths[:, None], items, -1).astype(np.int32)
  return prepare.Split(users=np.arange(n, dtype=np.int32), histories=histories, lengths=lengths,
                       targets=rng.integers(0, NUM_ITEMS, n).astype(np.int32))


class TorchBlock(torch.nn.Module):
  """RecBole's post-LN block, written with plain torch modules."""

  def __init__(self, d: int, heads: int, inner: int, eps: float):
    super().__init__()
    self.heads = heads
    self.query, self.key, self.value, self.attn_out = (torch.nn.Linear(d, d) for _ in range(4))
    self.attn_norm, self.ffn_norm = torch.nn.LayerNorm(d, eps), torch.nn.LayerNorm(d, eps)
    self.ffn_in, self.ffn_out = torch.nn.Linear(d, inner), torch.nn.Linear(inner, d)

  def forward(self, x, additive_mask):
    b, l, d = x.shape
    split = lambda t: t.view(b, l, self.heads, d // self.heads).transpose(1, 2)  # [B, N, L, H]
    q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
    scores = q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5 + additive_mask
    context = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, l, d)
    x = self.attn_norm(x + self.attn_out(context))
    return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))


class TorchSASRec(torch.nn.Module):
  """RecBole's SASRec forward and full-softmax scores, the padding row left out of the scores."""

  def __init__(self, cfg):
    super().__init__()
    d = cfg.hidden
    self.item_embedding = torch.nn.Embedding(NUM_ITEMS + 1, d)
    self.position_embedding = torch.nn.Embedding(cfg.max_len, d)
    self.emb_norm = torch.nn.LayerNorm(d, cfg.layer_norm_eps)
    self.blocks = torch.nn.ModuleList(TorchBlock(d, cfg.heads, cfg.inner, cfg.layer_norm_eps)
                                      for _ in range(cfg.layers))

  def forward(self, items, lengths):
    l = items.shape[1]
    x = self.emb_norm(self.item_embedding(items) + self.position_embedding(torch.arange(l)))
    visible = torch.tril(torch.ones(l, l, dtype=torch.bool))[None, None] & (items > 0)[:, None,
                                                                                        None]
    mask = torch.where(visible, 0.0, -10000.0)
    for block in self.blocks:
      x = block(x, mask)
    user = x[torch.arange(len(items)), lengths - 1]
    return user @ self.item_embedding.weight[1:].T


def flax_key(torch_name: str, module: torch.nn.Module) -> tuple[tuple[str, ...], bool]:
  """(flax parameter path, transposed?) of a parameter of TorchSASRec."""
  *path, leaf = torch_name.split(".")
  owner = module.get_submodule(".".join(path))
  if path[0] == "blocks":
    path = [f"block_{path[1]}", *path[2:]]
  if leaf == "bias":
    return (*path, "bias"), False
  if isinstance(owner, torch.nn.Embedding):
    return (*path, "embedding"), False
  if isinstance(owner, torch.nn.LayerNorm):
    return (*path, "scale"), False
  return (*path, "kernel"), True


def leaf_at(params, path: tuple[str, ...]) -> np.ndarray:
  """The parameter at `path` of a nested dict."""
  for part in path:
    params = params[part]
  return np.asarray(params)


def torch_model(cfg, params) -> TorchSASRec:
  """TorchSASRec holding a copy of the Flax parameters (every one of them)."""
  model = TorchSASRec(cfg)
  used = set()
  with torch.no_grad():
    for name, tensor in model.named_parameters():
      path, transposed = flax_key(name, model)
      value = leaf_at(params, path)
      tensor.copy_(torch.from_numpy(np.array(value.T if transposed else value)))
      used.add(path)
  assert len(used) == len(jax.tree.leaves(params))
  return model


def batch_of(split: prepare.Split, cfg, size: int) -> dict[str, np.ndarray]:
  """A training batch of `split`, padded to `size` rows with weight 0."""
  items, lengths = sasrec.model_inputs(split, cfg.max_len)
  return sasrec.pad_rows({"items": items, "lengths": lengths, "targets": split.targets,
                          "weights": np.ones(len(split), np.float32)}, size)


def test_forward_loss_and_adam_step_match_pytorch():
  cfg = tiny_config(learning_rate=1e-2)
  params = random_params(cfg)
  split = random_split(np.random.default_rng(0), 6, 8)  # histories longer than max_len too
  batch = batch_of(split, cfg, 8)  # 2 padding rows
  model = sasrec.make_model(cfg, NUM_ITEMS)
  reference = torch_model(cfg, params)
  items, lengths = (torch.from_numpy(batch[k][:6]).long() for k in ("items", "lengths"))
  targets = torch.from_numpy(split.targets).long()

  logits = scores(model, params, batch["items"], batch["lengths"])[:6]
  torch_logits = reference(items, lengths)
  np.testing.assert_allclose(logits, torch_logits.detach().numpy(), atol=1e-5)
  loss, _ = jax.jit(sasrec.loss_fn, static_argnums=(0, 4))(model, params, batch,
                                                          jax.random.key(0), False)
  torch_loss = F.cross_entropy(torch_logits, targets)
  np.testing.assert_allclose(loss, torch_loss.item(), atol=1e-5)

  step, state = sasrec.make_train_step(model, cfg, params, seed=0)
  state, out = step(state, batch)
  optimizer = torch.optim.Adam(reference.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.999),
                               eps=1e-8)
  optimizer.zero_grad()
  F.cross_entropy(reference(items, lengths), targets).backward()
  optimizer.step()
  np.testing.assert_allclose(out["loss"], torch_loss.item(), atol=1e-5)
  for name, tensor in reference.named_parameters():
    if name.endswith("key.bias"):
      # A key bias adds q.b to every score of a query alike, so its gradient is 0 up to rounding
      # and Adam's first step there is lr x the sign of that noise, in either framework.
      assert np.abs(tensor.grad.numpy()).max() < 1e-6
      continue
    path, transposed = flax_key(name, reference)
    expected = tensor.detach().numpy()
    np.testing.assert_allclose(leaf_at(state.params, path), expected.T if transposed else expected,
                               atol=1e-5, err_msg=name)


def test_logits_of_a_row_ignore_the_other_rows_and_padding():
  cfg = tiny_config()
  params = random_params(cfg)
  model = sasrec.make_model(cfg, NUM_ITEMS)
  split = random_split(np.random.default_rng(1), 6, 5)
  items, lengths = sasrec.model_inputs(split, cfg.max_len)
  alone = np.stack([scores(model, params, items[i:i + 1], lengths[i:i + 1])[0] for i in range(6)])
  padded = sasrec.pad_rows({"items": items[::-1], "lengths": lengths[::-1]}, 9)
  mixed = scores(model, params, padded["items"], padded["lengths"])
  np.testing.assert_allclose(mixed[:6][::-1], alone, atol=1e-6)
  # Changing what sits in a row's padding positions changes nothing either.
  garbage = np.where(items > 0, items, 3)
  noisy = scores(model, params, garbage, lengths)
  clean = scores(model, params, items, lengths)
  short = lengths < cfg.max_len
  np.testing.assert_allclose(np.asarray(noisy)[short], np.asarray(clean)[short], atol=1e-6)


def test_model_inputs_keep_the_last_items_left_aligned():
  histories = np.array([[4, 5, 6, 1, 2, -1], [3, -1, -1, -1, -1, -1]], np.int32)
  split = prepare.Split(np.arange(2, dtype=np.int32), histories, np.array([5, 1], np.int32),
                        np.zeros(2, np.int32))
  items, lengths = sasrec.model_inputs(split, 3)
  np.testing.assert_array_equal(items, [[7, 2, 3], [4, 0, 0]])
  np.testing.assert_array_equal(lengths, [3, 1])
  with pytest.raises(ValueError, match="max_len=7 exceeds the data's max_history=6"):
    sasrec.model_inputs(split, 7)


def test_rank_equals_brute_force_and_excludes_exactly_the_history():
  cfg = tiny_config()
  params = random_params(cfg)
  split = random_split(np.random.default_rng(2), 11, 6)
  items, lengths = sasrec.model_inputs(split, cfg.max_len)
  scores_ni = np.asarray(scores(sasrec.make_model(cfg, NUM_ITEMS), params, items, lengths))
  ranked = sasrec.rank(params, cfg, NUM_ITEMS, split, 4, batch_size=4)
  assert ranked.dtype == np.int32 and ranked.shape == (11, 4)
  np.testing.assert_array_equal(ranked, np.argsort(-scores_ni, axis=1, kind="stable")[:, :4])
  np.testing.assert_array_equal(ranked, sasrec.rank(params, cfg, NUM_ITEMS, split, 4))

  full = sasrec.rank(params, cfg, NUM_ITEMS, split, NUM_ITEMS, batch_size=4, exclude_history=True)
  for row, scores_i, kept in zip(range(11), scores_ni, full):
    seen = set(split.history(row).tolist())
    allowed = [i for i in np.argsort(-scores_i, kind="stable") if i not in seen]
    np.testing.assert_array_equal(kept, allowed + [-1] * len(seen))


def tiny_fit_config(**overrides):
  """A small, fast SASRec for the cycle data."""
  cfg = baselines.sasrec_config()
  cfg.update({"hidden": 16, "layers": 1, "heads": 2, "inner": 32, "hidden_dropout": 0.1,
              "attn_dropout": 0.1, "learning_rate": 1e-2, "batch_size": 64, "max_epochs": 40,
              "patience": 3, "eval_batch_size": 64, **overrides})
  return cfg


def cycle_data(num_items: int = 30, num_users: int = 48) -> prepare.PreparedData:
  """Users whose purchases walk the cycle 0, 1, ..., num_items-1, 0, ... from a random start."""
  rng = np.random.default_rng(0)
  sequences = {str(u): tuple(str((start + t) % num_items) for t in range(length))
               for u, (start, length) in enumerate(zip(rng.integers(0, num_items, num_users),
                                                       rng.integers(6, 12, num_users)))}
  raw = RawDataset(items={str(i): ItemText(title=f"item {i}") for i in range(num_items)},
                   sequences=sequences, timestamps={}, split=None, drops={})
  data, _ = prepare.build(raw, common.data_config(), "cycle")
  return data


def test_fit_learns_the_cycle_stops_early_and_is_deterministic(tmp_path):
  data = cycle_data()
  cfg = tiny_fit_config()
  params, summary = sasrec.fit(data, cfg, 0, tmp_path / "a")
  again, _ = sasrec.fit(data, cfg, 0, tmp_path / "b")
  jax.tree.map(np.testing.assert_array_equal, params, again)

  counts = np.bincount(data.train.targets, minlength=data.num_items)
  popular = np.tile(popularity.popularity_ranking(counts, data.num_items, 10), (len(data.valid), 1))
  popular_ndcg = ranking.ndcg_at_k(popular, data.valid.targets, 10)
  assert summary["best_valid_ndcg@10"] > popular_ndcg + 0.5
  assert summary["epochs_run"] == summary["best_epoch"] + cfg.patience < cfg.max_epochs
  ranked = sasrec.rank(params, cfg, data.num_items, data.valid, 10)
  assert ranking.ndcg_at_k(ranked, data.valid.targets, 10) == pytest.approx(
      summary["best_valid_ndcg@10"])
  rows = train_metrics.read_rows(tmp_path / "a" / train_metrics.METRICS_FILE)
  assert [row["step"] for row in rows] == list(range(1, summary["epochs_run"] + 1))
  assert {"loss", "valid_ndcg@10", "valid_recall@10", "epoch_s"} <= set(rows[0])
  assert summary["num_params"] == sum(np.size(p) for p in jax.tree.leaves(params))

  loaded = sasrec.load_params(tmp_path / "a", cfg, data.num_items)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  with pytest.raises(ValueError, match=r"params\.npz: key 'block_0/ffn_in/bias' has shape"):
    sasrec.load_params(tmp_path / "a", tiny_fit_config(inner=8), data.num_items)
  with pytest.raises(ValueError, match=r"params\.npz: key 'item_embedding/embedding' has shape"):
    sasrec.load_params(tmp_path / "a", cfg, data.num_items + 1)


def test_config_refusals():
  data = cycle_data(num_items=10, num_users=4)
  with pytest.raises(ValueError, match="max_len=21 exceeds the data's max_history=20"):
    sasrec.fit(data, tiny_fit_config(max_len=21), 0, "/nonexistent")
  cfg = tiny_fit_config()
  cfg.hiden = 8
  with pytest.raises(ValueError, match=r"unknown fields \['hiden'\]"):
    sasrec.make_model(cfg, 10)
  with pytest.raises(ValueError, match="hidden=16 is not divisible by heads=3"):
    sasrec.make_model(tiny_fit_config(heads=3), 10)
