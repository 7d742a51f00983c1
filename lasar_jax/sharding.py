"""Device mesh and logical-axis sharding rules.

Parameters carry logical axis names (`vocab`, `embed`, `q_heads`, ...; see
`lasar_jax.model.transformer`). `LOGICAL_RULES` maps them to the mesh axes
`('data', 'fsdp', 'tensor')`: batches split over data x fsdp, weights split over fsdp (ZeRO-3
style) and tensor (Megatron style). A dimension that a mesh axis does not divide evenly is left
replicated on that axis rather than failing, so odd vocabularies (after SID tokens are added) work.
"""

import math

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    ("length", None),
)


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int, int]:
  """Resolves `config.mesh` (one axis may be -1 = the remaining devices) to a concrete shape."""
  sizes = [int(mesh_config[axis]) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"config.mesh: {num_devices} devices are not divisible by {known}")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"config.mesh: {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"{num_devices} are available")
  return tuple(sizes)


def make_mesh(mesh_config: ml_collections.ConfigDict, devices=None) -> jax.sharding.Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over `devices` (default: all) with auto axis types."""
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def _fit_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh: jax.sharding.Mesh) -> PartitionSpec:
  """Drops mesh axes from dimensions they do not divide evenly."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    kept = tuple(a for a in names if mesh.shape[a] > 1)
    if kept and dim % math.prod(mesh.shape[a] for a in kept):
      kept = ()
    fitted.append(None if not kept else kept[0] if len(kept) == 1 else kept)
  return PartitionSpec(*fitted)


def logical_shardings(boxed_tree, mesh: jax.sharding.Mesh, rules=LOGICAL_RULES):
  """NamedShardings for a pytree of `nn.LogicallyPartitioned` leaves (or abstract ones)."""
  logical_specs = nn.get_partition_spec(boxed_tree)
  values = nn.meta.unbox(boxed_tree)

  def one(logical_spec, value):
    mesh_spec = nn.logical_to_mesh_axes(tuple(logical_spec), rules)
    return NamedSharding(mesh, _fit_spec(mesh_spec, np.shape(value), mesh))

  return jax.tree.map(one, logical_specs, values,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) axis split over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Fully replicated over the mesh."""
  return NamedSharding(mesh, PartitionSpec())
