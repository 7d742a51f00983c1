"""Data: sources that read public recommendation datasets or generate a synthetic one
(`lasar_jax.data.sources`, `lasar_jax.data.synthetic`), and their preparation into one canonical
prepared form with the leave-one-out split (`lasar_jax.data.prepare`)."""
