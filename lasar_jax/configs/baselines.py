"""Configs of the learned baselines (`lasar_jax.baselines`).

The SASRec defaults are RecBole 1.2.1's (`recbole/properties/model/SASRec.yaml` and the overall
defaults: Adam, lr 1e-3, batch 2048, 300 epochs, early stop after 10 evaluations), with a history
of 20 items, the setting the reference figures were produced with.
"""

import ml_collections


def sasrec_config() -> ml_collections.ConfigDict:
  """SASRec (`lasar_jax.baselines.sasrec`): model, optimizer, training and validation settings."""
  c = ml_collections.ConfigDict()
  c.max_len = 20  # most recent history items the model reads (<= the data's max_history)
  c.hidden = 64  # embedding and hidden width D
  c.layers = 2  # transformer blocks
  c.heads = 2  # attention heads (divide hidden)
  c.inner = 256  # feed-forward width
  c.hidden_dropout = 0.5  # dropout after the embeddings, attention output and feed-forward
  c.attn_dropout = 0.5  # dropout on the attention probabilities
  c.activation = "gelu"  # feed-forward activation: 'gelu' (exact, erf) | 'relu' | 'swish' | 'tanh' | 'sigmoid'
  c.layer_norm_eps = 1e-12  # LayerNorm epsilon
  c.init_std = 0.02  # std of the normal init of embeddings and dense kernels (biases 0)
  c.learning_rate = 1e-3  # Adam learning rate (betas 0.9, 0.999; eps 1e-8)
  c.weight_decay = 0.0  # L2 added to the gradient before Adam, as torch.optim.Adam does
  c.batch_size = 2048  # training samples per step (the last batch is padded with weight-0 rows)
  c.max_epochs = 300  # most passes over the training samples
  c.patience = 10  # stop after this many epochs without a better validation NDCG@10
  c.eval_every = 1  # epochs between validation evaluations (the last epoch is always evaluated)
  c.valid_users = 0  # validation samples scored for early stopping: 0 = all, else a seeded subset
  c.eval_batch_size = 1024  # users per jitted scoring batch
  c.exclude_history = False  # validation ranking drops the user's history items (RecBole does not for SASRec)
  return c
