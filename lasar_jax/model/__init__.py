"""The decoder-only backbone: config, Flax module, KV cache, checkpoint conversion."""
