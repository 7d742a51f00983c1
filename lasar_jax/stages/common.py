"""Pieces several stages share: the prepared data and the backbone of a run."""

import pathlib

import ml_collections

from lasar_jax import backbone as backbone_lib
from lasar_jax.data.prepare import PreparedData, prepare


def prepared_data(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> PreparedData:
  """The run's data, prepared into (or reused from) WORKDIR/data."""
  return prepare(config.data, config.seed, workdir / "data")


def text_backbone(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                  data: PreparedData) -> backbone_lib.Backbone:
  """The run's backbone before any SFT; a scratch one gets a tokenizer trained on the item text."""
  return backbone_lib.build_backbone(config.model, config.seed, workdir=workdir,
                                     corpus=[str(t) for t in data.item_texts])
