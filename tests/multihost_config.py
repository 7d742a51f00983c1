"""Stage 1 at the smallest size that trains: the config of the multi-process tests.

  python -m lasar_jax.main --config=tests/multihost_config.py --workdir=DIR
"""

from lasar_jax.configs import common


def get_config(variant: str = ""):
  """40 items, 40 users, short histories, 2-level k-means SIDs, 4 Stage-1 updates of 16
  examples padded to one length (one compile)."""
  del variant
  config = common.base_config()
  config.stage = "stage1"
  config.data.synthetic.num_items = 40
  config.data.synthetic.num_users = 40
  config.data.max_history = 4
  config.sid.method = "rqkmeans"
  config.sid.levels = 2
  config.sid.codebook_size = 8
  config.train.steps = 4
  config.train.batch_size = 16
  config.train.learning_rate = 3e-3
  config.train.warmup_steps = 1
  config.train.log_every = 1
  config.train.checkpoint_every = 2
  config.train.keep_checkpoints = 5
  config.sft.max_title_tokens = 8
  config.sid.embed_max_length = 32
  config.train.buckets = (64,)
  config.train.data_threads = 0
  config.eval.probe_times = 0  # no validation probe: these tests compare training across processes
  return config
