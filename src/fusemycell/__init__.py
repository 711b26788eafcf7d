"""fusemycell: predict the fused multi-view light-sheet volume from a single view."""

__version__ = "0.1.0"
