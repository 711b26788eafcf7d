"""Signal-focused patches: sampling, the on-disk patch store, and the PyTorch dataset over it (no Kedro)."""
