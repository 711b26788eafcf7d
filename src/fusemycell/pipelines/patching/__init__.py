"""Patching pipeline."""

from fusemycell.pipelines.patching.pipeline import create_pipeline

__all__ = ["create_pipeline"]
