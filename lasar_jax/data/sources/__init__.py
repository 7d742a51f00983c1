"""Readers of public recommendation data formats; each returns a `records.RawDataset`.

`READERS` maps `config.data.format` to the reader; each reads `config.data.path` (a folder, never
modified) and, where the folder holds several datasets, `config.data.name`.
"""

from lasar_jax.data.sources import amazon_raw, lcrec, minionerec, movielens, p5, recbole

READERS = {
    "lcrec": lcrec.read,
    "recbole": recbole.read,
    "p5": p5.read,
    "movielens": movielens.read,
    "amazon_raw": amazon_raw.read,
    "minionerec": minionerec.read,
}
