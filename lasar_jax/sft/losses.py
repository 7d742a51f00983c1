"""Loss functions of the supervised stages, as `(params, batch, rng) -> (loss, metrics)`."""

from lasar_jax import losses
from lasar_jax.model import transformer
from lasar_jax.model.config import ModelConfig


def response_loss_fn(cfg: ModelConfig):
  """Next-token cross entropy on the response tokens (`loss_mask`) of padded `tokens` batches."""
  model = transformer.Decoder(cfg)

  def loss_fn(params, batch, rng):
    del rng
    tokens_bt, mask_bt = batch["tokens"], batch["mask"]
    logits_btv, _, _ = model.apply({"params": params}, tokens_bt, mask=mask_bt,
                                   positions=transformer.positions_from_mask(mask_bt))
    target_mask_bt = batch["loss_mask"][:, 1:] & mask_bt[:, 1:]
    ce, metrics = losses.token_cross_entropy(logits_btv[:, :-1], tokens_bt[:, 1:], target_mask_bt)
    return ce, {"response_ce": ce, "token_accuracy": metrics["accuracy"]}

  return loss_fn
