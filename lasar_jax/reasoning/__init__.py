"""Latent reasoning (METHOD.md sections 4, 5): latent loop, KL alignment, Policy Head."""
