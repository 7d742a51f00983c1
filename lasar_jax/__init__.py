"""lasar_jax: LASAR and its baselines for generative recommendation, in JAX/Flax."""

__version__ = "0.1.0"
