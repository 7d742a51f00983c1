"""Shared config defaults; the files under the top-level `configs/` build on them."""
