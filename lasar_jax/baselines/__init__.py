"""Baseline recommenders trained and scored on the prepared data."""
