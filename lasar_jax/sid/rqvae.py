"""RQ-VAE (TIGER): MLP encoder, residual quantization of the latent, MLP decoder.

Shape letters: N items (B in a batch), E embedding width, D latent width, L levels, K codes.

Loss per item, averaged over items (TIGER):
  ||x - x_hat||^2 + sum_l ( ||sg(r_l) - e_l||^2 + beta * ||r_l - sg(e_l)||^2 )
where r_l is the residual entering level l and e_l its nearest code. Residuals are built from
stopped codes (r_{l+1} = r_l - sg(e_l)), so a codebook gets gradient only from its own codebook
term: d/d e_{l,k} = (2 / N) * sum_{i: code_il = k} (e_{l,k} - r_il). The decoder reads the
straight-through latent z + sg(sum_l e_l - z), so the reconstruction gradient reaches the encoder.
"""

import functools
import typing

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lasar_jax.sid import rqkmeans


class MLP(nn.Module):
  """Dense layers with ReLU between them (none after the last)."""

  features: tuple[int, ...]  # output width of each layer

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., in] -> [..., features[-1]]"""
    for i, width in enumerate(self.features):
      x = nn.Dense(width)(x)
      if i < len(self.features) - 1:
        x = nn.relu(x)
    return x


class RQVAE(nn.Module):
  """Encoder, L residual codebooks of K codes, decoder. Parameters: encoder, decoder, codebooks."""

  input_dim: int  # E
  hidden_dims: tuple[int, ...]  # encoder widths (the decoder mirrors them)
  latent_dim: int  # D
  levels: int  # L
  codebook_size: int  # K

  def setup(self):
    """Builds the two MLPs and the codebooks [L, K, D] (overwritten by k-means before training)."""
    self.encoder = MLP(tuple(self.hidden_dims) + (self.latent_dim,))
    self.decoder = MLP(tuple(reversed(self.hidden_dims)) + (self.input_dim,))
    self.codebooks = self.param("codebooks", nn.initializers.normal(1.0),
                                (self.levels, self.codebook_size, self.latent_dim))

  def encode(self, x_be: jax.Array) -> jax.Array:
    """Latent of each item. [B, D]"""
    return self.encoder(x_be)

  def __call__(self, x_be: jax.Array) -> dict:
    """Forward pass: 'x_hat' [B, E] (decoded straight-through latent), 'codes' [B, L],
    'residuals' [L, B, D] entering each level, 'chosen' codes [L, B, D], 'last_cost' [B, K]."""
    z_bd = self.encoder(x_be)
    codes_bl, residuals_lbd, last_cost_bk = rqkmeans.residual_quantize(
        z_bd, jax.lax.stop_gradient(self.codebooks))  # residuals carry gradient to z only
    e_lbd = jax.vmap(lambda c_kd, code_b: c_kd[code_b])(self.codebooks, codes_bl.T)  # [L, B, D]
    zq_bd = jnp.sum(e_lbd, axis=0)
    x_hat_be = self.decoder(z_bd + jax.lax.stop_gradient(zq_bd - z_bd))  # straight-through
    return {"x_hat": x_hat_be, "codes": codes_bl, "residuals": residuals_lbd, "chosen": e_lbd,
            "last_cost": last_cost_bk}


def rqvae_loss(model: RQVAE, params, x_be: jax.Array, beta: float) -> tuple[jax.Array, dict]:
  """TIGER loss (module docstring). Returns (loss, aux) with aux['recon'], aux['quant'] and the
  forward outputs 'codes' [B, L] and 'residuals' [L, B, D]."""
  out = model.apply(params, x_be)
  recon = jnp.mean(jnp.sum((x_be - out["x_hat"]) ** 2, axis=-1))
  r_lbd, e_lbd = out["residuals"], out["chosen"]
  codebook_term = jnp.sum((jax.lax.stop_gradient(r_lbd) - e_lbd) ** 2, axis=(0, 2))  # [B]
  commit_term = jnp.sum((r_lbd - jax.lax.stop_gradient(e_lbd)) ** 2, axis=(0, 2))  # [B]
  quant = jnp.mean(codebook_term + beta * commit_term)
  aux = {"recon": recon, "quant": quant, "codes": out["codes"], "residuals": r_lbd}
  return recon + quant, aux


class TrainHParams(typing.NamedTuple):
  """Static training settings; hashable, so the jitted functions compile once per setting."""

  beta: float  # commitment weight
  batch_size: int  # items per step; <= 0 = full batch
  learning_rate: float  # AdamW learning rate
  weight_decay: float  # AdamW weight decay
  dead_code_every: int  # re-seed codes unused for this many steps; 0 = never
  kmeans_iters: int  # Lloyd iterations of the codebook initialization
  kmeans_init: str  # k-means seeding: 'kmeans++' | 'random'

  @classmethod
  def from_config(cls, cfg) -> "TrainHParams":
    """The training settings of a `sid_config()`."""
    return cls(cfg.beta, cfg.batch_size, cfg.learning_rate, cfg.weight_decay, cfg.dead_code_every,
               cfg.kmeans_iters, cfg.kmeans_init)


@flax.struct.dataclass
class TrainState:
  """Everything a train step reads and writes."""

  params: typing.Any  # RQVAE parameters {'params': {...}}
  opt_state: typing.Any  # optax state of the params
  usage: jax.Array  # [L, K] int32 uses of each code since the last dead-code re-seed
  step: jax.Array  # [] int32 train steps done


def optimizer(hp: TrainHParams) -> optax.GradientTransformation:
  """AdamW over every parameter (MLPs and codebooks)."""
  return optax.adamw(hp.learning_rate, weight_decay=hp.weight_decay)


def batch_size(hp: TrainHParams, n: int) -> int:
  """Items per step for a dataset of n items."""
  return n if hp.batch_size <= 0 else min(hp.batch_size, n)


@functools.partial(jax.jit, static_argnames=("model", "hp"))
def init_state(key: jax.Array, x_be: jax.Array, *, model: RQVAE, hp: TrainHParams) -> TrainState:
  """Random MLP weights, codebooks from residual k-means on the latents of the batch `x_be`."""
  params = model.init(jax.random.fold_in(key, 0), x_be[:1])
  z_bd = model.apply(params, x_be, method=RQVAE.encode)
  codebooks_lkd, _, _ = rqkmeans.residual_kmeans(
      jax.random.fold_in(key, 1), z_bd, model.levels, model.codebook_size, hp.kmeans_iters,
      init=hp.kmeans_init)
  params = {**params, "params": {**params["params"], "codebooks": codebooks_lkd}}
  return TrainState(params, optimizer(hp).init(params),
                    jnp.zeros((model.levels, model.codebook_size), jnp.int32), jnp.int32(0))


def reseed_dead_codes(key: jax.Array, codebooks_lkd: jax.Array, usage_lk: jax.Array,
                      residuals_lbd: jax.Array) -> jax.Array:
  """Codes never used (usage 0) become random residuals of the batch at their level. [L, K, D]"""
  levels, k = usage_lk.shape
  pick_lk = jax.random.randint(key, (levels, k), 0, residuals_lbd.shape[1])
  fresh_lkd = jax.vmap(lambda r_bd, i_k: r_bd[i_k])(residuals_lbd, pick_lk)
  return jnp.where((usage_lk == 0)[..., None], fresh_lkd, codebooks_lkd)


def train_step(state: TrainState, x_be: jax.Array, key: jax.Array, model: RQVAE,
               hp: TrainHParams) -> tuple[TrainState, dict]:
  """One AdamW step on the batch; every `hp.dead_code_every` steps, codes unused since the last
  re-seed are re-seeded from the batch's residuals (`key` picks them)."""
  (loss, aux), grads = jax.value_and_grad(
      lambda p: rqvae_loss(model, p, x_be, hp.beta), has_aux=True)(state.params)
  updates, opt_state = optimizer(hp).update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  usage_lk = state.usage + jax.vmap(
      lambda code_b: jnp.bincount(code_b, length=model.codebook_size), in_axes=1)(aux["codes"])
  step = state.step + 1
  if hp.dead_code_every > 0:
    reseed = step % hp.dead_code_every == 0
    codebooks_lkd = params["params"]["codebooks"]
    fresh_lkd = reseed_dead_codes(key, codebooks_lkd, usage_lk, aux["residuals"])
    params = {**params, "params": {**params["params"],
                                   "codebooks": jnp.where(reseed, fresh_lkd, codebooks_lkd)}}
    usage_lk = jnp.where(reseed, 0, usage_lk)
  metrics = {"loss": loss, "recon": aux["recon"], "quant": aux["quant"]}
  return TrainState(params, opt_state, usage_lk, step), metrics


