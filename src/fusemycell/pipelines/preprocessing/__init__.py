"""Preprocessing pipeline."""

from fusemycell.pipelines.preprocessing.pipeline import create_pipeline

__all__ = ["create_pipeline"]
