"""Scoring predictions against the fused ground truth, with the identity and Gaussian-blur baselines (no Kedro)."""
