"""Training machinery shared by every stage: batches, optimizer, step, checkpoints, logs, loop."""

from lasar_jax.train.input_pipeline import global_batch, make_batches
from lasar_jax.train.loop import (NonFiniteError, TrainState, init_train_state, make_train_step,
                                  state_shardings, train)
from lasar_jax.train.optim import make_optimizer

__all__ = ["NonFiniteError", "TrainState", "global_batch", "init_train_state", "make_batches",
           "make_optimizer", "make_train_step", "state_shardings", "train"]
