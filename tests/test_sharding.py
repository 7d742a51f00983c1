"""Mesh construction and logical-axis sharding of the backbone on 8 simulated CPU devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from lasar_jax import sharding
from lasar_jax.model import transformer
from lasar_jax.model.config import PRESETS


def _mesh_config(data, fsdp, tensor):
  return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


def test_mesh_shape_resolves_minus_one_and_rejects_mismatch():
  assert sharding.mesh_shape(_mesh_config(-1, 2, 1), 8) == (4, 2, 1)
  assert sharding.mesh_shape(_mesh_config(2, 2, 2), 8) == (2, 2, 2)
  with pytest.raises(ValueError, match="needs 12 devices"):
    sharding.mesh_shape(_mesh_config(2, 3, 2), 8)
  with pytest.raises(ValueError, match="at most one axis"):
    sharding.mesh_shape(_mesh_config(-1, -1, 2), 8)


def test_parameters_follow_logical_rules_and_odd_dims_stay_replicated():
  cfg = PRESETS["tiny"].replace(vocab_size=1027)  # 1027 is odd: 'tensor' cannot split it
  boxed = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  mesh = sharding.make_mesh(_mesh_config(2, 2, 2))
  specs = jax.tree.map(lambda s: s.spec, sharding.logical_shardings(boxed, mesh))
  assert specs["embedding"] == PartitionSpec(None, "fsdp")
  assert specs["layers"]["attn"]["q_proj"] == PartitionSpec(None, "fsdp", "tensor", None)
  assert specs["layers"]["mlp"]["down_proj"] == PartitionSpec(None, "tensor", "fsdp")


def test_sharded_forward_equals_unsharded():
  cfg = PRESETS["tiny"]
  params = nn.meta.unbox(transformer.init_params(cfg, jax.random.key(0)))
  boxed = transformer.init_params(cfg, jax.random.key(0))
  mesh = sharding.make_mesh(_mesh_config(2, 2, 2))
  sharded_params = jax.device_put(params, sharding.logical_shardings(boxed, mesh))
  tokens = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (8, 12)))
  mask = jnp.asarray(np.random.RandomState(1).rand(8, 12) > 0.2)

  @jax.jit
  def forward(p, t, m):
    return transformer.Decoder(cfg).apply(
        {"params": p}, t, positions=transformer.positions_from_mask(m), mask=m)[0]

  expected = forward(params, tokens, mask)
  got = forward(sharded_params, jax.device_put(tokens, sharding.batch_sharding(mesh)),
                jax.device_put(mask, sharding.batch_sharding(mesh)))
  assert len(got.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5)
