"""Simulation pipeline: physically motivated synthetic light-sheet acquisitions."""

from fusemycell.pipelines.simulation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
