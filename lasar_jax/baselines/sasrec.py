"""SASRec (Kang & McAuley, 2018) laid out as RecBole 1.2.1 builds it, trained on the prepared data.

  params, summary = sasrec.fit(data, baselines.sasrec_config(), seed, out_dir)
  items_nk = sasrec.rank(params, cfg, data.num_items, data.test, k=50)

Model (RecBole's `SASRec`): an item embedding [I+1, D] (row 0 = padding, item i at row i+1) plus a
learned position embedding [L, D], LayerNorm and dropout, then `layers` post-LN blocks,
`LayerNorm(x + dropout(attention(x)))` and `LayerNorm(x + dropout(ffn(x)))`, whose self-attention
adds -10000 to the scores of later and of padding keys (RecBole's mask). A history is its last
`max_len` items, left-aligned (position 0 = the oldest kept item); the user's representation is the
hidden state at its last real item (the last block computes only that position, which causal
attention makes exact), and an item's score is that state times the item's embedding (tied, the
padding row left out). Training: softmax cross-entropy over all items on every prefix of
each user's training items (`data.train`, RecBole's data augmentation), Adam, one epoch a pass,
early stopping on validation NDCG@10 with the best parameters kept.

`fit` writes to out_dir: metrics.jsonl and tensorboard/ (one row per epoch, `MetricsWriter`) and
params.npz (the best parameters, names 'a/b/c'), which `load_params` reads back.
"""

import functools
import math
import pathlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from flax import traverse_util

from lasar_jax import atomic, sharding
from lasar_jax.configs import common
from lasar_jax.data.prepare import PreparedData, Split
from lasar_jax.eval import metrics as ranking
from lasar_jax.train import loop
from lasar_jax.train import metrics as train_metrics

FIELDS = ("max_len", "hidden", "layers", "heads", "inner", "hidden_dropout", "attn_dropout",
          "activation", "layer_norm_eps", "init_std", "learning_rate", "weight_decay",
          "batch_size", "max_epochs", "patience", "eval_every", "valid_users", "eval_batch_size",
          "exclude_history")  # every field of `configs.baselines.sasrec_config`, each one read
POSITIVE = ("max_len", "hidden", "layers", "heads", "inner", "batch_size", "max_epochs",
            "patience", "eval_every", "eval_batch_size")
ACTIVATIONS = {"gelu": functools.partial(nn.gelu, approximate=False), "relu": nn.relu,
               "swish": nn.swish, "tanh": jnp.tanh, "sigmoid": nn.sigmoid}  # RecBole's choices
