"""Patching pipeline; registered empty until issue #3 lands."""

from kedro.pipeline import Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """An empty, valid pipeline: nodes arrive with issue #3."""
    return Pipeline([])