@functools.partial(jax.jit, static_argnames=("model", "hp"))
def train_epoch(state: TrainState, x_ne: jax.Array, key: jax.Array, *, model: RQVAE,
                hp: TrainHParams) -> tuple[TrainState, dict]:
  """One shuffled pass in minibatches under `lax.scan` (the permutation's remainder of fewer than
  a batch is skipped this epoch). Returns the state and the epoch's mean metrics."""
  n = x_ne.shape[0]
  b = batch_size(hp, n)
  num_batches = n // b
  batches_tb = jax.random.permutation(key, n)[:num_batches * b].reshape(num_batches, b)

  def body(state, idx_b):
    return train_step(state, x_ne[idx_b], jax.random.fold_in(key, state.step), model, hp)

  state, metrics = jax.lax.scan(body, state, batches_tb)
  return state, jax.tree.map(jnp.mean, metrics)


@functools.partial(jax.jit, static_argnames=("model",))
def encode_items(params, x_ne: jax.Array, *, model: RQVAE):
  """Codes [N, L], last-level squared distances [N, K] and mean reconstruction error of items."""
  out = model.apply(params, x_ne)
  return out["codes"], out["last_cost"], jnp.mean(jnp.sum((x_ne - out["x_hat"]) ** 2, axis=-1))


