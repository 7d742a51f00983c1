"""Evaluation (METHOD.md section 6): ranking metrics, an independent file scorer, baselines."""