MASKED = -10000.0  # added to the attention scores of keys a query may not see (RecBole)
PARAMS_FILE = "params.npz"
VALID_K = 10  # early stopping watches valid NDCG@VALID_K


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError when `cfg` lacks a field, has one this module does not read, or holds a
  value that cannot work."""
  unknown, missing = sorted(set(cfg.keys()) - set(FIELDS)), sorted(set(FIELDS) - set(cfg.keys()))
  if unknown or missing:
    raise ValueError(f"SASRec config: unknown fields {unknown}, missing fields {missing}")
  for key in POSITIVE:
    if int(cfg[key]) < 1:
      raise ValueError(f"SASRec config: {key}={cfg[key]} must be >= 1")
  if cfg.hidden % cfg.heads:
    raise ValueError(f"SASRec config: hidden={cfg.hidden} is not divisible by heads={cfg.heads}")
  if cfg.activation not in ACTIVATIONS:
    raise ValueError(f"SASRec config: activation={cfg.activation!r} is not one of "
                     f"{', '.join(ACTIVATIONS)}")


class Block(nn.Module):
  """A post-LN transformer block: causal multi-head self-attention, then the feed-forward."""

  heads: int  # attention heads N
  inner: int  # feed-forward width
  hidden_dropout: float  # dropout after the attention output and the feed-forward
  attn_dropout: float  # dropout on the attention probabilities
  activation: str  # key of ACTIVATIONS
  layer_norm_eps: float  # LayerNorm epsilon
  init_std: float  # std of the kernels' normal init

  @nn.compact
  def __call__(self, x_bqd: jax.Array, x_bkd: jax.Array, visible_bqk: jax.Array,
               train: bool) -> jax.Array:
    """[B, Q, D] hidden states after the block at the query positions `x_bqd`, which attend to the
    positions `x_bkd` [B, K, D] that `visible_bqk` [B, Q, K] allows (Q = K = L but in the last
    block, which only needs each row's last real position)."""
    b, d = x_bqd.shape[0], x_bqd.shape[-1]
    dense = functools.partial(nn.Dense, kernel_init=nn.initializers.normal(self.init_std))
    heads = lambda name, x: dense(d, name=name)(x).reshape(b, -1, self.heads, d // self.heads)
    q_bqnh, k_bknh, v_bknh = heads("query", x_bqd), heads("key", x_bkd), heads("value", x_bkd)
    scores_bnqk = jnp.einsum("BQNH,BKNH->BNQK", q_bqnh, k_bknh) / math.sqrt(d // self.heads)
    scores_bnqk = scores_bnqk + jnp.where(visible_bqk[:, None], 0.0, MASKED)
    probs_bnqk = nn.Dropout(self.attn_dropout)(nn.softmax(scores_bnqk, axis=-1),
                                               deterministic=not train)
    context_bqd = jnp.einsum("BNQK,BKNH->BQNH", probs_bnqk, v_bknh).reshape(x_bqd.shape)
    attended_bqd = nn.Dropout(self.hidden_dropout)(dense(d, name="attn_out")(context_bqd),
                                                   deterministic=not train)
    x_bqd = nn.LayerNorm(self.layer_norm_eps, name="attn_norm")(x_bqd + attended_bqd)
    inner_bqf = ACTIVATIONS[self.activation](dense(self.inner, name="ffn_in")(x_bqd))
    ffn_bqd = nn.Dropout(self.hidden_dropout)(dense(d, name="ffn_out")(inner_bqf),
                                              deterministic=not train)
    return nn.LayerNorm(self.layer_norm_eps, name="ffn_norm")(x_bqd + ffn_bqd)


class SASRec(nn.Module):
  """Scores of every item after each row's history (see the module docstring)."""

  num_items: int  # I, items of the catalog
  max_len: int  # L, history positions
  hidden: int  # D
  layers: int  # transformer blocks
  heads: int  # attention heads
  inner: int  # feed-forward width
  hidden_dropout: float  # dropout after the embeddings, attention output and feed-forward
  attn_dropout: float  # dropout on the attention probabilities
  activation: str  # key of ACTIVATIONS
  layer_norm_eps: float  # LayerNorm epsilon
  init_std: float  # std of the normal init of embeddings and kernels

  @nn.compact
  def __call__(self, items_bl: jax.Array, lengths_b: jax.Array, train: bool) -> jax.Array:
    """[B, I] f32 scores.

    Args:
      items_bl: [B, L] int32 item index + 1, oldest first, 0 after the last real item.
      lengths_b: [B] int32 real items of each row (>= 1 for a meaningful score).
      train: dropout on (needs the 'dropout' rng) or off.
    """
    init = nn.initializers.normal(self.init_std)
    item_embedding = nn.Embed(self.num_items + 1, self.hidden, embedding_init=init,
                              name="item_embedding")
    positions_l = jnp.arange(items_bl.shape[1])
    x_bld = item_embedding(items_bl) + nn.Embed(
        self.max_len, self.hidden, embedding_init=init, name="position_embedding")(positions_l)
    x_bld = nn.LayerNorm(self.layer_norm_eps, name="emb_norm")(x_bld)
    x_bld = nn.Dropout(self.hidden_dropout)(x_bld, deterministic=not train)
    causal_qk = positions_l[:, None] >= positions_l[None, :]
    visible_bqk = causal_qk[None] & (items_bl > 0)[:, None, :]
    block = lambda i: Block(self.heads, self.inner, self.hidden_dropout, self.attn_dropout,
                            self.activation, self.layer_norm_eps, self.init_std, name=f"block_{i}")
    for i in range(self.layers - 1):
      x_bld = block(i)(x_bld, x_bld, visible_bqk, train)
    # Attention is causal, so the last block runs only each row's last real position as a query.
    last_b11 = jnp.maximum(lengths_b - 1, 0)[:, None, None]
    user_b1d = block(self.layers - 1)(jnp.take_along_axis(x_bld, last_b11, axis=1), x_bld,
                                      jnp.take_along_axis(visible_bqk, last_b11, axis=1), train)
    return user_b1d[:, 0] @ item_embedding.embedding[1:].T  # [B, I]


def make_model(cfg: ml_collections.ConfigDict, num_items: int) -> SASRec:
  """The module `cfg` describes, over a catalog of `num_items` items."""
  check_config(cfg)
  return SASRec(num_items=num_items, max_len=cfg.max_len, hidden=cfg.hidden, layers=cfg.layers,
                heads=cfg.heads, inner=cfg.inner, hidden_dropout=cfg.hidden_dropout,
                attn_dropout=cfg.attn_dropout, activation=cfg.activation,
                layer_norm_eps=cfg.layer_norm_eps, init_std=cfg.init_std)


def init_params(model: SASRec, key: jax.Array):
  """Freshly initialized parameters (RecBole's init: normal kernels, zero biases, LayerNorm 1/0)."""
  items_bl, lengths_b = jnp.zeros((1, model.max_len), jnp.int32), jnp.ones((1,), jnp.int32)
  return jax.jit(lambda k: model.init({"params": k}, items_bl, lengths_b, False)["params"])(key)


def model_inputs(split: Split, max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """The last `max_len` history items of each sample as the model reads them.

  Returns:
    items [N, L] int32 (item index + 1, oldest first, 0 after the last real item) and
    lengths [N] int32 (real items, at most L).
  """
  width = split.histories.shape[1]
  if max_len > width:
    raise ValueError(f"SASRec max_len={max_len} exceeds the data's max_history={width} (history "
                     "items kept per sample); lower max_len or prepare with a larger max_history")
  if np.any(split.lengths < 1):
    raise ValueError(f"SASRec needs at least one history item per sample; "
                     f"{int(np.sum(split.lengths < 1))} samples have none")
  kept_n = np.minimum(split.lengths, max_len)
  columns_nl = (split.lengths - kept_n)[:, None] + np.arange(max_len)
  items_nl = np.take_along_axis(split.histories, np.minimum(columns_nl, width - 1), axis=1) + 1
  items_nl = np.where(np.arange(max_len) < kept_n[:, None], items_nl, 0)
  return items_nl.astype(np.int32), kept_n.astype(np.int32)


def pad_rows(arrays: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """Each array with zero rows appended up to `size` rows (weight 0, empty history)."""
  return {name: np.pad(a, [(0, size - len(a))] + [(0, 0)] * (a.ndim - 1))
          for name, a in arrays.items()}


def loss_fn(model: SASRec, params, batch: dict[str, jax.Array], rng: jax.Array,
            train: bool) -> tuple[jax.Array, dict]:
  """(mean cross-entropy of each real row's target over all items, no other terms).

  `batch`: items [B, L] and lengths [B] (`model_inputs`), targets [B] int32 item indices,
  weights [B] f32 (1 for a real row, 0 for padding).
  """
  logits_bi = model.apply({"params": params}, batch["items"], batch["lengths"], train,
                          rngs={"dropout": rng})
  ce_b = optax.softmax_cross_entropy_with_integer_labels(logits_bi, batch["targets"])
  weights_b = batch["weights"]
  total = jnp.sum(jnp.where(weights_b > 0, ce_b * weights_b, 0.0))
  return total / jnp.maximum(jnp.sum(weights_b), 1.0), {}


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with torch.optim.Adam's coupled L2 (`weight_decay` x params added to the gradient)."""
  return optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.adam(cfg.learning_rate))


def make_train_step(model: SASRec, cfg: ml_collections.ConfigDict, params, seed: int):
  """(step, state): `step(state, batch) -> (state, metrics)` is one jitted Adam update on one
  device that donates `state` (`lasar_jax.train.loop`); `state` starts from a copy of `params`,
  its dropout keys from `seed`."""
  mesh = sharding.make_mesh(common.mesh_config(), jax.devices()[:1])
  optimizer = make_optimizer(cfg)
  params_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), params)
  shardings = loop.state_shardings(optimizer, params, params_sharding, mesh)
  state = loop.init_train_state(params, optimizer, seed, shardings)
  step = loop.make_train_step(functools.partial(loss_fn, model, train=True), optimizer,
                              shardings, mesh)
  return step, state


@functools.partial(jax.jit, static_argnames=("model", "k", "exclude_history"))
def _top_k(model: SASRec, params, items_bl, lengths_b, history_bh, k: int,
           exclude_history: bool) -> jax.Array:
  """[B, k] int32 best items of each row; -1 where fewer than k items are left to rank."""
  scores_bi = model.apply({"params": params}, items_bl, lengths_b, False)
  if exclude_history:
    rows_b1 = jnp.arange(scores_bi.shape[0])[:, None]
    seen_bi = jnp.zeros((scores_bi.shape[0], scores_bi.shape[1] + 1), bool)
    seen_bi = seen_bi.at[rows_b1, history_bh + 1].set(True)[:, 1:]  # -1 padding lands in column 0
    scores_bi = jnp.where(seen_bi, -jnp.inf, scores_bi)
  top_scores_bk, top_items_bk = jax.lax.top_k(scores_bi, k)
  return jnp.where(jnp.isneginf(top_scores_bk), -1, top_items_bk)


def rank(params, cfg: ml_collections.ConfigDict, num_items: int, split: Split, k: int,
         batch_size: int = 1024, exclude_history: bool = False) -> np.ndarray:
  """[N, k] int32 item indices of each sample of `split`, best first, by full scoring.

  Batches have a static size (min(batch_size, N); the last one padded), so one compilation serves
  a split. With `exclude_history` the items of the row's history (`split.histories`, all H of
  them) are never ranked (-1 fills the positions no item is left for).
  """
  if not 1 <= k <= num_items:
    raise ValueError(f"k={k} must be in 1..num_items ({num_items})")
  model = make_model(cfg, num_items)
  items_nl, lengths_n = model_inputs(split, cfg.max_len)
  size = min(batch_size, len(split))
  ranked = []
  for start in range(0, len(split), size):
    rows = slice(start, start + size)
    batch = pad_rows({"items": items_nl[rows], "lengths": lengths_n[rows],
                      "history": split.histories[rows]}, size)
    top_bk = _top_k(model, params, batch["items"], batch["lengths"], batch["history"], k,
                    exclude_history)
    ranked.append(np.asarray(top_bk)[:len(lengths_n[rows])])
  return np.concatenate(ranked).astype(np.int32)


def save_params(out_dir, params) -> None:
  """Writes `params` to out_dir/params.npz (names 'a/b/c'), atomically."""
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  atomic.save_npz(pathlib.Path(out_dir) / PARAMS_FILE, {name: np.asarray(v)
                                                       for name, v in flat.items()})


def load_params(out_dir, cfg: ml_collections.ConfigDict, num_items: int):
  """The parameters `fit` saved in out_dir, checked against the model `cfg` and `num_items` make;
  a missing, extra or misshapen array is a ValueError naming the file and the key."""
  path = pathlib.Path(out_dir) / PARAMS_FILE
  model = make_model(cfg, num_items)
  expected = traverse_util.flatten_dict(
      jax.eval_shape(functools.partial(init_params, model), jax.random.key(0)), sep="/")
  with np.load(path) as stored:
    flat = {name: stored[name] for name in stored.files}
  for name in sorted(set(expected) | set(flat)):
    if name not in flat or name not in expected:
      raise ValueError(f"{path}: key {name!r} is {'missing' if name not in flat else 'unknown'} "
                       f"for SASRec with this config and {num_items} items")
    if flat[name].shape != expected[name].shape:
      raise ValueError(f"{path}: key {name!r} has shape {flat[name].shape}; SASRec with this "
                       f"config and {num_items} items expects {expected[name].shape}")
  return traverse_util.unflatten_dict(flat, sep="/")


def validation_samples(valid: Split, count: int, seed: int) -> Split:
  """`valid` whole when `count` is 0 (or not below its size), else `count` samples chosen by
  `seed`, in their order."""
  if count <= 0 or count >= len(valid):
    return valid
  chosen = np.random.default_rng((seed, 1)).choice(len(valid), count, replace=False)
  return valid.subset(np.sort(chosen))


def fit(data: PreparedData, cfg: ml_collections.ConfigDict, seed: int,
        out_dir) -> tuple[dict, dict]:
  """Trains SASRec on `data.train`, early-stopped on validation NDCG@10.

  Each epoch is one pass over the training samples in a fresh order (seeded), one jitted step per
  `batch_size` samples; every `eval_every` epochs (and at the last one) the validation samples
  (`valid_users` of them, 0 = all) are ranked over all items. Training stops when `patience`
  epochs pass without a better NDCG@10; the best parameters are saved to out_dir/params.npz.
  Same seed, same data and config: the same parameters.

  Returns:
    (best params as NumPy arrays, summary: best_epoch, epochs_run, best_valid_ndcg@10,
     best_valid_recall@10, wall_s, train_s (training steps only), num_params).
  """
  began = time.perf_counter()
  model = make_model(cfg, data.num_items)
  items_nl, lengths_n = model_inputs(data.train, cfg.max_len)
  train = {"items": items_nl, "lengths": lengths_n, "targets": data.train.targets,
           "weights": np.ones(len(lengths_n), np.float32)}
  valid = validation_samples(data.valid, cfg.valid_users, seed)
  params = init_params(model, jax.random.key(seed))
  step_fn, state = make_train_step(model, cfg, params, seed)
  order_rng = np.random.default_rng((seed, 0))
  writer = train_metrics.MetricsWriter(out_dir)
  best = {"epoch": 0, "ndcg": -1.0, "recall": 0.0, "params": None}
  train_s, epoch, steps = 0.0, 0, 0
  progress = tqdm.trange(1, cfg.max_epochs + 1, desc="sasrec", unit="epoch", dynamic_ncols=True)
  try:
    for epoch in progress:
      epoch_began = time.perf_counter()
      order = order_rng.permutation(len(lengths_n))
      step_metrics = []
      for start in range(0, len(order), cfg.batch_size):
        rows = order[start:start + cfg.batch_size]
        state, out = step_fn(state, pad_rows({n: a[rows] for n, a in train.items()},
                                             cfg.batch_size))
        step_metrics.append((out, len(rows)))
      host = jax.device_get([out for out, _ in step_metrics])
      for out in host:
        steps += 1
        loop.check_finite(steps, out)
      row = {"loss": float(np.average([out["loss"] for out in host],
                                      weights=[rows for _, rows in step_metrics]))}
      train_s += time.perf_counter() - epoch_began
      evaluated = epoch % cfg.eval_every == 0 or epoch == cfg.max_epochs
      if evaluated:
        ranked_nk = rank(state.params, cfg, data.num_items, valid, VALID_K, cfg.eval_batch_size,
                         cfg.exclude_history)
        scores = ranking.ranking_metrics(ranked_nk, valid.targets, (VALID_K,))
        row.update({f"valid_ndcg@{VALID_K}": scores[f"ndcg@{VALID_K}"],
                    f"valid_recall@{VALID_K}": scores[f"recall@{VALID_K}"]})
        if scores[f"ndcg@{VALID_K}"] > best["ndcg"]:
          best = {"epoch": epoch, "ndcg": scores[f"ndcg@{VALID_K}"],
                  "recall": scores[f"recall@{VALID_K}"], "params": jax.device_get(state.params)}
      row["epoch_s"] = time.perf_counter() - epoch_began
      writer.write(epoch, row)
      progress.set_postfix(loss=f"{row['loss']:.4f}",
                           ndcg=f"{row.get(f'valid_ndcg@{VALID_K}', float('nan')):.4f}",
                           best=f"{best['ndcg']:.4f}@{best['epoch']}")
      if evaluated and epoch - best["epoch"] >= cfg.patience:
        break
  finally:
    progress.close()
    writer.close()
  save_params(out_dir, best["params"])
  summary = {"best_epoch": best["epoch"], "epochs_run": epoch,
             f"best_valid_ndcg@{VALID_K}": best["ndcg"],
             f"best_valid_recall@{VALID_K}": best["recall"],
             "wall_s": time.perf_counter() - began, "train_s": train_s,
             "num_params": int(sum(np.size(p) for p in jax.tree.leaves(best["params"])))}
  return best["params"], summary
