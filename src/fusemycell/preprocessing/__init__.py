"""Fingerprint, validation, normalisation, crop, resampling and split of FuseMyCell pairs (no Kedro)."""