def fit_rqvae(embeddings_ne: np.ndarray, cfg, seed: int) -> rqkmeans.QuantizerFit:
  """Trains an RQ-VAE per `cfg` (a `sid_config()`) and returns every item's codes.

  history: per-epoch 'loss', 'recon', 'quant' (train means), and 'final_recon', the
  reconstruction error of all items after training.
  """
  x_ne = jnp.asarray(embeddings_ne, jnp.float32)
  n = x_ne.shape[0]
  model = RQVAE(input_dim=x_ne.shape[1], hidden_dims=tuple(cfg.hidden_dims),
                latent_dim=cfg.latent_dim, levels=cfg.levels, codebook_size=cfg.codebook_size)
  hp = TrainHParams.from_config(cfg)
  key_init, key_batch, key_train = jax.random.split(jax.random.key(seed), 3)
  first_batch = jax.random.permutation(key_batch, n)[:batch_size(hp, n)]
  state = init_state(key_init, x_ne[first_batch], model=model, hp=hp)
  history = {"loss": [], "recon": [], "quant": []}
  for epoch in range(cfg.epochs):
    state, metrics = train_epoch(state, x_ne, jax.random.fold_in(key_train, epoch),
                                 model=model, hp=hp)
    for name, value in metrics.items():
      history[name].append(float(value))
  codes_nl, last_cost_nk, final_recon = encode_items(state.params, x_ne, model=model)
  history["final_recon"] = [float(final_recon)]
  return rqkmeans.QuantizerFit(np.asarray(codes_nl, np.int32),
                               np.asarray(last_cost_nk, np.float32), history)
