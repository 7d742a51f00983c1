"""RL with GRPO (METHOD.md section 4): advantages, clipped surrogate, KL estimators, rewards."""
