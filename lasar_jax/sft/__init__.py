"""Supervised fine-tuning: the recommendation vocabulary, prompts, tasks and SFT stages."""
