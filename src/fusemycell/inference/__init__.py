"""Sliding-window prediction (streaming), ONNX export, and applying a model to challenge files (no Kedro)."""
