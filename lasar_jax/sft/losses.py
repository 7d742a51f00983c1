"""Loss functions of the supervised stages, as `(params, batch, rng) -> (loss, metrics)`."""

import jax.numpy as jnp
import ml_collections
import numpy as np

from lasar_jax import losses
from lasar_jax.model import transformer
from lasar_jax.model.config import ModelConfig
from lasar_jax.reasoning import alignment, latent, policy_head


def max_response_targets(examples) -> int:
  """Most loss positions (`loss_mask` tokens after the first) in one of `examples`: the
  `max_targets` of `response_loss_fn` for batches of them."""
  return max(int(np.sum(e["loss_mask"][1:])) for e in examples)


def response_loss_fn(cfg: ModelConfig, max_targets: int = 0):
  """Next-token cross entropy on the response tokens (`loss_mask`) of padded `tokens` batches.

  `max_targets` > 0 (at least every row's number of loss positions, `max_response_targets`): the
  LM head runs on each row's loss positions only, moved to the front by a stable sort, instead of
  on every position (prompts are most of a Stage-1 sequence). Same loss and gradients.
  """
  model = transformer.Decoder(cfg)

  def loss_fn(params, batch, rng):
    del rng
    tokens_bt, mask_bt = batch["tokens"], batch["mask"]
    target_mask_bt = batch["loss_mask"][:, 1:] & mask_bt[:, 1:]  # position t predicts token t+1
    targets_bt = tokens_bt[:, 1:]
    positions_bt = transformer.positions_from_mask(mask_bt)
    if 0 < max_targets < targets_bt.shape[1]:
      _, hidden_btd, _ = model.apply({"params": params}, tokens_bt, mask=mask_bt,
                                     positions=positions_bt, return_logits=False)
      order_br = jnp.argsort(~target_mask_bt, axis=1, stable=True)[:, :max_targets]  # R targets
      hidden_brd = jnp.take_along_axis(hidden_btd[:, :-1], order_br[..., None], axis=1)
      logits_brv = model.apply({"params": params}, hidden_brd, method=transformer.Decoder.logits)
      ce, metrics = losses.token_cross_entropy(
          logits_brv, jnp.take_along_axis(targets_bt, order_br, axis=1),
          jnp.take_along_axis(target_mask_bt, order_br, axis=1))
    else:
      logits_btv, _, _ = model.apply({"params": params}, tokens_bt, mask=mask_bt,
                                     positions=positions_bt)
      ce, metrics = losses.token_cross_entropy(logits_btv[:, :-1], targets_bt, target_mask_bt)
    return ce, {"response_ce": ce, "token_accuracy": metrics["accuracy"]}

  return loss_fn


def latent_loss_fn(cfg: ModelConfig, reasoning: ml_collections.ConfigDict, aligned: bool):
  """Loss of the latent modes over `{backbone, projection?, policy?}` params.

  `latent` (aligned=False): CE of the SID after `depth` latent steps. `lasar` (aligned=True):
  `sid_ce + lambda_kl * bkl + lambda_pol * policy_ce` (METHOD section 4, Stage 2), where bkl
  aligns latent step k with CoT anchor k for k < min(depth, num_anchors) and the Policy Head
  learns the rationale length from the prompt's last hidden state.
  """
  model = transformer.Decoder(cfg)
  head = policy_head.PolicyHead(reasoning.max_depth, reasoning.policy_hidden)

  def loss_fn(params, batch, rng):
    del rng
    suffix_bs = batch["suffix"]
    suffix_mask_bs = jnp.ones_like(suffix_bs, bool)
    out = latent.latent_forward(
        params["backbone"], cfg, batch["prompt"], batch["mask"], batch["depth"], suffix_bs,
        suffix_mask_bs, reasoning.max_depth, params.get("projection"), remat=reasoning.remat)
    sid_ce, metrics = losses.token_cross_entropy(out.suffix_logits_bsv[:, :-1], suffix_bs[:, 1:],
                                                 suffix_mask_bs[:, 1:])
    terms = {"sid_ce": sid_ce, "sid_token_accuracy": metrics["accuracy"]}
    loss = sid_ce
    if aligned:
      head_fn = lambda h: model.apply({"params": params["backbone"]}, h,  # noqa: E731
                                      method=transformer.Decoder.logits)
      steps_k = jnp.arange(reasoning.max_depth)
      aligned_bk = steps_k[None, :] < jnp.minimum(batch["depth"], batch["num_anchors"])[:, None]
      bkl, _ = alignment.bidirectional_kl(out.latent_hidden_bkd, batch["anchors"], head_fn,
                                          reasoning.tau, aligned_bk)
      depth_logits = head.apply({"params": params["policy"]}, out.prompt_hidden_bd)
      policy_ce, policy_metrics = policy_head.policy_loss(depth_logits, batch["depth"])
      loss = loss + reasoning.lambda_kl * bkl + reasoning.lambda_pol * policy_ce
      terms.update(bkl=bkl, policy_ce=policy_ce, policy_accuracy=policy_metrics["accuracy"])
    return loss, terms

  return loss_fn
